// conv_tf32.cu — convolution on f32 operands and TF32 tensor cores: the cp.async-pipelined
// implicit GEMM of conv_bf16.cu without the conversion pass (2D and 3D).
//
// The TF32 path of the launchers where every channel count involved is a multiple of 4 and
// MEDVAE_CONV_TF32=streamed (until measured on a card; the staged kernels of conv_igemm.cu are
// the default): the f32 activations, weights and gradients stream straight from global memory
// in 16-byte runs and are rounded to TF32 as fragments leave shared memory
// (medvae_igemm_tf32.cuh), so the results agree with the staged TF32 kernels up to summation
// order. Problems and layouts as in conv_bf16.cu (medvae_conv_streamed.cuh, on float):
//   forward  y[m, co]  = sum_k X[m, k] * W[k, co] (+ bias[co] + beta * y_old)   k = (tap, ci)
//   dgrad    dx[m, ci] = sum_k dY[m, k] * W^T[k, ci] (+ beta * dx_old)            k = (tap, co)
//   wgrad    dw[r, co] += sum_p X^T[r, p] * dY[p, co]                            r = (tap, ci)
// (stride-1 data gradients go through the forward problem with flipped weights; the weight
// gradient's pixel reduction is split across gridDim.z and added atomically).
//
// Entry points conv_{fwd,dgrad,wgrad}_tf32s_{128x128,64x64}: 128x128 runs 256 threads (8 warps
// of 64x32), 64x64 runs 128 (4 warps of 32x32); k-tile 32, 3 stages; dynamic shared memory
// 3 * (tile A + tile B) * 4 bytes, 104–111 KB (128x128) and 52–56 KB (64x64), computed the same
// way by the launcher (runtime/src/cuda/ops/conv_tf32.rs).
#include "medvae_conv.cuh"
#include "medvae_conv_streamed.cuh"
#include "medvae_igemm_tf32.cuh"

#define MV_TF32_STAGES 3
#define MV_TF32_BK 32

template <int BM, int BN, int WM, int WN>
__device__ __forceinline__ void conv_fwd32_impl(ConvGeom g, const float* x, const float* w, const float* bias,
                                                float* y, float beta) {
    FwdProb<float> pb;
    pb.bind(g, x, w, bias, y, beta);
    const int kt = (pb.K + MV_TF32_BK - 1) / MV_TF32_BK;
    igemm_tf32_run<BM, BN, WM, WN, MV_TF32_STAGES, FwdProb<float>, MV_TF32_BK>(pb, 0, kt);
}

template <int BM, int BN, int WM, int WN>
__device__ __forceinline__ void conv_dgrad32_impl(ConvGeom g, const float* dy, const float* w, float* dx,
                                                  float beta) {
    DgradProb<float> pb;
    pb.bind(g, dy, w, dx, beta);
    const int kt = (pb.K + MV_TF32_BK - 1) / MV_TF32_BK;
    igemm_tf32_run<BM, BN, WM, WN, MV_TF32_STAGES, DgradProb<float>, MV_TF32_BK>(pb, 0, kt);
}

// `tiles_per_split`: k-tiles (32 output pixels each) handled by each blockIdx.z.
template <int BM, int BN, int WM, int WN>
__device__ __forceinline__ void conv_wgrad32_impl(ConvGeom g, const float* x, const float* dy, float* dw,
                                                  int tiles_per_split) {
    WgradProb<float> pb;
    pb.bind(g, x, dy, dw);
    const KSplit ks = k_split(pb.K, MV_TF32_BK, tiles_per_split);
    if (ks.begin >= ks.end) return;  // uniform for the whole block
    igemm_tf32_run<BM, BN, WM, WN, MV_TF32_STAGES, WgradProb<float>, MV_TF32_BK>(pb, ks.begin, ks.end);
}

// ------------------------------------------------------------------ entry points
// The 128x128 forward asks for two blocks per SM (<= 128 registers, no spills; 2 x 105 KB of
// shared memory fit a Hopper SM); the data and weight gradients would spill under that cap
// (80-250 bytes, ptxas sm_80/sm_90) and keep one.
extern "C" __global__ void __launch_bounds__(256, 2)
    conv_fwd_tf32s_128x128(ConvGeom g, const float* x, const float* w, const float* bias, float* y, float beta) {
    conv_fwd32_impl<128, 128, 2, 4>(g, x, w, bias, y, beta);
}
extern "C" __global__ void __launch_bounds__(128)
    conv_fwd_tf32s_64x64(ConvGeom g, const float* x, const float* w, const float* bias, float* y, float beta) {
    conv_fwd32_impl<64, 64, 2, 2>(g, x, w, bias, y, beta);
}
extern "C" __global__ void __launch_bounds__(256)
    conv_dgrad_tf32s_128x128(ConvGeom g, const float* dy, const float* w, float* dx, float beta) {
    conv_dgrad32_impl<128, 128, 2, 4>(g, dy, w, dx, beta);
}
extern "C" __global__ void __launch_bounds__(128)
    conv_dgrad_tf32s_64x64(ConvGeom g, const float* dy, const float* w, float* dx, float beta) {
    conv_dgrad32_impl<64, 64, 2, 2>(g, dy, w, dx, beta);
}
extern "C" __global__ void __launch_bounds__(256)
    conv_wgrad_tf32s_128x128(ConvGeom g, const float* x, const float* dy, float* dw, int tiles_per_split) {
    conv_wgrad32_impl<128, 128, 2, 4>(g, x, dy, dw, tiles_per_split);
}
extern "C" __global__ void __launch_bounds__(128)
    conv_wgrad_tf32s_64x64(ConvGeom g, const float* x, const float* dy, float* dw, int tiles_per_split) {
    conv_wgrad32_impl<64, 64, 2, 2>(g, x, dy, dw, tiles_per_split);
}
