"""A learned two-stream (Y / CbCr) image codec shipped as an inference engine.

    import engine
    codec = engine.Codec(quality=3)
    data = codec.compress("photo.png")
    rgb = codec.decompress(data)
"""
from . import forksafe  # noqa: F401 - forked children set torch to one thread (engine/forksafe.py)
from .errors import BitstreamError, EngineError, ImageError, ImageTooLargeError, TargetSizeError  # noqa: F401

__version__ = "0.1.0"


def register_pillow(**codec_options) -> None:
    """Teach Pillow the ``.hnlc`` format (``import engine`` already did, without options):
    ``Image.open`` / ``im.save(..., quality=4)``; ``codec_options`` are
    :class:`Codec`'s arguments for the codecs it makes (engine/pillow_plugin.py)."""
    from .pillow_plugin import register
    register(**codec_options)


register_pillow()     # loads Pillow only: the codec and torch load on the first open or save


def __getattr__(name):  # lazy: importing engine must not load torch for the error types
    if name == "Codec":
        from .codec import Codec
        return Codec
    raise AttributeError(name)
