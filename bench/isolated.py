"""Subprocesses that import the checkout on their PYTHONPATH, not this venv's install.

``pip install -e .`` (scikit-build-core, pyproject.toml) puts a meta-path finder in
front of ``sys.path`` that resolves ``engine``, ``kernels`` and ``bench`` to the
installed checkout whatever PYTHONPATH says.  Tools that run *another* tree -- a
copy with a planted violation (tests/test_layers.py), the commit before a change
(bench.versus) -- start Python through these helpers, which drop that finder first;
the other tree then wins by its place on PYTHONPATH, as with any package.
"""
from __future__ import annotations

import sys

_DROP = ("import sys; sys.meta_path[:] = [f for f in sys.meta_path "
         "if not type(f).__module__.startswith('_editable_')]")


def code(source: str) -> list[str]:
    """argv running ``source`` (arguments after it become sys.argv[1:])."""
    return [sys.executable, "-c", _DROP + "\n" + source]


def module(name: str) -> list[str]:
    """argv running ``python -m name`` (append its arguments)."""
    return code(f"import runpy; runpy.run_module({name!r}, run_name='__main__', alter_sys=True)")
