// Emulator checks of the rearrangement kernels: the slices of a volume (3D losses) and the
// strided views (ViT tokens, patches, crops), against index-by-index references.
#include "../slices.cu"
#include "../strided.cu"
#include "check.h"

using dvec = std::vector<double>;
using fvec = std::vector<float>;
static dvec D(const fvec& v) { return dvec(v.begin(), v.end()); }

// Slices of a volume across each axis at an image offset inside a larger batch (the rest left
// alone), and the scatter-add back onto a non-zero gradient; index-by-index references.
static void test_slices() {
    struct Case {
        int N, D, H, W, C;
    };
    for (Case k : {Case{1, 4, 5, 6, 1}, Case{2, 3, 3, 3, 3}, Case{2, 5, 2, 4, 3}}) {
        const int dhw[3] = {k.D, k.H, k.W};
        const long long len = (long long)k.N * k.D * k.H * k.W * k.C;
        const fvec x = chk::randn(len), start = chk::randn(len);
        for (int axis = 0; axis < 3; ++axis) {
            const int rows = axis == 0 ? k.H : k.D, cols = axis == 2 ? k.H : k.W;
            const long long img = (long long)rows * cols * k.C, off = 3 * img;
            fvec batch(off + len + 2 * img, 7.0f), g = chk::randn(off + len + 2 * img), dx = start;
            EMU_LAUNCH(slices_gather, dim3(3), dim3(64), 0, x.data(), batch.data(), off, k.N, k.D, k.H, k.W, k.C, axis);
            EMU_LAUNCH(slices_scatter_add, dim3(3), dim3(64), 0, g.data(), off, dx.data(), k.N, k.D, k.H, k.W, k.C,
                       axis);
            dvec rb(batch.size(), 7.0), rdx = D(start);
            for (int n = 0; n < k.N; ++n)
                for (int i = 0; i < dhw[axis]; ++i)
                    for (int r = 0; r < rows; ++r)
                        for (int c = 0; c < cols; ++c)
                            for (int ch = 0; ch < k.C; ++ch) {
                                const int d = axis == 0 ? i : r;
                                const int h = axis == 0 ? r : axis == 1 ? i : c;
                                const int w = axis == 2 ? i : c;
                                const long long v = ((((long long)n * k.D + d) * k.H + h) * k.W + w) * k.C + ch;
                                const long long b = off + ((((long long)n * dhw[axis] + i) * rows + r) * cols + c) * k.C + ch;
                                rb[b] = x[v];
                                rdx[v] += g[b];
                            }
            const std::string nm = "slices axis " + std::to_string(axis) + " C" + std::to_string(k.C) + " D" +
                                   std::to_string(k.D) + "H" + std::to_string(k.H) + "W" + std::to_string(k.W);
            chk::expect(nm + " gather", batch, rb, 0);
            chk::expect(nm + " scatter-add", dx, rdx, 1e-7);
        }
    }
}

// A view descriptor padded at the front to MV_VIEW_RANK dimensions, as the host builds it.
static mv_view make_view(long long offset, std::vector<int> extent, std::vector<long long> stride) {
    mv_view v{};
    const int pad = MV_VIEW_RANK - (int)extent.size();
    for (int d = 0; d < MV_VIEW_RANK; ++d) {
        v.extent[d] = d < pad ? 1 : extent[d - pad];
        v.stride[d] = d < pad ? 0 : stride[d - pad];
    }
    v.offset = offset;
    return v;
}

// Index of element j of the view by the definition.
static long long naive_at(const mv_view& v, long long j) {
    long long at = v.offset;
    for (int d = MV_VIEW_RANK - 1; d >= 0; --d) {
        at += (j % v.extent[d]) * v.stride[d];
        j /= v.extent[d];
    }
    return at;
}

// Gather, scatter and scatter-add through the views the ViT and the CLIP transform use, inside
// buffers larger than the views (elements outside must stay untouched).
static void test_strided() {
    struct Case {
        const char* name;
        mv_view v;
        bool disjoint;
    };
    const Case cases[] = {
        {"head split", make_view(24, {2, 4, 5, 6}, {5 * 72, 6, 72, 1}), true},
        {"patch rows", make_view(0, {2, 2, 3, 3, 4, 4}, {288, 144, 12, 1, 36, 3}), true},
        {"crop", make_view(27, {2, 3, 4, 3}, {105, 21, 3, 1}), true},
        {"class rows", make_view(0, {3, 8}, {40, 1}), true},
        {"broadcast", make_view(1, {4, 3, 2}, {0, 2, 1}), false},
    };
    for (const Case& k : cases) {
        long long len = 1, span = k.v.offset;
        for (int d = 0; d < MV_VIEW_RANK; ++d) {
            len *= k.v.extent[d];
            span += (long long)(k.v.extent[d] - 1) * k.v.stride[d];
        }
        const long long n = span + 5;
        const fvec src = chk::randn(n), dense = chk::randn(len), start = chk::randn(n);
        fvec out(len, 9.0f);
        EMU_LAUNCH(strided_gather, dim3(2), dim3(32), 0, src.data(), out.data(), len, k.v);
        dvec rout(len);
        for (long long j = 0; j < len; ++j) rout[j] = src[naive_at(k.v, j)];
        chk::expect(std::string("strided gather ") + k.name, out, rout, 0);
        if (!k.disjoint) continue;
        for (int acc = 0; acc < 2; ++acc) {
            fvec dst = start;
            EMU_LAUNCH(strided_scatter, dim3(2), dim3(32), 0, dense.data(), dst.data(), len, k.v, acc);
            dvec rdst = D(start);
            for (long long j = 0; j < len; ++j) {
                const long long at = naive_at(k.v, j);
                rdst[at] = acc ? rdst[at] + dense[j] : dense[j];
            }
            chk::expect(std::string(acc ? "strided scatter-add " : "strided scatter ") + k.name, dst, rdst, 1e-7);
        }
    }
}

int main(int argc, char** argv) {
    std::string only = argc > 1 ? argv[1] : "";
    auto want = [&](const char* s) { return only.empty() || only == s; };
    if (want("slices")) test_slices();
    if (want("strided")) test_strided();
    return chk::finish();
}
