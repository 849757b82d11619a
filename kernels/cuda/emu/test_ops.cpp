// Emulator checks of every non-convolution kernel against naive double-precision references.
#include "../adam.cu"
#include "../attention_bwd.cu"
#include "../attention_fwd.cu"
#include "../batch_norm.cu"
#include "../elementwise.cu"
#include "../gaussian.cu"
#include "../group_norm.cu"
#include "../layer_norm.cu"
#include "../loss.cu"
#include "../reduce.cu"
#include "../resize.cu"
#include "../softmax.cu"
#include "../upsample_pool.cu"
#include "check.h"

using dvec = std::vector<double>;
using fvec = std::vector<float>;
static dvec D(const fvec& v) { return dvec(v.begin(), v.end()); }
static double sig(double x) { return 1.0 / (1.0 + std::exp(-x)); }

static void test_elementwise() {
    const long long n = 1000;
    fvec x = chk::randn(n, 2.0f), dy = chk::randn(n), y(n), dx(n);
    dvec ry(n), rdx(n);
    EMU_LAUNCH(act_silu_fwd, dim3(3), dim3(64), 0, x.data(), y.data(), n);
    EMU_LAUNCH(act_silu_bwd, dim3(3), dim3(64), 0, x.data(), dy.data(), dx.data(), n);
    for (int i = 0; i < n; ++i) {
        double s = sig(x[i]);
        ry[i] = x[i] * s;
        rdx[i] = dy[i] * s * (1 + x[i] * (1 - s));
    }
    chk::expect("silu fwd", y, ry, 1e-6);
    chk::expect("silu bwd", dx, rdx, 1e-6);
    EMU_LAUNCH(act_gelu_fwd, dim3(3), dim3(64), 0, x.data(), y.data(), n);
    EMU_LAUNCH(act_gelu_bwd, dim3(3), dim3(64), 0, x.data(), dy.data(), dx.data(), n);
    for (int i = 0; i < n; ++i) {
        double v = x[i], cdf = 0.5 * (1 + std::erf(v / std::sqrt(2.0)));
        ry[i] = v * cdf;
        rdx[i] = dy[i] * (cdf + v * std::exp(-0.5 * v * v) / std::sqrt(2 * M_PI));
    }
    chk::expect("gelu fwd", y, ry, 1e-6);
    chk::expect("gelu bwd", dx, rdx, 1e-6);
    EMU_LAUNCH(act_leaky_relu_fwd, dim3(2), dim3(64), 0, x.data(), y.data(), n, 0.2f);
    EMU_LAUNCH(act_leaky_relu_bwd, dim3(2), dim3(64), 0, x.data(), dy.data(), dx.data(), n, 0.2f);
    for (int i = 0; i < n; ++i) {
        ry[i] = x[i] > 0 ? x[i] : 0.2 * x[i];
        rdx[i] = x[i] > 0 ? dy[i] : 0.2 * dy[i];
    }
    chk::expect("leaky relu fwd", y, ry, 1e-7);
    chk::expect("leaky relu bwd", dx, rdx, 1e-7);
    EMU_LAUNCH(act_relu_bwd, dim3(2), dim3(64), 0, x.data(), dy.data(), dx.data(), n);
    for (int i = 0; i < n; ++i) rdx[i] = x[i] > 0 ? dy[i] : 0;
    chk::expect("relu bwd", dx, rdx, 0);
    EMU_LAUNCH(ew_affine_clamp, dim3(2), dim3(64), 0, x.data(), y.data(), n, 0.5f, 0.5f, 0.0f, 1.0f);
    for (int i = 0; i < n; ++i) {
        double z = 0.5 * x[i] + 0.5;
        ry[i] = std::min(1.0, std::max(0.0, z));
    }
    chk::expect("affine clamp fwd", y, ry, 1e-7);
    // transpose: 3 matrices of 37 x 45
    int R = 37, C = 45;
    fvec m = chk::randn(3 * R * C), mt(3 * R * C);
    EMU_LAUNCH(transpose_2d, dim3(2, 2, 3), dim3(32, 8), 0, m.data(), mt.data(), R, C);
    dvec rt(3 * R * C);
    for (int b = 0; b < 3; ++b)
        for (int r = 0; r < R; ++r)
            for (int c = 0; c < C; ++c) rt[b * R * C + c * R + r] = m[b * R * C + r * C + c];
    chk::expect("transpose_2d", mt, rt, 0);
}

static void test_reduce() {
    const long long n = 5000;
    fvec x = chk::randn(n), part(16), out(1, 3.0f);
    EMU_LAUNCH(reduce_sum_partial, dim3(16), dim3(64), 0, x.data(), n, part.data());
    EMU_LAUNCH(reduce_finalize, dim3(1), dim3(256), 0, part.data(), 16, out.data(), 0.5f, 1);
    double s = 0, q = 0;
    for (float v : x) s += v, q += (double)v * v;
    chk::expect("reduce sum (scale, accumulate)", out, dvec{3.0 + 0.5 * s}, 1e-6);
    EMU_LAUNCH(reduce_sumsq_partial, dim3(16), dim3(64), 0, x.data(), n, part.data());
    EMU_LAUNCH(reduce_finalize, dim3(1), dim3(256), 0, part.data(), 16, out.data(), 1.0f, 0);
    chk::expect("reduce sumsq", out, dvec{q}, 1e-6);
    int rows = 7, cols = 300;
    fvec m = chk::randn(rows * cols), rs(rows), cs(cols, 1.0f);
    EMU_LAUNCH(reduce_rows, dim3(rows), dim3(64), 0, m.data(), cols, rs.data(), 1.0f, 0);
    EMU_LAUNCH(reduce_cols_acc, dim3((cols + 31) / 32, 2), dim3(32, 8), 0, m.data(), (long long)rows, cols, 4, cs.data());
    dvec rr(rows, 0), rc(cols, 1.0);
    for (int r = 0; r < rows; ++r)
        for (int c = 0; c < cols; ++c) rr[r] += m[r * cols + c], rc[c] += m[r * cols + c];
    chk::expect("reduce rows", rs, rr, 1e-6);
    chk::expect("reduce cols acc", cs, rc, 1e-6);
}

static void test_losses() {
    const long long n = 777;
    fvec a = chk::randn(n), b = chk::randn(n), part(8), out(1), da(n, 1.0f);
    EMU_LAUNCH(l1_partial, dim3(8), dim3(64), 0, a.data(), b.data(), n, part.data());
    EMU_LAUNCH(reduce_finalize, dim3(1), dim3(256), 0, part.data(), 8, out.data(), 1.0f / n, 0);
    double s = 0;
    for (int i = 0; i < n; ++i) s += std::fabs(a[i] - b[i]);
    chk::expect("l1 mean", out, dvec{s / n}, 1e-6);
    float gs = 2.0f;
    EMU_LAUNCH(l1_bwd, dim3(4), dim3(64), 0, a.data(), b.data(), da.data(), n, 0.5f, &gs, 1.0f);
    dvec rda(n);
    for (int i = 0; i < n; ++i) rda[i] = 1.0 + (a[i] > b[i] ? 1.0 : (a[i] < b[i] ? -1.0 : 0.0));
    chk::expect("l1 bwd (gscale, accumulate)", da, rda, 1e-7);
    // hinge
    long long nr = 72, nf = 50;
    fvec lr = chk::randn(nr, 1.5f), lf = chk::randn(nf, 1.5f), hp(2 * 4), ho(1), dr(nr), df(nf);
    EMU_LAUNCH(hinge_partial, dim3(4), dim3(32), 0, lr.data(), nr, lf.data(), nf, hp.data());
    EMU_LAUNCH(hinge_finalize, dim3(1), dim3(256), 0, hp.data(), 4, nr, nf, ho.data());
    EMU_LAUNCH(hinge_bwd, dim3(2), dim3(64), 0, lr.data(), nr, lf.data(), nf, dr.data(), df.data(), 1.0f, nullptr, 0.0f);
    double sr = 0, sf = 0;
    dvec rdr(nr), rdf(nf);
    for (int i = 0; i < nr; ++i) sr += std::max(0.0, 1.0 - lr[i]), rdr[i] = (1 - lr[i] > 0) ? -0.5 / nr : 0;
    for (int i = 0; i < nf; ++i) sf += std::max(0.0, 1.0 + lf[i]), rdf[i] = (1 + lf[i] > 0) ? 0.5 / nf : 0;
    chk::expect("hinge loss", ho, dvec{0.5 * (sr / nr + sf / nf)}, 1e-6);
    chk::expect("hinge d real", dr, rdr, 1e-7);
    chk::expect("hinge d fake", df, rdf, 1e-7);
}

static void test_gaussian() {
    int N = 2, Dd = 3, H = 4, W = 5, Z = 2;
    long long pix = (long long)N * Dd * H * W;
    fvec mom = chk::randn(pix * 2 * Z, 3.0f);
    mom[Z] = 25.0f;       // above the clamp: no gradient
    mom[2 * Z + Z] = -31.0f;  // below
    fvec eps = chk::randn(pix * Z), z(pix * Z), dz = chk::randn(pix * Z), dmom(pix * 2 * Z);
    EMU_LAUNCH(gaussian_sample_fwd, dim3(3), dim3(64), 0, mom.data(), eps.data(), z.data(), pix, Z);
    EMU_LAUNCH(gaussian_sample_bwd, dim3(3), dim3(64), 0, mom.data(), eps.data(), dz.data(), dmom.data(), pix, Z, 0.0f);
    dvec rz(pix * Z), rdm(pix * 2 * Z);
    for (long long p = 0; p < pix; ++p)
        for (int c = 0; c < Z; ++c) {
            double raw = mom[p * 2 * Z + Z + c], lv = std::min(20.0, std::max(-30.0, raw));
            double sd = std::exp(0.5 * lv);
            rz[p * Z + c] = mom[p * 2 * Z + c] + sd * eps[p * Z + c];
            rdm[p * 2 * Z + c] = dz[p * Z + c];
            rdm[p * 2 * Z + Z + c] = (raw >= -30 && raw <= 20) ? dz[p * Z + c] * eps[p * Z + c] * 0.5 * sd : 0;
        }
    chk::expect("gaussian sample fwd", z, rz, 1e-6);
    chk::expect("gaussian sample bwd", dmom, rdm, 1e-6);
    for (int per_w = 0; per_w < 2; ++per_w) {
        int outs = per_w ? N * W : N;
        fvec kl(outs), gout = chk::randn(outs), dm(pix * 2 * Z);
        EMU_LAUNCH(kl_moments_fwd, dim3(outs), dim3(64), 0, mom.data(), N, Dd, H, W, Z, per_w, kl.data());
        EMU_LAUNCH(kl_moments_bwd, dim3(3), dim3(64), 0, mom.data(), gout.data(), dm.data(), N, Dd, H, W, Z, per_w,
                   1.0f, nullptr, 0.0f);
        dvec rkl(outs, 0.0), rdm2(pix * 2 * Z);
        for (long long p = 0; p < pix; ++p) {
            int w = p % W, n = p / (Dd * H * W);
            int o = per_w ? n * W + w : n;
            for (int c = 0; c < Z; ++c) {
                double m = mom[p * 2 * Z + c], raw = mom[p * 2 * Z + Z + c], lv = std::min(20.0, std::max(-30.0, raw));
                rkl[o] += 0.5 * (m * m + std::exp(lv) - 1 - lv);
                rdm2[p * 2 * Z + c] = gout[o] * m;
                rdm2[p * 2 * Z + Z + c] = (raw >= -30 && raw <= 20) ? gout[o] * 0.5 * (std::exp(lv) - 1) : 0;
            }
        }
        chk::expect(per_w ? "kl fwd per (n, w)" : "kl fwd per sample", kl, rkl, 1e-6);
        chk::expect(per_w ? "kl bwd per (n, w)" : "kl bwd per sample", dm, rdm2, 1e-6);
    }
}

static void test_adam() {
    std::vector<long long> sizes = {5, 1000, 37};
    int chunk = 256;
    std::vector<fvec> p, g, m, v;
    std::vector<AdamTensor> tab;
    long long start = 0;
    for (auto s : sizes) {
        p.push_back(chk::randn(s));
        g.push_back(chk::randn(s));
        m.push_back(chk::randn(s, 0.1f));
        v.push_back(chk::uniform(s, 0.0f, 0.1f));
    }
    for (size_t i = 0; i < sizes.size(); ++i) {
        tab.push_back(AdamTensor{p[i].data(), g[i].data(), m[i].data(), v[i].data(), sizes[i], start});
        start += (sizes[i] + chunk - 1) / chunk;
    }
    auto p0 = p, m0 = m, v0 = v;
    float lr = 1e-2f, b1 = 0.5f, b2 = 0.9f, eps = 1e-8f, wd = 0.01f, bc1 = 1 - std::pow(0.5, 3), bc2 = 1 - std::pow(0.9, 3);
    EMU_LAUNCH(adam_multi, dim3((unsigned)start), dim3(64), 0, tab.data(), (int)tab.size(), chunk, lr, b1, b2, eps, wd,
               bc1, bc2, 0.5f);
    for (size_t i = 0; i < sizes.size(); ++i) {
        dvec rp(sizes[i]), rm(sizes[i]), rv(sizes[i]);
        for (long long j = 0; j < sizes[i]; ++j) {
            double gg = g[i][j] * 0.5 + wd * p0[i][j];
            rm[j] = b1 * m0[i][j] + (1 - b1) * gg;
            rv[j] = b2 * v0[i][j] + (1 - b2) * gg * gg;
            rp[j] = p0[i][j] - lr / bc1 * rm[j] / (std::sqrt(rv[j]) / std::sqrt(bc2) + eps);
        }
        chk::expect("adam p tensor " + std::to_string(i), p[i], rp, 1e-6);
        chk::expect("adam m tensor " + std::to_string(i), m[i], rm, 1e-6);
        chk::expect("adam v tensor " + std::to_string(i), v[i], rv, 1e-6);
    }
}

// GroupNorm (+SiLU) and BatchNorm (as GN with N = 1, G = C) forward and backward.
// `blocks` per sample for the elementwise passes (float4 when C % 4 == 0); `dx_beta` != 0 adds the
// data gradient onto a non-zero start.
static void gn_case(const char* name, int N, long long S, int C, int G, int silu, int rpc, bool bn, int blocks = 2,
                    float dx_beta = 0.0f) {
    long long total = N * S * C;
    fvec x = chk::randn(total, 2.0f), gam = chk::randn(C, 0.3f), bet = chk::randn(C, 0.3f), dy = chk::randn(total);
    for (auto& v : x) v += 3.0f;  // offset: the shifted sums must cope with mean >> std
    for (auto& v : gam) v += 1.0f;
    int chunks = (int)((S + rpc - 1) / rpc);
    const bool v4 = C % 4 == 0;
    fvec part((size_t)N * chunks * C * 2), mean(N * G), rstd(N * G), var(N * G), y(total), coef(N * G * 2);
    const fvec dx0 = chk::randn(total);
    fvec dx = dx0;
    fvec dgam(C, 0.5f), dbet(C, -0.5f);
    float eps = 1e-6f;
    if (v4)
        EMU_LAUNCH(gn_stats_partial_v4, dim3(chunks, N), dim3(256), 0, x.data(), S, C, G, rpc, part.data());
    else
        EMU_LAUNCH(gn_stats_partial_v1, dim3(chunks, N), dim3(256), 0, x.data(), S, C, G, rpc, part.data());
    EMU_LAUNCH(gn_stats_finalize, dim3(1), dim3(64), 0, part.data(), x.data(), N, S, C, G, chunks, eps, mean.data(),
               rstd.data(), var.data());
    if (v4)
        EMU_LAUNCH(gn_apply_v4, dim3(blocks, N), dim3(256), 0, x.data(), mean.data(), rstd.data(), gam.data(), bet.data(),
                   y.data(), S, C, G, silu);
    else
        EMU_LAUNCH(gn_apply_v1, dim3(blocks, N), dim3(256), 0, x.data(), mean.data(), rstd.data(), gam.data(), bet.data(),
                   y.data(), S, C, G, silu);
    if (v4)
        EMU_LAUNCH(gn_bwd_partial_v4, dim3(chunks, N), dim3(256), 0, x.data(), dy.data(), mean.data(), rstd.data(),
                   gam.data(), bet.data(), S, C, G, silu, rpc, part.data());
    else
        EMU_LAUNCH(gn_bwd_partial_v1, dim3(chunks, N), dim3(256), 0, x.data(), dy.data(), mean.data(), rstd.data(),
                   gam.data(), bet.data(), S, C, G, silu, rpc, part.data());
    EMU_LAUNCH(gn_bwd_finalize, dim3(N), dim3(128), 0, part.data(), chunks, S, C, G, gam.data(), dgam.data(), dbet.data(),
               coef.data());
    if (v4)
        EMU_LAUNCH(gn_bwd_dx_v4, dim3(blocks, N), dim3(256), 0, x.data(), dy.data(), mean.data(), rstd.data(), gam.data(),
                   bet.data(), coef.data(), dx.data(), S, C, G, silu, dx_beta);
    else
        EMU_LAUNCH(gn_bwd_dx_v1, dim3(blocks, N), dim3(256), 0, x.data(), dy.data(), mean.data(), rstd.data(), gam.data(),
                   bet.data(), coef.data(), dx.data(), S, C, G, silu, dx_beta);
    int cg = C / G;
    dvec ry(total), rdx(total), rdg(C, 0.5), rdb(C, -0.5), rvar(N * G);
    for (int n = 0; n < N; ++n)
        for (int g = 0; g < G; ++g) {
            double s = 0, q = 0, cnt = (double)S * cg;
            for (long long r = 0; r < S; ++r)
                for (int c = g * cg; c < (g + 1) * cg; ++c) s += x[(n * S + r) * C + c];
            double mu = s / cnt;
            for (long long r = 0; r < S; ++r)
                for (int c = g * cg; c < (g + 1) * cg; ++c) q += std::pow(x[(n * S + r) * C + c] - mu, 2);
            double v = q / cnt, rs = 1 / std::sqrt(v + eps), a = 0, b = 0;
            rvar[n * G + g] = v;
            std::vector<double> dz(S * cg), xh(S * cg);
            for (long long r = 0; r < S; ++r)
                for (int c = g * cg; c < (g + 1) * cg; ++c) {
                    long long i = (n * S + r) * C + c, k = r * cg + c - g * cg;
                    xh[k] = (x[i] - mu) * rs;
                    double z = xh[k] * gam[c] + bet[c];
                    ry[i] = silu ? z * sig(z) : z;
                    dz[k] = silu ? dy[i] * sig(z) * (1 + z * (1 - sig(z))) : dy[i];
                    a += dz[k] * gam[c];
                    b += dz[k] * gam[c] * xh[k];
                    rdg[c] += dz[k] * xh[k];
                    rdb[c] += dz[k];
                }
            for (long long r = 0; r < S; ++r)
                for (int c = g * cg; c < (g + 1) * cg; ++c) {
                    long long i = (n * S + r) * C + c, k = r * cg + c - g * cg;
                    rdx[i] = rs * (dz[k] * gam[c] - a / cnt - xh[k] * b / cnt) + dx_beta * dx0[i];
                }
        }
    std::string nm(name);
    chk::expect(nm + " y", y, ry, 1e-5);
    chk::expect(nm + " var", var, rvar, 1e-5);
    chk::expect(nm + " dx", dx, rdx, 1e-4);
    if (dx_beta == 0.0f) {
        // In place (the runtime's owned-gradient backward): dy's buffer is dx.
        fvec io = dy;
        if (v4)
            EMU_LAUNCH(gn_bwd_dx_v4, dim3(blocks, N), dim3(256), 0, x.data(), io.data(), mean.data(), rstd.data(),
                       gam.data(), bet.data(), coef.data(), io.data(), S, C, G, silu, 0.0f);
        else
            EMU_LAUNCH(gn_bwd_dx_v1, dim3(blocks, N), dim3(256), 0, x.data(), io.data(), mean.data(), rstd.data(),
                       gam.data(), bet.data(), coef.data(), io.data(), S, C, G, silu, 0.0f);
        chk::expect(nm + " dx in place", io, rdx, 1e-4);
    }
    chk::expect(nm + " dgamma", dgam, rdg, 1e-5);
    chk::expect(nm + " dbeta", dbet, rdb, 1e-5);
    if (bn) {
        fvec rm = chk::randn(C, 0.1f), rv = chk::uniform(C, 0.5f, 1.5f), rm0 = rm, rv0 = rv;
        long long cnt = S;
        EMU_LAUNCH(bn_update_running, dim3(1), dim3(64), 0, mean.data(), var.data(), cnt, 0.1f, C, rm.data(), rv.data());
        dvec rrm(C), rrv(C);
        for (int c = 0; c < C; ++c) {
            rrm[c] = 0.9 * rm0[c] + 0.1 * (double)mean[c];
            rrv[c] = 0.9 * rv0[c] + 0.1 * rvar[c] * cnt / (cnt - 1);
        }
        chk::expect(nm + " running mean", rm, rrm, 1e-6);
        chk::expect(nm + " running var", rv, rrv, 1e-5);
        fvec em(C), er(C);
        EMU_LAUNCH(bn_eval_stats, dim3(1), dim3(64), 0, rm.data(), rv.data(), 1e-5f, C, em.data(), er.data());
        dvec rer(C);
        for (int c = 0; c < C; ++c) rer[c] = 1 / std::sqrt((double)rv[c] + 1e-5);
        chk::expect(nm + " eval rstd", er, rer, 1e-6);
    }
}

static void test_norms() {
    gn_case("group norm 2d (C 96, silu)", 3, 12, 96, 32, 1, 5, false);
    gn_case("group norm 3d (C 32)", 1, 60, 32, 32, 0, 7, false);
    gn_case("group norm C 512 > block", 2, 9, 512, 32, 1, 4, false);
    gn_case("batch norm as GN (N 1, G C)", 1, 3 * 24, 8, 8, 0, 10, true);
    // The scalar path (C % 4 != 0), several blocks per sample, and dx added onto a start.
    gn_case("group norm C 6 (scalar, silu, dx += )", 2, 40, 6, 3, 1, 9, false, 3, 1.0f);
    gn_case("group norm C 64 one block, many rows", 2, 300, 64, 32, 1, 64, false, 1);
    gn_case("group norm C 96 (idle lanes) dx += 0.5", 2, 33, 96, 32, 0, 8, false, 1, 0.5f);
    // More channel vectors than threads (the partial kernels loop over vectors).
    gn_case("group norm C 2048 float4 > block", 1, 5, 2048, 32, 1, 3, false, 2);
    gn_case("group norm C 390 scalar > block", 2, 7, 390, 30, 0, 4, false, 2);
    // layer norm
    for (int C : {48, 70}) {
        int rows = 19;
        fvec x = chk::randn(rows * C, 2.0f), gam = chk::randn(C), bet = chk::randn(C), dy = chk::randn(rows * C);
        for (auto& v : x) v += 0.3f;
        fvec y(rows * C), mean(rows), rstd(rows), dx(rows * C), dg(C, 0.0f), db(C, 0.0f);
        EMU_LAUNCH(ln_fwd, dim3((rows + 7) / 8), dim3(256), 0, x.data(), gam.data(), bet.data(), y.data(), mean.data(),
                   rstd.data(), rows, C, 1e-6f);
        EMU_LAUNCH(ln_bwd, dim3(2), dim3(256), 0, x.data(), dy.data(), gam.data(), mean.data(), rstd.data(), dx.data(),
                   dg.data(), db.data(), rows, C, 0.0f);
        dvec ry(rows * C), rdx(rows * C), rdg(C, 0), rdb(C, 0);
        for (int r = 0; r < rows; ++r) {
            double mu = 0, v = 0;
            for (int c = 0; c < C; ++c) mu += x[r * C + c];
            mu /= C;
            for (int c = 0; c < C; ++c) v += std::pow(x[r * C + c] - mu, 2);
            double rs = 1 / std::sqrt(v / C + 1e-6), a = 0, b = 0;
            for (int c = 0; c < C; ++c) {
                double xh = (x[r * C + c] - mu) * rs;
                ry[r * C + c] = xh * gam[c] + bet[c];
                a += dy[r * C + c] * gam[c];
                b += dy[r * C + c] * gam[c] * xh;
                rdg[c] += dy[r * C + c] * xh;
                rdb[c] += dy[r * C + c];
            }
            for (int c = 0; c < C; ++c) {
                double xh = (x[r * C + c] - mu) * rs;
                rdx[r * C + c] = rs * (dy[r * C + c] * gam[c] - a / C - xh * b / C);
            }
        }
        std::string nm = "layer norm C " + std::to_string(C);
        chk::expect(nm + " y", y, ry, 1e-5);
        chk::expect(nm + " dx", dx, rdx, 1e-5);
        chk::expect(nm + " dgamma", dg, rdg, 1e-5);
        chk::expect(nm + " dbeta", db, rdb, 1e-5);
    }
    // softmax
    for (int cols : {9, 300}) {
        int rows = 5;
        fvec x = chk::randn(rows * cols, 3.0f), y(rows * cols), dy = chk::randn(rows * cols), dx(rows * cols);
        EMU_LAUNCH(softmax_fwd, dim3(rows), dim3(64), 0, x.data(), y.data(), cols);
        EMU_LAUNCH(softmax_bwd, dim3(rows), dim3(64), 0, y.data(), dy.data(), dx.data(), cols, 0.0f);
        dvec ry(rows * cols), rdx(rows * cols);
        for (int r = 0; r < rows; ++r) {
            double m = -1e300, s = 0, dot = 0;
            for (int c = 0; c < cols; ++c) m = std::max(m, (double)x[r * cols + c]);
            for (int c = 0; c < cols; ++c) s += std::exp(x[r * cols + c] - m);
            for (int c = 0; c < cols; ++c) ry[r * cols + c] = std::exp(x[r * cols + c] - m) / s;
            for (int c = 0; c < cols; ++c) dot += dy[r * cols + c] * ry[r * cols + c];
            for (int c = 0; c < cols; ++c) rdx[r * cols + c] = ry[r * cols + c] * (dy[r * cols + c] - dot);
        }
        chk::expect("softmax fwd cols " + std::to_string(cols), y, ry, 1e-6);
        chk::expect("softmax bwd cols " + std::to_string(cols), dx, rdx, 1e-5);
    }
}

static void test_resize_upsample_pool() {
    // resample along the middle axis of [outer 3, len 11, inner 4] to 7 with 5 taps
    long long outer = 3, inner = 4;
    int in_len = 11, out_len = 7, taps = 5;
    fvec x = chk::randn(outer * in_len * inner), y(outer * out_len * inner), dy = chk::randn(outer * out_len * inner);
    fvec wts = chk::randn(out_len * taps), dx(x.size(), 0.0f);
    std::vector<int> idx0(out_len);
    for (int j = 0; j < out_len; ++j) idx0[j] = j * 2 - 2;  // some taps fall outside
    EMU_LAUNCH(resample_axis_fwd, dim3(2), dim3(32), 0, x.data(), y.data(), outer, in_len, out_len, inner, idx0.data(),
               wts.data(), taps);
    EMU_LAUNCH(resample_axis_bwd, dim3(2), dim3(32), 0, dy.data(), dx.data(), outer, in_len, out_len, inner, idx0.data(),
               wts.data(), taps);
    dvec ry(y.size(), 0.0), rdx(x.size(), 0.0);
    for (int o = 0; o < outer; ++o)
        for (int j = 0; j < out_len; ++j)
            for (int i = 0; i < inner; ++i)
                for (int t = 0; t < taps; ++t) {
                    int s = idx0[j] + t;
                    if (s < 0 || s >= in_len) continue;
                    ry[(o * out_len + j) * inner + i] += wts[j * taps + t] * x[(o * in_len + s) * inner + i];
                    rdx[(o * in_len + s) * inner + i] += wts[j * taps + t] * dy[(o * out_len + j) * inner + i];
                }
    chk::expect("resample axis fwd", y, ry, 1e-6);
    chk::expect("resample axis bwd", dx, rdx, 1e-6);
    // nearest upsample 3D x2 and 2D (fd = 1)
    for (int fd : {1, 2})
    for (int C : {3, 40, 136}) {
        int N = 2, Dd = fd == 2 ? 2 : 1, H = 3, W = 4;
        long long in_n = (long long)N * Dd * H * W * C, out_n = in_n * fd * 4;
        fvec ux = chk::randn(in_n), uy(out_n), udy = chk::randn(out_n), udx(in_n);
        EMU_LAUNCH(upsample_nearest_fwd, dim3(3), dim3(64), 0, ux.data(), uy.data(), N, Dd, H, W, C, fd, 2, 2);
        fvec udx0 = chk::randn(in_n);
        udx = udx0;
        EMU_LAUNCH(upsample_nearest_bwd, dim3(3), dim3(64), 0, udy.data(), udx.data(), N, Dd, H, W, C, fd, 2, 2, 0.5f);
        dvec ruy(out_n), rudx(in_n, 0.0);
        for (long long i = 0; i < in_n; ++i) rudx[i] = 0.5 * udx0[i];
        int OD = Dd * fd, OH = H * 2, OW = W * 2;
        for (int n = 0; n < N; ++n)
            for (int d = 0; d < OD; ++d)
                for (int h = 0; h < OH; ++h)
                    for (int w = 0; w < OW; ++w)
                        for (int c = 0; c < C; ++c) {
                            long long o = ((((long long)n * OD + d) * OH + h) * OW + w) * C + c;
                            long long i = ((((long long)n * Dd + d / fd) * H + h / 2) * W + w / 2) * C + c;
                            ruy[o] = ux[i];
                            rudx[i] += udy[o];
                        }
        const std::string tag = "fd=" + std::to_string(fd) + " C=" + std::to_string(C);
        chk::expect("upsample nearest fwd " + tag, uy, ruy, 0);
        chk::expect("upsample nearest bwd (dx_beta 0.5) " + tag, udx, rudx, 1e-6);
    }
    // max pool 2x2 on odd sizes with ties
    int N = 2, H = 5, W = 7, C = 3;
    fvec px = chk::randn(N * H * W * C);
    for (size_t i = 0; i < px.size(); i += 5) px[i] = 0.25f;  // ties
    int HO = H / 2, WO = W / 2;
    fvec py(N * HO * WO * C), pdy = chk::randn(py.size()), pdx(px.size());
    EMU_LAUNCH(maxpool2_fwd, dim3(2), dim3(64), 0, px.data(), py.data(), N, H, W, C);
    EMU_LAUNCH(maxpool2_bwd, dim3(2), dim3(64), 0, px.data(), pdy.data(), pdx.data(), N, H, W, C, 0.0f);
    dvec rpy(py.size()), rpdx(px.size(), 0.0);
    for (int n = 0; n < N; ++n)
        for (int ho = 0; ho < HO; ++ho)
            for (int wo = 0; wo < WO; ++wo)
                for (int c = 0; c < C; ++c) {
                    double best = -INFINITY;
                    long long arg = -1;
                    for (int k = 0; k < 4; ++k) {
                        long long i = (((long long)n * H + 2 * ho + k / 2) * W + 2 * wo + k % 2) * C + c;
                        if (px[i] > best) best = px[i], arg = i;
                    }
                    long long o = (((long long)n * HO + ho) * WO + wo) * C + c;
                    rpy[o] = best;
                    rpdx[arg] += pdy[o];
                }
    chk::expect("maxpool2 fwd", py, rpy, 0);
    chk::expect("maxpool2 bwd", pdx, rpdx, 0);
}

// Attention: reference in double; packed multi-head qkv or separate single-head tensors.
static void attn_case(const char* name, int B, int H, int tq, int tk, int d, bool packed) {
    int C = H * d;
    AttnGeom g{};
    g.batch = B; g.heads = H; g.tq = tq; g.tk = tk; g.d = d;
    g.scale = 1.0f / std::sqrt((float)d);
    fvec qb, kb, vb;
    float *q, *k, *v;
    if (packed) {  // tq == tk: one [B, T, 3C] buffer
        qb = chk::randn((size_t)B * tq * 3 * C);
        q = qb.data(); k = q + C; v = q + 2 * C;
        g.ldq = g.ldk = g.ldv = 3 * C;
        g.bsq = g.bsk = g.bsv = (long long)tq * 3 * C;
    } else {
        qb = chk::randn((size_t)B * tq * C); kb = chk::randn((size_t)B * tk * C); vb = chk::randn((size_t)B * tk * C);
        q = qb.data(); k = kb.data(); v = vb.data();
        g.ldq = g.ldk = g.ldv = C;
        g.bsq = (long long)tq * C; g.bsk = g.bsv = (long long)tk * C;
    }
    g.ldo = C; g.bso = (long long)tq * C;
    fvec o((size_t)B * tq * C), lse((size_t)B * H * tq), dout = chk::randn(o.size()), delta(lse.size());
    fvec gq(packed ? qb.size() : qb.size(), 0.0f), gk(packed ? 0 : kb.size(), 0.0f), gv(packed ? 0 : vb.size(), 0.0f);
    float* dq = gq.data();
    float* dk = packed ? dq + C : gk.data();
    float* dv = packed ? dq + 2 * C : gv.data();
    int dmax = d <= 64 ? 64 : d <= 128 ? 128 : d <= 256 ? 256 : 512;
    size_t fsm = (2 * 32 * (dmax + 4) + 32 * 33) * 4, bsm = (4 * 16 * (dmax + 4) + 2 * 16 * 17 + 2 * 16) * 4;
    dim3 gf((tq + 31) / 32, B * H), gkv((tk + 15) / 16, B * H), gqq((tq + 15) / 16, B * H);
    unsigned rows_blocks = (unsigned)((B * H * tq + 7) / 8);
    switch (dmax) {
        case 64:
            EMU_LAUNCH(attn_fwd_d64, gf, dim3(256), fsm, g, q, k, v, o.data(), lse.data());
            EMU_LAUNCH(attn_bwd_delta, dim3(rows_blocks), dim3(256), 0, g, o.data(), dout.data(), delta.data());
            EMU_LAUNCH(attn_bwd_dkdv_d64, gkv, dim3(256), bsm, g, q, k, v, dout.data(), lse.data(), delta.data(), dk, dv, 0.0f);
            EMU_LAUNCH(attn_bwd_dq_d64, gqq, dim3(256), bsm, g, q, k, v, dout.data(), lse.data(), delta.data(), dq, 0.0f);
            break;
        case 128:
            EMU_LAUNCH(attn_fwd_d128, gf, dim3(256), fsm, g, q, k, v, o.data(), lse.data());
            EMU_LAUNCH(attn_bwd_delta, dim3(rows_blocks), dim3(256), 0, g, o.data(), dout.data(), delta.data());
            EMU_LAUNCH(attn_bwd_dkdv_d128, gkv, dim3(256), bsm, g, q, k, v, dout.data(), lse.data(), delta.data(), dk, dv, 0.0f);
            EMU_LAUNCH(attn_bwd_dq_d128, gqq, dim3(256), bsm, g, q, k, v, dout.data(), lse.data(), delta.data(), dq, 0.0f);
            break;
        default:
            EMU_LAUNCH(attn_fwd_d512, gf, dim3(256), fsm, g, q, k, v, o.data(), lse.data());
            EMU_LAUNCH(attn_bwd_delta, dim3(rows_blocks), dim3(256), 0, g, o.data(), dout.data(), delta.data());
            EMU_LAUNCH(attn_bwd_dkdv_d512, gkv, dim3(256), bsm, g, q, k, v, dout.data(), lse.data(), delta.data(), dk, dv, 0.0f);
            EMU_LAUNCH(attn_bwd_dq_d512, gqq, dim3(256), bsm, g, q, k, v, dout.data(), lse.data(), delta.data(), dq, 0.0f);
    }
    // reference
    dvec ro(o.size()), rlse(lse.size()), rgq(gq.size(), 0.0), rgk(gk.size(), 0.0), rgv(gv.size(), 0.0);
    auto Q = [&](int b, int i, int h, int c) { return (double)q[b * g.bsq + (long long)i * g.ldq + h * d + c]; };
    auto K = [&](int b, int j, int h, int c) { return (double)k[b * g.bsk + (long long)j * g.ldk + h * d + c]; };
    auto V = [&](int b, int j, int h, int c) { return (double)v[b * g.bsv + (long long)j * g.ldv + h * d + c]; };
    auto gidx = [&](long long bs, int ld, int b, int i, int h, int c) { return b * bs + (long long)i * ld + h * d + c; };
    for (int b = 0; b < B; ++b)
        for (int h = 0; h < H; ++h) {
            std::vector<dvec> P(tq, dvec(tk));
            for (int i = 0; i < tq; ++i) {
                double m = -1e300, s = 0;
                for (int j = 0; j < tk; ++j) {
                    double dot = 0;
                    for (int c = 0; c < d; ++c) dot += Q(b, i, h, c) * K(b, j, h, c);
                    P[i][j] = dot * g.scale;
                    m = std::max(m, P[i][j]);
                }
                for (int j = 0; j < tk; ++j) s += std::exp(P[i][j] - m);
                for (int j = 0; j < tk; ++j) P[i][j] = std::exp(P[i][j] - m) / s;
                rlse[(b * H + h) * tq + i] = m + std::log(s);
                for (int c = 0; c < d; ++c) {
                    double acc = 0;
                    for (int j = 0; j < tk; ++j) acc += P[i][j] * V(b, j, h, c);
                    ro[gidx(g.bso, g.ldo, b, i, h, c)] = acc;
                }
            }
            for (int i = 0; i < tq; ++i) {
                dvec dP(tk);
                double dl = 0;
                for (int j = 0; j < tk; ++j) {
                    double acc = 0;
                    for (int c = 0; c < d; ++c) acc += dout[gidx(g.bso, g.ldo, b, i, h, c)] * V(b, j, h, c);
                    dP[j] = acc;
                    dl += P[i][j] * acc;
                }
                for (int j = 0; j < tk; ++j) {
                    double ds = P[i][j] * (dP[j] - dl);
                    for (int c = 0; c < d; ++c) {
                        double dO = dout[gidx(g.bso, g.ldo, b, i, h, c)];
                        if (packed) {
                            rgq[gidx(g.bsq, g.ldq, b, i, h, c)] += g.scale * ds * K(b, j, h, c);
                            rgq[gidx(g.bsk, g.ldk, b, j, h, c) + C] += g.scale * ds * Q(b, i, h, c);
                            rgq[gidx(g.bsv, g.ldv, b, j, h, c) + 2 * C] += P[i][j] * dO;
                        } else {
                            rgq[gidx(g.bsq, g.ldq, b, i, h, c)] += g.scale * ds * K(b, j, h, c);
                            rgk[gidx(g.bsk, g.ldk, b, j, h, c)] += g.scale * ds * Q(b, i, h, c);
                            rgv[gidx(g.bsv, g.ldv, b, j, h, c)] += P[i][j] * dO;
                        }
                    }
                }
            }
        }
    std::string nm(name);
    chk::expect(nm + " o", o, ro, 1e-5);
    chk::expect(nm + " lse", lse, rlse, 1e-6);
    chk::expect(nm + " dq" + (packed ? "kv (packed)" : ""), gq, rgq, 1e-5);
    if (!packed) {
        chk::expect(nm + " dk", gk, rgk, 1e-5);
        chk::expect(nm + " dv", gv, rgv, 1e-5);
    }
}

static void test_attention() {
    attn_case("attn single head d20 tq37 tk45", 2, 1, 37, 45, 20, false);
    attn_case("attn packed 2 heads d16 t40", 1, 2, 40, 40, 16, true);
    attn_case("attn single head d96 t33", 1, 1, 33, 33, 96, false);
    attn_case("attn single head d260 tq18 tk50", 1, 1, 18, 50, 260, false);
}

int main(int argc, char** argv) {
    std::string only = argc > 1 ? argv[1] : "";
    auto want = [&](const char* s) { return only.empty() || only == s; };
    if (want("elementwise")) test_elementwise();
    if (want("reduce")) test_reduce();
    if (want("losses")) test_losses();
    if (want("gaussian")) test_gaussian();
    if (want("adam")) test_adam();
    if (want("norms")) test_norms();
    if (want("resize")) test_resize_upsample_pool();
    if (want("attention")) test_attention();
    return chk::finish();
}
