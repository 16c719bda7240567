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


# ----------------------------------------------------------------------------- issue #28

def test_huge_file_is_refused_unread_and_the_others_still_decode(cli, tmp_path):
    """Item 3: reads stop at the size a valid file of the header can have: a 6 GB
    sparse file with a valid header is one failure, named, and the other file decodes."""
    d = tmp_path / "d"
    _img(d / "a.png", 21)
    assert cli("compress", d, "-o", tmp_path / "h")[0] == 0
    data = (tmp_path / "h" / "a.hnlc").read_bytes()
    with open(tmp_path / "h" / "big.hnlc", "wb") as f:
        f.write(data)
        f.truncate(6 << 30)
    rc, err = cli("decompress", tmp_path / "h", "-o", tmp_path / "png")
    assert rc == 2 and "big.hnlc" in err and "more than any valid 28x20 file" in err, err
    assert (tmp_path / "png" / "a.png").exists() and not (tmp_path / "png" / "big.png").exists()
    rc = main(["info", str(tmp_path / "h" / "big.hnlc")])
    assert rc == 2


def test_names_that_are_not_utf8_decode_and_the_run_goes_on(cli, tmp_path):
    """Item 4: a file name that is not UTF-8 goes into the PNG's source chunk escaped; an
    output that cannot be written fails alone, named."""
    d = tmp_path / "d"
    _img(d / "a.png", 22)
    _img(d / "b.png", 23)
    assert cli("compress", d, "-o", tmp_path / "h")[0] == 0
    h = tmp_path / "h"
    os.rename(h / "a.hnlc", os.path.join(os.fsencode(h), b"\xff\xfea.hnlc"))
    rc, err = cli("decompress", h, "-o", tmp_path / "png")
    assert rc == 0, err
    names = sorted(os.listdir(os.fsencode(tmp_path / "png")))
    assert names == [b"b.png", b"\xff\xfea.png"], names
    with Image.open(os.path.join(os.fsencode(tmp_path / "png"), b"\xff\xfea.png")) as im:
        assert im.info[PNG_SOURCE_KEY] == "\\xff\\xfea.hnlc"


def test_compress_skips_only_outputs_of_this_input_and_settings(cli, tmp_path):
    """Item 5: an existing .hnlc is "done" only when its record names this input's bytes,
    these settings and the bytes written; otherwise it is reported (--force replaces it),
    and a 4-byte "HNLC" file is not the codec's at all."""
    src, out = _img(tmp_path / "d" / "a.png", 24), tmp_path / "h"
    assert cli("compress", src, "-o", out, "--quality", "2")[0] == 0
    first = (out / "a.hnlc").read_bytes()
    rc, err = cli("compress", src, "-o", out, "--quality", "2")
    assert rc == 0 and "1 skipped" in err, err
    rc, err = cli("compress", src, "-o", out, "--quality", "3")            # other settings
    assert rc == 2 and "other settings" in err and (out / "a.hnlc").read_bytes() == first, err
    _img(src, 25)                                                          # the photo edited
    rc, err = cli("compress", src, "-o", out, "--quality", "2")
    assert rc == 2 and "--force" in err and (out / "a.hnlc").read_bytes() == first, err
    rc, err = cli("compress", src, "-o", out, "--quality", "2", "--force")
    assert rc == 0 and "1 compressed" in err, err
    rc, err = cli("compress", src, "-o", out, "--quality", "2")        # now recorded for the edited photo
    assert rc == 0 and "1 skipped" in err, err
    (out / "a.hnlc").write_bytes(b"HNLC")
    for force in ((), ("--force",)):
        rc, err = cli("compress", src, "-o", out, "--quality", "2", *force)
        assert rc == 2 and "not written by this codec" in err and (out / "a.hnlc").read_bytes() == b"HNLC", err


def test_an_output_another_run_wrote_meanwhile_is_kept(cli, tmp_path, monkeypatch):
    """Item 6: an output that appears while the run decodes -- another run's decode of
    another file with the same stem -- is neither replaced nor counted as done."""
    import engine.__main__ as cli_mod
    d1, d2, out = tmp_path / "d1", tmp_path / "d2", tmp_path / "png"
    _img(d1 / "a.png", 26)
    _img(d2 / "a.png", 27)
    assert cli("compress", d1, "-o", tmp_path / "h1")[0] == 0
    assert cli("compress", d2, "-o", tmp_path / "h2")[0] == 0
    assert cli("decompress", tmp_path / "h2", "-o", tmp_path / "other")[0] == 0
    theirs = (tmp_path / "other" / "a.png").read_bytes()
    real = cli_mod._png

    def other_run_first(*a, **k):            # the other run publishes out/a.png just before this one
        out.joinpath("a.png").write_bytes(theirs)
        return real(*a, **k)
    monkeypatch.setattr(cli_mod, "_png", other_run_first)
    rc, err = cli("decompress", tmp_path / "h1", "-o", out)
    assert rc == 2 and "appeared during the run" in err, err
    assert (out / "a.png").read_bytes() == theirs
    monkeypatch.setattr(cli_mod, "_png", real)
    rc, err = cli("decompress", tmp_path / "h2", "-o", out)                # the same source: done
    assert rc == 0 and "1 skipped" in err, err


def test_atomic_write_publishes_only_where_nothing_is(tmp_path):
    """Item 6: two writers of one new output: the second gets FileExistsError and the
    first one's file stays; no temp file is left."""
    from engine.io.atomic import atomic_write_bytes
    atomic_write_bytes(tmp_path / "x", b"first", replace=False)
    with pytest.raises(FileExistsError):
        atomic_write_bytes(tmp_path / "x", b"second", replace=False)
    assert (tmp_path / "x").read_bytes() == b"first" and os.listdir(tmp_path) == ["x"]


def test_sigterm_leaves_no_temp_and_killed_runs_temps_are_removed(tiny_root, tmp_path):
    """Item 9: SIGTERM while outputs are written exits 143 with no temp file left, and a
    temp file of a writer that is gone (SIGKILL) is removed by the next run."""
    d = tmp_path / "d"
    for i in range(300):
        _img(d / f"i{i:03d}.png", i, (192, 192, 3))
    out = tmp_path / "out"
    p = subprocess.Popen([sys.executable, "-m", "engine", "compress", str(d), "-o", str(out), "--batch", "1",
                          "--model", "tiny", "--model-dir", str(tiny_root), "--backend", "torch", "--quiet"],
                         stderr=subprocess.PIPE, text=True)
    t0 = time.time()
    while not (out.exists() and any(q.suffix == ".hnlc" for q in out.iterdir())) and p.poll() is None \
            and time.time() - t0 < 120:
        time.sleep(0.05)
    assert p.poll() is None, "finished before it could be terminated"
    p.send_signal(signal.SIGTERM)
    err = p.communicate(timeout=120)[1]
    assert p.returncode == 143 and "Traceback" not in err and "terminated" in err, err
    assert not [q for q in out.rglob("*.tmp")]
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = out / f".i000.hnlc.{int(dead.stdout)}-abcd1234.tmp"
    stale.write_bytes(b"half")
    live = out / f".i001.hnlc.{os.getpid()}-abcd1234.tmp"                 # a live writer's: kept
    live.write_bytes(b"busy")
    r = subprocess.run([sys.executable, "-m", "engine", "compress", str(d / "i000.png"), "-o", str(out),
                        "--model", "tiny", "--model-dir", str(tiny_root), "--backend", "torch", "--quiet"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert not stale.exists() and live.exists()


def test_folders_say_what_they_skip_and_gifs_are_taken(cli, tmp_path):
    """Item 11: a GIF in a folder is compressed (its first frame), and files compress does
    not take are named in a note instead of vanishing."""
    d = tmp_path / "d"
    _img(d / "a.png", 28)
    Image.fromarray(np.random.default_rng(29).integers(0, 256, (20, 28, 3), dtype=np.uint8)).convert(
        "P").save(d / "g.gif")
    (d / "notes.txt").write_text("hello")
    rc, err = cli("compress", d, "-o", tmp_path / "h")
    assert rc == 0 and "1 file in the input folders skipped" in err and "notes.txt" in err, err
    assert sorted(q.name for q in (tmp_path / "h").glob("*.hnlc")) == ["a.hnlc", "g.hnlc"]


def test_decompress_without_model_takes_each_files_model(tmp_path, capsys):
    """A folder of files from two installed models decodes without --model: each file with
    the model its header names, in input order; with --model, another model's file is
    refused naming the flag."""
    import engine
    src = tmp_path / "src"
    _img(src / "a.png", 1), _img(src / "b.png", 2), _img(src / "c.png", 3)
    comp = tmp_path / "comp"
    common = ["--backend", "torch", "--kernels", "torch", "--quiet"]
    assert main(["compress", str(src / "a.png"), str(src / "c.png"), "-o", str(comp), "--model", "small", *common]) == 0
    assert main(["compress", str(src / "b.png"), "-o", str(comp), *common]) == 0
    out = tmp_path / "out"
    assert main(["decompress", str(comp), "-o", str(out), *common]) == 0
    for stem, model in (("a", "small"), ("b", None), ("c", "small")):
        with engine.Codec(backend="torch", **({"model": model} if model else {})) as codec:
            want = codec.decompress((comp / f"{stem}.hnlc").read_bytes())
        assert np.array_equal(np.asarray(Image.open(out / f"{stem}.png").convert("RGB")), want)
    capsys.readouterr()
    assert main(["decompress", str(comp / "a.hnlc"), "-o", str(tmp_path / "named"), "--model", "small16", *common]) == 2
    assert "--model 'small'" in capsys.readouterr().err
