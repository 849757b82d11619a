// upsample_pool.cu — nearest-neighbour upsampling by integer factors (2D/3D) and 2x2 max
// pooling with stride 2 (VGG), forward and backward, channels-last. Grid-stride, gather form
// (no atomics), so every backward overwrites dx (+ dx_beta * dx_old).
#include "medvae_common.cuh"

// y [N, D*fd, H*fh, W*fw, C] from x [N, D, H, W, C]: y[n, d, h, w, c] = x[n, d/fd, h/fh, w/fw, c]
// (torch 'nearest' with an integer scale factor).
extern "C" __global__ void upsample_nearest_fwd(const float* __restrict__ x, float* __restrict__ y, int N, int D, int H,
                                                int W, int C, int fd, int fh, int fw) {
    const int od = D * fd, oh = H * fh, ow = W * fw;
    const mv_i64 total = (mv_i64)N * od * oh * ow * C;
    for (mv_i64 i = mv_global_tid(); i < total; i += mv_global_stride()) {
        const int c = (int)(i % C);
        mv_i64 t = i / C;
        const int w = (int)(t % ow);
        t /= ow;
        const int h = (int)(t % oh);
        t /= oh;
        const int d = (int)(t % od);
        const int n = (int)(t / od);
        y[i] = x[((((mv_i64)n * D + d / fd) * H + h / fh) * W + w / fw) * C + c];
    }
}

// dx[n, d, h, w, c] = sum of dy over the fd*fh*fw block it was copied to.
extern "C" __global__ void upsample_nearest_bwd(const float* __restrict__ dy, float* dx, int N, int D, int H, int W,
                                                int C, int fd, int fh, int fw, float dx_beta) {
    const int oh = H * fh, ow = W * fw;
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
        float acc = 0.0f;
        for (int a = 0; a < fd; ++a)
            for (int b = 0; b < fh; ++b) {
                const float* row = dy + ((((mv_i64)n * D * fd + d * fd + a) * oh + h * fh + b) * ow + w * fw) * C + c;
                for (int e = 0; e < fw; ++e) acc += row[(mv_i64)e * C];
            }
        mv_store_grad(dx + i, acc, dx_beta);
    }
}

// Window position (0..3, row-major) of the max of the 2x2 window at (ho, wo), with torch's rule
// `v > best || isnan(v)` from best = -inf, index 0 (first maximum wins, a NaN propagates).
__device__ __forceinline__ int pool_argmax(const float* x, int n, int ho, int wo, int c, int H, int W, int C, float& best) {
    int arg = 0;
    best = -MV_INF;
    for (int k = 0; k < 4; ++k) {
        const int h = 2 * ho + (k >> 1), w = 2 * wo + (k & 1);
        const float v = x[(((mv_i64)n * H + h) * W + w) * C + c];
        if (v > best || v != v) {
            best = v;
            arg = k;
        }
    }
    return arg;
}

// y [N, H/2, W/2, C] (floor), x [N, H, W, C].
extern "C" __global__ void maxpool2_fwd(const float* __restrict__ x, float* __restrict__ y, int N, int H, int W, int C) {
    const int ho_n = H / 2, wo_n = W / 2;
    const mv_i64 total = (mv_i64)N * ho_n * wo_n * C;
    for (mv_i64 i = mv_global_tid(); i < total; i += mv_global_stride()) {
        const int c = (int)(i % C);
        mv_i64 t = i / C;
        const int wo = (int)(t % wo_n);
        t /= wo_n;
        const int ho = (int)(t % ho_n);
        const int n = (int)(t / ho_n);
        float best;
        pool_argmax(x, n, ho, wo, c, H, W, C, best);
        y[i] = best;
    }
}

// dx[n, h, w, c] = dy[n, h/2, w/2, c] where (h, w) is its window's argmax, else 0.
extern "C" __global__ void maxpool2_bwd(const float* __restrict__ x, const float* __restrict__ dy, float* dx, int N,
                                        int H, int W, int C, float dx_beta) {
    const int ho_n = H / 2, wo_n = W / 2;
    const mv_i64 total = (mv_i64)N * H * W * C;
    for (mv_i64 i = mv_global_tid(); i < total; i += mv_global_stride()) {
        const int c = (int)(i % C);
        mv_i64 t = i / C;
        const int w = (int)(t % W);
        t /= W;
        const int h = (int)(t % H);
        const int n = (int)(t / H);
        const int ho = h / 2, wo = w / 2;
        float g = 0.0f;
        if (ho < ho_n && wo < wo_n) {
            float best;
            const int arg = pool_argmax(x, n, ho, wo, c, H, W, C, best);
            if (arg == ((h & 1) << 1 | (w & 1))) g = dy[(((mv_i64)n * ho_n + ho) * wo_n + wo) * C + c];
        }
        mv_store_grad(dx + i, g, dx_beta);
    }
}
