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


def test_bad_headers_are_typed_errors_and_others_are_not_ours(plugin, tmp_path):
    (tmp_path / "v9.hnlc").write_bytes(b"HNLC\x09" + bytes(40))
    with pytest.raises(BitstreamError, match="version 9"):
        Image.open(tmp_path / "v9.hnlc")
    (tmp_path / "short.hnlc").write_bytes(b"HNLC\x02\x02\x00\x01\x05tin")
    with pytest.raises(BitstreamError, match="truncated"):
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
