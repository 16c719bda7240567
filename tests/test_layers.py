"""The layer rules CI checks (pyproject.toml: the import-linter ``layers`` contract and
ruff's private-name rules SLF001 / PLC2701) hold for this tree, and fail on planted
violations -- so the check is known to be able to fail."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
LINT_IMPORTS = shutil.which("lint-imports", path=str(BIN)) or shutil.which("lint-imports")
RUFF = shutil.which("ruff", path=str(BIN)) or shutil.which("ruff")

pytestmark = pytest.mark.skipif(not (LINT_IMPORTS and RUFF), reason="import-linter and ruff come with .[test]")


def _check(tree: Path):
    # the copy must be the tree analysed: bench.isolated drops the editable install's finder
    from bench import isolated
    env = dict(os.environ, PYTHONPATH=str(tree))
    imports = subprocess.run([*isolated.code("from importlinter.cli import lint_imports_command; "
                                             "lint_imports_command()"), "--no-cache"],
                             cwd=tree, env=env, capture_output=True, text=True, timeout=300)
    names = subprocess.run([RUFF, "check", "--no-cache", "engine", "kernels", "bench"], cwd=tree,
                           capture_output=True, text=True, timeout=300)
    return imports, names


def _copy(tmp_path: Path) -> Path:
    tree = tmp_path / "tree"
    tree.mkdir()
    for name in ("engine", "kernels", "bench"):
        shutil.copytree(ROOT / name, tree / name, ignore=shutil.ignore_patterns("checkpoints", "results",
                                                                                "__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tree)
    return tree


def test_this_tree_keeps_the_layers(tmp_path):
    imports, names = _check(_copy(tmp_path))
    assert imports.returncode == 0, imports.stdout + imports.stderr
    assert names.returncode == 0, names.stdout + names.stderr


@pytest.mark.parametrize("plant, what", [
    ("engine/net/rungs.py", "from ..codec import Codec\n"),                            # an upward import
    ("kernels/reference.py", "from engine.runtime import stages\n"),                # kernels above format/layout
    ("engine/runtime/stages.py", "from .scheduler import compress_iter\n"),         # a cycle through the layers
])
def test_planted_upward_import_fails(tmp_path, plant, what):
    tree = _copy(tmp_path)
    with open(tree / plant, "a") as f:
        f.write(what)
    imports, _ = _check(tree)
    assert imports.returncode != 0 and "BROKEN" in imports.stdout.upper(), imports.stdout


@pytest.mark.parametrize("what, rule", [
    ("\n\ndef peek(codec):\n    return codec._workers\n", "private-member-access"),     # SLF001
    ("\nfrom kernels.pack_triton import _level_scan_kernel\n", "import-private-name"),   # PLC2701
])
def test_planted_private_use_fails(tmp_path, what, rule):
    tree = _copy(tmp_path)
    with open(tree / "engine" / "runtime" / "scheduler.py", "a") as f:
        f.write(what)
    _, names = _check(tree)
    assert names.returncode != 0 and rule in names.stdout, names.stdout
