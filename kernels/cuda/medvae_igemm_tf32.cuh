// medvae_igemm_tf32.cuh — the pipelined tensor-core GEMM main loop of medvae_igemm_bf16.cuh, for
// f32 operands on TF32 tensor cores (mma m16n8k8, f32 accumulation): conv_tf32.cu.
//
// The operands stay f32 in global memory: no conversion pass. Every 16-byte run of four
// elements goes straight to shared memory with cp.async (zero-filled where the problem
// predicates it off), STAGES k-tiles in flight, and each fragment register is rounded to TF32
// (cvt.rna: nearest, ties away) as it leaves shared memory, the rounding of the staged TF32
// kernels of conv_igemm.cu. The problem classes, their iterators and the copy issue
// (igemm_bf16_issue) are the bf16 loop's, instantiated on float (medvae_conv_streamed.cuh);
// only the run length (four elements, so channel counts must be multiples of 4), the tile
// layouts and the fragment loads differ:
//   k-major tiles ([ROWS][BK + 4] f32): ldmatrix.x4. An 8x8 b16 matrix is 8 rows by 4 f32, and
//     register q of lane l then holds row l/4, f32 column l%4 of matrix q: exactly the tf32
//     m16n8k8 fragments (A: a0..a3 at rows +0/+8, columns +0/+4; B: b0, b1 at k +0/+4). A row
//     stride of 36 words keeps the eight 16-byte rows of a matrix on distinct banks.
//   row-major tiles ([BK][ROWS + 8] f32): one 32-bit shared load per register (ldmatrix.trans
//     would transpose 16-bit halves, not f32). Lane (g, t) = (l/4, l%4) reads k-row k0 + t,
//     column r0 + g; a row stride of ROWS + 8 ≡ 8 (mod 32) words puts the four k-rows 8 banks
//     apart, so the 32 lanes hit 32 banks.
// Dynamic shared memory: STAGES * (tile A + tile B) * 4 bytes (igemm_tf32_smem_bytes).
#pragma once
#include "medvae_common.cuh"
#include "medvae_igemm_bf16.cuh"

#define MV_PAD32_K 4  // k-major row padding (f32): rows 144 bytes apart for BK 32
#define MV_PAD32_R 8  // row-major row padding (f32): stride ≡ 8 (mod 32) words

// A shared-memory tile of ROWS rows by BK k-values of f32, k-major [ROWS][BK+4] or row-major
// [BK][ROWS+8]; runs of four elements along the contiguous side.
template <bool KMAJ, int ROWS, int BK>
struct Tile32 {
    static constexpr int STRIDE = KMAJ ? (BK + MV_PAD32_K) : (ROWS + MV_PAD32_R);
    static constexpr int ELEMS = KMAJ ? ROWS * STRIDE : BK * STRIDE;
    static constexpr int RUNS_INNER = KMAJ ? BK / 4 : ROWS / 4;
};

template <int BM, int BN, int STAGES, class Prob, int BK>
__host__ __device__ constexpr int igemm_tf32_smem_bytes() {
    return STAGES * (Tile32<Prob::A_KMAJOR, BM, BK>::ELEMS + Tile32<Prob::B_KMAJOR, BN, BK>::ELEMS) * 4;
}

// Byte offset, within a stage's tile, of what `lane` loads for the A fragment (16 rows x 8 k at
// row r0, k k0): k-major, the ldmatrix row it supplies (matrices (rows 0-7, k 0-3), (rows 8-15,
// k 0-3), (rows 0-7, k 4-7), (rows 8-15, k 4-7) are a0..a3); row-major, its a0 (row r0 + l/4,
// k k0 + l%4), the other registers 8 rows and 4 k-rows away. Linear in r0 and k0.
template <bool KMAJ, int ROWS, int BK>
__host__ __device__ constexpr int frag32_a_offset(int r0, int k0, int lane) {
    typedef Tile32<KMAJ, ROWS, BK> T;
    return KMAJ ? 4 * ((r0 + (lane & 7) + ((lane >> 3) & 1) * 8) * T::STRIDE + k0 + (lane >> 4) * 4)
                : 4 * ((k0 + (lane & 3)) * T::STRIDE + r0 + (lane >> 2));
}
// The same for the B fragments of two adjacent 8-column tiles (columns n0..n0+15, k k0..k0+7):
// k-major, one ldmatrix.x4 gives b[j][0] (k 0-3) and b[j][1] (k 4-7) of column tile j (matrix
// q: columns + (q >> 1) * 8, k + (q & 1) * 4); row-major, lane's b[0][0] (k k0 + l%4, column
// n0 + l/4).
template <bool KMAJ, int ROWS, int BK>
__host__ __device__ constexpr int frag32_b2_offset(int n0, int k0, int lane) {
    typedef Tile32<KMAJ, ROWS, BK> T;
    return KMAJ ? 4 * ((n0 + (lane & 7) + (lane >> 4) * 8) * T::STRIDE + k0 + ((lane >> 3) & 1) * 4)
                : 4 * ((k0 + (lane & 3)) * T::STRIDE + n0 + (lane >> 2));
}

// f32 bits rounded to tf32 bits.
__device__ __forceinline__ mv_u32 mv_tf32_bits(mv_u32 v) { return __float_as_uint(mv_to_tf32(__uint_as_float(v))); }

// The A fragment (a0..a3) at the thread's address `saddr` (frag32_a_offset).
template <bool KMAJ, int STRIDE>
__device__ __forceinline__ void frag32_load_a(mv_u32 f[4], unsigned saddr) {
    if (KMAJ) {
        mv_ldmatrix_x4_at(f, saddr);
    } else {
        f[0] = mv_lds32_at(saddr);
        f[1] = mv_lds32_at(saddr + 4 * 8);
        f[2] = mv_lds32_at(saddr + 4 * 4 * STRIDE);
        f[3] = mv_lds32_at(saddr + 4 * (4 * STRIDE + 8));
    }
#pragma unroll
    for (int i = 0; i < 4; ++i) f[i] = mv_tf32_bits(f[i]);
}
// The B fragments of two column tiles: f[0], f[1] of tile 0, f[2], f[3] of tile 1.
template <bool KMAJ, int STRIDE>
__device__ __forceinline__ void frag32_load_b2(mv_u32 f[4], unsigned saddr) {
    if (KMAJ) {
        mv_ldmatrix_x4_at(f, saddr);
    } else {
        f[0] = mv_lds32_at(saddr);
        f[1] = mv_lds32_at(saddr + 4 * 4 * STRIDE);
        f[2] = mv_lds32_at(saddr + 4 * 8);
        f[3] = mv_lds32_at(saddr + 4 * (4 * STRIDE + 8));
    }
#pragma unroll
    for (int i = 0; i < 4; ++i) f[i] = mv_tf32_bits(f[i]);
}

// k-tiles kt_begin..kt_end (each BK deep) of the block's BM x BN output tile.
template <int BM, int BN, int WARPS_M, int WARPS_N, int STAGES, class Prob, int BK>
__device__ __forceinline__ void igemm_tf32_run(const Prob& pb, int kt_begin, int kt_end) {
    typedef Tile32<Prob::A_KMAJOR, BM, BK> TA;
    typedef Tile32<Prob::B_KMAJOR, BN, BK> TB;
    constexpr int NT = WARPS_M * WARPS_N * 32;
    constexpr int WTM = BM / WARPS_M, WTN = BN / WARPS_N;
    constexpr int MT = WTM / 16, NTL = WTN / 8;
    constexpr int RA = BM * BK / 4 / NT, RB = BN * BK / 4 / NT;  // runs per thread and k-tile
    static_assert(RA * NT * 4 == BM * BK && RB * NT * 4 == BN * BK, "tile not divisible");
    static_assert(NTL % 2 == 0 && STAGES >= 2, "fragment loads take two column tiles");
    static_assert(BK % 8 == 0 && WTM % 16 == 0, "whole mma steps");
    // The thread's runs share their k (k-major) or rows (row-major), as in igemm_bf16_run.
    static_assert(NT % TA::RUNS_INNER == 0 && NT % TB::RUNS_INNER == 0,
                  "a thread's runs must share their k (k-major) or their rows (row-major)");
    constexpr int STAGE = TA::ELEMS + TB::ELEMS;

    const unsigned smem = mv_smem_addr(MV_DYN_SMEM(float));
    const int tid = threadIdx.x;
    const int m0 = blockIdx.x * BM, n0 = blockIdx.y * BN;

    constexpr int A_STEP = NT / TA::RUNS_INNER * TA::STRIDE * 4, B_STEP = NT / TB::RUNS_INNER * TB::STRIDE * 4;
    typename Prob::template AIt<RA> ait;
    typename Prob::template BIt<RB> bit;
    const int a_outer = tid / TA::RUNS_INNER, a_inner = (tid % TA::RUNS_INNER) * 4;
    const int b_outer = tid / TB::RUNS_INNER, b_inner = (tid % TB::RUNS_INNER) * 4;
    const unsigned a_run = (a_outer * TA::STRIDE + a_inner) * 4, b_run = (b_outer * TB::STRIDE + b_inner) * 4;
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
    auto load = [&](int stage) {
        const unsigned sa = smem + stage * STAGE * 4;
        igemm_bf16_issue<A_STEP, B_STEP>(pb, ait, sa + a_run, bit, sa + TA::ELEMS * 4 + b_run, BK);
    };
    // Prologue: STAGES-1 tiles in flight (empty groups keep the count uniform).
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
    const unsigned a_frag = frag32_a_offset<Prob::A_KMAJOR, BM, BK>(wm, 0, lane);
    const unsigned b_frag = TA::ELEMS * 4 + frag32_b2_offset<Prob::B_KMAJOR, BN, BK>(wn, 0, lane);
    constexpr int A_MI = frag32_a_offset<Prob::A_KMAJOR, BM, BK>(16, 0, 0) - frag32_a_offset<Prob::A_KMAJOR, BM, BK>(0, 0, 0);
    constexpr int A_KS = frag32_a_offset<Prob::A_KMAJOR, BM, BK>(0, 8, 0) - frag32_a_offset<Prob::A_KMAJOR, BM, BK>(0, 0, 0);
    constexpr int B_NJ = frag32_b2_offset<Prob::B_KMAJOR, BN, BK>(16, 0, 0) - frag32_b2_offset<Prob::B_KMAJOR, BN, BK>(0, 0, 0);
    constexpr int B_KS = frag32_b2_offset<Prob::B_KMAJOR, BN, BK>(0, 8, 0) - frag32_b2_offset<Prob::B_KMAJOR, BN, BK>(0, 0, 0);

    for (int kt = kt_begin, i = 0; kt < kt_end; ++kt, ++i) {
        // Tile kt has landed once at most STAGES-2 younger groups are pending; the barrier also
        // frees the stage about to be refilled (read in the previous iteration).
        mv_cp_async_wait<STAGES - 2>();
        __syncthreads();
        if (kt + STAGES - 1 < kt_end) load((i + STAGES - 1) % STAGES);
        mv_cp_async_commit();

        const unsigned stage = smem + (i % STAGES) * STAGE * 4;
        const unsigned sa = stage + a_frag, sb = stage + b_frag;
#pragma unroll
        for (int ks = 0; ks < BK / 8; ++ks) {
            mv_u32 af[MT][4], bf[NTL][2];
#pragma unroll
            for (int mi = 0; mi < MT; ++mi) frag32_load_a<Prob::A_KMAJOR, TA::STRIDE>(af[mi], sa + mi * A_MI + ks * A_KS);
#pragma unroll
            for (int nj = 0; nj < NTL; nj += 2) {
                mv_u32 f[4];
                frag32_load_b2<Prob::B_KMAJOR, TB::STRIDE>(f, sb + (nj / 2) * B_NJ + ks * B_KS);
                bf[nj][0] = f[0];
                bf[nj][1] = f[1];
                bf[nj + 1][0] = f[2];
                bf[nj + 1][1] = f[3];
            }
#pragma unroll
            for (int mi = 0; mi < MT; ++mi)
#pragma unroll
                for (int nj = 0; nj < NTL; ++nj) mv_mma_tf32_16x8x8(acc[mi][nj], af[mi], bf[nj]);
        }
    }
    mv_cp_async_wait<0>();  // only empty groups remain; leave nothing in flight

    mv_mma_epilogue<MT, NTL>(pb, acc, m0 + wm, n0 + wn, lane);
}
