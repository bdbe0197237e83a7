//! The RocksDB workload against a real S3-compatible server (moto) on loopback.

use std::sync::Arc;

use rocksdb::{DB, Options};
use statefs::MountHandle;
use statefs::store::{RemoteSpec, RemoteStore, S3Options};
use statefs_tests::{Dirs, S3Server};

fn s3_config(dirs: &Dirs, server: &S3Server) -> statefs::MountConfig {
    let mut c = statefs::MountConfig::new("s3://statefs-test/prefix/one", &dirs.local, &dirs.cache);
    c.s3 = S3Options {
        endpoint: Some(server.endpoint.clone()),
        region: Some("us-east-1".into()),
        access_key_id: Some("testing".into()),
        secret_access_key: Some("testing".into()),
        allow_http: false,
        request_timeout: None,
    };
    // Small parts so multipart uploads are exercised too.
    c.multipart_threshold = 6 << 20;
    c.part_size = 5 << 20;
    c
}

#[test]
fn rocksdb_on_s3_writes_reopens_and_reads_cold() {
    let server = S3Server::start("statefs-test");
    let dirs = Dirs::new();
    let config = s3_config(&dirs, &server);
    let db_path = dirs.mnt.join("db");
    let key = |i: u32| format!("k{i:07}").into_bytes();
    let value = |i: u32| vec![(i % 251) as u8; 200];
    {
        let _mount = MountHandle::mount(&config, &dirs.mnt).unwrap();
        let mut o = Options::default();
        o.create_if_missing(true);
        o.set_write_buffer_size(8 << 20);
        let db = DB::open(&o, &db_path).unwrap();
        for i in 0..60_000 {
            db.put(key(i), value(i)).unwrap();
        }
        db.flush().unwrap();
        db.compact_range::<&[u8], &[u8]>(None, None);
        // A big file through the mount takes the multipart path.
        std::fs::write(dirs.mnt.join("big.sst"), vec![9u8; 13 << 20]).unwrap();
        std::fs::File::open(dirs.mnt.join("big.sst"))
            .unwrap()
            .sync_all()
            .unwrap();
    }
    let rt = statefs::mount::runtime().unwrap();
    let store = RemoteSpec::parse("s3://statefs-test/prefix/one")
        .unwrap()
        .open(&config.s3, rt)
        .unwrap();
    let objects = store.list("data/").unwrap();
    assert!(objects.len() >= 2, "{objects:?}");
    assert!(
        objects.iter().any(|o| o.size == 13 << 20),
        "multipart object stored whole"
    );
    // Seen from the bucket root, everything the mount wrote is under its prefix.
    let bucket: Arc<dyn RemoteStore> = Arc::new(
        RemoteSpec::parse("s3://statefs-test")
            .unwrap()
            .open(&config.s3, statefs::mount::runtime().unwrap())
            .unwrap(),
    );
    let all = bucket.list("").unwrap();
    assert!(
        all.iter().all(|o| o.key.starts_with("prefix/one/")),
        "{all:?}"
    );
    assert!(
        all.iter().any(|o| o.key.starts_with("prefix/one/mounts/")),
        "the mount record is there too"
    );

    // Cold: no local copies at all, every read goes to S3 (the warm-up, which would load the
    // hot list's copies back and fetch opened files first, is off: tests/cache.rs covers it).
    std::fs::remove_dir_all(&dirs.cache).unwrap();
    let mut config = config;
    config.cache.warm.memory = 0;
    let mount = MountHandle::mount(&config, &dirs.mnt).unwrap();
    let db = DB::open(&Options::default(), &db_path).unwrap();
    for i in (0..60_000).step_by(7) {
        assert_eq!(db.get(key(i)).unwrap(), Some(value(i)), "key {i}");
    }
    drop(db);
    let downloads = || {
        mount
            .core()
            .metrics
            .downloads
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    // Promoted SSTs that RocksDB read may be loading meanwhile, so at least one more.
    let before = downloads();
    // Opening the cold 13 MB file for writing downloads it first, streamed from S3 into its local
    // copy; the appended bytes then go up as a new version.
    {
        use std::io::{Seek, Write};
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(dirs.mnt.join("big.sst"))
            .unwrap();
        f.seek(std::io::SeekFrom::End(0)).unwrap();
        f.write_all(b"tail").unwrap();
        f.sync_all().unwrap();
    }
    let mut want = vec![9u8; 13 << 20];
    want.extend_from_slice(b"tail");
    assert!(std::fs::read(dirs.mnt.join("big.sst")).unwrap() == want);
    assert!(downloads() > before, "a whole-file download, for the write");
    assert!(
        mount
            .remote_metrics
            .gets
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
    );
    mount.unmount().unwrap();
}
