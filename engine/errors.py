"""Typed errors, at the bottom of the layers so that any module can raise them.  The
input errors are ValueError subclasses, so ``except ValueError`` catches bad input;
the backend errors are RuntimeErrors (the machine, not the input)."""


class EngineError(ValueError):
    """Base class of the codec's input errors."""


class BitstreamError(EngineError):
    """A file that cannot be decoded: truncated, corrupted, unknown version,
    made by another model, or over the configured size limits."""


class ImageError(EngineError):
    """An input image that cannot be read or is not supported."""


class ImageTooLargeError(ImageError):
    """An input image over the configured pixel limit."""


class TargetSizeError(EngineError):
    """No file of the image fits the asked size (``max_bytes`` / ``target_bpp``):
    ``smallest`` is the smallest file's size in bytes, ``limit`` the size asked for."""

    def __init__(self, message: str, smallest: int, limit: int):
        super().__init__(message)
        self.smallest = smallest
        self.limit = limit

    def __reduce__(self):       # picklable (worker processes, Ray) with its fields
        return type(self), (str(self), self.smallest, self.limit)


class BackendUnavailable(RuntimeError):
    """The requested backend (or its artifacts) is not available on this machine."""


class ArtifactMismatch(BackendUnavailable):
    """Build artifacts exist but do not belong to the checkpoint (or options) asked for.

    Raised instead of silently running stale ONNX graphs / TensorRT engines; the
    message carries the ``python -m engine.build ...`` command that rebuilds them.
    """
