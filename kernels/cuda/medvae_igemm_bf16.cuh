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
// The main loop itself, MatrixRuns and the copy issue live in medvae_igemm_streamed.cuh, shared
// with the TF32 loop (medvae_igemm_tf32.cuh); this file holds the bf16 tiles and fragments.
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
#include "medvae_igemm_streamed.cuh"

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

// The bf16 operand type of igemm_streamed_run: runs of eight, mma m16n8k16, fragments through
// ldmatrix (.trans for row-major tiles).
struct Bf16Frags {
    static constexpr int ELEM_BYTES = 2, RUN = 8, KSTEP = 16;
    template <bool KMAJ, int ROWS, int BK>
    using Tile = Tile16<KMAJ, ROWS, BK>;
    template <bool KMAJ, int ROWS, int BK>
    __host__ __device__ static constexpr int a_offset(int r0, int k0, int lane) {
        return frag_a_offset<KMAJ, ROWS, BK>(r0, k0, lane);
    }
    template <bool KMAJ, int ROWS, int BK>
    __host__ __device__ static constexpr int b2_offset(int n0, int k0, int lane) {
        return frag_b2_offset<KMAJ, ROWS, BK>(n0, k0, lane);
    }
    template <bool KMAJ, int STRIDE>
    __device__ static void load_a(mv_u32 f[4], unsigned saddr) {
        frag_load<KMAJ>(f, saddr);
    }
    template <bool KMAJ, int STRIDE>
    __device__ static void load_b2(mv_u32 f[4], unsigned saddr) {
        frag_load<KMAJ>(f, saddr);
    }
    __device__ static void mma(float c[4], const mv_u32 a[4], const mv_u32 b[2]) { mv_mma_bf16_16x8x16(c, a, b); }
};

// k-tiles kt_begin..kt_end (each BK deep) of the block's BM x BN output tile, on bf16 operands.
template <int BM, int BN, int WARPS_M, int WARPS_N, int STAGES, class Prob, int BK = MV_BK16>
__device__ __forceinline__ void igemm_bf16_run(const Prob& pb, int kt_begin, int kt_end) {
    igemm_streamed_run<Bf16Frags, BM, BN, WARPS_M, WARPS_N, STAGES, Prob, BK>(pb, kt_begin, kt_end);
}
