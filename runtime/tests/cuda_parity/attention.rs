//! Flash attention forward/backward against an f64 reference (softmax(s q k^T) v and its
//! gradients written out naively).

use crate::support::{assert_close, device, down, randn, rng, up};
use medvae_runtime::cuda::ops::attention::{
    attention_backward, attention_forward, AttnDims, AttnOperand,
};

struct Ref {
    o: Vec<f32>,
    lse: Vec<f32>,
    dq: Vec<f32>,
    dk: Vec<f32>,
    dv: Vec<f32>,
}

/// Dense single-layout reference: q [b, tq, h*d], k/v [b, tk, h*d].
fn reference(d: &AttnDims, q: &[f32], k: &[f32], v: &[f32], dout: &[f32]) -> Ref {
    let (hd, w) = (d.head_dim, d.heads * d.head_dim);
    let mut r = Ref {
        o: vec![0.0; d.batch * d.tq * w],
        lse: vec![0.0; d.batch * d.heads * d.tq],
        dq: vec![0.0; q.len()],
        dk: vec![0.0; k.len()],
        dv: vec![0.0; v.len()],
    };
    let (mut dq, mut dk, mut dv) = (
        vec![0.0f64; q.len()],
        vec![0.0f64; k.len()],
        vec![0.0f64; v.len()],
    );
    for b in 0..d.batch {
        for h in 0..d.heads {
            let qi = |i: usize, c: usize| (b * d.tq + i) * w + h * hd + c;
            let kj = |j: usize, c: usize| (b * d.tk + j) * w + h * hd + c;
            for i in 0..d.tq {
                let s: Vec<f64> = (0..d.tk)
                    .map(|j| {
                        (0..hd)
                            .map(|c| q[qi(i, c)] as f64 * k[kj(j, c)] as f64)
                            .sum::<f64>()
                            * d.scale as f64
                    })
                    .collect();
                let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let z: f64 = s.iter().map(|x| (x - m).exp()).sum();
                let p: Vec<f64> = s.iter().map(|x| (x - m).exp() / z).collect();
                r.lse[(b * d.heads + h) * d.tq + i] = (m + z.ln()) as f32;
                for c in 0..hd {
                    r.o[qi(i, c)] =
                        (0..d.tk).map(|j| p[j] * v[kj(j, c)] as f64).sum::<f64>() as f32;
                }
                let dp: Vec<f64> = (0..d.tk)
                    .map(|j| {
                        (0..hd)
                            .map(|c| dout[qi(i, c)] as f64 * v[kj(j, c)] as f64)
                            .sum()
                    })
                    .collect();
                let delta: f64 = (0..d.tk).map(|j| p[j] * dp[j]).sum();
                for j in 0..d.tk {
                    let ds = p[j] * (dp[j] - delta) * d.scale as f64;
                    for c in 0..hd {
                        dq[qi(i, c)] += ds * k[kj(j, c)] as f64;
                        dk[kj(j, c)] += ds * q[qi(i, c)] as f64;
                        dv[kj(j, c)] += p[j] * dout[qi(i, c)] as f64;
                    }
                }
            }
        }
    }
    r.dq = dq.iter().map(|&x| x as f32).collect();
    r.dk = dk.iter().map(|&x| x as f32).collect();
    r.dv = dv.iter().map(|&x| x as f32).collect();
    r
}

#[test]
fn attention_matches_reference() {
    let Some(dev) = device() else { return };
    let mut r = rng(5);
    // (batch, heads, tq, tk, head_dim)
    for &(batch, heads, tq, tk, hd) in &[
        (1usize, 1usize, 64usize, 64usize, 32usize),
        (2, 1, 100, 70, 64),
        (1, 4, 50, 50, 16),
        (1, 1, 37, 45, 132),
        (2, 3, 41, 57, 96), // the d128 kernels, several heads
        (1, 1, 256, 256, 512),
        (1, 1, 512, 300, 512),
    ] {
        let d = AttnDims {
            batch,
            heads,
            tq,
            tk,
            head_dim: hd,
            scale: 1.0 / (hd as f32).sqrt(),
        };
        let w = heads * hd;
        let q = randn(&mut r, batch * tq * w, 1.0);
        let k = randn(&mut r, batch * tk * w, 1.0);
        let v = randn(&mut r, batch * tk * w, 1.0);
        let dout = randn(&mut r, batch * tq * w, 1.0);
        let rf = reference(&d, &q, &k, &v, &dout);
        let (gq, gk, gv, gdo) = (up(dev, &q), up(dev, &k), up(dev, &v), up(dev, &dout));
        let go = dev.alloc_f32(q.len()).unwrap();
        let glse = dev.alloc_f32(batch * heads * tq).unwrap();
        let (oq, ok, ov, oo) = (
            AttnOperand::dense(&gq, tq, w),
            AttnOperand::dense(&gk, tk, w),
            AttnOperand::dense(&gv, tk, w),
            AttnOperand::dense(&go, tq, w),
        );
        attention_forward(dev, &d, oq, ok, ov, oo, &glse).expect("gpu fwd");
        let tag = format!("attention b{batch} h{heads} tq{tq} tk{tk} d{hd}");
        assert_close(&format!("{tag} o"), &down(dev, &go, q.len()), &rf.o, 1e-4);
        assert_close(
            &format!("{tag} lse"),
            &down(dev, &glse, batch * heads * tq),
            &rf.lse,
            1e-5,
        );
        let (gdq, gdk, gdv) = (
            dev.alloc_f32(q.len()).unwrap(),
            dev.alloc_f32(k.len()).unwrap(),
            dev.alloc_f32(v.len()).unwrap(),
        );
        attention_backward(
            dev,
            &d,
            oq,
            ok,
            ov,
            oo,
            AttnOperand::dense(&gdo, tq, w),
            &glse,
            AttnOperand::dense(&gdq, tq, w),
            AttnOperand::dense(&gdk, tk, w),
            AttnOperand::dense(&gdv, tk, w),
            0.0,
        )
        .expect("gpu bwd");
        assert_close(
            &format!("{tag} dq"),
            &down(dev, &gdq, q.len()),
            &rf.dq,
            1e-4,
        );
        assert_close(
            &format!("{tag} dk"),
            &down(dev, &gdk, k.len()),
            &rf.dk,
            1e-4,
        );
        assert_close(
            &format!("{tag} dv"),
            &down(dev, &gdv, v.len()),
            &rf.dv,
            1e-4,
        );
    }
}

#[test]
fn attention_on_a_packed_qkv_buffer() {
    let Some(dev) = device() else { return };
    let mut r = rng(6);
    let (batch, heads, t, hd) = (2usize, 2usize, 40usize, 16usize);
    let c = heads * hd;
    let d = AttnDims {
        batch,
        heads,
        tq: t,
        tk: t,
        head_dim: hd,
        scale: 0.25,
    };
    let qkv = randn(&mut r, batch * t * 3 * c, 1.0);
    // unpack for the reference
    let part = |k: usize| -> Vec<f32> {
        (0..batch * t)
            .flat_map(|row| qkv[row * 3 * c + k * c..row * 3 * c + (k + 1) * c].to_vec())
            .collect()
    };
    let (q, k, v) = (part(0), part(1), part(2));
    let dout = randn(&mut r, batch * t * c, 1.0);
    let rf = reference(&d, &q, &k, &v, &dout);
    let g = up(dev, &qkv);
    let op = |off: usize| AttnOperand {
        buf: &g,
        offset: off,
        row_stride: 3 * c,
        batch_stride: t * 3 * c,
    };
    let (go, glse, gdo) = (
        dev.alloc_f32(batch * t * c).unwrap(),
        dev.alloc_f32(batch * heads * t).unwrap(),
        up(dev, &dout),
    );
    attention_forward(
        dev,
        &d,
        op(0),
        op(c),
        op(2 * c),
        AttnOperand::dense(&go, t, c),
        &glse,
    )
    .expect("fwd");
    assert_close(
        "packed qkv attention o",
        &down(dev, &go, batch * t * c),
        &rf.o,
        1e-4,
    );
    let gd = dev.zeros_f32(qkv.len()).unwrap();
    let dop = |off: usize| AttnOperand {
        buf: &gd,
        offset: off,
        row_stride: 3 * c,
        batch_stride: t * 3 * c,
    };
    attention_backward(
        dev,
        &d,
        op(0),
        op(c),
        op(2 * c),
        AttnOperand::dense(&go, t, c),
        AttnOperand::dense(&gdo, t, c),
        &glse,
        dop(0),
        dop(c),
        dop(2 * c),
        0.0,
    )
    .expect("bwd");
    let dqkv = down(dev, &gd, qkv.len());
    let mut expect = vec![0.0f32; qkv.len()];
    for row in 0..batch * t {
        expect[row * 3 * c..row * 3 * c + c].copy_from_slice(&rf.dq[row * c..(row + 1) * c]);
        expect[row * 3 * c + c..row * 3 * c + 2 * c]
            .copy_from_slice(&rf.dk[row * c..(row + 1) * c]);
        expect[row * 3 * c + 2 * c..(row + 1) * 3 * c]
            .copy_from_slice(&rf.dv[row * c..(row + 1) * c]);
    }
    assert_close("packed qkv attention dqkv", &dqkv, &expect, 1e-4);
}
