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
