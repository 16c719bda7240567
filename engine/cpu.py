"""What this CPU offers: its name and whether it has bf16 matrix units (Intel AMX).

Read from /proc/cpuinfo (Linux); elsewhere the answers are "unknown" and False, so
callers fall back to fp32.  ``ENGINE_CPU_BF16=0|1`` overrides the detection (to
compare both on one machine, or to refuse bf16 where it is slow).
"""
from __future__ import annotations

import functools
import os
import platform

from . import settings


@functools.lru_cache(maxsize=1)
def _cpuinfo() -> dict[str, str]:
    info: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if not line.strip():
                    break                 # the first processor is enough
                k, _, v = line.partition(":")
                info[k.strip()] = v.strip()
    except OSError:
        pass
    return info


def cpu_name() -> str:
    return _cpuinfo().get("model name") or platform.processor() or platform.machine() or "unknown CPU"


def cpu_flags() -> frozenset[str]:
    return frozenset(_cpuinfo().get("flags", "").split())


def has_bf16_matrix() -> bool:
    """True where the CPU has bf16 matrix units (AMX-BF16), the units that make bf16
    convolutions several times faster than fp32.  AVX512-BF16 alone is a dot-product
    instruction, not a matrix unit, and does not count."""
    forced = settings.env("ENGINE_CPU_BF16")
    if forced in ("0", "1"):
        return forced == "1"
    return "amx_bf16" in cpu_flags()


def describe() -> str:
    """One line for results files: the CPU and whether it has the units."""
    return f"{cpu_name()}, {os.cpu_count()} CPUs, bf16 matrix units (AMX): {'yes' if has_bf16_matrix() else 'no'}"
