"""Tiny CLIP folders written the ways real ones are: transformers 5's ``CLIPProcessor.save_pretrained``
(image processor inside ``processor_config.json``) and hub style (``preprocessor_config.json``)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

LETTERS = "abcdefghijklmnopqrstuvwxyz"
WORDS = ["red", "box", "blue", "ball", "green", "cone"]


def tiny_tokenizer(work: Path):
    """A CLIPTokenizer over single letters plus a few whole words, from a vocab.json / merges.txt written here."""
    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in LETTERS:
        vocab[c] = len(vocab)
    for c in LETTERS:
        vocab[c + "</w>"] = len(vocab)
    merges = []
    for w in WORDS:  # left-to-right merges building each word
        prefix = w[0]
        for i, c in enumerate(w[1:], start=1):
            piece = c + "</w>" if i == len(w) - 1 else c
            merges.append(f"{prefix} {piece}")
            prefix = prefix + piece
            vocab.setdefault(prefix, len(vocab))
    work.mkdir(parents=True, exist_ok=True)
    (work / "vocab.json").write_text(json.dumps(vocab))
    (work / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return CLIPTokenizer(vocab=str(work / "vocab.json"), merges=str(work / "merges.txt"))


def tiny_clip_model(tokenizer, image_size: int = 32, seed: int = 0):
    from transformers import CLIPConfig, CLIPModel

    tower = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
    config = CLIPConfig(text_config=dict(tower, vocab_size=len(tokenizer), max_position_embeddings=77,
                                         bos_token_id=0, eos_token_id=1, pad_token_id=1),
                        vision_config=dict(tower, image_size=image_size, patch_size=8), projection_dim=16)
    torch.manual_seed(seed)
    return CLIPModel(config).eval()


def write_processor_folder(path: Path, shortest_edge: int = 40, crop: int = 32, mean=None, std=None, seed: int = 0):
    """CLIPProcessor(...).save_pretrained + CLIPModel.save_pretrained: returns the image processor used."""
    from transformers import CLIPImageProcessor, CLIPProcessor

    tok = tiny_tokenizer(path.parent / f"{path.name}_tokenizer_src")
    kwargs = {"image_mean": mean, "image_std": std} if mean else {}
    image_processor = CLIPImageProcessor(size={"shortest_edge": shortest_edge},
                                         crop_size={"height": crop, "width": crop}, **kwargs)
    CLIPProcessor(image_processor=image_processor, tokenizer=tok).save_pretrained(path)
    tiny_clip_model(tok, crop, seed).save_pretrained(path)
    return image_processor


def write_hub_folder(path: Path, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), seed: int = 1):
    """Hub layout: model, tokenizer and ``preprocessor_config.json`` (CLIPImageProcessor.save_pretrained)."""
    from transformers import CLIPImageProcessor

    tok = tiny_tokenizer(path.parent / f"{path.name}_tokenizer_src")
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32},
                                         image_mean=list(mean), image_std=list(std))
    image_processor.save_pretrained(path)
    tok.save_pretrained(path)
    tiny_clip_model(tok, 32, seed).save_pretrained(path)
    return image_processor
