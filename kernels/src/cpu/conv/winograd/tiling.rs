//! How a Winograd convolution is cut into work: the 2×2 output tiles of each output plane,
//! grouped into blocks of whole tile rows, and the input planes each depth tap reads.

use super::super::pack::fill_row;
use super::super::ConvGeometry;
use crate::Real;

/// Tiles per block: the block's `V` and `M` (16 × tiles × channels each) should stay in L2.
const BLOCK_TILES: usize = 128;

/// The depth axis: output plane `z` reads input plane `z + kd - lo` for depth tap `kd`.
struct Depth {
    input: usize,
    out: usize,
    lo: usize,
    taps: usize,
}

/// The tiles of a geometry and their split into blocks of whole tile rows.
pub(super) struct Tiling {
    /// Input extent `[h, w]` of one plane (a plane is one `(n, z)` image).
    input: [usize; 2],
    /// Zero padding before the data, `[h, w]`.
    lo: [usize; 2],
    pub out: [usize; 2],
    depth: Depth,
    /// Pixels per padded input row: the tiles' width (`2·tiles_x + 2`).
    pub pitch: usize,
    tiles: [usize; 2],
    rows_per_block: usize,
    /// `(output plane, first tile row)` of every block.
    pub blocks: Vec<(usize, usize)>,
}

/// One block: its output plane, tile extent and output rows.
pub(super) struct Block {
    plane: usize,
    first_tile_row: usize,
    pub tiles: [usize; 2],
    pub out_rows: [usize; 2],
}

impl Tiling {
    pub fn new(g: &ConvGeometry) -> Self {
        let o = g.out_spatial();
        let tiles = [o[1].div_ceil(2), o[2].div_ceil(2)];
        let rows_per_block = (BLOCK_TILES / tiles[1]).max(1);
        let planes = g.batch * o[0];
        let blocks = (0..planes)
            .flat_map(|plane| {
                (0..tiles[0])
                    .step_by(rows_per_block)
                    .map(move |ty| (plane, ty))
            })
            .collect();
        Tiling {
            input: [g.in_spatial[1], g.in_spatial[2]],
            lo: [g.pad_lo[1], g.pad_lo[2]],
            out: [o[1], o[2]],
            depth: Depth {
                input: g.in_spatial[0],
                out: o[0],
                lo: g.pad_lo[0],
                taps: g.kernel[0],
            },
            pitch: 2 * tiles[1] + 2,
            tiles,
            rows_per_block,
            blocks,
        }
    }

    pub fn depth_taps(&self) -> usize {
        self.depth.taps
    }

    pub fn block(&self, (plane, ty0): (usize, usize)) -> Block {
        let ty1 = (ty0 + self.rows_per_block).min(self.tiles[0]);
        Block {
            plane,
            first_tile_row: ty0,
            tiles: [ty1 - ty0, self.tiles[1]],
            out_rows: [2 * ty0, (2 * ty1).min(self.out[0])],
        }
    }

    /// The input plane (`n·D + z`) that depth tap `kd` of block `b` reads, if it is inside the
    /// volume (otherwise the tap meets only zero padding).
    pub fn input_plane(&self, b: &Block, kd: usize) -> Option<usize> {
        let d = &self.depth;
        let (n, zo) = (b.plane / d.out, b.plane % d.out);
        (zo + kd)
            .checked_sub(d.lo)
            .filter(|&z| z < d.input)
            .map(|z| n * d.input + z)
    }

    /// Element range of a block's output rows in a `[planes, out_h, out_w, c]` tensor.
    pub fn out_range(&self, b: &Block, c: usize) -> (usize, usize) {
        let row = self.out[1] * c;
        let start = (b.plane * self.out[0] + b.out_rows[0]) * row;
        (start, (b.out_rows[1] - b.out_rows[0]) * row)
    }

    /// The zero-padded rows of input plane `plane` that the block's tiles read (`2·rows + 2`
    /// rows of `pitch` pixels), from `x` (`[planes, h, w, c]`) into `buf`.
    pub fn pad_block<T: Real>(&self, x: &[T], plane: usize, b: &Block, c: usize, buf: &mut Vec<T>) {
        let rows = 2 * b.tiles[0] + 2;
        let row_len = self.input[1] * c;
        buf.resize(rows * self.pitch * c, T::zero());
        for (r, dst) in buf.chunks_exact_mut(self.pitch * c).enumerate() {
            let src = (2 * b.first_tile_row + r)
                .checked_sub(self.lo[0])
                .filter(|&y| y < self.input[0])
                .map(|y| {
                    let from = (plane * self.input[0] + y) * row_len;
                    &x[from..from + row_len]
                });
            fill_row(dst, src, self.lo[1], c);
        }
    }
}
