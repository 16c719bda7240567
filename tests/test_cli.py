"""The CLI never loses or replaces data it did not write (issue #13), and its exit codes."""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from engine.__main__ import PNG_SHA_KEY, PNG_SOURCE_KEY, main


@pytest.fixture
def cli(tiny_root, capsys):
    """main() in this process with the tiny model -> (exit code, stderr)."""
    def run(*argv):
        rc = main([*map(str, argv), "--model", "tiny", "--model-dir", str(tiny_root), "--backend", "torch",
                   "--kernels", "torch"])
        return rc, capsys.readouterr().err
    return run


def _img(path, seed, shape=(20, 28, 3)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)).save(path)
    return path


def test_colliding_stems_are_refused_naming_both(cli, tmp_path):
    d = tmp_path / "d"
    _img(d / "a.png", 1)
    _img(d / "a.jpg", 2)
    _img(d / "b.png", 3)
    out = tmp_path / "out"
    for _ in range(2):                      # a rerun does not call the refused inputs "skipped"
        rc, err = cli("compress", d, "-o", out)
        assert rc == 2 and str(d / "a.png") in err and str(d / "a.jpg") in err, err
        assert not (out / "a.hnlc").exists() and (out / "b.hnlc").exists()
    rc, err = cli("compress", _img(tmp_path / "d1" / "x.png", 4), _img(tmp_path / "d2" / "x.png", 5), "-o", out)
    assert rc == 2 and "d1" in err and "d2" in err and not (out / "x.hnlc").exists()
    # the same file named twice is one input, not a collision
    rc, err = cli("compress", d / "b.png", d / "b.png", "-o", tmp_path / "out2")
    assert rc == 0, err


def test_decompress_never_overwrites_originals_even_with_force(cli, tmp_path):
    d = tmp_path / "d"
    orig = _img(d / "a.png", 6).read_bytes()
    assert cli("compress", d, "-o", d)[0] == 0
    for force in ((), ("--force",)):
        rc, err = cli("decompress", d, "-o", d, *force)
        assert rc == 2 and "not written by this codec" in err, err
        assert (d / "a.png").read_bytes() == orig
    junk = tmp_path / "o2" / "a.hnlc"                     # compress side: a foreign a.hnlc is kept too
    junk.parent.mkdir()
    junk.write_bytes(b"my notes")
    rc, err = cli("compress", d / "a.png", "-o", junk.parent, "--force")
    assert rc == 2 and junk.read_bytes() == b"my notes"


def test_decoded_pngs_name_their_source_and_force_replaces_only_those(cli, tmp_path):
    d, out = tmp_path / "d", tmp_path / "png"
    _img(d / "a.png", 7)
    _img(d / "b.png", 8, (16, 16, 3))
    assert cli("compress", d, "-o", tmp_path / "h")[0] == 0
    assert cli("decompress", tmp_path / "h", "-o", out)[0] == 0
    with Image.open(out / "a.png") as im:
        assert im.info[PNG_SOURCE_KEY] == "a.hnlc" and len(im.info[PNG_SHA_KEY]) == 64
    rc, err = cli("decompress", tmp_path / "h", "-o", out)
    assert rc == 0 and "2 skipped" in err                  # same sources: already done
    # a.hnlc re-made from another image: its old decode is not "done" any more
    _img(d / "a.png", 9)
    assert cli("compress", d / "a.png", "-o", tmp_path / "h", "--force")[0] == 0
    before = (out / "a.png").read_bytes()
    rc, err = cli("decompress", tmp_path / "h", "-o", out)
    assert rc == 2 and "--force" in err and (out / "a.png").read_bytes() == before
    rc, err = cli("decompress", tmp_path / "h", "-o", out, "--force")
    assert rc == 0 and (out / "a.png").read_bytes() != before
    # a user's own b.png in the output folder is never replaced
    mine = _img(out / "b.png", 10).read_bytes()
    rc, err = cli("decompress", tmp_path / "h" / "b.hnlc", "-o", out, "--force")
    assert rc == 2 and (out / "b.png").read_bytes() == mine


def test_nothing_matched_is_an_error(cli, tmp_path):
    (tmp_path / "empty").mkdir()
    rc, err = cli("compress", tmp_path / "empty", str(tmp_path / "*.png"), "-o", tmp_path / "out")
    assert rc == 2 and "no input" in err


def test_max_pixels_zero_and_bad_environment_are_clear_errors(cli, tmp_path, monkeypatch):
    src = _img(tmp_path / "a.png", 11)
    rc, err = cli("compress", src, "-o", tmp_path / "o", "--max-pixels", "0")
    assert rc == 2 and "--max-pixels" in err
    for bad in ("0", "abc", "-5"):
        monkeypatch.setenv("ENGINE_MAX_PIXELS", bad)
        rc, err = cli("compress", src, "-o", tmp_path / "o")
        assert rc == 2 and "ENGINE_MAX_PIXELS" in err and repr(bad) in err, err
    monkeypatch.setenv("ENGINE_MAX_PIXELS", "100")
    rc, err = cli("compress", src, "-o", tmp_path / "o")
    assert rc == 2 and "limit of 100" in err
    rc, err = cli("compress", src, "-o", tmp_path / "o", "--max-pixels", "1000")   # the flag wins
    assert rc == 0, err


def test_fifo_input_is_refused_without_blocking(tiny_root, tmp_path):
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs here")
    os.mkfifo(tmp_path / "p.png")
    os.mkfifo(tmp_path / "p.hnlc")
    common = ["--model", "tiny", "--model-dir", str(tiny_root), "--backend", "torch"]
    for cmd, name in (("compress", "p.png"), ("decompress", "p.hnlc")):
        try:
            r = subprocess.run([sys.executable, "-m", "engine", cmd, str(tmp_path / name), "-o", str(tmp_path / "o"),
                                *common], capture_output=True, text=True, timeout=120)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{cmd} blocked on a FIFO")
        assert r.returncode == 2 and "FIFO" in r.stderr, r.stderr


def test_long_names_and_umask_modes(cli, tmp_path):
    src = _img(tmp_path / ("n" * 246 + ".png"), 12)       # its output name is 251 characters
    out = tmp_path / "o"
    old = os.umask(0o027)
    try:
        rc, err = cli("compress", src, "-o", out)
        assert rc == 0, err
        dst = out / ("n" * 246 + ".hnlc")
        assert dst.exists() and (dst.stat().st_mode & 0o777) == 0o640
        os.umask(0o002)
        rc, err = cli("decompress", dst, "-o", out)
        assert rc == 0, err
        assert (out / ("n" * 246 + ".png")).stat().st_mode & 0o777 == 0o664
    finally:
        os.umask(old)
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_sigint_exits_130_without_traceback(tiny_root, tmp_path):
    d = tmp_path / "d"
    for i in range(300):
        _img(d / f"i{i:03d}.png", i, (192, 192, 3))    # long enough to be mid-run when interrupted
    out = tmp_path / "out"
    p = subprocess.Popen([sys.executable, "-m", "engine", "compress", str(d), "-o", str(out), "--batch", "1",
                          "--model", "tiny", "--model-dir", str(tiny_root), "--backend", "torch", "--quiet"],
                         stderr=subprocess.PIPE, text=True)
    t0 = time.time()
    while not (out.exists() and any(out.iterdir())) and p.poll() is None and time.time() - t0 < 120:
        time.sleep(0.05)
    assert p.poll() is None, "finished before it could be interrupted"
    p.send_signal(signal.SIGINT)
    err = p.communicate(timeout=120)[1]
    assert p.returncode == 130 and "Traceback" not in err and "interrupted" in err, err
    assert not [q for q in out.iterdir() if q.name.endswith(".tmp")]
