// Emulator checks of conv_bf16.cu and gemm_bf16.cu (the cp.async + ldmatrix pipeline on bf16
// operands) against
// naive double-precision convolutions and products of the bf16-rounded inputs: only the f32
// summation order
// differs, so the tolerance is tight (a wrong fragment, run or predicate is an O(1) error).
#include "../conv_bf16.cu"
#include "../conv_wgmma.cu"
#include "../gemm_bf16.cu"
#include "check.h"
#include "conv_ref.h"
#include "conv_variants.h"

// Through the conversion kernel, and the rounded values back as f32 (for the reference).
static std::vector<mv_u16> to_bf16(const std::vector<float>& v, std::vector<float>& rounded) {
    std::vector<mv_u16> h(v.size());
    EMU_LAUNCH(cvt_f32_bf16, dim3(3), dim3(64), 0, v.data(), h.data(), (mv_i64)v.size());
    rounded.resize(v.size());
    for (size_t i = 0; i < v.size(); ++i) rounded[i] = mv_bf16_to_f32(h[i]);
    return h;
}

// The conversion kernel on lengths that are not multiples of 4 and on an unaligned source
// (scalar path), against the scalar rounding.
static void test_cvt() {
    for (size_t n : {1, 7, 64, 1001}) {
        auto v = chk::randn(n + 1);
        for (int off = 0; off < 2; ++off) {
            std::vector<mv_u16> h(n, 0xffff);
            EMU_LAUNCH(cvt_f32_bf16, dim3(2), dim3(32), 0, v.data() + off, h.data(), (mv_i64)n);
            std::vector<float> got(n);
            std::vector<double> want(n);
            for (size_t i = 0; i < n; ++i) {
                got[i] = mv_bf16_to_f32(h[i]);
                want[i] = mv_bf16_to_f32(mv_f32_to_bf16(v[i + off]));
            }
            char tag[64];
            snprintf(tag, sizeof tag, "cvt_f32_bf16 n %zu offset %d", n, off);
            chk::expect(tag, got, want, 0.0);
        }
    }
}

// C[b] = 0.5 op(A) op(B) + bias + 2 C for the three layouts, with leading dimensions wider
// than the matrices and per-operand batch strides (0 broadcasts B in one case).
static void test_gemm16() {
    struct G { int m, n, k, batch, pad; bool share_b; };
    const char* lay[] = {"nn", "nt", "tn"};
    for (G t : {G{40, 48, 64, 2, 8, false}, G{136, 72, 40, 1, 0, false}, G{8, 264, 24, 3, 16, true}}) {
        for (int l = 0; l < 3; ++l) {
            const bool at = l == 2, bt = l == 1;
            const int ar = at ? t.k : t.m, ac = at ? t.m : t.k, br = bt ? t.n : t.k, bc = bt ? t.k : t.n;
            const int lda = ac + t.pad, ldb = bc + t.pad, ldc = t.n + t.pad;
            const long long sa = (long long)ar * lda, sb = t.share_b ? 0 : (long long)br * ldb,
                            sc = (long long)t.m * ldc;
            auto a = chk::randn(sa * t.batch), b = chk::randn(t.share_b ? br * ldb : sb * t.batch);
            auto bias = chk::randn(t.n), c0 = chk::randn(sc * t.batch);
            std::vector<float> ar_, br_;
            auto ah = to_bf16(a, ar_), bh = to_bf16(b, br_);
            const auto ref = gemm_reference(at, bt, t.m, t.n, t.k, t.batch, ar_.data(), lda, sa, br_.data(), ldb,
                                            sb, bias, c0, ldc, sc, 0.5, 2.0);
            GemmGeom g{t.m, t.n, t.k, lda, ldb, ldc, 0.5f, 2.0f, sa, sb, sc};
            for (int v = 0; v < 2; ++v) {
                const bool big = v == 0;
                const int BM = big ? 128 : 64, NT = big ? 256 : 128;
                dim3 grid((t.m + BM - 1) / BM, (t.n + BM - 1) / BM, t.batch);
                auto c = c0;
                size_t smem = 0;
                auto run = [&](auto kern) { EMU_LAUNCH(kern, grid, dim3(NT), smem, g, ah.data(), bh.data(), bias.data(), c.data()); };
                if (big) {
                    if (l == 0) { smem = igemm_bf16_smem_bytes<128, 128, 4, GemmProb16<true, false>>(); run(gemm_bf16s_128x128_nn); }
                    if (l == 1) { smem = igemm_bf16_smem_bytes<128, 128, 4, GemmProb16<true, true>>(); run(gemm_bf16s_128x128_nt); }
                    if (l == 2) { smem = igemm_bf16_smem_bytes<128, 128, 4, GemmProb16<false, false>>(); run(gemm_bf16s_128x128_tn); }
                } else {
                    if (l == 0) { smem = igemm_bf16_smem_bytes<64, 64, 4, GemmProb16<true, false>>(); run(gemm_bf16s_64x64_nn); }
                    if (l == 1) { smem = igemm_bf16_smem_bytes<64, 64, 4, GemmProb16<true, true>>(); run(gemm_bf16s_64x64_nt); }
                    if (l == 2) { smem = igemm_bf16_smem_bytes<64, 64, 4, GemmProb16<false, false>>(); run(gemm_bf16s_64x64_tn); }
                }
                char tag[128];
                snprintf(tag, sizeof tag, "gemm16 %s %dx%dx%d b%d ld+%d %s", lay[l], t.m, t.n, t.k, t.batch, t.pad,
                         big ? "128x128" : "64x64");
                chk::expect(tag, c, ref, 1e-5);
            }
        }
    }
}

// One block tile of the streamed convolution kernels: its entry points (no data-gradient
// kernel for the tuning candidates), its shape and the dynamic shared memory of each problem.
typedef void (*FwdKernel)(ConvGeom, const mv_u16*, const mv_u16*, const float*, float*, float);
typedef void (*DgradKernel)(ConvGeom, const mv_u16*, const mv_u16*, float*, float);
typedef void (*WgradKernel)(ConvGeom, const mv_u16*, const mv_u16*, float*, int);
struct Variant {
    const char* name;
    int bm, bn, threads, bk;
    FwdKernel fwd;
    DgradKernel dgrad;
    WgradKernel wgrad;
    size_t fwd_smem, dg_smem, wg_smem;
};

template <int BM, int BN, int STAGES, int BK>
static Variant variant(const char* name, int threads, FwdKernel f, DgradKernel d, WgradKernel w) {
    return Variant{name, BM, BN, threads, BK, f, d, w,
                   (size_t)igemm_bf16_smem_bytes<BM, BN, STAGES, FwdProb16, BK>(),
                   (size_t)igemm_bf16_smem_bytes<BM, BN, STAGES, DgradProb16, BK>(),
                   (size_t)igemm_bf16_smem_bytes<BM, BN, STAGES, WgradProb16, BK>()};
}

static std::vector<Variant> variants() {
    return {
        variant<128, 128, 4, 32>("128x128", 256, conv_fwd_bf16s_128x128, conv_dgrad_bf16s_128x128,
                                 conv_wgrad_bf16s_128x128),
        variant<64, 64, 4, 32>("64x64", 128, conv_fwd_bf16s_64x64, conv_dgrad_bf16s_64x64, conv_wgrad_bf16s_64x64),
        variant<256, 128, 4, 32>("256x128", 256, conv_fwd_bf16s_256x128, nullptr, conv_wgrad_bf16s_256x128),
        variant<128, 128, 4, 32>("128x128w4", 128, conv_fwd_bf16s_128x128w4, nullptr, conv_wgrad_bf16s_128x128w4),
        variant<128, 128, 3, 64>("128x128k64", 256, conv_fwd_bf16s_128x128k64, nullptr, conv_wgrad_bf16s_128x128k64),
    };
}

int main() {
    test_cvt();
    test_gemm16();
    std::vector<Case> cases = {
        // n  id ih iw cin cout kd kh kw sd sh sw pdl phl pwl pdh phh pwh
        {2, 1, 7, 6, 8, 16, 1, 3, 3, 1, 1, 1, 0, 1, 1, 0, 1, 1},      // k3 s1 p1, one run of channels
        {1, 1, 9, 7, 16, 24, 1, 3, 3, 1, 2, 2, 0, 0, 0, 0, 1, 1},     // k3 s2 pad (0,1) (downsample)
        {2, 1, 5, 6, 16, 8, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0},      // k1
        {1, 1, 10, 8, 8, 16, 1, 4, 4, 1, 2, 2, 0, 1, 1, 0, 1, 1},     // k4 s2 p1 (discriminator)
        {1, 4, 5, 3, 8, 8, 3, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1},       // 3D k3 s1 p1
        {1, 5, 4, 6, 8, 16, 3, 3, 3, 2, 2, 2, 0, 0, 0, 1, 1, 1},      // 3D k3 s2 pad (0,1)
        {1, 1, 12, 11, 72, 136, 1, 3, 3, 1, 1, 1, 0, 1, 1, 0, 1, 1},  // several tiles in M, N and K
        {3, 1, 13, 40, 40, 64, 1, 3, 3, 1, 1, 1, 0, 1, 1, 0, 1, 1},   // rows wider than a k-tile
        {1, 6, 7, 6, 8, 16, 4, 4, 4, 2, 2, 2, 1, 1, 1, 1, 1, 1},      // 3D k4 s2 p1: 64 taps (mask bits 32-63)
    };
    for (size_t ci = 0; ci < cases.size(); ++ci) {
        const auto [g, xs, ws, ys, x, w, b, dy] = case_inputs(cases[ci]);
        std::vector<float> xr, wr, dyr;
        auto xh = to_bf16(x, xr), wh = to_bf16(w, wr), dyh = to_bf16(dy, dyr);
        std::vector<double> yref, dxref, dwref;
        reference(g, xr, wr, b, dyr, yref, dxref, dwref);
        // The wgmma forward (conv_wgmma.cu) on the cases with several tiles or taps per k-tile,
        // its weights transposed by conv_weight_nk_bf16.
        if (ci == 0 || ci == 4 || ci == 6 || ci == 7 || ci == 8) {
            const int K = g.kd * g.kh * g.kw * g.cin;
            std::vector<mv_u16> wt(ws);
            EMU_LAUNCH(conv_weight_nk_bf16, dim3(3), dim3(64), 0, w.data(), wt.data(), K, g.cout);
            bool transposed = true;
            for (int k = 0; k < K; ++k)
                for (int n = 0; n < g.cout; ++n) transposed &= wt[(size_t)n * K + k] == wh[(size_t)k * g.cout + n];
            chk::expect_true("conv_weight_nk_bf16 transposes the rounded weights", transposed);
            // Shared memory of a ring of `stages` k-tiles (the s3 forms keep 3).
            auto wg_smem = [](int stages) { return (size_t)stages * (MV_WG_BM + MV_WG_BN) * MV_WG_BK * 2 + 1024; };
            dim3 grid((g.n * g.od * g.oh * g.ow + MV_WG_BM - 1) / MV_WG_BM, (g.cout + MV_WG_BN - 1) / MV_WG_BN);
            for (int form = 0; form < 3; ++form) {
                auto kern = form == 0 ? conv_fwd_bf16w_128x128 : form == 1 ? conv_fwd_bf16w_128x128o : conv_fwd_bf16w_128x128s3;
                const char* name = form == 0 ? "128x128" : form == 1 ? "128x128o" : "128x128s3";
                const size_t smem = wg_smem(form == 2 ? 3 : MV_WG_STAGES);
                std::vector<float> y(ys, 2.0f);
                EMU_LAUNCH(kern, grid, dim3(MV_WG_THREADS), smem, g, xh.data(), wt.data(), b.data(), y.data(), 0.5f);
                std::vector<double> yexp(yref);
                for (auto& e : yexp) e += 1.0;
                char tag[128];
                snprintf(tag, sizeof tag, "case %zu fwd wgmma %s", ci, name);
                chk::expect(tag, y, yexp, 1e-5);
                std::vector<float> y0(ys, NAN);
                EMU_LAUNCH(kern, grid, dim3(MV_WG_THREADS), smem, g, xh.data(), wt.data(), nullptr, y0.data(), 0.0f);
                std::vector<double> y0exp(yref);
                for (size_t i = 0; i < y0exp.size(); ++i) y0exp[i] -= b[i % g.cout];
                snprintf(tag, sizeof tag, "case %zu fwd wgmma %s no bias", ci, name);
                chk::expect(tag, y0, y0exp, 1e-5);
            }
            // The wgmma weight gradient (MN-major operands), accumulating onto 1.0, the pixels
            // split in 1, 2 and 3 (uneven) parts of 64-pixel k-tiles.
            for (int form = 0; form < 3; ++form) {
                auto kern = form == 0 ? conv_wgrad_bf16w_128x128 : form == 1 ? conv_wgrad_bf16w_128x128o : conv_wgrad_bf16w_128x128s3;
                const char* name = form == 0 ? "128x128" : form == 1 ? "128x128o" : "128x128s3";
                const size_t smem = wg_smem(form == 2 ? 3 : MV_WG_STAGES);
                for (int splits : {1, 2, 3}) {
                    std::vector<float> dw(ws, 1.0f);
                    const int P = g.n * g.od * g.oh * g.ow, kt = (P + MV_WG_BK - 1) / MV_WG_BK;
                    const int tps = (kt + splits - 1) / splits;
                    dim3 gw((K + MV_WG_BM - 1) / MV_WG_BM, (g.cout + MV_WG_BN - 1) / MV_WG_BN, splits);
                    EMU_LAUNCH(kern, gw, dim3(MV_WG_THREADS), smem, g, xh.data(), dyh.data(), dw.data(), tps);
                    std::vector<double> dwexp(dwref);
                    for (auto& e : dwexp) e += 1.0;
                    char tag[128];
                    snprintf(tag, sizeof tag, "case %zu wgrad wgmma %s, %d splits", ci, name, splits);
                    chk::expect(tag, dw, dwexp, 1e-5);
                }
            }
        }
        for (const Variant& v : variants()) {
            // The tuning candidates on the cases with several tiles or taps per k-tile only (the
            // emulator is slow; the small cases exercise what the defaults share with them).
            if (!v.dgrad && ci != 0 && ci != 4 && ci != 6 && ci != 7 && ci != 8) continue;
            check_variant(ci, "", g, v, xh, wh, b, dyh, yref, dxref, dwref);
        }
    }
    return chk::finish();
}
