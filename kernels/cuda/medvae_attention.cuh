// medvae_attention.cuh — geometry and tile helpers shared by the flash-attention kernels.
//
// Single- or multi-head attention softmax(scale * Q K^T) V without materialising the
// tq x tk score matrix. q, k, v, o are row-major token matrices with row strides ldq.. (in
// elements) and batch strides bsq..; head h of a row occupies columns [h*d, (h+1)*d), so a packed
// [B, T, 3*C] qkv buffer or separate [B, T, C] tensors both work. lse (log-sum-exp of the scaled
// scores per query, saved by the forward for the backward) is [batch, heads, tq] contiguous.
// Requirements (checked by the host): d % 4 == 0, every ld % 4 == 0, 16-byte aligned bases,
// d <= DMAX of the chosen entry point.
#pragma once
#include "medvae_common.cuh"

// Must match `AttnGeom` on the Rust side (#[repr(C)], 72 bytes: nine ints, the float, then the
// 64-bit strides at offset 40).
struct AttnGeom {
    int batch, heads, tq, tk, d;
    int ldq, ldk, ldv, ldo;
    float scale;
    mv_i64 bsq, bsk, bsv, bso;
};

// Copy `rows` rows of d floats starting at token row0 (rows at or past `valid` are zero-filled)
// from a strided token matrix into shared memory with row stride `sstride`, by cp.async.
// The caller commits and waits.
__device__ __forceinline__ void attn_load_rows(float* sm, int sstride, const float* g, int ld, int row0, int valid,
                                               int rows, int d) {
    const int per_row = d >> 2, total = rows * per_row;
    for (int idx = threadIdx.x; idx < total; idx += blockDim.x) {
        const int r = idx / per_row, c = (idx - r * per_row) * 4;
        const bool ok = row0 + r < valid;
        const float* src = ok ? g + (mv_i64)(row0 + r) * ld + c : g;
        mv_cp_async16(sm + r * sstride + c, src, ok);
    }
}
