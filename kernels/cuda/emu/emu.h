// emu.h — run medvae-fast's CUDA C kernels on the CPU, for logic checks without a GPU.
//
// Every CUDA thread of a block is a fiber (ucontext) on one OS thread; blocks run one after
// another. __syncthreads() and warp-level operations (shuffles, mma.sync) are barriers the
// scheduler releases once every live thread (or lane) has reached them, so shared-memory tiling,
// reductions and tensor-core fragment layouts are exercised exactly as written. A barrier that
// cannot be released (divergent __syncthreads, a warp op with exited lanes) aborts with a message.
//
// What it cannot check: timing, races between *different* blocks (blocks are sequential),
// cp.async asynchrony (copies complete at once), and anything the emulated mma layout gets wrong
// in the same way as the kernel (the layout here is transcribed from the PTX ISA independently).
//
// `__shared__` becomes `static`: each block starts with the previous block's contents, so a
// kernel that reads shared memory before writing it is not caught. Dynamic shared memory is
// refilled with 0xFF bytes (NaN) before every block.
#pragma once
#include <ucontext.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__
#define __launch_bounds__(...)
#define __maxnreg__(...)
#define __shared__ static
#define __align__(n) __attribute__((aligned(n)))

struct dim3 {
    unsigned x, y, z;
    dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct alignas(16) float4 {
    float x, y, z, w;
};
struct alignas(8) float2 {
    float x, y;
};
inline float4 make_float4(float x, float y, float z, float w) { return float4{x, y, z, w}; }
inline float2 make_float2(float x, float y) { return float2{x, y}; }

namespace emu {

enum State { RUNNABLE, AT_BARRIER, AT_WARP, DONE };

struct Thread {
    ucontext_t ctx;
    dim3 tid;
    int linear = 0;
    State st = RUNNABLE;
    std::vector<char> stack;
};

struct Ctx {
    std::vector<Thread> threads;
    Thread* cur = nullptr;
    ucontext_t sched;
    std::function<void()> body;
    std::vector<unsigned char> dyn;
    // Per-warp exchange slots: 32 lanes x 16 words.
    std::vector<uint32_t> slots;
    dim3 blockIdx, blockDim, gridDim;
    size_t stack_bytes = 192 * 1024;
    long long barriers = 0;
};
inline Ctx& ctx() {
    static Ctx c;
    return c;
}

[[noreturn]] inline void die(const char* msg) {
    std::fprintf(stderr, "emu: %s (block %u,%u,%u)\n", msg, ctx().blockIdx.x, ctx().blockIdx.y,
                 ctx().blockIdx.z);
    std::abort();
}

inline unsigned char* dyn_smem() { return ctx().dyn.data(); }

inline void trampoline() {
    Ctx& c = ctx();
    c.body();
    c.cur->st = DONE;
    swapcontext(&c.cur->ctx, &c.sched);
}

inline void yield_as(State s) {
    Ctx& c = ctx();
    c.cur->st = s;
    Thread* me = c.cur;
    swapcontext(&me->ctx, &c.sched);
    c.cur = me;
}

inline int lane_id() { return ctx().cur->linear & 31; }
inline int warp_id() { return ctx().cur->linear >> 5; }
inline uint32_t* lane_slot(int warp, int lane) { return &ctx().slots[((size_t)warp * 32 + lane) * 16]; }

// One scheduling pass until the block finishes; releases barriers when complete.
inline void run_block() {
    Ctx& c = ctx();
    const int n = (int)c.threads.size();
    for (;;) {
        bool any = false;
        for (int i = 0; i < n; ++i) {
            Thread& t = c.threads[i];
            if (t.st != RUNNABLE) continue;
            any = true;
            c.cur = &t;
            swapcontext(&c.sched, &t.ctx);
        }
        if (any) continue;
        int done = 0, bar = 0, warp = 0;
        for (auto& t : c.threads) {
            done += t.st == DONE;
            bar += t.st == AT_BARRIER;
            warp += t.st == AT_WARP;
        }
        if (done == n) return;
        if (warp > 0) {
            // Release every warp whose live lanes are all at the warp barrier.
            bool released = false;
            const int nwarps = (n + 31) / 32;
            for (int w = 0; w < nwarps; ++w) {
                int live = 0, at = 0, exited = 0;
                for (int l = w * 32; l < std::min(n, w * 32 + 32); ++l) {
                    State s = c.threads[l].st;
                    live += s != DONE;
                    at += s == AT_WARP;
                    exited += s == DONE;
                }
                if (at > 0 && at == live) {
                    if (exited) die("warp-synchronous op with exited lanes");
                    for (int l = w * 32; l < std::min(n, w * 32 + 32); ++l) c.threads[l].st = RUNNABLE;
                    released = true;
                }
            }
            if (released) continue;
            die("deadlock: warp op with lanes waiting at __syncthreads");
        }
        if (bar > 0) {
            if (bar + done != n) die("deadlock");
            if (done > 0) die("__syncthreads reached while some threads exited");
            c.barriers++;
            for (auto& t : c.threads) t.st = RUNNABLE;
            continue;
        }
        die("scheduler stuck");
    }
}

inline void launch(dim3 grid, dim3 block, size_t dyn_bytes, std::function<void()> body) {
    Ctx& c = ctx();
    const int n = (int)(block.x * block.y * block.z);
    c.gridDim = grid;
    c.blockDim = block;
    c.body = std::move(body);
    c.threads.resize(n);
    c.slots.assign((size_t)((n + 31) / 32) * 32 * 16, 0);
    for (auto& t : c.threads)
        if (t.stack.size() != c.stack_bytes) t.stack.assign(c.stack_bytes, 0);
    c.dyn.assign(dyn_bytes + 16, 0xFF);
    for (unsigned bz = 0; bz < grid.z; ++bz)
        for (unsigned by = 0; by < grid.y; ++by)
            for (unsigned bx = 0; bx < grid.x; ++bx) {
                c.blockIdx = dim3(bx, by, bz);
                std::fill(c.dyn.begin(), c.dyn.end(), 0xFF);
                for (int i = 0; i < n; ++i) {
                    Thread& t = c.threads[i];
                    t.linear = i;
                    t.tid = dim3(i % block.x, (i / block.x) % block.y, i / (block.x * block.y));
                    t.st = RUNNABLE;
                    getcontext(&t.ctx);
                    t.ctx.uc_stack.ss_sp = t.stack.data();
                    t.ctx.uc_stack.ss_size = t.stack.size();
                    t.ctx.uc_link = nullptr;
                    makecontext(&t.ctx, (void (*)())trampoline, 0);
                }
                run_block();
            }
}

inline void syncthreads() { yield_as(AT_BARRIER); }
inline void syncwarp() { yield_as(AT_WARP); }

template <class T>
inline T shfl_from(T v, int src) {
    static_assert(sizeof(T) <= 64, "slot too small");
    const int w = warp_id(), l = lane_id();
    std::memcpy(lane_slot(w, l), &v, sizeof(T));
    syncwarp();
    T r;
    std::memcpy(&r, lane_slot(w, src & 31), sizeof(T));
    syncwarp();
    return r;
}

inline float round_tf32(float x) {
    uint32_t u;
    std::memcpy(&u, &x, 4);
    if ((u & 0x7f800000u) != 0x7f800000u) {
        u += 0x1000u;  // ties away from zero on the magnitude
        u &= 0xffffe000u;
    }
    float r;
    std::memcpy(&r, &u, 4);
    return r;
}
inline float f32_of(uint32_t u) {
    float r;
    std::memcpy(&r, &u, 4);
    return r;
}

// mma.sync emulation. Owners of each matrix element are transcribed from the PTX ISA tables.
inline void mma_tf32_16x8x8(float c[4], const uint32_t a[4], const uint32_t b[2]) {
    const int w = warp_id(), l = lane_id();
    uint32_t* s = lane_slot(w, l);
    for (int i = 0; i < 4; ++i) s[i] = a[i];
    for (int i = 0; i < 2; ++i) s[4 + i] = b[i];
    syncwarp();
    auto A = [&](int row, int k) {
        int lane = (row % 8) * 4 + (k % 4);
        int reg = (row >= 8 ? 1 : 0) + (k >= 4 ? 2 : 0);
        return f32_of(lane_slot(w, lane)[reg] & 0xffffe000u);
    };
    auto B = [&](int k, int n) {
        int lane = n * 4 + (k % 4);
        int reg = k >= 4 ? 1 : 0;
        return f32_of(lane_slot(w, lane)[4 + reg] & 0xffffe000u);
    };
    float d[4];
    for (int i = 0; i < 4; ++i) {
        int row = l / 4 + (i >= 2 ? 8 : 0), col = (l % 4) * 2 + (i & 1);
        float acc = c[i];
        for (int k = 0; k < 8; ++k) acc += A(row, k) * B(k, col);
        d[i] = acc;
    }
    syncwarp();
    for (int i = 0; i < 4; ++i) c[i] = d[i];
}

inline void mma_bf16_16x8x16(float c[4], const uint32_t a[4], const uint32_t b[2]) {
    const int w = warp_id(), l = lane_id();
    uint32_t* s = lane_slot(w, l);
    for (int i = 0; i < 4; ++i) s[i] = a[i];
    for (int i = 0; i < 2; ++i) s[4 + i] = b[i];
    syncwarp();
    auto half = [](uint32_t word, int hi) { return f32_of((hi ? (word >> 16) : (word & 0xffffu)) << 16); };
    auto A = [&](int row, int k) {
        int lane = (row % 8) * 4 + (k % 8) / 2;
        int reg = (row >= 8 ? 1 : 0) + (k >= 8 ? 2 : 0);
        return half(lane_slot(w, lane)[reg], k & 1);
    };
    auto B = [&](int k, int n) {
        int lane = n * 4 + (k % 8) / 2;
        int reg = k >= 8 ? 1 : 0;
        return half(lane_slot(w, lane)[4 + reg], k & 1);
    };
    float d[4];
    for (int i = 0; i < 4; ++i) {
        int row = l / 4 + (i >= 2 ? 8 : 0), col = (l % 4) * 2 + (i & 1);
        float acc = c[i];
        for (int k = 0; k < 16; ++k) acc += A(row, k) * B(k, col);
        d[i] = acc;
    }
    syncwarp();
    for (int i = 0; i < 4; ++i) c[i] = d[i];
}

// ldmatrix.m8n8.x4 emulation, transcribed from the PTX ISA: lane l gives the address of row
// l % 8 of matrix l / 8; register q receives row l/4, elements 2(l%4) and +1 of matrix q (with
// `trans`, column l/4, rows 2(l%4) and +1). Every address must be 16-byte aligned.
inline void ldmatrix_x4(uint32_t r[4], const void* row, bool trans) {
    const int w = warp_id(), l = lane_id();
    if (reinterpret_cast<uintptr_t>(row) % 16 != 0) die("ldmatrix row address not 16-byte aligned");
    std::memcpy(lane_slot(w, l), &row, sizeof row);
    syncwarp();
    auto row_of = [&](int lane) {
        const void* q;
        std::memcpy(&q, lane_slot(w, lane), sizeof q);
        return static_cast<const uint16_t*>(q);
    };
    uint32_t out[4];
    for (int q = 0; q < 4; ++q) {
        uint16_t lo, hi;
        if (!trans) {
            const uint16_t* p = row_of(q * 8 + l / 4);
            lo = p[2 * (l % 4)];
            hi = p[2 * (l % 4) + 1];
        } else {
            lo = row_of(q * 8 + 2 * (l % 4))[l / 4];
            hi = row_of(q * 8 + 2 * (l % 4) + 1)[l / 4];
        }
        out[q] = (uint32_t)lo | ((uint32_t)hi << 16);
    }
    syncwarp();
    for (int q = 0; q < 4; ++q) r[q] = out[q];
}

// wgmma.mma_async m64n128k16 (bf16 in, f32 accumulate) emulation: operands straight from
// shared memory through their descriptors, with the 128-byte swizzle (the only mode the kernels
// use), transcribed from the PTX ISA: start address, leading and stride byte offsets in bits
// 0-13, 16-29 and 32-45 (16-byte units), swizzle mode in bits 62-63. Canonical layouts, for
// element (r, k) of a 64- (A) or 128-row (B) operand:
//   K-major (trans 0):  start + (r / 8) * SBO + (r % 8) * 128 + 2k               (LBO unused)
//   MN-major (trans 1): start + (r / 64) * LBO + (k / 8) * SBO + (k % 8) * 128 + 2 (r % 64)
// then address bits 4-6 XOR bits 7-9. Thread (warp w of its warpgroup, lane = 4g + t) holds rows
// 16w + g (+8) and columns 8j + 2t (+1) as d[4j + e]. The copy completes at once (no asynchrony
// to emulate).
inline void wgmma_m64n128k16_bf16(float* d, uint64_t da, uint64_t db, bool a_mn, bool b_mn) {
    auto elem = [](uint64_t desc, bool mn, int r, int k) {
        if ((desc >> 62) != 1) die("wgmma emulation: only the 128-byte swizzle is transcribed");
        const uint32_t start = (uint32_t)(desc & 0x3FFFu) << 4, lbo = (uint32_t)((desc >> 16) & 0x3FFFu) << 4,
                       sbo = (uint32_t)((desc >> 32) & 0x3FFFu) << 4;
        uint32_t addr = mn ? start + (uint32_t)(r / 64) * lbo + (uint32_t)(k / 8) * sbo + (uint32_t)(k % 8) * 128 +
                                 (uint32_t)(r % 64) * 2
                           : start + (uint32_t)(r / 8) * sbo + (uint32_t)(r % 8) * 128 + (uint32_t)k * 2;
        addr ^= ((addr >> 7) & 7u) << 4;
        if (addr + 2 > ctx().dyn.size()) die("wgmma operand outside dynamic shared memory");
        uint16_t h;
        std::memcpy(&h, dyn_smem() + addr, 2);
        return f32_of((uint32_t)h << 16);
    };
    const int l = lane_id(), w = warp_id() & 3, g = l / 4, t = l % 4;
    for (int j = 0; j < 16; ++j)
        for (int e = 0; e < 4; ++e) {
            const int row = 16 * w + g + (e >= 2 ? 8 : 0), col = 8 * j + 2 * t + (e & 1);
            float acc = d[4 * j + e];
            for (int k = 0; k < 16; ++k) acc += elem(da, a_mn, row, k) * elem(db, b_mn, col, k);
            d[4 * j + e] = acc;
        }
}

}  // namespace emu

#define threadIdx (emu::ctx().cur->tid)
#define blockIdx (emu::ctx().blockIdx)
#define blockDim (emu::ctx().blockDim)
#define gridDim (emu::ctx().gridDim)

inline void __syncthreads() { emu::syncthreads(); }
inline void __syncwarp(unsigned = 0xffffffffu) { emu::syncwarp(); }
template <class T>
inline T __shfl_xor_sync(unsigned, T v, int m, int = 32) {
    return emu::shfl_from(v, emu::lane_id() ^ m);
}
template <class T>
inline T __shfl_sync(unsigned, T v, int src, int width = 32) {
    return emu::shfl_from(v, (emu::lane_id() & ~(width - 1)) + (src % width));
}
template <class T>
inline T __shfl_down_sync(unsigned, T v, unsigned d, int width = 32) {
    int l = emu::lane_id(), seg = l & ~(width - 1);
    int src = (l - seg + (int)d < width) ? l + (int)d : l;
    return emu::shfl_from(v, src);
}

inline unsigned __float_as_uint(float f) {
    unsigned u;
    std::memcpy(&u, &f, 4);
    return u;
}
inline float __uint_as_float(unsigned u) {
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}
inline int __float_as_int(float f) { return (int)__float_as_uint(f); }
inline float __int_as_float(int i) { return __uint_as_float((unsigned)i); }
inline float __expf(float x) { return std::exp(x); }
inline float __logf(float x) { return std::log(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline double rsqrt(double x) { return 1.0 / std::sqrt(x); }
inline float __saturatef(float x) { return std::min(1.0f, std::max(0.0f, x)); }
template <class T>
inline T __ldg(const T* p) { return *p; }
inline float atomicAdd(float* p, float v) {
    float o = *p;
    *p = o + v;
    return o;
}
inline double atomicAdd(double* p, double v) {
    double o = *p;
    *p = o + v;
    return o;
}
inline int atomicAdd(int* p, int v) {
    int o = *p;
    *p = o + v;
    return o;
}
inline unsigned atomicAdd(unsigned* p, unsigned v) {
    unsigned o = *p;
    *p = o + v;
    return o;
}
// CUDA's math functions live in the global namespace.
using std::isfinite;
using std::max;
using std::min;
inline long long min(long long a, int b) { return std::min(a, (long long)b); }
inline long long max(long long a, int b) { return std::max(a, (long long)b); }

// Launch helper: EMU_LAUNCH(kernel, grid, block, smem, args...)
#define EMU_LAUNCH(kern, grid, block, smem, ...) \
    emu::launch((grid), (block), (smem), [&]() { kern(__VA_ARGS__); })
