"""Parse a real file by docs/bitstream.md, field by field, without engine.bitstream."""
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
