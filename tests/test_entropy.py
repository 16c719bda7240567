"""The context coder against a position-by-position reading of docs/bitstream.md."""
import numpy as np
import pytest

from engine.format import context_coder
from engine.errors import BitstreamError


def _tables(rng, n, L, m):
    t = context_coder.Tables.flat(n, L, m)
    counts = rng.integers(0, 50, size=t.map.shape)
    return context_coder.Tables(context_coder._normalize_rows(counts.reshape(-1, L)).reshape(t.map.shape),
                          rng.integers(64, (1 << 16) - 64, size=t.y.shape).astype(np.uint16),
                          rng.integers(64, (1 << 16) - 64, size=t.c.shape).astype(np.uint16))


def _spec_symbols(levels, ydense, cdense, n, L, tables):
    """(probability, symbol) lists per section, one location at a time, as the spec words it."""
    h, w = levels.shape
    cat = []
    for d in range(h + w - 1):
        for y in range(h):
            x = d - y
            if 0 <= x < w:
                up = levels[y - 1, x] if y > 0 else L
                left = levels[y, x - 1] if x > 0 else L
                cat.append((tuple(tables.map[up, left]), int(levels[y, x])))

    def codes(bits, q, req, table, use_q):
        out = []
        C, hh, ww = bits.shape
        for k in range(C):
            for part in (0, 1):
                for y in range(hh):
                    for x in range(ww):
                        if (y + x) % 2 != part or q[y, x] < req[k]:
                            continue
                        s = 0 if k == 0 else 1 + int(bits[k - 1, y, x])
                        c = 0
                        if part == 1:
                            ones = zeros = 0
                            for yy, xx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
                                if 0 <= yy < hh and 0 <= xx < ww and q[yy, xx] >= req[k]:
                                    ones += int(bits[k, yy, xx])
                                    zeros += 1 - int(bits[k, yy, xx])
                            c = 5 * ones + zeros
                        out.append((int(table[part, k, q[y, x] if use_q else 0, s, c]), int(bits[k, y, x])))
        return out

    req = np.arange(n) // (n // (L - 1)) + 1
    ones_c = np.ones(cdense.shape[1:], np.uint8)
    return cat, codes(ydense, levels, req, tables.y, True), codes(cdense, ones_c, np.ones(len(cdense), int),
                                                                    tables.c, False)


def _encode_spec(cat, ybits, cbits, L):
    import constriction
    cs = constriction.stream

    def bern(pairs):
        enc = cs.queue.RangeEncoder()
        if pairs:
            p, s = (np.array(v) for v in zip(*pairs))
            enc.encode(s.astype(np.int32), cs.model.Bernoulli(perfect=False), p / 65536.0)
        return enc.get_compressed().astype("<u4").tobytes()

    enc = cs.queue.RangeEncoder()
    p, s = zip(*cat)
    enc.encode(np.array(s, np.int32), cs.model.Categorical(perfect=False), np.array(p, np.float64) / 65536.0)
    return enc.get_compressed().astype("<u4").tobytes(), bern(ybits), bern(cbits)


@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (5, 1), (2, 3), (3, 3), (6, 9), (7, 4), (8, 8)])
def test_sections_equal_the_spec_and_round_trip(shape):
    rng = np.random.default_rng(sum(shape))
    n, L, m = 6, 4, 3
    h, w = shape
    hc, wc = max(1, h // 2), max(1, w // 2)
    tables = _tables(rng, n, L, m)
    levels = rng.integers(0, L, size=(h, w)).astype(np.uint8)
    yd = rng.integers(0, 2, size=(n, h, w)).astype(np.uint8)
    cd = rng.integers(0, 2, size=(m, hc, wc)).astype(np.uint8)

    msec = context_coder.encode_map(levels, L, tables)
    ysec, csec = context_coder.encode_codes(levels, yd, cd, n, L, tables)
    assert (msec, ysec, csec) == _encode_spec(*_spec_symbols(levels, yd, cd, n, L, tables), L)

    assert np.array_equal(context_coder.decode_map(msec, h, w, L, tables), levels)
    yd2, cd2 = context_coder.decode_codes(levels, ysec, csec, n, L, m, hc, wc, tables, gray=False)
    kept = levels[None] >= (np.arange(n) // (n // (L - 1)) + 1)[:, None, None]
    assert np.array_equal(yd2[kept], yd[kept]) and not yd2[~kept].any()
    assert np.array_equal(cd2, cd)


def test_corrupt_code_section_is_a_bitstream_error():
    rng = np.random.default_rng(0)
    n, L, m = 6, 4, 3
    tables = _tables(rng, n, L, m)
    levels = np.full((4, 4), L - 1, np.uint8)
    yd = rng.integers(0, 2, size=(n, 4, 4)).astype(np.uint8)
    ysec, _ = context_coder.encode_codes(levels, yd, None, n, L, tables)
    with pytest.raises(BitstreamError):
        context_coder.decode_codes(levels, ysec[:-4] + b"\xff\xff", b"", n, L, m, 2, 2, tables, gray=True)


def test_sender_contexts_in_runs_of_channels_equal_one_run():
    """Large images are coded a few channels at a time (bounded memory): same sequence."""
    rng = np.random.default_rng(3)
    n, L = 6, 4
    levels = rng.integers(0, L, size=(5, 7)).astype(np.uint8)
    yd = rng.integers(0, 2, size=(n, 5, 7)).astype(np.uint8)
    planes = context_coder.y_planes(levels, n, L)
    whole = list(context_coder._contexts(planes, yd))
    for positions in (1, 70, 150):
        runs = list(context_coder._contexts(planes, yd, positions))
        assert len(runs) > len(whole) == 1
        for i in (0, 1):
            assert np.array_equal(np.concatenate([r[i] for r in runs]), whole[0][i])
