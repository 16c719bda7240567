"""The old name of :mod:`engine.format.context_coder`, kept for ``engine/ship.py``
(edited on another branch while the format wing moved in): new code imports the wing."""
from .format.context_coder import encode_codes, encode_map, fit, pack_map_raw  # noqa: F401

__all__ = ["encode_codes", "encode_map", "fit", "pack_map_raw"]
