//! [`RemoteStore`] over any `object_store` backend.

use std::fmt;
use std::io::Read;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, WriteMultipart};
use tokio::runtime::Runtime;

use super::{RemoteStore, StoreError, Uploaded};

/// Files larger than this are uploaded in parts.
pub const DEFAULT_MULTIPART_THRESHOLD: u64 = 16 * 1024 * 1024;
/// Part size of multipart uploads.
pub const DEFAULT_PART_SIZE: usize = 8 * 1024 * 1024;
/// Parts in flight at once per upload.
const PARTS_IN_FLIGHT: usize = 4;

pub struct ObjectStoreRemote {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    runtime: Arc<Runtime>,
    multipart_threshold: u64,
    part_size: usize,
    description: String,
    /// For a local-directory store: where objects land, so they can be fsynced before a put returns
    /// (object_store's local backend renames into place but does not sync).
    local_root: Option<std::path::PathBuf>,
    /// See [`RemoteStore::is_distant`]: false for a local directory and for memory.
    distant: bool,
}

impl fmt::Debug for ObjectStoreRemote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ObjectStoreRemote({})", self.description)
    }
}

impl ObjectStoreRemote {
    /// `prefix` is prepended to every key (no leading or trailing slash; empty for the bucket root).
    pub fn new(
        store: Arc<dyn ObjectStore>,
        prefix: &str,
        runtime: Arc<Runtime>,
        description: String,
    ) -> Self {
        ObjectStoreRemote {
            store,
            prefix: prefix.trim_matches('/').to_string(),
            runtime,
            multipart_threshold: DEFAULT_MULTIPART_THRESHOLD,
            part_size: DEFAULT_PART_SIZE,
            description,
            local_root: None,
            distant: true,
        }
    }

    /// An in-memory store, for tests.
    pub fn in_memory(runtime: Arc<Runtime>) -> Self {
        ObjectStoreRemote {
            distant: false,
            ..Self::new(
                Arc::new(object_store::memory::InMemory::new()),
                "",
                runtime,
                "memory://".into(),
            )
        }
    }

    /// A local-directory store rooted at `root`: its puts are fsynced, and it is not distant.
    pub fn with_local_root(mut self, root: std::path::PathBuf) -> Self {
        self.local_root = Some(root);
        self.distant = false;
        self
    }

    /// Makes a just-written object of a local-directory store durable: the file, then its directory.
    fn sync_local(&self, key: &str) -> Result<(), StoreError> {
        let Some(root) = &self.local_root else {
            return Ok(());
        };
        let path = root.join(self.path(key).as_ref());
        let sync = |p: &Path| std::fs::File::open(p).and_then(|f| f.sync_all());
        sync(&path)
            .and_then(|_| sync(path.parent().unwrap_or(root)))
            .map_err(|e| StoreError::Unavailable {
                op: "sync",
                key: key.to_string(),
                message: e.to_string(),
            })
    }

    /// Runs one store call to its end on the calling thread.
    ///
    /// A local-directory store's calls run without the runtime: object_store's local backend does
    /// blocking file I/O, and outside a tokio runtime it does it inline instead of handing it to
    /// tokio's blocking pool. The work then runs on the thread that asked for it, one thread
    /// wake-up less per call. Every other store needs the runtime's reactor.
    fn block_on<F: std::future::Future>(&self, call: F) -> F::Output {
        if self.local_root.is_some() {
            futures::executor::block_on(call)
        } else {
            self.runtime.block_on(call)
        }
    }

    pub fn with_multipart(mut self, threshold: u64, part_size: usize) -> Self {
        self.multipart_threshold = threshold;
        self.part_size = part_size.max(5 * 1024 * 1024);
        self
    }

    fn path(&self, key: &str) -> ObjectPath {
        if self.prefix.is_empty() {
            ObjectPath::from(key)
        } else {
            ObjectPath::from(format!("{}/{}", self.prefix, key))
        }
    }

    fn relative<'a>(&self, full: &'a str) -> &'a str {
        if self.prefix.is_empty() {
            full
        } else {
            full.strip_prefix(&self.prefix)
                .map(|s| s.trim_start_matches('/'))
                .unwrap_or(full)
        }
    }

    fn put_file_async(&self, key: &str, path: &Path) -> Result<Uploaded, StoreError> {
        let local = |source| StoreError::LocalIo {
            key: key.to_string(),
            source,
        };
        let mut file = std::fs::File::open(path).map_err(local)?;
        let location = self.path(key);
        if self.local_root.is_some() {
            return self.copy_to_local(key, &location, file);
        }
        let len = file.metadata().map_err(local)?.len();
        if len <= self.multipart_threshold {
            let t = std::time::Instant::now();
            let mut buf = Vec::with_capacity(len as usize);
            file.read_to_end(&mut buf).map_err(local)?;
            let read_us = t.elapsed().as_micros() as u64;
            let crc = crc32c::crc32c(&buf);
            let crc_us = t.elapsed().as_micros() as u64;
            let size = buf.len() as u64;
            self.block_on(self.store.put(&location, PutPayload::from(buf)))
                .map_err(|e| map_err("put", key, e))?;
            let put_us = t.elapsed().as_micros() as u64;
            self.sync_local(key)?;
            // Each phase's end, in µs from the start: under load, which one stretches.
            let synced_us = t.elapsed().as_micros() as u64;
            tracing::debug!(read_us, crc_us, put_us, synced_us, "put_file");
            return Ok(Uploaded { size, crc32c: crc });
        }
        let part_size = self.part_size;
        self.block_on(async {
            let upload = self
                .store
                .put_multipart(&location)
                .await
                .map_err(|e| map_err("put_multipart", key, e))?;
            let mut writer = WriteMultipart::new_with_chunk_size(upload, part_size);
            let mut crc = 0u32;
            let mut size = 0u64;
            let mut buf = vec![0u8; part_size];
            loop {
                let n = match read_full(&mut file, &mut buf) {
                    Ok(n) => n,
                    Err(e) => return Err(abort(writer, key, local(e)).await),
                };
                if n == 0 {
                    break;
                }
                crc = crc32c::crc32c_append(crc, &buf[..n]);
                size += n as u64;
                if let Err(e) = writer.wait_for_capacity(PARTS_IN_FLIGHT).await {
                    return Err(abort(writer, key, map_err("upload_part", key, e)).await);
                }
                writer.write(&buf[..n]);
            }
            // A failed finish aborts the upload itself (object_store's `WriteMultipart::finish`).
            writer
                .finish()
                .await
                .map_err(|e| map_err("complete_multipart", key, e))?;
            Ok(Uploaded { size, crc32c: crc })
        })
        .and_then(|u| self.sync_local(key).map(|_| u))
    }
}

/// Size of the chunks an upload to a local-directory store is copied in.
const LOCAL_CHUNK: usize = 256 * 1024;

thread_local! {
    /// This thread's copy buffer for uploads to a local-directory store, kept between uploads.
    static COPY_BUFFER: std::cell::RefCell<Option<Arc<Vec<u8>>>> =
        const { std::cell::RefCell::new(None) };
}

/// Runs `f` with this thread's kept copy buffer, taken out of [`COPY_BUFFER`] for the call.
fn with_copy_buffer<R>(f: impl FnOnce(&mut Arc<Vec<u8>>) -> R) -> R {
    let mut buf = COPY_BUFFER
        .with(|b| b.borrow_mut().take())
        .unwrap_or_else(|| Arc::new(vec![0; LOCAL_CHUNK]));
    let r = f(&mut buf);
    COPY_BUFFER.with(|b| *b.borrow_mut() = Some(buf));
    r
}

/// The filled prefix of a copy buffer, lent to object_store as the bytes of one part.
struct Lent(Arc<Vec<u8>>, usize);

impl AsRef<[u8]> for Lent {
    fn as_ref(&self) -> &[u8] {
        &self.0[..self.1]
    }
}

impl ObjectStoreRemote {
    /// Uploads `file` to a local-directory store, in [`LOCAL_CHUNK`]s through one buffer per
    /// thread, kept between uploads.
    ///
    /// Reading a whole file into a fresh buffer, as a single put to a distant store must, touches
    /// fresh memory for every byte; on a VM that hands freed memory back to its host (free page
    /// reporting, as on this project's bench machine) first touches fault on the host, and an
    /// 8 MB upload took 22 ms to read instead of 1 ms. The chunks go out as parts of object_store's
    /// local multipart upload (a staging file renamed into place, as its single put does), each
    /// written before the next is read, on this thread ([`Self::block_on`]).
    fn copy_to_local(
        &self,
        key: &str,
        location: &ObjectPath,
        mut file: std::fs::File,
    ) -> Result<Uploaded, StoreError> {
        let local = |source| StoreError::LocalIo {
            key: key.to_string(),
            source,
        };
        let t = std::time::Instant::now();
        let (mut read_us, mut crc_us) = (0u64, 0u64);
        let copied = with_copy_buffer(|buf| {
            futures::executor::block_on(async {
                let mut upload = self
                    .store
                    .put_multipart(location)
                    .await
                    .map_err(|e| map_err("put_multipart", key, e))?;
                let (mut crc, mut size) = (0u32, 0u64);
                loop {
                    // The part before was written and dropped, so the buffer is ours again; if
                    // object_store ever kept a part, a new buffer takes its place.
                    if Arc::get_mut(buf).is_none() {
                        *buf = Arc::new(vec![0; LOCAL_CHUNK]);
                    }
                    let chunk = Arc::get_mut(buf).expect("unshared");
                    let r = std::time::Instant::now();
                    let n = match read_full(&mut file, chunk) {
                        Ok(n) => n,
                        Err(e) => {
                            let _ = upload.abort().await;
                            return Err(local(e));
                        }
                    };
                    read_us += r.elapsed().as_micros() as u64;
                    if n == 0 {
                        break;
                    }
                    let c = std::time::Instant::now();
                    crc = crc32c::crc32c_append(crc, &chunk[..n]);
                    crc_us += c.elapsed().as_micros() as u64;
                    size += n as u64;
                    let part = Bytes::from_owner(Lent(buf.clone(), n));
                    if let Err(e) = upload.put_part(PutPayload::from(part)).await {
                        let _ = upload.abort().await;
                        return Err(map_err("upload_part", key, e));
                    }
                }
                if let Err(e) = upload.complete().await {
                    let _ = upload.abort().await;
                    return Err(map_err("complete_multipart", key, e));
                }
                Ok(Uploaded { size, crc32c: crc })
            })
        });
        let uploaded = copied?;
        let put_us = t.elapsed().as_micros() as u64;
        self.sync_local(key)?;
        // Totals of the reads and CRCs, and each phase's end from the start (the put's includes
        // them): under load, which one stretches.
        let synced_us = t.elapsed().as_micros() as u64;
        tracing::debug!(read_us, crc_us, put_us, synced_us, "put_file");
        Ok(uploaded)
    }
}

impl ObjectStoreRemote {
    /// [`RemoteStore::get_to_file`]: the object's bytes go to the file as they arrive. A local
    /// store's file is copied through the thread's kept buffer ([`COPY_BUFFER`]); a distant store's
    /// body is written chunk by chunk as the response streams in.
    fn stream_to_file(&self, key: &str, path: &Path) -> Result<Uploaded, StoreError> {
        use object_store::GetResultPayload;
        use std::io::Write;
        let local = |source| StoreError::LocalIo {
            key: key.to_string(),
            source,
        };
        let mut out = crate::private::create(path).map_err(local)?;
        let location = self.path(key);
        let (mut crc, mut size) = (0u32, 0u64);
        self.block_on(async {
            let got = self
                .store
                .get(&location)
                .await
                .map_err(|e| map_err("get", key, e))?;
            match got.payload {
                GetResultPayload::File(mut file, _) => {
                    let copied = with_copy_buffer(|buf| {
                        let chunk = Arc::make_mut(buf);
                        loop {
                            let n = read_full(&mut file, chunk)?;
                            if n == 0 {
                                return Ok(());
                            }
                            crc = crc32c::crc32c_append(crc, &chunk[..n]);
                            size += n as u64;
                            out.write_all(&chunk[..n])?;
                        }
                    });
                    copied.map_err(local)?;
                }
                GetResultPayload::Stream(mut body) => {
                    while let Some(chunk) =
                        body.try_next().await.map_err(|e| map_err("get", key, e))?
                    {
                        crc = crc32c::crc32c_append(crc, &chunk);
                        size += chunk.len() as u64;
                        out.write_all(&chunk).map_err(local)?;
                    }
                }
            }
            Ok::<_, StoreError>(())
        })?;
        Ok(Uploaded { size, crc32c: crc })
    }
}

/// Aborts a failed multipart upload, so that no part is left behind in the store (S3 keeps,
/// and bills, the parts of an upload that is neither completed nor aborted); returns `err`.
async fn abort(writer: WriteMultipart, key: &str, err: StoreError) -> StoreError {
    if let Err(e) = writer.abort().await {
        tracing::warn!(key, error = %e, "aborting a failed multipart upload failed; its parts stay until the bucket's lifecycle rule removes them");
    }
    err
}

fn read_full(file: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Sorts object_store errors into what the caller should do about them.
fn map_err(op: &'static str, key: &str, err: object_store::Error) -> StoreError {
    use object_store::Error as E;
    let key = key.to_string();
    match err {
        E::NotFound { .. } => StoreError::NotFound { key },
        E::AlreadyExists { .. } | E::Precondition { .. } => StoreError::AlreadyExists { key },
        E::InvalidPath { .. }
        | E::NotSupported { .. }
        | E::NotImplemented { .. }
        | E::UnknownConfigurationKey { .. }
        | E::PermissionDenied { .. }
        | E::Unauthenticated { .. } => StoreError::Fatal {
            op,
            key,
            message: err.to_string(),
        },
        other => StoreError::Unavailable {
            op,
            key,
            message: other.to_string(),
        },
    }
}

impl RemoteStore for ObjectStoreRemote {
    fn is_distant(&self) -> bool {
        self.distant
    }

    fn put(&self, key: &str, data: Bytes) -> Result<(), StoreError> {
        self.block_on(self.store.put(&self.path(key), PutPayload::from(data)))
            .map_err(|e| map_err("put", key, e))?;
        self.sync_local(key)
    }

    fn put_if_absent(&self, key: &str, data: Bytes) -> Result<(), StoreError> {
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        self.block_on(
            self.store
                .put_opts(&self.path(key), PutPayload::from(data), opts),
        )
        .map_err(|e| map_err("put_if_absent", key, e))?;
        self.sync_local(key)
    }

    fn put_file(&self, key: &str, path: &Path) -> Result<Uploaded, StoreError> {
        self.put_file_async(key, path)
    }

    fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, StoreError> {
        if range.start >= range.end {
            return Ok(Bytes::new());
        }
        self.block_on(self.store.get_range(&self.path(key), range))
            .map_err(|e| map_err("get_range", key, e))
    }

    fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        let location = self.path(key);
        self.block_on(async {
            let result = self
                .store
                .get(&location)
                .await
                .map_err(|e| map_err("get", key, e))?;
            result.bytes().await.map_err(|e| map_err("get", key, e))
        })
    }

    fn get_to_file(&self, key: &str, path: &Path) -> Result<Uploaded, StoreError> {
        let written = self.stream_to_file(key, path);
        if written.is_err() {
            let _ = std::fs::remove_file(path);
        }
        written
    }

    fn head(&self, key: &str) -> Result<u64, StoreError> {
        self.block_on(self.store.head(&self.path(key)))
            .map(|m| m.size)
            .map_err(|e| map_err("head", key, e))
    }

    fn delete(&self, key: &str) -> Result<(), StoreError> {
        match self.block_on(self.store.delete(&self.path(key))) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(map_err("delete", key, e)),
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<super::ObjectInfo>, StoreError> {
        let full = self.path(prefix);
        self.block_on(async {
            let metas: Vec<_> = self
                .store
                .list(Some(&full))
                .try_collect()
                .await
                .map_err(|e| map_err("list", prefix, e))?;
            Ok(metas
                .into_iter()
                .map(|m| super::ObjectInfo {
                    key: self.relative(m.location.as_ref()).to_string(),
                    size: m.size,
                    modified: m.last_modified.into(),
                })
                .collect())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::url::{RemoteSpec, S3Options};

    fn local_store(root: &Path) -> ObjectStoreRemote {
        let rt = Arc::new(
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
        );
        RemoteSpec::File { root: root.into() }
            .open(&S3Options::default(), rt)
            .unwrap()
    }

    /// Uploads to a local-directory store go through one reused chunk buffer: every size around
    /// the chunk boundaries arrives whole, with the CRC of its bytes, and no staging file is left.
    #[test]
    fn local_uploads_arrive_whole_at_every_chunk_boundary() {
        let dir = tempfile::tempdir().unwrap();
        let store = local_store(&dir.path().join("remote"));
        let sizes = [
            0,
            1,
            LOCAL_CHUNK - 1,
            LOCAL_CHUNK,
            LOCAL_CHUNK + 1,
            3 * LOCAL_CHUNK + 17,
        ];
        for (i, size) in sizes.into_iter().enumerate() {
            let bytes: Vec<u8> = (0..size).map(|b| (b * 31 + i) as u8).collect();
            let src = dir.path().join(format!("src-{i}"));
            std::fs::write(&src, &bytes).unwrap();
            let key = format!("data/{i}");
            let up = store.put_file(&key, &src).unwrap();
            assert_eq!(up.size, size as u64);
            assert_eq!(up.crc32c, crc32c::crc32c(&bytes), "size {size}");
            assert_eq!(store.get(&key).unwrap().as_ref(), &bytes[..], "size {size}");
            let back = dir.path().join(format!("back-{i}"));
            let got = store.get_to_file(&key, &back).unwrap();
            assert_eq!(got, up, "size {size}");
            assert_eq!(std::fs::read(&back).unwrap(), bytes, "size {size}");
        }
        // A second upload over an existing key replaces it.
        let src = dir.path().join("again");
        std::fs::write(&src, b"replaced").unwrap();
        store.put_file("data/3", &src).unwrap();
        assert_eq!(store.get("data/3").unwrap().as_ref(), b"replaced");
        let left: Vec<String> = std::fs::read_dir(dir.path().join("remote/data"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains('#'))
            .collect();
        assert!(left.is_empty(), "staging files left: {left:?}");
    }

    /// A local store's upload made from inside a tokio runtime (object_store then hands its file
    /// I/O to the runtime's blocking pool) works as well.
    #[test]
    fn local_uploads_work_inside_a_runtime() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(local_store(&dir.path().join("remote")));
        let src = dir.path().join("src");
        let bytes = vec![5u8; 2 * LOCAL_CHUNK + 3];
        std::fs::write(&src, &bytes).unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let up = rt
            .block_on(async {
                let store = store.clone();
                tokio::task::spawn_blocking(move || {
                    let _in_runtime = tokio::runtime::Handle::current().enter();
                    store.put_file("k", &src)
                })
                .await
            })
            .unwrap()
            .unwrap();
        assert_eq!(up.size, bytes.len() as u64);
        assert_eq!(store.get("k").unwrap().as_ref(), &bytes[..]);
    }

    /// A download of a missing object is NotFound and leaves no file; one into a directory that
    /// does not exist is a local error.
    #[test]
    fn failed_downloads_leave_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = local_store(&dir.path().join("remote"));
        let to = dir.path().join("to");
        let err = store.get_to_file("data/missing", &to).unwrap_err();
        assert!(matches!(err, StoreError::NotFound { .. }), "{err:?}");
        assert!(!to.exists());
        store.put("data/there", Bytes::from_static(b"abc")).unwrap();
        let err = store
            .get_to_file("data/there", &dir.path().join("no/such/dir"))
            .unwrap_err();
        assert!(matches!(err, StoreError::LocalIo { .. }), "{err:?}");
    }

    /// A file that cannot be read is a local error naming the key, and leaves nothing behind.
    #[test]
    fn an_unreadable_source_is_a_local_error() {
        let dir = tempfile::tempdir().unwrap();
        let store = local_store(&dir.path().join("remote"));
        // A directory opens but cannot be read.
        let err = store.put_file("data/x", dir.path()).unwrap_err();
        assert!(matches!(err, StoreError::LocalIo { .. }), "{err:?}");
        assert!(matches!(
            store.head("data/x"),
            Err(StoreError::NotFound { .. })
        ));
        let left: Vec<_> = std::fs::read_dir(dir.path().join("remote"))
            .unwrap()
            .flat_map(|e| std::fs::read_dir(e.unwrap().path()).into_iter().flatten())
            .collect();
        assert!(left.is_empty(), "left behind: {left:?}");
    }
}
