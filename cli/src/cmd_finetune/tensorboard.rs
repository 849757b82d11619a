//! A minimal TensorBoard event-file writer: scalar summaries only, which is what a training
//! run logs. The file is a TFRecord stream of `Event` protobufs; both formats are small enough
//! to write by hand (no protobuf or TensorFlow dependency).
//!
//! Record: `u64 length | u32 masked-crc32c(length) | data | u32 masked-crc32c(data)`.
//! `Event { double wall_time = 1; int64 step = 2; string file_version = 3;
//!          Summary summary = 5 }`, `Summary { repeated Value value = 1 }`,
//! `Value { string tag = 1; float simple_value = 2 }`.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

pub struct EventWriter {
    out: BufWriter<File>,
}

impl EventWriter {
    /// Create `events.out.tfevents.<time>.medvae-fast` in `dir`.
    pub fn create(dir: &Path) -> io::Result<EventWriter> {
        let secs = now();
        let path = dir.join(format!("events.out.tfevents.{}.medvae-fast", secs as u64));
        let mut w = EventWriter {
            out: BufWriter::new(File::create(path)?),
        };
        let mut ev = Vec::new();
        put_double(&mut ev, 1, secs);
        put_bytes(&mut ev, 3, b"brain.Event:2");
        w.record(&ev)?;
        Ok(w)
    }

    /// Log scalars `(tag, value)` at `step`.
    pub fn scalars(&mut self, step: u64, values: &[(&str, f64)]) -> io::Result<()> {
        let mut summary = Vec::new();
        for (tag, v) in values {
            let mut value = Vec::new();
            put_bytes(&mut value, 1, tag.as_bytes());
            value.push((2 << 3) | 5);
            value.extend_from_slice(&(*v as f32).to_le_bytes());
            put_bytes(&mut summary, 1, &value);
        }
        let mut ev = Vec::new();
        put_double(&mut ev, 1, now());
        ev.push(2 << 3);
        put_varint(&mut ev, step);
        put_bytes(&mut ev, 5, &summary);
        self.record(&ev)?;
        self.out.flush()
    }

    fn record(&mut self, data: &[u8]) -> io::Result<()> {
        let len = (data.len() as u64).to_le_bytes();
        self.out.write_all(&len)?;
        self.out.write_all(&masked_crc(&len).to_le_bytes())?;
        self.out.write_all(data)?;
        self.out.write_all(&masked_crc(data).to_le_bytes())
    }
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_bytes(out: &mut Vec<u8>, field: u32, data: &[u8]) {
    out.push(((field << 3) | 2) as u8);
    put_varint(out, data.len() as u64);
    out.extend_from_slice(data);
}

fn put_double(out: &mut Vec<u8>, field: u32, v: f64) {
    out.push(((field << 3) | 1) as u8);
    out.extend_from_slice(&v.to_le_bytes());
}

/// CRC-32C (Castagnoli), bitwise: the records are small and few.
fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82f6_3b78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn masked_crc(data: &[u8]) -> u32 {
    let c = crc32c(data);
    (c.rotate_right(15)).wrapping_add(0xa282_ead8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_check_value() {
        // The standard check value of CRC-32C.
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
    }

    #[test]
    fn records_frame_their_payload() {
        let dir = std::env::temp_dir().join(format!("medvae-tb-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut w = EventWriter::create(&dir).unwrap();
        w.scalars(7, &[("train/loss", 0.5)]).unwrap();
        drop(w);
        let file = std::fs::read_dir(&dir)
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let bytes = std::fs::read(file).unwrap();
        let mut at = 0;
        let mut records = 0;
        while at < bytes.len() {
            let len = u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap()) as usize;
            let len_crc = u32::from_le_bytes(bytes[at + 8..at + 12].try_into().unwrap());
            assert_eq!(len_crc, masked_crc(&bytes[at..at + 8]));
            let data = &bytes[at + 12..at + 12 + len];
            let crc = u32::from_le_bytes(bytes[at + 12 + len..at + 16 + len].try_into().unwrap());
            assert_eq!(crc, masked_crc(data));
            at += 16 + len;
            records += 1;
        }
        assert_eq!(records, 2);
        std::fs::remove_dir_all(&dir).ok();
    }
}
