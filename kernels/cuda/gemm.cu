// gemm.cu — dense batched GEMM on tensor cores (TF32 or BF16 inputs, f32 accumulation), for
// linear layers (PyTorch weights [out, in]) and other plain matrix products.
//
//   C[b] = alpha * op(A[b]) * op(B[b]) + bias[n] + beta * C[b]       b = blockIdx.z
// Layout suffixes name how A and B are stored (row-major with leading dimension ld):
//   nn  A [M, K], B [K, N]      (e.g. linear backward-data: dx = dy * W)
//   nt  A [M, K], B [N, K]      (linear forward: y = x * W^T)
//   tn  A [K, M], B [K, N]      (linear weight gradient: dW += dy^T * x, with beta = 1)
// bias (length N) may be null; C is not read when beta == 0. Each matrix has its own batch
// stride (elements; 0 broadcasts one operand over the batch).
// Launch: grid (ceil(M/BM), ceil(N/BN), batch), block 256 (128x128) or 128 (64x64).
#include "medvae_gemm.cuh"
#include "medvae_igemm.cuh"

template <bool AK, bool BK>
struct GemmProb : GemmOperands<float> {
    static constexpr bool A_KMAJOR = AK, B_KMAJOR = BK;
    bool vec_a, vec_b;

    typedef int AFix;
    typedef int AMov;
    typedef int BFix;
    typedef int BMov;

    __device__ AFix a_fix(int r) const { return r; }
    __device__ AMov a_mov(int k) const { return k; }
    __device__ BFix b_fix(int r) const { return r; }
    __device__ BMov b_mov(int k) const { return k; }

    // Four consecutive elements along the contiguous direction of a row-major [rows, cols]
    // matrix with leading dimension ld, starting at (r, c0); zero outside [R, Cn).
    __device__ static void run(const float* p, int ld, int r, int c0, int R, int Cn, bool vec, float v[4]) {
        zero4(v);
        if (r >= R) return;
        const float* q = p + (mv_i64)r * ld + c0;
        if (vec) {
            if (c0 < Cn) load4(q, v);
        } else {
#pragma unroll
            for (int i = 0; i < 4; ++i)
                if (c0 + i < Cn) v[i] = q[i];
        }
    }
    // A(m, k): k-major = a[m*lda + k] (run along k); else a[k*lda + m] (run along m).
    __device__ void fetch_a(const AFix& m, const AMov& k, float v[4]) const {
        if (AK) run(a, lda, m, k, M, K, vec_a, v);
        else run(a, lda, k, m, K, M, vec_a, v);
    }
    // B(k, n): k-major = b[n*ldb + k] (run along k); else b[k*ldb + n] (run along n).
    __device__ void fetch_b(const BFix& n, const BMov& k, float v[4]) const {
        if (BK) run(b, ldb, n, k, N, K, vec_b, v);
        else run(b, ldb, k, n, K, N, vec_b, v);
    }
};

template <int PREC, int BM, int BN, int WM, int WN, bool AK, bool BK>
__device__ __forceinline__ void gemm_impl(const GemmGeom& g, const float* a, const float* b, const float* bias,
                                          float* c) {
    GemmProb<AK, BK> pb;
    pb.bind(g, a, b, bias, c);
    // A run of four is one aligned float4 when rows are 16-byte aligned and the contiguous
    // extent is a multiple of 4 (so a run never straddles the edge).
    const int a_contig = AK ? g.k : g.m, b_contig = BK ? g.k : g.n;
    pb.vec_a = (g.lda % 4 == 0) && (a_contig % 4 == 0) && (g.sa % 4 == 0) && aligned16(a);
    pb.vec_b = (g.ldb % 4 == 0) && (b_contig % 4 == 0) && (g.sb % 4 == 0) && aligned16(b);
    const int kt = (g.k + IgemmPrec<PREC>::BK - 1) / IgemmPrec<PREC>::BK;
    igemm_run<PREC, BM, BN, WM, WN>(pb, 0, kt);
}

// ------------------------------------------------------------------ entry points
extern "C" __global__ void __launch_bounds__(256)
    gemm_tf32_128x128_nn(GemmGeom g, const float* a, const float* b, const float* bias, float* c) {
    gemm_impl<MV_PREC_TF32, 128, 128, 2, 4, true, false>(g, a, b, bias, c);
}
extern "C" __global__ void __launch_bounds__(256)
    gemm_tf32_128x128_nt(GemmGeom g, const float* a, const float* b, const float* bias, float* c) {
    gemm_impl<MV_PREC_TF32, 128, 128, 2, 4, true, true>(g, a, b, bias, c);
}
extern "C" __global__ void __launch_bounds__(256)
    gemm_tf32_128x128_tn(GemmGeom g, const float* a, const float* b, const float* bias, float* c) {
    gemm_impl<MV_PREC_TF32, 128, 128, 2, 4, false, false>(g, a, b, bias, c);
}
extern "C" __global__ void __launch_bounds__(128)
    gemm_tf32_64x64_nn(GemmGeom g, const float* a, const float* b, const float* bias, float* c) {
    gemm_impl<MV_PREC_TF32, 64, 64, 2, 2, true, false>(g, a, b, bias, c);
}
extern "C" __global__ void __launch_bounds__(128)
    gemm_tf32_64x64_nt(GemmGeom g, const float* a, const float* b, const float* bias, float* c) {
    gemm_impl<MV_PREC_TF32, 64, 64, 2, 2, true, true>(g, a, b, bias, c);
}
extern "C" __global__ void __launch_bounds__(128)
    gemm_tf32_64x64_tn(GemmGeom g, const float* a, const float* b, const float* bias, float* c) {
    gemm_impl<MV_PREC_TF32, 64, 64, 2, 2, false, false>(g, a, b, bias, c);
}
extern "C" __global__ void __launch_bounds__(256)
    gemm_bf16_128x128_nn(GemmGeom g, const float* a, const float* b, const float* bias, float* c) {
    gemm_impl<MV_PREC_BF16, 128, 128, 2, 4, true, false>(g, a, b, bias, c);
}
extern "C" __global__ void __launch_bounds__(256)
    gemm_bf16_128x128_nt(GemmGeom g, const float* a, const float* b, const float* bias, float* c) {
    gemm_impl<MV_PREC_BF16, 128, 128, 2, 4, true, true>(g, a, b, bias, c);
}
extern "C" __global__ void __launch_bounds__(256)
    gemm_bf16_128x128_tn(GemmGeom g, const float* a, const float* b, const float* bias, float* c) {
    gemm_impl<MV_PREC_BF16, 128, 128, 2, 4, false, false>(g, a, b, bias, c);
}
extern "C" __global__ void __launch_bounds__(128)
    gemm_bf16_64x64_nn(GemmGeom g, const float* a, const float* b, const float* bias, float* c) {
    gemm_impl<MV_PREC_BF16, 64, 64, 2, 2, true, false>(g, a, b, bias, c);
}
extern "C" __global__ void __launch_bounds__(128)
    gemm_bf16_64x64_nt(GemmGeom g, const float* a, const float* b, const float* bias, float* c) {
    gemm_impl<MV_PREC_BF16, 64, 64, 2, 2, true, true>(g, a, b, bias, c);
}
extern "C" __global__ void __launch_bounds__(128)
    gemm_bf16_64x64_tn(GemmGeom g, const float* a, const float* b, const float* bias, float* c) {
    gemm_impl<MV_PREC_BF16, 64, 64, 2, 2, false, false>(g, a, b, bias, c);
}
