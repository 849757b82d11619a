// softmax.cu — softmax over the last dimension, forward and backward.
//
// x, y: [rows, cols], one block (multiple of 32 threads) per row, grid (rows).
//   forward:  y = exp(x - max) / sum exp(x - max)
//   backward: dx = y * (dy - sum(dy * y))   (+ dx_beta * dx_old)
#include "medvae_common.cuh"

extern "C" __global__ void softmax_fwd(const float* __restrict__ x, float* __restrict__ y, int cols) {
    __shared__ float scratch[32];
    const float* xr = x + (mv_i64)blockIdx.x * cols;
    float* yr = y + (mv_i64)blockIdx.x * cols;
    float m = -MV_INF;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) m = fmaxf(m, xr[c]);
    m = mv_block_max(m, scratch);
    float s = 0.0f;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) s += expf(xr[c] - m);
    const float inv = 1.0f / mv_block_sum(s, scratch);
    for (int c = threadIdx.x; c < cols; c += blockDim.x) yr[c] = expf(xr[c] - m) * inv;
}

extern "C" __global__ void softmax_bwd(const float* __restrict__ y, const float* __restrict__ dy, float* dx, int cols,
                                       float dx_beta) {
    __shared__ float scratch[32];
    const mv_i64 off = (mv_i64)blockIdx.x * cols;
    float s = 0.0f;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) s += dy[off + c] * y[off + c];
    const float dot = mv_block_sum(s, scratch);
    for (int c = threadIdx.x; c < cols; c += blockDim.x)
        mv_store_grad(dx + off + c, y[off + c] * (dy[off + c] - dot), dx_beta);
}
