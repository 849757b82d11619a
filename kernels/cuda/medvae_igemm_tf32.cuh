// medvae_igemm_tf32.cuh — the pipelined tensor-core GEMM main loop of medvae_igemm_bf16.cuh, for
// f32 operands on TF32 tensor cores (mma m16n8k8, f32 accumulation): conv_tf32.cu.
//
// The operands stay f32 in global memory: no conversion pass. Every 16-byte run of four
// elements goes straight to shared memory with cp.async (zero-filled where the problem
// predicates it off), STAGES k-tiles in flight, and each fragment register is rounded to TF32
// (cvt.rna: nearest, ties away) as it leaves shared memory, the rounding of the staged TF32
// kernels of conv_igemm.cu. The main loop (igemm_streamed_run, medvae_igemm_streamed.cuh), the
// problem classes (instantiated on float: medvae_conv_streamed.cuh, medvae_gemm_runs.cuh), their
// iterators and the copy issue are the bf16 loop's; only the run length (four elements, so
// channel counts must be multiples of 4), the tile layouts and the fragment loads differ:
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
#include "medvae_igemm_streamed.cuh"

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

// The TF32 operand type of igemm_streamed_run: runs of four f32, mma m16n8k8, fragments as
// above, rounded on load.
struct Tf32Frags {
    static constexpr int ELEM_BYTES = 4, RUN = 4, KSTEP = 8;
    template <bool KMAJ, int ROWS, int BK>
    using Tile = Tile32<KMAJ, ROWS, BK>;
    template <bool KMAJ, int ROWS, int BK>
    __host__ __device__ static constexpr int a_offset(int r0, int k0, int lane) {
        return frag32_a_offset<KMAJ, ROWS, BK>(r0, k0, lane);
    }
    template <bool KMAJ, int ROWS, int BK>
    __host__ __device__ static constexpr int b2_offset(int n0, int k0, int lane) {
        return frag32_b2_offset<KMAJ, ROWS, BK>(n0, k0, lane);
    }
    template <bool KMAJ, int STRIDE>
    __device__ static void load_a(mv_u32 f[4], unsigned saddr) {
        frag32_load_a<KMAJ, STRIDE>(f, saddr);
    }
    template <bool KMAJ, int STRIDE>
    __device__ static void load_b2(mv_u32 f[4], unsigned saddr) {
        frag32_load_b2<KMAJ, STRIDE>(f, saddr);
    }
    __device__ static void mma(float c[4], const mv_u32 a[4], const mv_u32 b[2]) { mv_mma_tf32_16x8x8(c, a, b); }
};

// k-tiles kt_begin..kt_end (each BK deep) of the block's BM x BN output tile, on f32 operands.
template <int BM, int BN, int WARPS_M, int WARPS_N, int STAGES, class Prob, int BK>
__device__ __forceinline__ void igemm_tf32_run(const Prob& pb, int kt_begin, int kt_end) {
    igemm_streamed_run<Tf32Frags, BM, BN, WARPS_M, WARPS_N, STAGES, Prob, BK>(pb, kt_begin, kt_end);
}
