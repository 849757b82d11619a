//! The GEMM engine behind every convolution direction.
//!
//! A convolution whose source is laid out on a *virtual grid* turns into a handful of large
//! GEMMs with no im2col copy. Output position `(z, y, x)` of the grid gets the virtual row
//! index `v = z·vy·vx + y·vx + x`, where the virtual extents `vy ≥ grid_y`, `vx ≥ grid_x` are
//! those of the (padded) source. For each term (a kernel tap row `(kz, ky)`), source pixel
//! `base + sx·v` starts the `width` consecutive pixels (the `kx` taps, `width·c` contiguous
//! values) that this output needs, so the term is one GEMM whose A operand is the source read
//! with row stride `sx·c` — rows overlap, nothing is copied. Virtual rows that fall between
//! output rows (the padding columns) are computed and thrown away: a few percent of the work.
//!
//! The output grid is cut into chunks of whole output rows; each chunk's result lives in a
//! small buffer that stays in cache across all terms, and chunks run in parallel.

use super::geometry::KERNEL;
use super::raw::{gemm, View};
use super::workspace::{group_count, group_range, ThreadBuffers, Workspace};
use crate::{KernelError, Real};
use gemm::Parallelism;
use rayon::prelude::*;

/// Virtual rows a chunk aims for: its `rows × n` result should stay in L2 across all terms,
/// while each GEMM stays long enough to run near peak.
const CHUNK_VIRTUAL_ROWS: usize = 768;
/// Chunks per thread wanted before chunks are made smaller (load balance on noisy machines).
const CHUNKS_PER_THREAD: usize = 4;

/// One kernel tap row: `width` taps along x, starting at source pixel `src_pixel` (relative
/// to the batch item), multiplying the `(width·c) × n` row-major weight block at `weight`.
#[derive(Clone, Copy, Debug)]
pub(super) struct Term {
    pub src_pixel: usize,
    pub width: usize,
    pub weight: usize,
}

/// A convolution expressed on a virtual grid (see the module docs).
#[derive(Clone, Debug)]
pub(super) struct VirtualGemm {
    pub batch: usize,
    /// Output grid `[z, y, x]` actually produced.
    pub grid: [usize; 3],
    /// Virtual plane height and row length, in output positions.
    pub vy: usize,
    pub vx: usize,
    /// Source pixels per virtual position along x (the x stride of the convolution).
    pub sx: usize,
    /// Source pixels between consecutive batch items.
    pub src_batch: usize,
    /// Contraction channels per source pixel.
    pub c: usize,
    /// Output channels.
    pub n: usize,
    pub terms: Vec<Term>,
}

/// A run of whole output rows of one batch item; row `r` is grid row `(r / grid_y, r % grid_y)`.
#[derive(Clone, Copy, Debug)]
pub(super) struct Chunk {
    pub batch: usize,
    pub row0: usize,
    pub rows: usize,
}

impl VirtualGemm {
    fn rows_per_item(&self) -> usize {
        self.grid[0] * self.grid[1]
    }

    fn is_empty(&self) -> bool {
        self.batch == 0 || self.grid.contains(&0)
    }

    /// Virtual index of the first position of output row `row`.
    pub fn vrow(&self, row: usize) -> usize {
        (row / self.grid[1]) * self.vy * self.vx + (row % self.grid[1]) * self.vx
    }

    /// First virtual row and number of virtual rows a chunk covers.
    pub fn span(&self, ch: &Chunk) -> (usize, usize) {
        let start = self.vrow(ch.row0);
        let end = self.vrow(ch.row0 + ch.rows - 1) + self.grid[2];
        (start, end - start)
    }

    /// True when virtual rows and output rows coincide (no padding columns or planes).
    fn dense(&self) -> bool {
        self.vx == self.grid[2] && (self.vy == self.grid[1] || self.grid[0] == 1)
    }

    pub fn chunks(&self) -> Vec<Chunk> {
        if self.is_empty() {
            return Vec::new();
        }
        let per_item = self.rows_per_item();
        let threads = rayon::current_num_threads().max(1);
        let mut rows = (CHUNK_VIRTUAL_ROWS / self.vx).max(1);
        let wanted = threads * CHUNKS_PER_THREAD;
        let total = self.batch * per_item;
        if total.div_ceil(rows) < wanted {
            rows = total.div_ceil(wanted).max(1);
        }
        let mut out = Vec::with_capacity(self.batch * per_item.div_ceil(rows));
        for batch in 0..self.batch {
            let mut row0 = 0;
            while row0 < per_item {
                let n = rows.min(per_item - row0);
                out.push(Chunk {
                    batch,
                    row0,
                    rows: n,
                });
                row0 += n;
            }
        }
        out
    }

    /// Prove that every GEMM the plan will issue stays inside `src` and `weight`.
    pub fn check(&self, src_len: usize, weight_len: usize) -> Result<(), KernelError> {
        if self.is_empty() {
            return Ok(());
        }
        let bad = |what: &str| KernelError::Geometry {
            kernel: KERNEL,
            msg: format!("internal layout error: {what} out of range in {self:?}"),
        };
        if self.vx < self.grid[2] || self.vy < self.grid[1] || self.sx == 0 {
            return Err(bad("virtual grid"));
        }
        let last_v = self.vrow(self.rows_per_item() - 1) + self.grid[2] - 1;
        for t in &self.terms {
            let src_end = (self.batch - 1)
                .checked_mul(self.src_batch)
                .and_then(|b| b.checked_add(t.src_pixel))
                .and_then(|p| p.checked_add(self.sx.checked_mul(last_v)?))
                .and_then(|p| p.checked_add(t.width))
                .and_then(|p| p.checked_mul(self.c));
            if exceeds(src_end, src_len) {
                return Err(bad("source"));
            }
            let w_end = t
                .width
                .checked_mul(self.c)
                .and_then(|k| k.checked_mul(self.n))
                .and_then(|k| k.checked_add(t.weight));
            if exceeds(w_end, weight_len) {
                return Err(bad("weight"));
            }
        }
        Ok(())
    }

    fn parallelism(&self, tasks: usize) -> Parallelism {
        if tasks < rayon::current_num_threads() {
            Parallelism::Rayon(0)
        } else {
            Parallelism::None
        }
    }

    /// Compute every output chunk and hand it to `sink` as `(chunk, rows)`, where `rows` holds
    /// the chunk's virtual rows (`span().1 × n`, row-major); output row `r` of the chunk starts
    /// at virtual row `vrow(r) - span().0`. Chunks run in parallel; `sink` must only write
    /// what belongs to its chunk. The caller has run [`check`](Self::check).
    pub fn run<T: Real>(
        &self,
        src: &[T],
        weight: &[T],
        threads: &ThreadBuffers<T>,
        sink: impl Fn(&Chunk, &[T]) + Sync,
    ) {
        let chunks = self.chunks();
        let par = self.parallelism(chunks.len());
        chunks.par_iter().for_each(|ch| {
            threads.with(|tb| self.run_chunk(src, weight, ch, par, &mut tb.a, &sink))
        });
    }

    fn run_chunk<T: Real>(
        &self,
        src: &[T],
        weight: &[T],
        ch: &Chunk,
        par: Parallelism,
        buf: &mut Vec<T>,
        sink: impl Fn(&Chunk, &[T]),
    ) {
        let (v0, len) = self.span(ch);
        // The first term overwrites the buffer; only an empty plan needs zeros.
        buf.resize(len * self.n, T::zero());
        if self.terms.is_empty() {
            buf.fill(T::zero());
        }
        for (i, t) in self.terms.iter().enumerate() {
            let src_off = (ch.batch * self.src_batch + t.src_pixel + self.sx * v0) * self.c;
            // SAFETY: `check` bounded the farthest source and weight element of every term;
            // `buf` is this task's own buffer of at least `len × n` elements.
            unsafe {
                gemm(
                    len,
                    self.n,
                    t.width * self.c,
                    View {
                        ptr: buf.as_mut_ptr(),
                        rs: self.n,
                        cs: 1,
                    },
                    i > 0,
                    View {
                        ptr: src.as_ptr().add(src_off),
                        rs: self.sx * self.c,
                        cs: 1,
                    },
                    View {
                        ptr: weight.as_ptr().add(t.weight),
                        rs: self.n,
                        cs: 1,
                    },
                    par,
                );
            }
        }
        sink(ch, &buf[..len * self.n]);
    }

    /// `dw[term] += A_termᵀ · dy` over the whole grid, where `dy` is laid out like the output
    /// grid (`[batch, grid_z, grid_y, grid_x, n]`). The chunks are cut into one contiguous group
    /// per thread, each summed into its own partial gradient; the partials are added in order
    /// at the end, so the result does not depend on scheduling. The caller has run
    /// `check` with `weight_len = dw.len()` and checked `dy.len()`.
    pub fn accumulate_weight_grad<T: Real>(
        &self,
        src: &[T],
        dy: &[T],
        dw: &mut [T],
        work: &mut Workspace<T>,
    ) {
        let chunks = self.chunks();
        if chunks.is_empty() {
            return;
        }
        let groups = group_count(chunks.len());
        work.partials.reset(dw.len(), groups);
        let Workspace {
            threads, partials, ..
        } = &*work;
        (0..groups).into_par_iter().for_each(|group| {
            let mine = &chunks[group_range(chunks.len(), groups, group)];
            threads.with(|tb| {
                partials.with(group, |acc| {
                    for ch in mine {
                        self.weight_grad_chunk(src, dy, ch, acc, &mut tb.a);
                    }
                })
            })
        });
        work.partials.add_total_to(dw);
    }

    fn weight_grad_chunk<T: Real>(
        &self,
        src: &[T],
        dy: &[T],
        ch: &Chunk,
        acc: &mut [T],
        buf: &mut Vec<T>,
    ) {
        let (v0, len) = self.span(ch);
        let rows: &[T] = if self.dense() {
            let first = (ch.batch * self.rows_per_item() + ch.row0) * self.grid[2];
            &dy[first * self.n..(first + len) * self.n]
        } else {
            self.gather_virtual(dy, ch, buf);
            buf
        };
        for t in &self.terms {
            let src_off = (ch.batch * self.src_batch + t.src_pixel + self.sx * v0) * self.c;
            // SAFETY: as in `run`; `acc` has dw's length, which `check` bounded.
            // Parallelism::None: tasks must not nest while holding their accumulator.
            unsafe {
                gemm(
                    t.width * self.c,
                    self.n,
                    len,
                    View {
                        ptr: acc.as_mut_ptr().add(t.weight),
                        rs: self.n,
                        cs: 1,
                    },
                    true,
                    View {
                        ptr: src.as_ptr().add(src_off),
                        rs: 1,
                        cs: self.sx * self.c,
                    },
                    View {
                        ptr: rows.as_ptr(),
                        rs: self.n,
                        cs: 1,
                    },
                    Parallelism::None,
                );
            }
        }
    }

    /// Scatter the chunk's output rows of `dy` into virtual-row layout, zeroing the rows that
    /// correspond to padding columns so they contribute nothing.
    fn gather_virtual<T: Real>(&self, dy: &[T], ch: &Chunk, buf: &mut Vec<T>) {
        let (v0, len) = self.span(ch);
        let n = self.n;
        let row_len = self.grid[2] * n;
        buf.clear();
        buf.resize(len * n, T::zero());
        for r in ch.row0..ch.row0 + ch.rows {
            let at = (self.vrow(r) - v0) * n;
            let from = ((ch.batch * self.rows_per_item() + r) * self.grid[2]) * n;
            buf[at..at + row_len].copy_from_slice(&dy[from..from + row_len]);
        }
    }
}

/// An end offset that overflowed (`None`) or lies beyond `limit`.
fn exceeds(end: Option<usize>, limit: usize) -> bool {
    !matches!(end, Some(v) if v <= limit)
}
