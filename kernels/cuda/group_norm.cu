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
//   stats:    gn_stats_partial_v* -> gn_stats_finalize (mean, rstd [N*G], optional var) -> gn_apply_v*
//   backward: gn_bwd_partial_v* -> gn_bwd_finalize (dgamma, dbeta, coef [N*G*2]) -> gn_bwd_dx_v*
// Partial buffer sizes: forward N*chunks*G*2 floats, backward N*chunks*C*2 floats.
//
// Every pass over the activations is memory-bound only without per-element index arithmetic (a
// 64-bit division per element made the elementwise passes ALU-bound) and with several loads in
// flight per thread (one scalar load at a time left the reductions latency-bound): each thread
// keeps one vector of V channels (float4 when C % 4 == 0, else V = 1; the `_v4` / `_v1` entry
// points) for the whole pass, loads that vector's per-channel constants once, and walks rows.
#include "medvae_common.cuh"

#define GN_MAX_C 2048

__device__ __forceinline__ float gn_dz(float dy, float xhat, float gam, float bet, int silu) {
    if (!silu) return dy;
    const float z = xhat * gam + bet;
    const float s = mv_sigmoid(z);
    return dy * s * (1.0f + z * (1.0f - s));
}

// V consecutive floats (16-byte aligned when V == 4).
template <int V>
struct gn_vec {
    float v[V];
};
template <int V>
__device__ __forceinline__ gn_vec<V> gn_load(const float* p) {
    gn_vec<V> r;
#pragma unroll
    for (int i = 0; i < V; ++i) r.v[i] = p[i];
    return r;
}
template <>
__device__ __forceinline__ gn_vec<4> gn_load<4>(const float* p) {
    const float4 f = *reinterpret_cast<const float4*>(p);
    return gn_vec<4>{{f.x, f.y, f.z, f.w}};
}
template <int V>
__device__ __forceinline__ void gn_store(float* p, const gn_vec<V>& r) {
#pragma unroll
    for (int i = 0; i < V; ++i) p[i] = r.v[i];
}
template <>
__device__ __forceinline__ void gn_store<4>(float* p, const gn_vec<4>& r) {
    *reinterpret_cast<float4*>(p) = make_float4(r.v[0], r.v[1], r.v[2], r.v[3]);
}

// The statistics and affine parameters of channels q*V .. q*V+V-1 of sample n, loaded once per
// pass (gamma/beta null: 1 / 0).
template <int V>
struct gn_channels {
    float mean[V], rstd[V], gamma[V], beta[V];
};
template <int V>
__device__ __forceinline__ gn_channels<V> gn_channels_of(int n, int q, int C, int G, const float* __restrict__ mean,
                                                         const float* __restrict__ rstd,
                                                         const float* __restrict__ gamma,
                                                         const float* __restrict__ beta) {
    gn_channels<V> ch;
    const int cg = C / G;
#pragma unroll
    for (int i = 0; i < V; ++i) {
        const int c = q * V + i;
        const mv_i64 k = (mv_i64)n * G + c / cg;
        ch.mean[i] = mean[k];
        ch.rstd[i] = rstd[k];
        ch.gamma[i] = gamma ? gamma[c] : 1.0f;
        ch.beta[i] = beta ? beta[c] : 0.0f;
    }
    return ch;
}

// Per-channel sums of two quantities over rows [r0, r1) of one chunk, into cs/cq[c] (shared).
// Each thread takes one vector of V channels: `make(qv)` loads vector qv's per-channel constants
// once and returns `f(r, s, q)`, which adds row r's V contributions. With CV = C / V vectors no
// more than the block's threads, thread t walks vector t % CV over rows r0 + t / CV, step nt / CV
// (unrolled, so several vector loads are in flight per thread), and the lanes are summed through
// `stage_*` (nt * V floats each); otherwise threads loop over vectors, each over every row.
template <int V, class Make>
__device__ __forceinline__ void gn_channel_sums(int C, mv_i64 r0, mv_i64 r1, Make make, float* stage_s,
                                                float* stage_q, float* cs, float* cq) {
    const int t = threadIdx.x, nt = blockDim.x, CV = C / V;
    if (CV <= nt) {
        const int lanes = nt / CV, qv = t % CV, lane = t / CV;
        float s[V] = {}, q[V] = {};
        if (lane < lanes) {
            auto f = make(qv);
#pragma unroll 4
            for (mv_i64 r = r0 + lane; r < r1; r += lanes) f(r, s, q);
        }
#pragma unroll
        for (int i = 0; i < V; ++i) {
            stage_s[t * V + i] = s[i];
            stage_q[t * V + i] = q[i];
        }
        __syncthreads();
        // Thread t of lane l staged vector qv at [(l * CV + qv) * V] = [l * C + channel].
        for (int c = t; c < C; c += nt) {
            float a = 0.0f, b = 0.0f;
            for (int l = 0; l < lanes; ++l) {
                a += stage_s[l * C + c];
                b += stage_q[l * C + c];
            }
            cs[c] = a;
            cq[c] = b;
        }
    } else {
        for (int qv = t; qv < CV; qv += nt) {
            float s[V] = {}, q[V] = {};
            auto f = make(qv);
            for (mv_i64 r = r0; r < r1; ++r) f(r, s, q);
#pragma unroll
            for (int i = 0; i < V; ++i) {
                cs[qv * V + i] = s[i];
                cq[qv * V + i] = q[i];
            }
        }
    }
    __syncthreads();
}

// Threads per block of the partial kernels (their staging arrays are sized for it).
#define GN_PARTIAL_THREADS 256

// partial[((n * chunks + chunk) * G + g) * 2 + {0, 1}] = sum (x - K), sum (x - K)^2.
template <int V>
__device__ __forceinline__ void gn_stats_partial_impl(const float* __restrict__ x, mv_i64 S, int C, int G,
                                                      int rows_per_chunk, float* __restrict__ partial) {
    __shared__ float stage_s[GN_PARTIAL_THREADS * V], stage_q[GN_PARTIAL_THREADS * V];
    __shared__ float cs[GN_MAX_C], cq[GN_MAX_C];
    const int n = blockIdx.y, chunk = blockIdx.x, chunks = gridDim.x, cg = C / G;
    const float* xn = x + (mv_i64)n * S * C;
    const mv_i64 r0 = (mv_i64)chunk * rows_per_chunk, r1 = min(S, r0 + rows_per_chunk);
    auto make = [&](int qv) {
        float shift[V];
#pragma unroll
        for (int i = 0; i < V; ++i) shift[i] = xn[((qv * V + i) / cg) * cg];
        const float* col = xn + qv * V;
        return [=](mv_i64 r, float (&s)[V], float (&q)[V]) {
            const gn_vec<V> v = gn_load<V>(col + r * C);
#pragma unroll
            for (int i = 0; i < V; ++i) {
                const float d = v.v[i] - shift[i];
                s[i] += d;
                q[i] += d * d;
            }
        };
    };
    gn_channel_sums<V>(C, r0, r1, make, stage_s, stage_q, cs, cq);
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

// Entry points written out (the registry test reads them from the source).
extern "C" __global__ void __launch_bounds__(GN_PARTIAL_THREADS)
    gn_stats_partial_v4(const float* __restrict__ x, mv_i64 S, int C, int G, int rows_per_chunk,
                        float* __restrict__ partial) {
    gn_stats_partial_impl<4>(x, S, C, G, rows_per_chunk, partial);
}
extern "C" __global__ void __launch_bounds__(GN_PARTIAL_THREADS)
    gn_stats_partial_v1(const float* __restrict__ x, mv_i64 S, int C, int G, int rows_per_chunk,
                        float* __restrict__ partial) {
    gn_stats_partial_impl<1>(x, S, C, G, rows_per_chunk, partial);
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

// The part of one sample's [S, C] rows a thread walks: of the sample's T = gridDim.x * blockDim.x
// threads, thread t owns channel vector q = t % CV (CV = C / V) and rows t / CV, + T / CV, ...;
// the last T % CV threads idle (the launcher makes T at least 8 * CV).
struct gn_walk {
    int q;
    mv_i64 row, step;
    bool active;
};
__device__ __forceinline__ gn_walk gn_walk_of(int CV) {
    const int t = blockIdx.x * blockDim.x + threadIdx.x, lanes = (gridDim.x * blockDim.x) / CV;
    gn_walk w;
    w.q = t % CV;
    w.row = t / CV;
    w.step = lanes;
    w.active = t < lanes * CV;
    return w;
}

// y = normalise(x) * gamma + beta (+ SiLU). gamma/beta may be null (1 / 0). Grid (blocks, N).
template <int V>
__device__ __forceinline__ void gn_apply_impl(const float* __restrict__ x, const float* __restrict__ mean,
                                              const float* __restrict__ rstd, const float* __restrict__ gamma,
                                              const float* __restrict__ beta, float* __restrict__ y, mv_i64 S, int C,
                                              int G, int silu) {
    const int n = blockIdx.y;
    const gn_walk w = gn_walk_of(C / V);
    if (!w.active) return;
    const gn_channels<V> ch = gn_channels_of<V>(n, w.q, C, G, mean, rstd, gamma, beta);
    const mv_i64 base = (mv_i64)n * S * C + (mv_i64)w.q * V;
    // Two rows per step keep two vector loads in flight per thread.
#pragma unroll 2
    for (mv_i64 r = w.row; r < S; r += w.step) {
        gn_vec<V> v = gn_load<V>(x + base + r * C);
#pragma unroll
        for (int i = 0; i < V; ++i) {
            float t = (v.v[i] - ch.mean[i]) * ch.rstd[i];
            t = t * ch.gamma[i] + ch.beta[i];
            if (silu) t *= mv_sigmoid(t);
            v.v[i] = t;
        }
        gn_store<V>(y + base + r * C, v);
    }
}

extern "C" __global__ void __launch_bounds__(256)
    gn_apply_v4(const float* __restrict__ x, const float* __restrict__ mean, const float* __restrict__ rstd,
                const float* __restrict__ gamma, const float* __restrict__ beta, float* __restrict__ y, mv_i64 S, int C,
                int G, int silu) {
    gn_apply_impl<4>(x, mean, rstd, gamma, beta, y, S, C, G, silu);
}
extern "C" __global__ void __launch_bounds__(256)
    gn_apply_v1(const float* __restrict__ x, const float* __restrict__ mean, const float* __restrict__ rstd,
                const float* __restrict__ gamma, const float* __restrict__ beta, float* __restrict__ y, mv_i64 S, int C,
                int G, int silu) {
    gn_apply_impl<1>(x, mean, rstd, gamma, beta, y, S, C, G, silu);
}

// partial[((n * chunks + chunk) * C + c) * 2 + {0, 1}] = sum dz, sum dz * xhat.
template <int V>
__device__ __forceinline__ void gn_bwd_partial_impl(const float* __restrict__ x, const float* __restrict__ dy,
                                                    const float* __restrict__ mean, const float* __restrict__ rstd,
                                                    const float* __restrict__ gamma, const float* __restrict__ beta,
                                                    mv_i64 S, int C, int G, int silu, int rows_per_chunk,
                                                    float* __restrict__ partial) {
    __shared__ float stage_s[GN_PARTIAL_THREADS * V], stage_q[GN_PARTIAL_THREADS * V];
    __shared__ float cs[GN_MAX_C], cq[GN_MAX_C];
    const int n = blockIdx.y, chunk = blockIdx.x, chunks = gridDim.x;
    const mv_i64 off = (mv_i64)n * S * C;
    const mv_i64 r0 = (mv_i64)chunk * rows_per_chunk, r1 = min(S, r0 + rows_per_chunk);
    auto make = [&](int qv) {
        const gn_channels<V> ch = gn_channels_of<V>(n, qv, C, G, mean, rstd, gamma, beta);
        const float* xc = x + off + qv * V;
        const float* dc = dy + off + qv * V;
        return [=](mv_i64 r, float (&s)[V], float (&q)[V]) {
            const gn_vec<V> xv = gn_load<V>(xc + r * C), dv = gn_load<V>(dc + r * C);
#pragma unroll
            for (int i = 0; i < V; ++i) {
                const float xhat = (xv.v[i] - ch.mean[i]) * ch.rstd[i];
                const float dz = gn_dz(dv.v[i], xhat, ch.gamma[i], ch.beta[i], silu);
                s[i] += dz;
                q[i] += dz * xhat;
            }
        };
    };
    gn_channel_sums<V>(C, r0, r1, make, stage_s, stage_q, cs, cq);
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
        float* p = partial + (((mv_i64)n * chunks + chunk) * C + c) * 2;
        p[0] = cs[c];
        p[1] = cq[c];
    }
}

extern "C" __global__ void __launch_bounds__(GN_PARTIAL_THREADS)
    gn_bwd_partial_v4(const float* __restrict__ x, const float* __restrict__ dy, const float* __restrict__ mean,
                      const float* __restrict__ rstd, const float* __restrict__ gamma, const float* __restrict__ beta,
                      mv_i64 S, int C, int G, int silu, int rows_per_chunk, float* __restrict__ partial) {
    gn_bwd_partial_impl<4>(x, dy, mean, rstd, gamma, beta, S, C, G, silu, rows_per_chunk, partial);
}
extern "C" __global__ void __launch_bounds__(GN_PARTIAL_THREADS)
    gn_bwd_partial_v1(const float* __restrict__ x, const float* __restrict__ dy, const float* __restrict__ mean,
                      const float* __restrict__ rstd, const float* __restrict__ gamma, const float* __restrict__ beta,
                      mv_i64 S, int C, int G, int silu, int rows_per_chunk, float* __restrict__ partial) {
    gn_bwd_partial_impl<1>(x, dy, mean, rstd, gamma, beta, S, C, G, silu, rows_per_chunk, partial);
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
// by BatchNorm in eval mode, whose statistics are constants). Grid (blocks, N), as gn_apply_*.
// dy may be dx (the in-place backward, dx_beta 0): each element is read by the thread that
// then writes it, so dy and dx carry no __restrict__.
template <int V>
__device__ __forceinline__ void gn_bwd_dx_impl(const float* __restrict__ x, const float* dy,
                                               const float* __restrict__ mean, const float* __restrict__ rstd,
                                               const float* __restrict__ gamma, const float* __restrict__ beta,
                                               const float* __restrict__ coef, float* dx, mv_i64 S, int C, int G,
                                               int silu, float dx_beta) {
    const int n = blockIdx.y, cg = C / G;
    const gn_walk w = gn_walk_of(C / V);
    if (!w.active) return;
    const gn_channels<V> ch = gn_channels_of<V>(n, w.q, C, G, mean, rstd, gamma, beta);
    float c0[V], c1[V];
#pragma unroll
    for (int i = 0; i < V; ++i) {
        const mv_i64 k = (mv_i64)n * G + (w.q * V + i) / cg;
        c0[i] = coef ? coef[k * 2] : 0.0f;
        c1[i] = coef ? coef[k * 2 + 1] : 0.0f;
    }
    const mv_i64 base = (mv_i64)n * S * C + (mv_i64)w.q * V;
#pragma unroll 2
    for (mv_i64 r = w.row; r < S; r += w.step) {
        const mv_i64 at = base + r * C;
        const gn_vec<V> xv = gn_load<V>(x + at), dv = gn_load<V>(dy + at);
        gn_vec<V> out{};
        if (dx_beta != 0.0f) out = gn_load<V>(dx + at);
#pragma unroll
        for (int i = 0; i < V; ++i) {
            const float xhat = (xv.v[i] - ch.mean[i]) * ch.rstd[i];
            const float dz = gn_dz(dv.v[i], xhat, ch.gamma[i], ch.beta[i], silu);
            const float g = ch.rstd[i] * (dz * ch.gamma[i] - c0[i] - xhat * c1[i]);
            out.v[i] = dx_beta != 0.0f ? g + dx_beta * out.v[i] : g;
        }
        gn_store<V>(dx + at, out);
    }
}

extern "C" __global__ void __launch_bounds__(256)
    gn_bwd_dx_v4(const float* __restrict__ x, const float* dy, const float* __restrict__ mean,
                 const float* __restrict__ rstd, const float* __restrict__ gamma, const float* __restrict__ beta,
                 const float* __restrict__ coef, float* dx, mv_i64 S, int C, int G, int silu, float dx_beta) {
    gn_bwd_dx_impl<4>(x, dy, mean, rstd, gamma, beta, coef, dx, S, C, G, silu, dx_beta);
}
extern "C" __global__ void __launch_bounds__(256)
    gn_bwd_dx_v1(const float* __restrict__ x, const float* dy, const float* __restrict__ mean,
                 const float* __restrict__ rstd, const float* __restrict__ gamma, const float* __restrict__ beta,
                 const float* __restrict__ coef, float* dx, mv_i64 S, int C, int G, int silu, float dx_beta) {
    gn_bwd_dx_impl<1>(x, dy, mean, rstd, gamma, beta, coef, dx, S, C, G, silu, dx_beta);
}
