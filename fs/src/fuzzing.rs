//! Fuzz targets: every parser of bytes that statefs did not write in this process (journal,
//! snapshot, cache index rebuild, manifests, claims, mount records, the YAML config, the
//! endpoint's requests, remote URLs). Each takes arbitrary bytes, must never panic, hang or
//! allocate without bound, and checks a property of what it accepts.
//!
//! `fuzz/` (cargo-fuzz, `scripts/fuzz.sh`) drives them with libFuzzer; the normal test suite
//! replays the checked-in corpus and regressions under `fuzz/` through [`TARGETS`].

use crate::cache::{CacheConfig, CacheIndex, LimitPolicy};
use crate::journal::Journal;
use crate::table::MappingTable;

pub use statefs_store::fuzzing::{
    Target, assert_checked_in_inputs_pass, replay_checked_in, write_seeds,
};

/// Every target of this crate.
pub const TARGETS: &[Target] = &[
    ("journal", journal),
    ("journal_records", journal_records),
    ("snapshot", snapshot),
    ("cache_index", cache_index),
    ("manifest", manifest),
    ("mount_record", mount_record),
    ("config_yaml", config_yaml),
    ("http_request", http_request),
    ("remote_url", remote_url),
];

/// What a replayed table must satisfy: it is a tree ([`MappingTable::validate`]), and its snapshot
/// rebuilds the same table (what compaction relies on).
fn check_table(table: &MappingTable) {
    table
        .validate()
        .expect("replay returned a table that is not a tree");
    let ops = table.snapshot_ops();
    let mut again = MappingTable::new();
    again
        .apply_all(&ops)
        .expect("a table's snapshot applies to an empty table");
    assert_eq!(
        format!("{:?}", again.snapshot_ops()),
        format!("{ops:?}"),
        "snapshot round trip"
    );
    assert_eq!(again.publish_seq(), table.publish_seq());
}

/// The journal file as found on disk.
pub fn journal(data: &[u8]) {
    if let Ok(table) = Journal::replay_bytes(None, data) {
        check_table(&table);
    }
}

/// Journal records whose checksums are right, so that what lies behind them (JSON of ops, the
/// ops' effect on the table) is reached: each input line becomes one record.
pub fn journal_records(data: &[u8]) {
    let mut log = Vec::with_capacity(data.len() + data.len() / 4);
    for line in data.split(|b| *b == b'\n') {
        log.extend_from_slice(format!("{:08x} ", crc32c::crc32c(line)).as_bytes());
        log.extend_from_slice(line);
        log.push(b'\n');
    }
    if let Ok(table) = Journal::replay_bytes(None, &log) {
        check_table(&table);
    }
}

/// A snapshot file (header line and records) followed by nothing.
pub fn snapshot(data: &[u8]) {
    if let Ok(table) = Journal::replay_bytes(Some(data), b"") {
        check_table(&table);
    }
}

/// The cache index as a mount rebuilds it (present and cold entries of any size, as a damaged
/// journal may state them) and then uses it: the hot bytes never exceed the size limit, beyond
/// what is held open.
pub fn cache_index(data: &[u8]) {
    let mut bytes = data.iter().copied();
    let mut next = |n: usize| -> Option<u64> {
        let mut v = 0u64;
        for _ in 0..n {
            v = (v << 8) | u64::from(bytes.next()?);
        }
        Some(v)
    };
    let Some(capacity) = next(4) else { return };
    let cfg = CacheConfig {
        size_limit: capacity,
        reserve_size: 0,
        access_before_promote: 2,
        promote_limit: 3,
        target_file_size: capacity / 4,
        ..CacheConfig::default()
    };
    let mut index = CacheIndex::new(cfg, LimitPolicy::Size { capacity });
    let ids: Vec<uuid::Uuid> = (0..16u128).map(uuid::Uuid::from_u128).collect();
    let mut held = 0u64;
    while let (Some(op), Some(which)) = (next(1), next(1)) {
        let id = ids[which as usize % ids.len()];
        match op % 8 {
            0 => {
                let Some(size) = next(8) else { return };
                index.register_present(id, size);
            }
            1 => {
                let Some(size) = next(8) else { return };
                index.register_cold(id, size, which & 1 == 1);
            }
            2 | 3 => {
                index.access(id);
            }
            4 => {
                let Some(size) = next(8) else { return };
                index.insert_written(id, size);
            }
            5 => index.remove(&id),
            6 => index.load_failed(id),
            _ => {
                let Some(size) = next(2) else { return };
                // The core releases only what it held (a demoted copy still open).
                if which & 1 == 1 {
                    index.hold(size);
                    held += size;
                } else {
                    let size = size.min(held);
                    index.unhold(size);
                    held -= size;
                }
                index.enforce();
            }
        }
        let used = index.stats().used;
        assert!(
            used <= capacity.saturating_add(held),
            "{used} hot bytes over a limit of {capacity} (+{held} held)"
        );
    }
}

/// A checkpoint manifest, and the claim file beside it. What a manifest that parses names is
/// safe to restore: relative names of ordinary components, no duplicates, keys in the areas a
/// checkpoint may name; and it survives a round trip.
pub fn manifest(data: &[u8]) {
    let _ = crate::checkpoint::Claim::parse(data);
    let id = "ckp-0000000000000001";
    if let Ok(m) = crate::checkpoint::Manifest::parse(id, data) {
        let mut names = std::collections::BTreeSet::new();
        for f in &m.files {
            assert!(
                crate::checkpoint::check_name(&f.name).is_ok(),
                "{:?}",
                f.name
            );
            assert!(names.insert(f.name.as_str()), "{:?} twice", f.name);
            assert!(
                f.key.starts_with("data/")
                    || f.key.starts_with("copies/")
                    || f.key.starts_with(&format!("checkpoints/{id}/")),
                "{:?}",
                f.key
            );
        }
        let bytes = serde_json::to_vec(&m).expect("a manifest serializes");
        assert_eq!(
            crate::checkpoint::Manifest::parse(id, &bytes).expect("round trip"),
            m
        );
    }
}

/// A mount record: the mount id it names is one a key may hold.
pub fn mount_record(data: &[u8]) {
    if let Ok(r) = crate::checkpoint::MountRecord::parse("mounts/x", data) {
        assert!(crate::checkpoint::gc::valid_mount_id(&r.mount_id));
    }
}

/// The YAML config file: any text gives settings or an error naming what is wrong.
pub fn config_yaml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut settings = crate::options::Settings::default();
    if settings.load_yaml(text, "fuzz.yaml").is_ok() {
        let _ = settings.mount_config();
    }
}

/// A request head on the endpoints.
pub fn http_request(data: &[u8]) {
    let limits = crate::endpoint::Limits::default();
    if let Ok(r) = crate::endpoint::parse_head(data, &limits) {
        assert!(r.target.starts_with('/'));
        assert!(data.len() <= limits.max_head_bytes);
        let _ = crate::mount::parse_control(&r.target);
    }
}

/// A `--remote` URL: what parses is a store statefs can name.
pub fn remote_url(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(crate::store::RemoteSpec::File { root }) = crate::store::RemoteSpec::parse(text) {
        assert!(root.is_absolute(), "{root:?}");
        assert!(
            !root
                .components()
                .any(|c| matches!(c, std::path::Component::ParentDir)),
            "{root:?}"
        );
    }
}

/// Valid inputs of every target, written by statefs itself: where the fuzzer starts.
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    use crate::checkpoint::{Manifest, ManifestFile, MountRecord};
    use crate::placement::Placement;
    use crate::table::{FileMeta, InodeMeta, NodeKind, Op, Ownership, Sealed};
    let file = |ino, sealed: Option<Sealed>| {
        Op::PutInode(InodeMeta {
            ino,
            kind: NodeKind::File(FileMeta {
                placement: if sealed.is_some() {
                    Placement::Remote
                } else {
                    Placement::Local
                },
                local_id: uuid::Uuid::from_u128(ino as u128),
                sealed,
            }),
            perm: 0o644,
            uid: 0,
            gid: 0,
            mtime_ns: 1,
            ctime_ns: 1,
            atime_ns: None,
        })
    };
    let entry = |parent, name: &str, ino| Op::PutEntry {
        parent,
        name: name.into(),
        ino,
    };
    let sealed = Sealed {
        key: "data/m-1/00000000-0000-0000-0000-000000000005".into(),
        size: 4096,
        crc32c: 7,
        ownership: Ownership::Owned,
        local_stamp: None,
    };
    let records: Vec<Vec<Op>> = vec![
        vec![MappingTable::root_op(0o755, 0, 0, 1)],
        vec![crate::table::dir_op(2), entry(1, "db", 2)],
        vec![file(3, None), entry(2, "CURRENT", 3)],
        vec![file(4, Some(sealed)), entry(2, "000005.sst", 4)],
        vec![entry(2, "000005.link", 4)],
        vec![
            Op::DelEntry {
                parent: 2,
                name: "000005.link".into(),
            },
            Op::PublishSeq(3),
        ],
        vec![
            Op::DelEntry {
                parent: 2,
                name: "CURRENT".into(),
            },
            Op::DropInode(3),
        ],
    ];
    let mut log = Vec::new();
    let mut json_lines = Vec::new();
    for r in &records {
        log.extend(crate::journal::encode(r));
        json_lines.extend(serde_json::to_vec(r).unwrap());
        json_lines.push(b'\n');
    }
    json_lines.pop();
    let mut table = MappingTable::new();
    for r in &records {
        table.apply_all(r).unwrap();
    }
    let mut snap = b"statefs-snapshot v1 generation 2\n".to_vec();
    snap.extend(crate::journal::encode(&table.snapshot_ops()));
    let manifest = Manifest {
        format: crate::checkpoint::FORMAT.into(),
        version: crate::checkpoint::VERSION,
        id: "ckp-0000000000000001".into(),
        mount_id: "m-1".into(),
        created_ms: 1,
        seq: 3,
        files: vec![
            ManifestFile {
                name: "db/000005.sst".into(),
                key: "data/m-1/00000000-0000-0000-0000-000000000005".into(),
                size: 4096,
                crc32c: 7,
                local: false,
                heat: None,
            },
            ManifestFile {
                name: "db/CURRENT".into(),
                key: "copies/m-1/00000000-0000-0000-0000-000000000006".into(),
                size: 16,
                crc32c: 9,
                local: true,
                heat: None,
            },
        ],
    };
    let record = MountRecord {
        mount_id: "0f6c2a4e-1111-4222-8333-944455556666".into(),
        host: "h".into(),
        local_dir: "/var/lib/statefs/local".into(),
        updated_ms: 5,
        keys: vec!["data/m-1/00000000-0000-0000-0000-000000000005".into()],
    };
    let mut cache = vec![0, 0, 1, 0];
    for (op, which) in [
        (0u8, 1u8),
        (1, 2),
        (2, 2),
        (3, 2),
        (4, 3),
        (7, 1),
        (5, 1),
        (6, 2),
    ] {
        cache.extend([op, which]);
        if matches!(op, 0 | 1 | 4) {
            cache.extend(300u64.to_be_bytes());
        }
        if op == 7 {
            cache.extend(20u16.to_be_bytes());
        }
    }
    vec![
        ("journal", log),
        ("journal_records", json_lines),
        ("snapshot", snap),
        ("cache_index", cache),
        ("manifest", serde_json::to_vec_pretty(&manifest).unwrap()),
        (
            "manifest",
            serde_json::to_vec(&crate::checkpoint::Claim {
                mount_id: "m-1".into(),
                seq: 4,
            })
            .unwrap(),
        ),
        ("mount_record", serde_json::to_vec(&record).unwrap()),
        (
            "config_yaml",
            b"state:\n  backend:\n    forst:\n      primary-dir: file:///var/lib/statefs/remote\n      local-dir: /var/lib/statefs/local\n      cache:\n        dir: /var/cache/statefs\n        size-based-limit: 1gb\nstatefs.cache.block.size: 64kb\nstatefs.s3.allow-http: true\nstate.checkpoints.num-retained: 3\n".to_vec(),
        ),
        (
            "http_request",
            b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:9100\r\nAccept: */*".to_vec(),
        ),
        (
            "http_request",
            b"POST /checkpoint?dir=db%2Fchk-1 HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nConnection: close".to_vec(),
        ),
        ("remote_url", b"file:///var/lib/statefs/remote".to_vec()),
        ("remote_url", b"s3://bucket/prefix/one".to_vec()),
        ("remote_url", b"memory://".to_vec()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes the seed corpus (run by hand when a format changes:
    /// `cargo test -p statefs --lib -- --ignored write_fuzz_seeds`).
    #[test]
    #[ignore]
    fn write_fuzz_seeds() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
        write_seeds(&dir, &seeds());
    }

    /// Every seed is accepted by its parser: the corpus starts from inputs that reach deep.
    #[test]
    fn seeds_are_valid_inputs() {
        for (target, bytes) in seeds() {
            let ok = match target {
                "journal" => Journal::replay_bytes(None, &bytes).is_ok(),
                "snapshot" => Journal::replay_bytes(Some(&bytes), b"").is_ok(),
                "manifest" => {
                    bytes.starts_with(b"{\"mount_id")
                        || crate::checkpoint::Manifest::parse("ckp-0000000000000001", &bytes)
                            .is_ok()
                }
                "mount_record" => crate::checkpoint::MountRecord::parse("k", &bytes).is_ok(),
                "config_yaml" => crate::options::Settings::default()
                    .load_yaml(std::str::from_utf8(&bytes).unwrap(), "seed")
                    .is_ok(),
                "http_request" => crate::endpoint::parse_head(&bytes, &Default::default()).is_ok(),
                "remote_url" => {
                    crate::store::RemoteSpec::parse(std::str::from_utf8(&bytes).unwrap()).is_ok()
                }
                _ => true,
            };
            assert!(
                ok,
                "seed of {target} is refused: {}",
                String::from_utf8_lossy(&bytes)
            );
            let f = TARGETS.iter().find(|(n, _)| *n == target).unwrap().1;
            f(&bytes);
        }
    }

    /// The checked-in corpus and every regression the fuzzer found still pass.
    #[test]
    fn checked_in_fuzz_inputs_pass() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
        assert_checked_in_inputs_pass(&dir, TARGETS);
    }
}
