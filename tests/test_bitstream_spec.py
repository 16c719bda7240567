"""Parse a real file by docs/bitstream.md, field by field, without engine.format.bitstream."""
import math
import struct
import zlib

import numpy as np

import engine


def test_real_file_matches_the_spec(tiny_root):
    codec = engine.Codec(model="tiny", root=tiny_root, entropy="none", backend="torch", kernels="torch")
    H, W = 21, 35
    data = codec.compress(np.random.default_rng(2).integers(0, 256, (H, W, 3), dtype=np.uint8))
    assert data[0:4] == b"HNLC"
    version, entropy_mode, color, quality, k = data[4], data[5], data[6], data[7], data[8]
    assert (version, entropy_mode, color, quality) == (1, 0, 0, codec.quality)
    name = data[9:9 + k].decode("ascii")
    assert name == "tiny"
    o = 9 + k
    stream_id = data[o:o + 8]
    assert len(stream_id) == 8
    w, h, lm, ly, lc, crc = struct.unpack_from("<6I", data, o + 8)
    assert (w, h) == (W, H)
    start = o + 8 + 24
    assert start + lm + ly + lc == len(data)
    assert zlib.crc32(data[start:]) == crc
    # raw sections: map = ceil(log2 L) bits per location on the padded /8 grid,
    # Y codes = sum(level * g) bits, CbCr = m bits per /16 location
    cfg = codec.config
    hp, wp = math.ceil(H / 16) * 16, math.ceil(W / 16) * 16
    nb = math.ceil(math.log2(cfg.levels))
    assert lm == math.ceil((hp // 8) * (wp // 8) * nb / 8)
    bits = np.unpackbits(np.frombuffer(data[start:start + lm], np.uint8))[: (hp // 8) * (wp // 8) * nb]
    levels = bits.reshape(-1, nb) @ (1 << np.arange(nb)[::-1])
    assert levels.max() < cfg.levels
    g = cfg.n // (cfg.levels - 1)
    assert ly == math.ceil(int(levels.sum()) * g / 8)
    assert lc == math.ceil(cfg.m * (hp // 16) * (wp // 16) / 8)


def test_real_v2_file_matches_the_spec(tiny_root):
    """Version 2 (the default), field by field from docs/bitstream.md; the lanes are
    decoded with the spec's reference (engine/format/lanes_reference.py) and must give what
    the codec decodes."""
    from engine.format import lanes_reference
    codec = engine.Codec(model="tiny", root=tiny_root, backend="torch", kernels="torch")
    H, W = 50, 83
    data = codec.compress(np.random.default_rng(3).integers(0, 256, (H, W, 3), dtype=np.uint8))
    assert data[0:4] == b"HNLC"
    version, entropy_mode, color, quality, k = data[4], data[5], data[6], data[7], data[8]
    assert (version, entropy_mode, color, quality) == (2, 2, 0, codec.quality)
    o = 9 + k
    w, h, tile, reserved, count, crc = struct.unpack_from("<IIHHII", data, o + 8)
    assert (w, h, reserved) == (W, H, 0) and tile % 2 == 0
    end = o + 8 + 20
    assert zlib.crc32(data[end:], zlib.crc32(data[:end - 4])) == crc
    hp, wp = math.ceil(H / 16) * 16, math.ceil(W / 16) * 16
    gh, gw = hp // 8, wp // 8
    assert count == math.ceil(gh / tile) * math.ceil(gw / tile)
    pos, lengths = end, []
    for _ in range(count):          # LEB128
        v = shift = 0
        while True:
            b = data[pos]
            pos += 1
            v |= (b & 0x7F) << shift
            shift += 7
            if b < 0x80:
                break
        lengths.append(v)
    assert pos + sum(lengths) == len(data) and all(v >= 4 and v % 2 == 0 for v in lengths)
    lanes, at = [], pos
    for v in lengths:
        lanes.append(data[at:at + v])
        at += v
    cfg = codec.config
    mine = lanes_reference.decode(lanes, gh, gw, cfg.n, cfg.levels, cfg.m, codec.rung.tables, tile, gray=False)
    for a, b in zip(mine, codec.parse(data)[2]):
        np.testing.assert_array_equal(a, b)
