//! Child process of the crash tests: writes keys to RocksDB with `sync = true` until a write fails,
//! recording after each acknowledged write how many keys are durable (in a file outside the mount).
//!
//! `crash_writer <db> <progress-file> [<first-key>]`. With `STATEFS_CRASH_CHECKPOINT` set to
//! `<statefs-binary>|<mount-point>|<log-file>|<every-ms>` it also publishes checkpoints of the
//! database (RocksDB's Checkpoint API, then `statefs checkpoint`) and appends `<id> <keys>` to
//! the log for each: the checkpoint holds at least keys `0..keys`. `STATEFS_CRASH_WRITE_PAUSE_US`
//! pauses after each write.

use std::io::Write;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

struct Checkpointer {
    statefs: String,
    mnt: std::path::PathBuf,
    log: std::fs::File,
    every: Duration,
    last: Instant,
}

impl Checkpointer {
    fn from_env() -> Option<Checkpointer> {
        let spec = std::env::var("STATEFS_CRASH_CHECKPOINT").ok()?;
        let parts: Vec<&str> = spec.split('|').collect();
        let [statefs, mnt, log, every] = parts[..] else {
            panic!("STATEFS_CRASH_CHECKPOINT: <statefs>|<mnt>|<log>|<every-ms>, not {spec:?}");
        };
        Some(Checkpointer {
            statefs: statefs.into(),
            mnt: mnt.into(),
            log: std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
                .expect("checkpoint log"),
            every: Duration::from_millis(every.parse().expect("every-ms")),
            last: Instant::now(),
        })
    }

    /// Publishes a checkpoint holding keys `0..acked` (at least); false if the mount is gone.
    fn publish(&mut self, db: &rocksdb::DB, acked: u64) -> bool {
        self.last = Instant::now();
        let dir = self.mnt.join("chk-tmp");
        let _ = std::fs::remove_dir_all(&dir);
        if rocksdb::checkpoint::Checkpoint::new(db)
            .and_then(|c| c.create_checkpoint(&dir))
            .is_err()
        {
            return false;
        }
        let out = std::process::Command::new(&self.statefs)
            .arg("checkpoint")
            .arg(&self.mnt)
            .arg(&dir)
            .output();
        let _ = std::fs::remove_dir_all(&dir);
        match out {
            Ok(o) if o.status.success() => {
                let text = String::from_utf8_lossy(&o.stdout);
                let id = text.lines().last().unwrap_or("").trim();
                writeln!(self.log, "{id} {acked}").expect("checkpoint log");
                self.log.sync_all().expect("checkpoint log");
                true
            }
            _ => false,
        }
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let usage = "usage: crash_writer <db> <progress-file> [<first-key>]";
    let db_path = args.next().expect(usage);
    let progress_path = args.next().expect(usage);
    let first: u64 = args.next().map_or(0, |s| s.parse().expect(usage));
    let progress = std::fs::File::create(&progress_path).expect("progress file");
    let mut opts = rocksdb::Options::default();
    opts.create_if_missing(true);
    // Tiny memtables and files: SSTs are flushed (uploaded) and compacted while the test runs.
    opts.set_write_buffer_size(256 << 10);
    opts.set_target_file_size_base(256 << 10);
    opts.set_level_zero_file_num_compaction_trigger(2);
    let db = rocksdb::DB::open(&opts, &db_path).expect("open db");
    let mut wo = rocksdb::WriteOptions::default();
    wo.set_sync(true);
    let mut checkpoints = Checkpointer::from_env();
    // A pause after each write (µs), so that a long crash loop's keys, all checked after every
    // round, grow slowly.
    let pause = std::env::var("STATEFS_CRASH_WRITE_PAUSE_US")
        .ok()
        .and_then(|v| v.parse().ok())
        .map(std::time::Duration::from_micros);
    for i in first.. {
        if db
            .put_opt(
                statefs_tests::crash_key(i),
                statefs_tests::crash_value(i),
                &wo,
            )
            .is_err()
        {
            std::process::exit(3);
        }
        // Written only after RocksDB acknowledged a synced write: keys 0..=i are durable.
        progress
            .write_all_at(&(i + 1).to_le_bytes(), 0)
            .expect("progress write");
        if let Some(p) = pause {
            std::thread::sleep(p);
        }
        if let Some(c) = checkpoints.as_mut()
            && c.last.elapsed() >= c.every
            && !c.publish(&db, i + 1)
        {
            std::process::exit(4);
        }
    }
}
