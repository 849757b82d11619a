// conv_igemm.cu — implicit-GEMM convolution (2D and 3D) on tensor cores.
//
// Three GEMMs, none materialising im2col (channels-last, weights [kd,kh,kw,Cin,Cout]):
//   forward   y[m, co]   = sum_k  X[m, k]      * W[k, co]          m = output pixel, k = (tap, ci)
//   dgrad     dx[m, ci]  = sum_k  dY[m, k]     * W^T[k, ci]        m = input pixel,  k = (tap, co)
//   wgrad     dw[r, co] += sum_p  X^T[r, p]    * dY[p, co]         r = (tap, ci),    p = output pixel
// Operands are read from global f32, rounded to TF32 (mma m16n8k8) or BF16 (mma m16n8k16) while
// being staged into shared memory, and accumulated in f32. Each k-tile is loaded into registers
// while the previous one feeds the tensor cores (double-buffered shared memory, one barrier per
// k-tile). Operand tiles keep the orientation in which they are contiguous in global memory
// ("k-major" [rows][k] or "row-major" [k][rows]) so that staging stores are conflict-free; the
// fragment loaders read either orientation.
//
// Epilogues: forward y = acc + bias[co] (bias may be null) + beta * y_old (y_old not read when
// beta == 0); dgrad dx = acc + beta * dx_old; wgrad atomically adds into dw (gradient
// accumulation), with the reduction over output pixels split across gridDim.z.
//
// Launch: grid (ceil(M/BM), ceil(N/BN), splits), block = 32 * WARPS_M * WARPS_N threads, no
// dynamic shared memory. Entry points: conv_{fwd,dgrad,wgrad}_{tf32,bf16}_{128x128,64x64};
// 128x128 runs 256 threads, 64x64 runs 128.
#include "medvae_conv.cuh"

#define MV_PREC_TF32 0
#define MV_PREC_BF16 1

template <int PREC>
struct IgemmPrec;
template <>
struct IgemmPrec<MV_PREC_TF32> {
    typedef float elem;
    static constexpr int BK = 16, KSTEP = 8, PAD_K = 4, PAD_R = 8;
};
template <>
struct IgemmPrec<MV_PREC_BF16> {
    typedef mv_u16 elem;
    static constexpr int BK = 32, KSTEP = 16, PAD_K = 8, PAD_R = 8;
};

__device__ __forceinline__ void zero4(float v[4]) { v[0] = v[1] = v[2] = v[3] = 0.0f; }
__device__ __forceinline__ void load4(const float* p, float v[4]) {
    const float4 q = *reinterpret_cast<const float4*>(p);
    v[0] = q.x;
    v[1] = q.y;
    v[2] = q.z;
    v[3] = q.w;
}
__device__ __forceinline__ bool inside(int d, int h, int w, int D, int H, int W) {
    return d >= 0 && d < D && h >= 0 && h < H && w >= 0 && w < W;
}

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

    struct AFix {
        mv_i64 base;  // n * ID*IH*IW, or -1 past the last row
        int d0, h0, w0;
    };
    typedef KDec AMov;
    typedef int BFix;
    typedef int BMov;

    __device__ AFix a_fix(int m) const {
        AFix r;
        r.d0 = r.h0 = r.w0 = 0;
        r.base = -1;
        if (m < M) {
            int t = m;
            const int ow = t % g.ow;
            t /= g.ow;
            const int oh = t % g.oh;
            t /= g.oh;
            const int od = t % g.od;
            const int n = t / g.od;
            r.base = (mv_i64)n * g.id * g.ih * g.iw;
            r.d0 = od * g.sd - g.pd;
            r.h0 = oh * g.sh - g.ph;
            r.w0 = ow * g.sw - g.pw;
        }
        return r;
    }
    __device__ AMov a_mov(int k) const { return decode_k(g, k, K, g.cin, vec_a); }
    __device__ void fetch_a(const AFix& r, const AMov& kd, float v[4]) const {
        zero4(v);
        if (r.base < 0) return;
        if (vec_a) {
            const int d = r.d0 + kd.tap[0].kd, h = r.h0 + kd.tap[0].kh, w_ = r.w0 + kd.tap[0].kw;
            if (kd.ok[0] && inside(d, h, w_, g.id, g.ih, g.iw))
                load4(x + ((r.base + ((mv_i64)d * g.ih + h) * g.iw + w_) * g.cin + kd.c[0]), v);
        } else {
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                const int d = r.d0 + kd.tap[i].kd, h = r.h0 + kd.tap[i].kh, w_ = r.w0 + kd.tap[i].kw;
                if (kd.ok[i] && inside(d, h, w_, g.id, g.ih, g.iw))
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
        float* p = y + (mv_i64)m * N + n;
        float r = acc;
        if (bias) r += bias[n];
        if (beta != 0.0f) r += beta * *p;
        *p = r;
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
            int t = m;
            const int iw = t % g.iw;
            t /= g.iw;
            const int ih = t % g.ih;
            t /= g.ih;
            const int id = t % g.id;
            const int n = t / g.id;
            r.obase = (mv_i64)n * g.od * g.oh * g.ow;
            r.dp = id + g.pd;
            r.hp = ih + g.ph;
            r.wp = iw + g.pw;
        }
        return r;
    }
    __device__ AMov a_mov(int k) const { return decode_k(g, k, K, g.cout, vec_a); }
    // Output pixel that input pixel (dp-pad) meets through tap `t`, or false if none.
    __device__ __forceinline__ bool out_pos(const AFix& r, const ConvTap& t, mv_i64& off) const {
        const int dd = r.dp - t.kd, hh = r.hp - t.kh, ww = r.wp - t.kw;
        if (dd < 0 || hh < 0 || ww < 0) return false;
        if (dd % g.sd || hh % g.sh || ww % g.sw) return false;
        const int od = dd / g.sd, oh = hh / g.sh, ow = ww / g.sw;
        if (od >= g.od || oh >= g.oh || ow >= g.ow) return false;
        off = r.obase + ((mv_i64)od * g.oh + oh) * g.ow + ow;
        return true;
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
        float* p = dx + (mv_i64)m * N + n;
        float r = acc;
        if (beta != 0.0f) r += beta * *p;
        *p = r;
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
    struct AMov {
        mv_i64 base;  // n * ID*IH*IW, or -1
        int d0, h0, w0;
    };
    typedef int BFix;
    typedef int BMov;

    __device__ AFix a_fix(int r) const { return decode_k(g, r, M, g.cin, vec_a); }
    __device__ AMov a_mov(int p) const {
        AMov r;
        r.d0 = r.h0 = r.w0 = 0;
        r.base = -1;
        if (p < K) {
            int t = p;
            const int ow = t % g.ow;
            t /= g.ow;
            const int oh = t % g.oh;
            t /= g.oh;
            const int od = t % g.od;
            const int n = t / g.od;
            r.base = (mv_i64)n * g.id * g.ih * g.iw;
            r.d0 = od * g.sd - g.pd;
            r.h0 = oh * g.sh - g.ph;
            r.w0 = ow * g.sw - g.pw;
        }
        return r;
    }
    // A[r..r+3][p] = x[n(p), pos(p, tap), ci..ci+3]
    __device__ void fetch_a(const AFix& kd, const AMov& r, float v[4]) const {
        zero4(v);
        if (r.base < 0) return;
        if (vec_a) {
            const int d = r.d0 + kd.tap[0].kd, h = r.h0 + kd.tap[0].kh, w_ = r.w0 + kd.tap[0].kw;
            if (kd.ok[0] && inside(d, h, w_, g.id, g.ih, g.iw))
                load4(x + ((r.base + ((mv_i64)d * g.ih + h) * g.iw + w_) * g.cin + kd.c[0]), v);
        } else {
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                const int d = r.d0 + kd.tap[i].kd, h = r.h0 + kd.tap[i].kh, w_ = r.w0 + kd.tap[i].kw;
                if (kd.ok[i] && inside(d, h, w_, g.id, g.ih, g.iw))
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

// ------------------------------------------------------------------ shared-memory tiles
// A tile holds ROWS rows (m for A, n for B) by BK k-values, either k-major [ROWS][BK+PAD_K]
// or row-major [BK][ROWS+PAD_R]. The paddings make fragment loads bank-conflict free.
template <int PREC, bool KMAJ, int ROWS>
struct Tile {
    typedef IgemmPrec<PREC> P;
    typedef typename P::elem elem;
    static constexpr int STRIDE = KMAJ ? (P::BK + P::PAD_K) : (ROWS + P::PAD_R);
    static constexpr int ELEMS = KMAJ ? ROWS * STRIDE : P::BK * STRIDE;

    // Store a run of four values: along k (k-major) or along rows (row-major).
    __device__ static void store_run(elem* t, int outer, int inner, const float v[4]) {
        elem* p = t + outer * STRIDE + inner;
        if constexpr (PREC == MV_PREC_TF32) {
            *reinterpret_cast<float4*>(p) =
                make_float4(mv_to_tf32(v[0]), mv_to_tf32(v[1]), mv_to_tf32(v[2]), mv_to_tf32(v[3]));
        } else {
            mv_u32* q = reinterpret_cast<mv_u32*>(p);
            q[0] = mv_pack_bf16(mv_f32_to_bf16(v[0]), mv_f32_to_bf16(v[1]));
            q[1] = mv_pack_bf16(mv_f32_to_bf16(v[2]), mv_f32_to_bf16(v[3]));
        }
    }
    // TF32: element (row, k) as raw bits.
    __device__ static mv_u32 tf32_at(const elem* t, int row, int k) {
        const float* f = reinterpret_cast<const float*>(t);
        return __float_as_uint(KMAJ ? f[row * STRIDE + k] : f[k * STRIDE + row]);
    }
    // BF16: elements (row, k) and (row, k+1) packed, k even.
    __device__ static mv_u32 bf16_pair(const elem* t, int row, int k) {
        const mv_u16* h = reinterpret_cast<const mv_u16*>(t);
        if (KMAJ) return *reinterpret_cast<const mv_u32*>(h + row * STRIDE + k);
        return mv_pack_bf16(h[k * STRIDE + row], h[(k + 1) * STRIDE + row]);
    }
};

// ------------------------------------------------------------------ the GEMM main loop
template <int PREC, int BM, int BN, int WARPS_M, int WARPS_N, class Prob>
__device__ __forceinline__ void igemm_run(const Prob& pb, int kt_begin, int kt_end) {
    typedef IgemmPrec<PREC> P;
    typedef typename P::elem elem;
    typedef Tile<PREC, Prob::A_KMAJOR, BM> TA;
    typedef Tile<PREC, Prob::B_KMAJOR, BN> TB;
    constexpr int NT = WARPS_M * WARPS_N * 32;
    constexpr int BK = P::BK;
    constexpr int WTM = BM / WARPS_M, WTN = BN / WARPS_N;
    constexpr int MT = WTM / 16, NTL = WTN / 8;
    // Runs of four elements per thread and k-tile, per operand.
    constexpr int RA = BM * BK / 4 / NT, RB = BN * BK / 4 / NT;
    static_assert(RA * NT * 4 == BM * BK && RB * NT * 4 == BN * BK, "tile not divisible");
    // Inner (contiguous) extent in runs; the thread's inner offset must not change with j.
    constexpr int A_INNER = Prob::A_KMAJOR ? BK / 4 : BM / 4;
    constexpr int B_INNER = Prob::B_KMAJOR ? BK / 4 : BN / 4;
    static_assert(NT % A_INNER == 0 && NT % B_INNER == 0, "run mapping");

    __shared__ __align__(16) elem As[2][TA::ELEMS];
    __shared__ __align__(16) elem Bs[2][TB::ELEMS];

    const int tid = threadIdx.x;
    const int m0 = blockIdx.x * BM, n0 = blockIdx.y * BN;

    // Run coordinates: run j of this thread is (outer_j, inner) in the tile.
    const int a_inner = (tid % A_INNER) * 4, a_outer0 = tid / A_INNER;
    const int b_inner = (tid % B_INNER) * 4, b_outer0 = tid / B_INNER;
    constexpr int A_OSTEP = NT / A_INNER, B_OSTEP = NT / B_INNER;

    // Fixed per-run state (rows for k-major operands, the inner row group for row-major).
    typename Prob::AFix afix[Prob::A_KMAJOR ? RA : 1];
    typename Prob::BFix bfix[Prob::B_KMAJOR ? RB : 1];
    if (Prob::A_KMAJOR) {
#pragma unroll
        for (int j = 0; j < RA; ++j) afix[j] = pb.a_fix(m0 + a_outer0 + j * A_OSTEP);
    } else {
        afix[0] = pb.a_fix(m0 + a_inner);
    }
    if (Prob::B_KMAJOR) {
#pragma unroll
        for (int j = 0; j < RB; ++j) bfix[j] = pb.b_fix(n0 + b_outer0 + j * B_OSTEP);
    } else {
        bfix[0] = pb.b_fix(n0 + b_inner);
    }

    float ra[RA][4], rb[RB][4];
    auto load_tile = [&](int kt) {
        const int kb = kt * BK;
        if (Prob::A_KMAJOR) {
            const typename Prob::AMov mv = pb.a_mov(kb + a_inner);
#pragma unroll
            for (int j = 0; j < RA; ++j) pb.fetch_a(afix[j], mv, ra[j]);
        } else {
#pragma unroll
            for (int j = 0; j < RA; ++j) {
                const typename Prob::AMov mv = pb.a_mov(kb + a_outer0 + j * A_OSTEP);
                pb.fetch_a(afix[0], mv, ra[j]);
            }
        }
        if (Prob::B_KMAJOR) {
            const typename Prob::BMov mv = pb.b_mov(kb + b_inner);
#pragma unroll
            for (int j = 0; j < RB; ++j) pb.fetch_b(bfix[j], mv, rb[j]);
        } else {
#pragma unroll
            for (int j = 0; j < RB; ++j) {
                const typename Prob::BMov mv = pb.b_mov(kb + b_outer0 + j * B_OSTEP);
                pb.fetch_b(bfix[0], mv, rb[j]);
            }
        }
    };
    auto store_tile = [&](int buf) {
#pragma unroll
        for (int j = 0; j < RA; ++j) TA::store_run(As[buf], a_outer0 + j * A_OSTEP, a_inner, ra[j]);
#pragma unroll
        for (int j = 0; j < RB; ++j) TB::store_run(Bs[buf], b_outer0 + j * B_OSTEP, b_inner, rb[j]);
    };

    float acc[MT][NTL][4];
#pragma unroll
    for (int i = 0; i < MT; ++i)
#pragma unroll
        for (int j = 0; j < NTL; ++j) acc[i][j][0] = acc[i][j][1] = acc[i][j][2] = acc[i][j][3] = 0.0f;

    const int warp = tid >> 5, lane = tid & 31;
    const int wm = (warp / WARPS_N) * WTM, wn = (warp % WARPS_N) * WTN;
    const int lg = lane >> 2, lt = lane & 3;

    if (kt_begin < kt_end) {
        load_tile(kt_begin);
        store_tile(0);
    }
    __syncthreads();
    for (int kt = kt_begin; kt < kt_end; ++kt) {
        const int buf = (kt - kt_begin) & 1;
        const bool more = kt + 1 < kt_end;
        if (more) load_tile(kt + 1);
        const elem* as = As[buf];
        const elem* bs = Bs[buf];
#pragma unroll
        for (int ks = 0; ks < BK; ks += P::KSTEP) {
            mv_u32 af[MT][4], bf[NTL][2];
#pragma unroll
            for (int i = 0; i < MT; ++i) {
                const int r = wm + i * 16 + lg;
                if (PREC == MV_PREC_TF32) {
                    af[i][0] = TA::tf32_at(as, r, ks + lt);
                    af[i][1] = TA::tf32_at(as, r + 8, ks + lt);
                    af[i][2] = TA::tf32_at(as, r, ks + lt + 4);
                    af[i][3] = TA::tf32_at(as, r + 8, ks + lt + 4);
                } else {
                    af[i][0] = TA::bf16_pair(as, r, ks + 2 * lt);
                    af[i][1] = TA::bf16_pair(as, r + 8, ks + 2 * lt);
                    af[i][2] = TA::bf16_pair(as, r, ks + 2 * lt + 8);
                    af[i][3] = TA::bf16_pair(as, r + 8, ks + 2 * lt + 8);
                }
            }
#pragma unroll
            for (int j = 0; j < NTL; ++j) {
                const int c = wn + j * 8 + lg;
                if (PREC == MV_PREC_TF32) {
                    bf[j][0] = TB::tf32_at(bs, c, ks + lt);
                    bf[j][1] = TB::tf32_at(bs, c, ks + lt + 4);
                } else {
                    bf[j][0] = TB::bf16_pair(bs, c, ks + 2 * lt);
                    bf[j][1] = TB::bf16_pair(bs, c, ks + 2 * lt + 8);
                }
            }
#pragma unroll
            for (int i = 0; i < MT; ++i)
#pragma unroll
                for (int j = 0; j < NTL; ++j) {
                    if (PREC == MV_PREC_TF32) mv_mma_tf32_16x8x8(acc[i][j], af[i], bf[j]);
                    else mv_mma_bf16_16x8x16(acc[i][j], af[i], bf[j]);
                }
        }
        if (more) store_tile(buf ^ 1);
        __syncthreads();
    }

    // Epilogue: accumulator element e of tile (i, j) sits at row lg (+8 for e >= 2) and column
    // 2*lt + (e & 1) of that 16x8 tile.
#pragma unroll
    for (int i = 0; i < MT; ++i)
#pragma unroll
        for (int j = 0; j < NTL; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int m = m0 + wm + i * 16 + lg + (e >= 2 ? 8 : 0);
                const int n = n0 + wn + j * 8 + 2 * lt + (e & 1);
                if (m < pb.M && n < pb.N) pb.store(m, n, acc[i][j][e]);
            }
}

__device__ __forceinline__ bool aligned16(const void* p) { return ((unsigned long long)p & 15ull) == 0; }

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
    const int kt = (pb.K + IgemmPrec<PREC>::BK - 1) / IgemmPrec<PREC>::BK;
    const int b = blockIdx.z * tiles_per_split;
    const int e = min(kt, b + tiles_per_split);
    if (b >= e) return;  // uniform for the whole block
    igemm_run<PREC, BM, BN, WM, WN>(pb, b, e);
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
