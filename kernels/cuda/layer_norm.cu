// layer_norm.cu — LayerNorm over the last dimension, forward and backward (the ViT tower).
//
// x: [rows, C], one warp per row (block of 256 = 8 rows). Forward, two passes over the row
// (mean, then centred variance): y = (x - mean) * rstd * gamma + beta, saving mean/rstd [rows]
// (nullable). Backward, with dxh = dy * gamma:
//   dx = rstd * (dxh - mean(dxh) - xhat * mean(dxh * xhat))      (+ dx_beta * dx_old)
//   dgamma[c] += sum_rows dy * xhat, dbeta[c] += sum_rows dy     (per-block shared sums, then
//   one atomic per channel and block). Limits: C <= 4096.
#include "medvae_common.cuh"

#define LN_MAX_C 4096

extern "C" __global__ void __launch_bounds__(256)
    ln_fwd(const float* __restrict__ x, const float* __restrict__ gamma, const float* __restrict__ beta,
           float* __restrict__ y, float* __restrict__ mean, float* __restrict__ rstd, int rows, int C, float eps) {
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int row = blockIdx.x * (blockDim.x >> 5) + warp;
    if (row >= rows) return;  // whole warp; no block barrier below
    const float* xr = x + (mv_i64)row * C;
    float s = 0.0f;
    for (int c = lane; c < C; c += 32) s += xr[c];
    const float mu = mv_warp_sum(s) / (float)C;
    float q = 0.0f;
    for (int c = lane; c < C; c += 32) {
        const float d = xr[c] - mu;
        q += d * d;
    }
    const float rs = rsqrtf(mv_warp_sum(q) / (float)C + eps);
    float* yr = y + (mv_i64)row * C;
    for (int c = lane; c < C; c += 32)
        yr[c] = (xr[c] - mu) * rs * (gamma ? gamma[c] : 1.0f) + (beta ? beta[c] : 0.0f);
    if (lane == 0) {
        if (mean) mean[row] = mu;
        if (rstd) rstd[row] = rs;
    }
}

// Grid-stride over rows in warps; any grid (a few blocks per SM is plenty).
extern "C" __global__ void __launch_bounds__(256)
    ln_bwd(const float* __restrict__ x, const float* __restrict__ dy, const float* __restrict__ gamma,
           const float* __restrict__ mean, const float* __restrict__ rstd, float* dx, float* dgamma, float* dbeta,
           int rows, int C, float dx_beta) {
    __shared__ float sg[LN_MAX_C], sb[LN_MAX_C];
    for (int c = threadIdx.x; c < C; c += blockDim.x) sg[c] = sb[c] = 0.0f;
    __syncthreads();
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, wpb = blockDim.x >> 5;
    for (int row = blockIdx.x * wpb + warp; row < rows; row += gridDim.x * wpb) {
        const float* xr = x + (mv_i64)row * C;
        const float* dyr = dy + (mv_i64)row * C;
        const float mu = mean[row], rs = rstd[row];
        float s1 = 0.0f, s2 = 0.0f;
        for (int c = lane; c < C; c += 32) {
            const float xh = (xr[c] - mu) * rs, g = dyr[c] * (gamma ? gamma[c] : 1.0f);
            s1 += g;
            s2 += g * xh;
            atomicAdd(sg + c, dyr[c] * xh);
            atomicAdd(sb + c, dyr[c]);
        }
        s1 = mv_warp_sum(s1) / (float)C;
        s2 = mv_warp_sum(s2) / (float)C;
        float* dxr = dx + (mv_i64)row * C;
        for (int c = lane; c < C; c += 32) {
            const float xh = (xr[c] - mu) * rs, g = dyr[c] * (gamma ? gamma[c] : 1.0f);
            mv_store_grad(dxr + c, rs * (g - s1 - xh * s2), dx_beta);
        }
    }
    __syncthreads();
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
        if (dgamma) atomicAdd(dgamma + c, sg[c]);
        if (dbeta) atomicAdd(dbeta + c, sb[c]);
    }
}
