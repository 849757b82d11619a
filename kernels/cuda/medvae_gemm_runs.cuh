// medvae_gemm_runs.cuh — the dense batched GEMM as a problem class of the streamed main loops
// (medvae_igemm_bf16.cuh on bf16 operands: gemm_bf16.cu; medvae_igemm_tf32.cuh on f32 operands:
// gemm_tf32.cu). Every 16-byte run of an operand (eight bf16 or four f32) lies along its
// contiguous side (k for a k-major operand, the rows otherwise), walked by MatrixRuns; the
// launcher sends only products whose contiguous extents, leading dimensions, batch strides and
// offsets keep every run inside its row.
#pragma once
#include "medvae_gemm.cuh"
#include "medvae_igemm_streamed.cuh"

template <class E, bool AK, bool BK>
struct GemmRunsProb : GemmOperands<E> {
    static constexpr bool A_KMAJOR = AK, B_KMAJOR = BK;

    // A(m, k): k-major = a[m*lda + k..], else a[k*lda + m..], a run of 16 bytes.
    template <int R>
    using AIt = MatrixRuns<AK, R>;
    template <int R>
    __device__ void a_begin(AIt<R>& it, const int (&fixed)[R], const int (&k)[R]) const {
        it.begin(this->lda, fixed, k);
    }
    template <int R>
    __device__ bool a_src(const AIt<R>& it, int j, const E*& src) const {
        return AK ? it.src(this->a, this->M, this->K, j, src) : it.src(this->a, this->K, this->M, j, src);
    }
    template <int R>
    __device__ void a_next(AIt<R>& it, int bk) const {
        it.next(this->lda, bk);
    }
    // B(k, n): k-major = b[n*ldb + k..], else b[k*ldb + n..].
    template <int R>
    using BIt = MatrixRuns<BK, R>;
    template <int R>
    __device__ void b_begin(BIt<R>& it, const int (&fixed)[R], const int (&k)[R]) const {
        it.begin(this->ldb, fixed, k);
    }
    template <int R>
    __device__ bool b_src(const BIt<R>& it, int j, const E*& src) const {
        return BK ? it.src(this->b, this->N, this->K, j, src) : it.src(this->b, this->K, this->N, j, src);
    }
    template <int R>
    __device__ void b_next(BIt<R>& it, int bk) const {
        it.next(this->ldb, bk);
    }
};

template <bool AK, bool BK>
using GemmProb16 = GemmRunsProb<mv_u16, AK, BK>;
