// strided.cu — copies between a strided view of a buffer and a dense tensor (semantics of
// medvae_kernels::cpu::strided): gather (view -> dense) and scatter (dense -> view, assigned or
// added). Element j of the view, row-major over its extents, lives at
// offset + sum_d i_d * stride[d]. The host pads the descriptor at the front with extent-1
// dimensions and refuses scatters through views that write an element twice, so one thread per
// dense element needs no atomics.
#include "medvae_common.cuh"

#define MV_VIEW_RANK 6

struct mv_view {
    int extent[MV_VIEW_RANK];
    mv_i64 stride[MV_VIEW_RANK];
    mv_i64 offset;
};

// Buffer index of element j of the view.
__device__ __forceinline__ mv_i64 mv_view_at(const mv_view& v, mv_i64 j) {
    mv_i64 at = v.offset;
#pragma unroll
    for (int d = MV_VIEW_RANK - 1; d >= 0; --d) {
        const mv_i64 e = v.extent[d];
        at += (j % e) * v.stride[d];
        j /= e;
    }
    return at;
}

// dst[j] = src[view(j)] for j < total: dense, coalesced writes.
extern "C" __global__ void strided_gather(const float* __restrict__ src, float* __restrict__ dst, mv_i64 total,
                                          mv_view v) {
    for (mv_i64 j = mv_global_tid(); j < total; j += mv_global_stride()) dst[j] = src[mv_view_at(v, j)];
}

// dst[view(j)] = src[j] (accumulate = 0) or += src[j] (accumulate = 1) for j < total.
extern "C" __global__ void strided_scatter(const float* __restrict__ src, float* dst, mv_i64 total, mv_view v,
                                           int accumulate) {
    for (mv_i64 j = mv_global_tid(); j < total; j += mv_global_stride()) {
        const mv_i64 at = mv_view_at(v, j);
        dst[at] = accumulate ? dst[at] + src[j] : src[j];
    }
}
