// gemm_tf32.cu — dense batched GEMM on f32 operands and TF32 tensor cores: the cp.async
// pipeline of medvae_igemm_tf32.cuh, for the TF32 products of gemm.cu whose extents allow
// 16-byte runs, once MEDVAE_CONV_TF32=streamed (off by default until measured on a card).
//
//   C[b] = alpha * op(A[b]) * op(B[b]) + bias[n] + beta * C[b]       b = blockIdx.z
// Layouts as in gemm.cu and gemm_bf16.cu: nn A [M, K], B [K, N]; nt A [M, K], B [N, K]; tn
// A [K, M], B [K, N] (row-major, leading dimensions lda, ldb, ldc; batch strides in elements).
// The operands are read where they are (no conversion pass) and rounded to TF32 as fragments
// leave shared memory. The launcher requires the contiguous extents, leading dimensions, batch
// strides and offsets to be multiples of 8 elements (the bf16 kernels' rule, stricter than the
// four of a run here).
// Launch: grid (ceil(M/BM), ceil(N/BN), batch), block 256 (128x128) or 128 (64x64); dynamic
// shared memory 3 stages x (A tile + B tile) x 4 bytes (igemm_tf32_smem_bytes).
#include "medvae_gemm_runs.cuh"
#include "medvae_igemm_tf32.cuh"

#define MV_GEMM_TF32_STAGES 3
#define MV_GEMM_TF32_BK 32

template <int BM, int BN, int WM, int WN, bool AK, bool BK>
__device__ __forceinline__ void gemm32_impl(const GemmGeom& g, const float* a, const float* b, const float* bias,
                                            float* c) {
    GemmRunsProb<float, AK, BK> pb;
    pb.bind(g, a, b, bias, c);
    igemm_tf32_run<BM, BN, WM, WN, MV_GEMM_TF32_STAGES, GemmRunsProb<float, AK, BK>, MV_GEMM_TF32_BK>(
        pb, 0, (g.k + MV_GEMM_TF32_BK - 1) / MV_GEMM_TF32_BK);
}

// ------------------------------------------------------------------ entry points
// The 64x64 forms ask for four blocks per SM: left to itself, ptxas gave the tn form 96
// registers and an 8-byte spill on sm_90.
extern "C" __global__ void __launch_bounds__(256)
    gemm_tf32s_128x128_nn(GemmGeom g, const float* a, const float* b, const float* bias, float* c) {
    gemm32_impl<128, 128, 2, 4, true, false>(g, a, b, bias, c);
}
extern "C" __global__ void __launch_bounds__(256)
    gemm_tf32s_128x128_nt(GemmGeom g, const float* a, const float* b, const float* bias, float* c) {
    gemm32_impl<128, 128, 2, 4, true, true>(g, a, b, bias, c);
}
extern "C" __global__ void __launch_bounds__(256)
    gemm_tf32s_128x128_tn(GemmGeom g, const float* a, const float* b, const float* bias, float* c) {
    gemm32_impl<128, 128, 2, 4, false, false>(g, a, b, bias, c);
}
extern "C" __global__ void __launch_bounds__(128, 4)
    gemm_tf32s_64x64_nn(GemmGeom g, const float* a, const float* b, const float* bias, float* c) {
    gemm32_impl<64, 64, 2, 2, true, false>(g, a, b, bias, c);
}
extern "C" __global__ void __launch_bounds__(128, 4)
    gemm_tf32s_64x64_nt(GemmGeom g, const float* a, const float* b, const float* bias, float* c) {
    gemm32_impl<64, 64, 2, 2, true, true>(g, a, b, bias, c);
}
extern "C" __global__ void __launch_bounds__(128, 4)
    gemm_tf32s_64x64_tn(GemmGeom g, const float* a, const float* b, const float* bias, float* c) {
    gemm32_impl<64, 64, 2, 2, false, false>(g, a, b, bias, c);
}
