// medvae_igemm_bf16.cuh — the pipelined tensor-core GEMM main loop for operands already in BF16
// in global memory (conv_bf16.cu).
//
// C[M, N] = A[M, K] * B[K, N], f32 accumulation (mma m16n8k16). Unlike medvae_igemm.cuh, whose
// threads fetch f32 through registers and round while staging, the operands here are bf16 in
// global memory, so every 16-byte run of eight elements goes straight to shared memory with
// cp.async (zero-filled where the problem predicates it off), STAGES k-tiles in flight, and the
// fragments come out of shared memory with ldmatrix. That is the Ampere-style pipeline; the
// inputs are rounded to bf16 once per operand by a conversion kernel instead of once per tile.
//
// A problem class (Prob) says where runs live. Each thread copies R runs of an operand per
// k-tile (R = tile elements / 8 / threads). The runs of one thread in a k-major operand are all
// at the same k (their rows differ), those in a row-major operand all at the same eight rows
// (their k differ): the launch loops below guarantee it (NT is a multiple of the runs per tile
// row), and the iterators keep what the runs share once per thread, so that a k-tile costs a
// few instructions per run rather than a decode of its coordinates.
//   static constexpr bool A_KMAJOR, B_KMAJOR   k contiguous ([rows][k]) or rows contiguous ([k][rows])
//   int M, N, K;
//   template <int R> struct AIt;              the thread's iterator over its R runs of A
//   template <int R> void a_begin(AIt<R>&, const int (&fixed)[R], const int (&k)[R])
//                                             run j's row (k-major) or first of eight rows
//                                             (row-major), and its k, at the first k-tile
//   template <int R> bool a_src(const AIt<R>&, int j, const mv_u16*& src)
//                                             run j's address; false to zero-fill it
//   template <int R> void a_next(AIt<R>&, int bk)   every run one k-tile (bk k-values) further
//   (and the same for B), and void store(int m, int n, float acc) for the epilogue.
// Runs must not straddle what the problem predicates on (the launchers require channel counts
// that are multiples of 8). Dynamic shared memory: STAGES * (tile A + tile B) bf16 elements.
//
// The block tile (BM x BN), the warp grid, the k-tile BK and the pipeline depth are template
// parameters: the entry points instantiate a few shapes (conv_bf16.cu) so that a new card can be
// swept for the fastest (MEDVAE_CONV_TILE / MEDVAE_WGRAD_TILE, runtime/src/cuda/ops/conv_plan.rs).
// A warp tile of 64x32 (8 warps on 128x128) reads 6 ldmatrix.x4 per 16 MMAs; 64x64 reads 8 per
// 32, which halves the shared-memory traffic per MMA, and a 64-deep k-tile halves the barriers.
#pragma once
#include "medvae_common.cuh"

#define MV_BK16 32  // the default k-tile
#define MV_PAD16 8  // row padding (elements): keeps ldmatrix and cp.async rows conflict-free

// A shared-memory tile of ROWS rows (m for A, n for B) by BK k-values, k-major
// [ROWS][BK+PAD] or row-major [BK][ROWS+PAD]; runs of eight elements along the contiguous side.
template <bool KMAJ, int ROWS, int BK>
struct Tile16 {
    static constexpr int STRIDE = KMAJ ? (BK + MV_PAD16) : (ROWS + MV_PAD16);
    static constexpr int ELEMS = KMAJ ? ROWS * STRIDE : BK * STRIDE;
    static constexpr int RUNS_INNER = KMAJ ? BK / 8 : ROWS / 8;
};

template <int BM, int BN, int STAGES, class Prob, int BK = MV_BK16>
__host__ __device__ constexpr int igemm_bf16_smem_bytes() {
    return STAGES * (Tile16<Prob::A_KMAJOR, BM, BK>::ELEMS + Tile16<Prob::B_KMAJOR, BN, BK>::ELEMS) * 2;
}

// A fragment (16 rows x 16 k at row r0, k k0) of mma m16n8k16: matrices (rows 0-7, k 0-7),
// (rows 8-15, k 0-7), (rows 0-7, k 8-15), (rows 8-15, k 8-15) are a0..a3.
template <bool KMAJ, int ROWS, int BK>
__device__ __forceinline__ void frag_a(const mv_u16* t, int r0, int k0, int lane, mv_u32 a[4]) {
    typedef Tile16<KMAJ, ROWS, BK> T;
    const int q = lane >> 3, r = lane & 7;
    if (KMAJ) {
        mv_ldmatrix_x4(a, t + (r0 + r + (q & 1) * 8) * T::STRIDE + k0 + (q >> 1) * 8);
    } else {
        mv_ldmatrix_x4_trans(a, t + (k0 + r + (q >> 1) * 8) * T::STRIDE + r0 + (q & 1) * 8);
    }
}
// B fragments of two adjacent 8-column tiles (columns n0..n0+15, k k0..k0+15): b[j][0] holds
// k 0-7, b[j][1] k 8-15 of column tile j.
template <bool KMAJ, int ROWS, int BK>
__device__ __forceinline__ void frag_b2(const mv_u16* t, int n0, int k0, int lane, mv_u32 b0[2], mv_u32 b1[2]) {
    typedef Tile16<KMAJ, ROWS, BK> T;
    const int q = lane >> 3, r = lane & 7;
    mv_u32 f[4];
    if (KMAJ) {
        mv_ldmatrix_x4(f, t + (n0 + r + (q >> 1) * 8) * T::STRIDE + k0 + (q & 1) * 8);
    } else {
        mv_ldmatrix_x4_trans(f, t + (k0 + r + (q & 1) * 8) * T::STRIDE + n0 + (q >> 1) * 8);
    }
    b0[0] = f[0];
    b0[1] = f[1];
    b1[0] = f[2];
    b1[1] = f[3];
}

// Issue the cp.async copies of one k-tile: run j of A to sa + a_off[j], of B to sb + b_off[j]
// (bf16 elements; zero-filled where the problem predicates the run off), then advance both
// iterators by bk. Shared with conv_wgmma.cu, whose tiles are laid out differently.
template <class Prob, int RA, int RB>
__device__ __forceinline__ void igemm_bf16_issue(const Prob& pb, typename Prob::template AIt<RA>& ait,
                                                 const int (&a_off)[RA], mv_u16* sa,
                                                 typename Prob::template BIt<RB>& bit, const int (&b_off)[RB],
                                                 mv_u16* sb, int bk) {
#pragma unroll
    for (int j = 0; j < RA; ++j) {
        const mv_u16* src;
        const bool ok = pb.a_src(ait, j, src);
        mv_cp_async16(sa + a_off[j], src, ok);
    }
#pragma unroll
    for (int j = 0; j < RB; ++j) {
        const mv_u16* src;
        const bool ok = pb.b_src(bit, j, src);
        mv_cp_async16(sb + b_off[j], src, ok);
    }
    pb.a_next(ait, bk);
    pb.b_next(bit, bk);
}

// k-tiles kt_begin..kt_end (each BK deep) of the block's BM x BN output tile.
template <int BM, int BN, int WARPS_M, int WARPS_N, int STAGES, class Prob, int BK = MV_BK16>
__device__ __forceinline__ void igemm_bf16_run(const Prob& pb, int kt_begin, int kt_end) {
    typedef Tile16<Prob::A_KMAJOR, BM, BK> TA;
    typedef Tile16<Prob::B_KMAJOR, BN, BK> TB;
    constexpr int NT = WARPS_M * WARPS_N * 32;
    constexpr int WTM = BM / WARPS_M, WTN = BN / WARPS_N;
    constexpr int MT = WTM / 16, NTL = WTN / 8;
    constexpr int RA = BM * BK / 8 / NT, RB = BN * BK / 8 / NT;  // runs per thread and k-tile
    static_assert(RA * NT * 8 == BM * BK && RB * NT * 8 == BN * BK, "tile not divisible");
    static_assert(NTL % 2 == 0 && STAGES >= 2, "fragment loads take two column tiles");
    static_assert(BK % 16 == 0 && WTM % 16 == 0, "whole mma steps");
    constexpr int STAGE = TA::ELEMS + TB::ELEMS;

    mv_u16* smem = MV_DYN_SMEM(mv_u16);
    const int tid = threadIdx.x;
    const int m0 = blockIdx.x * BM, n0 = blockIdx.y * BN;

    static_assert(NT % TA::RUNS_INNER == 0 && NT % TB::RUNS_INNER == 0,
                  "a thread's runs must share their k (k-major) or their rows (row-major)");
    typename Prob::template AIt<RA> ait;
    typename Prob::template BIt<RB> bit;
    int a_off[RA], b_off[RB];
    {
        int a_fixed[RA], a_k[RA], b_fixed[RB], b_k[RB];
#pragma unroll
        for (int j = 0; j < RA; ++j) {
            const int c = tid + j * NT, outer = c / TA::RUNS_INNER, inner = (c % TA::RUNS_INNER) * 8;
            a_off[j] = outer * TA::STRIDE + inner;
            a_fixed[j] = m0 + (Prob::A_KMAJOR ? outer : inner);
            a_k[j] = kt_begin * BK + (Prob::A_KMAJOR ? inner : outer);
        }
#pragma unroll
        for (int j = 0; j < RB; ++j) {
            const int c = tid + j * NT, outer = c / TB::RUNS_INNER, inner = (c % TB::RUNS_INNER) * 8;
            b_off[j] = outer * TB::STRIDE + inner;
            b_fixed[j] = n0 + (Prob::B_KMAJOR ? outer : inner);
            b_k[j] = kt_begin * BK + (Prob::B_KMAJOR ? inner : outer);
        }
        pb.a_begin(ait, a_fixed, a_k);
        pb.b_begin(bit, b_fixed, b_k);
    }
    // Issue the copies of the next k-tile (in order: the iterators advance one tile per call).
    auto load = [&](int stage) {
        mv_u16* sa = smem + stage * STAGE;
        igemm_bf16_issue(pb, ait, a_off, sa, bit, b_off, sa + TA::ELEMS, BK);
    };

    // Prologue: STAGES-1 tiles in flight (an empty group where the range is shorter, so that the
    // group count, and with it the wait below, stays uniform).
#pragma unroll
    for (int s = 0; s < STAGES - 1; ++s) {
        if (kt_begin + s < kt_end) load(s);
        mv_cp_async_commit();
    }

    float acc[MT][NTL][4];
#pragma unroll
    for (int i = 0; i < MT; ++i)
#pragma unroll
        for (int j = 0; j < NTL; ++j) acc[i][j][0] = acc[i][j][1] = acc[i][j][2] = acc[i][j][3] = 0.0f;

    const int warp = tid >> 5, lane = tid & 31;
    const int wm = (warp / WARPS_N) * WTM, wn = (warp % WARPS_N) * WTN;

    for (int kt = kt_begin, i = 0; kt < kt_end; ++kt, ++i) {
        // Tile kt has landed once at most STAGES-2 younger groups are pending; the barrier also
        // tells every thread that the stage about to be refilled (read in the previous
        // iteration) is free.
        mv_cp_async_wait<STAGES - 2>();
        __syncthreads();
        if (kt + STAGES - 1 < kt_end) load((i + STAGES - 1) % STAGES);
        mv_cp_async_commit();

        const mv_u16* sa = smem + (i % STAGES) * STAGE;
        const mv_u16* sb = sa + TA::ELEMS;
#pragma unroll
        for (int ks = 0; ks < BK; ks += 16) {
            mv_u32 af[MT][4], bf[NTL][2];
#pragma unroll
            for (int mi = 0; mi < MT; ++mi) frag_a<Prob::A_KMAJOR, BM, BK>(sa, wm + mi * 16, ks, lane, af[mi]);
#pragma unroll
            for (int nj = 0; nj < NTL; nj += 2)
                frag_b2<Prob::B_KMAJOR, BN, BK>(sb, wn + nj * 8, ks, lane, bf[nj], bf[nj + 1]);
#pragma unroll
            for (int mi = 0; mi < MT; ++mi)
#pragma unroll
                for (int nj = 0; nj < NTL; ++nj) mv_mma_bf16_16x8x16(acc[mi][nj], af[mi], bf[nj]);
        }
    }
    mv_cp_async_wait<0>();  // only empty groups remain; leave nothing in flight

    mv_mma_epilogue<MT, NTL>(pb, acc, m0 + wm, n0 + wn, lane);
}
