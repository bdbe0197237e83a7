use super::*;
use std::sync::atomic::{AtomicUsize, Ordering};

fn limits() -> Limits {
    Limits {
        head_deadline: Duration::from_millis(500),
        max_connections: 4,
        ..Limits::default()
    }
}

fn echo() -> Arc<Handler> {
    Arc::new(|r: &Request| Response::new(200, format!("{:?} {}\n", r.method, r.target)))
}

/// Sends raw bytes and returns the answer's status line (or what the read ended with).
fn raw(addr: SocketAddr, bytes: &[u8]) -> String {
    send(addr, bytes, true)
}

/// Like `raw`, but keeps the write side open, as a client that never finishes its head.
fn raw_open(addr: SocketAddr, bytes: &[u8]) -> String {
    send(addr, bytes, false)
}

fn send(addr: SocketAddr, bytes: &[u8], close_write: bool) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    // The server may close before taking everything: an error here is part of the answer.
    let _ = s.write_all(bytes);
    if close_write {
        let _ = s.shutdown(std::net::Shutdown::Write);
    }
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out)
        .lines()
        .next()
        .unwrap_or("")
        .to_string()
}

#[test]
fn parse_head_accepts_requests_and_refuses_the_rest() {
    let l = Limits::default();
    assert_eq!(
        parse_head(b"GET /metrics HTTP/1.1\r\nHost: x", &l),
        Ok(Request {
            method: Method::Get,
            target: "/metrics".into()
        })
    );
    assert_eq!(
        parse_head(b"POST /checkpoint?dir=a HTTP/1.0\nContent-Length: 0", &l)
            .unwrap()
            .method,
        Method::Post
    );
    let cases: &[(&[u8], u16)] = &[
        (b"", 400),
        (b"GET", 400),
        (b"GET /x", 400),
        (b"GET /x HTTP/1.1 extra", 400),
        (b"DELETE /x HTTP/1.1", 405),
        (b"get /x HTTP/1.1", 400),
        (b"GET x HTTP/1.1", 400),
        (b"GET /\x01 HTTP/1.1", 400),
        (b"GET /x HTTP/2", 505),
        (b"GET /x FTP/1", 400),
        (b"GET /x HTTP/1.1\r\nno colon", 400),
        (b"GET /x HTTP/1.1\r\n: empty name", 400),
        (b"POST /x HTTP/1.1\r\nContent-Length: 5", 413),
        (b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked", 413),
        (b"GET /\xff HTTP/1.1", 400),
    ];
    for (head, status) in cases {
        let err = parse_head(head, &l).unwrap_err();
        assert_eq!(
            err.status(),
            *status,
            "{:?}: {err}",
            String::from_utf8_lossy(head)
        );
    }
    let many = format!("GET / HTTP/1.1{}", "\r\nA: b".repeat(l.max_headers + 1));
    assert_eq!(
        parse_head(many.as_bytes(), &l),
        Err(RequestError::TooManyHeaders(l.max_headers))
    );
}

#[test]
fn every_malformed_request_gets_an_answer() {
    let server = Server::tcp("127.0.0.1:0", limits(), echo()).unwrap();
    let a = server.tcp_addr();
    assert_eq!(raw(a, b"GET /m HTTP/1.1\r\n\r\n"), "HTTP/1.1 200 OK");
    assert_eq!(
        raw(a, b"BREW /pot HTTP/1.1\r\n\r\n"),
        "HTTP/1.1 405 Method Not Allowed"
    );
    assert_eq!(raw(a, b"\r\n\r\n"), "HTTP/1.1 400 Bad Request");
    assert_eq!(
        raw(a, b"POST /x HTTP/1.1\r\nContent-Length: 9\r\n\r\n123456789"),
        "HTTP/1.1 413 Content Too Large"
    );
    // A head without its end: answered at the deadline.
    assert_eq!(
        raw_open(a, b"GET / HTTP/1.1\r\n"),
        "HTTP/1.1 408 Request Timeout"
    );
}

/// A client sending an endless head is cut off after `max_head_bytes`: the server reads no more
/// than that (it answers 431 and closes, so the sender's write fails long before it is done).
#[test]
fn an_endless_request_is_cut_off_at_the_head_limit() {
    let server = Server::tcp("127.0.0.1:0", limits(), echo()).unwrap();
    let mut s = TcpStream::connect(server.tcp_addr()).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(30))).unwrap();
    let zeros = vec![b'a'; 1 << 20];
    let mut sent = 0usize;
    let mut failed = false;
    for _ in 0..256 {
        match s.write_all(&zeros) {
            Ok(()) => sent += zeros.len(),
            Err(_) => {
                failed = true;
                break;
            }
        }
    }
    assert!(
        failed,
        "the server took all {sent} bytes of an endless request head"
    );
    assert!(sent < 64 << 20, "{sent} bytes accepted before the cut");
}

/// A client that trickles its head holds one connection until the deadline and never another:
/// requests sent meanwhile are answered, and the slow one gets a 408.
#[test]
fn a_slow_client_blocks_no_one() {
    let server = Server::tcp(
        "127.0.0.1:0",
        Limits {
            head_deadline: Duration::from_secs(3),
            ..limits()
        },
        echo(),
    )
    .unwrap();
    let a = server.tcp_addr();
    let mut slow = TcpStream::connect(a).unwrap();
    slow.write_all(b"GET /").unwrap();
    for _ in 0..3 {
        assert_eq!(raw(a, b"GET /m HTTP/1.1\r\n\r\n"), "HTTP/1.1 200 OK");
        // Still trickling: one byte per round, never the end of the head.
        slow.write_all(b"x").unwrap();
    }
    slow.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut out = String::new();
    let _ = slow.read_to_string(&mut out);
    assert!(out.starts_with("HTTP/1.1 408"), "{out}");
}

/// A flood of connections that never finish their head cannot starve a real request: the
/// longest-waiting one is cut to make room.
#[test]
fn a_flood_of_slow_heads_cannot_starve_a_request() {
    let server = Server::tcp(
        "127.0.0.1:0",
        Limits {
            head_deadline: Duration::from_secs(60),
            ..limits()
        },
        echo(),
    )
    .unwrap();
    let a = server.tcp_addr();
    let mut held = Vec::new();
    for round in 0..5 {
        for _ in 0..4 {
            let mut s = TcpStream::connect(a).unwrap();
            s.write_all(b"GET").unwrap();
            held.push(s);
        }
        assert_eq!(
            raw(a, b"GET /m HTTP/1.1\r\n\r\n"),
            "HTTP/1.1 200 OK",
            "round {round}"
        );
    }
    // The cut ones were told so by a closed connection.
    held[0]
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut out = Vec::new();
    let _ = held[0].read_to_end(&mut out);
}

/// When every slot runs a handler, one more connection gets a 503 at once, and slots come back.
#[test]
fn connections_beyond_the_limit_get_503_when_all_are_busy() {
    let gate = Arc::new((Mutex::new(false), Condvar::new()));
    let entered = Arc::new(AtomicUsize::new(0));
    let (g, e) = (gate.clone(), entered.clone());
    let handler: Arc<Handler> = Arc::new(move |_: &Request| {
        e.fetch_add(1, Ordering::SeqCst);
        let mut open = g.0.lock();
        while !*open {
            g.1.wait(&mut open);
        }
        Response::new(200, "ok\n")
    });
    let server = Server::tcp("127.0.0.1:0", limits(), handler).unwrap();
    let a = server.tcp_addr();
    let busy: Vec<_> = (0..4)
        .map(|_| std::thread::spawn(move || raw(a, b"GET / HTTP/1.1\r\n\r\n")))
        .collect();
    while entered.load(Ordering::SeqCst) < 4 {
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut refused = false;
    for _ in 0..500 {
        if raw(a, b"GET / HTTP/1.1\r\n\r\n") == "HTTP/1.1 503 Service Unavailable" {
            refused = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        refused,
        "a fifth connection was taken beside four running handlers"
    );
    *gate.0.lock() = true;
    gate.1.notify_all();
    for b in busy {
        assert_eq!(b.join().unwrap(), "HTTP/1.1 200 OK");
    }
    // A slot is given back just after its answer is sent.
    let served = (0..500).any(|_| {
        std::thread::sleep(Duration::from_millis(10));
        raw(a, b"GET / HTTP/1.1\r\n\r\n") == "HTTP/1.1 200 OK"
    });
    assert!(served, "slots did not come back");
}

/// The Unix socket is 0600, answers like the TCP one, and is gone after the server.
#[test]
fn unix_socket_is_private_and_removed_on_drop() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    // Longer than a socket address holds: reached through /proc/self/fd.
    let deep = dir.path().join("d".repeat(120));
    std::fs::create_dir(&deep).unwrap();
    for path in [dir.path().join("control.sock"), deep.join("control.sock")] {
        let server = Server::unix(&path, limits(), echo()).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let (status, body) = request(
            server.addr(),
            "POST",
            "/checkpoint?dir=a",
            Duration::from_secs(10),
        )
        .unwrap();
        assert_eq!((status, body.as_str()), (200, "Post /checkpoint?dir=a\n"));
        drop(server);
        assert!(!path.exists(), "socket left behind");
    }
}

/// Dropping the server waits for a running handler (a publish finishes before the mount goes)
/// and runs none after.
#[test]
fn drop_waits_for_running_handlers() {
    let (started, done) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (s2, d2) = (started.clone(), done.clone());
    let handler: Arc<Handler> = Arc::new(move |_: &Request| {
        s2.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(300));
        d2.fetch_add(1, Ordering::SeqCst);
        Response::new(200, "ok\n")
    });
    let server = Server::tcp("127.0.0.1:0", limits(), handler).unwrap();
    let a = server.tcp_addr();
    let client = std::thread::spawn(move || raw(a, b"GET / HTTP/1.1\r\n\r\n"));
    while started.load(Ordering::SeqCst) == 0 {
        std::thread::yield_now();
    }
    drop(server);
    assert_eq!(
        done.load(Ordering::SeqCst),
        1,
        "drop returned before the handler"
    );
    assert_eq!(client.join().unwrap(), "HTTP/1.1 200 OK");
}
