//! Turning a tensor view `(storage bytes, dtype, offset, shape, stride)` into row-major values:
//! bounds checks, the strided gather (transposed, sliced, expanded views) and the element
//! conversion to f32 / i64.

use half::{bf16, f16};

use super::state_dict::{checked_numel, StoredDType, TensorData};

/// Why a view cannot be read. The caller adds file, key and record names.
#[derive(Debug)]
pub(crate) enum ViewError {
    /// The view reaches element `needed` (exclusive end) of a storage of `available` elements.
    TooShort { needed: u128, available: usize },
    /// The element count overflows.
    TooLarge,
}

/// Byte order of the storages (`byteorder` record of the archive; absent means little).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ByteOrder {
    Little,
    Big,
}

/// Reads the elements of a strided view of `storage` in row-major order.
pub(crate) fn read_view(
    storage: &[u8],
    dtype: StoredDType,
    order: ByteOrder,
    offset: usize,
    shape: &[usize],
    stride: &[usize],
) -> Result<TensorData, ViewError> {
    let numel = checked_numel(shape).ok_or(ViewError::TooLarge)?;
    let elem = dtype.size_bytes();
    let available = storage.len() / elem;
    if numel == 0 {
        // torch accepts an empty view at any offset, even past the end: nothing is read.
        return Ok(decode_contiguous(&[], dtype, order));
    }
    // Last element reached: offset + sum (size_i - 1) * stride_i, computed without overflow.
    let last: u128 = shape
        .iter()
        .zip(stride)
        .map(|(&n, &s)| (n as u128 - 1) * s as u128)
        .sum::<u128>()
        + offset as u128;
    if last >= available as u128 {
        return Err(ViewError::TooShort {
            needed: last + 1,
            available,
        });
    }
    let indices = ElementIndices::new(offset, shape, stride, numel);
    if let Some(range) = indices.contiguous_range() {
        // The common case (every tensor torch.save writes from a module): one tight decode
        // loop per dtype over a byte slice, which the compiler vectorises.
        return Ok(decode_contiguous(
            &storage[range.start * elem..range.end * elem],
            dtype,
            order,
        ));
    }
    let at = |i: usize| &storage[i * elem..(i + 1) * elem];
    Ok(if dtype.is_float() {
        let mut out = Vec::with_capacity(numel);
        out.extend(indices.map(|i| float_at(at(i), dtype, order)));
        TensorData::Float(out)
    } else {
        let mut out = Vec::with_capacity(numel);
        out.extend(indices.map(|i| int_at(at(i), dtype, order)));
        TensorData::Int(out)
    })
}

/// Decodes consecutive elements; `bytes.len()` is a multiple of the element size.
pub(crate) fn decode_contiguous(bytes: &[u8], dtype: StoredDType, order: ByteOrder) -> TensorData {
    match dtype {
        StoredDType::F32 => TensorData::Float(decode(bytes, order, f32::from_le_bytes)),
        StoredDType::F64 => {
            TensorData::Float(decode(bytes, order, |b| f64::from_le_bytes(b) as f32))
        }
        StoredDType::F16 => {
            TensorData::Float(decode(bytes, order, |b| f16::from_le_bytes(b).to_f32()))
        }
        StoredDType::BF16 => {
            TensorData::Float(decode(bytes, order, |b| bf16::from_le_bytes(b).to_f32()))
        }
        StoredDType::I64 => TensorData::Int(decode(bytes, order, i64::from_le_bytes)),
        StoredDType::I32 => TensorData::Int(decode(bytes, order, |b| i32::from_le_bytes(b).into())),
        StoredDType::I16 => TensorData::Int(decode(bytes, order, |b| i16::from_le_bytes(b).into())),
        StoredDType::I8 => TensorData::Int(decode(bytes, order, |b: [u8; 1]| (b[0] as i8).into())),
        StoredDType::U8 => TensorData::Int(decode(bytes, order, |b: [u8; 1]| b[0].into())),
        StoredDType::Bool => {
            TensorData::Int(decode(bytes, order, |b: [u8; 1]| i64::from(b[0] != 0)))
        }
    }
}

/// Applies `f` to each `N`-byte element, presented in little-endian order.
fn decode<const N: usize, T>(bytes: &[u8], order: ByteOrder, f: impl Fn([u8; N]) -> T) -> Vec<T> {
    let chunks = bytes.chunks_exact(N);
    match order {
        ByteOrder::Little => chunks.map(|c| f(array(c, ByteOrder::Little))).collect(),
        ByteOrder::Big => chunks.map(|c| f(array(c, ByteOrder::Big))).collect(),
    }
}

fn array<const N: usize>(b: &[u8], order: ByteOrder) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(b);
    if order == ByteOrder::Big {
        a.reverse();
    }
    a
}

fn float_at(b: &[u8], dtype: StoredDType, order: ByteOrder) -> f32 {
    match dtype {
        StoredDType::F32 => f32::from_le_bytes(array(b, order)),
        StoredDType::F64 => f64::from_le_bytes(array(b, order)) as f32,
        StoredDType::F16 => f16::from_bits(u16::from_le_bytes(array(b, order))).to_f32(),
        StoredDType::BF16 => bf16::from_bits(u16::from_le_bytes(array(b, order))).to_f32(),
        // Not reached: callers dispatch on `is_float`.
        _ => f32::NAN,
    }
}

fn int_at(b: &[u8], dtype: StoredDType, order: ByteOrder) -> i64 {
    match dtype {
        StoredDType::I64 => i64::from_le_bytes(array(b, order)),
        StoredDType::I32 => i32::from_le_bytes(array(b, order)).into(),
        StoredDType::I16 => i16::from_le_bytes(array(b, order)).into(),
        StoredDType::I8 => i8::from_le_bytes(array(b, order)).into(),
        StoredDType::U8 => b[0].into(),
        StoredDType::Bool => i64::from(b[0] != 0),
        // Not reached: callers dispatch on `is_float`.
        _ => 0,
    }
}

/// Storage element indices of a view in row-major order (an odometer over the shape).
struct ElementIndices {
    shape: Vec<usize>,
    stride: Vec<usize>,
    counter: Vec<usize>,
    next: usize,
    remaining: usize,
    start: usize,
}

impl ElementIndices {
    fn new(offset: usize, shape: &[usize], stride: &[usize], numel: usize) -> Self {
        ElementIndices {
            shape: shape.to_vec(),
            stride: stride.to_vec(),
            counter: vec![0; shape.len()],
            next: offset,
            remaining: numel,
            start: offset,
        }
    }

    /// The index range when the view is row-major contiguous (the common case), so that the
    /// conversion loop runs without the odometer.
    fn contiguous_range(&self) -> Option<std::ops::Range<usize>> {
        let mut expected = 1usize;
        for (&n, &s) in self.shape.iter().zip(&self.stride).rev() {
            if n != 1 && s != expected {
                return None;
            }
            expected = expected.checked_mul(n)?;
        }
        Some(self.start..self.start + self.remaining)
    }
}

impl Iterator for ElementIndices {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        if self.remaining == 0 {
            return None;
        }
        let current = self.next;
        self.remaining -= 1;
        // Advance the odometer; bounds were checked in `read_view`, so no index overflows.
        for d in (0..self.shape.len()).rev() {
            self.counter[d] += 1;
            if self.counter[d] < self.shape[d] {
                self.next += self.stride[d];
                break;
            }
            self.next -= (self.shape[d] - 1) * self.stride[d];
            self.counter[d] = 0;
        }
        Some(current)
    }
}
