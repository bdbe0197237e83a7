//! Key groups, as Flink assigns them (`KeyGroupRangeAssignment`).
//!
//! A key's group is `murmur(hash) % max_parallelism`; subtask `i` of `p` owns the contiguous range
//! `[ceil(i * maxP / p), ((i + 1) * maxP - 1) / p]`, so any two parallelisms cut the same groups and
//! rescaling moves whole key groups.

use serde::{Deserialize, Serialize};

/// Flink's `MathUtils.murmurHash(int)`: Murmur3's one-int mix, made non-negative.
pub fn murmur_hash(code: i32) -> i32 {
    let mut h = code.wrapping_mul(0xcc9e2d51u32 as i32);
    h = h.rotate_left(15);
    h = h.wrapping_mul(0x1b873593);
    h = h.rotate_left(13);
    h = h.wrapping_mul(5).wrapping_add(0xe6546b64u32 as i32);
    h ^= 4;
    // fmix32
    let mut u = h as u32;
    u ^= u >> 16;
    u = u.wrapping_mul(0x85ebca6b);
    u ^= u >> 13;
    u = u.wrapping_mul(0xc2b2ae35);
    u ^= u >> 16;
    let h = u as i32;
    if h >= 0 {
        h
    } else if h != i32::MIN {
        -h
    } else {
        0
    }
}

/// The 32-bit hash of a serialized key: Java's `Arrays.hashCode(byte[])`, so a key hashes the same
/// on every backend and every run.
pub fn key_hash(key: &[u8]) -> i32 {
    key.iter().fold(1i32, |h, b| {
        h.wrapping_mul(31).wrapping_add(*b as i8 as i32)
    })
}

pub fn key_group_for_hash(hash: i32, max_parallelism: u32) -> u32 {
    let h = murmur_hash(hash) as u32;
    // A division is a sixth of an in-cache state access; the default max parallelisms are powers
    // of two, where the remainder is a mask.
    if max_parallelism.is_power_of_two() {
        h & (max_parallelism - 1)
    } else {
        h % max_parallelism
    }
}

pub fn key_group_of(key: &[u8], max_parallelism: u32) -> u32 {
    key_group_for_hash(key_hash(key), max_parallelism)
}

/// The largest max parallelism Flink allows (`Short.MAX_VALUE + 1`).
pub const MAX_MAX_PARALLELISM: u32 = 32768;

/// Flink's default: `min(max(roundUpPow2(p + p / 2), 128), 32768)`.
pub fn default_max_parallelism(parallelism: u32) -> u32 {
    (parallelism + parallelism / 2)
        .next_power_of_two()
        .clamp(128, 32768)
}

/// An inclusive range of key groups: what one subtask of an operator owns. Keys hash to one of
/// `max_parallelism` key groups; `parallelism` subtasks split them into contiguous ranges, as
/// Flink's `KeyGroupRangeAssignment` does.
///
/// ```
/// use statefs_backend::KeyGroupRange;
/// let all = KeyGroupRange::all(128);
/// let halves = [0, 1].map(|i| KeyGroupRange::for_operator(128, 2, i));
/// assert_eq!(halves[0], KeyGroupRange::new(0, 63));
/// assert_eq!(halves[0].len() + halves[1].len(), all.len());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct KeyGroupRange {
    pub start: u32,
    pub end: u32,
}

impl KeyGroupRange {
    pub fn new(start: u32, end: u32) -> Self {
        assert!(start <= end, "empty key-group range {start}..={end}");
        KeyGroupRange { start, end }
    }

    /// All key groups of a job with `max_parallelism`.
    pub fn all(max_parallelism: u32) -> Self {
        Self::new(0, max_parallelism - 1)
    }

    /// The range subtask `index` of `parallelism` owns.
    pub fn for_operator(max_parallelism: u32, parallelism: u32, index: u32) -> Self {
        assert!(parallelism >= 1 && parallelism <= max_parallelism && index < parallelism);
        let start = (index as u64 * max_parallelism as u64).div_ceil(parallelism as u64) as u32;
        let end = (((index as u64 + 1) * max_parallelism as u64 - 1) / parallelism as u64) as u32;
        Self::new(start, end)
    }

    pub fn contains(&self, kg: u32) -> bool {
        (self.start..=self.end).contains(&kg)
    }

    pub fn len(&self) -> u32 {
        self.end - self.start + 1
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    pub fn iter(&self) -> impl Iterator<Item = u32> {
        self.start..=self.end
    }

    pub fn intersect(&self, other: &KeyGroupRange) -> Option<KeyGroupRange> {
        let (s, e) = (self.start.max(other.start), self.end.min(other.end));
        (s <= e).then(|| KeyGroupRange::new(s, e))
    }
}

/// The subtask that owns key group `kg`: `kg * parallelism / maxP`.
pub fn operator_index_for_key_group(max_parallelism: u32, parallelism: u32, kg: u32) -> u32 {
    (kg as u64 * parallelism as u64 / max_parallelism as u64) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur_matches_flink() {
        // Anchors computed with an independent (Python) transcription of MathUtils.murmurHash; they
        // pin the algorithm against accidental change. Not checked against a JVM here.
        assert_eq!(murmur_hash(0), 593_689_054);
        assert_eq!(murmur_hash(1), 68_075_478);
        assert_eq!(murmur_hash(42), 1_134_849_565);
        assert_eq!(murmur_hash(-1), 1_982_413_648);
        assert_eq!(key_group_for_hash(42, 128), 29);
        for code in [1, -1, 42, i32::MAX, i32::MIN] {
            assert!(murmur_hash(code) >= 0);
        }
    }

    #[test]
    fn ranges_partition_the_key_groups() {
        for maxp in [128u32, 256, 1000] {
            for p in [1, 2, 3, 7, 128] {
                if p > maxp {
                    continue;
                }
                let mut next = 0;
                for i in 0..p {
                    let r = KeyGroupRange::for_operator(maxp, p, i);
                    assert_eq!(r.start, next, "maxp {maxp} p {p} i {i}");
                    for kg in r.iter() {
                        assert_eq!(operator_index_for_key_group(maxp, p, kg), i);
                    }
                    next = r.end + 1;
                }
                assert_eq!(next, maxp);
            }
        }
    }

    #[test]
    fn key_group_is_flinks_modulo_for_every_max_parallelism() {
        for maxp in [1u32, 2, 3, 100, 128, 129, 1000, 1024, 32768] {
            for code in (-5000..5000).chain([i32::MIN, i32::MAX]) {
                let want = murmur_hash(code) as u32 % maxp;
                assert_eq!(
                    key_group_for_hash(code, maxp),
                    want,
                    "maxp {maxp} hash {code}"
                );
            }
        }
    }

    #[test]
    fn default_max_parallelism_as_flink() {
        assert_eq!(default_max_parallelism(1), 128);
        assert_eq!(default_max_parallelism(100), 256);
        assert_eq!(default_max_parallelism(30000), 32768);
    }
}
