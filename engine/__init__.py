"""A learned two-stream (Y / CbCr) image codec shipped as an inference engine.

    import engine
    codec = engine.Codec(quality=3)
    data = codec.compress("photo.png")
    rgb = codec.decompress(data)
"""
from .errors import BitstreamError, EngineError, ImageError, ImageTooLargeError  # noqa: F401

__version__ = "0.1.0"


def __getattr__(name):  # lazy: importing engine must not load torch for the error types
    if name == "Codec":
        from .codec import Codec
        return Codec
    raise AttributeError(name)
