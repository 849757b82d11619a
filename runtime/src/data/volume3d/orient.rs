//! Reorienting a file-order volume to RAS array order (MONAI `Orientation("RAS")`: a flip of
//! each reversed file axis, then a transpose), in one strided pass.

use super::affine::Orientation;
use super::gather::strided_gather;
use super::Volume;

/// `data` is in file order (`i` fastest, extents `dims`); the result is C-order over the RAS
/// array axes (last axis fastest), as MONAI's channel-first tensor `[1, D0, D1, D2]` is laid out.
pub fn reorient(data: &[f32], dims: [usize; 3], o: &Orientation) -> Volume {
    // Fortran strides of the file axes
    let file_stride = [1isize, dims[0] as isize, (dims[0] * dims[1]) as isize];
    let mut out_shape = [0usize; 3];
    let mut step = [0isize; 3];
    let mut start = 0isize;
    for a in 0..3 {
        let j = o.out_axis[a];
        out_shape[j] = dims[a];
        if o.flip[a] {
            step[j] = -file_stride[a];
            start += (dims[a] as isize - 1) * file_stride[a];
        } else {
            step[j] = file_stride[a];
        }
    }
    Volume {
        shape: out_shape,
        data: strided_gather(data, start, &out_shape, &step),
    }
}
