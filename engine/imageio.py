"""Input images -> (H, W, 3) uint8 arrays + colour mode, and the pixel limits.

Policy (documented in the README):
* RGB is coded as is.  Grayscale (PIL modes 1/L/I/I;16/F, 2-D arrays, 1-channel
  arrays or tensors) is coded as Y only; it decodes to three equal channels.
* An alpha channel (RGBA, LA, PA, 4-channel arrays) is dropped: this is a
  colour codec, not an alpha codec.  Palette and CMYK images are converted to RGB.
* numpy arrays are HWC uint8; torch tensors are CHW (torchvision's convention),
  uint8 or float in [0, 1].
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .errors import ImageError, ImageTooLargeError

COLOR_RGB = 0
COLOR_GRAY = 1
MAX_SIDE = 65535
DEFAULT_MAX_PIXELS = int(os.environ.get("ENGINE_MAX_PIXELS", 100_000_000))


def check_size(width: int, height: int, max_pixels: int, exc=ImageTooLargeError) -> None:
    if width < 1 or height < 1:
        raise exc(f"image size {width}x{height} is empty")
    if width > MAX_SIDE or height > MAX_SIDE:
        raise exc(f"image size {width}x{height}: sides are limited to {MAX_SIDE}")
    if width * height > max_pixels:
        raise exc(f"image size {width}x{height} = {width * height} pixels is over the limit of "
                  f"{max_pixels} (raise max_pixels / ENGINE_MAX_PIXELS if you trust the input)")


def _from_pil(im) -> tuple[np.ndarray, int]:
    mode = im.mode
    if mode in ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"):
        if mode in ("I", "I;16", "I;16B", "I;16L", "F"):
            a = np.asarray(im, dtype=np.float64)
            scale = 255.0 / 65535.0 if a.max(initial=0) > 255 else 1.0
            g = np.clip(np.rint(a * scale), 0, 255).astype(np.uint8)
        else:
            g = np.asarray(im.convert("L"))
        return np.repeat(g[:, :, None], 3, axis=2), COLOR_GRAY
    return np.asarray(im.convert("RGB")), COLOR_RGB


def to_rgb(img, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[np.ndarray, int]:
    """Any supported image -> ((H, W, 3) uint8 C-contiguous array, colour mode)."""
    from PIL import Image

    if isinstance(img, (str, os.PathLike)):
        path = Path(img)
        try:
            with Image.open(path) as im:
                check_size(im.width, im.height, max_pixels)
                im.load()
                arr, mode = _from_pil(im)
        except ImageError:
            raise
        except (OSError, ValueError, Image.DecompressionBombError, SyntaxError) as e:
            raise ImageError(f"cannot read image {str(path)!r}: {e}") from e
        return np.ascontiguousarray(arr), mode
    if isinstance(img, Image.Image):
        check_size(img.width, img.height, max_pixels)
        arr, mode = _from_pil(img)
        return np.ascontiguousarray(arr), mode
    try:
        import torch
        if isinstance(img, torch.Tensor):
            t = img.detach().cpu()
            if t.ndim == 2:
                t = t[None]
            if t.ndim != 3 or t.shape[0] not in (1, 3, 4):
                raise ImageError(f"a torch image must be CHW with 1, 3 or 4 channels, got shape {tuple(img.shape)}")
            if t.is_floating_point():
                t = (t.clamp(0, 1) * 255).round().to(torch.uint8)
            elif t.dtype != torch.uint8:
                raise ImageError(f"a torch image must be uint8 or float in [0, 1], got {t.dtype}")
            img = t.permute(1, 2, 0).numpy()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(img, np.ndarray):
        a = img
        if a.dtype != np.uint8:
            raise ImageError(f"a numpy image must be uint8 HxWxC, got dtype {a.dtype}")
        if a.ndim == 2:
            a = a[:, :, None]
        if a.ndim != 3 or a.shape[2] not in (1, 3, 4):
            raise ImageError(f"a numpy image must be HxW, HxWx1, HxWx3 or HxWx4, got shape {img.shape}")
        check_size(a.shape[1], a.shape[0], max_pixels)
        if a.shape[2] == 1:
            return np.ascontiguousarray(np.repeat(a, 3, axis=2)), COLOR_GRAY
        return np.ascontiguousarray(a[:, :, :3]), COLOR_RGB
    raise ImageError(f"unsupported image type {type(img).__name__}: pass a path, PIL image, "
                     "HxWx3 uint8 numpy array or CHW torch tensor")
