//! Convolution forward, and the source layout its backward-weight pass shares.
//!
//! The input is packed once (zero padding, and phase splitting for strides in z and y: see
//! `pack`), then every kernel tap row `(kz, ky)` is one GEMM over the virtual grid with the
//! `kx` taps folded into the contraction (`K = kw · cin`, contiguous in the packed row).

use super::implicit_gemm::{Term, VirtualGemm};
use super::pack::PackSpec;
use super::raw::SharedOut;
use super::workspace::ThreadBuffers;
use super::ConvGeometry;
use crate::Real;

/// The forward plan on the packed input, and how to pack it.
pub(super) fn forward_plan(g: &ConvGeometry) -> (VirtualGemm, PackSpec) {
    let out = g.out_spatial();
    let [kd, kh, kw] = g.kernel;
    let [sd, sh, sw] = g.stride;
    // Phase q of z holds padded coordinates sd·q + a; output z reads q = z + kz' for tap
    // kz = sd·kz' + a, so a phase needs out + ceil(kd / sd) - 1 planes (likewise y). Along x
    // output x reads pixel sw·x + kx of the unsplit row.
    let ext_z = out[0] + kd.div_ceil(sd) - 1;
    let ext_y = out[1] + kh.div_ceil(sh) - 1;
    let vx = out[2] - 1 + kw.div_ceil(sw);
    let spec = PackSpec {
        lo: g.pad_lo,
        phases: [sd.min(kd), sh.min(kh)],
        step: [sd, sh],
        ext: [ext_z, ext_y, sw * vx],
    };
    let tap_block = kw * g.cin * g.cout;
    let mut terms = Vec::with_capacity(kd * kh);
    for a in 0..spec.phases[0] {
        for b in 0..spec.phases[1] {
            let phase = (a * spec.phases[1] + b) * spec.phase_pixels();
            for kz_q in 0..(kd - a).div_ceil(sd) {
                for ky_q in 0..(kh - b).div_ceil(sh) {
                    let (kz, ky) = (sd * kz_q + a, sh * ky_q + b);
                    terms.push(Term {
                        src_pixel: phase + (kz_q * ext_y + ky_q) * spec.ext[2],
                        width: kw,
                        weight: (kz * kh + ky) * tap_block,
                    });
                }
            }
        }
    }
    let plan = VirtualGemm {
        batch: g.batch,
        grid: out,
        vy: ext_y,
        vx,
        sx: sw,
        src_batch: spec.item_pixels(),
        c: g.cin,
        n: g.cout,
        terms,
    };
    (plan, spec)
}

/// Run the forward plan on an already packed (or identity) source and write `y` (+ bias).
pub(super) fn forward_on_source<T: Real>(
    g: &ConvGeometry,
    plan: &VirtualGemm,
    src: &[T],
    w: &[T],
    bias: Option<&[T]>,
    y: &mut [T],
    threads: &ThreadBuffers<T>,
) {
    let out = g.out_spatial();
    let cout = g.cout;
    let row_len = out[2] * cout;
    let rows_per_item = out[0] * out[1];
    let y_out = SharedOut::new(y);
    plan.run(src, w, threads, |ch, buf| {
        // SAFETY: a chunk's output rows are its own, consecutive rows of y.
        let dst = unsafe {
            y_out.range(
                (ch.batch * rows_per_item + ch.row0) * row_len,
                ch.rows * row_len,
            )
        };
        let (v0, _) = plan.span(ch);
        for (j, dst_row) in dst.chunks_exact_mut(row_len).enumerate() {
            let from = (plan.vrow(ch.row0 + j) - v0) * cout;
            let src_row = &buf[from..from + row_len];
            match bias {
                Some(b) => {
                    for (d, s) in dst_row
                        .chunks_exact_mut(cout)
                        .zip(src_row.chunks_exact(cout))
                    {
                        for ((d, &s), &b) in d.iter_mut().zip(s).zip(b) {
                            *d = s + b;
                        }
                    }
                }
                None => dst_row.copy_from_slice(src_row),
            }
        }
    });
}
