// upsample_pool.cu — nearest-neighbour upsampling by integer factors (2D/3D) and 2x2 max
// pooling with stride 2 (VGG), forward and backward, channels-last. Grid-stride, gather form
// (no atomics), so every backward overwrites dx (+ dx_beta * dx_old).
#include "medvae_common.cuh"

// One warp per pixel, lanes across channels (float4 where C % 4 == 0 and both buffers are
// 16-byte aligned): the index arithmetic is paid once per pixel instead of once per element,
// which had made these copies compute-bound (0.9 ms for a 0.5 GB upsample on an H100).
__device__ __forceinline__ bool mv_vec4(const float* a, const float* b, int C) {
    return C % 4 == 0 && ((unsigned long long)a & 15ull) == 0 && ((unsigned long long)b & 15ull) == 0;
}

// y [N, D*fd, H*fh, W*fw, C] from x [N, D, H, W, C]: y[n, d, h, w, c] = x[n, d/fd, h/fh, w/fw, c]
// (torch 'nearest' with an integer scale factor).
extern "C" __global__ void upsample_nearest_fwd(const float* __restrict__ x, float* __restrict__ y, int N, int D, int H,
                                                int W, int C, int fd, int fh, int fw) {
    const int od = D * fd, oh = H * fh, ow = W * fw;
    const mv_i64 pixels = (mv_i64)N * od * oh * ow;
    const int lane = threadIdx.x & 31;
    const bool vec = mv_vec4(x, y, C);
    for (mv_i64 p = mv_global_tid() >> 5; p < pixels; p += mv_global_stride() >> 5) {
        mv_i64 t = p;
        const int w = (int)(t % ow);
        t /= ow;
        const int h = (int)(t % oh);
        t /= oh;
        const int d = (int)(t % od);
        const int n = (int)(t / od);
        const float* src = x + ((((mv_i64)n * D + d / fd) * H + h / fh) * W + w / fw) * C;
        float* dst = y + p * C;
        if (vec) {
            for (int c = 4 * lane; c < C; c += 128)
                *reinterpret_cast<float4*>(dst + c) = *reinterpret_cast<const float4*>(src + c);
        } else {
            for (int c = lane; c < C; c += 32) dst[c] = src[c];
        }
    }
}

// dx[n, d, h, w, c] = sum of dy over the fd*fh*fw block it was copied to.
extern "C" __global__ void upsample_nearest_bwd(const float* __restrict__ dy, float* dx, int N, int D, int H, int W,
                                                int C, int fd, int fh, int fw, float dx_beta) {
    const int oh = H * fh, ow = W * fw;
    const mv_i64 pixels = (mv_i64)N * D * H * W;
    const int lane = threadIdx.x & 31;
    const bool vec = mv_vec4(dy, dx, C);
    for (mv_i64 p = mv_global_tid() >> 5; p < pixels; p += mv_global_stride() >> 5) {
        mv_i64 t = p;
        const int w = (int)(t % W);
        t /= W;
        const int h = (int)(t % H);
        t /= H;
        const int d = (int)(t % D);
        const int n = (int)(t / D);
        // dy at the block's first element; block element (a, b, e) is `a*oh*ow + b*ow + e` pixels on.
        const float* base = dy + ((((mv_i64)n * D * fd + d * fd) * oh + h * fh) * ow + w * fw) * C;
        float* out = dx + p * C;
        for (int c = (vec ? 4 : 1) * lane; c < C; c += vec ? 128 : 32) {
            float4 acc = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
            for (int a = 0; a < fd; ++a)
                for (int b = 0; b < fh; ++b)
                    for (int e = 0; e < fw; ++e) {
                        const float* q = base + (((mv_i64)a * oh + b) * ow + e) * C + c;
                        if (vec) {
                            const float4 v = *reinterpret_cast<const float4*>(q);
                            acc.x += v.x;
                            acc.y += v.y;
                            acc.z += v.z;
                            acc.w += v.w;
                        } else {
                            acc.x += *q;
                        }
                    }
            mv_store_grad(out + c, acc.x, dx_beta);
            if (vec) {
                mv_store_grad(out + c + 1, acc.y, dx_beta);
                mv_store_grad(out + c + 2, acc.z, dx_beta);
                mv_store_grad(out + c + 3, acc.w, dx_beta);
            }
        }
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
