// Pixels <-> padded YCbCr planes on the CPU, in one pass each, with exactly the values
// of engine/io/planes.py's torch ops (engine/io/planes.py says when this path runs).
//
// torch computes the colour matrix (engine/io/color.py, an einsum over the 3 channels) as
// a chain of fused multiply-adds in channel order: t = m0*x0; t = fma(m1, x1, t);
// t = fma(m2, x2, t).  This file does the same with the same float32 inputs, handed in
// from Python (the 256 values of u8 / 255, the matrix, the offsets), so that nothing
// here decides a rounding of its own.  tests/test_pixels.py checks the forward
// conversion on all 2^24 colours and the inverse on random and edge values.
//
// Why: torch's element-wise ops run on its intra-op thread pool, and on a busy 2-core
// machine those threads wait for each other; the conversions then cost as much as a
// bf16 network (issue #25).  Here one thread does a 768x512 image in about a millisecond.

#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <thread>
#include <vector>

namespace nb = nanobind;

namespace {

using U8Image = nb::ndarray<const uint8_t, nb::ndim<3>, nb::c_contig, nb::device::cpu>;
using U8ImageOut = nb::ndarray<uint8_t, nb::ndim<3>, nb::c_contig, nb::device::cpu>;
using F32Planes = nb::ndarray<const float, nb::ndim<3>, nb::c_contig, nb::device::cpu>;
using F32PlanesOut = nb::ndarray<float, nb::ndim<3>, nb::c_contig, nb::device::cpu>;
using F32Vec = nb::ndarray<const float, nb::ndim<1>, nb::c_contig, nb::device::cpu>;

struct Params {
    float m[9];
    float off[3];
    float lut[256];
};

// The same loops twice: compiled for FMA hardware (selected at run time), and plain,
// where std::fma is the C library's (exact too, only slower).
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define HNLC_HAVE_FMA_TARGET 1
#define HNLC_FMA_TARGET __attribute__((target("fma,sse4.1")))
#else
#define HNLC_FMA_TARGET
#endif

#define HNLC_FORWARD_BODY                                                                        \
    for (size_t y = r0; y < r1; ++y) {                                                           \
        const uint8_t* s = src + y * w * 3;                                                      \
        float* d0 = dst + y * W;                                                                 \
        float* d1 = d0 + plane;                                                                  \
        float* d2 = d1 + plane;                                                                  \
        for (size_t x = 0; x < w; ++x) {                                                         \
            const float r = p.lut[s[3 * x]], g = p.lut[s[3 * x + 1]], b = p.lut[s[3 * x + 2]];   \
            d0[x] = std::fma(p.m[2], b, std::fma(p.m[1], g, p.m[0] * r)) + p.off[0];             \
            d1[x] = std::fma(p.m[5], b, std::fma(p.m[4], g, p.m[3] * r)) + p.off[1];             \
            d2[x] = std::fma(p.m[8], b, std::fma(p.m[7], g, p.m[6] * r)) + p.off[2];             \
        }                                                                                        \
        for (size_t x = w; x < W; ++x) { d0[x] = d0[w - 1]; d1[x] = d1[w - 1]; d2[x] = d2[w - 1]; } \
    }

#define HNLC_INVERSE_BODY                                                                        \
    for (size_t y = r0; y < r1; ++y) {                                                           \
        const float* s0 = src + y * W;                                                           \
        const float* s1 = s0 + plane;                                                            \
        const float* s2 = s1 + plane;                                                            \
        uint8_t* d = dst + y * w * 3;                                                            \
        for (size_t x = 0; x < w; ++x) {                                                         \
            const float a = s0[x] - p.off[0];                                                    \
            const float b = gray ? 0.0f : s1[x] - p.off[1];                                      \
            const float c = gray ? 0.0f : s2[x] - p.off[2];                                      \
            d[3 * x] = to_u8(std::fma(p.m[2], c, std::fma(p.m[1], b, p.m[0] * a)));              \
            d[3 * x + 1] = to_u8(std::fma(p.m[5], c, std::fma(p.m[4], b, p.m[3] * a)));          \
            d[3 * x + 2] = to_u8(std::fma(p.m[8], c, std::fma(p.m[7], b, p.m[6] * a)));          \
        }                                                                                        \
    }

// torch's clamp(0, 1).mul(255).round().to(uint8): round half to even; NaN -> 0.
#define HNLC_TO_U8                                                                               \
    v = std::nearbyint(std::min(std::max(v, 0.0f), 1.0f) * 255.0f);                              \
    return v == v ? (uint8_t)v : 0;

HNLC_FMA_TARGET inline uint8_t to_u8_fma(float v) { HNLC_TO_U8 }
inline uint8_t to_u8_plain(float v) { HNLC_TO_U8 }

HNLC_FMA_TARGET void forward_fma(const Params& p, const uint8_t* src, float* dst, size_t w, size_t W,
                                 size_t plane, size_t r0, size_t r1) {
    HNLC_FORWARD_BODY
}
void forward_plain(const Params& p, const uint8_t* src, float* dst, size_t w, size_t W, size_t plane,
                   size_t r0, size_t r1) {
    HNLC_FORWARD_BODY
}
template <bool gray>
HNLC_FMA_TARGET void inverse_fma(const Params& p, const float* src, uint8_t* dst, size_t w, size_t W,
                                 size_t plane, size_t r0, size_t r1) {
    auto to_u8 = to_u8_fma;
    HNLC_INVERSE_BODY
}
template <bool gray>
void inverse_plain(const Params& p, const float* src, uint8_t* dst, size_t w, size_t W, size_t plane,
                   size_t r0, size_t r1) {
    auto to_u8 = to_u8_plain;
    HNLC_INVERSE_BODY
}

bool has_fma() {
#if defined(HNLC_HAVE_FMA_TARGET)
    static const bool yes = __builtin_cpu_supports("fma") && __builtin_cpu_supports("sse4.1");
    return yes;
#else
    return false;
#endif
}

Params params(const F32Vec& mat, const F32Vec& off, const F32Vec* lut) {
    if (mat.shape(0) != 9 || off.shape(0) != 3) throw std::invalid_argument("mat must have 9 values, off 3");
    Params p{};
    std::copy(mat.data(), mat.data() + 9, p.m);
    std::copy(off.data(), off.data() + 3, p.off);
    if (lut) {
        if (lut->shape(0) != 256) throw std::invalid_argument("lut must have 256 values");
        std::copy(lut->data(), lut->data() + 256, p.lut);
    }
    return p;
}

template <class F>
void rows(size_t h, int threads, F&& fn) {
    const size_t k = (size_t)std::max(1, std::min<int>(threads, (int)std::max<size_t>(1, h / 64)));
    if (k <= 1) { fn(0, h); return; }
    std::vector<std::thread> pool;
    for (size_t t = 0; t < k; ++t) pool.emplace_back([&, t] { fn(h * t / k, h * (t + 1) / k); });
    for (auto& th : pool) th.join();
}

// src (h, w, 3) uint8 -> dst (3, H, W) float32, the last column and row replicated.
void rgb_to_planes(U8Image src, F32PlanesOut dst, F32Vec lut, F32Vec mat, F32Vec off, int threads) {
    const size_t h = src.shape(0), w = src.shape(1), H = dst.shape(1), W = dst.shape(2);
    if (src.shape(2) != 3 || dst.shape(0) != 3 || H < h || W < w || h == 0 || w == 0)
        throw std::invalid_argument("rgb_to_planes: src (h, w, 3), dst (3, H >= h, W >= w)");
    const Params p = params(mat, off, &lut);
    const uint8_t* s = src.data();
    float* d = dst.data();
    const size_t plane = H * W;
    {
        nb::gil_scoped_release release;
        rows(h, threads, [&](size_t r0, size_t r1) {
            if (has_fma()) forward_fma(p, s, d, w, W, plane, r0, r1);
            else forward_plain(p, s, d, w, W, plane, r0, r1);
        });
        for (size_t c = 0; c < 3; ++c)
            for (size_t y = h; y < H; ++y)
                std::copy(d + c * plane + (h - 1) * W, d + c * plane + h * W, d + c * plane + y * W);
    }
}

// src (3, H, W) float32 YCbCr -> dst (h, w, 3) uint8 RGB: cropped, clamped to [0, 1],
// times 255, rounded half to even.  gray: Cb = Cr = 0.5.
void planes_to_rgb(F32Planes src, U8ImageOut dst, F32Vec mat, F32Vec off, bool gray, int threads) {
    const size_t H = src.shape(1), W = src.shape(2), h = dst.shape(0), w = dst.shape(1);
    if (src.shape(0) != 3 || dst.shape(2) != 3 || H < h || W < w)
        throw std::invalid_argument("planes_to_rgb: src (3, H, W), dst (h <= H, w <= W, 3)");
    const Params p = params(mat, off, nullptr);
    const float* s = src.data();
    uint8_t* d = dst.data();
    const size_t plane = H * W;
    {
        nb::gil_scoped_release release;
        rows(h, threads, [&](size_t r0, size_t r1) {
            if (has_fma()) (gray ? inverse_fma<true> : inverse_fma<false>)(p, s, d, w, W, plane, r0, r1);
            else (gray ? inverse_plain<true> : inverse_plain<false>)(p, s, d, w, W, plane, r0, r1);
        });
    }
}

}  // namespace

void register_pixels(nb::module_& mod) {
    mod.def("rgb_to_planes", &rgb_to_planes, nb::arg("src"), nb::arg("dst"), nb::arg("lut"), nb::arg("mat"),
            nb::arg("off"), nb::arg("threads") = 1,
            "(h, w, 3) uint8 RGB -> (3, H, W) float32 YCbCr planes, replicate-padded (engine/io/planes.py)");
    mod.def("planes_to_rgb", &planes_to_rgb, nb::arg("src"), nb::arg("dst"), nb::arg("mat"), nb::arg("off"),
            nb::arg("gray") = false, nb::arg("threads") = 1,
            "(3, H, W) float32 YCbCr planes -> (h, w, 3) uint8 RGB, cropped, clamped, rounded (engine/io/planes.py)");
}
