// medvae_common.cuh — helpers shared by every CUDA kernel of medvae-fast.
//
// Every .cu file is compiled on its own by NVRTC, with this header supplied in memory under the
// name "medvae_common.cuh" (no include path, no CUDA toolkit headers needed). The same sources
// also build with g++ under MEDVAE_EMU (kernels/cuda/emu/emu.h), a fiber-based emulator that
// runs them on the CPU for logic checks; so device-only constructs (inline PTX, cp.async,
// dynamic shared memory) are wrapped here and nowhere else.
//
// Layout conventions (mirroring the CPU kernels): activations channels-last [N, D, H, W, C],
// convolution weights tap-major [kd, kh, kw, Cin, Cout]. Backward kernels overwrite input
// gradients and accumulate (+=) parameter gradients.
#pragma once

#ifdef MEDVAE_EMU
#include "emu/emu.h"
#define MV_DYN_SMEM(T) (reinterpret_cast<T*>(emu::dyn_smem()))
#else
#define MV_DYN_SMEM(T) (reinterpret_cast<T*>(mv_dyn_smem))
extern __shared__ __align__(16) unsigned char mv_dyn_smem[];
#endif

typedef unsigned int mv_u32;
typedef unsigned short mv_u16;
typedef long long mv_i64;

#define MV_INF (__int_as_float(0x7f800000))
#define MV_FULL_MASK 0xffffffffu

// ------------------------------------------------------------------ scalar helpers
__device__ __forceinline__ float mv_sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

// Round-to-nearest-even f32 -> bf16 bits (NaN stays NaN).
__device__ __forceinline__ mv_u16 mv_f32_to_bf16(float f) {
    mv_u32 u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (mv_u16)((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (mv_u16)(u >> 16);
}
__device__ __forceinline__ float mv_bf16_to_f32(mv_u16 h) { return __uint_as_float(((mv_u32)h) << 16); }
// Two bf16 in one register: `lo` (smaller k index) in the low half, as mma fragments want.
__device__ __forceinline__ mv_u32 mv_pack_bf16(mv_u16 lo, mv_u16 hi) { return (mv_u32)lo | ((mv_u32)hi << 16); }

// f32 -> tf32 (round to nearest, ties away), returned as f32 bits with the low 13 bits clear.
__device__ __forceinline__ float mv_to_tf32(float x) {
#ifdef MEDVAE_EMU
    return emu::round_tf32(x);
#else
    mv_u32 r;
    asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(x));
    return __uint_as_float(r);
#endif
}

// ------------------------------------------------------------------ warp / block reductions
__device__ __forceinline__ float mv_warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(MV_FULL_MASK, v, o);
    return v;
}
__device__ __forceinline__ float mv_warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(MV_FULL_MASK, v, o));
    return v;
}
// Sum over an aligned group of `W` lanes (W a power of two <= 32), result in every lane of it.
template <int W>
__device__ __forceinline__ float mv_group_sum(float v) {
#pragma unroll
    for (int o = W / 2; o > 0; o >>= 1) v += __shfl_xor_sync(MV_FULL_MASK, v, o);
    return v;
}
template <int W>
__device__ __forceinline__ float mv_group_max(float v) {
#pragma unroll
    for (int o = W / 2; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(MV_FULL_MASK, v, o));
    return v;
}

// Block-wide sum for a 1-D block whose size is a multiple of 32. `scratch` holds >= 32 floats of
// shared memory. Every thread gets the result; scratch may be reused after return.
__device__ __forceinline__ float mv_block_sum(float v, float* scratch) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    v = mv_warp_sum(v);
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    float r = (lane < nwarps) ? scratch[lane] : 0.0f;
    r = mv_warp_sum(r);  // every warp reduces the partials: no second broadcast needed
    __syncthreads();
    return r;
}
__device__ __forceinline__ float mv_block_max(float v, float* scratch) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    v = mv_warp_max(v);
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    float r = (lane < nwarps) ? scratch[lane] : -MV_INF;
    r = mv_warp_max(r);
    __syncthreads();
    return r;
}
// Same for doubles (used where long f32 sums would lose precision in final merges).
__device__ __forceinline__ double mv_warp_sum_f64(double v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(MV_FULL_MASK, v, o);
    return v;
}
__device__ __forceinline__ double mv_block_sum_f64(double v, double* scratch) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    v = mv_warp_sum_f64(v);
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    double r = (lane < nwarps) ? scratch[lane] : 0.0;
    r = mv_warp_sum_f64(r);
    __syncthreads();
    return r;
}

// ------------------------------------------------------------------ tensor-core MMA (sm_80+)
// D = A*B + D for one warp. Fragment layouts (PTX ISA, "Matrix fragments for mma.m16n8k8 /
// m16n8k16"), with g = lane / 4, t = lane % 4:
//   tf32 m16n8k8:  a0 (g, t)  a1 (g+8, t)  a2 (g, t+4)  a3 (g+8, t+4);  b0 (k=t, n=g)  b1 (k=t+4, n=g)
//   bf16 m16n8k16: a0 (g, 2t..2t+1) a1 (g+8, 2t..) a2 (g, 2t+8..) a3 (g+8, 2t+8..);
//                  b0 (k=2t..2t+1, n=g) b1 (k=2t+8.., n=g)  [lower k in the low 16 bits]
//   accumulator:   c0 (g, 2t)  c1 (g, 2t+1)  c2 (g+8, 2t)  c3 (g+8, 2t+1)
__device__ __forceinline__ void mv_mma_tf32_16x8x8(float c[4], const mv_u32 a[4], const mv_u32 b[2]) {
#ifdef MEDVAE_EMU
    emu::mma_tf32_16x8x8(c, a, b);
#else
    asm volatile(
        "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#endif
}
__device__ __forceinline__ void mv_mma_bf16_16x8x16(float c[4], const mv_u32 a[4], const mv_u32 b[2]) {
#ifdef MEDVAE_EMU
    emu::mma_bf16_16x8x16(c, a, b);
#else
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#endif
}

// ------------------------------------------------------------------ shared-window addresses
// The 32-bit shared-window address of a pointer into dynamic shared memory (in the emulator,
// its offset from the dynamic shared memory). Main loops compute it once and step it with
// constants, so that ldmatrix and cp.async take [register + immediate] addresses instead of a
// generic-to-shared conversion per access.
__device__ __forceinline__ unsigned mv_smem_addr(const void* p) {
#ifdef MEDVAE_EMU
    return (unsigned)(static_cast<const unsigned char*>(p) - emu::dyn_smem());
#else
    return (unsigned)__cvta_generic_to_shared(p);
#endif
}

// ------------------------------------------------------------------ ldmatrix (sm_75+)
// Four 8x8 b16 matrices from shared memory, one warp. Lane l supplies the address of row l % 8
// of matrix l / 8 (16 bytes, 16-byte aligned). Register q of lane l receives, of matrix q:
//   plain:  row l/4, elements 2(l%4) and 2(l%4)+1 (the lower one in the low 16 bits);
//   .trans: column l/4, rows 2(l%4) and 2(l%4)+1 (the transposed matrix, same packing).
// At shared-window address saddr (mv_smem_addr).
__device__ __forceinline__ void mv_ldmatrix_x4_at(mv_u32 r[4], unsigned saddr) {
#ifdef MEDVAE_EMU
    if (saddr + 16 > emu::ctx().dyn.size()) emu::die("ldmatrix row outside dynamic shared memory");
    emu::ldmatrix_x4(r, emu::dyn_smem() + saddr, false);
#else
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(saddr));
#endif
}
__device__ __forceinline__ void mv_ldmatrix_x4_trans_at(mv_u32 r[4], unsigned saddr) {
#ifdef MEDVAE_EMU
    if (saddr + 16 > emu::ctx().dyn.size()) emu::die("ldmatrix row outside dynamic shared memory");
    emu::ldmatrix_x4(r, emu::dyn_smem() + saddr, true);
#else
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(saddr));
#endif
}

// One 32-bit word from shared-window address saddr (fragment loads that ldmatrix cannot make).
__device__ __forceinline__ mv_u32 mv_lds32_at(unsigned saddr) {
#ifdef MEDVAE_EMU
    if (saddr + 4 > emu::ctx().dyn.size()) emu::die("shared load outside dynamic shared memory");
    mv_u32 v;
    memcpy(&v, emu::dyn_smem() + saddr, 4);
    return v;
#else
    mv_u32 v;
    asm volatile("ld.shared.b32 %0, [%1];\n" : "=r"(v) : "r"(saddr));
    return v;
#endif
}

// ------------------------------------------------------------------ cp.async (sm_80+)
// 16-byte global->shared copy; when `pred` is false the destination is zero-filled and the
// source is not read (src-size 0). `gmem` must still be a valid pointer expression.
__device__ __forceinline__ void mv_cp_async16(void* smem, const void* gmem, bool pred) {
#ifdef MEDVAE_EMU
    if (pred) memcpy(smem, gmem, 16);
    else memset(smem, 0, 16);
#else
    const unsigned s = (unsigned)__cvta_generic_to_shared(smem);
    const int n = pred ? 16 : 0;
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(n));
#endif
}
// The same to a shared-window address (mv_smem_addr).
__device__ __forceinline__ void mv_cp_async16_at(unsigned saddr, const void* gmem, bool pred) {
#ifdef MEDVAE_EMU
    if (saddr + 16 > emu::ctx().dyn.size()) emu::die("cp.async destination outside dynamic shared memory");
    if (pred) memcpy(emu::dyn_smem() + saddr, gmem, 16);
    else memset(emu::dyn_smem() + saddr, 0, 16);
#else
    const int n = pred ? 16 : 0;
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(saddr), "l"(gmem), "r"(n));
#endif
}
// 4-byte variant (for rows that are not 16-byte aligned).
__device__ __forceinline__ void mv_cp_async4(void* smem, const void* gmem, bool pred) {
#ifdef MEDVAE_EMU
    if (pred) memcpy(smem, gmem, 4);
    else memset(smem, 0, 4);
#else
    const unsigned s = (unsigned)__cvta_generic_to_shared(smem);
    const int n = pred ? 4 : 0;
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(s), "l"(gmem), "r"(n));
#endif
}
__device__ __forceinline__ void mv_cp_async_commit() {
#ifndef MEDVAE_EMU
    asm volatile("cp.async.commit_group;\n" ::);
#endif
}
// Wait until at most N committed groups are still in flight.
template <int N>
__device__ __forceinline__ void mv_cp_async_wait() {
#ifndef MEDVAE_EMU
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
#endif
}

// ------------------------------------------------------------------ gradient outputs
// Upstream scale of a loss gradient: `scale * (*gscale)`, gscale an optional device scalar.
__device__ __forceinline__ float mv_gscale(float scale, const float* gscale) { return gscale ? scale * *gscale : scale; }
// grad = g + beta * grad_old; the old value is not read when beta == 0 (it may be garbage).
__device__ __forceinline__ void mv_store_grad(float* p, float g, float beta) { *p = beta != 0.0f ? g + beta * *p : g; }

// A GEMM epilogue's output element: *p = acc (+ *bias_n) (+ beta * *p, not read when beta == 0).
__device__ __forceinline__ void mv_store_out(float* p, float acc, const float* bias_n, float beta) {
    float r = acc;
    if (bias_n) r += *bias_n;
    if (beta != 0.0f) r += beta * *p;
    *p = r;
}

// The epilogue of an mma.sync warp tile of MT x NTL 16x8 accumulator tiles whose first element
// is (row0, col0): element e of tile (i, j) sits at row lane/4 (+8 for e >= 2) and column
// 2*(lane%4) + (e & 1) of its tile; `pb.store(m, n, v)` takes those inside [M, N).
template <int MT, int NTL, class Prob>
__device__ __forceinline__ void mv_mma_epilogue(const Prob& pb, const float (&acc)[MT][NTL][4], int row0, int col0,
                                                int lane) {
    const int lg = lane >> 2, lt = lane & 3;
#pragma unroll
    for (int i = 0; i < MT; ++i)
#pragma unroll
        for (int j = 0; j < NTL; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int m = row0 + i * 16 + lg + (e >= 2 ? 8 : 0);
                const int n = col0 + j * 8 + 2 * lt + (e & 1);
                if (m < pb.M && n < pb.N) pb.store(m, n, acc[i][j][e]);
            }
}

// ------------------------------------------------------------------ grid-stride helpers
__device__ __forceinline__ mv_i64 mv_global_tid() { return (mv_i64)blockIdx.x * blockDim.x + threadIdx.x; }
__device__ __forceinline__ mv_i64 mv_global_stride() { return (mv_i64)gridDim.x * blockDim.x; }
