//! The mount's HTTP endpoints, built to meet hostile local clients.
//!
//! - `GET /metrics` on TCP (`--metrics-addr`): any local user can connect to a loopback port, so
//!   it serves only reads. A `POST` there is refused (403) and reaches nothing.
//! - Control (`POST /checkpoint?dir=...`) on a Unix socket, `<local-dir>/control.sock`: mode 0600 in
//!   the 0700 local dir, so only the mounting user (and root) can connect.
//!
//! Bounds, per [`Limits`]: a request head is at most `max_head_bytes` and `max_headers` lines, read
//! within `head_deadline` in all (a client that trickles bytes is cut off at the deadline, not per
//! read); a body is refused; an answer is written within `write_timeout`. Each connection has a
//! thread of its own, so a slow client holds only its own. At most `max_connections` are served at
//! once: when all are taken, the connection that has waited longest for its head is cut to make
//! room (a client that sends its request at once, as every real one does, is read within
//! microseconds, so slow-head floods cannot starve it); when all are running handlers, a new one
//! gets a 503 at once. Memory per connection is at most `max_head_bytes` plus a thread stack,
//! and the endpoint's whole at most `2 * max_connections` of them (cut connections end on their
//! next read). Everything malformed gets an answer (400, 405, 408, 413, 431, 505).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

/// Bounds on what a client can make the endpoint hold.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest request head (request line and headers), bytes. Default 8 KiB.
    pub max_head_bytes: usize,
    /// Most header lines in a request. Default 32.
    pub max_headers: usize,
    /// Time to receive the whole head, however it trickles in. Default 10 s.
    pub head_deadline: Duration,
    /// Time to write an answer to a client that does not read. Default 10 s.
    pub write_timeout: Duration,
    /// Connections served at once; more get a 503. Default 32.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_head_bytes: 8 << 10,
            max_headers: 32,
            head_deadline: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
            max_connections: 32,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
}

/// A parsed request head.
#[derive(Debug, PartialEq, Eq)]
pub struct Request {
    pub method: Method,
    /// Path and query, as sent (`/checkpoint?dir=a%2Fb`).
    pub target: String,
}

/// Why a request head is refused; each has the status it is answered with.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RequestError {
    #[error("request head larger than {0} bytes")]
    HeadTooLarge(usize),
    #[error("more than {0} header lines")]
    TooManyHeaders(usize),
    #[error("malformed request: {0}")]
    Malformed(&'static str),
    #[error("method not allowed")]
    Method,
    #[error("requests with a body are not accepted")]
    Body,
    #[error("only HTTP/1.0 and HTTP/1.1")]
    Version,
    #[error("request head not received in time")]
    Timeout,
    #[error("connection closed before the request was complete")]
    Closed,
}

impl RequestError {
    fn status(&self) -> u16 {
        match self {
            RequestError::HeadTooLarge(_) | RequestError::TooManyHeaders(_) => 431,
            RequestError::Malformed(_) => 400,
            RequestError::Method => 405,
            RequestError::Body => 413,
            RequestError::Version => 505,
            RequestError::Timeout => 408,
            RequestError::Closed => 400,
        }
    }
}

/// Parses a request head (everything before the blank line, without it). Total on any input:
/// never panics, never allocates more than the head's size.
pub fn parse_head(head: &[u8], limits: &Limits) -> Result<Request, RequestError> {
    if head.len() > limits.max_head_bytes {
        return Err(RequestError::HeadTooLarge(limits.max_head_bytes));
    }
    let text = std::str::from_utf8(head).map_err(|_| RequestError::Malformed("not UTF-8"))?;
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let request_line = lines.next().unwrap_or("");
    let mut parts = request_line.split(' ');
    let (method, target, version) = match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(m), Some(t), Some(v), None) => (m, t, v),
        _ => {
            return Err(RequestError::Malformed(
                "request line is not METHOD TARGET VERSION",
            ));
        }
    };
    let method = match method {
        "GET" => Method::Get,
        "POST" => Method::Post,
        m if !m.is_empty() && m.bytes().all(|b| b.is_ascii_uppercase()) => {
            return Err(RequestError::Method);
        }
        _ => return Err(RequestError::Malformed("bad method")),
    };
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return Err(if version.starts_with("HTTP/") {
            RequestError::Version
        } else {
            RequestError::Malformed("bad version")
        });
    }
    if !target.starts_with('/') || target.bytes().any(|b| b.is_ascii_control()) {
        return Err(RequestError::Malformed("target is not an absolute path"));
    }
    let mut count = 0;
    for line in lines {
        count += 1;
        if count > limits.max_headers {
            return Err(RequestError::TooManyHeaders(limits.max_headers));
        }
        let (name, value) = line
            .split_once(':')
            .ok_or(RequestError::Malformed("header line without ':'"))?;
        if name.is_empty() || name.bytes().any(|b| !b.is_ascii_graphic()) {
            return Err(RequestError::Malformed("bad header name"));
        }
        let value = value.trim();
        if name.eq_ignore_ascii_case("transfer-encoding")
            || (name.eq_ignore_ascii_case("content-length") && value != "0")
        {
            return Err(RequestError::Body);
        }
    }
    Ok(Request {
        method,
        target: target.to_string(),
    })
}

/// Reads a request head from `conn` within the limits: the bytes before the blank line.
fn read_head(conn: &mut dyn Conn, limits: &Limits) -> Result<Vec<u8>, RequestError> {
    let deadline = Instant::now() + limits.head_deadline;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let left = deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or(RequestError::Timeout)?;
        conn.set_read_timeout(Some(left))
            .map_err(|_| RequestError::Closed)?;
        // Never read past what the head may hold (plus its blank line).
        let room = (limits.max_head_bytes + 4 - buf.len()).min(chunk.len());
        let n = match conn.read(&mut chunk[..room]) {
            Ok(0) => return Err(RequestError::Closed),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err(RequestError::Timeout);
            }
            Err(_) => return Err(RequestError::Closed),
        };
        let from = buf.len().saturating_sub(3);
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = find_blank_line(&buf[from..]) {
            buf.truncate(from + end);
            return Ok(buf);
        }
        if buf.len() >= limits.max_head_bytes + 4 {
            return Err(RequestError::HeadTooLarge(limits.max_head_bytes));
        }
    }
}

/// Where the head ends in `bytes`: the offset of `\r\n\r\n` or `\n\n`.
fn find_blank_line(bytes: &[u8]) -> Option<usize> {
    (0..bytes.len())
        .find(|&i| bytes[i..].starts_with(b"\r\n\r\n") || bytes[i..].starts_with(b"\n\n"))
}

/// An answer.
pub struct Response {
    pub status: u16,
    pub body: String,
}

impl Response {
    pub fn new(status: u16, body: impl Into<String>) -> Response {
        Response {
            status,
            body: body.into(),
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

fn answer(conn: &mut dyn Conn, r: &Response) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        r.status,
        reason(r.status),
        r.body.len()
    );
    conn.write_all(head.as_bytes())?;
    conn.write_all(r.body.as_bytes())?;
    conn.flush()
}

/// What a request is answered with.
pub type Handler = dyn Fn(&Request) -> Response + Send + Sync;

/// A stream the server can bound in time.
trait Conn: Read + Write + Send {
    fn set_read_timeout(&self, t: Option<Duration>) -> std::io::Result<()>;
    fn set_write_timeout(&self, t: Option<Duration>) -> std::io::Result<()>;
    /// Ends both directions, from another thread: the owner's next read fails.
    fn shutdown(&self);
}

impl Conn for TcpStream {
    fn set_read_timeout(&self, t: Option<Duration>) -> std::io::Result<()> {
        TcpStream::set_read_timeout(self, t)
    }
    fn set_write_timeout(&self, t: Option<Duration>) -> std::io::Result<()> {
        TcpStream::set_write_timeout(self, t)
    }
    fn shutdown(&self) {
        let _ = TcpStream::shutdown(self, std::net::Shutdown::Both);
    }
}

impl Conn for UnixStream {
    fn set_read_timeout(&self, t: Option<Duration>) -> std::io::Result<()> {
        UnixStream::set_read_timeout(self, t)
    }
    fn set_write_timeout(&self, t: Option<Duration>) -> std::io::Result<()> {
        UnixStream::set_write_timeout(self, t)
    }
    fn shutdown(&self) {
        let _ = UnixStream::shutdown(self, std::net::Shutdown::Both);
    }
}

/// The connections being served: how many hold a slot, how many were cut and have not ended
/// yet, and those still reading their head, oldest first, each with a handle that cuts it.
#[derive(Default)]
struct Connections {
    count: usize,
    cut: std::collections::HashSet<u64>,
    next_id: u64,
    reading: std::collections::VecDeque<(u64, Box<dyn Conn>)>,
}

impl Connections {
    /// The connection `id` ended (served, failed, or cut).
    fn ended(&mut self, id: u64) {
        if !self.cut.remove(&id) {
            self.count -= 1;
            self.reading.retain(|(i, _)| *i != id);
        }
    }
}

enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl Listener {
    /// A connection, and a second handle to it (to cut it from another thread).
    fn accept(&self) -> std::io::Result<(Box<dyn Conn>, Box<dyn Conn>)> {
        Ok(match self {
            Listener::Tcp(l) => {
                let c = l.accept()?.0;
                (Box::new(c.try_clone()?), Box::new(c))
            }
            Listener::Unix(l) => {
                let c = l.accept()?.0;
                (Box::new(c.try_clone()?), Box::new(c))
            }
        })
    }
}

/// Where a server listens.
#[derive(Clone, Debug)]
pub enum Addr {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

/// Handlers running now and whether the server stops: a stopping server runs no new handler and
/// its drop waits for the running ones (a publish in progress finishes before the mount goes).
struct Running {
    state: Mutex<(usize, bool)>,
    idle: Condvar,
}

/// An HTTP endpoint on its own accept thread and a thread per connection; stopped on drop.
pub struct Server {
    addr: Addr,
    running: Arc<Running>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    /// Serves `handler` on a TCP address (`127.0.0.1:0` picks a free port).
    pub fn tcp(addr: &str, limits: Limits, handler: Arc<Handler>) -> std::io::Result<Server> {
        let listener = TcpListener::bind(addr)?;
        let addr = Addr::Tcp(listener.local_addr()?);
        Self::start(Listener::Tcp(listener), addr, limits, handler)
    }

    /// Serves `handler` on a Unix socket at `path`, mode 0600; a file left at `path` (a socket of
    /// an earlier run of this mount, whose local dir lock we hold) is replaced.
    pub fn unix(path: &Path, limits: Limits, handler: Arc<Handler>) -> std::io::Result<Server> {
        use std::os::unix::fs::PermissionsExt;
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let listener = with_short_path(path, |p| UnixListener::bind(p))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        Self::start(
            Listener::Unix(listener),
            Addr::Unix(path.to_path_buf()),
            limits,
            handler,
        )
    }

    fn start(
        listener: Listener,
        addr: Addr,
        limits: Limits,
        handler: Arc<Handler>,
    ) -> std::io::Result<Server> {
        let running = Arc::new(Running {
            state: Mutex::new((0, false)),
            idle: Condvar::new(),
        });
        let r = running.clone();
        let connections = Arc::new((Mutex::new(Connections::default()), Condvar::new()));
        let thread = std::thread::Builder::new()
            .name("statefs-endpoint".into())
            .spawn(move || {
                loop {
                    let conn = listener.accept();
                    if r.state.lock().1 {
                        break;
                    }
                    let Ok((conn, cut)) = conn else { continue };
                    serve_or_refuse(conn, cut, &limits, &handler, &r, &connections);
                }
            })?;
        Ok(Server {
            addr,
            running,
            thread: Some(thread),
        })
    }

    pub fn addr(&self) -> &Addr {
        &self.addr
    }

    /// The TCP address (panics for a Unix socket server).
    pub fn tcp_addr(&self) -> SocketAddr {
        match &self.addr {
            Addr::Tcp(a) => *a,
            Addr::Unix(p) => panic!("{} is a Unix socket", p.display()),
        }
    }
}

/// Hands `conn` to a thread of its own; when `max_connections` are served, first cuts the one
/// that has waited longest for its head, or answers 503 when none is waiting.
fn serve_or_refuse(
    mut conn: Box<dyn Conn>,
    cut: Box<dyn Conn>,
    limits: &Limits,
    handler: &Arc<Handler>,
    running: &Arc<Running>,
    connections: &Arc<(Mutex<Connections>, Condvar)>,
) {
    let id = {
        let mut c = connections.0.lock();
        if c.count >= limits.max_connections {
            // A cut connection ends on its next read, at once; its thread is counted until then,
            // and no more than `max_connections` of them are pending (waited for briefly).
            let until = Instant::now() + Duration::from_secs(1);
            while c.cut.len() >= limits.max_connections
                && !connections.1.wait_until(&mut c, until).timed_out()
            {}
            let cuttable = c.cut.len() < limits.max_connections;
            match c.reading.pop_front() {
                Some((oldest, handle)) if cuttable => {
                    handle.shutdown();
                    c.count -= 1;
                    c.cut.insert(oldest);
                }
                other => {
                    if let Some(o) = other {
                        c.reading.push_front(o);
                    }
                    drop(c);
                    refuse(conn.as_mut(), limits);
                    return;
                }
            }
        }
        c.count += 1;
        c.next_id += 1;
        let id = c.next_id;
        c.reading.push_back((id, cut));
        id
    };
    let (limits, handler, running, connections2) = (
        limits.clone(),
        handler.clone(),
        running.clone(),
        connections.clone(),
    );
    let done = move |connections: &(Mutex<Connections>, Condvar)| {
        connections.0.lock().ended(id);
        connections.1.notify_all();
    };
    let spawned = std::thread::Builder::new()
        .name("statefs-endpoint-conn".into())
        .spawn(move || {
            serve(conn.as_mut(), &limits, handler.as_ref(), &running, &|| {
                connections2.0.lock().reading.retain(|(i, _)| *i != id)
            });
            done(&connections2);
        });
    if spawned.is_err() {
        done(connections);
    }
}

/// Answers 503 on the accept thread, briefly: what the client already sent is drained first, so
/// that closing does not reset the connection and lose the answer.
fn refuse(conn: &mut dyn Conn, limits: &Limits) {
    let _ = conn.set_write_timeout(Some(Duration::from_millis(100)));
    let _ = conn.set_read_timeout(Some(Duration::from_millis(5)));
    let mut sink = [0u8; 1024];
    let mut drained = 0;
    while drained < limits.max_head_bytes {
        match conn.read(&mut sink) {
            Ok(n) if n > 0 => drained += n,
            _ => break,
        }
    }
    let _ = answer(conn, &Response::new(503, "too many connections\n"));
}

/// Reads, parses and answers one request; `head_read` is called once the head is in.
fn serve(
    conn: &mut dyn Conn,
    limits: &Limits,
    handler: &Handler,
    running: &Running,
    head_read: &dyn Fn(),
) {
    let _ = conn.set_write_timeout(Some(limits.write_timeout));
    let head = read_head(conn, limits);
    head_read();
    let response = match head.and_then(|h| parse_head(&h, limits)) {
        Err(RequestError::Closed) => return,
        Err(e) => Response::new(e.status(), format!("{e}\n")),
        Ok(request) => {
            {
                let mut s = running.state.lock();
                if s.1 {
                    drop(s);
                    let _ = answer(conn, &Response::new(503, "the mount is stopping\n"));
                    return;
                }
                s.0 += 1;
            }
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handler(&request)))
                .unwrap_or_else(|_| Response::new(500, "internal error\n"));
            let mut s = running.state.lock();
            s.0 -= 1;
            if s.0 == 0 {
                running.idle.notify_all();
            }
            r
        }
    };
    let _ = answer(conn, &response);
}

impl Drop for Server {
    fn drop(&mut self) {
        self.running.state.lock().1 = true;
        // Wake the accept loop.
        match &self.addr {
            Addr::Tcp(a) => drop(TcpStream::connect(a)),
            Addr::Unix(p) => drop(with_short_path(p, |p| UnixStream::connect(p))),
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let mut s = self.running.state.lock();
        while s.0 > 0 {
            self.running.idle.wait(&mut s);
        }
        if let Addr::Unix(p) = &self.addr {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Runs `f` on `path`, or, when `path` is too long for a socket address (108 bytes), on the same
/// file reached through `/proc/self/fd/<dir fd>/<name>`.
fn with_short_path<T>(
    path: &Path,
    f: impl FnOnce(&Path) -> std::io::Result<T>,
) -> std::io::Result<T> {
    use std::os::unix::ffi::OsStrExt;
    if path.as_os_str().as_bytes().len() < 100 {
        return f(path);
    }
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return f(path);
    };
    let dir = std::fs::File::open(dir)?;
    use std::os::fd::AsRawFd;
    let short = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd())).join(name);
    f(&short)
}

/// Sends `method target` to the server at `addr` and returns (status, body). The answer is read
/// within `timeout`.
pub fn request(
    addr: &Addr,
    method: &str,
    target: &str,
    timeout: Duration,
) -> std::io::Result<(u16, String)> {
    let mut conn: Box<dyn Conn> = match addr {
        Addr::Tcp(a) => Box::new(TcpStream::connect(a)?),
        Addr::Unix(p) => Box::new(with_short_path(p, |p| UnixStream::connect(p))?),
    };
    conn.set_read_timeout(Some(timeout))?;
    let host = match addr {
        Addr::Tcp(a) => a.to_string(),
        Addr::Unix(_) => "localhost".to_string(),
    };
    write!(
        conn,
        "{method} {target} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut resp = Vec::new();
    conn.read_to_end(&mut resp)?;
    let resp = String::from_utf8_lossy(&resp);
    let bad = || std::io::Error::other(format!("malformed answer from {addr:?}"));
    let (head, body) = resp.split_once("\r\n\r\n").ok_or_else(bad)?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(bad)?;
    Ok((status, body.to_string()))
}

#[cfg(test)]
#[path = "endpoint_tests.rs"]
mod tests;
