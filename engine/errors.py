"""Typed errors.  All are ValueError subclasses, so ``except ValueError`` catches bad input."""


class EngineError(ValueError):
    """Base class of the codec's input errors."""


class BitstreamError(EngineError):
    """A file that cannot be decoded: truncated, corrupted, unknown version,
    made by another model, or over the configured size limits."""


class ImageError(EngineError):
    """An input image that cannot be read or is not supported."""


class ImageTooLargeError(ImageError):
    """An input image over the configured pixel limit."""
