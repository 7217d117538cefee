"""One device and precision setting for every core step (video, filtering, LRM, metrics, generate).

``ComputeSettings(device="auto", precision="auto")`` resolves to CUDA when present (else the CPU) and to
bf16 autocast exactly where bf16 is native (GPUs with bf16 tensor cores; CPUs with AVX512-BF16 or AMX),
fp32 elsewhere: on an AVX2-only CPU bf16 is emulated and slower than fp32. Every step records
``describe()`` in its manifest and MLflow run, so a checkpoint says where and how it was computed.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

# torch is imported inside the functions: ComputeSettings is a plain dataclass that config code (the Dagster code
# location, the CLI) builds and validates without loading torch.
DEVICES_HELP = "auto (CUDA when present, else cpu) | cpu | cuda | cuda:N"
PRECISIONS = ("auto", "bf16", "fp32")


class DeviceUnavailableError(RuntimeError):
    """The configured device does not exist on this machine."""


@functools.cache
def _cpu_flags() -> frozenset[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def fast_bf16(device: torch.device) -> bool:
    """Whether bf16 matmuls are natively fast on ``device``: CUDA with bf16 support (tensor cores,
    sm80+), or a CPU with AMX-BF16 or AVX512-BF16 that oneDNN can use. Elsewhere bf16 is emulated
    and slower than fp32."""
    import torch

    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "cpu":
        native = bool({"amx_bf16", "avx512_bf16"} & _cpu_flags())
        return native and torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    return False


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """'auto' -> cuda when available, else cpu; a named device must exist here (clear error otherwise)."""
    import torch

    if isinstance(name, torch.device):
        return name
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise DeviceUnavailableError(f"unknown device {name!r}; use {DEVICES_HELP}") from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceUnavailableError(f"device {name!r} requested but CUDA is not available on this machine")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DeviceUnavailableError(f"device {name!r} requested but only {torch.cuda.device_count()} "
                                         "CUDA device(s) are visible")
    elif device.type not in ("cpu", "mps"):
        raise DeviceUnavailableError(f"unsupported device {name!r}; use {DEVICES_HELP}")
    return device


@dataclass(frozen=True)
class ComputeSettings:
    """Where a step runs and in which precision.

    device: auto | cpu | cuda | cuda:N. precision: auto (bf16 where native, else fp32) | bf16 | fp32;
    bf16 means autocast to bfloat16 around forward passes (weights and optimizer state stay fp32).
    gradient_checkpointing: recompute activations in the backward pass of the big networks (video UNets,
    LRM transformer): less memory for about a third more compute.
    """

    device: str = "auto"
    precision: str = "auto"
    gradient_checkpointing: bool = False

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if not isinstance(self.device, str) or not self.device:
            raise ValueError(f"device must be a string ({DEVICES_HELP}), got {self.device!r}")

    @property
    def torch_device(self) -> torch.device:
        return resolve_device(self.device)

    @property
    def dtype(self) -> torch.dtype:
        """The autocast dtype: bfloat16 or float32 (= no autocast)."""
        import torch

        if self.precision == "bf16":
            return torch.bfloat16
        if self.precision == "fp32":
            return torch.float32
        return torch.bfloat16 if fast_bf16(self.torch_device) else torch.float32

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        """bf16 autocast on the device when the precision resolves to bf16; a no-op for fp32."""
        import torch

        if self.dtype == torch.bfloat16:
            with torch.autocast(self.torch_device.type, dtype=torch.bfloat16):
                yield
        else:
            yield

    def describe(self) -> dict[str, Any]:
        """What this resolves to here, for manifests and MLflow: requested and resolved device/precision."""
        import torch

        dev = self.torch_device
        name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
        return {"device": self.device, "precision": self.precision,
                "gradient_checkpointing": self.gradient_checkpointing, "resolved_device": str(dev),
                "device_name": name, "resolved_precision": "bf16" if self.dtype == torch.bfloat16 else "fp32",
                "native_bf16": fast_bf16(dev)}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> ComputeSettings:
        data = dict(data or {})
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown compute settings {sorted(unknown)}")
        return cls(**data)


def module_device(module: torch.nn.Module) -> torch.device:
    """The device of a module's first parameter (cpu for a module without parameters)."""
    import torch

    p = next(module.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def set_torch_threads(n: int | None) -> None:
    """Set torch's intra-op CPU threads for this process when ``n`` is given (a step's ``torch_threads``)."""
    import torch

    if n is None:
        return
    if int(n) < 1:
        raise ValueError(f"torch_threads must be >= 1, got {n}")
    torch.set_num_threads(int(n))
