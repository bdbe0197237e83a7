//! Limit policies, as ForSt's `SizeBased`, `SpaceBased` and `Bundled` cache limit policies.

use std::fmt::Debug;
use std::path::PathBuf;

/// Free bytes of the cache directory's file system (injected, so tests need no real disk).
pub trait FreeSpace: Send + Sync + Debug {
    fn free_bytes(&self) -> u64;
}

#[derive(Debug, Clone)]
pub struct StatvfsFreeSpace(pub PathBuf);

impl FreeSpace for StatvfsFreeSpace {
    fn free_bytes(&self) -> u64 {
        nix::sys::statvfs::statvfs(&self.0)
            .map(|s| s.blocks_available() * s.fragment_size())
            .unwrap_or(0)
    }
}

/// What the cache may hold. `used` is the bytes of hot copies.
#[derive(Debug)]
pub enum LimitPolicy {
    /// Hot bytes at most `capacity`.
    Size { capacity: u64 },
    /// Keep `reserved` bytes of the disk free.
    Space {
        free: Box<dyn FreeSpace>,
        reserved: u64,
    },
    /// Every policy must agree.
    Bundled(Vec<LimitPolicy>),
    /// No cache.
    Disabled,
}

impl LimitPolicy {
    pub fn from_config(
        size_limit: u64,
        reserve_size: u64,
        free: Box<dyn FreeSpace>,
    ) -> LimitPolicy {
        let space_usable = reserve_size > 0 && free.free_bytes() > 0;
        match (size_limit > 0, space_usable) {
            (false, false) => LimitPolicy::Disabled,
            (true, false) => LimitPolicy::Size {
                capacity: size_limit,
            },
            (false, true) => LimitPolicy::Space {
                free,
                reserved: reserve_size,
            },
            (true, true) => LimitPolicy::Bundled(vec![
                LimitPolicy::Size {
                    capacity: size_limit,
                },
                LimitPolicy::Space {
                    free,
                    reserved: reserve_size,
                },
            ]),
        }
    }

    /// Whether a file of `size` bytes could ever fit (possibly after evicting everything else).
    pub fn is_safe_to_add(&self, size: u64, used: u64) -> bool {
        match self {
            LimitPolicy::Size { capacity } => size <= *capacity,
            LimitPolicy::Space { free, reserved } => {
                (size as i128) <= free.free_bytes() as i128 - *reserved as i128 + used as i128
            }
            LimitPolicy::Bundled(ps) => ps.iter().all(|p| p.is_safe_to_add(size, used)),
            LimitPolicy::Disabled => false,
        }
    }

    /// Whether adding `size` bytes now would exceed the limit. `on_disk`: the bytes are already on
    /// disk (a file written through the mount), so they take no further free space.
    pub fn is_overflow(&self, size: u64, used: u64, on_disk: bool) -> bool {
        match self {
            LimitPolicy::Size { capacity } => used.saturating_add(size) > *capacity,
            LimitPolicy::Space { free, reserved } => {
                let add = if on_disk { 0 } else { size };
                (add as i128) > free.free_bytes() as i128 - *reserved as i128
            }
            LimitPolicy::Bundled(ps) => ps.iter().any(|p| p.is_overflow(size, used, on_disk)),
            LimitPolicy::Disabled => true,
        }
    }

    /// Whether a newly written file enters the hot list: there is room for one target file.
    pub fn direct_write(&self, target_file_size: u64, used: u64) -> bool {
        self.is_safe_to_add(target_file_size, used)
    }

    /// Bytes that can still be added before overflowing (for the `remaining` gauge).
    pub fn remaining(&self, used: u64) -> u64 {
        match self {
            LimitPolicy::Size { capacity } => capacity.saturating_sub(used),
            LimitPolicy::Space { free, reserved } => free.free_bytes().saturating_sub(*reserved),
            LimitPolicy::Bundled(ps) => ps.iter().map(|p| p.remaining(used)).min().unwrap_or(0),
            LimitPolicy::Disabled => 0,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[derive(Debug, Clone, Default)]
    pub struct FakeFree(pub Arc<AtomicU64>);
    impl FreeSpace for FakeFree {
        fn free_bytes(&self) -> u64 {
            self.0.load(Ordering::Relaxed)
        }
    }
    pub fn free(bytes: u64) -> FakeFree {
        FakeFree(Arc::new(AtomicU64::new(bytes)))
    }

    #[test]
    fn policy_table() {
        // (policy, size, used, on_disk) -> (safe_to_add, overflow)
        let size = || LimitPolicy::Size { capacity: 100 };
        let space = |f: u64| LimitPolicy::Space {
            free: Box::new(free(f)),
            reserved: 50,
        };
        let cases: Vec<(LimitPolicy, u64, u64, bool, bool, bool)> = vec![
            (size(), 100, 0, false, true, false),
            (size(), 101, 0, false, false, true),
            (size(), 40, 70, false, true, true),
            (size(), 30, 70, false, true, false),
            // 200 free, 50 reserved: 150 may be added now; with 30 used, 180 could fit after eviction.
            (space(200), 150, 0, false, true, false),
            (space(200), 151, 0, false, false, true),
            (space(200), 180, 30, false, true, true),
            (space(200), 151, 0, true, false, false),
            (space(40), 10, 0, true, false, true),
            (space(40), 10, 0, false, false, true),
            (
                LimitPolicy::Bundled(vec![size(), space(1000)]),
                90,
                20,
                false,
                true,
                true,
            ),
            (
                LimitPolicy::Bundled(vec![size(), space(100)]),
                60,
                0,
                false,
                false,
                true,
            ),
            (LimitPolicy::Disabled, 1, 0, false, false, true),
        ];
        for (i, (p, s, used, on_disk, safe, over)) in cases.into_iter().enumerate() {
            assert_eq!(p.is_safe_to_add(s, used), safe, "case {i}: safe_to_add");
            assert_eq!(p.is_overflow(s, used, on_disk), over, "case {i}: overflow");
        }
    }

    #[test]
    fn from_config_picks_like_forst() {
        assert!(matches!(
            LimitPolicy::from_config(0, 0, Box::new(free(10))),
            LimitPolicy::Disabled
        ));
        assert!(matches!(
            LimitPolicy::from_config(5, 0, Box::new(free(10))),
            LimitPolicy::Size { capacity: 5 }
        ));
        assert!(matches!(
            LimitPolicy::from_config(0, 5, Box::new(free(10))),
            LimitPolicy::Space { .. }
        ));
        assert!(matches!(
            LimitPolicy::from_config(5, 5, Box::new(free(10))),
            LimitPolicy::Bundled(_)
        ));
        // A space limit on a file system reporting no free space is not used (ForSt does the same).
        assert!(matches!(
            LimitPolicy::from_config(5, 5, Box::new(free(0))),
            LimitPolicy::Size { .. }
        ));
        assert_eq!(LimitPolicy::Size { capacity: 100 }.remaining(30), 70);
    }
}
