// medvae_igemm.cuh — the tensor-core GEMM main loop shared by the implicit-GEMM convolutions
// (conv_igemm.cu) and the dense GEMMs (gemm.cu).
//
// C[M, N] = A[M, K] * B[K, N] with operands fetched through a *problem* class (Prob), which
// hides where elements live: implicit im2col for convolutions, plain strided matrices for GEMM.
// A Prob provides
//   static constexpr bool A_KMAJOR, B_KMAJOR   orientation of each operand in global memory:
//       k-major = k contiguous ([rows][k]), else row-major = rows contiguous ([k][rows]);
//   int M, N, K;
//   AFix a_fix(int r) / AMov a_mov(int k) / void fetch_a(AFix, AMov, float v[4])
//       (and the same for B): a "run" of four consecutive elements along the operand's
//       contiguous direction, zero-filled outside the problem; *Fix is the per-thread state of
//       the coordinate that stays fixed across k-tiles, *Mov that of the moving one;
//   void store(int m, int n, float acc)   the epilogue for one output element.
// Operands are read from global f32, rounded to TF32 (mma m16n8k8) or BF16 (mma m16n8k16)
// while staged into shared memory, and accumulated in f32. Each k-tile is loaded into registers
// while the previous one feeds the tensor cores (double-buffered shared memory, one barrier per
// k-tile). Tiles keep their global orientation in shared memory (conflict-free staging stores);
// the fragment loaders read either orientation. (A cp.async pipeline does not fit here: the
// staging rounds every value to TF32/BF16 and predicates each element.)
#pragma once
#include "medvae_common.cuh"

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

    mv_mma_epilogue<MT, NTL>(pb, acc, m0 + wm, n0 + wn, lane);
}

__device__ __forceinline__ bool aligned16(const void* p) { return ((unsigned long long)p & 15ull) == 0; }

