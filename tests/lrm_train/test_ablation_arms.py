"""The ablation's arms are compute-matched: synthetic -> 3D fine-tunes with the pretraining recipe's steps and
stages at a reduced learning rate; 3D only trains as many steps in every resolution stage as both together."""

from collections import Counter

import pytest

from vfusion3d_core.lrm.train.config import FINETUNE_LR_SCALE, LRMTrainConfig


def steps_per_stage(recipe: LRMTrainConfig) -> Counter:
    """Optimizer steps spent at each (render size, patch size)."""
    return Counter((recipe.stage_at(s).render_size, recipe.stage_at(s).patch_size) for s in range(recipe.steps))


@pytest.mark.parametrize("preset", ["tiny", "small", "paper"])
def test_3d_only_matches_pretraining_plus_finetuning_in_every_stage(preset: str) -> None:
    pre = LRMTrainConfig.preset(preset)
    fine = pre.finetune_recipe()
    three_d_only = pre.stretched(2)
    assert three_d_only.steps == pre.steps + fine.steps
    assert steps_per_stage(three_d_only) == steps_per_stage(pre) + steps_per_stage(fine)
    assert three_d_only.lr == pre.lr and three_d_only.warmup_steps == 2 * pre.warmup_steps


def test_finetune_recipe_lowers_the_learning_rate_and_keeps_the_schedule() -> None:
    pre = LRMTrainConfig.preset("tiny")
    fine = pre.finetune_recipe()
    assert fine.lr == pytest.approx(pre.lr * FINETUNE_LR_SCALE) and fine.lr < pre.lr
    assert fine.steps == pre.steps and fine.stages == pre.stages and fine.stages is not pre.stages
    assert fine.warmup_steps == pre.warmup_steps // 4 and fine.seed == pre.seed + 1
    assert LRMTrainConfig.preset("tiny") == pre  # the pretraining recipe is not modified
    with pytest.raises(ValueError, match="lr_scale"):
        pre.finetune_recipe(0.0)
    with pytest.raises(ValueError, match="factor"):
        pre.stretched(0)
