"""The Pillow plugin (engine/pillow_plugin.py), through Pillow's own API: Image.open
reads the header only and decodes on load(); im.save encodes with the codec's bytes."""
import io
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image, UnidentifiedImageError

import engine
from engine import pillow_plugin
from engine.errors import BitstreamError, TargetSizeError


@pytest.fixture
def plugin(tiny_root):
    """The plugin registered for the tiny test model; the defaults again afterwards."""
    engine.register_pillow(model="tiny", root=tiny_root, backend="torch", kernels="torch")
    yield tiny_root
    engine.register_pillow()


def _codec(root, **kw):
    return engine.Codec(model="tiny", root=root, backend="torch", kernels="torch", **kw)


def _img(seed=5, shape=(36, 52, 3)):
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def test_import_engine_registers_without_loading_torch():
    code = ("import sys, engine; from PIL import Image; "
            "assert 'HNLC' in Image.OPEN and 'HNLC' in Image.SAVE and Image.EXTENSION['.hnlc'] == 'HNLC'; "
            "assert 'torch' not in sys.modules, 'torch loaded'; print('ok')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def test_open_reads_the_header_and_decodes_on_load(plugin, tmp_path, monkeypatch):
    img = _img()
    data = _codec(plugin, quality=2).compress(img)
    (tmp_path / "x.hnlc").write_bytes(data)
    calls = []
    real = engine.Codec.decompress
    monkeypatch.setattr(engine.Codec, "decompress", lambda self, d: calls.append(len(d)) or real(self, d))
    with Image.open(tmp_path / "x.hnlc") as im:
        assert (im.format, im.size, im.mode) == ("HNLC", (52, 36), "RGB")
        assert im.info["hnlc_model"] == "tiny" and im.info["hnlc_quality"] == 2
        assert calls == []                                 # nothing decoded by open
        im.load()
        assert calls == [len(data)]
        np.testing.assert_array_equal(np.asarray(im), _codec(plugin).decompress(data))


def test_open_is_lazy_so_a_corrupt_body_fails_on_load(plugin, tmp_path):
    bad = bytearray(_codec(plugin).compress(_img()))
    bad[-2] ^= 0x10
    (tmp_path / "bad.hnlc").write_bytes(bytes(bad))
    with Image.open(tmp_path / "bad.hnlc") as im:
        assert im.size == (52, 36)
        with pytest.raises(BitstreamError, match="checksum"):
            im.load()


def test_bad_headers_are_not_identified_and_others_are_not_ours(plugin, tmp_path):
    """Headers Pillow cannot identify as HNLC go on to Pillow's other formats (issue #28,
    item 8: formerly a BitstreamError that stopped Image.open)."""
    (tmp_path / "v9.hnlc").write_bytes(b"HNLC\x09" + bytes(40))
    with pytest.raises(UnidentifiedImageError):
        Image.open(tmp_path / "v9.hnlc")
    (tmp_path / "short.hnlc").write_bytes(b"HNLC\x02\x02\x00\x01\x05tin")
    with pytest.raises(UnidentifiedImageError):
        Image.open(tmp_path / "short.hnlc")
    (tmp_path / "text.hnlc").write_bytes(b"not an image at all")
    with pytest.raises(UnidentifiedImageError):
        Image.open(tmp_path / "text.hnlc")


def test_save_writes_the_codecs_bytes(plugin, tmp_path):
    img = _img(8)
    Image.fromarray(img).save(tmp_path / "q3.hnlc", quality=3)
    assert (tmp_path / "q3.hnlc").read_bytes() == _codec(plugin, quality=3).compress(img)
    Image.fromarray(img).save(tmp_path / "e1.hnlc", quality=2, effort=1)
    assert (tmp_path / "e1.hnlc").read_bytes() == _codec(plugin, quality=2, effort=1).compress(img)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="HNLC", entropy="context")
    assert buf.getvalue() == _codec(plugin, entropy="context").compress(img)


def test_save_max_bytes_and_its_error(plugin, tmp_path):
    img = _img(9)
    limit = len(_codec(plugin, quality=2).compress(img))
    Image.fromarray(img).save(tmp_path / "fit.hnlc", max_bytes=limit)
    assert (tmp_path / "fit.hnlc").read_bytes() == _codec(plugin).compress(img, max_bytes=limit)
    with pytest.raises(TargetSizeError):
        Image.fromarray(img).save(tmp_path / "none.hnlc", max_bytes=8)
    assert not (tmp_path / "none.hnlc").exists()           # Pillow removes the file it created


def test_gray_round_trip_and_resave(plugin, tmp_path):
    gray = _img(4, (30, 44))
    Image.fromarray(gray).save(tmp_path / "g.hnlc")
    with Image.open(tmp_path / "g.hnlc") as im:
        assert im.mode == "L"
        np.testing.assert_array_equal(np.asarray(im), _codec(plugin).decompress((tmp_path / "g.hnlc").read_bytes())[:, :, 0])
        im.save(tmp_path / "g.png")                       # an .hnlc opened is an ordinary Pillow image
    with Image.open(tmp_path / "g.png") as png:
        assert png.mode == "L" and png.size == (44, 30)


def test_register_rejects_unknown_options_and_keeps_the_old_ones(plugin, tmp_path):
    with pytest.raises(TypeError, match="not engine.Codec arguments"):
        engine.register_pillow(qualty=3)
    img = _img(2)
    Image.fromarray(img).save(tmp_path / "a.hnlc", quality=1)      # still the tiny model's options
    assert (tmp_path / "a.hnlc").read_bytes() == _codec(plugin, quality=1).compress(img)


# ----------------------------------------------------------------------------- issue #28

def _with_model_name(data: bytes, model: str) -> bytes:
    """A version 2 file with another model name in its header (checksum recomputed)."""
    import struct
    import zlib
    k = data[8]
    name = model.encode()
    pre = data[:8] + bytes([len(name)]) + name
    post = data[9 + k:9 + k + 24]               # stream id .. lane count (the CRC's 4 bytes follow)
    body = data[9 + k + 28:]
    crc = zlib.crc32(body, zlib.crc32(pre + post)) & 0xFFFFFFFF
    return pre + post + struct.pack("<I", crc) + body


@pytest.fixture
def planted(tiny_root):
    """A copy of the tiny model at a short absolute path outside any models folder."""
    import shutil
    import tempfile
    from pathlib import Path
    top = Path(tempfile.mkdtemp(prefix="m", dir="/tmp"))
    shutil.copytree(tiny_root / "tiny", top / "evil")
    yield top / "evil"
    shutil.rmtree(top)


def test_a_file_never_names_a_path(plugin, planted, tmp_path):
    """Item 1: a header's model name that is a path is not a model: the plugin and
    engine info refuse it as a BitstreamError and load nothing from that path."""
    from engine.net import checkpoint
    from engine.info import describe
    from engine.net.rungs import Codings
    data = _with_model_name(_codec(plugin).compress(_img()), str(planted))
    (tmp_path / "p.hnlc").write_bytes(data)
    loaded = []
    real = checkpoint.load_net
    checkpoint.load_net = lambda q: loaded.append(q.weights) or real(q)
    try:
        with Image.open(tmp_path / "p.hnlc") as im:
            with pytest.raises(BitstreamError, match="not installed"):
                im.load()
        d = describe(data, lambda m: Codings(m, plugin))
    finally:
        checkpoint.load_net = real
    assert d["decodes"] is False and "not a model name" in d["decoder"]["error"]
    assert loaded == []
    for bad in (str(planted), "../tiny", "tiny/../tiny", "", ".hidden", "a" * 65):
        with pytest.raises(ValueError, match="not a model name"):
            checkpoint.resolve(bad, root=plugin)
        assert not checkpoint.installed(bad, plugin)
    with pytest.raises(ValueError, match="not a model name"):
        engine.Codec(model=str(planted), backend="torch")


def test_model_json_and_weights_must_be_regular_files_in_the_folder(tmp_path, tiny_root):
    """Item 1: an installed folder's model.json that is a FIFO, or weights that name a
    device or a path outside the folder, are refused, not waited on or read forever."""
    import json
    import os
    import shutil
    from engine.net import checkpoint
    shutil.copytree(tiny_root / "tiny", tmp_path / "m1")
    meta = json.loads((tmp_path / "m1" / "model.json").read_text())
    for weights in ("/dev/zero", "../tiny/weights.safetensors"):
        (tmp_path / "m1" / "model.json").write_text(json.dumps({**meta, "weights": weights}))
        with pytest.raises(ValueError, match="weights must be a file name"):
            checkpoint.resolve("m1", root=tmp_path)
    os.symlink("/dev/zero", tmp_path / "m1" / "zero")
    (tmp_path / "m1" / "model.json").write_text(json.dumps({**meta, "weights": "zero"}))
    with pytest.raises(ValueError, match="not a regular file"):
        checkpoint.resolve("m1", root=tmp_path)
    (tmp_path / "m2").mkdir()
    os.mkfifo(tmp_path / "m2" / "model.json")
    with pytest.raises(ValueError, match="not a regular file"):
        checkpoint.resolve("m2", root=tmp_path)


@pytest.mark.parametrize("refusal", ["quality", "effort", "model", "mode", "max_bytes"])
def test_a_refused_save_keeps_the_file_it_would_replace(plugin, tmp_path, refusal):
    """Item 2: Pillow empties a path target before a save handler runs; the plugin's
    save to a path encodes into memory first, so a refused save changes nothing."""
    import os
    from engine.errors import EngineError
    target = tmp_path / "x.hnlc"
    target.write_bytes(b"the old file")
    os.chmod(target, 0o640)
    im = Image.fromarray(_img(3))
    opts = {"quality": dict(quality=95), "effort": dict(effort=10), "model": dict(model="nope"),
            "mode": {}, "max_bytes": dict(max_bytes=8)}[refusal]
    if refusal == "mode":
        im = im.convert("LAB")
    with pytest.raises((ValueError, EngineError, OSError)):
        im.save(target, **opts)
    assert target.read_bytes() == b"the old file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.hnlc"]        # no temp file left
    Image.fromarray(_img(3)).save(target, quality=2)                       # a save that works replaces it
    assert target.read_bytes() == _codec(plugin, quality=2).compress(_img(3))
    assert os.stat(target).st_mode & 0o777 == 0o640
    Image.fromarray(_img(3)).save(tmp_path / "y.png")                      # other formats: Pillow's own save
    with Image.open(tmp_path / "y.png") as png:
        assert png.format == "PNG"


def test_junk_and_short_files_are_unidentified(plugin, tmp_path):
    """Item 8: a header Pillow cannot identify as HNLC raises SyntaxError inside the
    plugin, so Image.open tries the other formats and ends in UnidentifiedImageError."""
    data = _codec(plugin).compress(_img())
    cases = [b"HNLC" + bytes(range(60)), b"HNLC\x09" + bytes(40), data[:4]]
    cases += [data[:n] for n in range(5, 9 + data[8] + 28)]       # every length short of the header
    for i, blob in enumerate(cases):
        with pytest.raises(UnidentifiedImageError):
            Image.open(io.BytesIO(blob))
    with Image.open(io.BytesIO(data)) as im:      # the whole file still opens
        assert im.format == "HNLC"


def test_over_the_pixel_limit_is_a_bitstream_error(tiny_root):
    data = _codec(tiny_root).compress(_img())
    engine.register_pillow(model="tiny", root=tiny_root, backend="torch", kernels="torch", max_pixels=100)
    try:
        with pytest.raises(BitstreamError, match="over the limit"):
            Image.open(io.BytesIO(data))
    finally:
        engine.register_pillow()


@pytest.mark.parametrize("chunk", [10, 1024])
def test_image_file_parser_in_chunks(plugin, chunk):
    """Item 8: ImageFile.Parser (Django's get_image_dimensions) fed in small chunks:
    the size once the header is in, the decoded image at close()."""
    from PIL import ImageFile
    img = _img(6, (400, 600, 3))
    data = _codec(plugin).compress(img)
    assert len(data) > 3 * 1024
    p = ImageFile.Parser()
    sizes = []
    for i in range(0, len(data), chunk):
        p.feed(data[i:i + chunk])
        sizes.append(p.image.size if p.image else None)
    assert sizes[-1] == (600, 400)
    assert sizes[0] == (None if chunk == 10 else (600, 400))      # 10 bytes: not a header yet
    im = p.close()
    np.testing.assert_array_equal(np.asarray(im), _codec(plugin).decompress(data))


def test_verify_checks_the_checksum(plugin, tmp_path):
    """Item 8: verify() reads the file and checks it; a flipped body byte is caught."""
    data = _codec(plugin).compress(_img())
    (tmp_path / "ok.hnlc").write_bytes(data)
    with Image.open(tmp_path / "ok.hnlc") as im:
        im.verify()
    bad = bytearray(data)
    bad[-3] ^= 0x01
    (tmp_path / "bad.hnlc").write_bytes(bytes(bad))
    with Image.open(tmp_path / "bad.hnlc") as im:
        with pytest.raises(BitstreamError, match="checksum"):
            im.verify()
