"""The Pillow plugin: ``.hnlc`` files through Pillow's own API.

``import engine`` registers it; ``engine.register_pillow(**codec_options)`` registers it
again with options for the codecs it makes (``backend``, ``device``, ``root``,
``max_pixels``, ...: :class:`engine.Codec`'s arguments), as pillow-heif's
``register_heif_opener`` does.

    from PIL import Image
    im = Image.open("x.hnlc")          # size and mode from the header; nothing decoded yet
    im.load()                          # decodes (so does any pixel access)
    im.save("y.hnlc", quality=4, effort=3)     # or max_bytes= / target_bpp=; entropy=, model=
    im.save("z.hnlc", roi=mask, roi_boost=2)   # a region of interest (engine/roi.py)

Colour files open in mode ``RGB``, grayscale files in ``L``; ``im.info`` holds the
file's ``hnlc_model``, ``hnlc_quality`` and ``hnlc_version``.  Saving is
:meth:`engine.Codec.compress` on the image (the same bytes).  Codecs are made once per
(model, quality, effort, entropy) and reused.  Importing this module loads only
Pillow: the codec (and torch) load on the first open or save.
"""
from __future__ import annotations

import threading

from PIL import Image, ImageFile

FORMAT = "HNLC"
EXTENSION = ".hnlc"
MIME = "image/x-hnlc"
DECODER = "hnlc"
MAGIC = b"HNLC"
SETTINGS = ("model", "quality", "effort", "entropy")      # what a save call may set

_lock = threading.Lock()
_options: dict = {}
_codecs: dict = {}


def accept(prefix: bytes) -> bool:
    return prefix[:4] == MAGIC


def codec_for(decode: bool = False, **setting):
    """The plugin's codec for a setting (``model``, ``quality``, ``effort``, ``entropy``;
    None: the registered option, else the codec's default), made on first use.  A
    decoding codec takes only the model (the file names its own quality)."""
    from .codec import Codec

    merged = {**_options, **{k: v for k, v in setting.items() if v is not None}}
    if decode:
        merged = {k: v for k, v in merged.items() if k not in SETTINGS[1:]}
    key = tuple(repr(merged.get(k)) for k in SETTINGS)
    with _lock:
        codec = _codecs.get(key)
        if codec is None:
            codec = _codecs[key] = Codec(**merged)
    return codec


def max_pixels() -> int:
    from .imageio import max_pixels_setting
    return max_pixels_setting(_options.get("max_pixels"))


class HnlcImageFile(ImageFile.ImageFile):
    format = FORMAT
    format_description = "HNLC learned image codec"

    def _open(self) -> None:
        from .bitstream import HEADER_MAX, peek
        from .imageio import COLOR_GRAY

        hdr = peek(self.fp.read(HEADER_MAX), max_pixels())      # a BitstreamError if the header is bad
        self._size = (hdr.width, hdr.height)
        self._mode = "L" if hdr.color == COLOR_GRAY else "RGB"
        self.info.update(hnlc_model=hdr.model, hnlc_quality=hdr.quality, hnlc_version=hdr.version)
        self.tile = [(DECODER, (0, 0) + self.size, 0, ())]


class HnlcDecoder(ImageFile.PyDecoder):
    """Decodes the whole file on ``load()``: reads it from the start, validates it
    (checksum, model, stream id: a BitstreamError otherwise) and decodes it."""
    _pulls_fd = True

    def decode(self, buffer) -> tuple[int, int]:
        from .bitstream import peek

        data = self.fd.read()
        rgb = codec_for(decode=True, model=peek(data, max_pixels()).model).decompress(data)
        if self.mode == "L":
            self.set_as_raw(rgb[:, :, 0].tobytes(), "L")
        else:
            self.set_as_raw(rgb.tobytes(), "RGB")
        return -1, 0


def save_handler(im, fp, filename) -> None:
    """``im.save(..., format="HNLC")`` / a ``.hnlc`` name: the file is encoded whole
    before anything is written.  Options: quality, effort, max_bytes, target_bpp,
    entropy, model, roi, roi_boost; Pillow's other save options do not apply and are ignored."""
    info = im.encoderinfo
    codec = codec_for(**{k: info.get(k) for k in SETTINGS})
    fp.write(codec.compress(im, max_bytes=info.get("max_bytes"), target_bpp=info.get("target_bpp"),
                            roi=info.get("roi"), roi_boost=info.get("roi_boost")))


def register(**codec_options) -> None:
    """Register the format with Pillow (again: new codec options, codecs made afresh)."""
    if codec_options:
        import inspect

        from .codec import Codec
        unknown = set(codec_options) - set(inspect.signature(Codec).parameters)
        if unknown:
            raise TypeError(f"register_pillow: {sorted(unknown)} are not engine.Codec arguments")
    with _lock:
        old = list(_codecs.values())
        _codecs.clear()
        _options.clear()
        _options.update(codec_options)
    for codec in old:
        codec.close()
    Image.register_open(FORMAT, HnlcImageFile, accept)
    Image.register_save(FORMAT, save_handler)
    Image.register_extension(FORMAT, EXTENSION)
    Image.register_mime(FORMAT, MIME)
    Image.register_decoder(DECODER, HnlcDecoder)
