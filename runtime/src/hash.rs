//! 64-bit FNV-1a, the one content hash of the project: shard table checksums, the prepared
//! folders' source fingerprints, the weights fingerprints inference outputs record. Stable
//! across builds and toolchains (std's hasher is not promised to be); it tells contents
//! apart, it does not authenticate them.

/// An FNV-1a state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fnv1a(u64);

impl Default for Fnv1a {
    fn default() -> Self {
        Self::new()
    }
}

impl Fnv1a {
    const BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;

    pub fn new() -> Fnv1a {
        Fnv1a(Self::BASIS)
    }

    /// Take in `bytes` one byte at a time (the textbook FNV-1a).
    pub fn bytes(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.word(u64::from(b));
        }
    }

    /// Take in one 64-bit word in a single step (eight times fewer steps over bulk data).
    pub fn word(&mut self, w: u64) {
        self.0 = (self.0 ^ w).wrapping_mul(Self::PRIME);
    }

    /// Take in `bytes` as little-endian 64-bit words, a short tail zero-padded.
    pub fn words_le(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for w in &mut words {
            let mut b = [0u8; 8];
            b.copy_from_slice(w);
            self.word(u64::from_le_bytes(b));
        }
        let tail = words.remainder();
        if !tail.is_empty() {
            let mut b = [0u8; 8];
            b[..tail.len()].copy_from_slice(tail);
            self.word(u64::from_le_bytes(b));
        }
    }

    pub fn value(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The published FNV-1a 64 test vectors ("" and "a", "foobar").
    #[test]
    fn byte_hashing_is_fnv1a() {
        let of = |s: &str| {
            let mut h = Fnv1a::new();
            h.bytes(s.as_bytes());
            h.value()
        };
        assert_eq!(of(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(of("a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(of("foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn words_pad_the_tail_with_zeros() {
        let mut a = Fnv1a::new();
        a.words_le(&[1, 2, 3]);
        let mut b = Fnv1a::new();
        b.word(u64::from_le_bytes([1, 2, 3, 0, 0, 0, 0, 0]));
        assert_eq!(a, b);
    }
}
