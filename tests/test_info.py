"""``python -m engine info``: header fields, sizes and decodability, without decoding."""
import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest

import engine
from engine.format import bitstream, context_coder as entropy, lanes
from engine.__main__ import main


def _codec(root, **kw):
    return engine.Codec(model="tiny", root=root, backend="torch", kernels="torch", **kw)


@pytest.fixture
def files(tiny_root, tmp_path):
    img = np.random.default_rng(11).integers(0, 256, (400, 40, 3), dtype=np.uint8)   # 2 x 1 lanes of 48 x 8 pixels
    out = {"v2": _codec(tiny_root, quality=3).compress(img),
           "v1": _codec(tiny_root, quality=1, entropy="context").compress(img[:, :, 0])}
    for k, d in out.items():
        (tmp_path / f"{k}.hnlc").write_bytes(d)
    return tmp_path, out


def _info(capsys, *argv):
    rc = main(["info", *map(str, argv)])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def test_json_fields_add_up_to_the_file(tiny_root, files, capsys, monkeypatch):
    tmp, data = files
    def decoded(*a, **k):
        pytest.fail("info entropy-decoded a file")
    monkeypatch.setattr(lanes, "decode", decoded)           # nothing may be entropy-decoded
    monkeypatch.setattr(entropy, "decode_map", decoded)
    rc, out, _ = _info(capsys, tmp / "v2.hnlc", tmp / "v1.hnlc", "--json", "--model-dir", tiny_root)
    assert rc == 0
    v2, v1 = json.loads(out)
    for rec, d in ((v2, data["v2"]), (v1, data["v1"])):
        hdr, _ = bitstream.read(d, 10 ** 9)
        assert (rec["version"], rec["model"], rec["quality"], rec["width"], rec["height"]) == \
               (hdr.version, hdr.model, hdr.quality, hdr.width, hdr.height)
        assert rec["stream_id"] == hdr.stream_id.hex() and rec["bytes"] == len(d)
        assert rec["bpp"] == pytest.approx(len(d) * 8 / (hdr.width * hdr.height))
        assert rec["decodes"] and rec["decoder"] == {"model": "tiny", "quality": hdr.quality, "retired": False}
    assert v2["color"] == "rgb" and v1["color"] == "gray" and v1["entropy"].startswith("context")
    hdr2, body = bitstream.read(data["v2"], 10 ** 9)
    assert len(v2["lane_bytes"]) == len(body) == 2 and v2["lane_tile"] == hdr2.tile
    assert v2["lane_bytes"] == [len(body.lane(i)) for i in range(len(body))]
    assert v2["header_bytes"] + v2["lane_table_bytes"] + sum(v2["lane_bytes"]) == len(data["v2"])
    assert v1["header_bytes"] + sum(v1["sections"].values()) == len(data["v1"]) and v1["sections"]["cbcr"] == 0


def test_text_output_and_per_file_errors(tiny_root, files, capsys):
    tmp, data = files
    (tmp / "junk.hnlc").write_bytes(b"HNLC\x02garbage")
    rc, out, err = _info(capsys, tmp / "v2.hnlc", tmp / "junk.hnlc", tmp / "missing.hnlc", "--model-dir", tiny_root)
    assert rc == 2
    assert "v2.hnlc: HNLC version 2" in out and f"{len(data['v2'])} bytes" in out and "2 lanes" in out
    assert "decodes here: engine.Codec(model='tiny') (quality 3" in out
    assert "junk.hnlc" in err and "missing.hnlc" in err and "Traceback" not in err
    rc, out, _ = _info(capsys, tmp / "junk.hnlc", "--json", "--model-dir", tiny_root)
    assert rc == 2 and "error" in json.loads(out)[0]


def test_says_when_this_installation_cannot_decode_it(tiny_root, files, capsys):
    """A valid file of another model version (its stream id differs) or another model is
    described, with what it needs."""
    tmp, data = files
    d = bytearray(data["v1"])            # version 1: the CRC covers the sections, not the header
    k = d[8]
    d[9 + k:17 + k] = bytes(8)
    (tmp / "other.hnlc").write_bytes(bytes(d))
    rc, out, _ = _info(capsys, tmp / "other.hnlc", "--json", "--model-dir", tiny_root)
    (rec,) = json.loads(out)
    assert rc == 0 and rec["decodes"] is False and "different version" in rec["decoder"]["error"]
    hdr, (m, y, c) = bitstream.read(data["v1"], 10 ** 9)
    other = bitstream.write(dataclasses.replace(hdr, model="nosuch"), m, y, c)
    (tmp / "nosuch.hnlc").write_bytes(other)
    rc, out, _ = _info(capsys, tmp / "nosuch.hnlc", "--model-dir", tiny_root)
    assert rc == 0 and "does not decode here" in out and "nosuch" in out


def test_cli_entry_point(tiny_root, files):
    tmp, _ = files
    r = subprocess.run([sys.executable, "-m", "engine", "info", str(tmp / "v2.hnlc"), "--json",
                        "--model-dir", str(tiny_root)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)[0]["quality"] == 3


def test_a_lane_count_that_does_not_fit_the_grid_does_not_decode(tiny_root, tmp_path, capsys):
    """Issue #28, item 10: info says what decompress says for a v2 file whose lane count
    does not match its grid (here: its lane tile changed, checksum recomputed)."""
    import struct
    import zlib
    img = np.random.default_rng(12).integers(0, 256, (20, 28, 3), dtype=np.uint8)
    data = bytearray(_codec(tiny_root).compress(img))
    k = data[8]
    struct.pack_into("<H", data, 9 + k + 16, 2)            # lane tile 2: a 4 x 4 grid has 4 lanes, the file 1
    struct.pack_into("<I", data, 9 + k + 24, zlib.crc32(bytes(data[9 + k + 28:]), zlib.crc32(bytes(data[:9 + k + 24]))))
    (tmp_path / "t.hnlc").write_bytes(bytes(data))
    with pytest.raises(engine.BitstreamError, match="1 lanes") as dec:
        _codec(tiny_root).decompress(bytes(data))
    rc, out, err = _info(capsys, tmp_path / "t.hnlc", "--model-dir", tiny_root, "--json")
    rec = json.loads(out)[0]
    assert rc == 0 and rec["decodes"] is False and rec["decoder"]["error"] == str(dec.value)
