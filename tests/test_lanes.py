"""Bitstream v2 (rANS lanes): the native coder (native/rans.cpp) against its numpy
reference (engine/format/lanes_reference.py), the container, and the codec's default mode."""
import struct
import zlib

import numpy as np
import pytest

import engine
from engine.format import bitstream, lanes, lanes_reference
from engine.format.context_coder import Tables, _normalize_rows
from engine.errors import BitstreamError
from engine.net.model import ModelConfig
from kernels.reference import Packed

needs_native = pytest.mark.skipif(lanes.native() is None, reason="engine.rans_native is not built (pip install -e .)")


def random_tables(rng, n, L, m) -> Tables:
    return Tables(_normalize_rows(rng.integers(0, 1000, ((L + 1) ** 2, L))).reshape(L + 1, L + 1, L),
                  rng.integers(1, 65536, (2, n, L, 3, 25)).astype(np.uint16),
                  rng.integers(1, 65536, (2, m, 1, 3, 25)).astype(np.uint16))


def extreme_tables(p: int, n: int, L: int, m: int) -> Tables:
    """Every code probability at ``p`` (1 or 2^16 - 1: the state arithmetic's limits),
    map rows of one heavy symbol."""
    row = np.array([65536 - 3, 1, 1, 1], np.uint32)
    return Tables(np.tile(row, (L + 1, L + 1, 1)), np.full((2, n, L, 3, 25), p, np.uint16),
                  np.full((2, m, 1, 3, 25), p, np.uint16))


def packed_of(levels, yd, cd, n, L) -> Packed:
    """Dense bits -> the bit path's Packed record (kept Y bits only, location-major)."""
    g = n // (L - 1)
    kept = np.arange(n)[None, None] < (levels.astype(np.int64) * g)[..., None]
    ysel = yd.transpose(1, 2, 0)[kept]
    csel = cd.transpose(1, 2, 0).reshape(-1)
    return Packed(levels, np.packbits(ysel).tobytes(), int(ysel.size), np.packbits(csel).tobytes(), int(csel.size))


def body_of(coded: list[bytes]) -> bitstream.Lanes:
    starts = np.concatenate([[0], np.cumsum([len(c) for c in coded])]).astype(np.uint64)
    return bitstream.Lanes(b"".join(coded), starts)


def random_case(rng, n=12, L=4, m=3, side=12):
    h, w = 2 * int(rng.integers(1, side // 2 + 1)), 2 * int(rng.integers(1, side // 2 + 1))
    lv = rng.integers(0, L, (h, w)).astype(np.uint8)
    yd = rng.integers(0, 2, (n, h, w)).astype(np.uint8)
    cd = rng.integers(0, 2, (m, h // 2, w // 2)).astype(np.uint8)
    return lv, yd, cd


def masked(yd, lv, n, L):
    g = n // (L - 1)
    return yd * (np.arange(n)[:, None, None] < lv[None].astype(np.int64) * g)


# ----------------------------------------------------------------------------- the triad

@needs_native
@pytest.mark.parametrize("seed", range(8))
def test_native_matches_reference_on_random_inputs(seed):
    rng = np.random.default_rng(seed)
    n, L, m = [(12, 4, 3), (60, 16, 8), (6, 3, 2), (15, 16, 1)][seed % 4]
    cfg = ModelConfig(n=n, levels=L, m=m)
    tables = random_tables(rng, n, L, m)
    for _ in range(3):
        lv, yd, cd = random_case(rng, n, L, m, side=int(rng.choice([4, 12, 26])))
        tile = 2 * int(rng.integers(1, 8))
        gray = bool(rng.random() < 0.3)
        ref = lanes_reference.encode(lv, yd, None if gray else cd, n, L, tables, tile)
        (nat,) = lanes.encode(cfg, tables, [packed_of(lv, yd, cd, n, L)], [gray], tile, threads=2)
        assert nat == ref                                         # byte for byte, lane by lane
        want = (lv, masked(yd, lv, n, L), np.zeros_like(cd) if gray else cd)
        (got,) = lanes.decode(cfg, tables, [(*lv.shape, tile, body_of(nat), gray)], threads=2)
        back = lanes_reference.decode(ref, *lv.shape, n, L, m, tables, tile, gray)
        for a, b, c in zip(got, back, want):
            np.testing.assert_array_equal(a, c)
            np.testing.assert_array_equal(b, c)


@needs_native
def test_extreme_probabilities_round_trip():
    """Every table entry at its limits (1 and 2^16 - 1, map rows of one heavy symbol):
    the state arithmetic still round-trips, in both coders alike."""
    rng = np.random.default_rng(5)
    n, L, m = 6, 4, 2
    cfg = ModelConfig(n=n, levels=L, m=m)
    for p in (1, 65535):
        tables = extreme_tables(p, n, L, m)
        lv, yd, cd = random_case(rng, n, L, m, side=10)
        ref = lanes_reference.encode(lv, yd, cd, n, L, tables, 4)
        (nat,) = lanes.encode(cfg, tables, [packed_of(lv, yd, cd, n, L)], [False], 4)
        assert nat == ref
        (got,) = lanes.decode(cfg, tables, [(*lv.shape, 4, body_of(nat), False)])
        np.testing.assert_array_equal(got[1], masked(yd, lv, n, L))
        np.testing.assert_array_equal(got[2], cd)


@needs_native
def test_batches_and_threads_give_the_same_bytes():
    rng = np.random.default_rng(11)
    n, L, m = 12, 4, 3
    cfg = ModelConfig(n=n, levels=L, m=m)
    tables = random_tables(rng, n, L, m)
    cases = [random_case(rng, n, L, m, side=20) for _ in range(6)]
    packeds = [packed_of(*c, n, L) for c in cases]
    grays = [i % 3 == 0 for i in range(6)]
    one = [lanes.encode(cfg, tables, [p], [g], 6)[0] for p, g in zip(packeds, grays)]
    for threads in (1, 2, 5):
        assert lanes.encode(cfg, tables, packeds, grays, 6, threads) == one
        items = [(*c[0].shape, 6, body_of(o), g) for c, o, g in zip(cases, one, grays)]
        for got, c in zip(lanes.decode(cfg, tables, items, threads), cases):
            np.testing.assert_array_equal(got[0], c[0])
            np.testing.assert_array_equal(got[1], masked(c[1], c[0], n, L))


@needs_native
def test_lanes_are_independent():
    """Changing the codes inside one tile changes that lane's bytes only, and each lane
    decodes to its own rectangle whatever the others hold."""
    rng = np.random.default_rng(3)
    n, L, m = 12, 4, 3
    cfg = ModelConfig(n=n, levels=L, m=m)
    tables = random_tables(rng, n, L, m)
    lv = rng.integers(0, L, (16, 16)).astype(np.uint8)
    yd = rng.integers(0, 2, (n, 16, 16)).astype(np.uint8)
    cd = rng.integers(0, 2, (m, 8, 8)).astype(np.uint8)
    tile = 8                                   # 2 x 2 lanes
    a = lanes.encode(cfg, tables, [packed_of(lv, yd, cd, n, L)], [False], tile)[0]
    lv2, yd2, cd2 = lv.copy(), yd.copy(), cd.copy()
    lv2[8:, 8:] = rng.integers(0, L, (8, 8))
    yd2[:, 8:, 8:] ^= 1
    cd2[:, 4:, 4:] ^= 1
    b = lanes.encode(cfg, tables, [packed_of(lv2, yd2, cd2, n, L)], [False], tile)[0]
    assert a[:3] == b[:3] and a[3] != b[3]
    mixed = body_of(a[:3] + [b[3]])            # lanes from two files
    (got,) = lanes.decode(cfg, tables, [(16, 16, tile, mixed, False)])
    np.testing.assert_array_equal(got[0], np.where(np.indices((16, 16)).min(0) >= 8, lv2, lv))


# ----------------------------------------------------------------------------- corrupt lanes

@needs_native
def test_corrupt_lanes_are_refused_not_read_past():
    rng = np.random.default_rng(7)
    n, L, m = 12, 4, 3
    cfg = ModelConfig(n=n, levels=L, m=m)
    tables = random_tables(rng, n, L, m)
    lv, yd, cd = random_case(rng, n, L, m, side=12)
    coded = lanes.encode(cfg, tables, [packed_of(lv, yd, cd, n, L)], [False], 4)[0]
    shape = lv.shape
    bad_bodies = [
        [c[:-2] if i == 0 else c for i, c in enumerate(coded)],          # one lane cut short
        [c + b"\0\0" if i == 0 else c for i, c in enumerate(coded)],     # one lane with bytes left over
        [b"\0\0\0\0" for _ in coded],                                    # state below 2^16
    ]
    for body in bad_bodies:
        (res,) = lanes.decode(cfg, tables, [(*shape, 4, body_of(body), False)])
        assert isinstance(res, BitstreamError) and "corrupt lane" in str(res)
        with pytest.raises(BitstreamError):
            lanes_reference.decode(body, *shape, n, L, m, tables, 4, False)
    # the wrong number of lanes for the grid is refused before the coder runs
    (res,) = lanes.decode(cfg, tables, [(*shape, 4, body_of(coded[:-1]), False)])
    assert isinstance(res, BitstreamError) and "lanes" in str(res)


def test_native_coder_checks_its_arguments():
    if lanes.native() is None:
        pytest.skip("engine.rans_native is not built")
    mod = lanes.native()
    rng = np.random.default_rng(0)
    t = random_tables(rng, 12, 4, 3)
    with pytest.raises(ValueError, match="table sizes"):
        mod.Coder(12, 4, 3, t.map, t.y[:1], t.c)
    zero = t.y.copy()
    zero[0, 0, 0, 0, 0] = 0
    with pytest.raises(ValueError, match="bit table"):
        mod.Coder(12, 4, 3, t.map, zero, t.c)
    c = mod.Coder(12, 4, 3, t.map, t.y, t.c)
    lv = np.full((4, 4), 3, np.uint8)
    with pytest.raises(ValueError, match="ybits"):          # fewer kept bits than the levels imply
        c.encode([(lv, b"\0", 8, b"\0" * 2)], 4, 1)
    with pytest.raises(ValueError, match="level out of range"):
        c.encode([(np.full((4, 4), 9, np.uint8), b"", 0, None)], 4, 1)
    with pytest.raises(ValueError, match="tile"):
        c.encode([(lv, b"\0" * 18, 144, None)], 3, 1)


# ----------------------------------------------------------------------------- container

def test_v2_header_is_checksummed():
    """Every single-bit flip anywhere in a version 2 file is refused (the CRC covers the
    header too), unlike version 1 where header flips could decode to a wrong image."""
    hdr = bitstream.Header(bitstream.ENTROPY_RANS, 0, 3, "small", b"12345678", 33, 17, bitstream.VERSION_LANES, 48)
    data = bitstream.write_lanes(hdr, [b"\1\0\1\0\7\7", b"\1\0\1\0"])
    h2, body = bitstream.read(data, 10 ** 6)
    assert h2 == hdr and [body.lane(i) for i in range(len(body))] == [b"\1\0\1\0\7\7", b"\1\0\1\0"]
    for i in range(len(data) * 8):
        flipped = bytearray(data)
        flipped[i // 8] ^= 1 << (i % 8)
        with pytest.raises(BitstreamError):
            bitstream.read(bytes(flipped), 10 ** 6)


def test_v2_lane_table_is_bounded_before_use():
    hdr = bitstream.Header(bitstream.ENTROPY_RANS, 0, 3, "small", b"12345678", 33, 17, bitstream.VERSION_LANES, 48)
    data = bytearray(bitstream.write_lanes(hdr, [b"\1\0\1\0"]))
    at = 9 + 5 + 8 + 12                                      # the lane count (docs/bitstream.md)
    struct.pack_into("<I", data, at, 2 ** 31)
    crc_at = at + 4
    struct.pack_into("<I", data, crc_at, zlib.crc32(bytes(data[crc_at + 4:]), zlib.crc32(bytes(data[:crc_at]))))
    with pytest.raises(BitstreamError, match="lanes cannot fit"):
        bitstream.read(bytes(data), 10 ** 6)


# ----------------------------------------------------------------------------- the codec

def test_default_files_are_v2_and_decode_like_v1(tiny_root):
    """The default entropy mode writes version 2; it decodes to exactly the bits a
    version 1 (context) file of the same image holds, so the image is the same."""
    img = np.random.default_rng(2).integers(0, 256, (40, 56, 3), dtype=np.uint8)
    v2 = engine.Codec(model="tiny", root=tiny_root, backend="torch", kernels="torch")
    v1 = engine.Codec(model="tiny", root=tiny_root, backend="torch", kernels="torch", entropy="context")
    a, b = v2.compress(img), v1.compress(img)
    assert a[4] == bitstream.VERSION_LANES and b[4] == bitstream.VERSION
    for x, y in zip(v2.parse(a)[2], v1.parse(b)[2]):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(v2.decompress(a), v1.decompress(b))
    np.testing.assert_array_equal(v2.decompress(b), v1.decompress(b))   # either codec reads either version


def test_reference_fallback_writes_the_same_bytes(tiny_root, monkeypatch):
    img = np.random.default_rng(4).integers(0, 256, (24, 40, 3), dtype=np.uint8)
    codec = engine.Codec(model="tiny", root=tiny_root, backend="torch", kernels="torch")
    native_bytes = codec.compress(img)
    monkeypatch.setattr(lanes, "_NATIVE", False)              # as if the extension were not built
    assert codec.compress(img) == native_bytes
    np.testing.assert_array_equal(codec.decompress(native_bytes), engine.Codec(
        model="tiny", root=tiny_root, backend="torch", kernels="torch").decompress(native_bytes))


@needs_native
def test_shipped_model_v2_matches_reference_on_real_images():
    """Real bit-path output of the shipped model (synthetic photo-like image and, where
    ../shared is present, two Kodak crops): native bytes == reference bytes."""
    from pathlib import Path

    from engine.format import registry
    from engine.data import list_images, load_rgb
    codec = engine.Codec(quality=4, entropy="none", backend="torch", kernels="torch")
    yy, xx = np.mgrid[0:96, 0:160]
    imgs = [np.stack([(yy * 2 + xx) % 256, (xx * 3) % 256, (yy * 5 + 40) % 256], -1).astype(np.uint8)]
    kodak = Path(__file__).resolve().parents[2] / "shared" / "data" / "kodak"
    if kodak.is_dir():
        imgs += [load_rgb(p)[:128, :192] for p in list_images(kodak)[:2]]
    coding = codec.rung.coding
    cfg = coding.config
    for img in imgs:
        hdr, _, packed = registry.parse(codec.compress(img), codec.rungs.codings.for_header, codec.max_pixels)
        from kernels import reference
        import torch
        _, yd, cd = reference.unpack([packed], cfg.n, cfg.m, cfg.levels, dtype=torch.uint8)
        ref = lanes_reference.encode(packed.levels, yd[0].numpy(), cd[0].numpy(), cfg.n, cfg.levels, coding.tables, 8)
        assert lanes.encode(cfg, coding.tables, [packed], [False], 8) == [ref]
