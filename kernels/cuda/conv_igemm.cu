// conv_igemm.cu — implicit-GEMM convolution (2D and 3D) on tensor cores.
//
// Three GEMMs, none materialising im2col (channels-last, weights [kd,kh,kw,Cin,Cout]):
//   forward   y[m, co]   = sum_k  X[m, k]      * W[k, co]          m = output pixel, k = (tap, ci)
//   dgrad     dx[m, ci]  = sum_k  dY[m, k]     * W^T[k, ci]        m = input pixel,  k = (tap, co)
//   wgrad     dw[r, co] += sum_p  X^T[r, p]    * dY[p, co]         r = (tap, ci),    p = output pixel
// Each is a problem class for the shared tensor-core main loop of medvae_igemm.cuh (TF32 or BF16
// inputs, f32 accumulation).
//
// Epilogues: forward y = acc + bias[co] (bias may be null) + beta * y_old (y_old not read when
// beta == 0); dgrad dx = acc + beta * dx_old; wgrad atomically adds into dw (gradient
// accumulation), with the reduction over output pixels split across gridDim.z.
//
// Launch: grid (ceil(M/BM), ceil(N/BN), splits), block = 32 * WARPS_M * WARPS_N threads, no
// dynamic shared memory. Entry points: conv_{fwd,dgrad,wgrad}_{tf32,bf16}_{128x128,64x64};
// 128x128 runs 256 threads, 64x64 runs 128.
#include "medvae_conv.cuh"
#include "medvae_igemm.cuh"


// k = (tap, c) decoded for up to four consecutive k (only [0] when the run is vectorised).
struct KDec {
    int c[4];
    ConvTap tap[4];
    bool ok[4];
};
__device__ __forceinline__ KDec decode_k(const ConvGeom& g, int k, int K, int cdiv, bool vec) {
    KDec d;
    const int cnt = vec ? 1 : 4;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        if (i < cnt) {
            const int kk = k + i;
            d.ok[i] = kk < K;
            const int t = kk / cdiv;
            d.c[i] = kk - t * cdiv;
            d.tap[i] = conv_tap(g, t);
        }
    }
    return d;
}

// ------------------------------------------------------------------ forward problem
struct FwdProb {
    static constexpr bool A_KMAJOR = true, B_KMAJOR = false;
    ConvGeom g;
    const float* x;
    const float* w;
    const float* bias;
    float* y;
    float beta;
    int M, N, K;
    bool vec_a, vec_b;

    typedef ConvWindow AFix;
    typedef KDec AMov;
    typedef int BFix;
    typedef int BMov;

    __device__ AFix a_fix(int m) const { return conv_window(g, m, M); }
    __device__ AMov a_mov(int k) const { return decode_k(g, k, K, g.cin, vec_a); }
    __device__ void fetch_a(const AFix& r, const AMov& kd, float v[4]) const {
        zero4(v);
        if (r.base < 0) return;
        if (vec_a) {
            const int d = r.d0 + kd.tap[0].kd, h = r.h0 + kd.tap[0].kh, w_ = r.w0 + kd.tap[0].kw;
            if (kd.ok[0] && conv_inside(g, d, h, w_))
                load4(x + ((r.base + ((mv_i64)d * g.ih + h) * g.iw + w_) * g.cin + kd.c[0]), v);
        } else {
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                const int d = r.d0 + kd.tap[i].kd, h = r.h0 + kd.tap[i].kh, w_ = r.w0 + kd.tap[i].kw;
                if (kd.ok[i] && conv_inside(g, d, h, w_))
                    v[i] = x[(r.base + ((mv_i64)d * g.ih + h) * g.iw + w_) * g.cin + kd.c[i]];
            }
        }
    }
    __device__ BFix b_fix(int n) const { return n; }
    __device__ BMov b_mov(int k) const { return k; }
    // B[k][n..n+3] = w[k, n..n+3]
    __device__ void fetch_b(const BFix& n, const BMov& k, float v[4]) const {
        zero4(v);
        if (k >= K) return;
        const float* p = w + (mv_i64)k * N + n;
        if (vec_b) {
            if (n < N) load4(p, v);
        } else {
#pragma unroll
            for (int i = 0; i < 4; ++i)
                if (n + i < N) v[i] = p[i];
        }
    }
    __device__ void store(int m, int n, float acc) const {
        mv_store_out(y + (mv_i64)m * N + n, acc, bias ? bias + n : nullptr, beta);
    }
};

// ------------------------------------------------------------------ data-gradient problem
struct DgradProb {
    static constexpr bool A_KMAJOR = true, B_KMAJOR = true;
    ConvGeom g;
    const float* dy;
    const float* w;
    float* dx;
    float beta;
    int M, N, K;  // M = input pixels, N = Cin, K = taps * Cout
    bool vec_a, vec_b;

    struct AFix {
        mv_i64 obase;  // n * OD*OH*OW, or -1
        int dp, hp, wp;  // input coordinate + pad_lo
    };
    typedef KDec AMov;
    typedef int BFix;
    typedef KDec BMov;

    __device__ AFix a_fix(int m) const {
        AFix r;
        r.dp = r.hp = r.wp = 0;
        r.obase = -1;
        if (m < M) {
            const ConvPixel i = conv_in_pixel(g, m);
            r.obase = (mv_i64)i.n * g.od * g.oh * g.ow;
            r.dp = i.d + g.pd;
            r.hp = i.h + g.ph;
            r.wp = i.w + g.pw;
        }
        return r;
    }
    __device__ AMov a_mov(int k) const { return decode_k(g, k, K, g.cout, vec_a); }
    // Output pixel that input pixel (dp-pad) meets through tap `t`, or false if none.
    __device__ __forceinline__ bool out_pos(const AFix& r, const ConvTap& t, mv_i64& off) const {
        return conv_out_of_in(g, r.obase, r.dp, r.hp, r.wp, t.kd, t.kh, t.kw, off);
    }
    __device__ void fetch_a(const AFix& r, const AMov& kd, float v[4]) const {
        zero4(v);
        if (r.obase < 0) return;
        mv_i64 off;
        if (vec_a) {
            if (kd.ok[0] && out_pos(r, kd.tap[0], off)) load4(dy + off * g.cout + kd.c[0], v);
        } else {
#pragma unroll
            for (int i = 0; i < 4; ++i)
                if (kd.ok[i] && out_pos(r, kd.tap[i], off)) v[i] = dy[off * g.cout + kd.c[i]];
        }
    }
    __device__ BFix b_fix(int ci) const { return ci; }
    __device__ BMov b_mov(int k) const { return decode_k(g, k, K, g.cout, vec_b); }
    // B[k..k+3][ci] = w[tap, ci, co..co+3]
    __device__ void fetch_b(const BFix& ci, const BMov& kd, float v[4]) const {
        zero4(v);
        if (ci >= N) return;
        if (vec_b) {
            if (kd.ok[0]) {
                const int tap = (kd.tap[0].kd * g.kh + kd.tap[0].kh) * g.kw + kd.tap[0].kw;
                load4(w + ((mv_i64)tap * g.cin + ci) * g.cout + kd.c[0], v);
            }
        } else {
#pragma unroll
            for (int i = 0; i < 4; ++i)
                if (kd.ok[i]) {
                    const int tap = (kd.tap[i].kd * g.kh + kd.tap[i].kh) * g.kw + kd.tap[i].kw;
                    v[i] = w[((mv_i64)tap * g.cin + ci) * g.cout + kd.c[i]];
                }
        }
    }
    __device__ void store(int m, int n, float acc) const {
        mv_store_out(dx + (mv_i64)m * N + n, acc, nullptr, beta);
    }
};

// ------------------------------------------------------------------ weight-gradient problem
struct WgradProb {
    static constexpr bool A_KMAJOR = false, B_KMAJOR = false;
    ConvGeom g;
    const float* x;
    const float* dy;
    float* dw;
    int M, N, K;  // M = taps * Cin, N = Cout, K = output pixels
    bool vec_a, vec_b;

    typedef KDec AFix;  // rows r..r+3 = (tap, ci)
    typedef ConvWindow AMov;  // of output pixel p
    typedef int BFix;
    typedef int BMov;

    __device__ AFix a_fix(int r) const { return decode_k(g, r, M, g.cin, vec_a); }
    __device__ AMov a_mov(int p) const { return conv_window(g, p, K); }
    // A[r..r+3][p] = x[n(p), pos(p, tap), ci..ci+3]
    __device__ void fetch_a(const AFix& kd, const AMov& r, float v[4]) const {
        zero4(v);
        if (r.base < 0) return;
        if (vec_a) {
            const int d = r.d0 + kd.tap[0].kd, h = r.h0 + kd.tap[0].kh, w_ = r.w0 + kd.tap[0].kw;
            if (kd.ok[0] && conv_inside(g, d, h, w_))
                load4(x + ((r.base + ((mv_i64)d * g.ih + h) * g.iw + w_) * g.cin + kd.c[0]), v);
        } else {
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                const int d = r.d0 + kd.tap[i].kd, h = r.h0 + kd.tap[i].kh, w_ = r.w0 + kd.tap[i].kw;
                if (kd.ok[i] && conv_inside(g, d, h, w_))
                    v[i] = x[(r.base + ((mv_i64)d * g.ih + h) * g.iw + w_) * g.cin + kd.c[i]];
            }
        }
    }
    __device__ BFix b_fix(int n) const { return n; }
    __device__ BMov b_mov(int p) const { return p; }
    __device__ void fetch_b(const BFix& n, const BMov& p, float v[4]) const {
        zero4(v);
        if (p >= K) return;
        const float* q = dy + (mv_i64)p * N + n;
        if (vec_b) {
            if (n < N) load4(q, v);
        } else {
#pragma unroll
            for (int i = 0; i < 4; ++i)
                if (n + i < N) v[i] = q[i];
        }
    }
    __device__ void store(int m, int n, float acc) const { atomicAdd(dw + (mv_i64)m * N + n, acc); }
};

template <int PREC, int BM, int BN, int WM, int WN>
__device__ __forceinline__ void conv_fwd_impl(ConvGeom g, const float* x, const float* w, const float* bias,
                                              float* y, float beta) {
    FwdProb pb;
    pb.g = g;
    pb.x = x;
    pb.w = w;
    pb.bias = bias;
    pb.y = y;
    pb.beta = beta;
    pb.M = g.n * g.od * g.oh * g.ow;
    pb.N = g.cout;
    pb.K = g.kd * g.kh * g.kw * g.cin;
    pb.vec_a = (g.cin % 4 == 0) && aligned16(x);
    pb.vec_b = (g.cout % 4 == 0) && aligned16(w);
    const int kt = (pb.K + IgemmPrec<PREC>::BK - 1) / IgemmPrec<PREC>::BK;
    igemm_run<PREC, BM, BN, WM, WN>(pb, 0, kt);
}

template <int PREC, int BM, int BN, int WM, int WN>
__device__ __forceinline__ void conv_dgrad_impl(ConvGeom g, const float* dy, const float* w, float* dx,
                                                float beta) {
    DgradProb pb;
    pb.g = g;
    pb.dy = dy;
    pb.w = w;
    pb.dx = dx;
    pb.beta = beta;
    pb.M = g.n * g.id * g.ih * g.iw;
    pb.N = g.cin;
    pb.K = g.kd * g.kh * g.kw * g.cout;
    pb.vec_a = (g.cout % 4 == 0) && aligned16(dy);
    pb.vec_b = (g.cout % 4 == 0) && aligned16(w);
    const int kt = (pb.K + IgemmPrec<PREC>::BK - 1) / IgemmPrec<PREC>::BK;
    igemm_run<PREC, BM, BN, WM, WN>(pb, 0, kt);
}

// `tiles_per_split`: k-tiles (of output pixels) handled by each blockIdx.z.
template <int PREC, int BM, int BN, int WM, int WN>
__device__ __forceinline__ void conv_wgrad_impl(ConvGeom g, const float* x, const float* dy, float* dw,
                                                int tiles_per_split) {
    WgradProb pb;
    pb.g = g;
    pb.x = x;
    pb.dy = dy;
    pb.dw = dw;
    pb.M = g.kd * g.kh * g.kw * g.cin;
    pb.N = g.cout;
    pb.K = g.n * g.od * g.oh * g.ow;
    pb.vec_a = (g.cin % 4 == 0) && aligned16(x);
    pb.vec_b = (g.cout % 4 == 0) && aligned16(dy);
    const KSplit ks = k_split(pb.K, IgemmPrec<PREC>::BK, tiles_per_split);
    if (ks.begin >= ks.end) return;  // uniform for the whole block
    igemm_run<PREC, BM, BN, WM, WN>(pb, ks.begin, ks.end);
}

// ------------------------------------------------------------------ entry points
// (written out, not macro-generated, so that the Rust registry can be checked against them)
extern "C" __global__ void __launch_bounds__(256)
    conv_fwd_tf32_128x128(ConvGeom g, const float* x, const float* w, const float* bias, float* y, float beta) {
    conv_fwd_impl<MV_PREC_TF32, 128, 128, 2, 4>(g, x, w, bias, y, beta);
}
extern "C" __global__ void __launch_bounds__(128)
    conv_fwd_tf32_64x64(ConvGeom g, const float* x, const float* w, const float* bias, float* y, float beta) {
    conv_fwd_impl<MV_PREC_TF32, 64, 64, 2, 2>(g, x, w, bias, y, beta);
}
extern "C" __global__ void __launch_bounds__(256)
    conv_fwd_bf16_128x128(ConvGeom g, const float* x, const float* w, const float* bias, float* y, float beta) {
    conv_fwd_impl<MV_PREC_BF16, 128, 128, 2, 4>(g, x, w, bias, y, beta);
}
extern "C" __global__ void __launch_bounds__(128)
    conv_fwd_bf16_64x64(ConvGeom g, const float* x, const float* w, const float* bias, float* y, float beta) {
    conv_fwd_impl<MV_PREC_BF16, 64, 64, 2, 2>(g, x, w, bias, y, beta);
}
extern "C" __global__ void __launch_bounds__(256)
    conv_dgrad_tf32_128x128(ConvGeom g, const float* dy, const float* w, float* dx, float beta) {
    conv_dgrad_impl<MV_PREC_TF32, 128, 128, 2, 4>(g, dy, w, dx, beta);
}
extern "C" __global__ void __launch_bounds__(128)
    conv_dgrad_tf32_64x64(ConvGeom g, const float* dy, const float* w, float* dx, float beta) {
    conv_dgrad_impl<MV_PREC_TF32, 64, 64, 2, 2>(g, dy, w, dx, beta);
}
extern "C" __global__ void __launch_bounds__(256)
    conv_dgrad_bf16_128x128(ConvGeom g, const float* dy, const float* w, float* dx, float beta) {
    conv_dgrad_impl<MV_PREC_BF16, 128, 128, 2, 4>(g, dy, w, dx, beta);
}
extern "C" __global__ void __launch_bounds__(128)
    conv_dgrad_bf16_64x64(ConvGeom g, const float* dy, const float* w, float* dx, float beta) {
    conv_dgrad_impl<MV_PREC_BF16, 64, 64, 2, 2>(g, dy, w, dx, beta);
}
extern "C" __global__ void __launch_bounds__(256)
    conv_wgrad_tf32_128x128(ConvGeom g, const float* x, const float* dy, float* dw, int tiles_per_split) {
    conv_wgrad_impl<MV_PREC_TF32, 128, 128, 2, 4>(g, x, dy, dw, tiles_per_split);
}
extern "C" __global__ void __launch_bounds__(128)
    conv_wgrad_tf32_64x64(ConvGeom g, const float* x, const float* dy, float* dw, int tiles_per_split) {
    conv_wgrad_impl<MV_PREC_TF32, 64, 64, 2, 2>(g, x, dy, dw, tiles_per_split);
}
extern "C" __global__ void __launch_bounds__(256)
    conv_wgrad_bf16_128x128(ConvGeom g, const float* x, const float* dy, float* dw, int tiles_per_split) {
    conv_wgrad_impl<MV_PREC_BF16, 128, 128, 2, 4>(g, x, dy, dw, tiles_per_split);
}
extern "C" __global__ void __launch_bounds__(128)
    conv_wgrad_bf16_64x64(ConvGeom g, const float* x, const float* dy, float* dw, int tiles_per_split) {
    conv_wgrad_impl<MV_PREC_BF16, 64, 64, 2, 2>(g, x, dy, dw, tiles_per_split);
}
