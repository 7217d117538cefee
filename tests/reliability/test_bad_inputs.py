"""Bad and hostile inputs (docs/reliability.md, "Bad inputs"), one case per kind: each is refused with an error
naming the culprit (or, when valid but hostile, processed safely), and nothing already written changes. Cases:
bad_input_cases.py."""

from __future__ import annotations

import pytest
from bad_input_cases import CASES, run_case
from figures import record_bad_input


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_handled(case, tmp_path) -> None:
    handled = False
    try:
        run_case(case, tmp_path)
        handled = True
    finally:
        record_bad_input(case.id, handled)


def test_every_input_kind_is_covered() -> None:
    kinds = {c.kind for c in CASES}
    assert kinds == {"mesh", "prompt", "labels", "shard", "ckpt", "image"}, kinds
    ids = {c.id for c in CASES}
    for required in ("mesh-symlink-outside", "prompt-mis-encoded", "prompt-bidi-overrides",
                     "prompt-path-and-shell-text", "labels-conflicting-partitions", "labels-unknown-keys",
                     "shard-truncated-at-member-boundary",
                     "shard-symlink-member", "shard-dotdot-member", "shard-cameras-nan", "shard-cameras-wrong-shape",
                     "ckpt-lying-safetensors-header", "ckpt-nan-weights-resume", "ckpt-nan-weights-generate",
                     "ckpt-pickle-training-state",
                     "image-decompression-bomb"):
        assert required in ids, required
