//! Shared helpers of the integration tests (golden directory discovery, random tensors).
