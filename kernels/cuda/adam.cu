// adam.cu — multi-tensor Adam: one launch updates every parameter of an optimizer.
//
// The host uploads a table of AdamTensor records (pointers stay valid for the optimizer's
// lifetime, so the table is built once). Tensor i is split into chunks of `chunk` elements;
// `chunk_start` is the index of its first chunk (a prefix sum), and each block updates one chunk,
// finding its tensor by binary search. Update (torch.optim.Adam, amsgrad off):
//   g  = grad * grad_scale + weight_decay * p
//   m  = beta1 m + (1 - beta1) g
//   v  = beta2 v + (1 - beta2) g^2
//   p -= (lr / bc1) * m / (sqrt(v) / sqrt(bc2) + eps)      bc_k = 1 - beta_k^step (host)
// Launch: grid (total chunks), any block size.
#include "medvae_common.cuh"

// Must match `AdamTensor` on the Rust side (#[repr(C)], 48 bytes).
struct AdamTensor {
    float* p;
    const float* g;
    float* m;
    float* v;
    mv_i64 n;
    mv_i64 chunk_start;
};

extern "C" __global__ void adam_multi(const AdamTensor* __restrict__ tensors, int count, int chunk, float lr,
                                      float beta1, float beta2, float eps, float weight_decay, float bc1, float bc2,
                                      float grad_scale) {
    // Last tensor whose chunk_start <= blockIdx.x.
    const mv_i64 b = blockIdx.x;
    int lo = 0, hi = count - 1;
    while (lo < hi) {
        const int mid = (lo + hi + 1) / 2;
        if (tensors[mid].chunk_start <= b) lo = mid;
        else hi = mid - 1;
    }
    const AdamTensor t = tensors[lo];
    const mv_i64 begin = (b - t.chunk_start) * chunk;
    const mv_i64 end = min(t.n, begin + chunk);
    const float step = lr / bc1;
    const float inv_sqrt_bc2 = 1.0f / sqrtf(bc2);
    for (mv_i64 i = begin + threadIdx.x; i < end; i += blockDim.x) {
        const float p = t.p[i];
        const float g = t.g[i] * grad_scale + weight_decay * p;
        const float m = beta1 * t.m[i] + (1.0f - beta1) * g;
        const float v = beta2 * t.v[i] + (1.0f - beta2) * g * g;
        t.m[i] = m;
        t.v[i] = v;
        t.p[i] = p - step * m / (sqrtf(v) * inv_sqrt_bc2 + eps);
    }
}
