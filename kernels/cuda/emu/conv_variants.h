// conv_variants.h — the checks every streamed convolution tile (a variant of conv_bf16.cu or
// conv_tf32.cu) gets against the double reference of conv_ref.h, shared by test_conv_bf16.cpp and
// test_conv_tf32.cpp:
//   forward with bias, beta = 0.5 onto an output prefilled with 2;
//   forward without bias, beta = 0 over NaN;
//   data gradient (when the variant has one), beta = 0 over NaN and beta = 1 onto 1;
//   weight gradient accumulating onto 1, the pixels split in 1, 2 and 3 (uneven) parts.
// Include after check.h, conv_ref.h and the kernels (EMU_LAUNCH).
#pragma once
#include <cmath>
#include <cstdio>
#include <vector>

// `V` names a variant's kernels, tile and shared memory: name, bm, bn, bk, threads, fwd, dgrad
// (null when the tile has none), wgrad, fwd_smem, dg_smem, wg_smem. `E` is the element type the
// kernels read. `prefix` starts every check's name after the case number.
template <class V, class E>
static void check_variant(size_t ci, const char* prefix, const ConvGeom& g, const V& v, const std::vector<E>& x,
                          const std::vector<E>& w, const std::vector<float>& b, const std::vector<E>& dy,
                          const std::vector<double>& yref, const std::vector<double>& dxref,
                          const std::vector<double>& dwref) {
    const size_t xs = x.size(), ws = w.size(), ys = dy.size();
    char tag[160];
    std::vector<float> y(ys, 2.0f);
    dim3 grid((g.n * g.od * g.oh * g.ow + v.bm - 1) / v.bm, (g.cout + v.bn - 1) / v.bn);
    EMU_LAUNCH(v.fwd, grid, dim3(v.threads), v.fwd_smem, g, x.data(), w.data(), b.data(), y.data(), 0.5f);
    std::vector<double> yexp(yref);
    for (auto& e : yexp) e += 1.0;
    snprintf(tag, sizeof tag, "case %zu %sfwd %s", ci, prefix, v.name);
    chk::expect(tag, y, yexp, 1e-5);

    std::vector<float> y0(ys, NAN);
    EMU_LAUNCH(v.fwd, grid, dim3(v.threads), v.fwd_smem, g, x.data(), w.data(), nullptr, y0.data(), 0.0f);
    std::vector<double> y0exp(yref);
    for (size_t i = 0; i < y0exp.size(); ++i) y0exp[i] -= b[i % g.cout];
    snprintf(tag, sizeof tag, "case %zu %sfwd no bias %s", ci, prefix, v.name);
    chk::expect(tag, y0, y0exp, 1e-5);

    if (v.dgrad) {
        dim3 gd((g.n * g.id * g.ih * g.iw + v.bm - 1) / v.bm, (g.cin + v.bn - 1) / v.bn);
        for (float beta : {0.0f, 1.0f}) {
            std::vector<float> dx(xs, beta == 0.0f ? NAN : 1.0f);
            EMU_LAUNCH(v.dgrad, gd, dim3(v.threads), v.dg_smem, g, dy.data(), w.data(), dx.data(), beta);
            std::vector<double> dxexp(dxref);
            for (auto& e : dxexp) e += beta;
            snprintf(tag, sizeof tag, "case %zu %sdgrad %s beta %g", ci, prefix, v.name, beta);
            chk::expect(tag, dx, dxexp, 1e-5);
        }
    }

    for (int splits : {1, 2, 3}) {
        std::vector<float> dw(ws, 1.0f);
        const int P = g.n * g.od * g.oh * g.ow, kt = (P + v.bk - 1) / v.bk;
        const int tps = (kt + splits - 1) / splits;
        dim3 gw((ws / g.cout + v.bm - 1) / v.bm, (g.cout + v.bn - 1) / v.bn, splits);
        EMU_LAUNCH(v.wgrad, gw, dim3(v.threads), v.wg_smem, g, x.data(), dy.data(), dw.data(), tps);
        std::vector<double> dwexp(dwref);
        for (auto& e : dwexp) e += 1.0;
        snprintf(tag, sizeof tag, "case %zu %swgrad %s, %d splits", ci, prefix, v.name, splits);
        chk::expect(tag, dw, dwexp, 1e-5);
    }
}
