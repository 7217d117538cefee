"""Peak memory of the data-streaming steps at 100, 1,000 and 10,000 objects.

    python bench/data_memory.py                                  # every workload, every size
    python bench/data_memory.py --only lrm_training --sizes 100 1000 10000 --out bench/results/data_memory.txt

1. Generates tiny datasets quickly: a few real samples (procedural objects rendered by
   ``vfusion3d_core.render.dataset`` as renders_3d-schema multi-view samples, and synthetic-video samples
   made from the same renders) are encoded once and duplicated under distinct keys into shards of
   ``--per-shard`` samples, one folder per size.
2. For each workload module in ``bench/data_memory_workloads/`` (``run(multiview_shards, video_shards,
   work_dir) -> dict``) and each size, runs the workload in a fresh subprocess and reads that child's peak
   RSS from ``os.wait4`` (the rusage of that child alone; the child also reports its own VmHWM).
3. Prints one row per workload and size with the ratio to the 100-object figure, flagging ratios above
   ``--max-ratio`` (1.15): a step that streams with bounded buffers uses the same memory at every size.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import pkgutil
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
WORKLOADS = "data_memory_workloads"
DEFAULT_SIZES = (100, 1_000, 10_000)
TEMPLATES = 4  # real samples rendered once and duplicated


# --- data --------------------------------------------------------------------------------------------

class _Renamed:
    """A pre-encoded WebDataset sample under a new key (duck-typed for ``ShardWriter.write``)."""

    def __init__(self, key: str, encoded: dict[str, Any]) -> None:
        self.key = key
        self._encoded = encoded

    def to_wds(self) -> dict[str, Any]:
        return {**self._encoded, "__key__": self.key}


def template_samples(tmp: Path, resolution: int, views: int) -> tuple[list[dict], list[dict]]:
    """``TEMPLATES`` real multi-view samples (encoded) and synthetic-video samples made from them."""
    import numpy as np

    from vfusion3d_core.data import iter_samples
    from vfusion3d_core.data.video_sample import SyntheticVideoSample
    from vfusion3d_core.render.dataset import RenderDatasetConfig, render_dataset

    render_dataset(RenderDatasetConfig(num_objects=TEMPLATES, num_heldout=0, num_views=views, resolution=resolution,
                                       samples_per_shard=TEMPLATES), tmp / "templates")
    multiview, video = [], []
    for i, sample in enumerate(iter_samples(sorted((tmp / "templates" / "train").glob("*.tar")))):
        multiview.append(sample.to_wds())
        rgba = sample.views.astype(np.float32) / 255.0
        frames = (rgba[..., :3] * rgba[..., 3:] + 1 - rgba[..., 3:]) * 255.0  # on white, like the video model
        clip = SyntheticVideoSample(f"template{i}", sample.caption or f"object {i}",
                                    frames.round().clip(0, 255).astype(np.uint8), seed=i, model_digest="0" * 64,
                                    meta={"prompt_id": f"template{i}", "num_frames": views,
                                          "resolution": resolution})
        video.append(clip.to_wds())
    if len(multiview) != TEMPLATES:
        raise RuntimeError(f"rendered {len(multiview)} template objects, expected {TEMPLATES}")
    return multiview, video


def write_dataset(root: Path, size: int, multiview: list[dict], video: list[dict], per_shard: int
                  ) -> tuple[list[str], list[str]]:
    """``size`` multi-view and ``size`` video samples (templates under distinct keys) in shards of
    ``per_shard``; returns the two shard lists."""
    from vfusion3d_core.data import ShardWriter

    out = []
    for kind, templates in (("multiview", multiview), ("video", video)):
        with ShardWriter(root / kind, per_shard) as writer:
            for i in range(size):
                writer.write(_Renamed(f"{kind}{i:06d}", templates[i % len(templates)]))
        out.append([str(p) for p in writer.shards])
    return out[0], out[1]


# --- workloads -----------------------------------------------------------------------------------------

def available_workloads() -> list[str]:
    """Names of the workload modules present in ``bench/data_memory_workloads``."""
    return sorted(m.name for m in pkgutil.iter_modules([str(BENCH / WORKLOADS)]) if not m.name.startswith("_"))


def child_main(name: str, spec_path: Path) -> None:
    """Subprocess side: run workload ``name`` on the shards in ``spec_path``; write its result + VmHWM."""
    sys.path.insert(0, str(BENCH))
    spec = json.loads(spec_path.read_text())
    module = importlib.import_module(f"{WORKLOADS}.{name}")
    start = time.perf_counter()
    summary = module.run(spec["multiview"], spec["video"], Path(spec["work_dir"]))
    seconds = time.perf_counter() - start
    status = Path("/proc/self/status").read_text()
    hwm = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")), -1)
    Path(spec["result"]).write_text(json.dumps({"summary": summary, "vmhwm_kib": hwm, "seconds": seconds}))


@dataclass
class Measurement:
    workload: str
    size: int
    shards: int
    peak_kib: int  # wait4 ru_maxrss of the child
    vmhwm_kib: int  # reported by the child
    seconds: float
    summary: dict


def measure(name: str, size: int, multiview: list[str], video: list[str], tmp: Path) -> Measurement:
    """Run workload ``name`` on one dataset in a fresh subprocess and read that child's peak RSS."""
    work = tmp / f"work-{name}-{size}"
    work.mkdir(parents=True)
    spec = work / "spec.json"
    result = work / "result.json"
    spec.write_text(json.dumps({"multiview": multiview, "video": video, "work_dir": str(work),
                                "result": str(result)}))
    log = work / "log.txt"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--child", name, str(spec)],
                                stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0 or not result.is_file():
        tail = log.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"workload {name} at {size} objects failed (exit {proc.returncode}):\n{tail}")
    data = json.loads(result.read_text())
    return Measurement(name, size, len(multiview), int(usage.ru_maxrss), int(data["vmhwm_kib"]),
                       float(data["seconds"]), data["summary"])


def table(rows: list[Measurement], max_ratio: float) -> tuple[str, list[str]]:
    """The report table and the flagged rows."""
    base = {r.workload: r.peak_kib for r in rows if r.size == min(x.size for x in rows if x.workload == r.workload)}
    lines = [f"{'workload':<16} {'objects':>8} {'shards':>6} {'peak RSS MiB':>12} {'VmHWM MiB':>10} "
             f"{'ratio':>6} {'seconds':>8}  flag"]
    flagged = []
    for r in rows:
        ratio = r.peak_kib / base[r.workload]
        flag = f"RATIO > {max_ratio}" if ratio > max_ratio else ""
        if flag:
            flagged.append(f"{r.workload} at {r.size}")
        lines.append(f"{r.workload:<16} {r.size:>8} {r.shards:>6} {r.peak_kib / 1024:>12.1f} "
                     f"{r.vmhwm_kib / 1024:>10.1f} {ratio:>6.3f} {r.seconds:>8.1f}  {flag}")
    return "\n".join(lines), flagged


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns 1 when a ratio is flagged, else 0."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=list(DEFAULT_SIZES))
    parser.add_argument("--only", nargs="+", default=None, metavar="WORKLOAD", help="run only these workloads")
    parser.add_argument("--per-shard", type=int, default=100, help="samples per shard")
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--views", type=int, default=4)
    parser.add_argument("--max-ratio", type=float, default=1.15)
    parser.add_argument("--out", type=Path, default=None, help="also write the report here")
    parser.add_argument("--child", nargs=2, metavar=("WORKLOAD", "SPEC"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child_main(args.child[0], Path(args.child[1]))
        return 0
    if any(s < 1 for s in args.sizes):
        parser.error("sizes must be >= 1")
    sys.path.insert(0, str(BENCH))
    expected = importlib.import_module(WORKLOADS).EXPECTED
    present = available_workloads()
    chosen = present if args.only is None else args.only
    unknown = [w for w in chosen if w not in present]
    if unknown:
        parser.error(f"unknown workload(s) {unknown}; present: {present}")
    missing = [w for w in expected if w not in present]
    sizes = sorted(set(args.sizes))
    report = [f"# bench/data_memory.py --sizes {' '.join(map(str, sizes))} --only {' '.join(chosen)} "
              f"--per-shard {args.per_shard}",
              f"# {platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
              f"python {platform.python_version()}",
              f"# workload modules present: {', '.join(present) or 'none'}; missing: {', '.join(missing) or 'none'}",
              f"# not run (not selected): {', '.join(w for w in present if w not in chosen) or 'none'}"]
    rows: list[Measurement] = []
    with tempfile.TemporaryDirectory(prefix="data_memory-") as tmp_name:
        tmp = Path(tmp_name)
        start = time.perf_counter()
        multiview, video = template_samples(tmp, args.resolution, args.views)
        datasets = {}
        for size in sizes:
            t0 = time.perf_counter()
            datasets[size] = write_dataset(tmp / f"data-{size}", size, multiview, video, args.per_shard)
            report.append(f"# dataset {size:>6} objects: {len(datasets[size][0])} multi-view + "
                          f"{len(datasets[size][1])} video shards written in {time.perf_counter() - t0:.1f} s")
        report.append(f"# data generation total {time.perf_counter() - start:.1f} s "
                      f"({TEMPLATES} rendered templates, {args.views} views at {args.resolution} px)")
        print("\n".join(report), flush=True)
        for name in chosen:
            for size in sizes:
                m = measure(name, size, *datasets[size], tmp)
                rows.append(m)
                print(f"  {name} {size}: peak {m.peak_kib / 1024:.1f} MiB in {m.seconds:.1f} s {m.summary}",
                      flush=True)
    text, flagged = table(rows, args.max_ratio)
    summary = [f"# flagged (peak RSS ratio to the {sizes[0]}-object run > {args.max_ratio}): "
               f"{', '.join(flagged) or 'none'}"]
    full = "\n".join(report + [text] + summary) + "\n"
    print(text + "\n" + summary[0])
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(full)
    return 1 if flagged else 0


if __name__ == "__main__":
    sys.exit(main())
