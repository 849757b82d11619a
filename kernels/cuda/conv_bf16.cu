// conv_bf16.cu — convolution on bf16 operands: cp.async-pipelined implicit GEMM (2D and 3D).
//
// The BF16 path of the launchers, where every channel count involved is a multiple of 8: the
// f32 operands are first rounded to bf16 buffers (`cvt_f32_bf16`, the same round-to-nearest-even
// as the staging of conv_igemm.cu, so the results agree with those kernels up to summation
// order), and the GEMMs then stream 16-byte runs with cp.async through a STAGES-deep shared
// memory ring (medvae_igemm_bf16.cuh). Layouts as in conv_igemm.cu: channels-last activations,
// weights [kd, kh, kw, Cin, Cout]:
//   forward  y[m, co]  = sum_k X[m, k] * W[k, co] (+ bias[co] + beta * y_old)   k = (tap, ci)
//   dgrad    dx[m, ci] = sum_k dY[m, k] * W^T[k, ci] (+ beta * dx_old)            k = (tap, co)
//   wgrad    dw[r, co] += sum_p X^T[r, p] * dY[p, co]                            r = (tap, ci)
// (The launcher sends stride-1 data gradients through the forward problem with flipped weights,
// which skips the divisibility tests; the dgrad problem serves the strided convolutions.)
// The weight-gradient reduction over pixels is split across gridDim.z, atomically added.
//
// Entry points: cvt_f32_bf16; conv_{fwd,dgrad,wgrad}_bf16s_{128x128,64x64} ("s" for
// streamed), and the tuning candidates conv_{fwd,wgrad}_bf16s_{256x128,128x128w4,128x128k64}
// (bottom of the file). 128x128, 256x128 and 128x128k64 run 256 threads, 64x64 and 128x128w4
// run 128; dynamic shared memory STAGES * (tile A + tile B) * 2 bytes, STAGES = 4 (3 for the
// 64-deep k-tile); the launcher (conv_plan.rs) computes the same figure.
#include "medvae_conv.cuh"
#include "medvae_conv_streamed.cuh"
#include "medvae_igemm_bf16.cuh"

#define MV_CONV_STAGES 4

// y[i] = bf16(x[i]) (round to nearest even, NaN kept), n elements. Memory-bound: four elements
// per thread and step (one 16-byte load, one 8-byte store) where both buffers allow it.
extern "C" __global__ void __launch_bounds__(256) cvt_f32_bf16(const float* x, mv_u16* y, mv_i64 n) {
    const bool vec = ((unsigned long long)x & 15ull) == 0 && ((unsigned long long)y & 7ull) == 0;
    const mv_i64 n4 = vec ? n / 4 : 0;
    for (mv_i64 i = mv_global_tid(); i < n4; i += mv_global_stride()) {
        const float4 v = reinterpret_cast<const float4*>(x)[i];
        mv_u32* out = reinterpret_cast<mv_u32*>(y + 4 * i);
        out[0] = mv_pack_bf16(mv_f32_to_bf16(v.x), mv_f32_to_bf16(v.y));
        out[1] = mv_pack_bf16(mv_f32_to_bf16(v.z), mv_f32_to_bf16(v.w));
    }
    for (mv_i64 i = 4 * n4 + mv_global_tid(); i < n; i += mv_global_stride()) y[i] = mv_f32_to_bf16(x[i]);
}

template <int BM, int BN, int WM, int WN, int STAGES = MV_CONV_STAGES, int BK = MV_BK16>
__device__ __forceinline__ void conv_fwd16_impl(ConvGeom g, const mv_u16* x, const mv_u16* w, const float* bias,
                                                float* y, float beta) {
    FwdProb16 pb;
    pb.bind(g, x, w, bias, y, beta);
    const int kt = (pb.K + BK - 1) / BK;
    igemm_bf16_run<BM, BN, WM, WN, STAGES, FwdProb16, BK>(pb, 0, kt);
}

template <int BM, int BN, int WM, int WN, int STAGES = MV_CONV_STAGES, int BK = MV_BK16>
__device__ __forceinline__ void conv_dgrad16_impl(ConvGeom g, const mv_u16* dy, const mv_u16* w, float* dx,
                                                  float beta) {
    DgradProb16 pb;
    pb.bind(g, dy, w, dx, beta);
    const int kt = (pb.K + BK - 1) / BK;
    igemm_bf16_run<BM, BN, WM, WN, STAGES, DgradProb16, BK>(pb, 0, kt);
}

// `tiles_per_split`: k-tiles (BK output pixels each) handled by each blockIdx.z.
template <int BM, int BN, int WM, int WN, int STAGES = MV_CONV_STAGES, int BK = MV_BK16>
__device__ __forceinline__ void conv_wgrad16_impl(ConvGeom g, const mv_u16* x, const mv_u16* dy, float* dw,
                                                  int tiles_per_split) {
    WgradProb16 pb;
    pb.bind(g, x, dy, dw);
    const KSplit ks = k_split(pb.K, BK, tiles_per_split);
    if (ks.begin >= ks.end) return;  // uniform for the whole block
    igemm_bf16_run<BM, BN, WM, WN, STAGES, WgradProb16, BK>(pb, ks.begin, ks.end);
}

// ------------------------------------------------------------------ entry points
extern "C" __global__ void __launch_bounds__(256)
    conv_fwd_bf16s_128x128(ConvGeom g, const mv_u16* x, const mv_u16* w, const float* bias, float* y, float beta) {
    conv_fwd16_impl<128, 128, 2, 4>(g, x, w, bias, y, beta);
}
extern "C" __global__ void __launch_bounds__(128)
    conv_fwd_bf16s_64x64(ConvGeom g, const mv_u16* x, const mv_u16* w, const float* bias, float* y, float beta) {
    conv_fwd16_impl<64, 64, 2, 2>(g, x, w, bias, y, beta);
}
extern "C" __global__ void __launch_bounds__(256)
    conv_dgrad_bf16s_128x128(ConvGeom g, const mv_u16* dy, const mv_u16* w, float* dx, float beta) {
    conv_dgrad16_impl<128, 128, 2, 4>(g, dy, w, dx, beta);
}
extern "C" __global__ void __launch_bounds__(128)
    conv_dgrad_bf16s_64x64(ConvGeom g, const mv_u16* dy, const mv_u16* w, float* dx, float beta) {
    conv_dgrad16_impl<64, 64, 2, 2>(g, dy, w, dx, beta);
}
extern "C" __global__ void __launch_bounds__(256)
    conv_wgrad_bf16s_128x128(ConvGeom g, const mv_u16* x, const mv_u16* dy, float* dw, int tiles_per_split) {
    conv_wgrad16_impl<128, 128, 2, 4>(g, x, dy, dw, tiles_per_split);
}
extern "C" __global__ void __launch_bounds__(128)
    conv_wgrad_bf16s_64x64(ConvGeom g, const mv_u16* x, const mv_u16* dy, float* dw, int tiles_per_split) {
    conv_wgrad16_impl<64, 64, 2, 2>(g, x, dy, dw, tiles_per_split);
}

// Candidate tiles for tuning on a card (MEDVAE_CONV_TILE / MEDVAE_WGRAD_TILE; the launcher's
// defaults stay 128x128 and 64x64 until these are measured): 256x128 and 128x128w4 give each of
// 8 or 4 warps a 64x64 warp tile; 128x128k64 keeps 8 warps of 64x32 with a 64-deep k-tile and
// 3 stages (107 KB of shared memory, as 4 stages of BK 32 would need 143 KB).
extern "C" __global__ void __launch_bounds__(256)
    conv_fwd_bf16s_256x128(ConvGeom g, const mv_u16* x, const mv_u16* w, const float* bias, float* y, float beta) {
    conv_fwd16_impl<256, 128, 4, 2>(g, x, w, bias, y, beta);
}
extern "C" __global__ void __launch_bounds__(128)
    conv_fwd_bf16s_128x128w4(ConvGeom g, const mv_u16* x, const mv_u16* w, const float* bias, float* y, float beta) {
    conv_fwd16_impl<128, 128, 2, 2>(g, x, w, bias, y, beta);
}
extern "C" __global__ void __launch_bounds__(256)
    conv_fwd_bf16s_128x128k64(ConvGeom g, const mv_u16* x, const mv_u16* w, const float* bias, float* y, float beta) {
    conv_fwd16_impl<128, 128, 2, 4, 3, 64>(g, x, w, bias, y, beta);
}
extern "C" __global__ void __launch_bounds__(256)
    conv_wgrad_bf16s_256x128(ConvGeom g, const mv_u16* x, const mv_u16* dy, float* dw, int tiles_per_split) {
    conv_wgrad16_impl<256, 128, 4, 2>(g, x, dy, dw, tiles_per_split);
}
extern "C" __global__ void __launch_bounds__(128)
    conv_wgrad_bf16s_128x128w4(ConvGeom g, const mv_u16* x, const mv_u16* dy, float* dw, int tiles_per_split) {
    conv_wgrad16_impl<128, 128, 2, 2>(g, x, dy, dw, tiles_per_split);
}
extern "C" __global__ void __launch_bounds__(256)
    conv_wgrad_bf16s_128x128k64(ConvGeom g, const mv_u16* x, const mv_u16* dy, float* dw, int tiles_per_split) {
    conv_wgrad16_impl<128, 128, 2, 4, 3, 64>(g, x, dy, dw, tiles_per_split);
}
