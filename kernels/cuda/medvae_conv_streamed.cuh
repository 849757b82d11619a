// medvae_conv_streamed.cuh — the k and pixel cursors of the streamed implicit-GEMM
// convolutions, and their forward, data-gradient and weight-gradient problems, shared by
// conv_bf16.cu's mma.sync pipeline and conv_wgmma.cu's wgmma one (bf16 operands) and by
// conv_tf32.cu (f32 operands, TF32 tensor cores).
//
// A problem class, templated on the operand element E (mv_u16 holding bf16, or float), says
// where each 16-byte run of operands lives (eight bf16 or four f32; see medvae_igemm_bf16.cuh
// for the interface); channel counts are multiples of the run length, so a run never straddles
// a tap. Nothing here depends on the run length itself.
#pragma once
#include "medvae_common.cuh"
#include "medvae_conv.cuh"
#include "medvae_igemm_streamed.cuh"

// A GEMM k index over (tap, channel), k = tap * channels + c with c contiguous, kept as the
// tap's (kd, kh, kw) and c, and advanced without division.
struct KCursor {
    int tap, kd, kh, kw, c;
    __device__ void set(const ConvGeom& g, int k, int channels) {
        tap = k / channels;
        c = k - tap * channels;
        const ConvTap t = conv_tap(g, tap);
        kd = t.kd;
        kh = t.kh;
        kw = t.kw;
    }
    // k += by; true when the tap changed (what depends on the tap must then be refreshed).
    __device__ bool advance(const ConvGeom& g, int by, int channels) {
        c += by;
        if (c < channels) return false;
        do {
            c -= channels;
            ++tap;
            if (++kw == g.kw) {
                kw = 0;
                if (++kh == g.kh) {
                    kh = 0;
                    ++kd;
                }
            }
        } while (c >= channels);
        return true;
    }
};

// Bit t set where tap t = (kd, kh, kw) of a window whose tap (0, 0, 0) sits at input (d0, h0,
// w0) reads inside the input. The launchers send only kernels of at most 64 taps here.
__device__ __forceinline__ unsigned long long conv_taps_inside(const ConvGeom& g, int d0, int h0, int w0) {
    unsigned long long row = 0;  // the kw bits of one (kd, kh) row
    for (int kw = 0; kw < g.kw; ++kw)
        if ((unsigned)(w0 + kw) < (unsigned)g.iw) row |= 1ull << kw;
    unsigned long long mask = 0;
    int t = 0;
    for (int kd = 0; kd < g.kd; ++kd)
        for (int kh = 0; kh < g.kh; ++kh, t += g.kw)
            if ((unsigned)(d0 + kd) < (unsigned)g.id && (unsigned)(h0 + kh) < (unsigned)g.ih) mask |= row << t;
    return mask;
}

// The runs of one thread that gather an operand at the taps of some pixel's receptive field:
// the forward's x (each run an output pixel's field) and the strided data gradient's dy (each
// run the output pixels an input pixel meets). The runs share k = (tap, channel): one cursor
// and the offset of its tap from a run's origin, which the problem computes (`tap_offset`);
// each run keeps its origin and a mask of the taps it reads (none past the last row).
template <int R>
struct TapRuns {
    static constexpr int RUNS = R;
    KCursor t;
    int off;                          // tap_offset(t)
    mv_i64 origin[R];                 // element offset of run j's origin (may lie in the padding)
    unsigned long long taps_read[R];  // bit tap: run j reads there

    // Run j's address in `base`; false (zero fill) where it reads nothing at this tap.
    template <class E>
    __device__ bool src(const E* base, int taps, int j, const E*& p) const {
        const bool ok = (t.tap < taps) & (unsigned)((taps_read[j] >> (t.tap & 63)) & 1ull);
        p = base + (ok ? origin[j] + off : 0);
        return ok;
    }
    // Every run one k-tile (bk k-values over `channels` per tap) further.
    template <class TapOffset>
    __device__ void next(const ConvGeom& g, int bk, int channels, const TapOffset& tap_offset) {
        off += bk;
        if (t.advance(g, bk, channels)) off = tap_offset(t);
    }
};

// ------------------------------------------------------------------ forward problem
template <class E>
struct FwdProb {
    typedef E Elem;
    static constexpr bool A_KMAJOR = true, B_KMAJOR = false;
    ConvGeom g;
    const E* x;
    const E* w;
    const float* bias;
    float* y;
    float beta;
    int M, N, K, taps;

    // Elements from a receptive field's origin (tap (0, 0, 0), channel 0) to tap t's channel t.c.
    __device__ int tap_offset(const KCursor& t) const { return ((t.kd * g.ih + t.kh) * g.iw + t.kw) * g.cin + t.c; }

    // A runs: eight channels at one tap of an output pixel's receptive field (TapRuns: the
    // field's origin in x and the taps inside the input).
    template <int R>
    using AIt = TapRuns<R>;
    template <int R>
    __device__ void a_begin(AIt<R>& it, const int (&m)[R], const int (&k)[R]) const {
        it.t.set(g, k[0], g.cin);
        it.off = tap_offset(it.t);
#pragma unroll
        for (int j = 0; j < R; ++j) {
            const ConvWindow f = conv_window(g, m[j], M);
            it.origin[j] = (f.base + ((mv_i64)f.d0 * g.ih + f.h0) * g.iw + f.w0) * g.cin;
            it.taps_read[j] = f.base < 0 ? 0ull : conv_taps_inside(g, f.d0, f.h0, f.w0);
        }
    }
    template <int R>
    __device__ bool a_src(const AIt<R>& it, int j, const E*& src) const {
        return it.src(x, taps, j, src);
    }
    template <int R>
    __device__ void a_next(AIt<R>& it, int bk) const {
        it.next(g, bk, g.cin, [this](const KCursor& t) { return tap_offset(t); });
    }
    // B runs: w[k, n..n+7], the weights as a [K][N] matrix.
    template <int R>
    using BIt = MatrixRuns<false, R>;
    template <int R>
    __device__ void b_begin(BIt<R>& it, const int (&n)[R], const int (&k)[R]) const {
        it.begin(N, n, k);
    }
    template <int R>
    __device__ bool b_src(const BIt<R>& it, int j, const E*& src) const {
        return it.src(w, K, N, j, src);
    }
    template <int R>
    __device__ void b_next(BIt<R>& it, int bk) const {
        it.next(N, bk);
    }
    __device__ void store(int m, int n, float acc) const {
        mv_store_out(y + (mv_i64)m * N + n, acc, bias ? bias + n : nullptr, beta);
    }
    // The problem of y = conv(x, w) + bias + beta * y on geometry g (w as its B operand wants it).
    __device__ void bind(const ConvGeom& g_, const E* x_, const E* w_, const float* bias_, float* y_, float beta_) {
        g = g_;
        x = x_;
        w = w_;
        bias = bias_;
        y = y_;
        beta = beta_;
        M = g.n * g.od * g.oh * g.ow;
        N = g.cout;
        taps = g.kd * g.kh * g.kw;
        K = taps * g.cin;
    }
};

// ------------------------------------------------------------------ data-gradient problem
// dx[m, ci] = sum over (tap, co) of dy[out(m, tap), co] * w[tap, ci, co]: m = input pixel; the
// output pixel that input pixel m meets through a tap exists only where the strides divide.
// (The launchers send stride-1 data gradients through the forward problem instead.)
//
// Along one axis, input coordinate i (padded: ip = i + pad = q * s + r) meets tap k where
// k % s == r, at output q - k / s, which must lie in [0, O). So each run keeps the output offset
// of (q_d, q_h, q_w) and a mask of the taps that meet an output pixel, and the tap adds the
// offset -((kd / sd) * OH + kh / sh) * OW - kw / sw, the same for every run.
template <class E>
struct DgradProb {
    typedef E Elem;
    static constexpr bool A_KMAJOR = true, B_KMAJOR = true;
    ConvGeom g;
    const E* dy;
    const E* w;
    float* dx;
    float beta;
    int M, N, K, taps;  // M = input pixels, N = Cin, K = taps * Cout

    // Bit k of the taps along one axis that meet an output pixel from padded coordinate ip.
    __device__ static unsigned long long axis_hits(int ip, int s, int k_len, int o_len) {
        const int q = ip / s, r = ip - q * s;
        unsigned long long bits = 0;
        for (int k = r; k < k_len; k += s)
            if ((unsigned)(q - k / s) < (unsigned)o_len) bits |= 1ull << k;
        return bits;
    }
    // dy offset from a run's (q_d, q_h, q_w) to tap t's output pixel, channel t.c.
    __device__ int tap_offset(const KCursor& t) const {
        return -(((t.kd / g.sd) * g.oh + t.kh / g.sh) * g.ow + t.kw / g.sw) * g.cout + t.c;
    }

    // A runs: dy at the output pixel that input pixel m meets through the tap, channels
    // co..co+7 (TapRuns: the offset of (q_d, q_h, q_w) in dy and the taps that meet a pixel).
    template <int R>
    using AIt = TapRuns<R>;
    template <int R>
    __device__ void a_begin(AIt<R>& it, const int (&m)[R], const int (&k)[R]) const {
        it.t.set(g, k[0], g.cout);
        it.off = tap_offset(it.t);
#pragma unroll
        for (int j = 0; j < R; ++j) {
            it.origin[j] = 0;
            it.taps_read[j] = 0;
            if (m[j] >= M) continue;
            const ConvPixel i = conv_in_pixel(g, m[j]);
            const int dp = i.d + g.pd, hp = i.h + g.ph, wp = i.w + g.pw;
            it.origin[j] = ((((mv_i64)i.n * g.od + dp / g.sd) * g.oh + hp / g.sh) * g.ow + wp / g.sw) * g.cout;
            const unsigned long long hd = axis_hits(dp, g.sd, g.kd, g.od), hh = axis_hits(hp, g.sh, g.kh, g.oh),
                                     hw = axis_hits(wp, g.sw, g.kw, g.ow);
            int t = 0;
            for (int kd = 0; kd < g.kd; ++kd)
                for (int kh = 0; kh < g.kh; ++kh, t += g.kw)
                    if ((hd >> kd) & (hh >> kh) & 1ull) it.taps_read[j] |= hw << t;
        }
    }
    template <int R>
    __device__ bool a_src(const AIt<R>& it, int j, const E*& src) const {
        return it.src(dy, taps, j, src);
    }
    template <int R>
    __device__ void a_next(AIt<R>& it, int bk) const {
        it.next(g, bk, g.cout, [this](const KCursor& t) { return tap_offset(t); });
    }
    // B runs (k-major: column ci, k = (tap, co..co+7)): w[tap, ci, co..co+7]; the thread's runs
    // share k, each has its own ci.
    template <int R>
    struct BIt {
        static constexpr int RUNS = R;
        KCursor t;
        int off;     // t.tap * Cin * Cout + t.c
        int row[R];  // ci * Cout, or -1 past the last column
    };
    template <int R>
    __device__ void b_begin(BIt<R>& it, const int (&ci)[R], const int (&k)[R]) const {
        it.t.set(g, k[0], g.cout);
        it.off = it.t.tap * g.cin * g.cout + it.t.c;
#pragma unroll
        for (int j = 0; j < R; ++j) it.row[j] = ci[j] < N ? ci[j] * g.cout : -1;
    }
    template <int R>
    __device__ bool b_src(const BIt<R>& it, int j, const E*& src) const {
        const bool ok = (it.row[j] >= 0) & (it.t.tap < taps);
        src = ok ? w + (it.row[j] + it.off) : w;
        return ok;
    }
    template <int R>
    __device__ void b_next(BIt<R>& it, int bk) const {
        it.off += bk;
        if (it.t.advance(g, bk, g.cout)) it.off = it.t.tap * g.cin * g.cout + it.t.c;
    }
    __device__ void store(int m, int n, float acc) const {
        mv_store_out(dx + (mv_i64)m * N + n, acc, nullptr, beta);
    }
    // The problem of dx = conv^T(dy, w) + beta * dx on geometry g.
    __device__ void bind(const ConvGeom& g_, const E* dy_, const E* w_, float* dx_, float beta_) {
        g = g_;
        dy = dy_;
        w = w_;
        dx = dx_;
        beta = beta_;
        M = g.n * g.id * g.ih * g.iw;
        N = g.cin;
        taps = g.kd * g.kh * g.kw;
        K = taps * g.cout;
    }
};

// ------------------------------------------------------------------ weight-gradient problem
template <class E>
struct WgradProb {
    typedef E Elem;
    static constexpr bool A_KMAJOR = false, B_KMAJOR = false;
    ConvGeom g;
    const E* x;
    const E* dy;
    float* dw;
    int M, N, K;  // M = taps * Cin, N = Cout, K = output pixels

    // A runs: x at an output pixel's tap position, channels ci..ci+7 (rows r..r+7 = (tap, ci..)).
    // The thread's runs share their rows; each walks its own output pixel, whose stride-scaled
    // position (od * sd, oh * sh, ow * sw) it keeps as an offset in x, updated incrementally.
    template <int R>
    struct AIt {
        static constexpr int RUNS = R;
        bool row_ok;
        int dd, dh, dw_;  // the tap less the low padding: input = output * stride + this
        int off;          // x offset from a pixel's stride-scaled position to its tap and ci
        int p[R], od[R], oh[R], ow[R];
        mv_i64 origin[R];  // x offset of (n, od * sd, oh * sh, ow * sw), channel 0
    };
    __device__ mv_i64 scaled_origin(int n, int od, int oh, int ow) const {
        return ((((mv_i64)n * g.id + od * g.sd) * g.ih + oh * g.sh) * g.iw + ow * g.sw) * g.cin;
    }
    template <int R>
    __device__ void a_begin(AIt<R>& it, const int (&r)[R], const int (&p)[R]) const {
        it.row_ok = r[0] < M;
        KCursor t;
        t.set(g, it.row_ok ? r[0] : 0, g.cin);
        it.dd = t.kd - g.pd;
        it.dh = t.kh - g.ph;
        it.dw_ = t.kw - g.pw;
        it.off = ((it.dd * g.ih + it.dh) * g.iw + it.dw_) * g.cin + t.c;
#pragma unroll
        for (int j = 0; j < R; ++j) {
            const ConvPixel o = conv_out_pixel(g, p[j]);
            it.p[j] = p[j];
            it.od[j] = o.d;
            it.oh[j] = o.h;
            it.ow[j] = o.w;
            it.origin[j] = scaled_origin(o.n, o.d, o.h, o.w);
        }
    }
    template <int R>
    __device__ bool a_src(const AIt<R>& it, int j, const E*& src) const {
        // Bitwise &: every test is cheap, and branches around them cost more than they save.
        const bool ok = it.row_ok & (it.p[j] < K) & ((unsigned)(it.od[j] * g.sd + it.dd) < (unsigned)g.id) &
                        ((unsigned)(it.oh[j] * g.sh + it.dh) < (unsigned)g.ih) &
                        ((unsigned)(it.ow[j] * g.sw + it.dw_) < (unsigned)g.iw);
        src = x + (ok ? it.origin[j] + it.off : 0);
        return ok;
    }
    template <int R>
    __device__ void a_next(AIt<R>& it, int bk) const {
#pragma unroll
        for (int j = 0; j < R; ++j) {
            it.p[j] += bk;
            it.ow[j] += bk;
            it.origin[j] += (mv_i64)bk * g.sw * g.cin;
            while (it.ow[j] >= g.ow) {  // a few rounds at most: a k-tile is 32 or 64 pixels
                // Next output row: the origin moves by one stride of rows, back by the row's width.
                it.ow[j] -= g.ow;
                it.origin[j] += ((mv_i64)g.sh * g.iw - (mv_i64)g.ow * g.sw) * g.cin;
                if (++it.oh[j] == g.oh) {
                    it.oh[j] = 0;
                    it.origin[j] += ((mv_i64)g.sd * g.ih - (mv_i64)g.oh * g.sh) * g.iw * g.cin;
                    if (++it.od[j] == g.od) {
                        it.od[j] = 0;
                        it.origin[j] += ((mv_i64)g.id - (mv_i64)g.od * g.sd) * g.ih * g.iw * g.cin;
                    }
                }
            }
        }
    }
    // B runs: dy[p, n..n+7], the output gradient as a [pixels][Cout] matrix.
    template <int R>
    using BIt = MatrixRuns<false, R>;
    template <int R>
    __device__ void b_begin(BIt<R>& it, const int (&n)[R], const int (&p)[R]) const {
        it.begin(N, n, p);
    }
    template <int R>
    __device__ bool b_src(const BIt<R>& it, int j, const E*& src) const {
        return it.src(dy, K, N, j, src);
    }
    template <int R>
    __device__ void b_next(BIt<R>& it, int bk) const {
        it.next(N, bk);
    }
    __device__ void store(int m, int n, float acc) const { atomicAdd(dw + (mv_i64)m * N + n, acc); }
    __device__ void bind(const ConvGeom& g_, const E* x_, const E* dy_, float* dw_) {
        g = g_;
        x = x_;
        dy = dy_;
        dw = dw_;
        M = g.kd * g.kh * g.kw * g.cin;
        N = g.cout;
        K = g.n * g.od * g.oh * g.ow;
    }
};

typedef FwdProb<mv_u16> FwdProb16;
typedef DgradProb<mv_u16> DgradProb16;
typedef WgradProb<mv_u16> WgradProb16;
