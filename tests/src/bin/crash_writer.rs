//! Child process of the crash test: writes keys to RocksDB with `sync = true` until a write fails,
//! recording after each acknowledged write how many keys are durable (in a file outside the mount).

use std::os::unix::fs::FileExt;

fn main() {
    let mut args = std::env::args().skip(1);
    let db_path = args
        .next()
        .expect("usage: crash_writer <db> <progress-file>");
    let progress_path = args
        .next()
        .expect("usage: crash_writer <db> <progress-file>");
    let progress = std::fs::File::create(&progress_path).expect("progress file");
    let mut opts = rocksdb::Options::default();
    opts.create_if_missing(true);
    // Tiny memtables: SSTs are flushed (and uploaded) while the test runs.
    opts.set_write_buffer_size(256 << 10);
    opts.set_target_file_size_base(256 << 10);
    let db = rocksdb::DB::open(&opts, &db_path).expect("open db");
    let mut wo = rocksdb::WriteOptions::default();
    wo.set_sync(true);
    for i in 0u64.. {
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
    }
}
