"""Input images -> (H, W, 3) uint8 arrays + colour mode, and the pixel limits.

Policy (documented in the README):
* RGB is coded as is.  Grayscale (PIL modes 1/L/I/I;16/F, 2-D arrays, 1-channel
  arrays or tensors) is coded as Y only; it decodes to three equal channels.
  Samples are scaled by their *mode*, never by their values: 16-bit modes (I;16*,
  and I, Pillow's mode for 16-bit files) are 0..65535, F is 0..1 (like float
  tensors); values outside the mode's range, NaN or infinity are an ImageError.
* An alpha channel (RGBA, LA, PA, La, RGBa, 4-channel arrays) is dropped: this is a
  colour codec, not an alpha codec.  Palette and CMYK images are converted to RGB.
* Files and PIL images: the EXIF orientation is applied (the image is coded the
  way viewers show it), and an embedded ICC profile other than sRGB is converted
  to sRGB with Pillow's ImageCms (colour images; a grayscale image's profile is
  not applied).  The file format carries no profile: decoded images are sRGB.
* numpy arrays are HWC uint8 (subclasses such as np.matrix are taken as plain
  arrays); torch tensors are CHW (torchvision's convention), uint8 or float in
  [0, 1] (values that round to 0..255 after x255; anything else is refused).
* A path must name a regular file: FIFOs, devices and folders are refused without
  being opened for reading (so nothing blocks).
* Every failure to read or interpret an input is an :class:`ImageError`.
"""
from __future__ import annotations

import errno
import io
import os
import stat
from pathlib import Path

import numpy as np

from .. import settings
from ..errors import ImageError, ImageTooLargeError

COLOR_RGB = 0
COLOR_GRAY = 1
MAX_SIDE = 65535
DEFAULT_MAX_PIXELS = 100_000_000     # the built-in limit; ENGINE_MAX_PIXELS overrides it
MAX_PIXELS_ENV = "ENGINE_MAX_PIXELS"


def max_pixels_setting(value=None, what: str = "max_pixels") -> int:
    """The pixel limit: ``value``, else ENGINE_MAX_PIXELS, else the built-in 100 M.
    It must be a positive integer everywhere (API, CLI, environment)."""
    if value is None:
        env = settings.env(MAX_PIXELS_ENV)
        if env is None or env.strip() == "":
            return DEFAULT_MAX_PIXELS
        value, what = env.strip(), MAX_PIXELS_ENV
    try:
        v = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a positive integer (pixels), got {value!r}") from None
    if v < 1:
        raise ValueError(f"{what} must be a positive integer (pixels), got {value!r}")
    return v


def open_regular(path) -> io.BufferedReader:
    """Open a path for reading only if it is a regular file.  The open itself does not
    block (O_NONBLOCK: a FIFO with no writer would wait forever otherwise) and the
    check is on the opened file, so a name swapped in between is caught too.
    Raises OSError (FileNotFoundError, ... or EINVAL for a non-regular file)."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    fd = os.open(path, flags)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = ("a folder" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode)
                    else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
                    else "a socket" if stat.S_ISSOCK(mode) else "not a regular file")
            raise OSError(errno.EINVAL, f"{kind}, not a regular file", str(path))
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def check_size(width: int, height: int, max_pixels: int, exc=ImageTooLargeError) -> None:
    if width < 1 or height < 1:
        raise exc(f"image size {width}x{height} is empty")
    if width > MAX_SIDE or height > MAX_SIDE:
        raise exc(f"image size {width}x{height}: sides are limited to {MAX_SIDE}")
    if width * height > max_pixels:
        raise exc(f"image size {width}x{height} = {width * height} pixels is over the limit of "
                  f"{max_pixels} (raise max_pixels / ENGINE_MAX_PIXELS if you trust the input)")


# Pillow modes by how their samples are read (anything else goes through convert("RGB"))
_MODES_16 = ("I", "I;16", "I;16B", "I;16L", "I;16N")
_MODES_GRAY8 = ("1", "L", "LA", "La")
_ALPHA_TO_PLAIN = {"La": "LA", "RGBa": "RGBA"}    # premultiplied alpha: un-premultiply first


def _unit_to_uint8(a: np.ndarray, what: str) -> np.ndarray:
    """Floats in [0, 1] -> uint8 (x255, rounded).  NaN/inf, or a value that does not
    round into 0..255, is refused: such inputs are not [0, 1] images (0..255 floats
    would otherwise clamp to white)."""
    lo, hi = -0.5 / 255, 1 + 0.5 / 255
    if a.size and not np.isfinite(a).all():
        raise ImageError(f"{what} holds NaN or infinite values")
    if a.size and (a.min() < lo or a.max() >= hi):
        raise ImageError(f"{what} must be in [0, 1], got values in [{float(a.min()):g}, {float(a.max()):g}]"
                         " (divide 0..255 data by 255, or pass uint8)")
    return np.clip(np.rint(a * 255.0), 0, 255).astype(np.uint8)


def _gray_from_pil(im) -> np.ndarray:
    mode = im.mode
    if mode in _MODES_16:
        a = np.asarray(im)
        if a.size and (int(a.min()) < 0 or int(a.max()) > 65535):
            raise ImageError(f"mode {mode} samples must be 16-bit (0..65535), got values in "
                             f"[{int(a.min())}, {int(a.max())}]")
        # scaled by the mode: x 255/65535, rounded (no ties: v/257 is never k + 1/2)
        return ((a.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    if mode == "F":
        return _unit_to_uint8(np.asarray(im, dtype=np.float32), "a mode F image")
    if mode in _ALPHA_TO_PLAIN:
        im = im.convert(_ALPHA_TO_PLAIN[mode])
    return np.asarray(im.convert("L"))


def _orient(im, owned: bool):
    """Apply the EXIF orientation (a copy unless ``owned``)."""
    from PIL import ExifTags, ImageOps
    if im.getexif().get(ExifTags.Base.Orientation, 1) in range(2, 9):
        if owned:
            ImageOps.exif_transpose(im, in_place=True)
        else:
            im = ImageOps.exif_transpose(im)
    return im


def _srgb_profile():
    from PIL import ImageCms
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


def _to_srgb(im):
    """A colour image with an embedded ICC profile -> RGB in sRGB (no-op for an sRGB profile)."""
    from PIL import ImageCms
    icc = im.info.get("icc_profile")
    if not icc or im.mode in _MODES_GRAY8 + _MODES_16 + ("F",):
        return im
    try:
        src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        if "srgb" in (ImageCms.getProfileDescription(src) or "").lower():
            return im
        if im.mode != "CMYK":
            im = im.convert(_ALPHA_TO_PLAIN.get(im.mode, im.mode)).convert("RGB")
        return ImageCms.profileToProfile(im, src, _srgb_profile(), outputMode="RGB")
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError) as e:
        raise ImageError(f"cannot convert the image's ICC profile to sRGB: {e} "
                         "(strip or fix the profile)") from e


def _from_pil(im, owned: bool = False) -> tuple[np.ndarray, int]:
    im.load()
    im = _to_srgb(_orient(im, owned))
    mode = im.mode
    if mode in _MODES_GRAY8 + _MODES_16 + ("F",):
        g = _gray_from_pil(im)
        return np.repeat(g[:, :, None], 3, axis=2), COLOR_GRAY
    if mode in _ALPHA_TO_PLAIN:
        im = im.convert(_ALPHA_TO_PLAIN[mode])
    return np.asarray(im.convert("RGB")), COLOR_RGB


# what reading a (possibly lazy, truncated, closed, unusual) PIL image can raise
_PIL_ERRORS = (OSError, ValueError, SyntaxError, AssertionError, AttributeError, TypeError, KeyError,
               IndexError, EOFError, NotImplementedError)


def _from_tensor(img) -> np.ndarray:
    import torch
    try:
        t = img.detach()
        if t.device.type != "cpu":
            t = t.cpu()
        if t.ndim == 2:
            t = t[None]
        if t.ndim != 3 or t.shape[0] not in (1, 3, 4):
            raise ImageError(f"a torch image must be CHW with 1, 3 or 4 channels, got shape {tuple(img.shape)}")
        if t.is_floating_point():
            if t.dtype in (torch.float16, torch.bfloat16):
                t = t.float()
            return np.ascontiguousarray(_unit_to_uint8(t.numpy(), "a float tensor").transpose(1, 2, 0))
        if t.dtype != torch.uint8:
            raise ImageError(f"a torch image must be uint8 or float in [0, 1], got {t.dtype}")
        return t.permute(1, 2, 0).numpy()
    except ImageError:
        raise
    except (RuntimeError, NotImplementedError, TypeError, ValueError) as e:
        raise ImageError(f"cannot read the tensor ({img.dtype} on {img.device}): {e}") from e


def to_rgb(img, max_pixels: int | None = None) -> tuple[np.ndarray, int]:
    """Any supported image -> ((H, W, 3) uint8 C-contiguous base ndarray, colour mode)."""
    from PIL import Image

    max_pixels = max_pixels_setting(max_pixels)
    if isinstance(img, (str, os.PathLike)):
        path = Path(img)
        try:
            with open_regular(path) as f, Image.open(f) as im:
                check_size(im.width, im.height, max_pixels)
                arr, mode = _from_pil(im, owned=True)
        except ImageError:
            raise
        except (Image.DecompressionBombError,) + _PIL_ERRORS as e:
            reason = e.strerror if isinstance(e, OSError) and e.strerror else e
            raise ImageError(f"cannot read image {str(path)!r}: {reason}") from e
        return np.ascontiguousarray(arr), mode
    if isinstance(img, Image.Image):
        try:
            check_size(img.width, img.height, max_pixels)
            arr, mode = _from_pil(img)
        except ImageError:
            raise
        except (Image.DecompressionBombError,) + _PIL_ERRORS as e:
            raise ImageError(f"cannot read the PIL image (mode {getattr(img, 'mode', '?')}): "
                             f"{type(e).__name__}: {e}") from e
        return np.ascontiguousarray(arr), mode
    try:
        import torch
        if isinstance(img, torch.Tensor):
            img = _from_tensor(img)
    except ImportError:  # pragma: no cover
        pass
    if isinstance(img, np.ndarray):
        a = np.asarray(img)          # a plain ndarray: subclasses (np.matrix, ...) index differently
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


def check_batch(items, what: str = "images") -> None:
    """Refuse a single image (or a single file's bytes) where an iterable of them is
    expected: iterating it would silently code its rows, characters or bytes."""
    one = None
    if isinstance(items, (str, os.PathLike)):
        one = "a path"
    elif isinstance(items, (bytes, bytearray, memoryview)):
        one = "one file's bytes" if what == "files" else "bytes"
    elif isinstance(items, np.ndarray) and items.ndim < 4:
        one = f"one {items.ndim}-D array"
    else:
        try:
            from PIL import Image
            if isinstance(items, Image.Image):
                one = "one PIL image"
        except ImportError:  # pragma: no cover
            pass
        try:
            import torch
            if isinstance(items, torch.Tensor) and items.ndim < 4:
                one = f"one {items.ndim}-D tensor"
        except ImportError:  # pragma: no cover
            pass
    if one is not None:
        raise ImageError(f"expected an iterable of {what}, got {one}: wrap it in a list (or call "
                         f"{'decompress' if what == 'files' else 'compress'}() for one); a 4-D array or "
                         "tensor is taken as a batch")
