//! Fuzz targets of the backend library: the savepoint/snapshot format and checkpoint metadata,
//! what a restore reads from storage it does not control. See `statefs::fuzzing` for the
//! conventions: never panic, check a property of what is accepted.

use crate::backend::StateBackend;
use crate::heap::HeapBackend;
use crate::keygroup::KeyGroupRange;
use crate::snapshot::{self, ByteSource, SnapshotReader};

/// Every target of this crate.
pub const TARGETS: &[statefs_store::fuzzing::Target] = &[
    ("savepoint", savepoint),
    ("savepoint_raw", savepoint_raw),
    ("checkpoint_metadata", checkpoint_metadata),
];

/// A savepoint as bytes on storage, checksums and all: every key group it indexes is read.
pub fn savepoint_raw(data: &[u8]) {
    let src = data.to_vec();
    if let Ok(r) = SnapshotReader::open(&src, "fuzz") {
        for kg in r.header.range.iter().take(1 << 16) {
            let _ = r.key_group(kg);
        }
    }
}

/// A savepoint whose checksums are right, restored into a heap backend: what restores can be
/// written again, and writing is then a fixed point (restore of the rewrite writes the same).
///
/// Input: `u16` header length, the header, then blocks as `u16` key group, `u16` length, bytes.
pub fn savepoint(data: &[u8]) {
    let Some((header, mut rest)) = split_u16(data) else {
        return;
    };
    let mut blocks = Vec::new();
    while rest.len() >= 2 {
        let kg = u16::from_le_bytes([rest[0], rest[1]]) as u32;
        let Some((block, r)) = split_u16(&rest[2..]) else {
            break;
        };
        blocks.push((kg, block));
        rest = r;
    }
    let bytes = snapshot::assemble(header, &blocks);
    let Ok(r) = SnapshotReader::open(&bytes, "fuzz") else {
        return;
    };
    let maxp = r.header.max_parallelism;
    let restore = |bytes: &Vec<u8>| -> Option<Vec<u8>> {
        let mut b = HeapBackend::new(KeyGroupRange::all(maxp), maxp);
        snapshot::restore(&mut b, &[(bytes as &dyn ByteSource, "fuzz".into())]).ok()?;
        Some(
            snapshot::write(b.snapshot_view().ok()?.as_ref(), 0)
                .expect("a restored backend writes"),
        )
    };
    if let Some(first) = restore(&bytes) {
        let second = restore(&first).expect("a written snapshot restores");
        let third = restore(&second).expect("a written snapshot restores");
        assert_eq!(second, third, "restore and write is not a fixed point");
    }
}

/// `u16` little-endian length, then that many bytes: (them, the rest).
fn split_u16(data: &[u8]) -> Option<(&[u8], &[u8])> {
    let n = u16::from_le_bytes([*data.first()?, *data.get(1)?]) as usize;
    let body = data.get(2..2 + n)?;
    Some((body, &data[2 + n..]))
}

/// A completed checkpoint's metadata, as a restore reads it.
pub fn checkpoint_metadata(data: &[u8]) {
    if let Ok(c) = crate::checkpoint::CompletedCheckpoint::parse(data, 7, "job", "fuzz") {
        for t in &c.subtasks {
            assert!(t.file.starts_with("job/") && !t.file.contains(".."));
            assert!(t.range.start <= t.range.end && t.range.end < c.max_parallelism);
        }
    }
}

/// Valid inputs of every target, written by the library itself: where the fuzzer starts.
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    use crate::states::Keyed;
    let maxp = 128;
    let mut kb =
        Keyed::<String, HeapBackend>::new(HeapBackend::new(KeyGroupRange::all(maxp), maxp));
    let value = kb.value_state::<u64>("count", None).unwrap();
    let list = kb.list_state::<String>("events", None).unwrap();
    let map = kb.map_state::<String, u32>("by-name", None).unwrap();
    for k in ["a", "b", "c", "d"] {
        kb.set_current_key(&k.to_string()).unwrap();
        value.update(&mut kb, &(k.len() as u64 * 7)).unwrap();
        list.add(&mut kb, &format!("{k}-1")).unwrap();
        list.add(&mut kb, &format!("{k}-2")).unwrap();
        map.put(&mut kb, &"x".to_string(), &3).unwrap();
    }
    let bytes = snapshot::write(kb.backend().snapshot_view().unwrap().as_ref(), 0).unwrap();
    let (header, blocks) = snapshot::disassemble(&bytes).unwrap();
    let mut harness = (header.len() as u16).to_le_bytes().to_vec();
    harness.extend(&header);
    for (kg, block) in &blocks {
        harness.extend((*kg as u16).to_le_bytes());
        harness.extend((block.len() as u16).to_le_bytes());
        harness.extend(block);
    }
    let metadata = crate::checkpoint::CompletedCheckpoint {
        format: "statefs-backend-checkpoint".into(),
        version: 1,
        job: "job".into(),
        id: 7,
        max_parallelism: 128,
        subtasks: vec![crate::checkpoint::SubtaskState {
            range: KeyGroupRange::new(0, 63),
            file: "job/chk-7/0".into(),
            size: bytes.len() as u64,
            shared: vec!["job/shared/000009.sst".into()],
            backend: Some("rocksdb".into()),
        }],
        operators: vec![crate::checkpoint::OperatorPart {
            operator: "source".into(),
            subtask: 0,
            parallelism: 1,
            file: "job/taskowned/1".into(),
            size: 12,
        }],
    };
    vec![
        ("savepoint", harness),
        ("savepoint_raw", bytes),
        (
            "checkpoint_metadata",
            serde_json::to_vec_pretty(&metadata).unwrap(),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes the seed corpus (by hand when a format changes:
    /// `cargo test -p statefs-backend --lib -- --ignored write_fuzz_seeds`).
    #[test]
    #[ignore]
    fn write_fuzz_seeds() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
        statefs_store::fuzzing::write_seeds(&dir, &seeds());
    }

    /// Metadata naming key groups past its max parallelism, or a reversed range, is refused.
    #[test]
    fn checkpoint_metadata_with_impossible_ranges_is_refused() {
        let seed = seeds()
            .into_iter()
            .find(|(t, _)| *t == "checkpoint_metadata")
            .unwrap()
            .1;
        let mut c: crate::checkpoint::CompletedCheckpoint = serde_json::from_slice(&seed).unwrap();
        crate::checkpoint::CompletedCheckpoint::parse(&seed, 7, "job", "t").unwrap();
        for (start, end) in [(0, 128), (9, 3)] {
            c.subtasks[0].range = KeyGroupRange { start, end };
            let bytes = serde_json::to_vec(&c).unwrap();
            let err =
                crate::checkpoint::CompletedCheckpoint::parse(&bytes, 7, "job", "t").unwrap_err();
            assert!(err.to_string().contains("max parallelism"), "{err}");
        }
    }

    /// Every seed restores (or parses): the corpus starts from inputs that reach deep.
    #[test]
    fn seeds_are_valid_inputs() {
        for (target, bytes) in seeds() {
            match target {
                "savepoint_raw" => {
                    SnapshotReader::open(&bytes, "seed").unwrap();
                }
                "checkpoint_metadata" => {
                    crate::checkpoint::CompletedCheckpoint::parse(&bytes, 7, "job", "seed")
                        .unwrap();
                }
                _ => {}
            }
            let f = TARGETS.iter().find(|(n, _)| *n == target).unwrap().1;
            f(&bytes);
        }
    }

    /// The checked-in corpus and every regression the fuzzer found still pass.
    #[test]
    fn checked_in_fuzz_inputs_pass() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
        statefs_store::fuzzing::assert_checked_in_inputs_pass(&dir, TARGETS);
    }
}
