"""Seeded mutations of real files: every decode succeeds or raises BitstreamError."""
import os
import struct
import zlib

import numpy as np
import pytest

import engine
from engine import bitstream
from engine.errors import BitstreamError


def _fix_crc(buf: bytearray) -> bytearray:
    k = buf[8]
    pos = 9 + k + 8 + 4 * 5
    if len(buf) >= pos + 4:
        struct.pack_into("<I", buf, pos, zlib.crc32(bytes(buf[pos + 4:])) & 0xFFFFFFFF)
    return buf


def mutate(data: bytes, rng: np.random.Generator) -> bytes:
    buf = bytearray(data)
    kind = rng.integers(6)
    if kind == 0:  # bit flips anywhere
        for _ in range(rng.integers(1, 4)):
            i = rng.integers(len(buf))
            buf[i] ^= 1 << rng.integers(8)
    elif kind == 1:  # truncation
        buf = buf[: rng.integers(len(buf))]
    elif kind == 2:  # length / size field edits
        k = buf[8]
        off = 9 + k + 8 + 4 * rng.integers(5)
        struct.pack_into("<I", buf, off, int(rng.choice([0, 1, 2, 3, 255, 65535, 65536, 2 ** 31, 2 ** 32 - 1,
                                                        (struct.unpack_from("<I", buf, off)[0] + int(rng.integers(-3, 4))) % 2 ** 32])))
    elif kind == 3:  # payload corruption with a recomputed CRC: reaches the entropy decoder
        k = buf[8]
        start = 9 + k + 32
        for _ in range(rng.integers(1, 6)):
            if len(buf) > start:
                buf[rng.integers(start, len(buf))] = rng.integers(256)
        buf = _fix_crc(buf)
    elif kind == 4:  # random header bytes, CRC fixed
        buf[rng.integers(min(len(buf), 41))] = rng.integers(256)
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
    for entropy in ("context", "none"):
        codec = engine.Codec(model="tiny", root=tiny_root, entropy=entropy, backend="torch", kernels="torch",
                             max_pixels=64 * 64)
        files = [codec.compress(np.random.default_rng(i).integers(0, 256, (h, w, 3), dtype=np.uint8))
                 for i, (h, w) in enumerate([(16, 16), (23, 37), (40, 24)])]
        for i in range(count // 2):
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
