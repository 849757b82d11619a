//! Conversions between PyTorch's channels-first layout and the engine's channels-last one.

use crate::error::{Result, RuntimeError};

/// `[N, C, s1, .., sk]` -> `[N, s1, .., sk, C]`. Returns the data and the new shape.
pub fn to_channels_last(data: &[f32], shape: &[usize]) -> Result<(Vec<f32>, Vec<usize>)> {
    check(data, shape, "to_channels_last")?;
    let (n, c) = (shape[0], shape[1]);
    let s: usize = shape[2..].iter().product();
    let mut out = vec![0.0; data.len()];
    for b in 0..n {
        for ch in 0..c {
            let src = &data[(b * c + ch) * s..(b * c + ch + 1) * s];
            for (p, &v) in src.iter().enumerate() {
                out[(b * s + p) * c + ch] = v;
            }
        }
    }
    let mut new_shape = vec![n];
    new_shape.extend_from_slice(&shape[2..]);
    new_shape.push(c);
    Ok((out, new_shape))
}

/// `[N, s1, .., sk, C]` -> `[N, C, s1, .., sk]`. Returns the data and the new shape.
pub fn to_channels_first(data: &[f32], shape: &[usize]) -> Result<(Vec<f32>, Vec<usize>)> {
    check(data, shape, "to_channels_first")?;
    let n = shape[0];
    let c = shape[shape.len() - 1];
    let s: usize = shape[1..shape.len() - 1].iter().product();
    let mut out = vec![0.0; data.len()];
    for b in 0..n {
        for p in 0..s {
            for ch in 0..c {
                out[(b * c + ch) * s + p] = data[(b * s + p) * c + ch];
            }
        }
    }
    let mut new_shape = vec![n, c];
    new_shape.extend_from_slice(&shape[1..shape.len() - 1]);
    Ok((out, new_shape))
}

fn check(data: &[f32], shape: &[usize], op: &str) -> Result<()> {
    if shape.len() < 2 {
        return Err(RuntimeError::shape(
            op,
            format!("need rank >= 2, got {shape:?}"),
        ));
    }
    let n: usize = shape.iter().product();
    if n != data.len() {
        return Err(RuntimeError::shape(
            op,
            format!("shape {shape:?} needs {n} elements, got {}", data.len()),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_placement() {
        let shape = [2, 3, 2, 2];
        let data: Vec<f32> = (0..24).map(|x| x as f32).collect();
        let (cl, s) = to_channels_last(&data, &shape).unwrap();
        assert_eq!(s, vec![2, 2, 2, 3]);
        // Element (n=1, c=2, h=1, w=0) sits at channels-last index ((1*2+1)*2+0)*3+2.
        assert_eq!(cl[((2 + 1) * 2) * 3 + 2], data[((3 + 2) * 2 + 1) * 2]);
        let (back, s2) = to_channels_first(&cl, &s).unwrap();
        assert_eq!(s2, shape.to_vec());
        assert_eq!(back, data);
    }
}
