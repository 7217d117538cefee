"""`vfusion3d label`: review synthetic videos in the terminal and append good/bad labels to the labels CSV.

For each synthesized video not yet labelled, a preview strip (all frames side by side, upscaled) is saved as a
PNG and its path and prompt are printed; the answer (g = good, b = bad, s = skip, q = quit) is appended to the
CSV at once (``video_key,label,partition,labelled_at``), so an interrupted session loses nothing. The CSV is the
one `quality_models` reads (config ``labels_csv``); a later row for a key overrides an earlier one.
"""

from __future__ import annotations

import csv
import os
from datetime import UTC, datetime
from pathlib import Path

import click
import numpy as np
from PIL import Image

from vfusion3d_core.data.artifacts import ArtifactStore

SYNTHETIC = "synthetic_videos"
HEADER = ["video_key", "label", "partition", "labelled_at"]
ANSWERS = {"g": "good", "b": "bad"}


def preview_strip(frames: np.ndarray, min_size: int = 96) -> Image.Image:
    """All frames of a video side by side, upscaled (nearest) to at least ``min_size`` pixels high."""
    s = frames.shape[1]
    scale = max(1, -(-min_size // s))
    strip = np.concatenate(list(frames), axis=1)
    return Image.fromarray(strip).resize((strip.shape[1] * scale, s * scale), Image.NEAREST)


def labelled_keys(path: Path) -> set[str]:
    if not path.is_file() or path.stat().st_size == 0:
        return set()
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or "video_key" not in reader.fieldnames:
            raise click.ClickException(f"{path}: not a labels CSV (needs a video_key column)")
        return {row["video_key"] for row in reader}


def append_label(path: Path, key: str, label: str, partition: str) -> None:
    new = not path.is_file() or path.stat().st_size == 0
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        if new:
            writer.writerow(HEADER)
        writer.writerow([key, label, partition, datetime.now(UTC).isoformat(timespec="seconds")])
        f.flush()
        os.fsync(f.fileno())


@click.command("label")
@click.option("--artifacts", "artifact_root", default=lambda: os.environ.get("VFUSION3D_ARTIFACT_ROOT", "artifacts"),
              show_default="$VFUSION3D_ARTIFACT_ROOT or ./artifacts", help="Artifact root holding synthetic_videos.")
@click.option("--labels", "labels_csv", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Labels CSV to append to (created with a header when missing).")
@click.option("--partition", "partitions", multiple=True, help="Prompt shard(s) to review (default: all).")
@click.option("--previews", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where preview PNGs go (default: a 'previews' folder next to the labels CSV).")
@click.option("--relabel", is_flag=True, help="Also show videos that already have a label.")
def label(artifact_root: str, labels_csv: Path, partitions: tuple[str, ...], previews: Path | None,
          relabel: bool) -> None:
    """Review synthetic orbit videos and append good/bad labels for the quality classifier."""
    from vfusion3d_core.data.video_sample import iter_video_samples  # torch + webdataset: not for --help

    store = ArtifactStore(artifact_root)
    keys = list(partitions) or store.partitions(SYNTHETIC)
    if not keys:
        raise click.ClickException(f"no {SYNTHETIC} under {artifact_root}; synthesize a prompt shard first")
    previews = previews or labels_csv.parent / "previews"
    previews.mkdir(parents=True, exist_ok=True)
    done = set() if relabel else labelled_keys(labels_csv)
    counts = {"good": 0, "bad": 0, "skipped": 0}
    for part in keys:
        version = store.latest(SYNTHETIC, part)
        if version is None:
            raise click.ClickException(f"{SYNTHETIC}/{part} has no committed version under {artifact_root}")
        problems = version.manifest.verify(version.path)
        if problems:
            raise click.ClickException(f"{version.path}: files do not match the manifest: {problems[:3]}")
        tars = version.shards()
        for video in iter_video_samples(tars):
            if video.key in done:
                continue
            png = previews / f"{part}_{video.key}.png"
            preview_strip(video.frames).save(png)
            click.echo(f"[{part}] {video.key}: {video.prompt!r}\n  preview: {png}")
            answer = click.prompt("  good / bad / skip / quit", type=click.Choice(["g", "b", "s", "q"]),
                                  show_choices=True)
            if answer == "q":
                click.echo(f"stopped: {counts}")
                return
            if answer == "s":
                counts["skipped"] += 1
                continue
            append_label(labels_csv, video.key, ANSWERS[answer], part)
            counts[ANSWERS[answer]] += 1
    click.echo(f"done: {counts}")
