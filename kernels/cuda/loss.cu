// loss.cu — fused loss reductions and their gradients: L1 and the discriminator hinge loss (the
// KL term lives in gaussian.cu).
//
// Scalar losses use the two-pass scheme of reduce.cu: a `*_partial` kernel (one f32 per block)
// followed by `reduce_finalize` (or `hinge_finalize`). Gradient kernels take the upstream
// gradient as `scale * (*gscale)` where `gscale` is an optional device scalar (null = 1), so a
// factor computed on the device needs no host round trip; they write
// grad = g + beta * grad_old (beta = 0 overwrites, 1 accumulates).
#include "medvae_common.cuh"

// ------------------------------------------------------------------ L1
extern "C" __global__ void l1_partial(const float* __restrict__ a, const float* __restrict__ b, mv_i64 n,
                                      float* __restrict__ partial) {
    __shared__ float scratch[32];
    float acc = 0.0f;
    for (mv_i64 i = mv_global_tid(); i < n; i += mv_global_stride()) acc += fabsf(a[i] - b[i]);
    acc = mv_block_sum(acc, scratch);
    if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}
// d/da of scale * sum |a - b|: sign(a - b) (0 where equal, as torch).
extern "C" __global__ void l1_bwd(const float* __restrict__ a, const float* __restrict__ b, float* da, mv_i64 n,
                                  float scale, const float* gscale, float beta) {
    const float g = mv_gscale(scale, gscale);
    for (mv_i64 i = mv_global_tid(); i < n; i += mv_global_stride()) {
        const float d = a[i] - b[i];
        const float s = d > 0.0f ? g : (d < 0.0f ? -g : 0.0f);
        mv_store_grad(da + i, s, beta);
    }
}

// ------------------------------------------------------------------ hinge
// Discriminator loss 0.5 * (mean(relu(1 - real)) + mean(relu(1 + fake))).
// partial[2 * block] = sum relu(1 - real), partial[2 * block + 1] = sum relu(1 + fake).
extern "C" __global__ void hinge_partial(const float* __restrict__ real, mv_i64 nr, const float* __restrict__ fake,
                                         mv_i64 nf, float* __restrict__ partial) {
    __shared__ float scratch[32];
    float ar = 0.0f, af = 0.0f;
    for (mv_i64 i = mv_global_tid(); i < nr; i += mv_global_stride()) ar += fmaxf(1.0f - real[i], 0.0f);
    for (mv_i64 i = mv_global_tid(); i < nf; i += mv_global_stride()) af += fmaxf(1.0f + fake[i], 0.0f);
    ar = mv_block_sum(ar, scratch);
    af = mv_block_sum(af, scratch);
    if (threadIdx.x == 0) {
        partial[2 * blockIdx.x] = ar;
        partial[2 * blockIdx.x + 1] = af;
    }
}
// Launch: 1 block of 256.
extern "C" __global__ void hinge_finalize(const float* __restrict__ partial, int count, mv_i64 nr, mv_i64 nf,
                                          float* __restrict__ out) {
    __shared__ double scratch[32];
    double ar = 0.0, af = 0.0;
    for (int i = threadIdx.x; i < count; i += blockDim.x) {
        ar += (double)partial[2 * i];
        af += (double)partial[2 * i + 1];
    }
    ar = mv_block_sum_f64(ar, scratch);
    af = mv_block_sum_f64(af, scratch);
    if (threadIdx.x == 0) out[0] = (float)(0.5 * (ar / (double)nr + af / (double)nf));
}
// Gradients of the hinge loss w.r.t. both logit tensors (relu'(0) = 0, as torch).
extern "C" __global__ void hinge_bwd(const float* __restrict__ real, mv_i64 nr, const float* __restrict__ fake, mv_i64 nf,
                                     float* dreal, float* dfake, float scale, const float* gscale, float beta) {
    const float g = mv_gscale(scale, gscale);
    const float gr = -0.5f * g / (float)nr, gf = 0.5f * g / (float)nf;
    for (mv_i64 i = mv_global_tid(); i < nr + nf; i += mv_global_stride()) {
        if (i < nr) mv_store_grad(dreal + i, (1.0f - real[i] > 0.0f) ? gr : 0.0f, beta);
        else {
            const mv_i64 j = i - nr;
            mv_store_grad(dfake + j, (1.0f + fake[j] > 0.0f) ? gf : 0.0f, beta);
        }
    }
}

// One half of the hinge loss, for a discriminator that runs real and fake images as separate
// passes: sum relu(1 + sign * x) (sign -1: real logits, +1: fake), then reduce_finalize.
extern "C" __global__ void hinge_half_partial(const float* __restrict__ x, mv_i64 n, float sign,
                                              float* __restrict__ partial) {
    __shared__ float scratch[32];
    float acc = 0.0f;
    for (mv_i64 i = mv_global_tid(); i < n; i += mv_global_stride()) acc += fmaxf(1.0f + sign * x[i], 0.0f);
    acc = mv_block_sum(acc, scratch);
    if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}
// dx = g * sign where 1 + sign * x > 0, else 0 (relu'(0) = 0, as torch); overwrites dx.
extern "C" __global__ void hinge_half_bwd(const float* __restrict__ x, mv_i64 n, float sign, float g,
                                          float* __restrict__ dx) {
    for (mv_i64 i = mv_global_tid(); i < n; i += mv_global_stride())
        dx[i] = (1.0f + sign * x[i] > 0.0f) ? sign * g : 0.0f;
}

