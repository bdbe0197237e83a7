//! Metrics in Prometheus text format, the names in one place, and the `/metrics` endpoint.
//!
//! Every metric name is a constant below; `docs/METRICS.md` lists them (a test checks that every
//! constant is documented there).

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub const CACHE_HITS: &str = "statefs_cache_hits_total";
pub const CACHE_MISSES: &str = "statefs_cache_misses_total";
pub const CACHE_LOADBACKS: &str = "statefs_cache_loadbacks_total";
pub const CACHE_PROMOTIONS: &str = "statefs_cache_promotions_total";
pub const CACHE_EVICTIONS: &str = "statefs_cache_evictions_total";
pub const CACHE_USED_BYTES: &str = "statefs_cache_used_bytes";
pub const CACHE_REMAINING_BYTES: &str = "statefs_cache_remaining_bytes";
pub const CACHE_HOT_FILES: &str = "statefs_cache_hot_files";
pub const CACHE_COLD_FILES: &str = "statefs_cache_cold_files";
pub const BLOCK_HITS: &str = "statefs_cold_block_hits_total";
pub const BLOCK_MISSES: &str = "statefs_cold_block_misses_total";
pub const REMOTE_REQUESTS: &str = "statefs_remote_requests_total";
pub const REMOTE_BYTES: &str = "statefs_remote_bytes_total";
pub const REMOTE_ERRORS: &str = "statefs_remote_errors_total";
pub const REMOTE_LATENCY: &str = "statefs_remote_request_seconds";
pub const UPLOADS: &str = "statefs_uploads_total";
pub const UPLOAD_BYTES: &str = "statefs_upload_bytes_total";
pub const UPLOADS_IN_FLIGHT: &str = "statefs_uploads_in_flight";
pub const DOWNLOADS: &str = "statefs_downloads_total";
pub const FUSE_OPS: &str = "statefs_fuse_operations_total";
pub const FUSE_LATENCY: &str = "statefs_fuse_operation_seconds";
pub const FUSE_OPENS: &str = "statefs_fuse_opens_total";
pub const STORE_QUEUE: &str = "statefs_store_queue";
pub const INODES: &str = "statefs_inodes";

/// Every metric name, for the documentation check.
pub const ALL: &[&str] = &[
    CACHE_HITS,
    CACHE_MISSES,
    CACHE_LOADBACKS,
    CACHE_PROMOTIONS,
    CACHE_EVICTIONS,
    CACHE_USED_BYTES,
    CACHE_REMAINING_BYTES,
    CACHE_HOT_FILES,
    CACHE_COLD_FILES,
    BLOCK_HITS,
    BLOCK_MISSES,
    REMOTE_REQUESTS,
    REMOTE_BYTES,
    REMOTE_ERRORS,
    REMOTE_LATENCY,
    UPLOADS,
    UPLOAD_BYTES,
    UPLOADS_IN_FLIGHT,
    DOWNLOADS,
    FUSE_OPS,
    FUSE_LATENCY,
    FUSE_OPENS,
    STORE_QUEUE,
    INODES,
];

/// Upper bounds of latency buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.00001, 0.00005, 0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0,
];

/// A latency histogram with fixed buckets; lock-free.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_ns: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_ns
            .fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    pub fn mean(&self) -> Duration {
        let n = self.count().max(1);
        Duration::from_nanos(self.sum_ns.load(Ordering::Relaxed) / n)
    }

    /// Writes `name_bucket`, `name_sum` and `name_count` lines with `labels` (e.g. `op="get"`).
    pub fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        for (b, c) in BUCKETS.iter().zip(&self.buckets) {
            cumulative += c.load(Ordering::Relaxed);
            out.push_str(&format!(
                "{name}_bucket{{{labels},le=\"{b}\"}} {cumulative}\n"
            ));
        }
        let count = self.count();
        out.push_str(&format!("{name}_bucket{{{labels},le=\"+Inf\"}} {count}\n"));
        let sum = self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        out.push_str(&format!(
            "{name}_sum{{{labels}}} {sum}\n{name}_count{{{labels}}} {count}\n"
        ));
    }
}

/// Times a scope into a histogram.
pub struct Timer<'a> {
    hist: &'a Histogram,
    start: Instant,
}

impl<'a> Timer<'a> {
    pub fn new(hist: &'a Histogram) -> Self {
        Timer {
            hist,
            start: Instant::now(),
        }
    }
}

impl Drop for Timer<'_> {
    fn drop(&mut self) {
        self.hist.observe(self.start.elapsed());
    }
}

/// Writes a `# HELP` / `# TYPE` header.
pub fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
}

pub fn sample(out: &mut String, name: &str, labels: &str, value: impl std::fmt::Display) {
    if labels.is_empty() {
        out.push_str(&format!("{name} {value}\n"));
    } else {
        out.push_str(&format!("{name}{{{labels}}} {value}\n"));
    }
}

/// The `/metrics` endpoint: a small HTTP/1.1 server on its own thread, stopped on drop.
pub struct MetricsServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl MetricsServer {
    pub fn start(
        addr: &str,
        render: Arc<dyn Fn() -> String + Send + Sync>,
    ) -> std::io::Result<MetricsServer> {
        Self::start_with_control(
            addr,
            render,
            Arc::new(|_: &str| Err("no control operations here".to_string())),
            uuid::Uuid::new_v4().simple().to_string(),
        )
    }

    /// Like [`MetricsServer::start`], and `POST <path>?<query>` requests that carry `token` in a
    /// [`TOKEN_HEADER`] go to `control`, whose `Ok` text is the 200 answer and whose `Err` text a
    /// 500 answer; a POST without the token gets 403 and reaches nothing. `GET /metrics` needs no
    /// token: it changes nothing.
    pub fn start_with_control(
        addr: &str,
        render: Arc<dyn Fn() -> String + Send + Sync>,
        control: Arc<Control>,
        token: String,
    ) -> std::io::Result<MetricsServer> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name("statefs-metrics".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    if stop2.load(Ordering::Acquire) {
                        break;
                    }
                    if let Ok(stream) = conn {
                        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                        let _ = serve(stream, render.as_ref(), control.as_ref(), &token);
                    }
                }
            })?;
        Ok(MetricsServer {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Wake the accept loop.
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A control operation: the request's path and query in, the answer out.
pub type Control = dyn Fn(&str) -> Result<String, String> + Send + Sync;

/// The header a control request carries the mount's token in (`<local-dir>/control.token`).
pub const TOKEN_HEADER: &str = "X-Statefs-Token";

/// Whether `given` is `token`, in a time that does not depend on where they first differ.
fn token_matches(given: &str, token: &str) -> bool {
    given.len() == token.len()
        && given
            .bytes()
            .zip(token.bytes())
            .fold(0u8, |diff, (a, b)| diff | (a ^ b))
            == 0
}

fn serve(
    stream: TcpStream,
    render: &(dyn Fn() -> String + Send + Sync),
    control: &Control,
    token: &str,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut given = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.trim().eq_ignore_ascii_case(TOKEN_HEADER)
        {
            given = Some(value.trim().to_string());
        }
    }
    let mut stream = stream;
    let path = request_line.split_whitespace().nth(1).unwrap_or("");
    let (status, body) = if request_line.starts_with("GET ") && (path == "/metrics" || path == "/")
    {
        ("200 OK", render())
    } else if request_line.starts_with("POST ") && !given.is_some_and(|g| token_matches(&g, token))
    {
        (
            "403 Forbidden",
            "control operations need the mount's token (<local-dir>/control.token)\n".to_string(),
        )
    } else if request_line.starts_with("POST ") {
        match control(path) {
            Ok(text) => ("200 OK", text),
            Err(text) => ("500 Internal Server Error", text),
        }
    } else {
        ("404 Not Found", "not found\n".to_string())
    };
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}

/// Fetches `/metrics` from `addr` (for `statefs stats`).
pub fn fetch(addr: &str) -> std::io::Result<String> {
    use std::io::Read;
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    match resp.split_once("\r\n\r\n") {
        Some((head, body)) if head.starts_with("HTTP/1.1 200") => Ok(body.to_string()),
        _ => Err(std::io::Error::other(format!(
            "unexpected answer from {addr}"
        ))),
    }
}

/// Sends `POST <path_and_query>` with the mount's control `token` to its endpoint; the answer
/// text, or its error text.
pub fn post(addr: &str, token: &str, path_and_query: &str) -> Result<String, String> {
    use std::io::Read;
    let mut s =
        TcpStream::connect(addr).map_err(|e| format!("connecting to the mount at {addr}: {e}"))?;
    // A publish takes as long as its uploads.
    let _ = s.set_read_timeout(Some(Duration::from_secs(3600)));
    write!(s, "POST {path_and_query} HTTP/1.1\r\nHost: {addr}\r\n{TOKEN_HEADER}: {token}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).map_err(|e| e.to_string())?;
    match resp.split_once("\r\n\r\n") {
        Some((head, body)) if head.starts_with("HTTP/1.1 200") => Ok(body.to_string()),
        Some((_, body)) => Err(body.trim().to_string()),
        None => Err(format!("no answer from the mount at {addr}")),
    }
}

/// Parses Prometheus text into (name with labels, value) pairs, skipping comments.
pub fn parse(text: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_renders_cumulative_buckets() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(20));
        h.observe(Duration::from_millis(2));
        let mut out = String::new();
        h.render(&mut out, "x_seconds", "op=\"get\"");
        assert!(
            out.contains("x_seconds_bucket{op=\"get\",le=\"0.00005\"} 1\n"),
            "{out}"
        );
        assert!(
            out.contains("x_seconds_bucket{op=\"get\",le=\"0.005\"} 2\n"),
            "{out}"
        );
        assert!(out.contains("x_seconds_count{op=\"get\"} 2\n"), "{out}");
    }

    #[test]
    fn server_answers_metrics_and_404() {
        let server =
            MetricsServer::start("127.0.0.1:0", Arc::new(|| "a_total 3\n".to_string())).unwrap();
        let body = fetch(&server.addr().to_string()).unwrap();
        assert_eq!(parse(&body), vec![("a_total".to_string(), 3.0)]);
        drop(server);
    }

    /// A control request reaches the mount only with its token: none, or a wrong one, gets 403
    /// and runs nothing; metrics need none.
    #[test]
    fn control_requests_need_the_token() {
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let c = calls.clone();
        let control = Arc::new(move |path: &str| {
            c.fetch_add(1, Ordering::SeqCst);
            Ok(format!("did {path}\n"))
        });
        let server = MetricsServer::start_with_control(
            "127.0.0.1:0",
            Arc::new(|| "a_total 3\n".to_string()),
            control,
            "s3cret".to_string(),
        )
        .unwrap();
        let addr = server.addr().to_string();
        for wrong in ["", "s3creT", "s3cret-and-more"] {
            let err = post(&addr, wrong, "/checkpoint?dir=x").unwrap_err();
            assert!(err.contains("control.token"), "{err}");
        }
        assert_eq!(
            calls.load(Ordering::SeqCst),
            0,
            "no control call without the token"
        );
        assert_eq!(
            post(&addr, "s3cret", "/checkpoint?dir=x").unwrap(),
            "did /checkpoint?dir=x\n"
        );
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(fetch(&addr).unwrap().contains("a_total 3"));
    }

    #[test]
    fn every_metric_is_documented() {
        let doc = include_str!("../../docs/METRICS.md");
        for name in ALL {
            assert!(
                doc.contains(&format!("`{name}`")) || doc.contains(&format!("`{name}{{")),
                "{name} missing from docs/METRICS.md"
            );
        }
    }
}
