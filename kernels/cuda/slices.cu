// slices.cu — the slices of a channels-last volume across one axis as a batch of 2D images (the
// input of the 3D LPIPS and PatchGAN), and its adjoint, which adds slice gradients into the
// volume's gradient. Semantics of medvae_kernels::cpu::slices:
//   axis 0: [N*D, H, W, C] (the volume's own order), axis 1: [N*H, D, W, C], axis 2: [N*W, D, H, C].
// Each voxel lies in exactly one slice per axis, so both directions are gathers (no atomics).
#include "medvae_common.cuh"

// Element offset, in the axis-`axis` slice batch, of voxel (n, d, h, w), channel 0.
__device__ __forceinline__ mv_i64 slice_offset(int axis, int n, int d, int h, int w, int D, int H, int W, int C) {
    mv_i64 pixel;
    if (axis == 0)
        pixel = (((mv_i64)n * D + d) * H + h) * W + w;
    else if (axis == 1)
        pixel = (((mv_i64)n * H + h) * D + d) * W + w;
    else
        pixel = (((mv_i64)n * W + w) * D + d) * H + h;
    return pixel * C;
}

// dst[dst_offset + j] for every element j of the axis-`axis` batch, from x [N, D, H, W, C]. One
// thread per destination element: writes are coalesced, reads strided for axes 1 and 2.
extern "C" __global__ void slices_gather(const float* __restrict__ x, float* __restrict__ dst, mv_i64 dst_offset,
                                         int N, int D, int H, int W, int C, int axis) {
    const mv_i64 total = (mv_i64)N * D * H * W * C;
    for (mv_i64 j = mv_global_tid(); j < total; j += mv_global_stride()) {
        const int c = (int)(j % C);
        mv_i64 t = j / C;
        int n, d, h, w;
        if (axis == 0) {
            w = (int)(t % W);
            t /= W;
            h = (int)(t % H);
            t /= H;
            d = (int)(t % D);
            n = (int)(t / D);
        } else if (axis == 1) {  // image (n, h), pixel (d, w)
            w = (int)(t % W);
            t /= W;
            d = (int)(t % D);
            t /= D;
            h = (int)(t % H);
            n = (int)(t / H);
        } else {  // image (n, w), pixel (d, h)
            h = (int)(t % H);
            t /= H;
            d = (int)(t % D);
            t /= D;
            w = (int)(t % W);
            n = (int)(t / W);
        }
        dst[dst_offset + j] = x[((((mv_i64)n * D + d) * H + h) * W + w) * C + c];
    }
}

// dx[v] += g[g_offset + (v's pixel in the axis-`axis` batch)] for every voxel element v of
// dx [N, D, H, W, C]. One thread per voxel element: the read-modify-write of dx is coalesced and
// no two threads touch one element.
extern "C" __global__ void slices_scatter_add(const float* __restrict__ g, mv_i64 g_offset, float* dx, int N, int D,
                                              int H, int W, int C, int axis) {
    const mv_i64 total = (mv_i64)N * D * H * W * C;
    for (mv_i64 i = mv_global_tid(); i < total; i += mv_global_stride()) {
        const int c = (int)(i % C);
        mv_i64 t = i / C;
        const int w = (int)(t % W);
        t /= W;
        const int h = (int)(t % H);
        t /= H;
        const int d = (int)(t % D);
        const int n = (int)(t / D);
        dx[i] += g[g_offset + slice_offset(axis, n, d, h, w, D, H, W, C) + c];
    }
}
