// gemm_bf16.cu — dense batched GEMM on bf16 operands: the cp.async-pipelined main loop of
// medvae_igemm_bf16.cuh, for the products of gemm.cu whose extents allow 16-byte runs.
//
//   C[b] = alpha * op(A[b]) * op(B[b]) + bias[n] + beta * C[b]       b = blockIdx.z
// with A and B already rounded to bf16 (cvt_f32_bf16 of conv_bf16.cu) and C in f32. Layouts as
// in gemm.cu: nn A [M, K], B [K, N]; nt A [M, K], B [N, K]; tn A [K, M], B [K, N] (row-major,
// leading dimensions lda, ldb, ldc; batch strides sa, sb, sc in elements). The launcher uses
// these kernels only when every run of eight elements along a contiguous side stays inside
// its row: the contiguous extents, the leading dimensions, the batch strides and the offsets
// are multiples of 8.
// Launch: grid (ceil(M/BM), ceil(N/BN), batch), block 256 (128x128) or 128 (64x64); dynamic
// shared memory 4 stages x (A tile + B tile) x 2 bytes.
#include "medvae_gemm.cuh"
#include "medvae_igemm_bf16.cuh"

template <bool AK, bool BK>
struct GemmProb16 : GemmOperands<mv_u16> {
    static constexpr bool A_KMAJOR = AK, B_KMAJOR = BK;

    // The runs of a thread in a row-major matrix: eight consecutive columns each. Along k when
    // k is the column (the runs share the column, k, and each has its own row), else along the
    // rows (they share their eight columns and each walks its own k-row).
    template <int R>
    struct Runs {
        static constexpr int RUNS = R;
        int col;
        int row[R];
    };
    template <bool KMAJOR, int R>
    __device__ static void runs_begin(Runs<R>& it, const int (&fixed)[R], const int (&k)[R]) {
        it.col = KMAJOR ? k[0] : fixed[0];
#pragma unroll
        for (int j = 0; j < R; ++j) it.row[j] = KMAJOR ? fixed[j] : k[j];
    }
    // Run j's address in the [rows, cols] matrix p with leading dimension ld; false (zero fill)
    // outside it.
    template <int R>
    __device__ static bool runs_src(const mv_u16* p, int ld, const Runs<R>& it, int j, int rows, int cols,
                                    const mv_u16*& src) {
        const bool ok = (it.row[j] < rows) & (it.col < cols);
        src = ok ? p + (mv_i64)it.row[j] * ld + it.col : p;
        return ok;
    }
    template <bool KMAJOR, int R>
    __device__ static void runs_next(Runs<R>& it, int bk) {
        if (KMAJOR) {
            it.col += bk;
        } else {
#pragma unroll
            for (int j = 0; j < R; ++j) it.row[j] += bk;
        }
    }
    // A(m, k): k-major = a[m*lda + k..k+7]; else a[k*lda + m..m+7].
    template <int R>
    using AIt = Runs<R>;
    template <int R>
    __device__ void a_begin(AIt<R>& it, const int (&fixed)[R], const int (&k)[R]) const {
        runs_begin<AK>(it, fixed, k);
    }
    template <int R>
    __device__ bool a_src(const AIt<R>& it, int j, const mv_u16*& src) const {
        return AK ? runs_src(a, lda, it, j, M, K, src) : runs_src(a, lda, it, j, K, M, src);
    }
    template <int R>
    __device__ void a_next(AIt<R>& it, int bk) const {
        runs_next<AK>(it, bk);
    }
    // B(k, n): k-major = b[n*ldb + k..k+7]; else b[k*ldb + n..n+7].
    template <int R>
    using BIt = Runs<R>;
    template <int R>
    __device__ void b_begin(BIt<R>& it, const int (&fixed)[R], const int (&k)[R]) const {
        runs_begin<BK>(it, fixed, k);
    }
    template <int R>
    __device__ bool b_src(const BIt<R>& it, int j, const mv_u16*& src) const {
        return BK ? runs_src(b, ldb, it, j, N, K, src) : runs_src(b, ldb, it, j, K, N, src);
    }
    template <int R>
    __device__ void b_next(BIt<R>& it, int bk) const {
        runs_next<BK>(it, bk);
    }
};

template <int BM, int BN, int WM, int WN, bool AK, bool BK>
__device__ __forceinline__ void gemm16_impl(const GemmGeom& g, const mv_u16* a, const mv_u16* b,
                                            const float* bias, float* c) {
    GemmProb16<AK, BK> pb;
    pb.bind(g, a, b, bias, c);
    igemm_bf16_run<BM, BN, WM, WN, 4>(pb, 0, (g.k + MV_BK16 - 1) / MV_BK16);
}

// ------------------------------------------------------------------ entry points
extern "C" __global__ void __launch_bounds__(256)
    gemm_bf16s_128x128_nn(GemmGeom g, const mv_u16* a, const mv_u16* b, const float* bias, float* c) {
    gemm16_impl<128, 128, 2, 4, true, false>(g, a, b, bias, c);
}
extern "C" __global__ void __launch_bounds__(256)
    gemm_bf16s_128x128_nt(GemmGeom g, const mv_u16* a, const mv_u16* b, const float* bias, float* c) {
    gemm16_impl<128, 128, 2, 4, true, true>(g, a, b, bias, c);
}
extern "C" __global__ void __launch_bounds__(256)
    gemm_bf16s_128x128_tn(GemmGeom g, const mv_u16* a, const mv_u16* b, const float* bias, float* c) {
    gemm16_impl<128, 128, 2, 4, false, false>(g, a, b, bias, c);
}
extern "C" __global__ void __launch_bounds__(128)
    gemm_bf16s_64x64_nn(GemmGeom g, const mv_u16* a, const mv_u16* b, const float* bias, float* c) {
    gemm16_impl<64, 64, 2, 2, true, false>(g, a, b, bias, c);
}
extern "C" __global__ void __launch_bounds__(128)
    gemm_bf16s_64x64_nt(GemmGeom g, const mv_u16* a, const mv_u16* b, const float* bias, float* c) {
    gemm16_impl<64, 64, 2, 2, true, true>(g, a, b, bias, c);
}
extern "C" __global__ void __launch_bounds__(128)
    gemm_bf16s_64x64_tn(GemmGeom g, const mv_u16* a, const mv_u16* b, const float* bias, float* c) {
    gemm16_impl<64, 64, 2, 2, false, false>(g, a, b, bias, c);
}
