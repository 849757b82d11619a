// gemm_f32.cu — dense batched GEMM in plain f32 on the CUDA cores (no tensor cores): the FP32
// precision of the GEMM launchers, so that linear layers at the default precision compare with
// the CPU to f32 rounding, as the direct convolution kernels do.
//
//   C[b] = alpha * op(A[b]) * op(B[b]) + bias[n] + beta * C[b]       b = blockIdx.z
// Layouts as in gemm.cu: nn A [M, K], B [K, N]; nt A [M, K], B [N, K]; tn A [K, M], B [K, N].
// Launch: grid (ceil(M/64), ceil(N/64), batch), block 256: a 64x64 tile per block, 4x4 outputs
// per thread, k-tiles of 16 staged in shared memory (loads coalesced along each operand's
// contiguous side).
#include "medvae_gemm.cuh"

#define MV_F32_TILE 64
#define MV_F32_BK 16

template <bool AK, bool BK>
__device__ __forceinline__ void gemm_f32_impl(const GemmGeom& g, const float* a, const float* b, const float* bias,
                                              float* c) {
    __shared__ float As[MV_F32_BK][MV_F32_TILE + 1];  // [k][m]
    __shared__ float Bs[MV_F32_BK][MV_F32_TILE + 1];  // [k][n]
    const mv_i64 z = blockIdx.z;
    a += z * g.sa;
    b += z * g.sb;
    c += z * g.sc;
    const int m0 = blockIdx.x * MV_F32_TILE, n0 = blockIdx.y * MV_F32_TILE;
    const int tid = threadIdx.x;
    const int tm = (tid / 16) * 4, tn = (tid % 16) * 4;
    float acc[4][4];
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = 0.0f;

    for (int k0 = 0; k0 < g.k; k0 += MV_F32_BK) {
        for (int e = tid; e < MV_F32_TILE * MV_F32_BK; e += 256) {
            // A(m, k): consecutive threads along k when A is [M, K], along m when it is [K, M].
            const int am = AK ? e / MV_F32_BK : e % MV_F32_TILE;
            const int ak = AK ? e % MV_F32_BK : e / MV_F32_TILE;
            const int m = m0 + am, ka = k0 + ak;
            float va = 0.0f;
            if (m < g.m && ka < g.k) va = AK ? a[(mv_i64)m * g.lda + ka] : a[(mv_i64)ka * g.lda + m];
            As[ak][am] = va;
            // B(k, n): along n when B is [K, N], along k when it is [N, K].
            const int bn = BK ? e / MV_F32_BK : e % MV_F32_TILE;
            const int bk = BK ? e % MV_F32_BK : e / MV_F32_TILE;
            const int n = n0 + bn, kb = k0 + bk;
            float vb = 0.0f;
            if (n < g.n && kb < g.k) vb = BK ? b[(mv_i64)n * g.ldb + kb] : b[(mv_i64)kb * g.ldb + n];
            Bs[bk][bn] = vb;
        }
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < MV_F32_BK; ++kk) {
            float av[4], bv[4];
#pragma unroll
            for (int i = 0; i < 4; ++i) av[i] = As[kk][tm + i];
#pragma unroll
            for (int j = 0; j < 4; ++j) bv[j] = Bs[kk][tn + j];
#pragma unroll
            for (int i = 0; i < 4; ++i)
#pragma unroll
                for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(av[i], bv[j], acc[i][j]);
        }
        __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const int m = m0 + tm + i, n = n0 + tn + j;
            if (m < g.m && n < g.n)
                mv_store_out(c + (mv_i64)m * g.ldc + n, g.alpha * acc[i][j], bias ? bias + n : nullptr, g.beta);
        }
}

// ------------------------------------------------------------------ entry points
extern "C" __global__ void __launch_bounds__(256)
    gemm_f32_nn(GemmGeom g, const float* a, const float* b, const float* bias, float* c) {
    gemm_f32_impl<true, false>(g, a, b, bias, c);
}
extern "C" __global__ void __launch_bounds__(256)
    gemm_f32_nt(GemmGeom g, const float* a, const float* b, const float* bias, float* c) {
    gemm_f32_impl<true, true>(g, a, b, bias, c);
}
extern "C" __global__ void __launch_bounds__(256)
    gemm_f32_tn(GemmGeom g, const float* a, const float* b, const float* bias, float* c) {
    gemm_f32_impl<false, false>(g, a, b, bias, c);
}
