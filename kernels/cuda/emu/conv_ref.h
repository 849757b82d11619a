// conv_ref.h — the convolution cases and the double-precision references (convolution, GEMM)
// shared by the emulator checks of conv_igemm.cu / conv_direct.cu / gemm.cu / gemm_f32.cu
// (test_conv.cpp), conv_bf16.cu / gemm_bf16.cu (test_conv_bf16.cpp) and conv_tf32.cu / gemm_tf32.cu
// (test_conv_tf32.cpp).
#pragma once
#include <vector>

#include "../medvae_conv.cuh"
#include "check.h"

struct Case {
    int n, id, ih, iw, cin, cout, kd, kh, kw, sd, sh, sw, pdl, phl, pwl, pdh, phh, pwh;
};

static ConvGeom geom(const Case& c) {
    ConvGeom g;
    g.n = c.n; g.id = c.id; g.ih = c.ih; g.iw = c.iw; g.cin = c.cin; g.cout = c.cout;
    g.kd = c.kd; g.kh = c.kh; g.kw = c.kw; g.sd = c.sd; g.sh = c.sh; g.sw = c.sw;
    g.pd = c.pdl; g.ph = c.phl; g.pw = c.pwl;
    g.od = (c.id + c.pdl + c.pdh - c.kd) / c.sd + 1;
    g.oh = (c.ih + c.phl + c.phh - c.kh) / c.sh + 1;
    g.ow = (c.iw + c.pwl + c.pwh - c.kw) / c.sw + 1;
    return g;
}

// One case's geometry, element counts and random operands: x, w (scale 0.2), b (0.1) and dy,
// drawn in that order from chk's generator (so every test draws the same sequence).
struct CaseInputs {
    ConvGeom g;
    size_t xs, ws, ys;
    std::vector<float> x, w, b, dy;
};

static CaseInputs case_inputs(const Case& c) {
    CaseInputs in;
    in.g = geom(c);
    const ConvGeom& g = in.g;
    in.xs = (size_t)g.n * g.id * g.ih * g.iw * g.cin;
    in.ws = (size_t)g.kd * g.kh * g.kw * g.cin * g.cout;
    in.ys = (size_t)g.n * g.od * g.oh * g.ow * g.cout;
    in.x = chk::randn(in.xs);
    in.w = chk::randn(in.ws, 0.2f);
    in.b = chk::randn(g.cout, 0.1f);
    in.dy = chk::randn(in.ys);
    return in;
}

// y = conv(x, w) + bias (double); dx, dw for upstream dy.
static void reference(const ConvGeom& g, const std::vector<float>& x, const std::vector<float>& w,
                      const std::vector<float>& b, const std::vector<float>& dy, std::vector<double>& y,
                      std::vector<double>& dx, std::vector<double>& dw) {
    y.assign((size_t)g.n * g.od * g.oh * g.ow * g.cout, 0.0);
    dx.assign(x.size(), 0.0);
    dw.assign(w.size(), 0.0);
    for (int n = 0; n < g.n; ++n)
        for (int od = 0; od < g.od; ++od)
            for (int oh = 0; oh < g.oh; ++oh)
                for (int ow = 0; ow < g.ow; ++ow) {
                    size_t o = ((((size_t)n * g.od + od) * g.oh + oh) * g.ow + ow) * g.cout;
                    for (int co = 0; co < g.cout; ++co) y[o + co] = b.empty() ? 0.0 : b[co];
                    for (int kd = 0; kd < g.kd; ++kd)
                        for (int kh = 0; kh < g.kh; ++kh)
                            for (int kw = 0; kw < g.kw; ++kw) {
                                int d = od * g.sd - g.pd + kd, h = oh * g.sh - g.ph + kh, ww = ow * g.sw - g.pw + kw;
                                if (d < 0 || d >= g.id || h < 0 || h >= g.ih || ww < 0 || ww >= g.iw) continue;
                                size_t xi = ((((size_t)n * g.id + d) * g.ih + h) * g.iw + ww) * g.cin;
                                size_t tap = ((size_t)kd * g.kh + kh) * g.kw + kw;
                                for (int ci = 0; ci < g.cin; ++ci)
                                    for (int co = 0; co < g.cout; ++co) {
                                        size_t wi = (tap * g.cin + ci) * g.cout + co;
                                        y[o + co] += (double)x[xi + ci] * w[wi];
                                        dx[xi + ci] += (double)dy[o + co] * w[wi];
                                        dw[wi] += (double)x[xi + ci] * dy[o + co];
                                    }
                            }
                }
}

// C[z] = alpha op(A[z]) op(B[z]) + bias + beta C0[z] in double: A [M, K] (or [K, M] when `at`),
// B [K, N] (or [N, K] when `bt`), leading dimensions lda/ldb/ldc, batch strides sa/sb/sc.
static std::vector<double> gemm_reference(bool at, bool bt, int m, int n, int k, int batch, const float* a, int lda,
                                          long long sa, const float* b, int ldb, long long sb,
                                          const std::vector<float>& bias, const std::vector<float>& c0, int ldc,
                                          long long sc, double alpha, double beta) {
    std::vector<double> ref(c0.begin(), c0.end());
    for (int z = 0; z < batch; ++z)
        for (int i = 0; i < m; ++i)
            for (int j = 0; j < n; ++j) {
                double acc = 0;
                for (int kk = 0; kk < k; ++kk) {
                    double av = at ? a[z * sa + (long long)kk * lda + i] : a[z * sa + (long long)i * lda + kk];
                    double bv = bt ? b[z * sb + (long long)j * ldb + kk] : b[z * sb + (long long)kk * ldb + j];
                    acc += av * bv;
                }
                const long long o = z * sc + (long long)i * ldc + j;
                ref[o] = alpha * acc + bias[j] + beta * c0[o];
            }
    return ref;
}
