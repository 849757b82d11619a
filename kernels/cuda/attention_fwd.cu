// attention_fwd.cu — flash-style attention forward (online softmax, f32 SIMT).
//
// One block of 256 threads owns 32 queries of one (batch, head) and streams the keys and
// values through shared memory in tiles of 32 (cp.async, zero-filled past tk). Thread t works
// on query row r = t / 8: it scores keys sub, sub+8, sub+16, sub+24 (sub = t % 8) of each tile,
// the 8 threads of a row agree on the running max m and sum l by shuffles, and it keeps output
// columns {4*sub + 32*j + 0..3} in registers, rescaled by exp(m_old - m_new) per tile. At the end
// o = acc / l and lse = m + log(l) (saved for the backward). Never materialises tq x tk.
//
// Launch: grid (ceil(tq/32), batch*heads), block 256, dynamic shared memory
// attn_fwd_smem_bytes(DMAX) = (2 * 32 * (DMAX + 4) + 32 * 33) * 4 (the host raises the function's
// max-dynamic-shared-memory attribute when this exceeds 48 KiB). Entry points attn_fwd_d{64,128,
// 256,512} for head dims d <= DMAX.
#include "medvae_attention.cuh"

#define AF_BQ 32
#define AF_BK 32

template <int DMAX>
__device__ __forceinline__ void attn_fwd_impl(const AttnGeom& g, const float* q, const float* k, const float* v,
                                              float* o, float* lse) {
    constexpr int DP = DMAX + 4;
    constexpr int NJ = DMAX / 32;
    constexpr int PS = AF_BK + 1;
    float* Qs = MV_DYN_SMEM(float);
    float* KVs = Qs + AF_BQ * DP;
    float* Ps = KVs + AF_BK * DP;

    const int bh = blockIdx.y, b = bh / g.heads, h = bh - b * g.heads;
    const int q0 = blockIdx.x * AF_BQ, d = g.d;
    const int t = threadIdx.x, r = t >> 3, sub = t & 7;
    const float* qb = q + b * g.bsq + (mv_i64)h * d;
    const float* kb = k + b * g.bsk + (mv_i64)h * d;
    const float* vb = v + b * g.bsv + (mv_i64)h * d;

    attn_load_rows(Qs, DP, qb, g.ldq, q0, g.tq, AF_BQ, d);
    mv_cp_async_commit();

    float acc[NJ][4];
#pragma unroll
    for (int j = 0; j < NJ; ++j) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.0f;
    float m_run = -MV_INF, l_run = 0.0f;
    const float* qr = Qs + r * DP;

    for (int k0 = 0; k0 < g.tk; k0 += AF_BK) {
        attn_load_rows(KVs, DP, kb, g.ldk, k0, g.tk, AF_BK, d);
        mv_cp_async_commit();
        mv_cp_async_wait<0>();
        __syncthreads();

        float s[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll 4
        for (int c = 0; c < d; c += 4) {
            const float4 qv = *reinterpret_cast<const float4*>(qr + c);
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                const float4 kv = *reinterpret_cast<const float4*>(KVs + (sub + 8 * i) * DP + c);
                s[i] += qv.x * kv.x + qv.y * kv.y + qv.z * kv.z + qv.w * kv.w;
            }
        }
        float mx = -MV_INF;
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            s[i] = (k0 + sub + 8 * i < g.tk) ? s[i] * g.scale : -MV_INF;
            mx = fmaxf(mx, s[i]);
        }
        mx = mv_group_max<8>(mx);
        const float m_new = fmaxf(m_run, mx);  // finite: every tile has at least one key
        const float alpha = expf(m_run - m_new);
        float psum = 0.0f;
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const float p = expf(s[i] - m_new);
            Ps[r * PS + sub + 8 * i] = p;
            psum += p;
        }
        psum = mv_group_sum<8>(psum);
        l_run = l_run * alpha + psum;
        m_run = m_new;
        __syncthreads();  // K no longer read; P visible

        attn_load_rows(KVs, DP, vb, g.ldv, k0, g.tk, AF_BK, d);
        mv_cp_async_commit();
        mv_cp_async_wait<0>();
        __syncthreads();

#pragma unroll
        for (int j = 0; j < NJ; ++j) {
            acc[j][0] *= alpha;
            acc[j][1] *= alpha;
            acc[j][2] *= alpha;
            acc[j][3] *= alpha;
        }
        for (int kk = 0; kk < AF_BK; ++kk) {
            const float p = Ps[r * PS + kk];
            const float* vr = KVs + kk * DP;
#pragma unroll
            for (int j = 0; j < NJ; ++j) {
                const int c = 4 * sub + 32 * j;
                if (c < d) {
                    const float4 vv = *reinterpret_cast<const float4*>(vr + c);
                    acc[j][0] += p * vv.x;
                    acc[j][1] += p * vv.y;
                    acc[j][2] += p * vv.z;
                    acc[j][3] += p * vv.w;
                }
            }
        }
        __syncthreads();  // before the next tile overwrites KVs and Ps
    }

    const int qrow = q0 + r;
    if (qrow < g.tq) {
        const float inv = 1.0f / l_run;
        float* orow = o + b * g.bso + (mv_i64)qrow * g.ldo + (mv_i64)h * d;
#pragma unroll
        for (int j = 0; j < NJ; ++j) {
            const int c = 4 * sub + 32 * j;
            if (c < d)
                *reinterpret_cast<float4*>(orow + c) =
                    make_float4(acc[j][0] * inv, acc[j][1] * inv, acc[j][2] * inv, acc[j][3] * inv);
        }
        if (sub == 0 && lse) lse[(mv_i64)bh * g.tq + qrow] = m_run + logf(l_run);
    }
}

// Register budgets: left to itself, ptxas aims d128/d256 at 4 blocks per SM (64 registers) and
// d512 at 128 registers, and spilled the running max and sum on sm_80. The score loop is unrolled
// by 4 (not fully) to keep its live set small; d256 asks for 2 blocks per SM (its shared memory
// allows 2-3 anyway) and d512, which fits one block per SM by shared memory, gets up to 168.
// `kernels compile` reports 0 spills on sm_80 and sm_90 with these.
extern "C" __global__ void __launch_bounds__(256)
    attn_fwd_d64(AttnGeom g, const float* q, const float* k, const float* v, float* o, float* lse) {
    attn_fwd_impl<64>(g, q, k, v, o, lse);
}
extern "C" __global__ void __launch_bounds__(256)
    attn_fwd_d128(AttnGeom g, const float* q, const float* k, const float* v, float* o, float* lse) {
    attn_fwd_impl<128>(g, q, k, v, o, lse);
}
extern "C" __global__ void __launch_bounds__(256, 2)
    attn_fwd_d256(AttnGeom g, const float* q, const float* k, const float* v, float* o, float* lse) {
    attn_fwd_impl<256>(g, q, k, v, o, lse);
}
extern "C" __global__ void __maxnreg__(168)
    attn_fwd_d512(AttnGeom g, const float* q, const float* k, const float* v, float* o, float* lse) {
    attn_fwd_impl<512>(g, q, k, v, o, lse);
}
