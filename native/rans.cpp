// Native entropy coder of bitstream v2 (docs/bitstream.md, "Version 2"): static
// integer-probability contexts, rANS with a 32-bit state and 16-bit words, one
// independent stream per lane (a tile of the latent grid).
//
// The spec in code is engine/lanes_reference.py; tests/test_lanes.py checks that
// this coder writes the same bytes and reads them back the same on random and real
// inputs.  One call codes a batch of images with threads across (image, lane)
// pairs, the GIL released around the work.
//
// The decoder is written for hostile input: every length, index and count it reads
// from a file is checked before use, a stream that runs out is an error (never a
// read past the buffer), and a lane must end exactly where its length says with the
// encoder's initial state (so most corruption is caught even without the CRC).

#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace nb = nanobind;

// The per-symbol calls must inline into the lane walker (GCC leaves them out of
// line in a function this big, which costs ~2x).
#if defined(__GNUC__)
#define HNLC_INLINE inline __attribute__((always_inline))
#else
#define HNLC_INLINE inline
#endif

namespace {

constexpr uint32_t kProbBits = 16;
constexpr uint32_t kOne = 1u << kProbBits;   // probabilities are counts out of 2^16
constexpr uint32_t kLow = 1u << 16;          // the state lives in [2^16, 2^32)
constexpr int kSpatial = 25;                 // 5 * ones + zeros among 4 neighbours

using U8Array = nb::ndarray<uint8_t, nb::ndim<2>, nb::c_contig, nb::device::cpu>;
using U8Planes = nb::ndarray<uint8_t, nb::ndim<3>, nb::c_contig, nb::device::cpu>;

// ---------------------------------------------------------------------------- tables

struct Tables {
    int n = 0, L = 0, m = 0, g = 0;
    std::vector<uint32_t> cum;   // map rows (L+1)^2, each L+1 cumulative counts (0 .. 2^16)
    std::vector<uint16_t> y;     // (2, n, L, 3, 25) P(bit = 1) * 2^16
    std::vector<uint16_t> c;     // (2, m, 1, 3, 25)

    size_t yidx(int part, int k, int q, int s, int sp) const {
        return ((((size_t)part * n + k) * L + q) * 3 + s) * kSpatial + sp;
    }
    size_t cidx(int part, int k, int s, int sp) const {
        return ((((size_t)part * m + k)) * 3 + s) * kSpatial + sp;
    }
};

// ---------------------------------------------------------------------------- rANS

// x / f for x < 2^32 and 1 <= f <= 2^16 without a division on the state's critical
// path: q = (x * ceil(2^48 / f)) >> 48 is exact there (the rounding error of the
// reciprocal, times x, stays below 2^48 / f).  The table depends only on f, so its
// load runs ahead of the state.
struct Reciprocals {
    std::vector<uint64_t> r;
    Reciprocals() : r(kOne + 1) {
        for (uint64_t f = 1; f <= kOne; ++f) r[f] = ((uint64_t(1) << 48) + f - 1) / f;
    }
};
const Reciprocals& reciprocals() {
    static const Reciprocals table;   // thread-safe initialisation (C++11)
    return table;
}

// Encodes the (start, freq) pairs rec[0 .. 2*count) -- coding order -- in reverse,
// from x = 2^16, into the lane's bytes: the final state (u32 LE), then the words in
// decoding order (u16 LE).  Words are written back to front, so no reversal.
void rans_encode(const uint32_t* rec, size_t count, std::vector<uint8_t>& scratch, std::vector<uint8_t>& out) {
    scratch.resize(2 * count + 4);   // at most one word per symbol, then the state
    uint8_t* const end = scratch.data() + scratch.size();
    uint8_t* p = end;
    const uint64_t* rcp = reciprocals().r.data();
    uint32_t x = kLow;
    for (size_t i = count; i-- > 0;) {
        const uint32_t start = rec[2 * i], freq = rec[2 * i + 1];
        if ((uint64_t)x >= ((uint64_t)freq << 16)) {   // renormalise: one word is enough
            p -= 2;
            p[0] = (uint8_t)x;
            p[1] = (uint8_t)(x >> 8);
            x >>= 16;
        }
        const uint32_t q = (uint32_t)(((unsigned __int128)x * rcp[freq]) >> 48);
        x = (q << 16) + (x - q * freq) + start;
    }
    p -= 4;
    p[0] = (uint8_t)x; p[1] = (uint8_t)(x >> 8); p[2] = (uint8_t)(x >> 16); p[3] = (uint8_t)(x >> 24);
    out.assign(p, end);
}

struct RansDecoder {
    const uint8_t* p;
    const uint8_t* end;
    uint32_t x = 0;
    bool bad = false;

    RansDecoder(const uint8_t* data, size_t len) : p(data), end(data + len) {
        if (len < 4 || (len & 1)) { bad = true; p = end; return; }
        x = (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
        p += 4;
        if (x < kLow) bad = true;
    }
    HNLC_INLINE void renorm() {
        if (x < kLow) {
            if (end - p < 2) { bad = true; x = kLow; return; }   // ran out: corrupt, keep x valid
            x = (x << 16) | (uint32_t)p[0] | ((uint32_t)p[1] << 8);
            p += 2;
        }
    }
    HNLC_INLINE int bit(uint32_t p1) {
        // branch-free: the bits are close to fair coins, a branch would mispredict
        const uint32_t slot = x & (kOne - 1), f0 = kOne - p1;
        const uint32_t b = slot >= f0;
        const uint32_t f = b ? p1 : f0, start = b ? f0 : 0;
        x = f * (x >> 16) + slot - start;
        renorm();
        return (int)b;
    }
    HNLC_INLINE int symbol(const uint32_t* cum, int L) {
        const uint32_t slot = x & (kOne - 1);
        int s = 0;
        while (s + 1 < L && cum[s + 1] <= slot) ++s;
        x = (cum[s + 1] - cum[s]) * (x >> 16) + slot - cum[s];
        renorm();
        return s;
    }
    bool ok() const { return !bad && x == kLow && p == end; }
};

// ---------------------------------------------------------------------------- lanes

struct Rect { int y0, y1, x0, x1; };

inline Rect lane_rect(int h, int w, int tile, int lane) {
    const int cols = (w + tile - 1) / tile;
    const int ty = lane / cols, tx = lane % cols;
    return {ty * tile, std::min(h, (ty + 1) * tile), tx * tile, std::min(w, (tx + 1) * tile)};
}

// One lane's symbols in coding order, shared by the encoder and the decoder: the
// walker keeps the lane's own levels and bits (its context state) and asks the
// coder ``S`` for each symbol -- the encoder reads it from the image and records
// (start, freq), the decoder decodes it.  Neighbours outside the lane count as
// outside the image.
struct LaneScratch {
    std::vector<uint8_t> lv, yb, cb;
    std::vector<uint32_t> rec;
    std::vector<uint8_t> bytes;
};

template <class S>
void walk_lane(const Tables& t, const Rect& r, int w, bool color, LaneScratch& sc, S& s) {
    const int th = r.y1 - r.y0, tw = r.x1 - r.x0, n = t.n, L = t.L, g = t.g, m = t.m;
    sc.lv.assign((size_t)th * tw, 0);
    sc.yb.assign((size_t)th * tw * n, 0);
    uint8_t* lv = sc.lv.data();
    uint8_t* yb = sc.yb.data();
    // map: raster order, context (level above, level to the left), L = outside
    for (int ty = 0; ty < th; ++ty)
        for (int tx = 0; tx < tw; ++tx) {
            const int up = ty ? lv[(ty - 1) * tw + tx] : L, left = tx ? lv[ty * tw + tx - 1] : L;
            const size_t loc = (size_t)(r.y0 + ty) * w + (r.x0 + tx);
            lv[ty * tw + tx] = (uint8_t)s.level(&t.cum[((size_t)up * (L + 1) + left) * (L + 1)], loc);
        }
    // Y codes: part 0 = (y + x) even (image coordinates), then part 1; raster order;
    // at each location its kept channels 0 .. q*g-1 in order.  The table row of one
    // (part, q) is contiguous in (k, s, c): index k * L * 75 + s * 25 + c from it.
    const size_t kstride = (size_t)L * 3 * kSpatial;
    for (int part = 0; part < 2; ++part)
        for (int ty = 0; ty < th; ++ty)
            for (int tx = ((r.y0 + ty + r.x0) & 1) ^ part; tx < tw; tx += 2) {
                const int i = ty * tw + tx, q = lv[i], K = q * g;
                if (!K) continue;
                const size_t loc = (size_t)(r.y0 + ty) * w + (r.x0 + tx);
                uint8_t* bits = yb + (size_t)i * n;
                const uint16_t* row = &t.y[t.yidx(part, 0, q, 0, 0)];
                // s = 1 + the previous channel's bit: both table entries are loaded before
                // that bit is known and one is selected, so the decoder's chain through
                // the state does not wait on a table load
                if (!part) {
                    bits[0] = (uint8_t)s.ybit(row[0], loc, 0);
                    for (int k = 1; k < K; ++k) {
                        const uint16_t* e = row + k * kstride;
                        const uint32_t p0 = e[kSpatial], p1 = e[2 * kSpatial];
                        bits[k] = (uint8_t)s.ybit(bits[k - 1] ? p1 : p0, loc, k);
                    }
                    continue;
                }
                // the four neighbours inside the lane (anchors, coded in part 0): their bits
                // and how many channels each keeps (0 outside the lane)
                const uint8_t* nb[4];
                int nk[4];
                const int js[4] = {ty > 0 ? i - tw : -1, ty + 1 < th ? i + tw : -1, tx > 0 ? i - 1 : -1,
                                   tx + 1 < tw ? i + 1 : -1};
                for (int d = 0; d < 4; ++d) {
                    nk[d] = js[d] >= 0 ? lv[js[d]] * g : 0;
                    nb[d] = js[d] >= 0 ? yb + (size_t)js[d] * n : bits;
                }
                const uint8_t *b0 = nb[0], *b1 = nb[1], *b2 = nb[2], *b3 = nb[3];
                const int k0 = nk[0], k1 = nk[1], k2 = nk[2], k3 = nk[3];
                for (int k = 0; k < K; ++k) {
                    const int i0 = k < k0, i1 = k < k1, i2 = k < k2, i3 = k < k3;
                    const int kept = i0 + i1 + i2 + i3;
                    const int ones = (i0 & b0[k]) + (i1 & b1[k]) + (i2 & b2[k]) + (i3 & b3[k]);
                    const uint16_t* e = row + k * kstride + 4 * ones + kept;
                    const uint32_t p0 = e[kSpatial], p1 = e[2 * kSpatial];
                    bits[k] = (uint8_t)s.ybit(k ? (bits[k - 1] ? p1 : p0) : e[0], loc, k);
                }
            }
    if (!color) return;
    // CbCr codes: the lane's half-resolution rectangle, every channel kept
    const int cy0 = r.y0 / 2, cx0 = r.x0 / 2, ch = th / 2, cw = tw / 2, wc = w / 2;
    sc.cb.assign((size_t)ch * cw * m, 0);
    uint8_t* cb = sc.cb.data();
    const size_t cstride = (size_t)3 * kSpatial;
    for (int part = 0; part < 2; ++part)
        for (int ty = 0; ty < ch; ++ty)
            for (int tx = ((cy0 + ty + cx0) & 1) ^ part; tx < cw; tx += 2) {
                const int i = ty * cw + tx;
                const size_t loc = (size_t)(cy0 + ty) * wc + (cx0 + tx);
                uint8_t* bits = cb + (size_t)i * m;
                const uint16_t* row = &t.c[t.cidx(part, 0, 0, 0)];
                const int js[4] = {ty > 0 ? i - cw : -1, ty + 1 < ch ? i + cw : -1, tx > 0 ? i - 1 : -1,
                                   tx + 1 < cw ? i + 1 : -1};
                for (int k = 0; k < m; ++k) {
                    int kept = 0, ones = 0;
                    if (part)
                        for (int d = 0; d < 4; ++d)
                            if (js[d] >= 0) { ++kept; ones += cb[(size_t)js[d] * m + k]; }
                    const int sidx = k ? 1 + bits[k - 1] : 0;
                    bits[k] = (uint8_t)s.cbit(row[k * cstride + sidx * kSpatial + 4 * ones + kept], loc, k);
                }
            }
}

// ---------------------------------------------------------------------------- encoder

struct EncodeImage {
    int h = 0, w = 0;
    bool color = true;
    const uint8_t* levels = nullptr;
    const uint8_t* ybits = nullptr;
    const uint8_t* cbits = nullptr;
    std::vector<uint64_t> yoff;            // first Y bit of each location
    std::vector<std::vector<uint8_t>> lanes;
};

struct EncodeSink {
    const Tables& t;
    const EncodeImage& im;
    uint32_t* rec;               // (start, freq) pairs in coding order
    size_t len = 0;

    HNLC_INLINE int level(const uint32_t* cum, size_t loc) {
        const int q = im.levels[loc];
        rec[len] = cum[q];
        rec[len + 1] = cum[q + 1] - cum[q];
        len += 2;
        return q;
    }
    HNLC_INLINE void binary(uint32_t p1, int b) {
        rec[len] = b ? kOne - p1 : 0;
        rec[len + 1] = b ? p1 : kOne - p1;
        len += 2;
    }
    HNLC_INLINE int ybit(uint32_t p1, size_t loc, int k) {
        const uint64_t o = im.yoff[loc] + (uint64_t)k;
        const int b = (im.ybits[o >> 3] >> (7 - (o & 7))) & 1;
        binary(p1, b);
        return b;
    }
    HNLC_INLINE int cbit(uint32_t p1, size_t loc, int k) {
        const uint64_t o = (uint64_t)loc * t.m + (uint64_t)k;
        const int b = (im.cbits[o >> 3] >> (7 - (o & 7))) & 1;
        binary(p1, b);
        return b;
    }
};

void encode_lane(const Tables& t, EncodeImage& im, int tile, int lane, LaneScratch& sc) {
    const Rect r = lane_rect(im.h, im.w, tile, lane);
    // at most: a level and n Y bits per location, m CbCr bits per quarter location
    sc.rec.resize((size_t)(r.y1 - r.y0) * (r.x1 - r.x0) * (t.n + t.m + 1) * 2);
    EncodeSink sink{t, im, sc.rec.data()};
    walk_lane(t, r, im.w, im.color, sc, sink);
    rans_encode(sink.rec, sink.len / 2, sc.bytes, im.lanes[lane]);
}

// ---------------------------------------------------------------------------- decoder

struct DecodeImage {
    int h = 0, w = 0, tile = 0;
    bool color = true;
    const uint8_t* data = nullptr;        // the lanes, back to back
    std::vector<uint64_t> starts;         // lane k is data[starts[k] : starts[k + 1]]
    uint8_t* levels = nullptr;            // (h, w)
    uint8_t* y = nullptr;                 // (n, h, w), zero on entry
    uint8_t* c = nullptr;                 // (m, h/2, w/2), zero on entry
    std::atomic<int> failed{-1};          // the first lane found corrupt
};

struct DecodeSink {
    const Tables& t;
    DecodeImage& im;
    RansDecoder d;

    HNLC_INLINE int level(const uint32_t* cum, size_t loc) {
        const int q = d.symbol(cum, t.L);
        im.levels[loc] = (uint8_t)q;
        return q;
    }
    HNLC_INLINE int ybit(uint32_t p1, size_t loc, int k) {
        const int b = d.bit(p1);
        im.y[(size_t)k * im.h * im.w + loc] = (uint8_t)b;
        return b;
    }
    HNLC_INLINE int cbit(uint32_t p1, size_t loc, int k) {
        const int b = d.bit(p1);
        im.c[(size_t)k * (im.h / 2) * (im.w / 2) + loc] = (uint8_t)b;
        return b;
    }
};

void decode_lane(const Tables& t, DecodeImage& im, int lane, LaneScratch& sc) {
    const Rect r = lane_rect(im.h, im.w, im.tile, lane);
    const uint64_t a = im.starts[lane], b = im.starts[lane + 1];
    DecodeSink sink{t, im, RansDecoder(im.data + a, (size_t)(b - a))};
    if (sink.d.bad) { int e = -1; im.failed.compare_exchange_strong(e, lane); return; }
    walk_lane(t, r, im.w, im.color, sc, sink);
    if (!sink.d.ok()) { int e = -1; im.failed.compare_exchange_strong(e, lane); }
}

// ---------------------------------------------------------------------------- threads

template <class F>
void parallel_for(size_t count, int threads, F&& f) {
    threads = std::max(1, std::min<int>(threads, (int)count));
    std::atomic<size_t> next{0};
    auto run = [&]() {
        LaneScratch sc;
        for (size_t i; (i = next.fetch_add(1)) < count;) f(i, sc);
    };
    if (threads == 1) { run(); return; }
    std::vector<std::thread> pool;
    pool.reserve(threads - 1);
    for (int i = 1; i < threads; ++i) pool.emplace_back(run);
    run();
    for (auto& th : pool) th.join();
}

HNLC_INLINE size_t lane_count(int h, int w, int tile) {
    return (size_t)((h + tile - 1) / tile) * (size_t)((w + tile - 1) / tile);
}

// ---------------------------------------------------------------------------- Python

class Coder {
public:
    Coder(int n, int L, int m, nb::ndarray<const uint32_t, nb::c_contig, nb::device::cpu> map,
          nb::ndarray<const uint16_t, nb::c_contig, nb::device::cpu> y,
          nb::ndarray<const uint16_t, nb::c_contig, nb::device::cpu> c) {
        if (L < 2 || L > 255 || n < 1 || m < 1 || n % (L - 1))
            throw std::invalid_argument("need 2 <= L <= 255, n >= 1 a multiple of L - 1, m >= 1");
        t.n = n; t.L = L; t.m = m; t.g = n / (L - 1);
        if (map.size() != (size_t)(L + 1) * (L + 1) * L || y.size() != (size_t)2 * n * L * 3 * kSpatial ||
            c.size() != (size_t)2 * m * 3 * kSpatial)
            throw std::invalid_argument("table sizes do not match (n, L, m)");
        t.cum.resize((size_t)(L + 1) * (L + 1) * (L + 1));
        for (size_t row = 0; row < (size_t)(L + 1) * (L + 1); ++row) {
            uint32_t acc = 0;
            t.cum[row * (L + 1)] = 0;
            for (int s = 0; s < L; ++s) {
                const uint32_t f = map.data()[row * L + s];
                if (f == 0 || f > kOne) throw std::invalid_argument("map table entry outside 1 .. 2^16");
                acc += f;
                t.cum[row * (L + 1) + s + 1] = acc;
            }
            if (acc != kOne) throw std::invalid_argument("map table row does not sum to 2^16");
        }
        auto copy_p1 = [](const uint16_t* src, size_t len, std::vector<uint16_t>& dst) {
            dst.assign(src, src + len);
            for (uint16_t v : dst)
                if (v == 0) throw std::invalid_argument("bit table entry outside 1 .. 2^16 - 1");
        };
        copy_p1(y.data(), y.size(), t.y);
        copy_p1(c.data(), c.size(), t.c);
    }

    // items: [(levels (h, w) uint8, ybits: bytes, ynbits, cbits: bytes or None)] -> per image,
    // per lane, the lane's bytes.
    nb::list encode(nb::list items, int tile, int threads) {
        check_tile(tile);
        std::vector<EncodeImage> ims(nb::len(items));
        std::vector<std::pair<size_t, int>> work;
        for (size_t i = 0; i < ims.size(); ++i) {
            nb::tuple it = nb::cast<nb::tuple>(items[i]);
            if (nb::len(it) != 4) throw std::invalid_argument("encode item: (levels, ybits, ynbits, cbits)");
            U8Array lv = nb::cast<U8Array>(it[0], false);   // no converted copy: we keep its pointer
            nb::bytes yb = nb::cast<nb::bytes>(it[1]);
            const uint64_t ynbits = nb::cast<uint64_t>(it[2]);
            EncodeImage& im = ims[i];
            im.h = (int)lv.shape(0); im.w = (int)lv.shape(1);
            if (im.h < 2 || im.w < 2 || (im.h & 1) || (im.w & 1))
                throw std::invalid_argument("the latent grid must have even sides >= 2");
            im.levels = lv.data();
            im.yoff.resize((size_t)im.h * im.w);
            uint64_t acc = 0;
            for (size_t loc = 0; loc < im.yoff.size(); ++loc) {
                if (im.levels[loc] >= t.L) throw std::invalid_argument("importance level out of range");
                im.yoff[loc] = acc;
                acc += (uint64_t)im.levels[loc] * t.g;
            }
            if (acc != ynbits || yb.size() < (acc + 7) / 8)
                throw std::invalid_argument("ybits do not hold the kept bits the levels imply");
            im.ybits = (const uint8_t*)yb.c_str();
            im.color = !it[3].is_none();
            if (im.color) {
                nb::bytes cb = nb::cast<nb::bytes>(it[3]);
                if (cb.size() < ((uint64_t)(im.h / 2) * (im.w / 2) * t.m + 7) / 8)
                    throw std::invalid_argument("cbits are shorter than the CbCr grid");
                im.cbits = (const uint8_t*)cb.c_str();
            }
            const size_t nl = lane_count(im.h, im.w, tile);
            im.lanes.resize(nl);
            for (size_t l = 0; l < nl; ++l) work.emplace_back(i, (int)l);
        }
        {
            nb::gil_scoped_release release;
            parallel_for(work.size(), threads, [&](size_t j, LaneScratch& sc) {
                encode_lane(t, ims[work[j].first], tile, work[j].second, sc);
            });
        }
        nb::list out;
        for (auto& im : ims) {
            nb::list lanes;
            for (auto& l : im.lanes) lanes.append(nb::bytes((const char*)l.data(), l.size()));
            out.append(lanes);
        }
        return out;
    }

    // items: [(h, w, tile, data: bytes, starts: uint64 (lanes + 1,), levels out (h, w),
    //          y out (n, h, w), c out (m, h/2, w/2) or None)] -> per image "" or the error.
    // The outputs must be zero-filled.
    std::vector<std::string> decode(nb::list items, int threads) {
        const size_t N = nb::len(items);
        std::vector<DecodeImage> ims(N);
        std::vector<std::pair<size_t, int>> work;
        std::vector<std::string> errors(N);
        for (size_t i = 0; i < N; ++i) {
            nb::tuple it = nb::cast<nb::tuple>(items[i]);
            if (nb::len(it) != 8) throw std::invalid_argument("decode item has 8 fields");
            DecodeImage& im = ims[i];
            im.h = nb::cast<int>(it[0]); im.w = nb::cast<int>(it[1]); im.tile = nb::cast<int>(it[2]);
            check_tile(im.tile);
            if (im.h < 2 || im.w < 2 || (im.h & 1) || (im.w & 1))
                throw std::invalid_argument("the latent grid must have even sides >= 2");
            nb::bytes data = nb::cast<nb::bytes>(it[3]);
            auto starts = nb::cast<nb::ndarray<const uint64_t, nb::ndim<1>, nb::c_contig, nb::device::cpu>>(it[4], false);
            const size_t nl = lane_count(im.h, im.w, im.tile);
            if (starts.shape(0) != nl + 1) throw std::invalid_argument("starts must have lanes + 1 entries");
            im.starts.assign(starts.data(), starts.data() + nl + 1);
            if (im.starts[0] != 0 || im.starts[nl] != data.size())
                throw std::invalid_argument("lane starts must run from 0 to the data's length");
            for (size_t l = 0; l < nl; ++l)
                if (im.starts[l + 1] < im.starts[l]) throw std::invalid_argument("lane starts must not decrease");
            im.data = (const uint8_t*)data.c_str();
            U8Array lv = nb::cast<U8Array>(it[5], false);    // written in place: never a converted copy
            U8Planes y = nb::cast<U8Planes>(it[6], false);
            if (lv.shape(0) != (size_t)im.h || lv.shape(1) != (size_t)im.w || y.shape(0) != (size_t)t.n ||
                y.shape(1) != (size_t)im.h || y.shape(2) != (size_t)im.w)
                throw std::invalid_argument("output arrays do not match the grid");
            im.levels = lv.data(); im.y = y.data();
            im.color = !it[7].is_none();
            if (im.color) {
                U8Planes c = nb::cast<U8Planes>(it[7], false);
                if (c.shape(0) != (size_t)t.m || c.shape(1) != (size_t)im.h / 2 || c.shape(2) != (size_t)im.w / 2)
                    throw std::invalid_argument("CbCr output does not match the grid");
                im.c = c.data();
            }
            for (size_t l = 0; l < nl; ++l) work.emplace_back(i, (int)l);
        }
        {
            nb::gil_scoped_release release;
            parallel_for(work.size(), threads, [&](size_t j, LaneScratch& sc) {
                DecodeImage& im = ims[work[j].first];
                if (im.failed.load(std::memory_order_relaxed) >= 0) return;   // already corrupt
                decode_lane(t, im, work[j].second, sc);
            });
        }
        for (size_t i = 0; i < N; ++i)
            if (ims[i].failed >= 0)
                errors[i] = "corrupt lane " + std::to_string(ims[i].failed.load()) +
                            ": its rANS stream does not decode to its end";
        return errors;
    }

    int n() const { return t.n; }
    int levels() const { return t.L; }
    int m() const { return t.m; }

private:
    static void check_tile(int tile) {
        if (tile < 2 || tile > 4096 || (tile & 1)) throw std::invalid_argument("tile must be even, 2 .. 4096");
    }
    Tables t;
};

}  // namespace

void register_pixels(nb::module_& mod);   // native/pixels.cpp: engine/io/planes.py's conversions

NB_MODULE(rans_native, mod) {
    mod.doc() = "Bitstream v2 lanes: a static-context rANS coder (engine/lanes_reference.py is its spec); "
                "and engine/io/planes.py's pixel conversions (native/pixels.cpp)";
    register_pixels(mod);
    nb::class_<Coder>(mod, "Coder")
        .def(nb::init<int, int, int, nb::ndarray<const uint32_t, nb::c_contig, nb::device::cpu>,
                      nb::ndarray<const uint16_t, nb::c_contig, nb::device::cpu>,
                      nb::ndarray<const uint16_t, nb::c_contig, nb::device::cpu>>(),
             nb::arg("n"), nb::arg("levels"), nb::arg("m"), nb::arg("map"), nb::arg("y"), nb::arg("c"))
        .def("encode", &Coder::encode, nb::arg("items"), nb::arg("tile"), nb::arg("threads") = 1)
        .def("decode", &Coder::decode, nb::arg("items"), nb::arg("threads") = 1)
        .def_prop_ro("n", &Coder::n)
        .def_prop_ro("levels", &Coder::levels)
        .def_prop_ro("m", &Coder::m);
}
