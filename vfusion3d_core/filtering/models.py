"""The quality classifier (SVM) and elevation regressor (MLP) on DINO video features: training, metrics, I/O.

The SVM sees the temporal statistics as they are and the appearance block (mean / std of frame features)
reduced by PCA, so a few hundred appearance dimensions cannot drown the temporal cues in the RBF distance.
Training data of the classifier: bootstrap labels from real orbits (``bootstrap.py``) plus the user's
labels CSV (``video_key,label`` with label ``good`` / ``bad``; a later row for the same key overrides an
earlier one, so the file is append-only). Held-out accuracy is measured on the bootstrap variants of the
renders' *held-out objects* (never seen in training) and on a seeded held-out fraction of the user
labels. The elevation MLP is trained on the renders' training orbits (known elevation) and scored on the
held-out ones against predicting the training mean.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import joblib
import numpy as np
from sklearn.compose import ColumnTransformer
from sklearn.decomposition import PCA
from sklearn.metrics import balanced_accuracy_score
from sklearn.neural_network import MLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from vfusion3d_core.compute import ComputeSettings
from vfusion3d_core.data.bad_items import BadItemPolicy, SkipReport, TooManyBadItems
from vfusion3d_core.filtering.bootstrap import iter_bootstrap
from vfusion3d_core.filtering.features import TEMPORAL_STATS, DinoFeaturizer

SVM_FILE = "quality_svm.joblib"
MLP_FILE = "elevation_mlp.joblib"
DINO_DIR = "dino"
INFO_FILE = "quality_models.json"
LABELS = {"good": 1, "bad": 0}
VIDEO_KEY_RE = re.compile(r"^[A-Za-z0-9-][A-Za-z0-9_-]*$")  # the synthetic sample key (= prompt id)


class LabelsError(ValueError):
    """A labels CSV that cannot be used; names the file."""


@dataclass
class QualityTrainConfig:
    svm_c: float = 10.0
    appearance_pca: int = 16  # PCA components of the appearance block (mean/std features) fed to the SVM
    mlp_hidden: int = 64
    mlp_alpha: float = 10.0  # L2 penalty of the elevation MLP (few, high-dimensional training orbits)
    mlp_iters: int = 2000
    user_holdout_fraction: float = 0.25
    seed: int = 0


@dataclass
class Orbit:
    """One real orbit of renders_3d: RGB frames on white, its elevation and camera set-up."""

    key: str
    frames: np.ndarray
    elevation_deg: float
    radius: float
    intrinsics: np.ndarray  # [4] (fx, fy, cx, cy) of frame 0


def read_orbits(shards: Iterable[str | Path], limit: int | None = None) -> Iterator[Orbit]:
    """The first ``limit`` (all when None) orbits of renders_3d-schema shards, on white with their camera set-up,
    read lazily shard by shard."""
    import itertools

    from vfusion3d_core.data.shards import iter_samples
    from vfusion3d_core.video.data import composite_on_white

    return (Orbit(s.key, composite_on_white(s.views), float(s.meta["elevation_deg"]), float(s.meta["radius"]),
                  s.intrinsics[0]) for s in itertools.islice(iter_samples(shards), limit))


@dataclass
class QualityModels:
    featurizer: DinoFeaturizer
    svm: object  # sklearn Pipeline(StandardScaler, SVC)
    mlp: object  # sklearn Pipeline(StandardScaler, MLPRegressor)
    info: dict = field(default_factory=dict)  # metrics + camera set-up (radius, intrinsics, elevation range)

    def score(self, features: np.ndarray) -> np.ndarray:
        """SVM decision values; > 0 leans good."""
        return np.asarray(self.svm.decision_function(features), np.float64)

    def elevation(self, features: np.ndarray) -> np.ndarray:
        lo, hi = self.info["elevation_range_deg"]
        return np.clip(np.asarray(self.mlp.predict(features), np.float64), lo, hi)

    def save(self, directory: str | Path) -> list[str]:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        files = [p.relative_to(d).as_posix() for p in self.featurizer.save(d / DINO_DIR)]
        joblib.dump(self.svm, d / SVM_FILE)
        joblib.dump(self.mlp, d / MLP_FILE)
        (d / INFO_FILE).write_text(json.dumps(self.info, indent=2, sort_keys=True))
        return sorted(files + [SVM_FILE, MLP_FILE, INFO_FILE])

    @classmethod
    def load(cls, directory: str | Path, compute: ComputeSettings | None = None) -> QualityModels:
        """Load a saved set, the DINO featurizer on ``compute``'s device (call only on files whose sha256 was
        verified against their manifest: joblib files are pickles)."""
        d = Path(directory)
        return cls(DinoFeaturizer.load(d / DINO_DIR, compute), joblib.load(d / SVM_FILE), joblib.load(d / MLP_FILE),
                   json.loads((d / INFO_FILE).read_text()))


LABELS_FORMAT = ("expected columns video_key,label (partition optional); label is good or bad; e.g.\n"
                 "  video_key,label,partition\n  p0123456789abcdef,good,shard-000000")


def read_labels_csv(path: str | Path, policy: BadItemPolicy | None = None,
                    report: SkipReport | None = None) -> dict[str, int]:
    """video_key -> 1 (good) / 0 (bad); the last row for a key wins (relabelling appends).

    Every row is read; a bad row (no key, unknown label, key that is not a sample key, key labelled in another
    partition than before) is a bad item under the bad-item policy (vfusion3d_core/data/bad_items.py): skipped
    with a warning naming ``file:line``, counted in ``report`` (``skipped_rows``; a given report brings its own
    policy, else ``policy``, else the default). Above the policy's share (1 % by default) one LabelsError
    lists every bad row with its line. A file without the columns or without any label row is a LabelsError;
    both errors show the expected columns and an example row.
    """
    p = Path(path)
    report = report if report is not None else SkipReport(policy or BadItemPolicy(), what="reading labels")
    if not p.is_file():
        raise LabelsError(f"{p}: no such labels file")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise LabelsError(f"{p}: not UTF-8 text ({LABELS_FORMAT})") from exc
    reader = csv.DictReader(text.splitlines())
    if reader.fieldnames is None or not {"video_key", "label"} <= set(reader.fieldnames):
        raise LabelsError(f"{p}: needs columns video_key,label (got {reader.fieldnames}); {LABELS_FORMAT}")
    out: dict[str, int] = {}
    partitions: dict[str, tuple[str, int]] = {}
    for n, row in enumerate(reader, start=2):
        problem = _label_row_problem(row, partitions, n)
        if problem:
            report.skip("row", f"{p}:{n}", f"video_key {(row.get('video_key') or '').strip()!r}", problem)
            continue
        report.ok("row")
        out[(row["video_key"] or "").strip()] = LABELS[(row["label"] or "").strip().lower()]
    if not report.good["row"] and not report.skipped("row"):
        raise LabelsError(f"{p}: no labels (only the header); {LABELS_FORMAT}")
    try:
        report.check(shown=None)  # every bad row at once: a user fixes them in one go
    except TooManyBadItems as exc:
        raise LabelsError(f"{p}: {exc}\n{LABELS_FORMAT}") from exc
    return out


def _label_row_problem(row: dict, partitions: dict[str, tuple[str, int]], n: int) -> str | None:
    """Why a labels row is bad, or None; a valid row's partition is remembered in ``partitions``."""
    label = (row.get("label") or "").strip().lower()
    key = (row.get("video_key") or "").strip()
    if not key or label not in LABELS:
        return f"expected a video_key and label good/bad, got {dict(row)}"
    if not VIDEO_KEY_RE.match(key):
        return f"video_key {key!r} is not a sample key (letters, digits, '_', '-')"
    part = (row.get("partition") or "").strip()
    if part:
        first, line = partitions.setdefault(key, (part, n))
        if first != part:
            return (f"video_key {key!r} is labelled in partition {part!r} here but {first!r} on line {line}; "
                    "a prompt id belongs to one partition")
    return None


def match_labels(labels: dict[str, int], available: Iterable[str]) -> tuple[dict[str, int], list[str]]:
    """(the labels of videos that exist, the sorted keys labelled but not found): unknown keys are reported by
    name, never trained on."""
    have = set(available)
    return {k: v for k, v in labels.items() if k in have}, sorted(set(labels) - have)


def stream_video_features(featurizer: DinoFeaturizer, videos: Iterable[np.ndarray], batch: int = 16) -> np.ndarray:
    """Video features of a stream of uint8 [F, S, S, 3] videos, ``batch`` videos at a time (only the features,
    float32 [N, TEMPORAL_STATS + 2 * dim], are kept)."""
    feats: list[np.ndarray] = []
    pending: list[np.ndarray] = []
    for v in videos:
        pending.append(v)
        if len(pending) >= batch:
            feats.append(featurizer.video_features(pending))
            pending = []
    if pending:
        feats.append(featurizer.video_features(pending))
    return np.concatenate(feats) if feats else featurizer.video_features([])


@dataclass
class BootstrapFeatures:
    """Video features of real orbits and their corruptions: x float32 [N, D], y [N] (1 = real), kinds [N], the
    real orbits' elevations [R] and the first orbit (its camera set-up is the renders')."""

    x: np.ndarray
    y: np.ndarray
    kinds: list[str]
    elevations: np.ndarray
    first: Orbit | None


def bootstrap_features(featurizer: DinoFeaturizer, orbits: Iterable[Orbit], seed: int, batch: int = 16
                       ) -> BootstrapFeatures:
    """Featurize a stream of orbits with their bootstrap corruptions, ``batch`` videos at a time; only the
    features and labels are kept (frames of one batch in memory at most)."""
    labels: list[int] = []
    kinds: list[str] = []
    elevations: list[float] = []
    first: list[Orbit] = []

    def frames() -> Iterator[np.ndarray]:
        for orbit in orbits:
            if not first:
                first.append(orbit)
            elevations.append(orbit.elevation_deg)
            yield orbit.frames

    def videos() -> Iterator[np.ndarray]:
        for video, label, kind in iter_bootstrap(frames(), seed):
            labels.append(label)
            kinds.append(kind)
            yield video

    x = stream_video_features(featurizer, videos(), batch)
    return BootstrapFeatures(x, np.asarray(labels, np.int64), kinds, np.asarray(elevations, np.float64),
                             first[0] if first else None)


def train_quality_models(featurizer: DinoFeaturizer, train: Iterable[Orbit], heldout: Iterable[Orbit],
                         user_features: np.ndarray | list, user_labels: list[int], cfg: QualityTrainConfig,
                         elevation_range: tuple[float, float], batch: int = 16) -> QualityModels:
    """Fit the SVM (bootstrap of ``train`` + most user labels) and the elevation MLP (``train``); measure both
    on held-out data.

    ``user_features``: float32 [U, TEMPORAL_STATS + 2 * dim] video features of the user-labelled videos
    (``stream_video_features``; an empty list when there are none), ``user_labels`` their U labels.
    ``train`` / ``heldout`` may be lazy streams: they are featurized ``batch`` videos at a time.
    """
    dims = TEMPORAL_STATS + 2 * featurizer.dim
    x_user = np.asarray(user_features, np.float32)
    if len(user_labels) == 0 and x_user.size == 0:
        x_user = np.zeros((0, dims), np.float32)
    if x_user.ndim != 2 or x_user.shape != (len(user_labels), dims):
        raise ValueError(f"user_features must be [{len(user_labels)}, {dims}] (one row per label), "
                         f"got {x_user.shape}")
    rng = np.random.default_rng(cfg.seed)
    boot = bootstrap_features(featurizer, train, cfg.seed, batch)
    if boot.first is None:
        raise ValueError("no training orbits to bootstrap from")
    held = bootstrap_features(featurizer, heldout, cfg.seed + 1, batch)
    x_boot, boot_y, x_held, held_y, held_kinds = boot.x, boot.y, held.x, held.y, held.kinds
    user_y = np.asarray(user_labels, np.int64)
    order = rng.permutation(len(user_y))
    n_hold = int(round(cfg.user_holdout_fraction * len(user_y))) if len(user_y) >= 4 else 0
    hold_idx, fit_idx = order[:n_hold], order[n_hold:]
    x_fit = np.concatenate([x_boot, x_user[fit_idx]])
    y_fit = np.concatenate([boot_y, user_y[fit_idx]])
    dims = x_fit.shape[1]
    pca = PCA(min(cfg.appearance_pca, len(y_fit) - 1, dims - TEMPORAL_STATS), random_state=cfg.seed)
    appearance = make_pipeline(StandardScaler(), pca)
    columns = ColumnTransformer([("temporal", "passthrough", list(range(TEMPORAL_STATS))),
                                 ("appearance", appearance, list(range(TEMPORAL_STATS, dims)))])
    svm = make_pipeline(columns, StandardScaler(),
                        SVC(C=cfg.svm_c, kernel="rbf", gamma="scale", class_weight="balanced"))
    svm.fit(x_fit, y_fit)
    metrics: dict = {"bootstrap_orbits": int(len(boot.elevations)), "heldout_orbits": int(len(held.elevations)),
                     "train_videos": int(len(y_fit)), "train_good": int(y_fit.sum()),
                     "user_labels": int(len(user_y)), "user_heldout": int(n_hold)}
    metrics["train_accuracy"] = float((svm.predict(x_fit) == y_fit).mean())
    if len(held_y):
        pred = svm.predict(x_held)
        metrics["heldout_accuracy"] = float((pred == held_y).mean())
        metrics["heldout_balanced_accuracy"] = float(balanced_accuracy_score(held_y, pred))
        metrics["heldout_videos"] = int(len(held_y))
        kinds = np.asarray(held_kinds)
        metrics["heldout_accuracy_by_kind"] = {k: float((pred[kinds == k] == held_y[kinds == k]).mean())
                                               for k in sorted(set(held_kinds))}
    if n_hold:
        metrics["user_heldout_accuracy"] = float((svm.predict(x_user[hold_idx]) == user_y[hold_idx]).mean())
    x_train_real = x_boot[boot_y == 1]
    elev = boot.elevations
    mlp = make_pipeline(StandardScaler(), MLPRegressor(hidden_layer_sizes=(cfg.mlp_hidden,), max_iter=cfg.mlp_iters,
                                                       alpha=cfg.mlp_alpha, random_state=cfg.seed))
    mlp.fit(x_train_real, elev)
    if len(held.elevations):
        x_held_real = x_held[held_y == 1]
        truth = held.elevations
        pred_e = np.clip(mlp.predict(x_held_real), *elevation_range)
        metrics["elevation_heldout_mae_deg"] = float(np.abs(pred_e - truth).mean())
        metrics["elevation_baseline_mae_deg"] = float(np.abs(elev.mean() - truth).mean())
    first = boot.first
    info = {"metrics": metrics, "radius": float(first.radius), "intrinsics": [float(v) for v in first.intrinsics],
            "elevation_range_deg": [float(elevation_range[0]), float(elevation_range[1])],
            "train_config": asdict(cfg), "feature_dim": int(x_fit.shape[1]), "dino_weights": featurizer.weights}
    return QualityModels(featurizer, svm, mlp, info)
