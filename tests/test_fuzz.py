"""Seeded mutations of real files: every decode succeeds or raises BitstreamError."""
import os
import struct
import zlib

import numpy as np
import pytest

import engine
from engine import bitstream
from engine.errors import BitstreamError


def _layout(buf) -> tuple[int, int, list[int]]:
    """(CRC offset, payload start, offsets of the u32/u16 size and length fields) of a
    version 1 or 2 file (docs/bitstream.md)."""
    k = buf[8]
    if buf[4] == bitstream.VERSION_LANES:
        base = 9 + k + 8
        return base + 12, base + 16, [base, base + 4, base + 8, base + 10]   # w, h, tile, lanes
    return 9 + k + 8 + 4 * 5, 9 + k + 41 - 9, [9 + k + 8 + 4 * i for i in range(5)]


def _fix_crc(buf: bytearray) -> bytearray:
    pos, _, _ = _layout(buf)
    if len(buf) < pos + 4:
        return buf
    if buf[4] == bitstream.VERSION_LANES:   # v2: the whole file but the CRC itself
        crc = zlib.crc32(bytes(buf[pos + 4:]), zlib.crc32(bytes(buf[:pos])))
    else:
        crc = zlib.crc32(bytes(buf[pos + 4:]))
    struct.pack_into("<I", buf, pos, crc & 0xFFFFFFFF)
    return buf


def mutate(data: bytes, rng: np.random.Generator) -> bytes:
    buf = bytearray(data)
    kind = rng.integers(6)
    _, start, fields = _layout(buf)
    if kind == 0:  # bit flips anywhere
        for _ in range(rng.integers(1, 4)):
            i = rng.integers(len(buf))
            buf[i] ^= 1 << rng.integers(8)
    elif kind == 1:  # truncation
        buf = buf[: rng.integers(len(buf))]
    elif kind == 2:  # length / size field edits, CRC fixed half the time
        off = int(rng.choice(fields))
        fmt = "<H" if buf[4] == bitstream.VERSION_LANES and off == fields[2] else "<I"
        top = 2 ** (8 * struct.calcsize(fmt))
        struct.pack_into(fmt, buf, off, int(rng.choice([0, 1, 2, 3, 255, 65535, 65536 % top, 2 ** 31 % top, top - 1,
                                                        (struct.unpack_from(fmt, buf, off)[0] + int(rng.integers(-3, 4))) % top])))
        if rng.random() < 0.5:
            buf = _fix_crc(buf)
    elif kind == 3:  # payload corruption with a recomputed CRC: reaches the entropy decoder
        for _ in range(rng.integers(1, 6)):
            if len(buf) > start:
                buf[rng.integers(start, len(buf))] = rng.integers(256)
        buf = _fix_crc(buf)
    elif kind == 4:  # random header bytes, CRC fixed
        buf[rng.integers(min(len(buf), start))] = rng.integers(256)
        buf = _fix_crc(buf)
    else:  # appended / removed payload bytes, CRC fixed
        if rng.random() < 0.5:
            buf += bytes(rng.integers(0, 256, rng.integers(1, 9), dtype=np.uint8))
        else:
            buf = buf[:-int(rng.integers(1, 5))]
        buf = _fix_crc(buf)
    return bytes(buf)


def run_fuzz(tiny_root, count, seed):
    rng = np.random.default_rng(seed)
    ok = bad = 0
    for entropy in ("rans", "context", "none"):
        codec = engine.Codec(model="tiny", root=tiny_root, entropy=entropy, backend="torch", kernels="torch",
                             max_pixels=64 * 64)
        files = [codec.compress(np.random.default_rng(i).integers(0, 256, (h, w, 3), dtype=np.uint8))
                 for i, (h, w) in enumerate([(16, 16), (23, 37), (40, 24)])]
        for i in range(count // 3):
            data = mutate(files[i % len(files)], rng)
            try:
                out = codec.decompress(data)
            except BitstreamError:
                bad += 1
                continue
            # a file that decodes gives an image of the size its header states
            hdr = bitstream.read(data, codec.max_pixels)[0]
            assert out.dtype == np.uint8 and out.shape == (hdr.height, hdr.width, 3), (entropy, i)
            ok += 1
    return ok, bad


def test_fuzz_decoder(tiny_root):
    seed = int.from_bytes(os.urandom(4), "little")
    ok, bad = run_fuzz(tiny_root, 1000, seed)
    # every mutation either decodes to a well-formed image or is refused with a
    # BitstreamError (any other exception fails the run); both must happen
    assert bad > 0 and ok > 0, f"seed {seed}: {ok} decoded, {bad} rejected"


@pytest.mark.slow
def test_fuzz_decoder_10k(tiny_root):
    ok, bad = run_fuzz(tiny_root, 10_000, 20261125)
    print(f"10k fuzz: {ok} decoded, {bad} rejected")
    assert bad > 0 and ok > 0


def fuzz_lanes(count: int, seed: int) -> tuple[int, int]:
    """Random and mutated lanes straight into the native lane decoder (no CRC in the
    way): each image decodes or is refused, never a crash or an out-of-bounds read
    (CI's slow step runs this under ASan + UBSan, native/sanitize.sh)."""
    from engine import lanes, lanes_reference
    from engine.entropy import Tables, _normalize_rows
    from engine.model import ModelConfig

    rng = np.random.default_rng(seed)
    cfg = ModelConfig(n=6, levels=4, m=2)
    L = cfg.levels
    tables = Tables(_normalize_rows(rng.integers(0, 50, ((L + 1) ** 2, L))).reshape(L + 1, L + 1, L),
                    rng.integers(1, 65536, (2, cfg.n, L, 3, 25)).astype(np.uint16),
                    rng.integers(1, 65536, (2, cfg.m, 1, 3, 25)).astype(np.uint16))
    ok = bad = 0
    for i in range(count):
        h, w, tile = 2 * int(rng.integers(1, 9)), 2 * int(rng.integers(1, 9)), 2 * int(rng.integers(1, 6))
        gray = bool(rng.random() < 0.3)
        lv = rng.integers(0, L, (h, w)).astype(np.uint8)
        yd = rng.integers(0, 2, (cfg.n, h, w)).astype(np.uint8)
        cd = rng.integers(0, 2, (cfg.m, h // 2, w // 2)).astype(np.uint8)
        coded = lanes_reference.encode(lv, yd, None if gray else cd, cfg.n, L, tables, tile)
        mode = i % 3
        if mode == 0:      # random bytes of random (even, >= 4) lengths
            coded = [bytes(rng.integers(0, 256, 2 * int(rng.integers(2, 40)), dtype=np.uint8)) for _ in coded]
        elif mode == 1:    # a few bytes changed
            j = int(rng.integers(len(coded)))
            b = bytearray(coded[j])
            for _ in range(int(rng.integers(1, 4))):
                b[int(rng.integers(len(b)))] ^= int(rng.integers(1, 256))
            coded[j] = bytes(b)
        else:              # a lane cut short or grown (kept even)
            j = int(rng.integers(len(coded)))
            b = coded[j]
            coded[j] = b[:max(4, len(b) - 2 * int(rng.integers(1, 4)))] if rng.random() < 0.5 else b + b"\0\0"
        starts = np.concatenate([[0], np.cumsum([len(c) for c in coded])]).astype(np.uint64)
        body = bitstream.Lanes(b"".join(coded), starts)
        (res,) = lanes.decode(cfg, tables, [(h, w, tile, body, gray)], threads=2)
        if isinstance(res, BitstreamError):
            bad += 1
        else:
            assert res[0].shape == (h, w) and int(res[0].max(initial=0)) < L
            ok += 1
    return ok, bad


def test_fuzz_lanes_native():
    from engine import lanes
    if lanes.native() is None:
        pytest.skip("engine.rans_native is not built")
    ok, bad = fuzz_lanes(300, int.from_bytes(os.urandom(4), "little"))
    assert bad > 0, (ok, bad)


@pytest.mark.slow
def test_fuzz_lanes_native_20k():
    from engine import lanes
    if lanes.native() is None:
        pytest.skip("engine.rans_native is not built")
    ok, bad = fuzz_lanes(20_000, 20261202)
    print(f"20k lane fuzz: {ok} decoded, {bad} rejected")
    assert bad > 0
