use thiserror::Error;

/// A kernel refused its arguments. Kernels check what they are given instead of panicking.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum KernelError {
    /// A slice does not have the length the geometry implies.
    #[error("{kernel}: {what} has {got} elements, expected {expected}")]
    Length {
        kernel: &'static str,
        what: &'static str,
        got: usize,
        expected: usize,
    },
    /// The geometry itself is impossible (zero sizes, kernel larger than padded input, ...).
    #[error("{kernel}: {msg}")]
    Geometry { kernel: &'static str, msg: String },
}

/// Check that `slice_len == expected`, naming the kernel and the operand on failure.
pub fn check_len(
    kernel: &'static str,
    what: &'static str,
    got: usize,
    expected: usize,
) -> Result<(), KernelError> {
    if got == expected {
        Ok(())
    } else {
        Err(KernelError::Length {
            kernel,
            what,
            got,
            expected,
        })
    }
}
