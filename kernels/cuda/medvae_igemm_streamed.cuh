// medvae_igemm_streamed.cuh — what the streamed tensor-core GEMM main loops share, whatever the
// operand type: the runs of a plain matrix (MatrixRuns), the cp.async issue of one k-tile
// (igemm_bf16_issue, also conv_wgmma.cu's) and the pipelined main loop itself
// (igemm_streamed_run). The operand type's tile layout, fragment loads and MMA come from a
// fragment class: Bf16Frags (medvae_igemm_bf16.cuh; runs of eight bf16, mma m16n8k16) or
// Tf32Frags (medvae_igemm_tf32.cuh; runs of four f32 rounded to TF32, mma m16n8k8), which
// provides
//   ELEM_BYTES, RUN (elements per 16-byte run), KSTEP (k of one mma);
//   template <bool KMAJ, int ROWS, int BK> Tile    STRIDE, ELEMS, RUNS_INNER of a stage's tile;
//   a_offset / b2_offset<KMAJ, ROWS, BK>(r0, k0, lane)   byte offsets of a lane's fragment
//                                         addresses (linear in r0 and k0);
//   load_a / load_b2<KMAJ, STRIDE>(f[4], saddr)   the A fragment, or the B fragments of two
//                                         adjacent 8-column tiles;
//   mma(c[4], a[4], b[2]).
// See medvae_igemm_bf16.cuh for the problem-class interface and the pipeline.
#pragma once
#include "medvae_common.cuh"

// The runs of one thread in a plain row-major matrix (leading dimension ld): eight consecutive
// columns each. Along k when k is the column (KMAJOR: the runs share that column and each has
// its own row), else along the rows (they share their eight columns and each walks its own
// k-row). The GEMMs' operands, and the convolutions' weights and output gradient, are such.
template <bool KMAJOR, int R>
struct MatrixRuns {
    static constexpr int RUNS = R;
    int col;
    int row[R];
    mv_i64 off[R];  // row[j] * ld + col, stepped with them rather than multiplied per k-tile

    __device__ void begin(int ld, const int (&fixed)[R], const int (&k)[R]) {
        col = KMAJOR ? k[0] : fixed[0];
#pragma unroll
        for (int j = 0; j < R; ++j) {
            row[j] = KMAJOR ? fixed[j] : k[j];
            off[j] = (mv_i64)row[j] * ld + col;
        }
    }
    // Run j's address in the [rows, cols] matrix p; false (zero fill) outside it.
    template <class E>
    __device__ bool src(const E* p, int rows, int cols, int j, const E*& s) const {
        const bool ok = (row[j] < rows) & (col < cols);
        s = p + (ok ? off[j] : 0);
        return ok;
    }
    __device__ void next(int ld, int bk) {
        const mv_i64 step = KMAJOR ? bk : (mv_i64)bk * ld;
        if (KMAJOR) {
            col += bk;
        } else {
#pragma unroll
            for (int j = 0; j < R; ++j) row[j] += bk;
        }
#pragma unroll
        for (int j = 0; j < R; ++j) off[j] += step;
    }
};

// Issue the cp.async copies of one k-tile: run j of A to shared address sa + j * A_STEP, of B
// to sb + j * B_STEP (bytes; zero-filled where the problem predicates the run off), then
// advance both iterators by bk. A thread's runs lie a constant step apart in every tile layout
// used (c = tid + j * threads), so one base register per operand serves them all. Shared with
// conv_wgmma.cu, whose tiles are laid out differently.
template <int A_STEP, int B_STEP, class Prob, class AIt, class BIt>
__device__ __forceinline__ void igemm_bf16_issue(const Prob& pb, AIt& ait, unsigned sa, BIt& bit, unsigned sb, int bk) {
#pragma unroll
    for (int j = 0; j < AIt::RUNS; ++j) {
        const typename Prob::Elem* src;
        const bool ok = pb.a_src(ait, j, src);
        mv_cp_async16_at(sa + j * A_STEP, src, ok);
    }
#pragma unroll
    for (int j = 0; j < BIt::RUNS; ++j) {
        const typename Prob::Elem* src;
        const bool ok = pb.b_src(bit, j, src);
        mv_cp_async16_at(sb + j * B_STEP, src, ok);
    }
    pb.a_next(ait, bk);
    pb.b_next(bit, bk);
}

// k-tiles kt_begin..kt_end (each BK deep) of the block's BM x BN output tile, on the operand
// type of Frags.
template <class Frags, int BM, int BN, int WARPS_M, int WARPS_N, int STAGES, class Prob, int BK>
__device__ __forceinline__ void igemm_streamed_run(const Prob& pb, int kt_begin, int kt_end) {
    typedef typename Frags::template Tile<Prob::A_KMAJOR, BM, BK> TA;
    typedef typename Frags::template Tile<Prob::B_KMAJOR, BN, BK> TB;
    constexpr int EB = Frags::ELEM_BYTES, RUN = Frags::RUN;
    constexpr int NT = WARPS_M * WARPS_N * 32;
    constexpr int WTM = BM / WARPS_M, WTN = BN / WARPS_N;
    constexpr int MT = WTM / 16, NTL = WTN / 8;
    constexpr int RA = BM * BK / RUN / NT, RB = BN * BK / RUN / NT;  // runs per thread and k-tile
    static_assert(RA * NT * RUN == BM * BK && RB * NT * RUN == BN * BK, "tile not divisible");
    static_assert(NTL % 2 == 0 && STAGES >= 2, "fragment loads take two column tiles");
    static_assert(BK % Frags::KSTEP == 0 && WTM % 16 == 0, "whole mma steps");
    constexpr int STAGE = TA::ELEMS + TB::ELEMS;

    const unsigned smem = mv_smem_addr(MV_DYN_SMEM(unsigned char));
    const int tid = threadIdx.x;
    const int m0 = blockIdx.x * BM, n0 = blockIdx.y * BN;

    // Run j of a thread is c = tid + j * NT of the tile: row (or k-row) c / RUNS_INNER, RUN
    // elements from (c % RUNS_INNER) * RUN; as NT is a multiple of RUNS_INNER, the thread's runs
    // share their k (k-major) or their rows (row-major), and lie NT / RUNS_INNER rows apart.
    static_assert(NT % TA::RUNS_INNER == 0 && NT % TB::RUNS_INNER == 0,
                  "a thread's runs must share their k (k-major) or their rows (row-major)");
    constexpr int A_STEP = NT / TA::RUNS_INNER * TA::STRIDE * EB, B_STEP = NT / TB::RUNS_INNER * TB::STRIDE * EB;
    typename Prob::template AIt<RA> ait;
    typename Prob::template BIt<RB> bit;
    const int a_outer = tid / TA::RUNS_INNER, a_inner = (tid % TA::RUNS_INNER) * RUN;
    const int b_outer = tid / TB::RUNS_INNER, b_inner = (tid % TB::RUNS_INNER) * RUN;
    const unsigned a_run = (a_outer * TA::STRIDE + a_inner) * EB, b_run = (b_outer * TB::STRIDE + b_inner) * EB;
    {
        int a_fixed[RA], a_k[RA], b_fixed[RB], b_k[RB];
#pragma unroll
        for (int j = 0; j < RA; ++j) {
            const int outer = a_outer + j * (NT / TA::RUNS_INNER);
            a_fixed[j] = m0 + (Prob::A_KMAJOR ? outer : a_inner);
            a_k[j] = kt_begin * BK + (Prob::A_KMAJOR ? a_inner : outer);
        }
#pragma unroll
        for (int j = 0; j < RB; ++j) {
            const int outer = b_outer + j * (NT / TB::RUNS_INNER);
            b_fixed[j] = n0 + (Prob::B_KMAJOR ? outer : b_inner);
            b_k[j] = kt_begin * BK + (Prob::B_KMAJOR ? b_inner : outer);
        }
        pb.a_begin(ait, a_fixed, a_k);
        pb.b_begin(bit, b_fixed, b_k);
    }
    // Issue the copies of the next k-tile (in order: the iterators advance one tile per call).
    auto load = [&](int stage) {
        const unsigned sa = smem + stage * STAGE * EB;
        igemm_bf16_issue<A_STEP, B_STEP>(pb, ait, sa + a_run, bit, sa + TA::ELEMS * EB + b_run, BK);
    };
    // Prologue: STAGES-1 tiles in flight (an empty group where the range is shorter, so that the
    // group count, and with it the wait below, stays uniform).
#pragma unroll
    for (int s = 0; s < STAGES - 1; ++s) {
        if (kt_begin + s < kt_end) load(s);
        mv_cp_async_commit();
    }

    float acc[MT][NTL][4];
#pragma unroll
    for (int i = 0; i < MT; ++i)
#pragma unroll
        for (int j = 0; j < NTL; ++j) acc[i][j][0] = acc[i][j][1] = acc[i][j][2] = acc[i][j][3] = 0.0f;

    const int warp = tid >> 5, lane = tid & 31;
    const int wm = (warp / WARPS_N) * WTM, wn = (warp % WARPS_N) * WTN;
    // The thread's ldmatrix addresses in a stage, for fragment (mi, nj, ks) = 0; the others
    // are constant steps away.
    constexpr int KS = Frags::KSTEP;
    const unsigned a_frag = Frags::template a_offset<Prob::A_KMAJOR, BM, BK>(wm, 0, lane);
    const unsigned b_frag = TA::ELEMS * EB + Frags::template b2_offset<Prob::B_KMAJOR, BN, BK>(wn, 0, lane);
    constexpr int A_MI = Frags::template a_offset<Prob::A_KMAJOR, BM, BK>(16, 0, 0) -
                         Frags::template a_offset<Prob::A_KMAJOR, BM, BK>(0, 0, 0);
    constexpr int A_KS = Frags::template a_offset<Prob::A_KMAJOR, BM, BK>(0, KS, 0) -
                         Frags::template a_offset<Prob::A_KMAJOR, BM, BK>(0, 0, 0);
    constexpr int B_NJ = Frags::template b2_offset<Prob::B_KMAJOR, BN, BK>(16, 0, 0) -
                         Frags::template b2_offset<Prob::B_KMAJOR, BN, BK>(0, 0, 0);
    constexpr int B_KS = Frags::template b2_offset<Prob::B_KMAJOR, BN, BK>(0, KS, 0) -
                         Frags::template b2_offset<Prob::B_KMAJOR, BN, BK>(0, 0, 0);

    for (int kt = kt_begin, i = 0; kt < kt_end; ++kt, ++i) {
        // Tile kt has landed once at most STAGES-2 younger groups are pending; the barrier also
        // tells every thread that the stage about to be refilled (read in the previous
        // iteration) is free.
        mv_cp_async_wait<STAGES - 2>();
        __syncthreads();
        if (kt + STAGES - 1 < kt_end) load((i + STAGES - 1) % STAGES);
        mv_cp_async_commit();

        const unsigned stage = smem + (i % STAGES) * STAGE * EB;
        const unsigned sa = stage + a_frag, sb = stage + b_frag;
#pragma unroll
        for (int ks = 0; ks < BK / KS; ++ks) {
            mv_u32 af[MT][4], bf[NTL][2];
#pragma unroll
            for (int mi = 0; mi < MT; ++mi)
                Frags::template load_a<Prob::A_KMAJOR, TA::STRIDE>(af[mi], sa + mi * A_MI + ks * A_KS);
#pragma unroll
            for (int nj = 0; nj < NTL; nj += 2) {
                mv_u32 f[4];
                Frags::template load_b2<Prob::B_KMAJOR, TB::STRIDE>(f, sb + (nj / 2) * B_NJ + ks * B_KS);
                bf[nj][0] = f[0];
                bf[nj][1] = f[1];
                bf[nj + 1][0] = f[2];
                bf[nj + 1][1] = f[3];
            }
#pragma unroll
            for (int mi = 0; mi < MT; ++mi)
#pragma unroll
                for (int nj = 0; nj < NTL; ++nj) Frags::mma(acc[mi][nj], af[mi], bf[nj]);
        }
    }
    mv_cp_async_wait<0>();  // only empty groups remain; leave nothing in flight

    mv_mma_epilogue<MT, NTL>(pb, acc, m0 + wm, n0 + wn, lane);
}
