"""Does more (clean) data help the LRM at a larger training budget? 3D-only vs oracle -> 3D, side by side.

The mini ablation (docs/ablation.md) found that even the oracle arm (clean renders of the 1,000 prompt objects,
then the 16-object 3D set) does not beat 3D-only at 2 x 100 optimizer steps. This probe reruns just those two arms,
compute-matched as in the ablation, at ``--steps`` per phase on one seed, from a finished ablation work dir (its
renders and chosen learning rate), and scores both on the same held-out objects:

    python bench/ablation_scale_probe.py --work artifacts/.work/ablation_report/mini --steps 500

Prints held-out PSNR / SSIM / LPIPS per arm, the oracle's gap over 3D-only and the seconds each arm took.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch (see vfusion3d_core/__init__.py)

from vfusion3d_core.ablation.arms import THREE_D, dose_arm, oracle_arm, oracle_data, train_arm  # noqa: E402
from vfusion3d_core.ablation.config import AblationConfig  # noqa: E402
from vfusion3d_core.ablation.run import heldout_request, shards_in  # noqa: E402
from vfusion3d_core.compute import ComputeSettings  # noqa: E402
from vfusion3d_core.metrics.evaluate import run_evaluation  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", required=True, help="a finished ablation work dir (renders/ and lr_search/ in it)")
    parser.add_argument("--preset", default="mini", help="the ablation preset that built it (default mini)")
    parser.add_argument("--steps", type=int, default=500, help="optimizer steps per phase (the ablation: lrm_steps)")
    parser.add_argument("--seed", type=int, default=0, help="the LRM seed")
    args = parser.parse_args()
    work = Path(args.work)
    cfg = AblationConfig.preset(args.preset, lrm_steps=args.steps)
    lr = float(json.loads((work / "lr_search" / "stage.json").read_text())["result"]["chosen"])
    data = {THREE_D: shards_in(work / "renders" / "train3d" / "train"),
            oracle_data(cfg.max_dose): shards_in(work / "renders" / "prompts" / "train")}
    compute = ComputeSettings()
    checkpoints, seconds = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for arm in (dose_arm(0), oracle_arm(cfg.max_dose)):
            start = time.perf_counter()
            out = Path(tmp) / arm.name
            train_arm(arm, cfg, lr, args.seed, data, Path(tmp) / "checkpoints" / arm.name, out, compute)
            seconds[arm.name] = time.perf_counter() - start
            checkpoints[arm.name] = str(out / "final")
        request = heldout_request(cfg, checkpoints, shards_in(work / "renders" / "heldout" / "heldout"),
                                Path(tmp) / "eval", compute, cfg.heldout_objects)
        means = run_evaluation(request).means
    print(f"ablation scale probe: {2 * args.steps} optimizer steps per arm (the mini ablation: "
          f"{2 * AblationConfig.preset(args.preset).lrm_steps}), lr {lr:g}, seed {args.seed}, "
          f"{cfg.heldout_objects} held-out objects x {cfg.heldout_views} views")
    print(f"{'arm':<22}{'PSNR':>8}{'SSIM':>8}{'LPIPS':>9}{'seconds':>9}")
    for name, m in means.items():
        print(f"{name:<22}{m['psnr']:>8.2f}{m['ssim']:>8.3f}{m['lpips']:>9.4f}{seconds[name]:>9.0f}")
    base, oracle = means[dose_arm(0).name], means[oracle_arm(cfg.max_dose).name]
    print(f"oracle - 3D-only: PSNR {oracle['psnr'] - base['psnr']:+.2f} dB, SSIM {oracle['ssim'] - base['ssim']:+.3f}, "
          f"LPIPS {oracle['lpips'] - base['lpips']:+.4f} (one seed; the mini ablation's 3D-only seed std: 0.08 dB)")


if __name__ == "__main__":
    main()
