// medvae_gemm.cuh — the geometry of a dense batched GEMM, shared by gemm.cu and gemm_bf16.cu.
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
