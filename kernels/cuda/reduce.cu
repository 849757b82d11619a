// reduce.cu — sums and means: whole tensors (two deterministic passes), rows, and columns.
//
// Whole-tensor reductions: a `*_partial` kernel writes one f32 partial per block (grid of at most
// `partials` blocks, any multiple-of-32 block size), then `reduce_finalize` (one block of 256)
// adds the partials in f64 and writes out[0] = scale * sum (+ out[0] when `accumulate`).
// Mean = sum with scale 1/n. No atomics, so results are bit-reproducible.
#include "medvae_common.cuh"

extern "C" __global__ void reduce_sum_partial(const float* __restrict__ x, mv_i64 n, float* __restrict__ partial) {
    __shared__ float scratch[32];
    float acc = 0.0f;
    for (mv_i64 i = mv_global_tid(); i < n; i += mv_global_stride()) acc += x[i];
    acc = mv_block_sum(acc, scratch);
    if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}

// Sum of squares (gradient norms for the adaptive discriminator weight).
extern "C" __global__ void reduce_sumsq_partial(const float* __restrict__ x, mv_i64 n, float* __restrict__ partial) {
    __shared__ float scratch[32];
    float acc = 0.0f;
    for (mv_i64 i = mv_global_tid(); i < n; i += mv_global_stride()) acc += x[i] * x[i];
    acc = mv_block_sum(acc, scratch);
    if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}

// Count of NaN and infinite elements (as f32: exact below 2^24, and only "any" matters to
// callers); with reduce_finalize it turns a finiteness check into one scalar read back.
extern "C" __global__ void reduce_nonfinite_partial(const float* __restrict__ x, mv_i64 n, float* __restrict__ partial) {
    __shared__ float scratch[32];
    float acc = 0.0f;
    for (mv_i64 i = mv_global_tid(); i < n; i += mv_global_stride()) acc += isfinite(x[i]) ? 0.0f : 1.0f;
    acc = mv_block_sum(acc, scratch);
    if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}

// out[0] = scale * sum(partial[0..count]) (+ out[0] if accumulate). Launch: 1 block of 256.
extern "C" __global__ void reduce_finalize(const float* __restrict__ partial, int count, float* __restrict__ out,
                                           float scale, int accumulate) {
    __shared__ double scratch[32];
    double acc = 0.0;
    for (int i = threadIdx.x; i < count; i += blockDim.x) acc += (double)partial[i];
    acc = mv_block_sum_f64(acc, scratch);
    if (threadIdx.x == 0) {
        const float r = (float)(acc * (double)scale);
        out[0] = accumulate ? out[0] + r : r;
    }
}

// out[r] = scale * sum_c x[r, c] (+ out[r] if accumulate). Launch: one block (multiple of 32
// threads) per row, grid (rows).
extern "C" __global__ void reduce_rows(const float* __restrict__ x, int cols, float* __restrict__ out, float scale,
                                       int accumulate) {
    __shared__ float scratch[32];
    const float* row = x + (mv_i64)blockIdx.x * cols;
    float acc = 0.0f;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) acc += row[c];
    acc = mv_block_sum(acc, scratch);
    if (threadIdx.x == 0) {
        const float r = acc * scale;
        out[blockIdx.x] = accumulate ? out[blockIdx.x] + r : r;
    }
}

// out[c] += sum_r x[r, c] over a [rows, cols] matrix (bias gradients). Each block sums a chunk
// of `rows_per_block` rows for 32 columns and adds its result atomically.
// Launch: grid (ceil(cols/32), ceil(rows/rows_per_block)), block (32, 8).
extern "C" __global__ void reduce_cols_acc(const float* __restrict__ x, mv_i64 rows, int cols, int rows_per_block,
                                           float* __restrict__ out) {
    __shared__ float part[8][33];
    const int c = blockIdx.x * 32 + threadIdx.x;
    const mv_i64 r0 = (mv_i64)blockIdx.y * rows_per_block;
    const mv_i64 r1 = min(rows, r0 + rows_per_block);
    float acc = 0.0f;
    if (c < cols)
        for (mv_i64 r = r0 + threadIdx.y; r < r1; r += 8) acc += x[r * cols + c];
    part[threadIdx.y][threadIdx.x] = acc;
    __syncthreads();
    if (threadIdx.y == 0 && c < cols) {
        float s = 0.0f;
#pragma unroll
        for (int k = 0; k < 8; ++k) s += part[k][threadIdx.x];
        atomicAdd(out + c, s);
    }
}
