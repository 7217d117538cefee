"""DINOv2 features of video frames and the per-video feature vector the quality SVM / elevation MLP use.

Frame feature: [CLS token, mean of patch tokens] of the last layer of a ``transformers.Dinov2Model``
(local pretrained weights, or a small randomly initialised config at ``tiny``), L2-normalized.
Video feature: ``TEMPORAL_STATS`` temporal statistics, then the mean and the standard deviation of the
frame features over frames. The temporal statistics use S = cosine similarity of the frame features after
subtracting the video's mean feature (random-init DINO features share one dominant direction): mean, min
and std of the consecutive similarities S[i, i+1] (cyclic: the orbit closes); the mean off-diagonal
similarity; consecutive minus off-diagonal mean (high for a smooth orbit, ~0 for a shuffled one); the
fraction of frames whose most similar other frame is an orbit neighbour; the mean normalized rank of
S[i, i+1] within row i; and the log of the mean distance of the frames to the mean (tiny: frozen video).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vfusion3d_core.compute import ComputeSettings
from vfusion3d_core.preprocess import ImagePreprocess

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TEMPORAL_STATS = 8
WEIGHTS_FILE = "weights.txt"
RANDOM_LABEL = "RANDOM weights: quality scores exercise the code path only"


@dataclass
class DinoConfig:
    """A small random DINOv2 (tiny) unless ``path`` names a local pretrained Dinov2Model directory (its
    image processor saved alongside: ``preprocessor_config.json``)."""

    path: str | None = None
    image_size: int = 32
    patch_size: int = 8
    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 4
    seed: int = 0


def random_preprocess(image_size: int) -> ImagePreprocess:
    """Preprocessing of the random `tiny` DINOv2: bilinear resize to ``image_size`` square, ImageNet mean/std."""
    return ImagePreprocess(resize_hw=(image_size, image_size), resample="bilinear", mean=IMAGENET_MEAN,
                           std=IMAGENET_STD)


class DinoFeaturizer:
    """Frames -> DINOv2 features on ``compute``'s device under its autocast, no gradient, batched.

    ``preprocess`` is the model's own image processing (from its folder for pretrained weights).
    ``weights`` says where the weights came from: ``pretrained:<folder name>`` or ``RANDOM ...``.
    """

    def __init__(self, model: torch.nn.Module, preprocess: ImagePreprocess, batch_size: int = 64,
                 compute: ComputeSettings | None = None, weights: str = "pretrained") -> None:
        self.compute = compute or ComputeSettings(device="cpu", precision="fp32")
        self.device = self.compute.torch_device
        self.model = model.eval().requires_grad_(False).to(self.device)
        self.preprocess = preprocess
        self.batch_size = batch_size
        self.weights = weights

    @property
    def is_random(self) -> bool:
        return self.weights.startswith("RANDOM")

    @classmethod
    def build(cls, cfg: DinoConfig, compute: ComputeSettings | None = None) -> DinoFeaturizer:
        """The pretrained folder ``cfg.path`` (model + image processor) or a seeded random small DINOv2."""
        from transformers import Dinov2Config, Dinov2Model

        if cfg.path:
            return cls.load(cfg.path, compute)
        conf = Dinov2Config(image_size=cfg.image_size, patch_size=cfg.patch_size, hidden_size=cfg.hidden_size,
                            num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads, mlp_ratio=2)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            model = Dinov2Model(conf)
        label = f"RANDOM dinov2-{cfg.hidden_size}x{cfg.num_layers} seed {cfg.seed} ({RANDOM_LABEL})"
        return cls(model, random_preprocess(cfg.image_size), compute=compute, weights=label)

    @classmethod
    def load(cls, directory: str | Path, compute: ComputeSettings | None = None) -> DinoFeaturizer:
        """A Dinov2Model folder with its image processor config (``save`` output, or a hub-style folder)."""
        from transformers import Dinov2Model

        directory = Path(directory)
        preprocess = ImagePreprocess.from_model_folder(directory, "DINOv2", "Dinov2Model folder")
        model = Dinov2Model.from_pretrained(str(directory), local_files_only=True)
        marker = directory / WEIGHTS_FILE
        weights = marker.read_text(encoding="utf-8").strip() if marker.is_file() else f"pretrained:{directory.name}"
        return cls(model, preprocess, compute=compute, weights=weights)

    def save(self, directory: str | Path) -> list[Path]:
        """Model, image processor config and the weights label into ``directory``; the files written."""
        directory = Path(directory)
        self.model.save_pretrained(str(directory))
        self.preprocess.save(directory)
        (directory / WEIGHTS_FILE).write_text(self.weights + "\n", encoding="utf-8")
        return sorted(p for p in directory.rglob("*") if p.is_file())

    @property
    def dim(self) -> int:
        return 2 * int(self.model.config.hidden_size)

    def pixel_values(self, frames: np.ndarray) -> torch.Tensor:
        """uint8 [N, S, S, 3] -> float32 model input [N, 3, h, w] on the device (the folder's preprocessing)."""
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(f"frames must be uint8 [N, H, W, 3], got {frames.dtype} {frames.shape}")
        x = torch.from_numpy(np.ascontiguousarray(frames)).to(self.device).permute(0, 3, 1, 2)
        return self.preprocess(x)

    @torch.no_grad()
    def frame_features(self, frames: np.ndarray) -> np.ndarray:
        """uint8 [N, S, S, 3] -> float32 [N, 2*hidden] L2-normalized [CLS, mean patch]."""
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"frames must be uint8 [N, H, W, 3], got {frames.dtype} {frames.shape}")
        out = []
        for i in range(0, len(frames), self.batch_size):
            x = self.pixel_values(frames[i:i + self.batch_size])
            with self.compute.autocast():
                h = self.model(pixel_values=x).last_hidden_state  # [B, 1 + patches, hidden]
            h = h.float()
            feat = torch.cat([h[:, 0], h[:, 1:].mean(1)], dim=-1)
            out.append(F.normalize(feat, dim=-1).cpu())
        if not out:
            return np.zeros((0, self.dim), np.float32)
        return torch.cat(out).numpy().astype(np.float32)

    def video_features(self, videos: list[np.ndarray]) -> np.ndarray:
        """List of uint8 [F, S, S, 3] videos -> float32 [N, TEMPORAL_STATS + 2 * dim]."""
        if not videos:
            return np.zeros((0, 2 * self.dim + TEMPORAL_STATS), np.float32)
        counts = [len(v) for v in videos]
        feats = self.frame_features(np.concatenate(videos))
        out, start = [], 0
        for n in counts:
            out.append(video_vector(feats[start:start + n]))
            start += n
        return np.stack(out)


def video_vector(frame_feats: np.ndarray) -> np.ndarray:
    """[F, D] normalized frame features -> [TEMPORAL_STATS + 2D] video feature (see the module docstring)."""
    f = frame_feats.shape[0]
    if f < 3:
        raise ValueError(f"a video needs at least 3 frames, got {f}")
    x = frame_feats.astype(np.float64)
    spread = np.linalg.norm(x - x.mean(0), axis=1)
    centered = (x - x.mean(0)) / np.maximum(spread, 1e-8)[:, None]
    sim = centered @ centered.T
    if spread.max() < 1e-6:  # a frozen video: every frame is the same
        sim = np.ones((f, f))
    consecutive = np.array([sim[i, (i + 1) % f] for i in range(f)])
    off = sim[~np.eye(f, dtype=bool)]
    others = sim.copy()
    np.fill_diagonal(others, -np.inf)
    nearest = others.argmax(1)
    neighbour = np.mean([(nearest[i] - i) % f in (1, f - 1) for i in range(f)])
    rank = np.mean([(others[i] > consecutive[i]).sum() for i in range(f)]) / (f - 1)
    temporal = np.array([consecutive.mean(), consecutive.min(), consecutive.std(), off.mean(),
                         consecutive.mean() - off.mean(), neighbour, rank, np.log(spread.mean() + 1e-3)])
    return np.concatenate([temporal, frame_feats.mean(0), frame_feats.std(0)]).astype(np.float32)


def dino_config_dict(cfg: DinoConfig) -> dict:
    return asdict(cfg)
