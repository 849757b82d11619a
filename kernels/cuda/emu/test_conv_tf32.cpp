// Emulator checks of conv_tf32.cu and gemm_tf32.cu (the cp.async pipeline on f32 operands, fragments rounded to
// TF32 on their way out of shared memory) against naive double-precision convolutions of the
// TF32-rounded inputs: only the f32 summation order differs, so the tolerance is tight (a wrong
// fragment, run, bank layout or predicate is an O(1) error).
#include "../conv_tf32.cu"
#include "../gemm_tf32.cu"
#include "check.h"
#include "conv_ref.h"
#include "conv_variants.h"

static std::vector<float> rounded_tf32(const std::vector<float>& v) {
    std::vector<float> r(v.size());
    for (size_t i = 0; i < v.size(); ++i) r[i] = emu::round_tf32(v[i]);
    return r;
}

typedef void (*FwdKernel)(ConvGeom, const float*, const float*, const float*, float*, float);
typedef void (*DgradKernel)(ConvGeom, const float*, const float*, float*, float);
typedef void (*WgradKernel)(ConvGeom, const float*, const float*, float*, int);
struct Variant {
    const char* name;
    int bm, bn, threads, bk;
    FwdKernel fwd;
    DgradKernel dgrad;
    WgradKernel wgrad;
    size_t fwd_smem, dg_smem, wg_smem;
};
template <int BM, int BN>
static Variant variant(const char* name, int threads, FwdKernel f, DgradKernel d, WgradKernel w) {
    return Variant{name, BM, BN, threads, MV_TF32_BK, f, d, w,
                   (size_t)igemm_tf32_smem_bytes<BM, BN, MV_TF32_STAGES, FwdProb<float>, MV_TF32_BK>(),
                   (size_t)igemm_tf32_smem_bytes<BM, BN, MV_TF32_STAGES, DgradProb<float>, MV_TF32_BK>(),
                   (size_t)igemm_tf32_smem_bytes<BM, BN, MV_TF32_STAGES, WgradProb<float>, MV_TF32_BK>()};
}

// The launcher's shared-memory figures (runtime/src/cuda/ops/conv_tf32.rs) for the 128x128 tile.
static void test_smem_figures() {
    chk::expect_true("tf32 forward smem 107520", igemm_tf32_smem_bytes<128, 128, 3, FwdProb<float>, 32>() == 107520);
    chk::expect_true("tf32 dgrad smem 110592", igemm_tf32_smem_bytes<128, 128, 3, DgradProb<float>, 32>() == 110592);
    chk::expect_true("tf32 wgrad smem 104448", igemm_tf32_smem_bytes<128, 128, 3, WgradProb<float>, 32>() == 104448);
    chk::expect_true("tf32 64x64 forward smem 55296", igemm_tf32_smem_bytes<64, 64, 3, FwdProb<float>, 32>() == 55296);
}

// C[b] = 0.5 op(A) op(B) + bias + 2 C for the three layouts, with leading dimensions wider
// than the matrices and per-operand batch strides (0 broadcasts B in one case).
static void test_gemm32() {
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
            const auto ar_ = rounded_tf32(a), br_ = rounded_tf32(b);
            const auto ref = gemm_reference(at, bt, t.m, t.n, t.k, t.batch, ar_.data(), lda, sa, br_.data(), ldb,
                                            sb, bias, c0, ldc, sc, 0.5, 2.0);
            GemmGeom g{t.m, t.n, t.k, lda, ldb, ldc, 0.5f, 2.0f, sa, sb, sc};
            for (int v = 0; v < 2; ++v) {
                const bool big = v == 0;
                const int BM = big ? 128 : 64, NT = big ? 256 : 128;
                dim3 grid((t.m + BM - 1) / BM, (t.n + BM - 1) / BM, t.batch);
                auto c = c0;
                size_t smem = 0;
                auto run = [&](auto kern) { EMU_LAUNCH(kern, grid, dim3(NT), smem, g, a.data(), b.data(), bias.data(), c.data()); };
                const int S = MV_GEMM_TF32_STAGES, K = MV_GEMM_TF32_BK;
                if (big) {
                    if (l == 0) { smem = igemm_tf32_smem_bytes<128, 128, S, GemmRunsProb<float, true, false>, K>(); run(gemm_tf32s_128x128_nn); }
                    if (l == 1) { smem = igemm_tf32_smem_bytes<128, 128, S, GemmRunsProb<float, true, true>, K>(); run(gemm_tf32s_128x128_nt); }
                    if (l == 2) { smem = igemm_tf32_smem_bytes<128, 128, S, GemmRunsProb<float, false, false>, K>(); run(gemm_tf32s_128x128_tn); }
                } else {
                    if (l == 0) { smem = igemm_tf32_smem_bytes<64, 64, S, GemmRunsProb<float, true, false>, K>(); run(gemm_tf32s_64x64_nn); }
                    if (l == 1) { smem = igemm_tf32_smem_bytes<64, 64, S, GemmRunsProb<float, true, true>, K>(); run(gemm_tf32s_64x64_nt); }
                    if (l == 2) { smem = igemm_tf32_smem_bytes<64, 64, S, GemmRunsProb<float, false, false>, K>(); run(gemm_tf32s_64x64_tn); }
                }
                char tag[128];
                snprintf(tag, sizeof tag, "gemm32 %s %dx%dx%d b%d ld+%d %s", lay[l], t.m, t.n, t.k, t.batch, t.pad,
                         big ? "128x128" : "64x64");
                chk::expect(tag, c, ref, 1e-5);
            }
        }
    }
}

int main() {
    test_smem_figures();
    test_gemm32();
    const Variant variants[] = {
        variant<128, 128>("128x128", 256, conv_fwd_tf32s_128x128, conv_dgrad_tf32s_128x128, conv_wgrad_tf32s_128x128),
        variant<64, 64>("64x64", 128, conv_fwd_tf32s_64x64, conv_dgrad_tf32s_64x64, conv_wgrad_tf32s_64x64),
    };
    std::vector<Case> cases = {
        // n  id ih iw cin cout kd kh kw sd sh sw pdl phl pwl pdh phh pwh
        {2, 1, 7, 6, 4, 8, 1, 3, 3, 1, 1, 1, 0, 1, 1, 0, 1, 1},       // k3 s1 p1, one run of channels
        {1, 1, 9, 7, 12, 20, 1, 3, 3, 1, 2, 2, 0, 0, 0, 0, 1, 1},     // k3 s2 pad (0,1), 3 runs per tap
        {2, 1, 5, 6, 16, 8, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0},      // k1
        {1, 1, 10, 8, 4, 12, 1, 4, 4, 1, 2, 2, 0, 1, 1, 0, 1, 1},     // k4 s2 p1 (discriminator)
        {1, 4, 5, 3, 8, 4, 3, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1},       // 3D k3 s1 p1
        {1, 5, 4, 6, 4, 16, 3, 3, 3, 2, 2, 2, 0, 0, 0, 1, 1, 1},      // 3D k3 s2 pad (0,1)
        {1, 1, 12, 11, 68, 132, 1, 3, 3, 1, 1, 1, 0, 1, 1, 0, 1, 1},  // several tiles in M, N and K
        {3, 1, 13, 40, 36, 64, 1, 3, 3, 1, 1, 1, 0, 1, 1, 0, 1, 1},   // rows wider than a k-tile
        {1, 6, 7, 6, 4, 8, 4, 4, 4, 2, 2, 2, 1, 1, 1, 1, 1, 1},       // 3D k4 s2 p1: 64 taps (mask bits 32-63)
    };
    for (size_t ci = 0; ci < cases.size(); ++ci) {
        const auto [g, xs, ws, ys, x, w, b, dy] = case_inputs(cases[ci]);
        std::vector<double> yref, dxref, dwref;
        reference(g, rounded_tf32(x), rounded_tf32(w), b, rounded_tf32(dy), yref, dxref, dwref);
        for (const Variant& v : variants) check_variant(ci, "tf32 ", g, v, x, w, b, dy, yref, dxref, dwref);
    }
    return chk::finish();
}
