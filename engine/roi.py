"""Regions of interest: steer the bits to what matters (issue #27).

``codec.compress(img, roi=mask, roi_boost=k)`` raises the importance logits by ``k``
under the mask at encode time (engine/importance.py :func:`~engine.importance.boost`),
so the region gets higher levels: more of the Y channels are kept there.  The file is
an ordinary file of the codec's rung; decoders need nothing new.

What a ``roi`` may be (its size must be the image's, after the EXIF orientation):

* a mask: a bool or integer HxW (or HxWx1) array or tensor, a PIL image of mode ``L`` or
  ``1``, or the path of such an image; nonzero is inside.  The boost is ``roi_boost``
  (default :data:`DEFAULT_BOOST`) inside and 0 outside.
* a boost map: a float HxW array or tensor, or a PIL image of mode ``F``: the boost at
  each pixel in importance-logit units (negative lowers it), times ``roi_boost`` when
  given.  Its finite values only.

The importance map is at 1/8 of the image; a location covers an 8x8 block.  A mask is
pooled to that grid by its *maximum*: a block with any pixel inside is boosted in full,
so no part of the region is coded below the asked boost (the cost: a rim of at most one
block around it).  A boost map is pooled by its *mean* over the block's pixels: a smooth
map's average is what the block is asked for.  Blocks that lie wholly in the encoder's
padding take their nearest block's boost.  Values past +-:data:`MAX_BOOST` act as it
(the sigmoid has saturated there).  A mask with nothing inside (or a boost of 0) asks
for nothing: the bytes are those of no ROI.

For the code search (``effort`` > 0) the same per-pixel boost ``b`` weighs each pixel's
squared error by ``1 + b`` (``1 / (1 - b)`` where ``b`` < 0), and the search starts from
the boosted map (engine/net/search.py).

A bad mask is an :class:`~engine.errors.ImageError` (wrong size, type or mode, NaN or
infinity, negative values in an integer mask); a bad ``roi_boost`` a ValueError.
"""
from __future__ import annotations

import math
import numbers
import os
from dataclasses import dataclass

import numpy as np

from .errors import ImageError

DEFAULT_BOOST = 1.0      # logit units: 2 rungs of the shipped ladder (its offsets are 0.5 apart); at equal
                         # bytes k = 1 cost less outside than k = 2 for as much (small16) or more (small) inside
MAX_BOOST = 30.0         # sigmoid(30) rounds to 1 in float32: more does nothing more
BLOCK = 8                # image pixels per importance-map location, each way


def check_boost(roi_boost) -> float | None:
    """``roi_boost``: None (the default for the kind of roi) or a finite number."""
    if roi_boost is None:
        return None
    if isinstance(roi_boost, bool) or not isinstance(roi_boost, numbers.Real) or not math.isfinite(roi_boost):
        raise ValueError(f"roi_boost must be a finite number (importance-logit units), got {roi_boost!r}")
    return float(roi_boost)


@dataclass(frozen=True)
class RoiBoost:
    """One image's boost, ready for the encoder: ``grid`` (ceil(h/8), ceil(w/8)) float32,
    the logit boost of each importance location; ``pixels()`` the per-pixel boost."""
    grid: np.ndarray
    inside: np.ndarray       # (h, w): a bool mask, or the float map
    scale: float             # the boost per unit of ``inside``

    def pixels(self) -> np.ndarray:
        """(h, w) float32 boost per pixel (clipped to +-MAX_BOOST)."""
        return np.clip(self.inside.astype(np.float32) * np.float32(self.scale), -MAX_BOOST, MAX_BOOST)

    def weights(self) -> np.ndarray:
        """(h, w) float32 weight of each pixel's squared error in the code search:
        1 + b where the boost b >= 0, 1 / (1 - b) where b < 0."""
        b = self.pixels()
        return np.where(b >= 0, 1 + b, 1 / (1 - np.minimum(b, 0))).astype(np.float32)

    def padded(self, gh: int, gw: int) -> np.ndarray:
        """The grid on an encoder's (gh, gw) grid (padding blocks take their nearest block's boost)."""
        h, w = self.grid.shape
        if (gh, gw) == (h, w):
            return self.grid
        if gh < h or gw < w:
            raise ValueError(f"ROI grid {w}x{h} does not fit the encoder's {gw}x{gh}")
        return np.pad(self.grid, ((0, gh - h), (0, gw - w)), mode="edge")


def _from_pil(im) -> np.ndarray:
    from PIL import Image, ImageOps
    try:
        im = ImageOps.exif_transpose(im)
        if im.mode in ("1", "L"):
            return np.asarray(im) != 0
        if im.mode == "F":
            return np.asarray(im, dtype=np.float32)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise ImageError(f"cannot read the ROI mask image: {type(e).__name__}: {e}") from e
    raise ImageError(f"an ROI mask image must be mode L or 1 (nonzero = inside) or F (a boost map), got mode "
                     f"{im.mode}: convert it first, e.g. im.convert('L')")


def _array(mask) -> np.ndarray:
    """A mask as given -> a bool (mask) or float32 (boost map) HxW array, checked."""
    from PIL import Image
    if isinstance(mask, (str, os.PathLike)):
        from .io.imageio import open_regular
        try:
            with open_regular(mask) as f, Image.open(f) as im:
                im.load()
                return _from_pil(im)
        except ImageError as e:
            raise ImageError(f"ROI mask {str(mask)!r}: {e}") from None
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
            reason = e.strerror if isinstance(e, OSError) and e.strerror else e
            raise ImageError(f"cannot read ROI mask {str(mask)!r}: {reason}") from e
    if isinstance(mask, Image.Image):
        return _from_pil(mask)
    try:
        import torch
        if isinstance(mask, torch.Tensor):
            t = mask.detach().cpu()
            mask = (t.float() if t.dtype in (torch.float16, torch.bfloat16) else t).numpy()
    except ImportError:  # pragma: no cover
        pass
    if not isinstance(mask, np.ndarray):
        raise ImageError(f"unsupported ROI mask type {type(mask).__name__}: pass an HxW bool/uint8 array, a PIL "
                         "image of mode L, 1 or F, a path, or an HxW float boost map")
    a = np.asarray(mask)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    elif a.ndim == 3 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 2:
        raise ImageError(f"an ROI mask must be HxW (or HxWx1), got shape {tuple(mask.shape)}")
    if a.dtype == np.bool_:
        return a
    if np.issubdtype(a.dtype, np.integer):
        if np.issubdtype(a.dtype, np.signedinteger) and a.size and int(a.min()) < 0:
            raise ImageError(f"an integer ROI mask must not be negative (nonzero = inside), got values down to "
                             f"{int(a.min())}; pass a float array for a boost map that lowers importance")
        return a != 0
    if np.issubdtype(a.dtype, np.floating):
        a = a.astype(np.float32)
        if not np.isfinite(a).all():
            raise ImageError("the ROI boost map holds NaN or infinite values")
        return a
    raise ImageError(f"an ROI mask must be bool, integer or float, got dtype {a.dtype}")


def _pool(a: np.ndarray, how: str) -> np.ndarray:
    """(h, w) -> (ceil(h/8), ceil(w/8)) over each block's own pixels: 'max' or 'mean'."""
    h, w = a.shape
    gh, gw = -(-h // BLOCK), -(-w // BLOCK)
    pad = ((0, gh * BLOCK - h), (0, gw * BLOCK - w))
    blocks = np.pad(a, pad).reshape(gh, BLOCK, gw, BLOCK)
    if how == "max":
        return blocks.max(axis=(1, 3)).astype(np.float32)
    sums = blocks.astype(np.float64).sum(axis=(1, 3))
    rows = np.minimum(BLOCK, h - np.arange(gh) * BLOCK)[:, None]
    cols = np.minimum(BLOCK, w - np.arange(gw) * BLOCK)[None, :]
    return (sums / (rows * cols)).astype(np.float32)


def prepare(mask, roi_boost, height: int, width: int) -> RoiBoost | None:
    """Check one image's ``roi`` against its size -> its :class:`RoiBoost`, or None when it
    asks for nothing (no mask, nothing inside, a zero boost)."""
    if mask is None:
        return None
    if isinstance(mask, RoiBoost):          # prepared already (a target-size search's tries)
        if mask.inside.shape != (height, width):
            raise ImageError(f"the ROI mask is {mask.inside.shape[1]}x{mask.inside.shape[0]} and the image "
                             f"{width}x{height}")
        return mask
    boost = check_boost(roi_boost)
    a = _array(mask)
    if a.shape != (height, width):
        raise ImageError(f"the ROI mask is {a.shape[1]}x{a.shape[0]} and the image {width}x{height}: a mask must "
                         "have the image's size (after its EXIF orientation)")
    if a.dtype == np.bool_:
        scale = DEFAULT_BOOST if boost is None else boost
        grid = _pool(a, "max") * np.float32(scale)
    else:
        scale = 1.0 if boost is None else boost
        grid = _pool(a, "mean") * np.float32(scale)
    grid = np.clip(grid, -MAX_BOOST, MAX_BOOST).astype(np.float32)
    if not grid.any():
        return None
    return RoiBoost(grid, a, scale)


def check_call(roi, roi_boost) -> None:
    """A call's ``roi_boost`` is a finite number, and comes with a ``roi``."""
    check_boost(roi_boost)
    if roi is None and roi_boost is not None:
        raise ValueError("roi_boost was given without a roi (the mask it boosts)")


def requests(roi, count: int | None = None):
    """A call's ``roi`` -> an iterator of per-image masks: one mask for every image, or
    an iterable (list, tuple, generator) with one entry per image (None: no ROI for it).
    ``count``: the number of images, when known, to check a list's length."""
    if roi is None:
        return None
    if _is_one(roi):
        import itertools
        return itertools.repeat(roi)
    if count is not None and hasattr(roi, "__len__") and len(roi) != count:
        raise ValueError(f"roi has {len(roi)} masks for {count} images: give one per image, or one mask for all")
    return iter(roi)


def _is_one(roi) -> bool:
    """One mask (array, tensor, PIL image, path), not a sequence of them."""
    from PIL import Image
    if isinstance(roi, (str, os.PathLike, np.ndarray, Image.Image)):
        return True
    try:
        import torch
        return isinstance(roi, torch.Tensor)
    except ImportError:  # pragma: no cover
        return False


def stack(boosts, gh: int, gw: int) -> np.ndarray | None:
    """Per image None or a :class:`RoiBoost` -> (B, 1, gh, gw) float32 logit boosts on an
    encoder's grid (0 where an image has none), or None when no image has one."""
    if not boosts or all(b is None for b in boosts):
        return None
    grid = np.zeros((len(boosts), 1, gh, gw), np.float32)
    for k, b in enumerate(boosts):
        if b is not None:
            grid[k, 0] = b.padded(gh, gw)
    return grid


def masks_for(where, inputs: list) -> tuple[list, int]:
    """The CLI's ``--roi``: a mask file for one input, or a folder of masks matched to the
    inputs by file stem -> (per input: a mask path, None (no mask of its stem in the folder:
    coded without ROI) or the ImageError of an ambiguous match, how many inputs have none).
    A folder that matches no input at all, or a file for several inputs, is a ValueError."""
    from pathlib import Path

    from .data import IMAGE_EXTS
    where = Path(where)
    if not where.is_dir():
        if not where.exists():
            raise ValueError(f"--roi {where}: no such file or folder")
        if len(inputs) != 1:
            raise ValueError(f"--roi {where} is one mask for one input, and {len(inputs)} inputs matched: give a "
                             "folder of masks named like the inputs (photo.png -> masks/photo.png)")
        return [where], 0
    by_stem: dict[str, list] = {}
    for m in sorted(where.iterdir()):
        if m.is_file() and m.suffix.lower() in IMAGE_EXTS:
            by_stem.setdefault(m.stem, []).append(m)
    out, missing = [], 0
    for f in inputs:
        found = by_stem.get(Path(f).stem, [])
        if len(found) > 1:
            out.append(ImageError(f"several ROI masks for {Path(f).name} in {where}: "
                                  f"{', '.join(m.name for m in found)}"))
        elif found:
            out.append(found[0])
        else:
            out.append(None)
            missing += 1
    if inputs and missing == len(inputs):
        raise ValueError(f"--roi {where}: no mask there is named like any input (masks are matched by file "
                         f"stem: photo.png -> {where / 'photo.png'})")
    return out, missing
