// medvae_gemm.cuh — the geometry of a dense batched GEMM, shared by gemm.cu, gemm_bf16.cu and gemm_tf32.cu.
//
//   C[b] = alpha * op(A[b]) * op(B[b]) + bias[n] + beta * C[b]       b = blockIdx.z
// Row-major matrices with leading dimensions lda, ldb, ldc and batch strides sa, sb, sc (in
// elements; 0 broadcasts one operand over the batch).
#pragma once
#include "medvae_common.cuh"

// Must match `GemmGeom` on the Rust side (#[repr(C)], 56 bytes).
struct GemmGeom {
    int m, n, k;
    int lda, ldb, ldc;
    float alpha, beta;
    mv_i64 sa, sb, sc;
};

// What every GEMM problem class holds (operands of element type T), bound to batch entry
// blockIdx.z, with the shared epilogue.
template <class T>
struct GemmOperands {
    typedef T Elem;
    const T* a;
    const T* b;
    const float* bias;
    float* c;
    int M, N, K, lda, ldb, ldc;
    float alpha, beta;

    __device__ void bind(const GemmGeom& g, const T* a0, const T* b0, const float* bias0, float* c0) {
        const mv_i64 z = blockIdx.z;
        a = a0 + z * g.sa;
        b = b0 + z * g.sb;
        c = c0 + z * g.sc;
        bias = bias0;
        M = g.m;
        N = g.n;
        K = g.k;
        lda = g.lda;
        ldb = g.ldb;
        ldc = g.ldc;
        alpha = g.alpha;
        beta = g.beta;
    }
    __device__ void store(int m, int n, float acc) const {
        mv_store_out(c + (mv_i64)m * ldc + n, alpha * acc, bias ? bias + n : nullptr, beta);
    }
};
