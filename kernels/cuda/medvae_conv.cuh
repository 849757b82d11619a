// medvae_conv.cuh — convolution geometry shared by the implicit-GEMM and direct conv kernels.
//
// Input x [N, ID, IH, IW, Cin], weights w [KD, KH, KW, Cin, Cout], output y [N, OD, OH, OW, Cout]
// (2D: ID = OD = KD = 1, sd = 1, pd = 0). Padding is given as pad_lo per axis; pad_hi only
// enters through the output extent, which the host computes as
//   OD = (ID + pd_lo + pd_hi - KD) / sd + 1   (and likewise for H, W).
// The same struct (field for field, 4-byte ints) is `ConvGeom` on the Rust side.
#pragma once
#include "medvae_common.cuh"

struct ConvGeom {
    int n, id, ih, iw, cin;
    int od, oh, ow, cout;
    int kd, kh, kw;
    int sd, sh, sw;
    int pd, ph, pw;
};

// Kernel tap -> (kd, kh, kw).
struct ConvTap {
    int kd, kh, kw;
};
__device__ __forceinline__ ConvTap conv_tap(const ConvGeom& g, int tap) {
    ConvTap t;
    const int khw = g.kh * g.kw;
    t.kd = tap / khw;
    const int r = tap - t.kd * khw;
    t.kh = r / g.kw;
    t.kw = r - t.kh * g.kw;
    return t;
}

__device__ __forceinline__ bool conv_inside(const ConvGeom& g, int d, int h, int w) {
    return d >= 0 && d < g.id && h >= 0 && h < g.ih && w >= 0 && w < g.iw;
}

// Pixel m = ((n * D + d) * H + h) * W + w of a [N, D, H, W] grid, decoded.
struct ConvPixel {
    int n, d, h, w;
};
__device__ __forceinline__ ConvPixel conv_pixel(int m, int D, int H, int W) {
    ConvPixel p;
    int t = m;
    p.w = t % W;
    t /= W;
    p.h = t % H;
    t /= H;
    p.d = t % D;
    p.n = t / D;
    return p;
}
// An output pixel and an input pixel of the convolution.
__device__ __forceinline__ ConvPixel conv_out_pixel(const ConvGeom& g, int m) { return conv_pixel(m, g.od, g.oh, g.ow); }
__device__ __forceinline__ ConvPixel conv_in_pixel(const ConvGeom& g, int m) { return conv_pixel(m, g.id, g.ih, g.iw); }

// The receptive field of output pixel m of a problem with M output rows: its sample's first
// input element (n * ID*IH*IW; -1 for m >= M, a row past the problem) and the input coordinates
// that tap (0, 0, 0) reads (negative inside the low padding).
struct ConvWindow {
    mv_i64 base;
    int d0, h0, w0;
};
__device__ __forceinline__ ConvWindow conv_window(const ConvGeom& g, int m, int M) {
    ConvWindow r;
    r.base = -1;
    r.d0 = r.h0 = r.w0 = 0;
    if (m < M) {
        const ConvPixel o = conv_out_pixel(g, m);
        r.base = (mv_i64)o.n * g.id * g.ih * g.iw;
        r.d0 = o.d * g.sd - g.pd;
        r.h0 = o.h * g.sh - g.ph;
        r.w0 = o.w * g.sw - g.pw;
    }
    return r;
}

// The k-tiles [begin, end) that blockIdx.z handles when a reduction of k values in tiles of bk
// is split into runs of `tiles_per_split` tiles (empty past the last tile).
struct KSplit {
    int begin, end;
};
__device__ __forceinline__ KSplit k_split(int k, int bk, int tiles_per_split) {
    KSplit r;
    r.begin = blockIdx.z * tiles_per_split;
    r.end = min((k + bk - 1) / bk, r.begin + tiles_per_split);
    return r;
}

// The output pixel (as an offset from obase, the sample's first output pixel) that the input
// pixel at padded coordinates (dp, hp, wp) = input + pad_lo meets through tap (kd, kh, kw);
// false where the strides do not divide or it falls outside the output.
__device__ __forceinline__ bool conv_out_of_in(const ConvGeom& g, mv_i64 obase, int dp, int hp, int wp, int kd,
                                               int kh, int kw, mv_i64& off) {
    const int dd = dp - kd, hh = hp - kh, ww = wp - kw;
    if (dd < 0 || hh < 0 || ww < 0) return false;
    if (dd % g.sd || hh % g.sh || ww % g.sw) return false;
    const int od = dd / g.sd, oh = hh / g.sh, ow = ww / g.sw;
    if (od >= g.od || oh >= g.oh || ow >= g.ow) return false;
    off = obase + ((mv_i64)od * g.oh + oh) * g.ow + ow;
    return true;
}
