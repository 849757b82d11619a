// group_norm.cu — GroupNorm (+ fused SiLU) forward and backward, channels-last, also serving
// BatchNorm (see batch_norm.cu).
//
// x: [N, S, C] with S = D*H*W spatial rows, G groups of Cg = C/G channels; statistics per
// (n, g) over S*Cg values, biased variance, rstd = 1/sqrt(var + eps). Forward:
//   y = (x - mean) * rstd * gamma[c] + beta[c],   then y *= sigmoid(y) when `silu`.
// Backward (z the pre-SiLU output, dz = dy * silu'(z) or dy; xhat = (x - mean) * rstd):
//   dgamma[c] += sum dz * xhat,  dbeta[c] += sum dz,
//   dx = rstd * (dz * gamma - mean_g(dz * gamma) - xhat * mean_g(dz * gamma * xhat)).
// BatchNorm in training mode is exactly this with N = 1 (all samples' pixels as rows) and G = C.
//
// Reductions run in two passes so any S parallelises: `*_partial` kernels (grid (chunks, N),
// 256 threads) reduce `rows_per_chunk` rows each into a partial buffer, `*_finalize` kernels
// merge the chunks in f64. The forward partials are shifted by the group's first value x[n,0,g*Cg]
// so that mean^2 >> var does not cancel. Limits: C <= 2048.
//   stats:    gn_stats_partial -> gn_stats_finalize (mean, rstd [N*G], optional var) -> gn_apply
//   backward: gn_bwd_partial -> gn_bwd_finalize (dgamma, dbeta, coef [N*G*2]) -> gn_bwd_dx
// Partial buffer sizes: forward N*chunks*G*2 floats, backward N*chunks*C*2 floats.
#include "medvae_common.cuh"

#define GN_MAX_C 2048

__device__ __forceinline__ float gn_dz(float dy, float xhat, float gam, float bet, int silu) {
    if (!silu) return dy;
    const float z = xhat * gam + bet;
    const float s = mv_sigmoid(z);
    return dy * s * (1.0f + z * (1.0f - s));
}

// Per-channel sums of f(row, c) over rows [r0, r1) of one chunk, written to cs/cq[c] (shared).
// Threads are spread over channels, and over rows when C < blockDim.x.
template <class F>
__device__ __forceinline__ void gn_channel_sums(int C, mv_i64 r0, mv_i64 r1, F f, float* stage_s, float* stage_q,
                                                float* cs, float* cq) {
    const int t = threadIdx.x, nt = blockDim.x;
    if (C <= nt) {
        const int lanes = nt / C, c = t % C, lane = t / C;
        float s = 0.0f, q = 0.0f;
        if (lane < lanes)
            for (mv_i64 r = r0 + lane; r < r1; r += lanes) f(r, c, s, q);
        stage_s[t] = s;
        stage_q[t] = q;
        __syncthreads();
        if (t < C) {
            float a = 0.0f, b = 0.0f;
            for (int l = 0; l < lanes; ++l) {
                a += stage_s[l * C + t];
                b += stage_q[l * C + t];
            }
            cs[t] = a;
            cq[t] = b;
        }
    } else {
        for (int c = t; c < C; c += nt) {
            float s = 0.0f, q = 0.0f;
            for (mv_i64 r = r0; r < r1; ++r) f(r, c, s, q);
            cs[c] = s;
            cq[c] = q;
        }
    }
    __syncthreads();
}

// partial[((n * chunks + chunk) * G + g) * 2 + {0, 1}] = sum (x - K), sum (x - K)^2.
extern "C" __global__ void __launch_bounds__(256) gn_stats_partial(const float* __restrict__ x, mv_i64 S, int C, int G,
                                                                   int rows_per_chunk, float* __restrict__ partial) {
    __shared__ float stage_s[256], stage_q[256];
    __shared__ float cs[GN_MAX_C], cq[GN_MAX_C];
    const int n = blockIdx.y, chunk = blockIdx.x, chunks = gridDim.x, cg = C / G;
    const float* xn = x + (mv_i64)n * S * C;
    const mv_i64 r0 = (mv_i64)chunk * rows_per_chunk, r1 = min(S, r0 + rows_per_chunk);
    auto f = [&](mv_i64 r, int c, float& s, float& q) {
        const float d = xn[r * C + c] - xn[(c / cg) * cg];
        s += d;
        q += d * d;
    };
    gn_channel_sums(C, r0, r1, f, stage_s, stage_q, cs, cq);
    for (int g = threadIdx.x; g < G; g += blockDim.x) {
        float a = 0.0f, b = 0.0f;
        for (int c = g * cg; c < (g + 1) * cg; ++c) {
            a += cs[c];
            b += cq[c];
        }
        float* p = partial + (((mv_i64)n * chunks + chunk) * G + g) * 2;
        p[0] = a;
        p[1] = b;
    }
}

// One thread per (n, g). `var` may be null.
extern "C" __global__ void gn_stats_finalize(const float* __restrict__ partial, const float* __restrict__ x, int N,
                                             mv_i64 S, int C, int G, int chunks, float eps, float* __restrict__ mean,
                                             float* __restrict__ rstd, float* __restrict__ var) {
    const int cg = C / G;
    for (mv_i64 i = mv_global_tid(); i < (mv_i64)N * G; i += mv_global_stride()) {
        const int n = (int)(i / G), g = (int)(i % G);
        double a = 0.0, b = 0.0;
        for (int k = 0; k < chunks; ++k) {
            const float* p = partial + (((mv_i64)n * chunks + k) * G + g) * 2;
            a += (double)p[0];
            b += (double)p[1];
        }
        const double cnt = (double)S * cg;
        const double md = a / cnt;
        double v = b / cnt - md * md;
        if (v < 0.0) v = 0.0;
        mean[i] = (float)((double)x[(mv_i64)n * S * C + (mv_i64)g * cg] + md);
        rstd[i] = (float)(1.0 / sqrt(v + (double)eps));
        if (var) var[i] = (float)v;
    }
}

// y = normalise(x) * gamma + beta (+ SiLU). gamma/beta may be null (1 / 0). Grid-stride.
extern "C" __global__ void gn_apply(const float* __restrict__ x, const float* __restrict__ mean,
                                    const float* __restrict__ rstd, const float* __restrict__ gamma,
                                    const float* __restrict__ beta, float* __restrict__ y, int N, mv_i64 S, int C, int G,
                                    int silu) {
    const int cg = C / G;
    const mv_i64 total = (mv_i64)N * S * C, per_n = S * C;
    for (mv_i64 i = mv_global_tid(); i < total; i += mv_global_stride()) {
        const int c = (int)(i % C);
        const mv_i64 k = (i / per_n) * G + c / cg;
        float v = (x[i] - mean[k]) * rstd[k];
        v = v * (gamma ? gamma[c] : 1.0f) + (beta ? beta[c] : 0.0f);
        if (silu) v *= mv_sigmoid(v);
        y[i] = v;
    }
}

// partial[((n * chunks + chunk) * C + c) * 2 + {0, 1}] = sum dz, sum dz * xhat.
extern "C" __global__ void __launch_bounds__(256)
    gn_bwd_partial(const float* __restrict__ x, const float* __restrict__ dy, const float* __restrict__ mean,
                   const float* __restrict__ rstd, const float* __restrict__ gamma, const float* __restrict__ beta,
                   mv_i64 S, int C, int G, int silu, int rows_per_chunk, float* __restrict__ partial) {
    __shared__ float stage_s[256], stage_q[256];
    __shared__ float cs[GN_MAX_C], cq[GN_MAX_C];
    const int n = blockIdx.y, chunk = blockIdx.x, chunks = gridDim.x, cg = C / G;
    const mv_i64 off = (mv_i64)n * S * C;
    const mv_i64 r0 = (mv_i64)chunk * rows_per_chunk, r1 = min(S, r0 + rows_per_chunk);
    auto f = [&](mv_i64 r, int c, float& s, float& q) {
        const mv_i64 k = (mv_i64)n * G + c / cg;
        const mv_i64 i = off + r * C + c;
        const float xhat = (x[i] - mean[k]) * rstd[k];
        const float dz = gn_dz(dy[i], xhat, gamma ? gamma[c] : 1.0f, beta ? beta[c] : 0.0f, silu);
        s += dz;
        q += dz * xhat;
    };
    gn_channel_sums(C, r0, r1, f, stage_s, stage_q, cs, cq);
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
        float* p = partial + (((mv_i64)n * chunks + chunk) * C + c) * 2;
        p[0] = cs[c];
        p[1] = cq[c];
    }
}

// Grid (N), any multiple-of-32 block. dgamma/dbeta (nullable) accumulate; coef[(n*G+g)*2+{0,1}]
// = mean over the group of dz*gamma and of dz*gamma*xhat.
extern "C" __global__ void gn_bwd_finalize(const float* __restrict__ partial, int chunks, mv_i64 S, int C, int G,
                                           const float* __restrict__ gamma, float* dgamma, float* dbeta,
                                           float* __restrict__ coef) {
    __shared__ float ga[GN_MAX_C], gb[GN_MAX_C];
    const int n = blockIdx.x, cg = C / G;
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
        double a = 0.0, b = 0.0;
        for (int k = 0; k < chunks; ++k) {
            const float* p = partial + (((mv_i64)n * chunks + k) * C + c) * 2;
            a += (double)p[0];
            b += (double)p[1];
        }
        if (dgamma) atomicAdd(dgamma + c, (float)b);
        if (dbeta) atomicAdd(dbeta + c, (float)a);
        const float gam = gamma ? gamma[c] : 1.0f;
        ga[c] = gam * (float)a;
        gb[c] = gam * (float)b;
    }
    __syncthreads();
    const double cnt = (double)S * cg;
    for (int g = threadIdx.x; g < G; g += blockDim.x) {
        double a = 0.0, b = 0.0;
        for (int c = g * cg; c < (g + 1) * cg; ++c) {
            a += ga[c];
            b += gb[c];
        }
        coef[((mv_i64)n * G + g) * 2] = (float)(a / cnt);
        coef[((mv_i64)n * G + g) * 2 + 1] = (float)(b / cnt);
    }
}

// dx = rstd * (dz * gamma - coef0 - xhat * coef1) (+ dx_beta * dx_old). coef null = zeros (used
// by BatchNorm in eval mode, whose statistics are constants). Grid-stride.
extern "C" __global__ void gn_bwd_dx(const float* __restrict__ x, const float* __restrict__ dy,
                                     const float* __restrict__ mean, const float* __restrict__ rstd,
                                     const float* __restrict__ gamma, const float* __restrict__ beta,
                                     const float* __restrict__ coef, float* dx, int N, mv_i64 S, int C, int G, int silu,
                                     float dx_beta) {
    const int cg = C / G;
    const mv_i64 total = (mv_i64)N * S * C, per_n = S * C;
    for (mv_i64 i = mv_global_tid(); i < total; i += mv_global_stride()) {
        const int c = (int)(i % C);
        const mv_i64 k = (i / per_n) * G + c / cg;
        const float rs = rstd[k];
        const float xhat = (x[i] - mean[k]) * rs;
        const float gam = gamma ? gamma[c] : 1.0f;
        const float dz = gn_dz(dy[i], xhat, gam, beta ? beta[c] : 0.0f, silu);
        const float c0 = coef ? coef[k * 2] : 0.0f, c1 = coef ? coef[k * 2 + 1] : 0.0f;
        mv_store_grad(dx + i, rs * (dz * gam - c0 - xhat * c1), dx_beta);
    }
}
