// conv_wgmma.cu — forward convolution on Hopper's warpgroup MMA (wgmma, sm_90a), bf16 operands.
//
// The same implicit GEMM as conv_bf16.cu's forward problem, y[m, co] = sum_k X[m, k] W[k, co]
// (+ bias + beta * y_old), k = (tap, ci), but the tensor-core instruction is wgmma.mma_async
// (m64n128k16): a warpgroup (4 warps) multiplies operands straight out of shared memory, where
// mma.sync needs every fragment loaded into registers first (ldmatrix), which bounds the
// mma.sync kernels by shared-memory bandwidth on Hopper. Operands arrive as before: 16-byte
// runs by cp.async through a STAGES-deep ring (the cursors of medvae_conv_streamed.cuh).
//
// Shared-memory layout: both operands K-major (wgmma transposes only 16-bit operands, and
// K-major needs no transpose), with the 128-byte swizzle: a tile row is BK = 64 bf16 = 128 bytes,
// 16-byte chunk c of row r sits at r * 128 + ((c ^ (r % 8)) * 16), in 1024-byte atoms of 8 rows
// (so the 8 runs a group of threads writes land in 8 different bank groups). The descriptor of
// such an operand: start address >> 4, stride between 8-row groups (SBO) 1024 bytes, leading
// offset unused, swizzle mode 1 (128 B); one k16 step further is 32 bytes further.
// The weights therefore go in transposed, [Cout][taps * Cin] (conv_weight_nk_bf16 below).
//
// Entry points: conv_fwd_bf16w_128x128 (each k-tile's MMAs retired before the next) and
// conv_fwd_bf16w_128x128o (one group of MMAs left in flight while the next copies are issued);
// conv_wgrad_bf16w_128x128 and conv_wgrad_bf16w_128x128o, the weight gradient, whose operands
// (x and dy, runs of channels at one pixel) are MN-major: 128-byte rows of 64 channels at one
// pixel, swizzled alike, wgmma's transpose flags set. The `s3` forms (conv_fwd_bf16w_128x128s3,
// conv_wgrad_bf16w_128x128s3) keep 3 stages instead of 4: 97 KB of shared memory and at most
// 128 registers let 2 blocks share an SM, so that one block's prologue and epilogue (a short
// k loop: 18 k-tiles for a 128-channel 3x3 forward) overlap the other's MMAs. Candidates from
// the H200 run of 2026-11-28 (the 4-stage kernels reached 31-51 % of the card's BF16 rate,
// at one block per SM), UNVERIFIED on a GPU.
// Block: 2 warpgroups (256 threads) on a 128 x 128 output tile, warpgroup w on rows 64w..64w+63;
// accumulator fragment of m64n128 (per warp of the warpgroup: rows 16 * warp + g, g + 8, column
// chunk j = 8j + 2t, +1, with g = lane / 4, t = lane % 4) = that of 16 mma.m16n8 tiles, so the
// mma epilogue of medvae_common.cuh stores it.
// Dynamic shared memory: STAGES * (128 + 128) * 64 * 2 bytes + 1024 (to align the ring to 1024),
// STAGES = MV_WG_STAGES (4) or 3 for the s3 forms.
//
// Compiled as sm_90a on compute capability 9.0 (the registry marks this module); for any other
// architecture the body compiles to a trap and the launcher never picks it.
// The 4-stage kernels ran on an H200 (2026-11-28: parity within 2.4e-3 of the CPU); all are
// checked in the CPU emulator (which transcribes the swizzle and the descriptor from the PTX ISA
// independently) and compiled by NVRTC + ptxas for sm_90a.
#include "medvae_conv.cuh"
#include "medvae_conv_streamed.cuh"
#include "medvae_igemm_bf16.cuh"

#define MV_WG_BM 128
#define MV_WG_BN 128
#define MV_WG_BK 64
#define MV_WG_STAGES 4
#define MV_WG_THREADS 256

#if defined(__CUDA_ARCH_FEAT_SM90_ALL) || defined(MEDVAE_EMU)
#define MV_HAVE_WGMMA 1
#endif

// Byte offset of 16-byte chunk c of 128-byte row r of a 128-byte-swizzled tile (a row is 64
// k-values of one M/N row when K-major, 64 M/N values of one k when MN-major).
__device__ __forceinline__ int mv_sw128_offset(int r, int c) { return r * 128 + ((c ^ (r & 7)) << 4); }

// Descriptor of a 128-byte-swizzled operand at shared address `addr`. K-major: SBO = 1024 (8
// rows of 128 B), LBO unused (16). MN-major: LBO = the stride between 64-wide M/N groups, SBO =
// the stride between groups of 8 k-rows.
__device__ __forceinline__ unsigned long long mv_wgmma_desc_sw128(unsigned addr, unsigned lbo = 16,
                                                                  unsigned sbo = 1024) {
    return (unsigned long long)((addr & 0x3FFFFu) >> 4)      // start address, 16-byte units
           | ((unsigned long long)((lbo >> 4) & 0x3FFFu) << 16)  // leading byte offset
           | ((unsigned long long)((sbo >> 4) & 0x3FFFu) << 32)  // stride byte offset
           | (1ull << 62);                                    // swizzle mode: 128 bytes
}

#ifdef MV_HAVE_WGMMA
__device__ __forceinline__ void mv_wgmma_fence() {
#ifndef MEDVAE_EMU
    asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void mv_wgmma_commit() {
#ifndef MEDVAE_EMU
    asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
#endif
}
// Wait until at most N committed wgmma groups of this warpgroup are still in flight.
template <int N>
__device__ __forceinline__ void mv_wgmma_wait() {
#ifndef MEDVAE_EMU
    asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
#endif
}
// Order this thread's generic-proxy writes to shared memory (cp.async) before the async-proxy
// reads of wgmma.
__device__ __forceinline__ void mv_fence_proxy_async_smem() {
#ifndef MEDVAE_EMU
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
#endif
}
// d (m64n128, f32) += A (64 x 16, descriptor da) * B (16 x 128, descriptor db); A_MN / B_MN:
// the operand is MN-major (wgmma's transpose flag) rather than K-major.
template <int A_MN, int B_MN>
__device__ __forceinline__ void mv_wgmma_m64n128k16_bf16(float (&d)[16][4], unsigned long long da,
                                                         unsigned long long db) {
#ifdef MEDVAE_EMU
    emu::wgmma_m64n128k16_bf16(&d[0][0], da, db, A_MN != 0, B_MN != 0);
#else
    asm volatile(
        "{\n"
        ".reg .pred p;\n"
        "setp.ne.b32 p, %66, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 "
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, %64, %65, p, 1, 1, %67, %68;\n"
        "}\n"
        : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]),
          "+f"(d[1][0]), "+f"(d[1][1]), "+f"(d[1][2]), "+f"(d[1][3]),
          "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]),
          "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3]),
          "+f"(d[4][0]), "+f"(d[4][1]), "+f"(d[4][2]), "+f"(d[4][3]),
          "+f"(d[5][0]), "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]),
          "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3]),
          "+f"(d[7][0]), "+f"(d[7][1]), "+f"(d[7][2]), "+f"(d[7][3]),
          "+f"(d[8][0]), "+f"(d[8][1]), "+f"(d[8][2]), "+f"(d[8][3]),
          "+f"(d[9][0]), "+f"(d[9][1]), "+f"(d[9][2]), "+f"(d[9][3]),
          "+f"(d[10][0]), "+f"(d[10][1]), "+f"(d[10][2]), "+f"(d[10][3]),
          "+f"(d[11][0]), "+f"(d[11][1]), "+f"(d[11][2]), "+f"(d[11][3]),
          "+f"(d[12][0]), "+f"(d[12][1]), "+f"(d[12][2]), "+f"(d[12][3]),
          "+f"(d[13][0]), "+f"(d[13][1]), "+f"(d[13][2]), "+f"(d[13][3]),
          "+f"(d[14][0]), "+f"(d[14][1]), "+f"(d[14][2]), "+f"(d[14][3]),
          "+f"(d[15][0]), "+f"(d[15][1]), "+f"(d[15][2]), "+f"(d[15][3])
        : "l"(da), "l"(db), "r"(1), "n"(A_MN), "n"(B_MN));
#endif
}
#endif  // MV_HAVE_WGMMA

// The forward problem with the weights transposed to [Cout][K] (k-major B runs, a [N][K]
// matrix); A is FwdProb16's.
struct FwdProbNK : FwdProb16 {
    static constexpr bool B_KMAJOR = true;
    template <int R>
    using BIt = MatrixRuns<true, R>;
    template <int R>
    __device__ void b_begin(BIt<R>& it, const int (&n)[R], const int (&k)[R]) const {
        it.begin(K, n, k);
    }
    template <int R>
    __device__ bool b_src(const BIt<R>& it, int j, const mv_u16*& src) const {
        return it.src(w, N, K, j, src);
    }
    template <int R>
    __device__ void b_next(BIt<R>& it, int bk) const {
        it.next(K, bk);
    }
};

#ifdef MV_HAVE_WGMMA
// Where run c (of ROWS x BK per stage) of an operand goes, and the iterator arguments it starts
// from. K-major: 128-byte row = 64 k of one row, so run c is (row c / 8, chunk c % 8). MN-major:
// 128-byte row = 64 rows at one k; atoms of 8 k-rows (1024 B) at (row group * BK/8 + k / 8) *
// 1024, so that a k16 step is 2 atoms (2048 B) further and a 64-row group BK/8 atoms further.
// Run c + NT lies STEP bytes after run c (NT = MV_WG_THREADS, so the runs of one thread): NT
// further is NT / 8 more K-major rows (the same swizzle phase, as NT / 8 is a multiple of 8)
// or NT / (ROWS / 8) more k, whole atoms of 8 k-rows (MN-major).
template <bool MN, int ROWS>
struct WgRun {
    static_assert(MV_WG_THREADS / (MV_WG_BK / 8) % 8 == 0 && MV_WG_THREADS / (ROWS / 8) % 8 == 0,
                  "a thread's runs must keep their swizzle phase");
    static constexpr int STEP =
        MN ? MV_WG_THREADS / (ROWS / 8) / 8 * 1024 : MV_WG_THREADS / (MV_WG_BK / 8) * 128;
    int off;    // bf16 elements from the stage's tile
    int fixed;  // row (K-major) or first of eight rows (MN-major), relative to the block
    int k;      // k relative to the first k-tile
    __device__ WgRun(int c) {
        if (MN) {
            k = c / (ROWS / 8);
            fixed = (c % (ROWS / 8)) * 8;
            off = (((fixed / 64) * (MV_WG_BK / 8) + k / 8) * 1024 + mv_sw128_offset(k % 8, (fixed % 64) / 8)) / 2;
        } else {
            fixed = c / (MV_WG_BK / 8);
            k = (c % (MV_WG_BK / 8)) * 8;
            off = mv_sw128_offset(fixed, k / 8) / 2;
        }
    }
};

// Bytes from one k16 step of a stage's tile to the next: 16 k of 128-byte K-major rows (32
// bytes), or two atoms of eight MN-major k-rows.
template <bool MN>
__host__ __device__ constexpr unsigned mv_wg_ks_bytes() {
    return MN ? 2048 : 32;
}

// Descriptor of k16 step ks of the 64 (A: warpgroup wg's) or 128 (B) rows of a stage's tile at
// shared address `tile`.
template <bool MN>
__device__ __forceinline__ unsigned long long mv_wg_desc(unsigned tile, int group64, int ks) {
    const unsigned step = ks * mv_wg_ks_bytes<MN>();
    if (MN) return mv_wgmma_desc_sw128(tile + group64 * (MV_WG_BK / 8) * 1024 + step, (MV_WG_BK / 8) * 1024, 1024);
    return mv_wgmma_desc_sw128(tile + group64 * 64 * 128 + step);
}

// k-tiles kt_begin..kt_end of the block's 128 x 128 output tile of problem pb (A and B MN- or
// K-major as Prob says), stored by pb.store. OVERLAP = false: each k-tile's wgmma group is
// waited for before the next k-tile, and copies run STAGES - 1 tiles ahead. OVERLAP = true: one
// group stays in flight while the warps issue the next tile's copies, so copies run STAGES - 2
// ahead (the stage refilled at iteration i was read by group i - 2, which the wait at the end of
// iteration i - 1 retired).
template <class Prob, int STAGES, bool OVERLAP>
__device__ __forceinline__ void conv_wgmma_run(const Prob& pb, int kt_begin, int kt_end) {
    constexpr int BM = MV_WG_BM, BN = MV_WG_BN, BK = MV_WG_BK, NT = MV_WG_THREADS;
    static_assert(STAGES >= (OVERLAP ? 3 : 2), "copies must run at least one k-tile ahead");
    constexpr bool A_MN = !Prob::A_KMAJOR, B_MN = !Prob::B_KMAJOR;
    constexpr int TILE_A = BM * BK, TILE_B = BN * BK, STAGE = TILE_A + TILE_B;  // bf16 elements
    constexpr int RA = BM * BK / 8 / NT, RB = BN * BK / 8 / NT;                 // runs per thread
    static_assert(RA * NT * 8 == BM * BK && RB * NT * 8 == BN * BK, "tile not divisible");

    // The ring starts at the first 1024-byte boundary of the shared window (swizzle atoms).
    unsigned char* raw = MV_DYN_SMEM(unsigned char);
    mv_u16* smem = reinterpret_cast<mv_u16*>(raw + ((1024u - (mv_smem_addr(raw) & 1023u)) & 1023u));
    const unsigned smem_s = mv_smem_addr(smem);

    const int tid = threadIdx.x;
    const int m0 = blockIdx.x * BM, n0 = blockIdx.y * BN;
    // A thread's runs share their k (K-major: c % 8 is the thread's) or their rows (MN-major:
    // c % (ROWS / 8) is), as the iterators require.
    static_assert(NT % 8 == 0 && NT % (BM / 8) == 0 && NT % (BN / 8) == 0, "runs must share k or rows");
    typename Prob::template AIt<RA> ait;
    typename Prob::template BIt<RB> bit;
    const WgRun<A_MN, BM> a_run(tid);
    const WgRun<B_MN, BN> b_run(tid);
    {
        int a_fixed[RA], a_k[RA], b_fixed[RB], b_k[RB];
#pragma unroll
        for (int j = 0; j < RA; ++j) {
            const WgRun<A_MN, BM> r(tid + j * NT);
            a_fixed[j] = m0 + r.fixed;
            a_k[j] = kt_begin * BK + r.k;
        }
#pragma unroll
        for (int j = 0; j < RB; ++j) {
            const WgRun<B_MN, BN> r(tid + j * NT);
            b_fixed[j] = n0 + r.fixed;
            b_k[j] = kt_begin * BK + r.k;
        }
        pb.a_begin(ait, a_fixed, a_k);
        pb.b_begin(bit, b_fixed, b_k);
    }
    auto load = [&](int stage) {
        const unsigned sa = smem_s + stage * STAGE * 2;
        igemm_bf16_issue<WgRun<A_MN, BM>::STEP, WgRun<B_MN, BN>::STEP>(pb, ait, sa + a_run.off * 2, bit,
                                                                       sa + TILE_A * 2 + b_run.off * 2, BK);
    };
    constexpr int AHEAD = OVERLAP ? STAGES - 2 : STAGES - 1;  // k-tiles copied ahead
#pragma unroll
    for (int s = 0; s < AHEAD; ++s) {
        if (kt_begin + s < kt_end) load(s);
        mv_cp_async_commit();
    }

    // The descriptors of stage 0's first k16 step; another stage or step is the same descriptor
    // with its start address (bits 0-13, in 16-byte units) further on: shared addresses stay
    // below 256 KB, so the sum never carries out of the field.
    // The warpgroup index broadcast from lane 0, which tells the compiler it is warp-uniform:
    // the descriptors then live in uniform registers, as wgmma wants them, instead of being
    // moved there before every instruction.
    const int wg = __shfl_sync(0xffffffffu, tid >> 7, 0);
    const unsigned long long a_desc = mv_wg_desc<A_MN>(smem_s, wg, 0), b_desc = mv_wg_desc<B_MN>(smem_s + TILE_A * 2, 0, 0);
    constexpr unsigned A_KS = mv_wg_ks_bytes<A_MN>(), B_KS = mv_wg_ks_bytes<B_MN>();
    float acc[1][16][4];  // one m64n128 fragment = 1 x 16 mma.m16n8 tiles for the epilogue
#pragma unroll
    for (int j = 0; j < 16; ++j) acc[0][j][0] = acc[0][j][1] = acc[0][j][2] = acc[0][j][3] = 0.0f;

    for (int kt = kt_begin, i = 0; kt < kt_end; ++kt, ++i) {
        // Tile kt has landed; the fence hands it to the async proxy, the barrier tells every
        // thread that the stage refilled next (read by a wgmma group that every warpgroup has
        // retired) is free.
        mv_cp_async_wait<AHEAD - 1>();
        mv_fence_proxy_async_smem();
        __syncthreads();
        if (kt + AHEAD < kt_end) load((i + AHEAD) % STAGES);
        mv_cp_async_commit();

        const unsigned stage = (i % STAGES) * STAGE * 2;
        mv_wgmma_fence();
#pragma unroll
        for (int ks = 0; ks < BK / 16; ++ks)
            mv_wgmma_m64n128k16_bf16<A_MN, B_MN>(acc[0], a_desc + ((stage + ks * A_KS) >> 4),
                                                 b_desc + ((stage + ks * B_KS) >> 4));
        mv_wgmma_commit();
        mv_wgmma_wait<OVERLAP ? 1 : 0>();
    }
    mv_wgmma_wait<0>();
    mv_cp_async_wait<0>();

    const int warp = (tid >> 5) & 3, lane = tid & 31;
    mv_mma_epilogue<1, 16>(pb, acc, m0 + wg * 64 + warp * 16, n0, lane);
}
#endif  // MV_HAVE_WGMMA

template <int STAGES, bool OVERLAP>
__device__ __forceinline__ void conv_fwd_wgmma_impl(ConvGeom g, const mv_u16* x, const mv_u16* wt,
                                                    const float* bias, float* y, float beta) {
#ifdef MV_HAVE_WGMMA
    FwdProbNK pb;
    pb.bind(g, x, wt, bias, y, beta);
    conv_wgmma_run<FwdProbNK, STAGES, OVERLAP>(pb, 0, (pb.K + MV_WG_BK - 1) / MV_WG_BK);
#else
    __trap();
#endif
}

extern "C" __global__ void __launch_bounds__(MV_WG_THREADS)
    conv_fwd_bf16w_128x128(ConvGeom g, const mv_u16* x, const mv_u16* wt, const float* bias, float* y, float beta) {
    conv_fwd_wgmma_impl<MV_WG_STAGES, false>(g, x, wt, bias, y, beta);
}
extern "C" __global__ void __launch_bounds__(MV_WG_THREADS)
    conv_fwd_bf16w_128x128o(ConvGeom g, const mv_u16* x, const mv_u16* wt, const float* bias, float* y, float beta) {
    conv_fwd_wgmma_impl<MV_WG_STAGES, true>(g, x, wt, bias, y, beta);
}
// Two blocks per SM: the second __launch_bounds__ argument caps registers at 128 a thread.
extern "C" __global__ void __launch_bounds__(MV_WG_THREADS, 2)
    conv_fwd_bf16w_128x128s3(ConvGeom g, const mv_u16* x, const mv_u16* wt, const float* bias, float* y, float beta) {
    conv_fwd_wgmma_impl<3, false>(g, x, wt, bias, y, beta);
}

// dw[r, co] += sum over output pixels p of x[p's tap position, ci] dy[p, co], r = (tap, ci): both
// operands MN-major (runs of eight channels at one pixel), the pixel reduction split across
// gridDim.z (`tiles_per_split` k-tiles of 64 pixels each), splits added atomically.
template <int STAGES, bool OVERLAP>
__device__ __forceinline__ void conv_wgrad_wgmma_impl(ConvGeom g, const mv_u16* x, const mv_u16* dy, float* dw,
                                                      int tiles_per_split) {
#ifdef MV_HAVE_WGMMA
    WgradProb16 pb;
    pb.bind(g, x, dy, dw);
    const KSplit ks = k_split(pb.K, MV_WG_BK, tiles_per_split);
    if (ks.begin >= ks.end) return;  // uniform for the whole block
    conv_wgmma_run<WgradProb16, STAGES, OVERLAP>(pb, ks.begin, ks.end);
#else
    __trap();
#endif
}

extern "C" __global__ void __launch_bounds__(MV_WG_THREADS)
    conv_wgrad_bf16w_128x128(ConvGeom g, const mv_u16* x, const mv_u16* dy, float* dw, int tiles_per_split) {
    conv_wgrad_wgmma_impl<MV_WG_STAGES, false>(g, x, dy, dw, tiles_per_split);
}
extern "C" __global__ void __launch_bounds__(MV_WG_THREADS)
    conv_wgrad_bf16w_128x128o(ConvGeom g, const mv_u16* x, const mv_u16* dy, float* dw, int tiles_per_split) {
    conv_wgrad_wgmma_impl<MV_WG_STAGES, true>(g, x, dy, dw, tiles_per_split);
}
extern "C" __global__ void __launch_bounds__(MV_WG_THREADS, 2)
    conv_wgrad_bf16w_128x128s3(ConvGeom g, const mv_u16* x, const mv_u16* dy, float* dw, int tiles_per_split) {
    conv_wgrad_wgmma_impl<3, false>(g, x, dy, dw, tiles_per_split);
}

// wt[n * K + k] = bf16(w[k * N + n]): weights [taps, Cin, Cout] (K = taps * Cin rows) to the
// k-major [Cout][K] operand of conv_fwd_bf16w (rounded as cvt_f32_bf16 does).
extern "C" __global__ void __launch_bounds__(256) conv_weight_nk_bf16(const float* w, mv_u16* wt, int K, int N) {
    const mv_i64 total = (mv_i64)K * N;
    for (mv_i64 i = mv_global_tid(); i < total; i += mv_global_stride()) {
        const mv_i64 n = i / K, k = i - n * K;
        wt[i] = mv_f32_to_bf16(w[k * N + n]);
    }
}
