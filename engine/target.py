"""Target sizes: the best file of an image that fits ``max_bytes`` (or ``target_bpp``).

The candidates are the model's encodable rungs and, when an effort is asked for (the
codec's ``effort`` > 0), each rung at that effort too.  Best means the highest rung;
at one rung the asked effort comes before effort 0 (its search minimises the rung's
rate-distortion cost with the one-pass codes among its candidates, so by that cost it
is never worse).

The tries, each a real encode whose bytes are the ones returned (so the result is
exactly the file ``Codec(quality=q, effort=e).compress`` writes):
  1. effort 0, rungs from the top down until one fits (q0); no assumption that sizes
     grow with the rung;
  2. with an effort: (q0 + 1, effort) and up while it fits, else (q0, effort); when no
     rung fits at effort 0, (lowest rung, effort).
When nothing fits, :class:`~engine.errors.TargetSizeError` says how small the file
can get (the smallest file tried) and with which rung.
"""
from __future__ import annotations

import math
import numbers
from typing import Callable

from .errors import TargetSizeError


def check(max_bytes, target_bpp) -> None:
    """Exactly one of the two, and a positive one."""
    if (max_bytes is None) == (target_bpp is None):
        raise ValueError("give one of max_bytes or target_bpp" if max_bytes is None else
                         "give max_bytes or target_bpp, not both")
    # numbers, not strings: numpy's integers and floats count (issue #28), '0.3' does not
    if max_bytes is not None and (isinstance(max_bytes, bool) or not isinstance(max_bytes, numbers.Integral)
                                  or max_bytes < 1):
        raise ValueError(f"max_bytes must be a positive integer, got {max_bytes!r}")
    if target_bpp is not None:
        ok = (isinstance(target_bpp, numbers.Real) and not isinstance(target_bpp, bool)
              and math.isfinite(float(target_bpp)) and float(target_bpp) > 0)
        if not ok:
            raise ValueError(f"target_bpp must be a positive number of bits per pixel, got {target_bpp!r}")


def limit_bytes(max_bytes, target_bpp, width: int, height: int) -> int:
    """The size limit in bytes: ``max_bytes``, or ``target_bpp`` over the image's own pixels
    (rounded down, past float rounding: a file's own bpp gives back its own size)."""
    check(max_bytes, target_bpp)
    if max_bytes is not None:
        return int(max_bytes)
    return math.floor(float(target_bpp) * width * height / 8 * (1 + 1e-12))


def fit(encode: Callable[[int, int], bytes], qualities: list[int], effort: int, limit: int,
        pixels: int, what: str = "the image") -> bytes:
    """The best file of at most ``limit`` bytes; ``encode(quality, effort)`` makes a
    candidate, ``qualities`` are the encodable rungs, ``pixels`` the image's (for bpp)."""
    qs = sorted(qualities)
    tried: dict[tuple[int, int], bytes] = {}

    def size(q: int, e: int) -> int:
        if (q, e) not in tried:
            tried[(q, e)] = encode(q, e)
        return len(tried[(q, e)])

    q0 = next((q for q in reversed(qs) if size(q, 0) <= limit), None)
    best = None if q0 is None else (q0, 0)
    if effort > 0:
        if q0 is None:
            if size(qs[0], effort) <= limit:
                best = (qs[0], effort)
        else:
            up = [q for q in qs if q > q0]
            for q in up:
                if size(q, effort) > limit:
                    break
                best = (q, effort)
            if best == (q0, 0) and size(q0, effort) <= limit:
                best = (q0, effort)
    if best is not None:
        return tried[best]
    (q, e), data = min(tried.items(), key=lambda kv: (len(kv[1]), kv[0]))
    n = len(data)
    raise TargetSizeError(
        f"{what} does not fit in {limit} bytes ({limit * 8 / pixels:.4f} bpp): its smallest file is {n} bytes "
        f"({n * 8 / pixels:.4f} bpp, quality {q}{f', effort {e}' if e else ''})", n, limit)
