// Emulator checks of conv_igemm.cu, conv_direct.cu, conv_thin.cu and gemm.cu against naive
// double-precision convolutions and matrix products.
#include "../conv_direct.cu"
#include "../conv_igemm.cu"
#include "../conv_thin.cu"
#include "../gemm.cu"
#include "../gemm_f32.cu"
#include "check.h"
#include "conv_ref.h"

// C[b] = alpha * op(A) op(B) + bias + beta * C for layouts nn, nt, tn.
static void test_gemm() {
    struct G { int m, n, k, batch; };
    const char* lay[] = {"nn", "nt", "tn"};
    for (G t : {G{37, 45, 29, 2}, G{64, 64, 64, 1}, G{150, 70, 100, 1}, G{8, 132, 36, 3}}) {
        for (int l = 0; l < 3; ++l) {
            bool at = l == 2, bt = l == 1;
            int lda = at ? t.m : t.k, ldb = bt ? t.k : t.n, ldc = t.n;
            long long sa = (long long)t.m * t.k, sb = (long long)t.k * t.n, sc = (long long)t.m * t.n;
            auto a = chk::randn(sa * t.batch), b = chk::randn(sb * t.batch), bias = chk::randn(t.n);
            auto c0 = chk::randn(sc * t.batch);
            const auto ref = gemm_reference(at, bt, t.m, t.n, t.k, t.batch, a.data(), lda, sa, b.data(), ldb, sb,
                                            bias, c0, ldc, sc, 0.5, 2.0);
            GemmGeom g{t.m, t.n, t.k, lda, ldb, ldc, 0.5f, 2.0f, sa, sb, sc};
            {  // the f32 SIMT kernels (FP32 precision), against the unrounded product
                dim3 grid((t.m + 63) / 64, (t.n + 63) / 64, t.batch);
                auto c = c0;
                auto run = [&](auto kern) { EMU_LAUNCH(kern, grid, dim3(256), 0, g, a.data(), b.data(), bias.data(), c.data()); };
                run(l == 0 ? gemm_f32_nn : l == 1 ? gemm_f32_nt : gemm_f32_tn);
                char tag[128];
                snprintf(tag, sizeof tag, "gemm %s %dx%dx%d b%d f32", lay[l], t.m, t.n, t.k, t.batch);
                chk::expect(tag, c, ref, 1e-6);
            }
            for (int v = 0; v < 4; ++v) {
                const bool big = v % 2 == 0;
                const int BM = big ? 128 : 64, NT = big ? 256 : 128;
                dim3 grid((t.m + BM - 1) / BM, (t.n + BM - 1) / BM, t.batch);
                auto c = c0;
                auto run = [&](auto kern) { EMU_LAUNCH(kern, grid, dim3(NT), 0, g, a.data(), b.data(), bias.data(), c.data()); };
                if (v == 0) run(l == 0 ? gemm_tf32_128x128_nn : l == 1 ? gemm_tf32_128x128_nt : gemm_tf32_128x128_tn);
                if (v == 1) run(l == 0 ? gemm_tf32_64x64_nn : l == 1 ? gemm_tf32_64x64_nt : gemm_tf32_64x64_tn);
                if (v == 2) run(l == 0 ? gemm_bf16_128x128_nn : l == 1 ? gemm_bf16_128x128_nt : gemm_bf16_128x128_tn);
                if (v == 3) run(l == 0 ? gemm_bf16_64x64_nn : l == 1 ? gemm_bf16_64x64_nt : gemm_bf16_64x64_tn);
                char tag[128];
                snprintf(tag, sizeof tag, "gemm %s %dx%dx%d b%d %s", lay[l], t.m, t.n, t.k, t.batch,
                         v == 0 ? "tf32_128" : v == 1 ? "tf32_64" : v == 2 ? "bf16_128" : "bf16_64");
                chk::expect(tag, c, ref, v < 2 ? 2e-3 : 1e-2);
            }
        }
    }
}

int main() {
    test_gemm();
    std::vector<Case> cases = {
        // n  id ih iw cin cout kd kh kw sd sh sw pdl phl pwl pdh phh pwh
        {2, 1, 7, 6, 8, 12, 1, 3, 3, 1, 1, 1, 0, 1, 1, 0, 1, 1},   // k3 s1 p1, vectorised
        {1, 1, 9, 7, 3, 5, 1, 3, 3, 1, 2, 2, 0, 0, 0, 0, 1, 1},    // k3 s2 pad (0,1): scalar paths
        {2, 1, 5, 6, 16, 8, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0},   // k1
        {1, 1, 10, 8, 4, 6, 1, 4, 4, 1, 2, 2, 0, 1, 1, 0, 1, 1},   // k4 s2 p1
        {1, 1, 6, 7, 5, 1, 1, 4, 4, 1, 1, 1, 0, 1, 1, 0, 1, 1},    // k4 s1 p1, cout 1
        {1, 4, 5, 3, 4, 8, 3, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1},    // 3D k3 s1 p1
        {1, 5, 4, 6, 3, 4, 3, 3, 3, 2, 2, 2, 0, 0, 0, 1, 1, 1},    // 3D k3 s2 pad (0,1)
        {1, 1, 12, 11, 72, 136, 1, 3, 3, 1, 1, 1, 0, 1, 1, 0, 1, 1}, // several tiles in M, N and K
        // thin sides (conv_thin.cu): image in/out, VGG/PatchGAN first layers, many pairs
        {2, 1, 9, 8, 1, 16, 1, 3, 3, 1, 1, 1, 0, 1, 1, 0, 1, 1},    // cin 1
        {1, 1, 11, 9, 20, 1, 1, 3, 3, 1, 1, 1, 0, 1, 1, 0, 1, 1},   // cout 1, cin 20 (5 channel groups)
        {2, 1, 10, 8, 1, 6, 1, 4, 4, 1, 2, 2, 0, 1, 1, 0, 1, 1},    // PatchGAN first layer: k4 s2 p1
        {1, 1, 6, 5, 2, 200, 1, 3, 3, 1, 1, 1, 0, 1, 1, 0, 1, 1},   // 400 pairs: two per thread
        {1, 3, 4, 5, 1, 300, 3, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1},   // 3D, 300 pairs over 27 taps
        {1, 4, 5, 4, 6, 2, 3, 3, 3, 2, 2, 2, 1, 1, 1, 1, 1, 1},     // 3D k3 s2 p1, cout 2
        // a thin side facing a wide one (the _wide kernels): conv_out, LPIPS' and the PatchGAN's
        // first layers (40 and 70 channels: a partial last chunk of 32 lanes)
        {1, 1, 7, 6, 40, 1, 1, 3, 3, 1, 1, 1, 0, 1, 1, 0, 1, 1},    // cin 40 -> cout 1
        {2, 1, 6, 5, 3, 70, 1, 3, 3, 1, 1, 1, 0, 1, 1, 0, 1, 1},    // cin 3 -> cout 70
        {1, 1, 10, 9, 1, 64, 1, 4, 4, 1, 2, 2, 0, 1, 1, 0, 1, 1},   // cin 1 -> cout 64, k4 s2 p1
    };
    const char* names[] = {"tf32_128x128", "tf32_64x64", "bf16_128x128", "bf16_64x64"};
    for (size_t ci = 0; ci < cases.size(); ++ci) {
        const Case& c = cases[ci];
        const auto [g, xs, ws, ys, x, w, b, dy] = case_inputs(c);
        std::vector<double> yr, dxr, dwr;
        reference(g, x, w, b, dy, yr, dxr, dwr);
        {  // direct f32 reference kernels
            std::vector<float> y(ys, 2.0f), dx(xs, 1.0f), dw(ws, 1.0f);
            EMU_LAUNCH(conv_direct_fwd, dim3(4), dim3(64), 0, g, x.data(), w.data(), b.data(), y.data(), 1.0f);
            EMU_LAUNCH(conv_direct_dgrad, dim3(4), dim3(64), 0, g, dy.data(), w.data(), dx.data(), 1.0f);
            EMU_LAUNCH(conv_direct_wgrad, dim3(4), dim3(64), 0, g, x.data(), dy.data(), dw.data());
            std::vector<double> ye(yr), dxe(dxr), dwe(dwr);
            for (auto& e : ye) e += 2.0;
            for (auto& e : dxe) e += 1.0;
            for (auto& e : dwe) e += 1.0;
            char tag[128];
            snprintf(tag, sizeof tag, "case %zu fwd direct", ci);
            chk::expect(tag, y, ye, 1e-5);
            snprintf(tag, sizeof tag, "case %zu dgrad direct", ci);
            chk::expect(tag, dx, dxe, 1e-5);
            snprintf(tag, sizeof tag, "case %zu wgrad direct", ci);
            chk::expect(tag, dw, dwe, 1e-5);
        }
        if (g.cin <= 4 || g.cout <= 4) {  // thin kernels: beta on a prefilled output, dw accumulates
            std::vector<float> y(ys, 2.0f), dx(xs, 1.0f), dw(ws, 1.0f);
            EMU_LAUNCH(conv_thin_fwd, dim3(3), dim3(256), 0, g, x.data(), w.data(), b.data(), y.data(), 0.5f);
            EMU_LAUNCH(conv_thin_dgrad, dim3(3), dim3(256), 0, g, dy.data(), w.data(), dx.data(), 1.0f);
            // Runs shorter and longer than the lanes (the pixel walk carries across rows).
            const int taps = g.kd * g.kh * g.kw, pixels = g.n * g.od * g.oh * g.ow, per_block = ci % 2 ? 7 : 61;
            const dim3 wgrid((pixels + per_block - 1) / per_block);
            // The weight-gradient kernels whose tap capacity holds the case: multi-pair, one pair.
            auto wgrad = taps <= 9 ? conv_thin_wgrad_t9 : taps <= 16 ? conv_thin_wgrad_t16 : conv_thin_wgrad_t27;
            auto wgrad_p1 =
                taps <= 9 ? conv_thin_wgrad_t9_p1 : taps <= 16 ? conv_thin_wgrad_t16_p1 : conv_thin_wgrad_t27_p1;
            EMU_LAUNCH(wgrad, wgrid, dim3(256), 0, g, x.data(), dy.data(), dw.data(), per_block);
            std::vector<double> ye(yr), dxe(dxr), dwe(dwr);
            for (auto& e : ye) e += 1.0;
            for (auto& e : dxe) e += 1.0;
            for (auto& e : dwe) e += 1.0;
            char tag[128];
            snprintf(tag, sizeof tag, "case %zu fwd thin (cin %d cout %d)", ci, g.cin, g.cout);
            chk::expect(tag, y, ye, 1e-5);
            snprintf(tag, sizeof tag, "case %zu dgrad thin", ci);
            chk::expect(tag, dx, dxe, 1e-5);
            snprintf(tag, sizeof tag, "case %zu wgrad thin", ci);
            chk::expect(tag, dw, dwe, 1e-5);
            // The warp-per-pixel forms where the launcher picks them (the other side >= 16
            // channels), and the one-pair weight gradients (at most 256 pairs), on a grid whose
            // threads are fewer than the pixels' warps (the grid-stride step).
            if (g.cout <= 4 && g.cin >= 16) {
                std::vector<float> yw(ys, 2.0f);
                EMU_LAUNCH(conv_thin_fwd_wide, dim3(2), dim3(256), 0, g, x.data(), w.data(), b.data(), yw.data(), 0.5f);
                snprintf(tag, sizeof tag, "case %zu fwd thin wide", ci);
                chk::expect(tag, yw, ye, 1e-5);
            }
            if (g.cin <= 4 && g.cout >= 16) {
                std::vector<float> dxw(xs, 1.0f);
                EMU_LAUNCH(conv_thin_dgrad_wide, dim3(2), dim3(256), 0, g, dy.data(), w.data(), dxw.data(), 1.0f);
                snprintf(tag, sizeof tag, "case %zu dgrad thin wide", ci);
                chk::expect(tag, dxw, dxe, 1e-5);
            }
            if (g.cin * g.cout <= 256) {
                std::vector<float> dw1(ws, 1.0f);
                EMU_LAUNCH(wgrad_p1, wgrid, dim3(256), 0, g, x.data(), dy.data(), dw1.data(), per_block);
                snprintf(tag, sizeof tag, "case %zu wgrad thin one pair", ci);
                chk::expect(tag, dw1, dwe, 1e-5);
            }
        }
        for (int v = 0; v < 4; ++v) {
            const bool big = (v % 2) == 0;
            const int BM = big ? 128 : 64, NT = big ? 256 : 128;
            const double tol = v < 2 ? 2e-3 : 1e-2;
            const int BK = v < 2 ? 16 : 32;
            char tag[128];
            // forward, with beta = 0.5 on a prefilled output
            std::vector<float> y(ys, 2.0f);
            dim3 grid((g.n * g.od * g.oh * g.ow + BM - 1) / BM, (g.cout + BM - 1) / BM);
            switch (v) {
                case 0: EMU_LAUNCH(conv_fwd_tf32_128x128, grid, dim3(NT), 0, g, x.data(), w.data(), b.data(), y.data(), 0.5f); break;
                case 1: EMU_LAUNCH(conv_fwd_tf32_64x64, grid, dim3(NT), 0, g, x.data(), w.data(), b.data(), y.data(), 0.5f); break;
                case 2: EMU_LAUNCH(conv_fwd_bf16_128x128, grid, dim3(NT), 0, g, x.data(), w.data(), b.data(), y.data(), 0.5f); break;
                case 3: EMU_LAUNCH(conv_fwd_bf16_64x64, grid, dim3(NT), 0, g, x.data(), w.data(), b.data(), y.data(), 0.5f); break;
            }
            std::vector<double> yexp(yr);
            for (auto& e : yexp) e += 1.0;
            snprintf(tag, sizeof tag, "case %zu fwd %s", ci, names[v]);
            chk::expect(tag, y, yexp, tol);
            // dgrad, beta = 0 on garbage output
            std::vector<float> dx(xs, NAN);
            dim3 gd((g.n * g.id * g.ih * g.iw + BM - 1) / BM, (g.cin + BM - 1) / BM);
            switch (v) {
                case 0: EMU_LAUNCH(conv_dgrad_tf32_128x128, gd, dim3(NT), 0, g, dy.data(), w.data(), dx.data(), 0.0f); break;
                case 1: EMU_LAUNCH(conv_dgrad_tf32_64x64, gd, dim3(NT), 0, g, dy.data(), w.data(), dx.data(), 0.0f); break;
                case 2: EMU_LAUNCH(conv_dgrad_bf16_128x128, gd, dim3(NT), 0, g, dy.data(), w.data(), dx.data(), 0.0f); break;
                case 3: EMU_LAUNCH(conv_dgrad_bf16_64x64, gd, dim3(NT), 0, g, dy.data(), w.data(), dx.data(), 0.0f); break;
            }
            snprintf(tag, sizeof tag, "case %zu dgrad %s", ci, names[v]);
            chk::expect(tag, dx, dxr, tol);
            // Stride 1: the launcher's data gradient is the forward kernel on dy with flipped,
            // transposed weights and padding k-1-p (conv_weight_flip_transpose).
            if (c.sd == 1 && c.sh == 1 && c.sw == 1 && c.pdl < c.kd && c.phl < c.kh && c.pwl < c.kw &&
                c.pdh < c.kd && c.phh < c.kh && c.pwh < c.kw) {
                std::vector<float> wt(ws, NAN);
                EMU_LAUNCH(conv_weight_flip_transpose, dim3(3), dim3(64), 0, w.data(), wt.data(),
                           g.kd * g.kh * g.kw, g.cin, g.cout);
                Case t = {c.n, g.od, g.oh, g.ow, c.cout, c.cin, c.kd, c.kh, c.kw, 1, 1, 1,
                          c.kd - 1 - c.pdl, c.kh - 1 - c.phl, c.kw - 1 - c.pwl,
                          c.kd - 1 - c.pdh, c.kh - 1 - c.phh, c.kw - 1 - c.pwh};
                ConvGeom gt = geom(t);
                std::vector<float> dxt(xs, NAN);
                dim3 gf((gt.n * gt.od * gt.oh * gt.ow + BM - 1) / BM, (gt.cout + BM - 1) / BM);
                switch (v) {
                    case 0: EMU_LAUNCH(conv_fwd_tf32_128x128, gf, dim3(NT), 0, gt, dy.data(), wt.data(), nullptr, dxt.data(), 0.0f); break;
                    case 1: EMU_LAUNCH(conv_fwd_tf32_64x64, gf, dim3(NT), 0, gt, dy.data(), wt.data(), nullptr, dxt.data(), 0.0f); break;
                    case 2: EMU_LAUNCH(conv_fwd_bf16_128x128, gf, dim3(NT), 0, gt, dy.data(), wt.data(), nullptr, dxt.data(), 0.0f); break;
                    case 3: EMU_LAUNCH(conv_fwd_bf16_64x64, gf, dim3(NT), 0, gt, dy.data(), wt.data(), nullptr, dxt.data(), 0.0f); break;
                }
                snprintf(tag, sizeof tag, "case %zu dgrad as flipped fwd %s", ci, names[v]);
                chk::expect(tag, dxt, dxr, tol);
            }
            // wgrad, accumulating onto 1.0, split into 2 along pixels
            std::vector<float> dw(ws, 1.0f);
            int P = g.n * g.od * g.oh * g.ow, kt = (P + BK - 1) / BK, splits = 2, tps = (kt + splits - 1) / splits;
            dim3 gw((ws / g.cout + BM - 1) / BM, (g.cout + BM - 1) / BM, splits);
            switch (v) {
                case 0: EMU_LAUNCH(conv_wgrad_tf32_128x128, gw, dim3(NT), 0, g, x.data(), dy.data(), dw.data(), tps); break;
                case 1: EMU_LAUNCH(conv_wgrad_tf32_64x64, gw, dim3(NT), 0, g, x.data(), dy.data(), dw.data(), tps); break;
                case 2: EMU_LAUNCH(conv_wgrad_bf16_128x128, gw, dim3(NT), 0, g, x.data(), dy.data(), dw.data(), tps); break;
                case 3: EMU_LAUNCH(conv_wgrad_bf16_64x64, gw, dim3(NT), 0, g, x.data(), dy.data(), dw.data(), tps); break;
            }
            std::vector<double> dwexp(dwr);
            for (auto& e : dwexp) e += 1.0;
            snprintf(tag, sizeof tag, "case %zu wgrad %s", ci, names[v]);
            chk::expect(tag, dw, dwexp, tol);
        }
    }
    return chk::finish();
}
