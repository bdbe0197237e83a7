//! Parsing `--remote` URLs and building the matching object store.

use std::path::PathBuf;
use std::sync::Arc;

use object_store::ObjectStore;
use tokio::runtime::Runtime;

use super::{ObjectStoreRemote, StoreError};

/// Where SST objects live, from a `--remote` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteSpec {
    /// `file:///abs/path`: a local directory (the embedded default).
    File { root: PathBuf },
    /// `s3://bucket/optional/prefix`.
    S3 { bucket: String, prefix: String },
    /// `gs://bucket/optional/prefix`: Google Cloud Storage. Credentials as Google's tools find
    /// them (`GOOGLE_APPLICATION_CREDENTIALS`, `GOOGLE_SERVICE_ACCOUNT_PATH`, the gcloud
    /// application-default file, the metadata server); other `GOOGLE_*` settings from the
    /// environment too (`GOOGLE_BASE_URL` for an emulator).
    Gcs { bucket: String, prefix: String },
    /// `az://container/optional/prefix`: Azure Blob Storage. The account and its credentials from
    /// the environment (`AZURE_STORAGE_ACCOUNT_NAME` with `AZURE_STORAGE_ACCOUNT_KEY`, a SAS, a
    /// service principal, a managed identity, or `AZURE_STORAGE_USE_EMULATOR` for Azurite).
    Azure { container: String, prefix: String },
    /// `memory://`: in-process, lost at unmount; for tests.
    Memory,
}

/// S3 settings beyond the URL; unset fields come from the usual `AWS_*` environment variables.
/// Its `Debug` hides the secret.
#[derive(Clone, Default)]
pub struct S3Options {
    /// `AWS_ENDPOINT_URL` / `--s3-endpoint`, e.g. `http://127.0.0.1:9000`.
    pub endpoint: Option<String>,
    /// `AWS_REGION` / `--s3-region`.
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    /// Plain http to a non-loopback endpoint. Loopback endpoints may always use http.
    pub allow_http: bool,
    /// Longest time one HTTP request may take (connecting: at most 5 s of it); `None`: the
    /// retry policy's default. The client itself never retries: [`super::RetryingRemote`] does.
    pub request_timeout: Option<std::time::Duration>,
}

impl std::fmt::Debug for S3Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Options")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "hidden"),
            )
            .field("allow_http", &self.allow_http)
            .field("request_timeout", &self.request_timeout)
            .finish()
    }
}

/// Whether a `/`-separated path has a `.` or `..` segment.
fn has_dot_segment(path: &[u8]) -> bool {
    path.split(|b| *b == b'/')
        .any(|seg| seg == b"." || seg == b"..")
}

/// `%XX` escapes of `seg` decoded (a bad escape is kept as it is).
fn percent_decode(seg: &str) -> Vec<u8> {
    let b = seg.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (
            b[i],
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

impl RemoteSpec {
    /// Parses a store URL: `file:///abs/path`, `s3://bucket/prefix`, `gs://bucket/prefix`,
    /// `az://container/prefix` or `memory://`.
    ///
    /// ```
    /// use statefs_store::RemoteSpec;
    /// assert_eq!(RemoteSpec::parse("memory://").unwrap(), RemoteSpec::Memory);
    /// assert!(RemoteSpec::parse("file://relative/path").is_err());
    /// assert!(RemoteSpec::parse("ftp://host/x").is_err());
    /// ```
    pub fn parse(url: &str) -> Result<RemoteSpec, StoreError> {
        let bad = |why: &str| StoreError::Config(format!("bad --remote URL {url:?}: {why}"));
        // The URL parser resolves dot segments away (encoded ones too: `%2E%2E`); a remote that
        // names one is a mistake to report.
        if let Some((_, rest)) = url.split_once(':')
            && has_dot_segment(&percent_decode(rest))
        {
            return Err(bad("the path must not contain '.' or '..' segments"));
        }
        let parsed = url::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
        match parsed.scheme() {
            "file" => {
                if parsed.host_str().is_some_and(|h| !h.is_empty()) {
                    return Err(bad("file URLs take an absolute path: file:///abs/path"));
                }
                let root = parsed
                    .to_file_path()
                    .map_err(|_| bad("not an absolute local path"))?;
                // Percent-encoded dots (`%2E%2E`) survive the check above and decode here.
                if has_dot_segment(root.as_os_str().as_encoded_bytes()) {
                    return Err(bad("the path must not contain '.' or '..' segments"));
                }
                Ok(RemoteSpec::File { root })
            }
            scheme @ ("s3" | "gs" | "az") => {
                let bucket = parsed.host_str().unwrap_or("").to_string();
                let prefix = parsed.path().trim_matches('/').to_string();
                if bucket.is_empty() {
                    let what = if scheme == "az" {
                        "container"
                    } else {
                        "bucket"
                    };
                    return Err(bad(&format!("expected {scheme}://{what}/prefix")));
                }
                Ok(match scheme {
                    "s3" => RemoteSpec::S3 { bucket, prefix },
                    "gs" => RemoteSpec::Gcs { bucket, prefix },
                    _ => RemoteSpec::Azure {
                        container: bucket,
                        prefix,
                    },
                })
            }
            "memory" => Ok(RemoteSpec::Memory),
            other => Err(bad(&format!(
                "unsupported scheme {other:?} (supported: file://, s3://, gs://, az://, memory://)"
            ))),
        }
    }

    /// Builds the store. For `file://` the directory is created if missing.
    pub fn open(
        &self,
        s3: &S3Options,
        runtime: Arc<Runtime>,
    ) -> Result<ObjectStoreRemote, StoreError> {
        match self {
            RemoteSpec::File { root } => {
                // The store's root is private: object_store creates its files with the
                // umask's mode, and they hold the bytes of files that may be 0600 on the mount.
                crate::private::own_dir(root).map_err(|e| {
                    StoreError::Config(format!(
                        "cannot create remote directory {}: {e}",
                        root.display()
                    ))
                })?;
                let store =
                    object_store::local::LocalFileSystem::new_with_prefix(root).map_err(|e| {
                        StoreError::Config(format!("remote directory {}: {e}", root.display()))
                    })?;
                Ok(ObjectStoreRemote::new(
                    Arc::new(store) as Arc<dyn ObjectStore>,
                    "",
                    runtime,
                    format!("file://{}", root.display()),
                )
                .with_local_root(root.clone()))
            }
            RemoteSpec::S3 { bucket, prefix } => {
                let mut b = object_store::aws::AmazonS3Builder::from_env().with_bucket_name(bucket);
                let endpoint = s3
                    .endpoint
                    .clone()
                    .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok());
                if let Some(ep) = &endpoint {
                    let ep_url = url::Url::parse(ep)
                        .map_err(|e| StoreError::Config(format!("bad S3 endpoint {ep:?}: {e}")))?;
                    if ep_url.scheme() == "http" {
                        let loopback = match ep_url.host() {
                            Some(url::Host::Domain(d)) => d == "localhost",
                            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
                            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
                            None => false,
                        };
                        if !loopback && !s3.allow_http {
                            return Err(StoreError::Config(format!(
                                "S3 endpoint {ep} is plain http to a non-loopback host; pass --s3-allow-http to accept that"
                            )));
                        }
                        b = b.with_allow_http(true);
                    }
                    b = b.with_endpoint(ep);
                }
                if let Some(r) = &s3.region {
                    b = b.with_region(r);
                }
                if let Some(k) = &s3.access_key_id {
                    b = b.with_access_key_id(k);
                }
                if let Some(k) = &s3.secret_access_key {
                    b = b.with_secret_access_key(k);
                }
                let (retry, client) = http_client_settings(s3);
                b = b.with_retry(retry);
                for (k, v) in client {
                    b = b.with_config(object_store::aws::AmazonS3ConfigKey::Client(k), v);
                }
                network_store(
                    b.build(),
                    "S3",
                    prefix,
                    runtime,
                    format!("s3://{bucket}/{prefix}"),
                )
            }
            RemoteSpec::Gcs { bucket, prefix } => {
                let (retry, client) = http_client_settings(s3);
                let mut b = object_store::gcp::GoogleCloudStorageBuilder::from_env()
                    .with_bucket_name(bucket)
                    .with_retry(retry);
                for (k, v) in client {
                    b = b.with_config(object_store::gcp::GoogleConfigKey::Client(k), v);
                }
                network_store(
                    b.build(),
                    "GCS",
                    prefix,
                    runtime,
                    format!("gs://{bucket}/{prefix}"),
                )
            }
            RemoteSpec::Azure { container, prefix } => {
                let (retry, client) = http_client_settings(s3);
                let mut b = object_store::azure::MicrosoftAzureBuilder::from_env()
                    .with_container_name(container)
                    .with_retry(retry);
                for (k, v) in client {
                    b = b.with_config(object_store::azure::AzureConfigKey::Client(k), v);
                }
                network_store(
                    b.build(),
                    "Azure",
                    prefix,
                    runtime,
                    format!("az://{container}/{prefix}"),
                )
            }
            RemoteSpec::Memory => Ok(ObjectStoreRemote::in_memory(runtime)),
        }
    }
}

/// A built network store client (or why it could not be built), as a remote under `prefix`.
fn network_store(
    built: object_store::Result<impl ObjectStore>,
    what: &str,
    prefix: &str,
    runtime: Arc<Runtime>,
    shown: String,
) -> Result<ObjectStoreRemote, StoreError> {
    let store = built.map_err(|e| StoreError::Config(format!("{what} configuration: {e}")))?;
    Ok(ObjectStoreRemote::new(
        Arc::new(store) as Arc<dyn ObjectStore>,
        prefix,
        runtime,
        shown,
    ))
}

/// The retry and HTTP client settings of every network store, on top of what its builder read
/// from the environment. One retry policy: object_store's own retries (up to 10 per request,
/// minutes against a black-holed endpoint) would run inside each of ours, so the client makes one
/// attempt and [`super::RetryingRemote`] retries. A request takes at most the request timeout,
/// connecting at most 5 s of it.
fn http_client_settings(
    s3: &S3Options,
) -> (
    object_store::RetryConfig,
    [(object_store::client::ClientConfigKey, String); 2],
) {
    use object_store::client::ClientConfigKey as C;
    let timeout = s3
        .request_timeout
        .unwrap_or(super::RetryPolicy::default().request_timeout);
    let connect = timeout.min(std::time::Duration::from_secs(5));
    let retry = object_store::RetryConfig {
        max_retries: 0,
        retry_timeout: timeout,
        ..Default::default()
    };
    (
        retry,
        [
            (C::Timeout, format!("{}ms", timeout.as_millis())),
            (C::ConnectTimeout, format!("{}ms", connect.as_millis())),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_supported_urls() {
        assert_eq!(
            RemoteSpec::parse("file:///var/lib/statefs/remote").unwrap(),
            RemoteSpec::File {
                root: "/var/lib/statefs/remote".into()
            }
        );
        assert_eq!(
            RemoteSpec::parse("s3://bucket/a/b/").unwrap(),
            RemoteSpec::S3 {
                bucket: "bucket".into(),
                prefix: "a/b".into()
            }
        );
        assert_eq!(
            RemoteSpec::parse("s3://bucket").unwrap(),
            RemoteSpec::S3 {
                bucket: "bucket".into(),
                prefix: "".into()
            }
        );
        assert_eq!(
            RemoteSpec::parse("gs://bucket/a/b").unwrap(),
            RemoteSpec::Gcs {
                bucket: "bucket".into(),
                prefix: "a/b".into()
            }
        );
        assert_eq!(
            RemoteSpec::parse("az://container/p/").unwrap(),
            RemoteSpec::Azure {
                container: "container".into(),
                prefix: "p".into()
            }
        );
        assert_eq!(RemoteSpec::parse("memory://").unwrap(), RemoteSpec::Memory);
    }

    #[test]
    fn rejects_bad_urls_with_a_reason() {
        for (url, why) in [
            ("/var/lib/x", "relative URL without a base"),
            ("file://host/x", "absolute path"),
            ("ftp://x/y", "unsupported scheme"),
            ("s3:///prefix", "expected s3://bucket/prefix"),
            ("gs:///prefix", "expected gs://bucket/prefix"),
            ("az:///prefix", "expected az://container/prefix"),
            ("gs://b/p/%2E%2E/x", "'..'"),
            ("s3://b/../x", "'..'"),
            ("file:///a/./b", "'..'"),
            // Found by the remote_url fuzz target: encoded dots decode to a `..` root.
            ("file:%2E%2E%2fiL", "'..'"),
            ("file:///a/%2e%2E/b", "'..'"),
            ("s3://b/p/%2E%2E/x", "'..'"),
        ] {
            let err = RemoteSpec::parse(url).unwrap_err().to_string();
            assert!(err.contains(why), "{url}: {err}");
        }
    }

    #[test]
    fn http_endpoint_must_be_loopback_unless_allowed() {
        let rt = Arc::new(
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
        );
        let spec = RemoteSpec::parse("s3://b/p").unwrap();
        let mut opts = S3Options {
            endpoint: Some("http://example.com:9000".into()),
            region: Some("us-east-1".into()),
            access_key_id: Some("k".into()),
            secret_access_key: Some("s".into()),
            allow_http: false,
            request_timeout: None,
        };
        let err = spec.open(&opts, rt.clone()).unwrap_err().to_string();
        assert!(err.contains("--s3-allow-http"), "{err}");
        opts.endpoint = Some("http://127.0.0.1:9000".into());
        spec.open(&opts, rt).unwrap();
    }

    #[test]
    fn only_network_stores_are_distant() {
        // Cold reads of a distant store leave the FUSE workers; a local directory's stay inline.
        let rt = crate::runtime().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let opts = S3Options {
            endpoint: Some("http://127.0.0.1:9000".into()),
            region: Some("us-east-1".into()),
            access_key_id: Some("k".into()),
            secret_access_key: Some("s".into()),
            allow_http: false,
            request_timeout: None,
        };
        for (url, distant) in [
            (format!("file://{}", dir.path().display()), false),
            ("memory://".to_string(), false),
            ("s3://b/p".to_string(), true),
        ] {
            let store = RemoteSpec::parse(&url)
                .unwrap()
                .open(&opts, rt.clone())
                .unwrap();
            // Through the layers a mount puts around it.
            let layered = crate::RetryingRemote::new(
                crate::MetricsRemote::new(store, Default::default()),
                Default::default(),
            );
            assert_eq!(crate::RemoteStore::is_distant(&layered), distant, "{url}");
        }
    }
}
