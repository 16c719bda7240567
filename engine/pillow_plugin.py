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

Pillow's contracts (issue #28): a file that is not HNLC, or a header too short or
corrupt to identify, makes ``_open`` raise SyntaxError, so ``Image.open`` tries the
other formats and ends in ``UnidentifiedImageError``; ``ImageFile.Parser`` may be fed
any chunk sizes (the decoder gathers what it is fed and decodes at the end);
``verify()`` reads the whole file and checks its checksum, lengths and lane table.
A file names its model, and only a model installed here (a name, never a path) is
loaded to decode it, after the file's checksum has been checked.  Reads stop at the
size a valid file of the header's size can have (engine.format.bitstream.max_file_bytes).

Saving over an existing file: Pillow opens a path target with ``w+b`` (emptying it)
*before* it calls a format's save handler, so no handler can keep the old content
when encoding fails.  ``register()`` therefore also wraps ``Image.Image.save`` for
this format only: a save to a path whose format is HNLC encodes into memory first and
then replaces the file atomically (temp file + rename, the old file's mode kept), so
a refused save (a bad quality, effort or model, an unsupported mode, a size target
that cannot be met) leaves the target as it was.  Saves of other formats, and saves
to file objects, go to Pillow unchanged (to a file object nothing is written on
failure: the file is encoded whole before the one write).
"""
from __future__ import annotations

import os
import threading

from PIL import Image, ImageFile

from . import settings
from .format import MAGIC

FORMAT = "HNLC"
EXTENSION = ".hnlc"
MIME = "image/x-hnlc"
DECODER = "hnlc"
SETTINGS = ("model", "quality", "effort", "entropy", "metric")      # what a save call may set

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
    from .io.imageio import max_pixels_setting
    return max_pixels_setting(_options.get("max_pixels"))


def _channels(model: str):
    from .net.checkpoint import model_channels
    return model_channels(model, _options.get("root"))


def _read_whole(fp) -> bytes:
    """The whole file from ``fp`` (from its start), bounded by what a valid file of its
    header can have."""
    from .format.bitstream import read_file
    fp.seek(0)
    return read_file(fp, max_pixels(), _channels)


def _decode(data: bytes):
    """A whole file -> (H, W, 3) uint8.  The file is validated (checksum, lengths) before
    its model is looked up, and only an installed model is: a file never names a path."""
    from .format.bitstream import read
    from .net.checkpoint import installed, list_models
    from .errors import BitstreamError

    hdr, _ = read(data, max_pixels())
    root = _options.get("root")
    if not installed(hdr.model, root):
        raise BitstreamError(f"file was made by model {hdr.model!r} quality {hdr.quality}, which is not installed "
                             f"here (models: {list_models(root)})")
    return codec_for(decode=True, model=hdr.model).decompress(data)


class HnlcImageFile(ImageFile.ImageFile):
    format = FORMAT
    format_description = "HNLC learned image codec"

    def _open(self) -> None:
        from .format.bitstream import HEADER_MAX, peek
        from .errors import BitstreamError
        from .io.imageio import COLOR_GRAY, MAX_SIDE, check_size

        try:       # not identifiable as HNLC: SyntaxError, so Pillow tries its other formats
            hdr = peek(self.fp.read(HEADER_MAX), MAX_SIDE * MAX_SIDE)
        except BitstreamError as e:
            raise SyntaxError(f"not an HNLC file: {e}") from None
        check_size(hdr.width, hdr.height, max_pixels(), exc=BitstreamError)   # HNLC, but over the limit
        self._size = (hdr.width, hdr.height)
        self._mode = "L" if hdr.color == COLOR_GRAY else "RGB"
        self.info.update(hnlc_model=hdr.model, hnlc_quality=hdr.quality, hnlc_version=hdr.version)
        self.tile = [(DECODER, (0, 0) + self.size, 0, ())]

    def verify(self) -> None:
        """Reads the whole file and checks it as a decode would before decoding:
        checksum, section / lane lengths, size limits (a BitstreamError otherwise).
        Like Pillow's verify, call it right after open; it closes the file."""
        from .format.bitstream import read
        if self.fp is None:
            raise RuntimeError("verify must be called directly after open")
        try:
            read(_read_whole(self.fp), max_pixels())
        finally:
            super().verify()


class HnlcDecoder(ImageFile.PyDecoder):
    """Decodes the whole file on ``load()``: reads it from the start, validates it
    (checksum, model, stream id: a BitstreamError otherwise) and decodes it.  Fed
    by ``ImageFile.Parser`` instead (no file), it gathers the chunks it is given and
    decodes when the input ends (an empty chunk)."""
    _pulls_fd = True

    def init(self, args) -> None:
        self._fed = bytearray()

    def decode(self, buffer) -> tuple[int, int]:
        if self.fd is not None:
            data = _read_whole(self.fd)
        else:                      # ImageFile.Parser: chunks until b"" (its close())
            if buffer:
                self._fed += buffer
                return len(buffer), 0
            from .format.bitstream import read_file
            import io
            data = read_file(io.BytesIO(bytes(self._fed)), max_pixels(), _channels)
            self._fed = bytearray()
        rgb = _decode(data)
        if self.mode == "L":
            self.set_as_raw(rgb[:, :, 0].tobytes(), "L")
        else:
            self.set_as_raw(rgb.tobytes(), "RGB")
        return -1, 0


def save_handler(im, fp, filename) -> None:
    """``im.save(..., format="HNLC")`` / a ``.hnlc`` name: the file is encoded whole
    before anything is written (to a path, by :func:`_save` first into memory, see the
    module docstring).  Options: quality, effort, max_bytes, target_bpp, entropy, model,
    roi, roi_boost; Pillow's other save options do not apply and are ignored."""
    info = im.encoderinfo
    settings.check_choices(entropy=info.get("entropy"), metric=info.get("metric"))     # by the registries
    codec = codec_for(**{k: info.get(k) for k in SETTINGS})
    fp.write(codec.compress(im, max_bytes=info.get("max_bytes"), target_bpp=info.get("target_bpp"),
                            roi=info.get("roi"), roi_boost=info.get("roi_boost")))


_pillow_save = None        # Pillow's own Image.Image.save, once wrapped


def _hnlc_path(fp, format) -> bool:
    """Whether a save goes to a path in this format (what :func:`_save` takes over)."""
    if not isinstance(fp, (str, bytes, os.PathLike)):
        return False
    if format:
        return str(format).upper() == FORMAT
    ext = os.path.splitext(os.fsdecode(fp))[1].lower()
    return Image.EXTENSION.get(ext) == FORMAT


def _save(self, fp, format=None, **params):
    """``Image.Image.save``, with a save to a path in this format made atomic: the file is
    encoded into memory first (the same handler, the same bytes) and replaces the target
    only when that worked, keeping its mode; a symlinked target is replaced at the file
    the link points to.  Anything else is Pillow's own save."""
    if not _hnlc_path(fp, format):
        return _pillow_save(self, fp, format, **params)
    import io

    from .io.atomic import atomic_write_bytes
    buf = io.BytesIO()
    _pillow_save(self, buf, FORMAT, **params)
    target = os.path.realpath(os.fsdecode(fp))
    try:
        mode = os.stat(target).st_mode & 0o7777
    except OSError:
        mode = None
    atomic_write_bytes(target, buf.getvalue(), mode=mode)


def _wrap_save() -> None:
    global _pillow_save
    if Image.Image.save is _save:
        return
    _pillow_save = Image.Image.save
    Image.Image.save = _save


def register(**codec_options) -> None:
    """Register the format with Pillow (again: new codec options, codecs made afresh)."""
    if codec_options:
        import inspect

        from .codec import Codec
        unknown = set(codec_options) - set(inspect.signature(Codec).parameters)
        if unknown:
            raise TypeError(f"register_pillow: {sorted(unknown)} are not engine.Codec arguments")
        # the named choices (backend, coder, precision, ...) by their registries, now rather
        # than at the first open or save
        settings.check_choices(**{k: v for k, v in codec_options.items() if k in settings.CODEC_CHOICES})
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
    _wrap_save()
