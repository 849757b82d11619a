// conv_direct.cu — plain f32 convolution (2D/3D), one thread per output element, no tiling.
//
// The reference the tensor-core kernels are checked against on the GPU (and the fallback for
// `precision: fp32`). Same geometry, layouts and epilogues as conv_igemm.cu:
//   conv_direct_fwd    y  = conv(x, w) + bias (nullable) + beta * y_old
//   conv_direct_dgrad  dx = conv^T(dy, w) + beta * dx_old
//   conv_direct_wgrad  dw += x^T * dy           (one thread per weight, loops over all pixels)
// Launch: 1-D grid-stride, any block size.
#include "medvae_conv.cuh"

extern "C" __global__ void conv_direct_fwd(ConvGeom g, const float* __restrict__ x, const float* __restrict__ w,
                                           const float* __restrict__ bias, float* __restrict__ y, float beta) {
    const mv_i64 total = (mv_i64)g.n * g.od * g.oh * g.ow * g.cout;
    for (mv_i64 i = mv_global_tid(); i < total; i += mv_global_stride()) {
        const int co = (int)(i % g.cout);
        mv_i64 t = i / g.cout;
        const int ow = (int)(t % g.ow);
        t /= g.ow;
        const int oh = (int)(t % g.oh);
        t /= g.oh;
        const int od = (int)(t % g.od);
        const int n = (int)(t / g.od);
        float acc = 0.0f;
        for (int kd = 0; kd < g.kd; ++kd) {
            const int d = od * g.sd - g.pd + kd;
            if (d < 0 || d >= g.id) continue;
            for (int kh = 0; kh < g.kh; ++kh) {
                const int h = oh * g.sh - g.ph + kh;
                if (h < 0 || h >= g.ih) continue;
                for (int kw = 0; kw < g.kw; ++kw) {
                    const int ww = ow * g.sw - g.pw + kw;
                    if (ww < 0 || ww >= g.iw) continue;
                    const float* xp = x + ((((mv_i64)n * g.id + d) * g.ih + h) * g.iw + ww) * g.cin;
                    const float* wp = w + (((mv_i64)kd * g.kh + kh) * g.kw + kw) * g.cin * g.cout + co;
                    for (int ci = 0; ci < g.cin; ++ci) acc += xp[ci] * wp[(mv_i64)ci * g.cout];
                }
            }
        }
        if (bias) acc += bias[co];
        if (beta != 0.0f) acc += beta * y[i];
        y[i] = acc;
    }
}

extern "C" __global__ void conv_direct_dgrad(ConvGeom g, const float* __restrict__ dy, const float* __restrict__ w,
                                             float* __restrict__ dx, float beta) {
    const mv_i64 total = (mv_i64)g.n * g.id * g.ih * g.iw * g.cin;
    for (mv_i64 i = mv_global_tid(); i < total; i += mv_global_stride()) {
        const int ci = (int)(i % g.cin);
        mv_i64 t = i / g.cin;
        const int iw = (int)(t % g.iw);
        t /= g.iw;
        const int ih = (int)(t % g.ih);
        t /= g.ih;
        const int id = (int)(t % g.id);
        const int n = (int)(t / g.id);
        float acc = 0.0f;
        for (int kd = 0; kd < g.kd; ++kd) {
            const int dd = id + g.pd - kd;
            if (dd < 0 || dd % g.sd) continue;
            const int od = dd / g.sd;
            if (od >= g.od) continue;
            for (int kh = 0; kh < g.kh; ++kh) {
                const int hh = ih + g.ph - kh;
                if (hh < 0 || hh % g.sh) continue;
                const int oh = hh / g.sh;
                if (oh >= g.oh) continue;
                for (int kw = 0; kw < g.kw; ++kw) {
                    const int ww = iw + g.pw - kw;
                    if (ww < 0 || ww % g.sw) continue;
                    const int ow = ww / g.sw;
                    if (ow >= g.ow) continue;
                    const float* dyp = dy + ((((mv_i64)n * g.od + od) * g.oh + oh) * g.ow + ow) * g.cout;
                    const float* wp = w + ((((mv_i64)kd * g.kh + kh) * g.kw + kw) * g.cin + ci) * g.cout;
                    for (int co = 0; co < g.cout; ++co) acc += dyp[co] * wp[co];
                }
            }
        }
        if (beta != 0.0f) acc += beta * dx[i];
        dx[i] = acc;
    }
}

extern "C" __global__ void conv_direct_wgrad(ConvGeom g, const float* __restrict__ x, const float* __restrict__ dy,
                                             float* __restrict__ dw) {
    const mv_i64 total = (mv_i64)g.kd * g.kh * g.kw * g.cin * g.cout;
    for (mv_i64 i = mv_global_tid(); i < total; i += mv_global_stride()) {
        const int co = (int)(i % g.cout);
        mv_i64 t = i / g.cout;
        const int ci = (int)(t % g.cin);
        const ConvTap tap = conv_tap(g, (int)(t / g.cin));
        float acc = 0.0f;
        for (int n = 0; n < g.n; ++n)
            for (int od = 0; od < g.od; ++od) {
                const int d = od * g.sd - g.pd + tap.kd;
                if (d < 0 || d >= g.id) continue;
                for (int oh = 0; oh < g.oh; ++oh) {
                    const int h = oh * g.sh - g.ph + tap.kh;
                    if (h < 0 || h >= g.ih) continue;
                    for (int ow = 0; ow < g.ow; ++ow) {
                        const int ww = ow * g.sw - g.pw + tap.kw;
                        if (ww < 0 || ww >= g.iw) continue;
                        const float xv = x[((((mv_i64)n * g.id + d) * g.ih + h) * g.iw + ww) * g.cin + ci];
                        const float gv = dy[((((mv_i64)n * g.od + od) * g.oh + oh) * g.ow + ow) * g.cout + co];
                        acc += xv * gv;
                    }
                }
            }
        dw[i] += acc;
    }
}

// The data gradient of a stride-1 convolution is a forward convolution of dy with the weights
// flipped in space and with Cin and Cout swapped (padding k-1-p). This builds those weights,
// wt[taps-1-t][co][ci] = w[t][ci][co] (reversing the flattened tap index flips d, h and w at
// once), so the faster forward implicit-GEMM kernels serve the data gradient too.
// Launch: 1-D grid-stride over taps*cin*cout.
extern "C" __global__ void conv_weight_flip_transpose(const float* __restrict__ w, float* __restrict__ wt, int taps,
                                                      int cin, int cout) {
    const mv_i64 total = (mv_i64)taps * cin * cout;
    for (mv_i64 i = mv_global_tid(); i < total; i += mv_global_stride()) {
        const int ci = (int)(i % cin);
        mv_i64 r = i / cin;
        const int co = (int)(r % cout);
        const int t = (int)(r / cout);
        wt[i] = w[((mv_i64)(taps - 1 - t) * cin + ci) * cout + co];
    }
}
