// gemm_bf16.cu — dense batched GEMM on bf16 operands: the cp.async-pipelined main loop of
// medvae_igemm_bf16.cuh, for the products of gemm.cu whose extents allow 16-byte runs.
//
//   C[b] = alpha * op(A[b]) * op(B[b]) + bias[n] + beta * C[b]       b = blockIdx.z
// with A and B already rounded to bf16 (cvt_f32_bf16 of conv_bf16.cu) and C in f32. Layouts as
// in gemm.cu: nn A [M, K], B [K, N]; nt A [M, K], B [N, K]; tn A [K, M], B [K, N] (row-major,
// leading dimensions lda, ldb, ldc; batch strides sa, sb, sc in elements). The launcher uses
// these kernels only when every run of eight elements along a contiguous side stays inside
// its row: the contiguous extents, the leading dimensions, the batch strides and the offsets
// are multiples of 8.
// Launch: grid (ceil(M/BM), ceil(N/BN), batch), block 256 (128x128) or 128 (64x64); dynamic
// shared memory 4 stages x (A tile + B tile) x 2 bytes.
#include "medvae_gemm.cuh"
#include "medvae_gemm_runs.cuh"
#include "medvae_igemm_bf16.cuh"

template <int BM, int BN, int WM, int WN, bool AK, bool BK>
__device__ __forceinline__ void gemm16_impl(const GemmGeom& g, const mv_u16* a, const mv_u16* b,
                                            const float* bias, float* c) {
    GemmProb16<AK, BK> pb;
    pb.bind(g, a, b, bias, c);
    igemm_bf16_run<BM, BN, WM, WN, 4>(pb, 0, (g.k + MV_BK16 - 1) / MV_BK16);
}

// ------------------------------------------------------------------ entry points
extern "C" __global__ void __launch_bounds__(256)
    gemm_bf16s_128x128_nn(GemmGeom g, const mv_u16* a, const mv_u16* b, const float* bias, float* c) {
    gemm16_impl<128, 128, 2, 4, true, false>(g, a, b, bias, c);
}
extern "C" __global__ void __launch_bounds__(256)
    gemm_bf16s_128x128_nt(GemmGeom g, const mv_u16* a, const mv_u16* b, const float* bias, float* c) {
    gemm16_impl<128, 128, 2, 4, true, true>(g, a, b, bias, c);
}
extern "C" __global__ void __launch_bounds__(256)
    gemm_bf16s_128x128_tn(GemmGeom g, const mv_u16* a, const mv_u16* b, const float* bias, float* c) {
    gemm16_impl<128, 128, 2, 4, false, false>(g, a, b, bias, c);
}
extern "C" __global__ void __launch_bounds__(128)
    gemm_bf16s_64x64_nn(GemmGeom g, const mv_u16* a, const mv_u16* b, const float* bias, float* c) {
    gemm16_impl<64, 64, 2, 2, true, false>(g, a, b, bias, c);
}
extern "C" __global__ void __launch_bounds__(128)
    gemm_bf16s_64x64_nt(GemmGeom g, const mv_u16* a, const mv_u16* b, const float* bias, float* c) {
    gemm16_impl<64, 64, 2, 2, true, true>(g, a, b, bias, c);
}
extern "C" __global__ void __launch_bounds__(128)
    gemm_bf16s_64x64_tn(GemmGeom g, const mv_u16* a, const mv_u16* b, const float* bias, float* c) {
    gemm16_impl<64, 64, 2, 2, false, false>(g, a, b, bias, c);
}
