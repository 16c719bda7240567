"""The native extension (``engine.rans_native``: native/rans.cpp's entropy coder and
native/pixels.cpp's pixel conversions), loaded once for every user, or None where it is
not built.  ``HNLC_NATIVE_LIB=/path/to/rans_native*.so`` loads that file instead (the
sanitizer build, native/sanitize.sh)."""
from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import os
import threading

_MOD = None
_LOCK = threading.Lock()


def load():
    """The module, or None when it is not built (callers say what that means for them)."""
    global _MOD
    with _LOCK:
        if _MOD is None:
            path = os.environ.get("HNLC_NATIVE_LIB")
            if path:
                loader = importlib.machinery.ExtensionFileLoader("engine.rans_native", path)
                spec = importlib.util.spec_from_file_location("engine.rans_native", path, loader=loader)
                mod = importlib.util.module_from_spec(spec)
                loader.exec_module(mod)
                _MOD = mod
            else:
                try:   # by name: the extension is optional, and the package itself is a layer above
                    _MOD = importlib.import_module("engine.rans_native")
                except ImportError:
                    _MOD = False
    return _MOD or None
