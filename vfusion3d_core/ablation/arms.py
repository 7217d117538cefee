"""The LRM arms of the ablation and how each is trained, compute-matched.

Every arm runs ``2 * lrm_steps`` optimizer steps through the same resolution stages:

* one-dataset arms (3D-only, synthetic-only) run the recipe stretched to twice its length;
* two-phase arms (synthetic -> 3D at each dose, oracle -> 3D) run the recipe on their pretraining data, then
  ``LRMTrainConfig.finetune_recipe`` (the same steps and stages at ``finetune_lr_scale`` of the learning rate) on
  the 3D set, starting from the first phase's weights.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from vfusion3d_core.ablation.config import AblationConfig
from vfusion3d_core.compute import ComputeSettings
from vfusion3d_core.lrm.train.request import LRMTrainRequest, run_train_request

THREE_D = "train3d"  # the data name of the scarce posed 3D set


@dataclass(frozen=True)
class Arm:
    """``name``; ``phases``: the data names trained on in order (one phase = the stretched recipe)."""

    name: str
    phases: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.phases) not in (1, 2):
            raise ValueError(f"{self.name}: an arm has one or two phases, got {self.phases}")


def checkpoint_name(arm: Arm | str, seed: int) -> str:
    """The name of one trained checkpoint ("3d_only.seed0"; also a file name)."""
    return f"{arm if isinstance(arm, str) else arm.name}.seed{seed}"


def synthetic_data(dose: int) -> str:
    return f"synthetic-{dose}"


def oracle_data(dose: int) -> str:
    return f"oracle-{dose}"


def dose_arm(dose: int) -> Arm:
    """The synthetic -> 3D arm at ``dose`` synthetic videos (0: the 3D-only arm)."""
    return Arm("3d_only", (THREE_D,)) if dose == 0 else Arm(f"synthetic_to_3d-{dose}", (synthetic_data(dose), THREE_D))


def synthetic_only_arm(dose: int) -> Arm:
    """The LRM trained on the ``dose`` synthetic videos alone."""
    return Arm(f"synthetic_only-{dose}", (synthetic_data(dose),))


def oracle_arm(dose: int) -> Arm:
    """Clean renders of the ``dose`` prompt objects, then the 3D set: what perfect synthetic data would give."""
    return Arm(f"oracle_to_3d-{dose}", (oracle_data(dose), THREE_D))


def ablation_arms(cfg: AblationConfig) -> list[Arm]:
    """3D-only, synthetic-only, synthetic -> 3D at every positive dose, oracle -> 3D (all at the largest dose)."""
    top = cfg.max_dose
    return [dose_arm(0), synthetic_only_arm(top), *(dose_arm(d) for d in cfg.doses if d > 0), oracle_arm(top)]


def train_arm(arm: Arm, cfg: AblationConfig, lr: float, seed: int, data: dict[str, list[str]], work_dir: Path,
              out_dir: Path, compute: ComputeSettings) -> dict:
    """Train ``arm`` (shards per data name in ``data``); checkpoints under ``work_dir`` (a killed run resumes
    there), the final LRM folder copied to ``out_dir/final``. Returns the per-phase summary."""
    recipe = cfg.lrm_recipe(lr, seed)
    plan = ([(arm.phases[0], recipe.stretched(2))] if len(arm.phases) == 1
            else [(arm.phases[0], recipe), (arm.phases[1], recipe.finetune_recipe(cfg.finetune_lr_scale))])
    init, phases = None, []
    for i, (name, phase_recipe) in enumerate(plan):
        if not data.get(name):
            raise ValueError(f"{arm.name}: no shards for its data {name!r}")
        request = LRMTrainRequest(phase_recipe, data[name], str(work_dir / f"phase-{i}"), init=init, compute=compute,
                                  torch_threads=cfg.torch_threads)
        outcome = run_train_request(request)
        init = str(outcome.final)
        phases.append({"data": name, "steps": phase_recipe.steps, "lr": phase_recipe.lr,
                       "final_loss": float(outcome.result.losses[-1]) if outcome.result.losses else None})
    shutil.copytree(init, out_dir / "final")  # type: ignore[arg-type]
    return {"arm": arm.name, "seed": seed, "lr": lr, "phases": phases,
            "optimizer_steps": sum(p["steps"] for p in phases)}
