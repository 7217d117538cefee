"""Prompt sets: sources, normalization, dedup and the shard files synthesis is partitioned by."""

from vfusion3d_core.prompts.dedup import DedupResult, deduplicate, minilm_embedder
from vfusion3d_core.prompts.promptset import PromptSetConfig, PromptSetResult, build_prompt_set, prompt_id
from vfusion3d_core.prompts.sources import (
    PromptSourceError,
    normalize_all,
    normalize_prompt,
    read_prompt_file,
    template_prompts,
)

__all__ = ["DedupResult", "PromptSetConfig", "PromptSetResult", "PromptSourceError", "build_prompt_set",
           "deduplicate", "minilm_embedder", "normalize_all", "normalize_prompt", "prompt_id", "read_prompt_file",
           "template_prompts"]
