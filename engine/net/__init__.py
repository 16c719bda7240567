"""The networks and what is made from them: the two-stream network (``model``), its
checkpoints (``checkpoint``), training (``train``), the rate ladder and entropy tables
(``ship``), ONNX export (``export``), a quality's coding and runner (``rungs``) and the
``effort`` > 0 code search (``search``).  The modules sit in several layers
(docs/architecture.md; the contract in pyproject.toml): ``model`` lowest, ``train`` and
``ship`` with the tools."""
