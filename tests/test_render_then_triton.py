"""A process that renders and later imports triton (transformers, torch._dynamo) must not crash: Mesa's llvmpipe
and triton each load their own LLVM, and triton loaded after a GL context has rendered segfaults. The rasterizer
imports triton before its first context."""

import subprocess
import sys

import pytest

SCRIPT = """
import sys
from vfusion3d_core.render.rasterizer import MeshRasterizer
r = MeshRasterizer()
r._context()
r._framebuffers(32)
assert "triton" in sys.modules
import torch._dynamo  # imports triton's runtime
print("ok")
"""


def test_rendering_first_then_triton_does_not_crash() -> None:
    pytest.importorskip("triton")
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
