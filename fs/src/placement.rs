//! Which files live in the object store and which stay on local disk.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Placement {
    /// Bytes go to the object store (`<prefix>/data/<uuid>`) once synced; a local copy may be kept.
    Remote,
    /// Bytes stay in a file under the local dir.
    Local,
}

/// The one placement rule, as ForSt's `FileOwnershipDecider`: only immutable SST files (`*.sst`) go to
/// the object store. MANIFEST, CURRENT, OPTIONS, LOG, WAL (`*.log`), LOCK, IDENTITY and temporary
/// files (`*.dbtmp`) are rewritten or appended in place and stay local.
///
/// The decision is made once, at create, from the name the file is created under; a later rename does
/// not move bytes.
pub fn placement_for(name: &str) -> Placement {
    if name.ends_with(".sst") {
        Placement::Remote
    } else {
        Placement::Local
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sst_files_are_remote() {
        for name in ["000012.sst", "x.sst"] {
            assert_eq!(placement_for(name), Placement::Remote, "{name}");
        }
        for name in [
            "MANIFEST-000005",
            "CURRENT",
            "OPTIONS-000007",
            "LOG",
            "LOG.old.1",
            "000003.log",
            "LOCK",
            "IDENTITY",
            "000009.dbtmp",
            "sst",
            ".sst.tmp",
            "a.sst.bak",
            "000012.SST",
        ] {
            assert_eq!(placement_for(name), Placement::Local, "{name}");
        }
    }
}
