// medvae_conv_bf16.cuh — the k and pixel cursors of the bf16 implicit-GEMM convolutions, and
// the forward and weight-gradient problems that conv_bf16.cu's mma.sync pipeline and
// conv_wgmma.cu's wgmma one share.
//
// A problem class says where each 16-byte run of eight bf16 operands lives (see
// medvae_igemm_bf16.cuh for the interface); channel counts are multiples of 8, so a run never
// straddles a tap.
#pragma once
#include "medvae_common.cuh"
#include "medvae_conv.cuh"

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
    // k += by (a run never straddles a tap: channels is a multiple of 8).
    __device__ void advance(const ConvGeom& g, int by, int channels) {
        c += by;
        while (c >= channels) {
            c -= channels;
            ++tap;
            if (++kw == g.kw) {
                kw = 0;
                if (++kh == g.kh) {
                    kh = 0;
                    ++kd;
                }
            }
        }
    }
};

// Output pixel counters: p = ((n * OD + od) * OH + oh) * OW + ow, advanced by k-tiles.
struct PixelCursor {
    int p, n, od, oh, ow;
    __device__ void set(const ConvGeom& g, int q) {
        const ConvPixel o = conv_out_pixel(g, q);
        p = q;
        n = o.n;
        od = o.d;
        oh = o.h;
        ow = o.w;
    }
    __device__ void advance(const ConvGeom& g, int by) {
        p += by;
        ow += by;
        while (ow >= g.ow) {  // a few rounds at most: a k-tile is 32 or 64 pixels
            ow -= g.ow;
            if (++oh == g.oh) {
                oh = 0;
                if (++od == g.od) {
                    od = 0;
                    ++n;
                }
            }
        }
    }
};

// ------------------------------------------------------------------ forward problem
struct FwdProb16 {
    static constexpr bool A_KMAJOR = true, B_KMAJOR = false;
    ConvGeom g;
    const mv_u16* x;
    const mv_u16* w;
    const float* bias;
    float* y;
    float beta;
    int M, N, K, taps;

    // A run: eight channels ci..ci+7 at one tap of output pixel m's receptive field.
    struct AIter : ConvWindow {  // of output pixel m
        KCursor t;                 // (tap, ci)
    };
    __device__ AIter a_iter(int m, int k) const {
        AIter r;
        static_cast<ConvWindow&>(r) = conv_window(g, m, M);
        r.t.set(g, k, g.cin);
        return r;
    }
    __device__ bool a_src(const AIter& r, const mv_u16*& src) const {
        src = x;
        const int d = r.d0 + r.t.kd, h = r.h0 + r.t.kh, w_ = r.w0 + r.t.kw;
        if (r.base < 0 || r.t.tap >= taps || !conv_inside(g, d, h, w_)) return false;
        src = x + (r.base + ((mv_i64)d * g.ih + h) * g.iw + w_) * g.cin + r.t.c;
        return true;
    }
    __device__ void a_next(AIter& r, int bk) const { r.t.advance(g, bk, g.cin); }
    // B run: w[k, n..n+7].
    struct BIter {
        int n, k;
    };
    __device__ BIter b_iter(int n, int k) const { return BIter{n, k}; }
    __device__ bool b_src(const BIter& r, const mv_u16*& src) const {
        src = w;
        if (r.k >= K || r.n >= N) return false;
        src = w + (mv_i64)r.k * N + r.n;
        return true;
    }
    __device__ void b_next(BIter& r, int bk) const { r.k += bk; }
    __device__ void store(int m, int n, float acc) const {
        mv_store_out(y + (mv_i64)m * N + n, acc, bias ? bias + n : nullptr, beta);
    }
    // The problem of y = conv(x, w) + bias + beta * y on geometry g (w as its B operand wants it).
    __device__ void bind(const ConvGeom& g_, const mv_u16* x_, const mv_u16* w_, const float* bias_, float* y_,
                         float beta_) {
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

// ------------------------------------------------------------------ weight-gradient problem
struct WgradProb16 {
    static constexpr bool A_KMAJOR = false, B_KMAJOR = false;
    ConvGeom g;
    const mv_u16* x;
    const mv_u16* dy;
    float* dw;
    int M, N, K;  // M = taps * Cin, N = Cout, K = output pixels

    // A run: x at output pixel p's tap position, channels ci..ci+7 (rows r..r+7 = (tap, ci..)).
    struct AIter {
        bool row_ok;
        KCursor t;  // (tap, ci) of the row, fixed
        PixelCursor p;
    };
    __device__ AIter a_iter(int r, int p) const {
        AIter it;
        it.row_ok = r < M;
        it.t.set(g, it.row_ok ? r : 0, g.cin);
        it.p.set(g, p);
        return it;
    }
    __device__ bool a_src(const AIter& it, const mv_u16*& src) const {
        src = x;
        if (!it.row_ok || it.p.p >= K) return false;
        const int d = it.p.od * g.sd - g.pd + it.t.kd, h = it.p.oh * g.sh - g.ph + it.t.kh,
                  w_ = it.p.ow * g.sw - g.pw + it.t.kw;
        if (!conv_inside(g, d, h, w_)) return false;
        src = x + ((((mv_i64)it.p.n * g.id + d) * g.ih + h) * g.iw + w_) * g.cin + it.t.c;
        return true;
    }
    __device__ void a_next(AIter& it, int bk) const { it.p.advance(g, bk); }
    // B run: dy[p, n..n+7].
    struct BIter {
        int n, p;
    };
    __device__ BIter b_iter(int n, int p) const { return BIter{n, p}; }
    __device__ bool b_src(const BIter& r, const mv_u16*& src) const {
        src = dy;
        if (r.p >= K || r.n >= N) return false;
        src = dy + (mv_i64)r.p * N + r.n;
        return true;
    }
    __device__ void b_next(BIter& r, int bk) const { r.p += bk; }
    __device__ void store(int m, int n, float acc) const { atomicAdd(dw + (mv_i64)m * N + n, acc); }
    __device__ void bind(const ConvGeom& g_, const mv_u16* x_, const mv_u16* dy_, float* dw_) {
        g = g_;
        x = x_;
        dy = dy_;
        dw = dw_;
        M = g.kd * g.kh * g.kw * g.cin;
        N = g.cout;
        K = g.n * g.od * g.oh * g.ow;
    }
};
