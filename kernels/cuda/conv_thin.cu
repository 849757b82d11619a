// conv_thin.cu — convolutions with a thin side (Cin <= 4 or Cout <= 4): the image convolutions
// at both ends of the autoencoder, the first layers of LPIPS' VGG and of the PatchGAN, the
// latent convolutions. Their GEMMs have one dimension of 1..4, which a tensor-core tile of 64
// wastes almost entirely (they took ~6 % of the BF16 stage-1 step on an H100), so these are
// f32 SIMT kernels shaped for it, used at TF32/BF16 precision. Geometry, layouts and epilogues
// as conv_direct.cu:
//   conv_thin_fwd       y  = conv(x, w) + bias + beta * y_old   thread per (output pixel, 4 output channels)
//   conv_thin_dgrad     dx = conv^T(dy, w) + beta * dx_old      thread per (input pixel, 4 input channels)
//   conv_thin_wgrad_t*  dw += x^T dy                            block per run of output pixels, thread per
//                                                               (ci, co) pair(s) and all taps, atomics at the end
//   conv_thin_fwd_wide, conv_thin_dgrad_wide                   warp per pixel, lanes over the wide side
// Index ranges: pixels * channel groups must fit in int (the launcher checks).
//
// On an H200 (2026-11-28) the first forms made the BF16 stage-1 step slower than the staged
// tensor-core kernels (0.151 against 0.142 s), so they are off by default. Two causes, read off
// the shapes: (1) where the thin side faces a wide one (conv_out: 128 -> 1; the data gradient of
// LPIPS' 3 -> 64 and of the PatchGAN's 1 -> 64), a thread per pixel walks the wide side with
// 4-byte loads one pixel row apart across the warp, 32 sectors a load; (2) the weight gradient
// keeps one pixel's dy load in flight per thread, so it waits on memory latency (1.5 ms a
// launch where the bytes take ~0.07 ms). The `_wide` kernels put a warp on a pixel, its lanes on
// the wide side's channels (coalesced), partial sums warp-reduced; the weight gradient loads U
// pixels' dy before using any, and `_p1` forms (one pair a thread, U = 8) serve up to 256
// pairs with fewer registers. UNVERIFIED on a GPU (CPU emulator only).
#include "medvae_conv.cuh"

// The sums of one output pixel p for output channels co0 .. co0 + nco - 1 (nco <= 4), over
// input channels c0, c0 + STEP, ... (a thread: all of them; a warp's lane: every 32nd).
template <int STEP>
__device__ __forceinline__ void conv_thin_fwd_sums(const ConvGeom& g, const float* __restrict__ x,
                                                   const float* __restrict__ w, const ConvPixel& p, int co0,
                                                   int nco, int c0, float (&acc)[4]) {
    for (int kd = 0; kd < g.kd; ++kd)
        for (int kh = 0; kh < g.kh; ++kh)
            for (int kw = 0; kw < g.kw; ++kw) {
                const int d = p.d * g.sd - g.pd + kd, h = p.h * g.sh - g.ph + kh, ww = p.w * g.sw - g.pw + kw;
                if (!conv_inside(g, d, h, ww)) continue;
                const float* xp = x + ((((mv_i64)p.n * g.id + d) * g.ih + h) * g.iw + ww) * g.cin;
                const float* wp = w + (((mv_i64)kd * g.kh + kh) * g.kw + kw) * g.cin * g.cout + co0;
                for (int ci = c0; ci < g.cin; ci += STEP) {
                    const float xv = xp[ci];
                    const float* wr = wp + (mv_i64)ci * g.cout;
#pragma unroll
                    for (int j = 0; j < 4; ++j)
                        if (j < nco) acc[j] += xv * wr[j];
                }
            }
}

// The sums of one input pixel p (its sample's first output pixel obase) for input channels
// ci0 .. ci0 + nci - 1 (nci <= 4), over output channels c0, c0 + STEP, ...
template <int STEP>
__device__ __forceinline__ void conv_thin_dgrad_sums(const ConvGeom& g, const float* __restrict__ dy,
                                                     const float* __restrict__ w, const ConvPixel& p, int ci0,
                                                     int nci, int c0, float (&acc)[4]) {
    const mv_i64 obase = (mv_i64)p.n * g.od * g.oh * g.ow;
    for (int kd = 0; kd < g.kd; ++kd)
        for (int kh = 0; kh < g.kh; ++kh)
            for (int kw = 0; kw < g.kw; ++kw) {
                mv_i64 o;
                if (!conv_out_of_in(g, obase, p.d + g.pd, p.h + g.ph, p.w + g.pw, kd, kh, kw, o)) continue;
                const float* dyp = dy + o * g.cout;
                const float* wp = w + ((((mv_i64)kd * g.kh + kh) * g.kw + kw) * g.cin + ci0) * g.cout;
                for (int co = c0; co < g.cout; co += STEP) {
                    const float gv = dyp[co];
#pragma unroll
                    for (int j = 0; j < 4; ++j)
                        if (j < nci) acc[j] += gv * wp[(mv_i64)j * g.cout + co];
                }
            }
}

extern "C" __global__ void __launch_bounds__(256)
    conv_thin_fwd(ConvGeom g, const float* __restrict__ x, const float* __restrict__ w, const float* __restrict__ bias,
                  float* __restrict__ y, float beta) {
    const int groups = (g.cout + 3) / 4, pixels = g.n * g.od * g.oh * g.ow;
    for (int i = (int)mv_global_tid(); i < pixels * groups; i += (int)mv_global_stride()) {
        const int m = i / groups, co0 = (i - m * groups) * 4, nco = min(4, g.cout - co0);
        float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        conv_thin_fwd_sums<1>(g, x, w, conv_out_pixel(g, m), co0, nco, 0, acc);
        float* yp = y + (mv_i64)m * g.cout + co0;
#pragma unroll
        for (int j = 0; j < 4; ++j)
            if (j < nco) mv_store_out(yp + j, acc[j], bias ? bias + co0 + j : nullptr, beta);
    }
}

extern "C" __global__ void __launch_bounds__(256)
    conv_thin_dgrad(ConvGeom g, const float* __restrict__ dy, const float* __restrict__ w, float* __restrict__ dx,
                    float beta) {
    const int groups = (g.cin + 3) / 4, pixels = g.n * g.id * g.ih * g.iw;
    for (int i = (int)mv_global_tid(); i < pixels * groups; i += (int)mv_global_stride()) {
        const int m = i / groups, ci0 = (i - m * groups) * 4, nci = min(4, g.cin - ci0);
        float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        conv_thin_dgrad_sums<1>(g, dy, w, conv_in_pixel(g, m), ci0, nci, 0, acc);
        float* dxp = dx + (mv_i64)m * g.cin + ci0;
#pragma unroll
        for (int j = 0; j < 4; ++j)
            if (j < nci) mv_store_out(dxp + j, acc[j], nullptr, beta);
    }
}

// Block b sums output pixels [b * per_block, (b + 1) * per_block). With P = Cin * Cout weight
// pairs: when P < blockDim, thread t takes pair t % P and every (blockDim / P)-th pixel of the
// run (the rest idle); otherwise pairs t, t + blockDim, ... (at most PAIRS), every pixel. Each
// pair keeps all TAPS of its taps in registers (the tap loop is unrolled to TAPS), reads dy once
// per pixel (U pixels' loads issued together) and x once per tap, and adds its sums into dw with
// atomics at the end.
template <int TAPS, int PAIRS, int U>
__device__ __forceinline__ void conv_thin_wgrad_impl(const ConvGeom& g, const float* __restrict__ x,
                                                     const float* __restrict__ dy, float* dw, int per_block) {
    const int pairs = g.cin * g.cout, taps = g.kd * g.kh * g.kw, t = threadIdx.x, nt = blockDim.x;
    const int lanes = pairs < nt ? nt / pairs : 1;
    const int lane = pairs < nt ? t / pairs : 0;
    if (lane >= lanes) return;
    const int total = g.n * g.od * g.oh * g.ow;
    const int m0 = blockIdx.x * per_block + lane, m1 = min(total, (blockIdx.x + 1) * per_block);
    int ci[PAIRS], co[PAIRS];
    float acc[PAIRS][TAPS];
#pragma unroll
    for (int k = 0; k < PAIRS; ++k) {
        // Few pairs: one per thread (k = 0), the lanes split the pixels instead.
        const int q = pairs < nt ? (k == 0 ? t % pairs : pairs) : t + k * nt;
        ci[k] = q < pairs ? q / g.cout : -1;
        co[k] = q < pairs ? q - ci[k] * g.cout : 0;
#pragma unroll
        for (int tap = 0; tap < TAPS; ++tap) acc[k][tap] = 0.0f;
    }
    if (m0 < m1) {
        ConvPixel p = conv_out_pixel(g, m0);
        for (int m = m0; m < m1; m += lanes * U) {
            // U pixels of this lane: their dy loads all issue before any is used.
            ConvPixel pu[U];
            float gv[U][PAIRS];
#pragma unroll
            for (int u = 0; u < U; ++u) {
                const bool ok = m + u * lanes < m1;
                pu[u] = p;
                pu[u].n = ok ? p.n : -1;
#pragma unroll
                for (int k = 0; k < PAIRS; ++k)
                    gv[u][k] = ok && ci[k] >= 0 ? dy[(mv_i64)(m + u * lanes) * g.cout + co[k]] : 0.0f;
                // The next pixel of this lane: `lanes` output pixels further, carried across rows.
                p.w += lanes;
                while (p.w >= g.ow) {
                    p.w -= g.ow;
                    if (++p.h == g.oh) {
                        p.h = 0;
                        if (++p.d == g.od) {
                            p.d = 0;
                            ++p.n;
                        }
                    }
                }
            }
#pragma unroll
            for (int u = 0; u < U; ++u) {
                if (pu[u].n < 0) continue;
                const mv_i64 xs = (mv_i64)pu[u].n * g.id;
                int kd = 0, kh = 0, kw = 0;
#pragma unroll
                for (int tap = 0; tap < TAPS; ++tap) {
                    if (tap < taps) {
                        const int d = pu[u].d * g.sd - g.pd + kd, h = pu[u].h * g.sh - g.ph + kh,
                                  ww = pu[u].w * g.sw - g.pw + kw;
                        if (conv_inside(g, d, h, ww)) {
                            const float* xp = x + (((xs + d) * g.ih + h) * g.iw + ww) * g.cin;
#pragma unroll
                            for (int k = 0; k < PAIRS; ++k)
                                if (ci[k] >= 0) acc[k][tap] += xp[ci[k]] * gv[u][k];
                        }
                        if (++kw == g.kw) {
                            kw = 0;
                            if (++kh == g.kh) {
                                kh = 0;
                                ++kd;
                            }
                        }
                    }
                }
            }
        }
    }
#pragma unroll
    for (int k = 0; k < PAIRS; ++k) {
        if (ci[k] < 0) continue;
#pragma unroll
        for (int tap = 0; tap < TAPS; ++tap)
            if (tap < taps) atomicAdd(dw + ((mv_i64)tap * g.cin + ci[k]) * g.cout + co[k], acc[k][tap]);
    }
}

// Instantiations by tap capacity: 3x3 (and smaller) kernels with up to 4 * 256 pairs, 4x4 (the
// PatchGAN) and 3x3x3 with up to 2 * 256.
extern "C" __global__ void __launch_bounds__(256)
    conv_thin_wgrad_t9(ConvGeom g, const float* __restrict__ x, const float* __restrict__ dy, float* dw, int per_block) {
    conv_thin_wgrad_impl<9, 4, 2>(g, x, dy, dw, per_block);
}
extern "C" __global__ void __launch_bounds__(256)
    conv_thin_wgrad_t16(ConvGeom g, const float* __restrict__ x, const float* __restrict__ dy, float* dw, int per_block) {
    conv_thin_wgrad_impl<16, 2, 2>(g, x, dy, dw, per_block);
}
extern "C" __global__ void __launch_bounds__(256)
    conv_thin_wgrad_t27(ConvGeom g, const float* __restrict__ x, const float* __restrict__ dy, float* dw, int per_block) {
    conv_thin_wgrad_impl<27, 2, 2>(g, x, dy, dw, per_block);
}
// One pair a thread (at most 256 pairs: every model's thin weight gradient), 8 pixels in flight.
extern "C" __global__ void __launch_bounds__(256)
    conv_thin_wgrad_t9_p1(ConvGeom g, const float* __restrict__ x, const float* __restrict__ dy, float* dw,
                          int per_block) {
    conv_thin_wgrad_impl<9, 1, 8>(g, x, dy, dw, per_block);
}
extern "C" __global__ void __launch_bounds__(256)
    conv_thin_wgrad_t16_p1(ConvGeom g, const float* __restrict__ x, const float* __restrict__ dy, float* dw,
                           int per_block) {
    conv_thin_wgrad_impl<16, 1, 8>(g, x, dy, dw, per_block);
}
extern "C" __global__ void __launch_bounds__(256)
    conv_thin_wgrad_t27_p1(ConvGeom g, const float* __restrict__ x, const float* __restrict__ dy, float* dw,
                           int per_block) {
    conv_thin_wgrad_impl<27, 1, 8>(g, x, dy, dw, per_block);
}

// acc[lane] for lane < 4 without a dynamically indexed (local-memory) array.
__device__ __forceinline__ float conv_thin_pick(const float (&acc)[4], int lane) {
    return lane == 0 ? acc[0] : lane == 1 ? acc[1] : lane == 2 ? acc[2] : acc[3];
}

// y[m, co] for cout <= 4 output channels from cin >= 16 (conv_out): warp per output pixel, lane
// l on input channels l, l + 32, ..., lane co < cout stores.
extern "C" __global__ void __launch_bounds__(256)
    conv_thin_fwd_wide(ConvGeom g, const float* __restrict__ x, const float* __restrict__ w,
                       const float* __restrict__ bias, float* __restrict__ y, float beta) {
    const int lane = threadIdx.x & 31, pixels = g.n * g.od * g.oh * g.ow;
    // Pixels fit in half the int range (the launcher checks), so the grid-stride step cannot
    // overflow. Every lane of a warp has the same m: the loop and the shuffles are warp-uniform.
    const int warps = (int)(mv_global_stride() / 32);
    for (int m = (int)(mv_global_tid() / 32); m < pixels; m += warps) {
        float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        conv_thin_fwd_sums<32>(g, x, w, conv_out_pixel(g, m), 0, g.cout, lane, acc);
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[j] = mv_warp_sum(acc[j]);
        if (lane < g.cout)
            mv_store_out(y + (mv_i64)m * g.cout + lane, conv_thin_pick(acc, lane), bias ? bias + lane : nullptr, beta);
    }
}

// dx[m, ci] for cin <= 4 input channels from cout >= 16 (the data gradient of LPIPS' and the
// PatchGAN's first layers): warp per input pixel, lane l on output channels l, l + 32, ...
extern "C" __global__ void __launch_bounds__(256)
    conv_thin_dgrad_wide(ConvGeom g, const float* __restrict__ dy, const float* __restrict__ w,
                         float* __restrict__ dx, float beta) {
    const int lane = threadIdx.x & 31, pixels = g.n * g.id * g.ih * g.iw;
    const int warps = (int)(mv_global_stride() / 32);
    for (int m = (int)(mv_global_tid() / 32); m < pixels; m += warps) {  // warp-uniform, as above
        float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        conv_thin_dgrad_sums<32>(g, dy, w, conv_in_pixel(g, m), 0, g.cin, lane, acc);
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[j] = mv_warp_sum(acc[j]);
        if (lane < g.cin) mv_store_out(dx + (mv_i64)m * g.cin + lane, conv_thin_pick(acc, lane), nullptr, beta);
    }
}
