// attention_bwd.cu — flash-style attention backward (f32 SIMT), deterministic (no atomics).
//
// With P = exp(scale * Q K^T - lse) recomputed tile by tile and delta_i = sum_c dO[i,c] O[i,c]:
//   dV = P^T dO,   dS = P * (dO V^T - delta),   dK = scale * dS^T Q,   dQ = scale * dS K.
// Three launches:
//   attn_bwd_delta            delta [batch, heads, tq]; one warp per query row, block 256,
//                             grid ceil(batch*heads*tq / 8).
//   attn_bwd_dkdv_d{DMAX}     a block owns 16 keys (K, V resident) and streams 16-query tiles
//                             of Q and dO; grid (ceil(tk/16), batch*heads).
//   attn_bwd_dq_d{DMAX}       a block owns 16 queries (Q, dO resident) and streams 16-key tiles
//                             of K and V; grid (ceil(tq/16), batch*heads).
// The last two recompute the 16x16 score tile (one dot product of length d per thread) and use
// block 256 with dynamic shared memory attn_bwd_smem_bytes(DMAX) =
// (4 * 16 * (DMAX + 4) + 2 * 16 * 17 + 2 * 16) * 4. dq, dk, dv use the layouts of q, k, v (and
// dO that of o); they are written as value + beta * old (beta = 0 overwrites).
#include "medvae_attention.cuh"

#define AB_T 16
#define AB_PS (AB_T + 1)

extern "C" __global__ void attn_bwd_delta(AttnGeom g, const float* __restrict__ o, const float* __restrict__ dout,
                                          float* __restrict__ delta) {
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const mv_i64 row = (mv_i64)blockIdx.x * (blockDim.x >> 5) + warp;
    if (row >= (mv_i64)g.batch * g.heads * g.tq) return;  // whole warp
    const int qrow = (int)(row % g.tq);
    const int bh = (int)(row / g.tq), b = bh / g.heads, h = bh - b * g.heads;
    const mv_i64 off = b * g.bso + (mv_i64)qrow * g.ldo + (mv_i64)h * g.d;
    float s = 0.0f;
    for (int c = lane; c < g.d; c += 32) s += o[off + c] * dout[off + c];
    s = mv_warp_sum(s);
    if (lane == 0) delta[row] = s;
}

// <A, B> and <C, D> over d floats (rows of shared-memory tiles, 16-byte aligned).
__device__ __forceinline__ void attn_dot2(const float* A, const float* B, const float* C, const float* D, int d,
                                          float& ab, float& cd) {
    ab = 0.0f;
    cd = 0.0f;
    for (int c = 0; c < d; c += 4) {
        const float4 a = *reinterpret_cast<const float4*>(A + c);
        const float4 b = *reinterpret_cast<const float4*>(B + c);
        const float4 x = *reinterpret_cast<const float4*>(C + c);
        const float4 y = *reinterpret_cast<const float4*>(D + c);
        ab += a.x * b.x + a.y * b.y + a.z * b.z + a.w * b.w;
        cd += x.x * y.x + x.y * y.y + x.z * y.z + x.w * y.w;
    }
}

template <int DMAX>
__device__ __forceinline__ void attn_store_rows(float* base, int ld, int row, int sub, int d, const float acc[][4],
                                                float mul, float beta) {
    constexpr int NJ = DMAX / 64;
    float* p = base + (mv_i64)row * ld;
#pragma unroll
    for (int j = 0; j < NJ; ++j) {
        const int c = 4 * sub + 64 * j;
        if (c < d) {
            float4 r = make_float4(acc[j][0] * mul, acc[j][1] * mul, acc[j][2] * mul, acc[j][3] * mul);
            if (beta != 0.0f) {
                const float4 old = *reinterpret_cast<const float4*>(p + c);
                r.x += beta * old.x;
                r.y += beta * old.y;
                r.z += beta * old.z;
                r.w += beta * old.w;
            }
            *reinterpret_cast<float4*>(p + c) = r;
        }
    }
}

// acc[j] += w * row[4*sub + 64*j ..]
template <int DMAX>
__device__ __forceinline__ void attn_axpy_row(float acc[][4], float w, const float* row, int sub, int d) {
    constexpr int NJ = DMAX / 64;
#pragma unroll
    for (int j = 0; j < NJ; ++j) {
        const int c = 4 * sub + 64 * j;
        if (c < d) {
            const float4 x = *reinterpret_cast<const float4*>(row + c);
            acc[j][0] += w * x.x;
            acc[j][1] += w * x.y;
            acc[j][2] += w * x.z;
            acc[j][3] += w * x.w;
        }
    }
}

template <int DMAX>
__device__ __forceinline__ void attn_bwd_dkdv_impl(const AttnGeom& g, const float* q, const float* k, const float* v,
                                                   const float* dout, const float* lse, const float* delta, float* dk,
                                                   float* dv, float beta) {
    constexpr int DP = DMAX + 4, NJ = DMAX / 64;
    float* Ks = MV_DYN_SMEM(float);
    float* Vs = Ks + AB_T * DP;
    float* Qs = Vs + AB_T * DP;
    float* dOs = Qs + AB_T * DP;
    float* Ps = dOs + AB_T * DP;
    float* dSs = Ps + AB_T * AB_PS;
    float* lse_s = dSs + AB_T * AB_PS;
    float* del_s = lse_s + AB_T;

    const int bh = blockIdx.y, b = bh / g.heads, h = bh - b * g.heads;
    const int k0 = blockIdx.x * AB_T, d = g.d, t = threadIdx.x;
    const int qi = t & 15, kj = t >> 4;   // score tile entry
    const int rk = t >> 4, sub = t & 15;  // accumulator row (key) and column group
    const mv_i64 hoff = (mv_i64)h * d;
    const float* qb = q + b * g.bsq + hoff;
    const float* kb = k + b * g.bsk + hoff;
    const float* vb = v + b * g.bsv + hoff;
    const float* dob = dout + b * g.bso + hoff;

    attn_load_rows(Ks, DP, kb, g.ldk, k0, g.tk, AB_T, d);
    attn_load_rows(Vs, DP, vb, g.ldv, k0, g.tk, AB_T, d);
    mv_cp_async_commit();

    float dk_acc[NJ][4], dv_acc[NJ][4];
#pragma unroll
    for (int j = 0; j < NJ; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) dk_acc[j][e] = dv_acc[j][e] = 0.0f;

    for (int q0 = 0; q0 < g.tq; q0 += AB_T) {
        attn_load_rows(Qs, DP, qb, g.ldq, q0, g.tq, AB_T, d);
        attn_load_rows(dOs, DP, dob, g.ldo, q0, g.tq, AB_T, d);
        mv_cp_async_commit();
        if (t < AB_T) {
            const bool ok = q0 + t < g.tq;
            lse_s[t] = ok ? lse[(mv_i64)bh * g.tq + q0 + t] : MV_INF;  // P = 0 for missing queries
            del_s[t] = ok ? delta[(mv_i64)bh * g.tq + q0 + t] : 0.0f;
        }
        mv_cp_async_wait<0>();
        __syncthreads();

        float s, dp;
        attn_dot2(Qs + qi * DP, Ks + kj * DP, dOs + qi * DP, Vs + kj * DP, d, s, dp);
        const float p = expf(s * g.scale - lse_s[qi]);
        Ps[qi * AB_PS + kj] = p;
        dSs[qi * AB_PS + kj] = p * (dp - del_s[qi]);
        __syncthreads();

        for (int qq = 0; qq < AB_T; ++qq) {
            attn_axpy_row<DMAX>(dv_acc, Ps[qq * AB_PS + rk], dOs + qq * DP, sub, d);
            attn_axpy_row<DMAX>(dk_acc, dSs[qq * AB_PS + rk], Qs + qq * DP, sub, d);
        }
        __syncthreads();  // before the next tile overwrites Qs, dOs, Ps, dSs
    }

    if (k0 + rk < g.tk) {
        attn_store_rows<DMAX>(dk + b * g.bsk + hoff, g.ldk, k0 + rk, sub, d, dk_acc, g.scale, beta);
        attn_store_rows<DMAX>(dv + b * g.bsv + hoff, g.ldv, k0 + rk, sub, d, dv_acc, 1.0f, beta);
    }
}

template <int DMAX>
__device__ __forceinline__ void attn_bwd_dq_impl(const AttnGeom& g, const float* q, const float* k, const float* v,
                                                 const float* dout, const float* lse, const float* delta, float* dq,
                                                 float beta) {
    constexpr int DP = DMAX + 4, NJ = DMAX / 64;
    float* Qs = MV_DYN_SMEM(float);
    float* dOs = Qs + AB_T * DP;
    float* Ks = dOs + AB_T * DP;
    float* Vs = Ks + AB_T * DP;
    float* dSs = Vs + AB_T * DP;
    float* lse_s = dSs + 2 * AB_T * AB_PS;
    float* del_s = lse_s + AB_T;

    const int bh = blockIdx.y, b = bh / g.heads, h = bh - b * g.heads;
    const int q0 = blockIdx.x * AB_T, d = g.d, t = threadIdx.x;
    const int qi = t & 15, kj = t >> 4;
    const int rq = t >> 4, sub = t & 15;
    const mv_i64 hoff = (mv_i64)h * d;
    const float* qb = q + b * g.bsq + hoff;
    const float* kb = k + b * g.bsk + hoff;
    const float* vb = v + b * g.bsv + hoff;
    const float* dob = dout + b * g.bso + hoff;

    attn_load_rows(Qs, DP, qb, g.ldq, q0, g.tq, AB_T, d);
    attn_load_rows(dOs, DP, dob, g.ldo, q0, g.tq, AB_T, d);
    mv_cp_async_commit();
    if (t < AB_T) {
        const bool ok = q0 + t < g.tq;
        lse_s[t] = ok ? lse[(mv_i64)bh * g.tq + q0 + t] : MV_INF;
        del_s[t] = ok ? delta[(mv_i64)bh * g.tq + q0 + t] : 0.0f;
    }

    float dq_acc[NJ][4];
#pragma unroll
    for (int j = 0; j < NJ; ++j) dq_acc[j][0] = dq_acc[j][1] = dq_acc[j][2] = dq_acc[j][3] = 0.0f;

    for (int k0 = 0; k0 < g.tk; k0 += AB_T) {
        attn_load_rows(Ks, DP, kb, g.ldk, k0, g.tk, AB_T, d);
        attn_load_rows(Vs, DP, vb, g.ldv, k0, g.tk, AB_T, d);
        mv_cp_async_commit();
        mv_cp_async_wait<0>();
        __syncthreads();

        float s, dp;
        attn_dot2(Qs + qi * DP, Ks + kj * DP, dOs + qi * DP, Vs + kj * DP, d, s, dp);
        const float p = (k0 + kj < g.tk) ? expf(s * g.scale - lse_s[qi]) : 0.0f;
        dSs[qi * AB_PS + kj] = p * (dp - del_s[qi]);
        __syncthreads();

        for (int kk = 0; kk < AB_T; ++kk) attn_axpy_row<DMAX>(dq_acc, dSs[rq * AB_PS + kk], Ks + kk * DP, sub, d);
        __syncthreads();  // before the next tile overwrites Ks, Vs, dSs
    }

    if (q0 + rq < g.tq) attn_store_rows<DMAX>(dq + b * g.bsq + hoff, g.ldq, q0 + rq, sub, d, dq_acc, g.scale, beta);
}

extern "C" __global__ void __launch_bounds__(256)
    attn_bwd_dkdv_d64(AttnGeom g, const float* q, const float* k, const float* v, const float* dout, const float* lse,
                      const float* delta, float* dk, float* dv, float beta) {
    attn_bwd_dkdv_impl<64>(g, q, k, v, dout, lse, delta, dk, dv, beta);
}
extern "C" __global__ void __launch_bounds__(256)
    attn_bwd_dkdv_d128(AttnGeom g, const float* q, const float* k, const float* v, const float* dout, const float* lse,
                       const float* delta, float* dk, float* dv, float beta) {
    attn_bwd_dkdv_impl<128>(g, q, k, v, dout, lse, delta, dk, dv, beta);
}
extern "C" __global__ void __launch_bounds__(256)
    attn_bwd_dkdv_d256(AttnGeom g, const float* q, const float* k, const float* v, const float* dout, const float* lse,
                       const float* delta, float* dk, float* dv, float beta) {
    attn_bwd_dkdv_impl<256>(g, q, k, v, dout, lse, delta, dk, dv, beta);
}
extern "C" __global__ void __launch_bounds__(256)
    attn_bwd_dkdv_d512(AttnGeom g, const float* q, const float* k, const float* v, const float* dout, const float* lse,
                       const float* delta, float* dk, float* dv, float beta) {
    attn_bwd_dkdv_impl<512>(g, q, k, v, dout, lse, delta, dk, dv, beta);
}
extern "C" __global__ void __launch_bounds__(256)
    attn_bwd_dq_d64(AttnGeom g, const float* q, const float* k, const float* v, const float* dout, const float* lse,
                    const float* delta, float* dq, float beta) {
    attn_bwd_dq_impl<64>(g, q, k, v, dout, lse, delta, dq, beta);
}
extern "C" __global__ void __launch_bounds__(256)
    attn_bwd_dq_d128(AttnGeom g, const float* q, const float* k, const float* v, const float* dout, const float* lse,
                     const float* delta, float* dq, float beta) {
    attn_bwd_dq_impl<128>(g, q, k, v, dout, lse, delta, dq, beta);
}
extern "C" __global__ void __launch_bounds__(256)
    attn_bwd_dq_d256(AttnGeom g, const float* q, const float* k, const float* v, const float* dout, const float* lse,
                     const float* delta, float* dq, float beta) {
    attn_bwd_dq_impl<256>(g, q, k, v, dout, lse, delta, dq, beta);
}
extern "C" __global__ void __launch_bounds__(256)
    attn_bwd_dq_d512(AttnGeom g, const float* q, const float* k, const float* v, const float* dout, const float* lse,
                     const float* delta, float* dq, float beta) {
    attn_bwd_dq_impl<512>(g, q, k, v, dout, lse, delta, dq, beta);
}
