//! The complete prefix of a RocksDB MANIFEST read while RocksDB may be appending to it.
//!
//! A MANIFEST is a RocksDB log: 32 KiB blocks of physical records, each
//! `[masked crc32c: u32 LE][length: u16 LE][type: u8][payload]`, the CRC covering the type byte and
//! the payload. A logical record (one version edit) is one FULL record, or FIRST, MIDDLE..., LAST;
//! a block's last bytes, when fewer than a header, are zero padding.
//!
//! A reader racing the writer sees a prefix of what was written: the kernel extends a file's size
//! page by page as a write copies in, and RocksDB appends only. So the one thing such a reader may
//! meet is a record cut by the end of the data, which it leaves out. Every other anomaly (a CRC
//! mismatch, a type a MANIFEST does not hold, a fragment out of order) is an error: cutting there
//! would drop later edits without a word, and a checkpoint would lose what they recorded.

const BLOCK: usize = 32 * 1024;
const HEADER: usize = 7;
/// RocksDB's `crc32c::kMaskDelta`.
const MASK_DELTA: u32 = 0xa282_ead8;

const FULL: u8 = 1;
const FIRST: u8 = 2;
const MIDDLE: u8 = 3;
const LAST: u8 = 4;

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("MANIFEST record at byte {at}: {what}")]
pub struct ManifestDamaged {
    pub at: usize,
    pub what: &'static str,
}

fn unmask(masked: u32) -> u32 {
    let rot = masked.wrapping_sub(MASK_DELTA);
    rot.rotate_left(15)
}

/// The length of the longest prefix of `data` that ends on a complete logical record; what
/// follows it can only be a record the writer had not finished when `data` was read.
pub fn complete_prefix(data: &[u8]) -> Result<usize, ManifestDamaged> {
    let damaged = |at, what| Err(ManifestDamaged { at, what });
    // `end`: just past the last complete logical record; `open`: inside a fragmented one.
    let (mut pos, mut end, mut open) = (0usize, 0usize, false);
    while pos < data.len() {
        let left = BLOCK - pos % BLOCK;
        if left < HEADER {
            let pad = &data[pos..data.len().min(pos + left)];
            if pad.iter().any(|&b| b != 0) {
                return damaged(pos, "block trailer is not zero padding");
            }
            pos += left;
            continue;
        }
        if data.len() - pos < HEADER {
            break;
        }
        let h = &data[pos..pos + HEADER];
        if h.iter().all(|&b| b == 0) {
            // Preallocated space (RocksDB reserves it for a MANIFEST): nothing was written here,
            // so nothing may follow.
            if data[pos..].iter().all(|&b| b == 0) {
                break;
            }
            return damaged(pos, "data after a zero record");
        }
        let len = u16::from_le_bytes([h[4], h[5]]) as usize;
        let ty = h[6];
        if HEADER + len > left {
            return damaged(pos, "record runs past its block");
        }
        if data.len() - pos - HEADER < len {
            break;
        }
        let payload = &data[pos + HEADER..pos + HEADER + len];
        let stored = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
        if unmask(stored) != crc32c::crc32c_append(crc32c::crc32c(&[ty]), payload) {
            return damaged(pos, "checksum mismatch");
        }
        let next = pos + HEADER + len;
        match (ty, open) {
            (FULL, false) => end = next,
            (FIRST, false) => open = true,
            (MIDDLE, true) => {}
            (LAST, true) => {
                open = false;
                end = next;
            }
            (FULL..=LAST, _) => return damaged(pos, "fragment out of order"),
            _ => return damaged(pos, "record type a MANIFEST does not hold"),
        }
        pos = next;
    }
    Ok(end)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RocksDB's log writer, for records this test controls (the real MANIFESTs are tested in
    /// `tests/rocks.rs`).
    fn write_log(records: &[Vec<u8>]) -> (Vec<u8>, Vec<usize>) {
        let mut out = Vec::new();
        let mut ends = Vec::new();
        for r in records {
            let mut rest = &r[..];
            let mut first = true;
            loop {
                let left = BLOCK - out.len() % BLOCK;
                if left < HEADER {
                    out.resize(out.len() + left, 0);
                    continue;
                }
                let n = rest.len().min(left - HEADER);
                let last = n == rest.len();
                let ty = match (first, last) {
                    (true, true) => FULL,
                    (true, false) => FIRST,
                    (false, false) => MIDDLE,
                    (false, true) => LAST,
                };
                let crc = crc32c::crc32c_append(crc32c::crc32c(&[ty]), &rest[..n]);
                let masked = crc.rotate_right(15).wrapping_add(MASK_DELTA);
                out.extend_from_slice(&masked.to_le_bytes());
                out.extend_from_slice(&(n as u16).to_le_bytes());
                out.push(ty);
                out.extend_from_slice(&rest[..n]);
                rest = &rest[n..];
                first = false;
                if last {
                    break;
                }
            }
            ends.push(out.len());
        }
        (out, ends)
    }

    fn records() -> Vec<Vec<u8>> {
        // Small edits, one spanning three blocks, and one ending 3 bytes short of a block (so
        // the next starts after padding).
        let mut rs: Vec<Vec<u8>> = (0..40u8).map(|i| vec![i; 100 + i as usize]).collect();
        rs.push(vec![7; 70_000]);
        let used = write_log(&rs).0.len();
        rs.push(vec![9; BLOCK - used % BLOCK - HEADER - 3]);
        rs.extend((0..5u8).map(|i| vec![i; 50]));
        rs
    }

    #[test]
    fn every_cut_keeps_exactly_the_complete_records_before_it() {
        let (log, ends) = write_log(&records());
        assert!(log.len() > 3 * BLOCK);
        assert_eq!(complete_prefix(&log), Ok(log.len()));
        for cut in (0..log.len())
            .step_by(7)
            .chain([BLOCK - 3, BLOCK, BLOCK + 7])
        {
            let want = ends
                .iter()
                .copied()
                .filter(|&e| e <= cut)
                .max()
                .unwrap_or(0);
            assert_eq!(complete_prefix(&log[..cut]), Ok(want), "cut at {cut}");
        }
        // Preallocated zeros after the data are not records.
        let mut padded = log.clone();
        padded.resize(log.len() + 5000, 0);
        assert_eq!(complete_prefix(&padded), Ok(log.len()));
    }

    #[test]
    fn damage_before_the_end_is_an_error_not_a_shorter_manifest() {
        let (log, ends) = write_log(&records());
        for at in [0, 5, ends[3] + 10, BLOCK + 100, ends[ends.len() - 2] + 8] {
            let mut bad = log.clone();
            bad[at] ^= 0x40;
            assert!(complete_prefix(&bad).is_err(), "flip at {at}");
        }
        // A well-formed record of a type only a WAL holds (compression settings).
        let mut unknown = log.clone();
        let len = u16::from_le_bytes([log[4], log[5]]) as usize;
        unknown[6] = 9;
        let crc = crc32c::crc32c_append(crc32c::crc32c(&[9]), &log[HEADER..HEADER + len]);
        unknown[..4].copy_from_slice(&crc.rotate_right(15).wrapping_add(MASK_DELTA).to_le_bytes());
        assert_eq!(
            complete_prefix(&unknown).unwrap_err().what,
            "record type a MANIFEST does not hold"
        );
        let mut zeros_then_data = log.clone();
        zeros_then_data[ends[2]..ends[3]].fill(0);
        assert!(complete_prefix(&zeros_then_data).is_err());
    }
}
