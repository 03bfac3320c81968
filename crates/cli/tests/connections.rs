//! Connection hygiene: slow-header clients are closed, a connection cap answers JSON 503, shutdown is
//! not held up by connections that never sent a complete request, and hyper's own parse errors are JSON.

mod common;

use std::{
    io::{Read, Write},
    net::TcpStream,
    time::{Duration, Instant},
};

use common::Server;

fn connect(s: &Server) -> TcpStream {
    let c = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    // The bound for every read below: a server that never closes or answers fails the test.
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    c
}

/// Reads until the server closes the connection; Err if it did not within the read timeout.
fn read_to_close(c: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    c.read_to_end(&mut out)?;
    Ok(out)
}

#[test]
fn incomplete_request_heads_are_closed_after_the_header_read_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(
        &dir.path().join("data"),
        &[("KYRODB_HEADER_READ_TIMEOUT_MS", "300")],
    );
    let mut slow: Vec<TcpStream> = (0..20)
        .map(|_| {
            let mut c = connect(&s);
            c.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
                .unwrap();
            c
        })
        .collect();
    for c in &mut slow {
        let got = read_to_close(c).expect("the server closed the slow connection");
        assert!(got.is_empty(), "no answer to a request never completed");
    }
    // The server still serves.
    assert_eq!(s.get("/health").status, 200);
}

#[test]
fn sigterm_closes_connections_that_never_sent_a_complete_request() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start(
        &dir.path().join("data"),
        &[("KYRODB_HEADER_READ_TIMEOUT_MS", "120000")],
    );
    let mut slow: Vec<TcpStream> = (0..5)
        .map(|_| {
            let mut c = connect(&s);
            c.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n")
                .unwrap();
            c
        })
        .collect();
    // Make sure the server has accepted them: a request on a fresh connection is answered after they
    // were queued (the accept loop takes connections in order).
    assert_eq!(s.get("/health").status, 200);
    let started = Instant::now();
    let status = s.term();
    assert!(status.success(), "{status:?}");
    // The drain bound is 30 s and the header timeout 120 s: a shutdown that waited for either fails.
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "shutdown waited {:?} on slow-header connections",
        started.elapsed()
    );
    for c in &mut slow {
        assert!(read_to_close(c).is_ok(), "connection closed at shutdown");
    }
}

#[test]
fn connections_over_the_cap_get_a_json_503() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("data"), &[("KYRODB_CONNECTIONS_MAX", "3")]);
    // Hold keep-alive connections, each proven served, until one is refused. The health poll of the
    // start may still hold a slot for a moment, so the refusal comes after at most 3 served.
    let mut held = Vec::new();
    let mut refused = None;
    for _ in 0..10 {
        let mut c = connect(&s);
        c.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .unwrap();
        let mut buf = [0u8; 1024];
        let n = c.read(&mut buf).unwrap();
        let head = String::from_utf8_lossy(&buf[..n]).to_string();
        if head.starts_with("HTTP/1.1 200") {
            held.push(c);
        } else {
            let mut rest = head.into_bytes();
            rest.extend(read_to_close(&mut c).unwrap());
            refused = Some(String::from_utf8(rest).unwrap());
            break;
        }
    }
    let refused = refused.expect("a connection over the cap was refused");
    assert!(
        held.len() <= 3,
        "{} connections served with a cap of 3",
        held.len()
    );
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert!(
        refused.contains("content-type: application/json"),
        "{refused}"
    );
    assert!(
        refused.contains("\"code\":\"too_many_connections\""),
        "{refused}"
    );
    assert!(
        refused.to_ascii_lowercase().contains("retry-after: 1"),
        "{refused}"
    );
    // Closing one frees its slot: a new connection is served again (bounded polling).
    drop(held.pop());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if common::try_request(s.port, "GET", "/health", &[], b"").is_ok_and(|r| r.status == 200) {
            break;
        }
        assert!(Instant::now() < deadline, "the freed slot was never reused");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn raw(s: &Server, bytes: &[u8]) -> String {
    let mut c = connect(s);
    c.write_all(bytes).unwrap();
    String::from_utf8_lossy(&read_to_close(&mut c).unwrap()).to_string()
}

#[test]
fn unparsable_requests_get_json_errors() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("data"), &[]);
    let cases: [(Vec<u8>, &str, &str); 3] = [
        (b"GARBAGE\r\n\r\n".to_vec(), "400", "bad_request"),
        (
            [
                b"GET /".as_slice(),
                &vec![b'a'; 100_000],
                b" HTTP/1.1\r\nHost: localhost\r\n\r\n",
            ]
            .concat(),
            "414",
            "uri_too_long",
        ),
        (
            [
                b"GET /health HTTP/1.1\r\nHost: localhost\r\nX-Big: ".as_slice(),
                &vec![b'b'; 600_000],
                b"\r\n\r\n",
            ]
            .concat(),
            "431",
            "headers_too_large",
        ),
    ];
    for (req, status, code) in cases {
        let resp = raw(&s, &req);
        assert!(resp.starts_with(&format!("HTTP/1.1 {status}")), "{resp}");
        assert!(resp.contains("content-type: application/json"), "{resp}");
        let body = &resp[resp.find("\r\n\r\n").unwrap() + 4..];
        let j: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(j["error"]["code"], code, "{resp}");
        assert!(j["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
    }
}

#[test]
fn a_taken_port_fails_before_the_data_dir_is_created() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = common::command()
        .args(["serve", "--port", &port.to_string(), "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("cannot listen"), "{err}");
    assert!(
        !data.exists(),
        "the data dir was created although the port was taken"
    );
}

#[test]
fn host_may_be_a_name_and_a_bad_one_names_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("data"), &[("KYRODB_HOST", "localhost")]);
    assert_eq!(s.get("/health").status, 200);
    let out = common::command()
        .args(["serve", "--port", "1", "--data-dir"])
        .arg(dir.path().join("other"))
        .env("KYRODB_HOST", "no-such-host.invalid")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("KYRODB_HOST"), "{err}");
}

/// Opens up to `n` connections to `port` and holds them idle (a connection the server refused or
/// closed at once is dropped). Returns how many stayed open and how many were answered 503.
fn flood(port: u16, n: usize) -> (Vec<TcpStream>, usize) {
    let mut held = Vec::new();
    for _ in 0..n {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(c) => held.push(c),
            Err(_) => break,
        }
    }
    // Connections over the cap are answered 503 and closed by the server: find them.
    let mut refused = 0;
    held.retain_mut(|c| {
        c.set_nonblocking(true).unwrap();
        let mut b = [0u8; 64];
        let gone = match c.read(&mut b) {
            Ok(0) => true,
            Ok(n) => {
                refused += usize::from(b[..n].starts_with(b"HTTP/1.1 503"));
                true
            }
            Err(_) => false,
        };
        !gone
    });
    (held, refused)
}

#[test]
fn idle_connections_never_take_the_engines_file_descriptors() {
    let dir = tempfile::tempdir().unwrap();
    // 512 descriptors, soft and hard: the server cannot raise it and must keep a reserve for files.
    let s = Server::start_limited(
        &dir.path().join("data"),
        &[("KYRODB_HEADER_READ_TIMEOUT_MS", "120000")],
        &[],
        Some(512),
    );
    // A connection opened before the flood, for the writes during it.
    let mut c = common::KeepAlive::open(s.port).unwrap();
    let value = "v".repeat(4000);
    for k in 0..200u64 {
        let r = c
            .request("PUT", &format!("/v1/kv/{k}"), &[], value.as_bytes())
            .unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
    }
    // More idle connections than the server has descriptors.
    let (idle, _) = flood(s.port, 700);
    // The engine still opens files: a snapshot (new WAL segment, snapshot files) and more writes.
    let r = c.request("POST", "/v1/snapshot", &[], b"").unwrap();
    assert_eq!(r.status, 200, "snapshot while flooded: {}", r.text());
    for k in 200..400u64 {
        let r = c
            .request("PUT", &format!("/v1/kv/{k}"), &[], value.as_bytes())
            .unwrap();
        assert_eq!(r.status, 200, "write while flooded: {}", r.text());
    }
    let r = c.request("GET", "/ready", &[], b"").unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    drop(idle);
    drop(c);
    // And after the flood, every write is there — once the server has seen the idle connections
    // close (until then a new connection may still be over the cap: 503 too_many_connections).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let r = loop {
        let r = s.get("/v1/get_fast/399");
        if r.status != 503 || std::time::Instant::now() > deadline {
            break r;
        }
        assert_eq!(r.error_code(), "too_many_connections", "{}", r.text());
        std::thread::yield_now();
    };
    assert_eq!(r.status, 200, "{}", r.text());
    let ready = s.get("/ready");
    assert_eq!(ready.status, 200, "{}", ready.text());
}
