"""The format wing: everything that knows a file's layout and its coding.

Containers and coders (``bitstream``, ``lanes_reference`` below kernels/; ``lanes``,
``context_coder`` above it), one module per format (``v1_raw``, ``v1_context``,
``v2_lanes``, ``v2_lanes_triton``) behind one interface (``base``), and the registry
that picks one (``registry``).  This file imports nothing, so reading a header
(``engine.format.bitstream``) never loads torch or the kernels, and the Pillow plugin
(registered by ``import engine``) checks the magic without loading numpy.
"""

MAGIC = b"HNLC"     # every file's first four bytes (docs/bitstream.md)
