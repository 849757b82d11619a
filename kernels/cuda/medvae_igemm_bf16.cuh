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
//                                             (static constexpr int RUNS = R)
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

// The runs of one thread in a plain row-major matrix (leading dimension ld): eight consecutive
// columns each. Along k when k is the column (KMAJOR: the runs share that column and each has
// its own row), else along the rows (they share their eight columns and each walks its own
// k-row). The GEMMs' operands, and the convolutions' weights and output gradient, are such.
template <bool KMAJOR, int R>
struct MatrixRuns {
    static constexpr int RUNS = R;
    int col;
    int row[R];
    mv_i64 off[R];  // row[j] * ld + col, stepped with them rather than multiplied per k-tile

    __device__ void begin(int ld, const int (&fixed)[R], const int (&k)[R]) {
        col = KMAJOR ? k[0] : fixed[0];
#pragma unroll
        for (int j = 0; j < R; ++j) {
            row[j] = KMAJOR ? fixed[j] : k[j];
            off[j] = (mv_i64)row[j] * ld + col;
        }
    }
    // Run j's address in the [rows, cols] matrix p; false (zero fill) outside it.
    template <class E>
    __device__ bool src(const E* p, int rows, int cols, int j, const E*& s) const {
        const bool ok = (row[j] < rows) & (col < cols);
        s = p + (ok ? off[j] : 0);
        return ok;
    }
    __device__ void next(int ld, int bk) {
        const mv_i64 step = KMAJOR ? bk : (mv_i64)bk * ld;
        if (KMAJOR) {
            col += bk;
        } else {
#pragma unroll
            for (int j = 0; j < R; ++j) row[j] += bk;
        }
#pragma unroll
        for (int j = 0; j < R; ++j) off[j] += step;
    }
};

// Byte offset, within a stage's tile, of the ldmatrix row that `lane` supplies for the A
// fragment (16 rows x 16 k at row r0, k k0) of mma m16n8k16: matrices (rows 0-7, k 0-7),
// (rows 8-15, k 0-7), (rows 0-7, k 8-15), (rows 8-15, k 8-15) are a0..a3. Linear in r0 and
// k0, so the main loop computes it once and steps it by compile-time constants.
template <bool KMAJ, int ROWS, int BK>
__host__ __device__ constexpr int frag_a_offset(int r0, int k0, int lane) {
    typedef Tile16<KMAJ, ROWS, BK> T;
    const int q = lane >> 3, r = lane & 7;
    return 2 * (KMAJ ? (r0 + r + (q & 1) * 8) * T::STRIDE + k0 + (q >> 1) * 8
                     : (k0 + r + (q >> 1) * 8) * T::STRIDE + r0 + (q & 1) * 8);
}
// The same for the B fragments of two adjacent 8-column tiles (columns n0..n0+15, k
// k0..k0+15): one ldmatrix.x4 gives b[j][0] (k 0-7) and b[j][1] (k 8-15) of column tile j.
template <bool KMAJ, int ROWS, int BK>
__host__ __device__ constexpr int frag_b2_offset(int n0, int k0, int lane) {
    typedef Tile16<KMAJ, ROWS, BK> T;
    const int q = lane >> 3, r = lane & 7;
    return 2 * (KMAJ ? (n0 + r + (q >> 1) * 8) * T::STRIDE + k0 + (q & 1) * 8
                     : (k0 + r + (q & 1) * 8) * T::STRIDE + n0 + (q >> 1) * 8);
}
template <bool KMAJ>
__device__ __forceinline__ void frag_load(mv_u32 f[4], unsigned saddr) {
    if (KMAJ) mv_ldmatrix_x4_at(f, saddr);
    else mv_ldmatrix_x4_trans_at(f, saddr);
}

// Issue the cp.async copies of one k-tile: run j of A to shared address sa + j * A_STEP, of B
// to sb + j * B_STEP (bytes; zero-filled where the problem predicates the run off), then
// advance both iterators by bk. A thread's runs lie a constant step apart in every tile layout
// used (c = tid + j * threads), so one base register per operand serves them all. Shared with
// conv_wgmma.cu, whose tiles are laid out differently.
template <int A_STEP, int B_STEP, class Prob, class AIt, class BIt>
__device__ __forceinline__ void igemm_bf16_issue(const Prob& pb, AIt& ait, unsigned sa, BIt& bit, unsigned sb, int bk) {
#pragma unroll
    for (int j = 0; j < AIt::RUNS; ++j) {
        const typename Prob::Elem* src;
        const bool ok = pb.a_src(ait, j, src);
        mv_cp_async16_at(sa + j * A_STEP, src, ok);
    }
#pragma unroll
    for (int j = 0; j < BIt::RUNS; ++j) {
        const typename Prob::Elem* src;
        const bool ok = pb.b_src(bit, j, src);
        mv_cp_async16_at(sb + j * B_STEP, src, ok);
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

    const unsigned smem = mv_smem_addr(MV_DYN_SMEM(mv_u16));
    const int tid = threadIdx.x;
    const int m0 = blockIdx.x * BM, n0 = blockIdx.y * BN;

    // Run j of a thread is c = tid + j * NT of the tile: row (or k-row) c / RUNS_INNER, eight
    // elements from (c % RUNS_INNER) * 8; as NT is a multiple of RUNS_INNER, the thread's runs
    // share their k (k-major) or their rows (row-major), and lie NT / RUNS_INNER rows apart.
    static_assert(NT % TA::RUNS_INNER == 0 && NT % TB::RUNS_INNER == 0,
                  "a thread's runs must share their k (k-major) or their rows (row-major)");
    constexpr int A_STEP = NT / TA::RUNS_INNER * TA::STRIDE * 2, B_STEP = NT / TB::RUNS_INNER * TB::STRIDE * 2;
    typename Prob::template AIt<RA> ait;
    typename Prob::template BIt<RB> bit;
    const int a_outer = tid / TA::RUNS_INNER, a_inner = (tid % TA::RUNS_INNER) * 8;
    const int b_outer = tid / TB::RUNS_INNER, b_inner = (tid % TB::RUNS_INNER) * 8;
    const unsigned a_run = (a_outer * TA::STRIDE + a_inner) * 2, b_run = (b_outer * TB::STRIDE + b_inner) * 2;
    {
        int a_fixed[RA], a_k[RA], b_fixed[RB], b_k[RB];
#pragma unroll
        for (int j = 0; j < RA; ++j) {
            const int outer = a_outer + j * (NT / TA::RUNS_INNER);
            a_fixed[j] = m0 + (Prob::A_KMAJOR ? outer : a_inner);
            a_k[j] = kt_begin * BK + (Prob::A_KMAJOR ? a_inner : outer);
        }
#pragma unroll
        for (int j = 0; j < RB; ++j) {
            const int outer = b_outer + j * (NT / TB::RUNS_INNER);
            b_fixed[j] = n0 + (Prob::B_KMAJOR ? outer : b_inner);
            b_k[j] = kt_begin * BK + (Prob::B_KMAJOR ? b_inner : outer);
        }
        pb.a_begin(ait, a_fixed, a_k);
        pb.b_begin(bit, b_fixed, b_k);
    }
    // Issue the copies of the next k-tile (in order: the iterators advance one tile per call).
    auto load = [&](int stage) {
        const unsigned sa = smem + stage * STAGE * 2;
        igemm_bf16_issue<A_STEP, B_STEP>(pb, ait, sa + a_run, bit, sa + TA::ELEMS * 2 + b_run, BK);
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
    // The thread's ldmatrix addresses in a stage, for fragment (mi, nj, ks) = 0; the others
    // are constant steps away.
    const unsigned a_frag = frag_a_offset<Prob::A_KMAJOR, BM, BK>(wm, 0, lane);
    const unsigned b_frag = TA::ELEMS * 2 + frag_b2_offset<Prob::B_KMAJOR, BN, BK>(wn, 0, lane);
    constexpr int A_MI = frag_a_offset<Prob::A_KMAJOR, BM, BK>(16, 0, 0) - frag_a_offset<Prob::A_KMAJOR, BM, BK>(0, 0, 0);
    constexpr int A_KS = frag_a_offset<Prob::A_KMAJOR, BM, BK>(0, 16, 0) - frag_a_offset<Prob::A_KMAJOR, BM, BK>(0, 0, 0);
    constexpr int B_NJ = frag_b2_offset<Prob::B_KMAJOR, BN, BK>(16, 0, 0) - frag_b2_offset<Prob::B_KMAJOR, BN, BK>(0, 0, 0);
    constexpr int B_KS = frag_b2_offset<Prob::B_KMAJOR, BN, BK>(0, 16, 0) - frag_b2_offset<Prob::B_KMAJOR, BN, BK>(0, 0, 0);

    for (int kt = kt_begin, i = 0; kt < kt_end; ++kt, ++i) {
        // Tile kt has landed once at most STAGES-2 younger groups are pending; the barrier also
        // tells every thread that the stage about to be refilled (read in the previous
        // iteration) is free.
        mv_cp_async_wait<STAGES - 2>();
        __syncthreads();
        if (kt + STAGES - 1 < kt_end) load((i + STAGES - 1) % STAGES);
        mv_cp_async_commit();

        const unsigned stage = smem + (i % STAGES) * STAGE * 2;
        const unsigned sa = stage + a_frag, sb = stage + b_frag;
#pragma unroll
        for (int ks = 0; ks < BK / 16; ++ks) {
            mv_u32 af[MT][4], bf[NTL][2];
#pragma unroll
            for (int mi = 0; mi < MT; ++mi) frag_load<Prob::A_KMAJOR>(af[mi], sa + mi * A_MI + ks * A_KS);
#pragma unroll
            for (int nj = 0; nj < NTL; nj += 2) {
                mv_u32 f[4];
                frag_load<Prob::B_KMAJOR>(f, sb + (nj / 2) * B_NJ + ks * B_KS);
                bf[nj][0] = f[0];
                bf[nj][1] = f[1];
                bf[nj + 1][0] = f[2];
                bf[nj + 1][1] = f[3];
            }
#pragma unroll
            for (int mi = 0; mi < MT; ++mi)
#pragma unroll
                for (int nj = 0; nj < NTL; ++nj) mv_mma_bf16_16x8x16(acc[mi][nj], af[mi], bf[nj]);
        }
    }
    mv_cp_async_wait<0>();  // only empty groups remain; leave nothing in flight

    mv_mma_epilogue<MT, NTL>(pb, acc, m0 + wm, n0 + wn, lane);
}
