"""Whether this CPU can train the LSTM in bfloat16, decided once, up front.

torch runs a bfloat16 LSTM on the CPU through oneDNN, which builds it only on
CPUs with AVX-512 (natively with AVX512-BF16 or AMX, emulated on plain
AVX-512). On an AVX2-only CPU it fails deep inside the first forward pass
("could not create a primitive descriptor for the LSTM forward propagation
primitive"). So we try one tiny forward and backward pass before training:
the answer is oneDNN's own, including any ONEDNN_MAX_CPU_ISA cap.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@dataclass(frozen=True)
class Bf16Support:
    ok: bool
    detail: str  # one line: how (native or emulated), or what is missing

    def line(self) -> str:
        return f"bf16: {'supported' if self.ok else 'not supported'} on this CPU ({self.detail})"


def cpu_flags() -> set[str]:
    """The CPU's feature flags as Linux reports them (empty elsewhere)."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


@functools.cache
def bf16_support(hidden: int = 32, layers: int = 2, n_features: int = 4) -> Bf16Support:
    """Try a bfloat16 LSTM of this shape once (milliseconds) and say what happened."""
    import torch
    from torch import nn

    with torch.random.fork_rng(devices=[]):  # leave the caller's random stream as it was
        lstm = nn.LSTM(n_features, hidden, layers, batch_first=True)
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out, _ = lstm(torch.zeros(2, 3, n_features))
        out.float().sum().backward()
    except RuntimeError as exc:
        return Bf16Support(False, _missing(str(exc).splitlines()[0] if str(exc) else type(exc).__name__))
    flags = cpu_flags()
    native = [f.upper().replace("_", "-") for f in NATIVE_BF16_FLAGS if f in flags]
    how = (
        f"native: {', '.join(native)}"
        if native
        else "emulated by oneDNN with AVX-512, no bfloat16 instructions: may be slower than fp32"
    )
    return Bf16Support(True, how)


def _missing(error: str) -> str:
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA")
    flags = cpu_flags()
    best = next(
        (isa for flag, isa in (("avx512f", "AVX-512"), ("avx2", "AVX2"), ("avx", "AVX")) if flag in flags),
        "an unknown ISA",
    )
    why = (
        f"ONEDNN_MAX_CPU_ISA={cap} limits oneDNN"
        if cap
        else f"this CPU has {best}, oneDNN's bfloat16 LSTM needs AVX-512"
    )
    return f"{why}; oneDNN: {error.split('. ')[0].rstrip('.')}"


def resolve(requested: str, hidden: int, layers: int, n_features: int) -> tuple[str, str | None]:
    """(the precision to train in, a one-line warning when it is not the one asked for).
    bf16 on a CPU that cannot do it falls back to fp32, so a retrain scheduled
    on another machine still produces a model."""
    if requested != "bf16":
        return requested, None
    support = bf16_support(hidden, layers, n_features)
    if support.ok:
        return "bf16", None
    return "fp32", f"{support.line()}; training in fp32 instead"
