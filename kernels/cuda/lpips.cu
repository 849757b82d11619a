// lpips.cu — LPIPS: the scaling layer and the per-layer normalised feature distance, forward and backward.
//
// Features are channels-last [pixels, C]; every operand is addressed as `base + offset` (element
// offsets), so the two halves of one batch ([0, n) and [n, 2n)) need no copy. Per pixel:
//   n̂ = f / (‖f‖ + eps)                       eps = 1e-10 (the reference's normalize_tensor)
//   d = Σ_c w_c (n̂a_c − n̂b_c)²
// The forward writes d per pixel; the per-sample mean is `reduce_rows` (reduce.cu), which is
// deterministic. The backward ACCUMULATES into ga / gb (either may be null), with g = dp[sample] /
// pixels, u_c = 2 w_c (n̂a_c − n̂b_c) g and s = ‖f‖ + eps:
//   ga += u/sa − n̂a (u·n̂a)/‖fa‖,   gb += n̂b (u·n̂b)/‖fb‖ − u/sb
// where a zero norm drops the second term (as kernels/src/cpu/lpips.rs; see there for why).
// One warp per pixel, channels strided over the lanes; any C (the re-reads hit L1).
#include "medvae_common.cuh"

#define LPIPS_EPS 1e-10f

// Warps of the whole grid, and this thread's warp / lane.
__device__ __forceinline__ mv_i64 lpips_warp_id() { return mv_global_tid() >> 5; }
__device__ __forceinline__ mv_i64 lpips_warp_count() { return mv_global_stride() >> 5; }

// ‖a‖, ‖b‖ of one pixel (every lane gets them).
__device__ __forceinline__ void lpips_norms(const float* a, const float* b, int C, int lane, float& ra, float& rb) {
    float sa = 0.0f, sb = 0.0f;
    for (int c = lane; c < C; c += 32) {
        sa += a[c] * a[c];
        sb += b[c] * b[c];
    }
    ra = sqrtf(mv_warp_sum(sa));
    rb = sqrtf(mv_warp_sum(sb));
}

// d[p] = Σ_c w_c (n̂a_c − n̂b_c)² for p < pixels. Launch: blocks of a multiple of 32 threads.
extern "C" __global__ void lpips_dist_fwd(const float* __restrict__ fa, mv_i64 a_off, const float* __restrict__ fb,
                                          mv_i64 b_off, const float* __restrict__ w, float* __restrict__ d,
                                          mv_i64 pixels, int C) {
    const int lane = threadIdx.x & 31;
    for (mv_i64 p = lpips_warp_id(); p < pixels; p += lpips_warp_count()) {
        const float* a = fa + a_off + p * C;
        const float* b = fb + b_off + p * C;
        float ra, rb;
        lpips_norms(a, b, C, lane, ra, rb);
        const float ia = 1.0f / (ra + LPIPS_EPS), ib = 1.0f / (rb + LPIPS_EPS);
        float acc = 0.0f;
        for (int c = lane; c < C; c += 32) {
            const float t = a[c] * ia - b[c] * ib;
            acc += w[c] * t * t;
        }
        acc = mv_warp_sum(acc);
        if (lane == 0) d[p] = acc;
    }
}

// Accumulates the distance's gradient for p < n * pixels into ga + ga_off and gb + gb_off (a
// null pointer skips that side). The halves of one gradient tensor may be passed as ga and gb:
// their ranges do not overlap, and each pixel's channels belong to one warp.
extern "C" __global__ void lpips_dist_bwd(const float* __restrict__ fa, mv_i64 a_off, const float* __restrict__ fb,
                                          mv_i64 b_off, const float* __restrict__ w, const float* __restrict__ dp,
                                          float* ga, mv_i64 ga_off, float* gb, mv_i64 gb_off, mv_i64 total,
                                          mv_i64 pixels, float inv_pixels, int C) {
    const int lane = threadIdx.x & 31;
    for (mv_i64 p = lpips_warp_id(); p < total; p += lpips_warp_count()) {
        const float* a = fa + a_off + p * C;
        const float* b = fb + b_off + p * C;
        float ra, rb;
        lpips_norms(a, b, C, lane, ra, rb);
        const float ia = 1.0f / (ra + LPIPS_EPS), ib = 1.0f / (rb + LPIPS_EPS);
        const float two_g = 2.0f * (dp[p / pixels] * inv_pixels);
        // u·n̂a and u·n̂b.
        float una = 0.0f, unb = 0.0f;
        for (int c = lane; c < C; c += 32) {
            const float na = a[c] * ia, nb = b[c] * ib;
            const float u = two_g * w[c] * (na - nb);
            una += u * na;
            unb += u * nb;
        }
        una = mv_warp_sum(una);
        unb = mv_warp_sum(unb);
        const float ka = ra > 0.0f ? una / ra : 0.0f;
        const float kb = rb > 0.0f ? unb / rb : 0.0f;
        for (int c = lane; c < C; c += 32) {
            const float u = two_g * w[c] * (a[c] * ia - b[c] * ib);
            if (ga) ga[ga_off + p * C + c] += u * ia - a[c] * ia * ka;
            if (gb) gb[gb_off + p * C + c] += b[c] * ib * kb - u * ib;
        }
    }
}

// The scaling layer: y[y_off + 3p + c] = (x[p * cin + (cin == 1 ? 0 : c)] − shift_c) / scale_c
// for p < pixels, cin = 1 or 3. Grid-stride over pixels * 3.
extern "C" __global__ void lpips_scale_fwd(const float* __restrict__ x, float* __restrict__ y, mv_i64 y_off,
                                           mv_i64 pixels, int cin, float shift0, float shift1, float shift2,
                                           float scale0, float scale1, float scale2) {
    for (mv_i64 i = mv_global_tid(); i < pixels * 3; i += mv_global_stride()) {
        const int c = (int)(i % 3);
        const mv_i64 p = i / 3;
        const float shift = c == 0 ? shift0 : (c == 1 ? shift1 : shift2);
        const float scale = c == 0 ? scale0 : (c == 1 ? scale1 : scale2);
        y[y_off + i] = (x[p * cin + (cin == 1 ? 0 : c)] - shift) / scale;
    }
}

// Its backward, overwriting dx [pixels, cin] from dy [pixels, 3] at dy_off: a 1-channel input
// sums the three broadcast channels (in channel order, as the CPU). Grid-stride over pixels * cin.
extern "C" __global__ void lpips_scale_bwd(const float* __restrict__ dy, mv_i64 dy_off, float* __restrict__ dx,
                                           mv_i64 pixels, int cin, float scale0, float scale1, float scale2) {
    for (mv_i64 i = mv_global_tid(); i < pixels * cin; i += mv_global_stride()) {
        if (cin == 1) {
            const float* g = dy + dy_off + 3 * i;
            dx[i] = g[0] / scale0 + g[1] / scale1 + g[2] / scale2;
        } else {
            const int c = (int)(i % 3);
            const float scale = c == 0 ? scale0 : (c == 1 ? scale1 : scale2);
            dx[i] = dy[dy_off + i] / scale;
        }
    }
}
