// gaussian.cu — the diagonal Gaussian posterior of the KL autoencoder, from its moments:
// reparameterised sampling and the KL divergence to N(0, 1), forward and backward.
//
// moments: channels-last [N, D, H, W, 2Z]; channels [0, Z) are the mean, [Z, 2Z) the raw
// log-variance, clamped to [-30, 20] before use (the clamp passes gradient on [-30, 20],
// inclusive, as torch.clamp does). std = exp(0.5 lv), var = exp(lv).
// Gradient kernels write grad = g + beta * grad_old, with g scaled by `scale * (*gscale)`
// (`gscale` an optional device scalar, null = 1).
#include "medvae_common.cuh"

__device__ __forceinline__ float mv_clamp_lv(float raw) { return fminf(fmaxf(raw, -30.0f), 20.0f); }

// ------------------------------------------------------------------ sampling
// z[p, c] = mean[p, c] + exp(0.5 lv[p, c]) * eps[p, c] over pixels p (= N*D*H*W) and c < Z.
extern "C" __global__ void gaussian_sample_fwd(const float* __restrict__ mom, const float* __restrict__ eps,
                                               float* __restrict__ z, mv_i64 pixels, int zc) {
    const mv_i64 total = pixels * zc;
    for (mv_i64 i = mv_global_tid(); i < total; i += mv_global_stride()) {
        const mv_i64 p = i / zc;
        const int c = (int)(i - p * zc);
        const float* m = mom + p * 2 * zc;
        z[i] = m[c] + expf(0.5f * mv_clamp_lv(m[zc + c])) * eps[i];
    }
}
// dmoments from dz: dmean = dz, dlv = dz * eps * 0.5 * std (0 outside the clamp range).
extern "C" __global__ void gaussian_sample_bwd(const float* __restrict__ mom, const float* __restrict__ eps,
                                               const float* __restrict__ dz, float* dmom, mv_i64 pixels, int zc,
                                               float beta) {
    const mv_i64 total = pixels * 2 * zc;
    for (mv_i64 i = mv_global_tid(); i < total; i += mv_global_stride()) {
        const mv_i64 p = i / (2 * zc);
        const int c = (int)(i - p * 2 * zc);
        float r;
        if (c < zc) {
            r = dz[p * zc + c];
        } else {
            const float raw = mom[i];
            const bool pass = raw >= -30.0f && raw <= 20.0f;
            const mv_i64 j = p * zc + (c - zc);
            r = pass ? dz[j] * eps[j] * 0.5f * expf(0.5f * raw) : 0.0f;
        }
        mv_store_grad(dmom + i, r, beta);
    }
}

// ------------------------------------------------------------------ KL divergence
// KL to N(0, 1):
//   0.5 * sum(mean^2 + exp(lv) - 1 - lv)
// summed per sample (per_w = 0, out [N]) or, as the 3D reference does (sum over C, D, H only),
// per (sample, w) (per_w = 1, out [N, W]). Launch: one block (multiple of 32) per output value.
extern "C" __global__ void kl_moments_fwd(const float* __restrict__ mom, int n_, int d_, int h_, int w_, int z,
                                          int per_w, float* __restrict__ out) {
    __shared__ double scratch[32];
    const int o = blockIdx.x;
    const int n = per_w ? o / w_ : o;
    const int wfix = per_w ? o % w_ : 0;
    const int wcount = per_w ? 1 : w_;
    const mv_i64 count = (mv_i64)d_ * h_ * wcount * z;  // (d, h, w, c) combinations
    double acc = 0.0;
    for (mv_i64 i = threadIdx.x; i < count; i += blockDim.x) {
        const int c = (int)(i % z);
        mv_i64 t = i / z;
        const int w = (int)(t % wcount) + wfix;
        t /= wcount;  // t = d * H + h
        const float* px = mom + (((mv_i64)n * d_ * h_ + t) * w_ + w) * (2 * z);
        const float mean = px[c];
        const float lv = fminf(fmaxf(px[z + c], -30.0f), 20.0f);
        acc += 0.5 * ((double)mean * mean + (double)expf(lv) - 1.0 - (double)lv);
    }
    acc = mv_block_sum_f64(acc, scratch);
    if (threadIdx.x == 0) out[o] = (float)acc;
}
// dmoments for upstream gradient gout (per output of kl_moments_fwd; null = all ones) times scale.
extern "C" __global__ void kl_moments_bwd(const float* __restrict__ mom, const float* gout, float* dmom, int n_,
                                          int d_, int h_, int w_, int z, int per_w, float scale, const float* gscale,
                                          float beta) {
    const float g0 = mv_gscale(scale, gscale);
    const mv_i64 total = (mv_i64)n_ * d_ * h_ * w_ * 2 * z;
    for (mv_i64 i = mv_global_tid(); i < total; i += mv_global_stride()) {
        const int c = (int)(i % (2 * z));
        const mv_i64 pix = i / (2 * z);
        const int w = (int)(pix % w_);
        const int n = (int)(pix / ((mv_i64)d_ * h_ * w_));
        const float g = gout ? g0 * gout[per_w ? n * w_ + w : n] : g0;
        float r;
        if (c < z) {
            r = g * mom[i];
        } else {
            const float raw = mom[i];
            const bool pass = raw >= -30.0f && raw <= 20.0f;
            r = pass ? g * 0.5f * (expf(raw) - 1.0f) : 0.0f;
        }
        mv_store_grad(dmom + i, r, beta);
    }
}

