//! The store suite (remote_suite) against a real S3-compatible server (moto) on loopback.

use statefs::store::S3Options;
use statefs_tests::{Dirs, S3Server};

mod remote_suite;

fn s3_config(dirs: &Dirs, server: &S3Server, url: &str) -> statefs::MountConfig {
    let mut c = statefs::MountConfig::new(url, &dirs.local, &dirs.cache);
    c.s3 = S3Options {
        endpoint: Some(server.endpoint.clone()),
        region: Some("us-east-1".into()),
        access_key_id: Some("testing".into()),
        secret_access_key: Some("testing".into()),
        allow_http: false,
        request_timeout: None,
    };
    c
}

#[test]
fn rocksdb_on_s3_writes_reopens_and_reads_cold() {
    let server = S3Server::start("statefs-test");
    let dirs = Dirs::new();
    let config = s3_config(&dirs, &server, "s3://statefs-test/prefix/one");
    remote_suite::rocksdb_workload(config, &dirs, "s3://statefs-test");
}

#[test]
fn gc_on_s3() {
    let server = S3Server::start("statefs-gc");
    let dirs = Dirs::new();
    let config = s3_config(&dirs, &server, "s3://statefs-gc/p");
    let remote = remote_suite::open_store("s3://statefs-gc/p", &config);
    remote_suite::gc_scenario(remote, config, &dirs.mnt, &dirs);
}
