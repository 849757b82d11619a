// resize.cu — separable resampling along one axis with host-computed weight tables: the two
// passes of bicubic antialiased resize (torchvision Resize semantics; the host builds the tables
// exactly as torch's _upsample_bicubic2d_aa does), forward and backward.
//
// The tensor is viewed as [outer, len, inner] with the resampled axis in the middle (channels-last
// [N, H, W, C]: W pass outer = N*H, inner = C; H pass outer = N, inner = W*C). For output index j:
//   y[o, j, i] = sum_{t < taps} wts[j * taps + t] * x[o, idx0[j] + t, i]
// where taps beyond a position's support carry weight 0 and source indices outside [0, in_len)
// are skipped. Backward scatters with atomics, so dx must be zeroed (or hold a gradient to
// accumulate onto) before resample_axis_bwd. Grid-stride over outputs.
#include "medvae_common.cuh"

extern "C" __global__ void resample_axis_fwd(const float* __restrict__ x, float* __restrict__ y, mv_i64 outer,
                                             int in_len, int out_len, mv_i64 inner, const int* __restrict__ idx0,
                                             const float* __restrict__ wts, int taps) {
    const mv_i64 total = outer * out_len * inner;
    for (mv_i64 e = mv_global_tid(); e < total; e += mv_global_stride()) {
        const mv_i64 i = e % inner;
        const mv_i64 t = e / inner;
        const int j = (int)(t % out_len);
        const mv_i64 o = t / out_len;
        const float* xs = x + o * in_len * inner + i;
        const int s0 = idx0[j];
        float acc = 0.0f;
        for (int k = 0; k < taps; ++k) {
            const int s = s0 + k;
            if (s >= 0 && s < in_len) acc += wts[(mv_i64)j * taps + k] * xs[(mv_i64)s * inner];
        }
        y[e] = acc;
    }
}

extern "C" __global__ void resample_axis_bwd(const float* __restrict__ dy, float* dx, mv_i64 outer, int in_len,
                                             int out_len, mv_i64 inner, const int* __restrict__ idx0,
                                             const float* __restrict__ wts, int taps) {
    const mv_i64 total = outer * out_len * inner;
    for (mv_i64 e = mv_global_tid(); e < total; e += mv_global_stride()) {
        const mv_i64 i = e % inner;
        const mv_i64 t = e / inner;
        const int j = (int)(t % out_len);
        const mv_i64 o = t / out_len;
        float* xs = dx + o * in_len * inner + i;
        const int s0 = idx0[j];
        const float g = dy[e];
        for (int k = 0; k < taps; ++k) {
            const int s = s0 + k;
            const float w = wts[(mv_i64)j * taps + k];
            if (s >= 0 && s < in_len && w != 0.0f) atomicAdd(xs + (mv_i64)s * inner, w * g);
        }
    }
}
