"""The ``hnlc`` command ([project.scripts]: engine.__main__:console, the same CLI as
``python -m engine``): one file in, one file out (-o NAME.hnlc / NAME.png), folders as
before; and (slow) a wheel built from this tree, installed in a clean venv with no
source tree, running ``hnlc`` from another folder."""
import os
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.__main__ import main

ROOT = Path(__file__).resolve().parents[1]


def _img(path: Path, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)).save(path)
    return path


def test_console_script_is_the_cli():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert meta["project"]["scripts"]["hnlc"] == "engine.__main__:console"


def test_one_file_to_one_file(tiny_root, tmp_path, monkeypatch):
    common = ["--model", "tiny", "--model-dir", str(tiny_root), "--backend", "torch", "--quiet"]
    src = _img(tmp_path / "photo.png")
    monkeypatch.chdir(tmp_path)
    assert main(["compress", "photo.png", "-o", "photo.hnlc", *common]) == 0
    assert Path("photo.hnlc").is_file() and Path("photo.hnlc").read_bytes()[:4] == b"HNLC"
    assert main(["decompress", "photo.hnlc", "-o", "sub/back.png", *common]) == 0
    back = np.asarray(Image.open("sub/back.png"))
    assert back.shape == np.asarray(Image.open(src)).shape
    # rerun: the codec's own file is skipped; a foreign file of that name is never replaced
    assert main(["compress", "photo.png", "-o", "photo.hnlc", *common]) == 0
    Path("other.hnlc").write_bytes(b"not mine")
    assert main(["compress", "photo.png", "-o", "other.hnlc", "--force", *common]) == 2
    assert Path("other.hnlc").read_bytes() == b"not mine"


def test_folders_and_what_a_file_name_refuses(tiny_root, tmp_path, capsys):
    common = ["--model", "tiny", "--model-dir", str(tiny_root), "--backend", "torch", "--quiet"]
    a, b = _img(tmp_path / "in" / "a.png"), _img(tmp_path / "in" / "b.png", 1)
    assert main(["compress", str(a), "-o", str(tmp_path / "out"), *common]) == 0       # -o without .hnlc: a folder
    assert (tmp_path / "out" / "a.hnlc").is_file()
    (tmp_path / "dir.hnlc").mkdir()                                                   # an existing folder stays one
    assert main(["compress", str(a), "-o", str(tmp_path / "dir.hnlc"), *common]) == 0
    assert (tmp_path / "dir.hnlc" / "a.hnlc").is_file()
    for inputs in ([str(a), str(b)], [str(tmp_path / "in")]):
        assert main(["compress", *inputs, "-o", str(tmp_path / "x.hnlc"), *common]) == 2
        assert "names one output file" in capsys.readouterr().err and not (tmp_path / "x.hnlc").exists()


# In the venv: where engine comes from, whether the native coder loads, and which of the
# wheel's declared dependencies are not importable there.
WHERE = """
import importlib.metadata as md, re, engine, engine.format.lanes as lanes
print(engine.__file__)
print(lanes.native() is not None)
reqs = [r for r in md.requires("hnlc-engine") or [] if "extra ==" not in r]
print([r for r in reqs if not any(True for _ in md.distributions(name=re.match(r"[A-Za-z0-9_.-]+", r)[0]))])
"""


def _pip(*args, **kw):
    return subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True, **kw)


@pytest.mark.slow
def test_wheel_in_a_clean_venv(tmp_path):
    """pip wheel . -> a wheel holding the native coder, the shipped models and tables;
    installed into a fresh venv (no source tree on its path; torch and the other
    dependencies reused from this environment through a path entry, so nothing is
    downloaded), ``hnlc`` compresses and decompresses one file from another folder."""
    dist = tmp_path / "dist"
    r = _pip("wheel", str(ROOT), "-w", str(dist), "--no-deps", "-q", timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    (whl,) = dist.glob("hnlc_engine-*.whl")
    names = zipfile.ZipFile(whl).namelist()
    assert any(n.startswith("engine/rans_native") and n.endswith((".so", ".pyd")) for n in names), names
    for model in (ROOT / "engine" / "checkpoints").iterdir():
        for f in ("model.json", "weights.safetensors", "entropy.safetensors"):
            if (model / f).exists():
                assert f"engine/checkpoints/{model.name}/{f}" in names
    assert not any(n.startswith(("bench/results/", "tests/")) or "__pycache__" in n for n in names)

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                               capture_output=True, text=True, check=True).stdout.strip())
    # This environment's packages as a plain path entry: its .pth files (the editable
    # install's path to this checkout among them) are not processed from there.
    (site / "deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    # --ignore-installed: this environment's editable hnlc-engine is on that path too
    r = _pip("--python", str(py), "install", "--no-index", "--no-deps", "--ignore-installed", "-q", str(whl),
             timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr

    work = tmp_path / "elsewhere"
    _img(work / "photo.png")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{venv / 'bin'}:{env.get('PATH', '')}"
    where = subprocess.run([str(py), "-c", WHERE], cwd=work, env=env, capture_output=True, text=True)
    assert where.returncode == 0, where.stderr
    file, native, missing = where.stdout.splitlines()
    assert Path(file).is_relative_to(venv) and native == "True" and missing == "[]", where.stdout
    for cmd in (["compress", "photo.png", "-o", "photo.hnlc", "--backend", "torch"],
                ["decompress", "photo.hnlc", "-o", "back.png"]):
        r = subprocess.run([str(venv / "bin" / "hnlc"), *cmd], cwd=work, env=env, capture_output=True, text=True,
                           timeout=300)
        assert r.returncode == 0, r.stdout + r.stderr
    assert np.asarray(Image.open(work / "back.png")).shape == (40, 56, 3)
