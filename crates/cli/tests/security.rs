//! What a reachable server refuses (README, "Security"): drive-by writes from web pages (CSRF, DNS
//! rebinding), what `/ready` tells a stranger, unknown query parameters, long echoes, names that
//! read as paths, and answers held by clients that stop reading.

mod common;

use std::{
    io::{Read, Write},
    net::TcpStream,
    time::{Duration, Instant},
};

use common::{try_request, Server};

fn req(s: &Server, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> common::Resp {
    try_request(s.port, method, path, headers, body.as_bytes()).unwrap()
}

#[test]
fn a_web_page_cannot_write_to_a_server_without_auth() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("data"), &[]);
    assert_eq!(
        s.post("/v1/put", r#"{"key": 1, "value": "keep"}"#).status,
        200
    );
    let wipe = r#"{"start":0,"end":18446744073709551615}"#;
    // The issue's form: a text/plain body (what a cross-site form can send) is not JSON.
    let r = req(
        &s,
        "POST",
        "/v1/kv/delete_range",
        &[("Content-Type", "text/plain")],
        wipe,
    );
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (415, "unsupported_media_type")
    );
    let r = req(
        &s,
        "POST",
        "/v1/kv/delete_range",
        &[("Content-Type", "multipart/form-data; boundary=x")],
        wipe,
    );
    assert_eq!(r.status, 415);
    // A page on another site: refused whatever the content type.
    for ct in [
        "application/json",
        "application/x-www-form-urlencoded",
        "text/plain",
    ] {
        let r = req(
            &s,
            "POST",
            "/v1/kv/delete_range",
            &[("Content-Type", ct), ("Origin", "http://evil.example")],
            wipe,
        );
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (403, "cross_origin_refused"),
            "{ct}"
        );
    }
    // Raw-value writes too, and a browser that sends only Sec-Fetch-Site.
    let r = req(&s, "PUT", "/v1/kv/1", &[("Origin", "null")], "x");
    assert_eq!(r.status, 403);
    let r = req(
        &s,
        "DELETE",
        "/v1/kv/1",
        &[("Sec-Fetch-Site", "cross-site")],
        "",
    );
    assert_eq!(r.status, 403);
    // From a page (it carries Origin), even the server's own, a JSON body must say so.
    let own = format!("http://127.0.0.1:{}", s.port);
    let r = req(
        &s,
        "POST",
        "/v1/kv/delete_range",
        &[("Origin", &own), ("Content-Type", "text/plain")],
        wipe,
    );
    assert_eq!(r.status, 415);
    // Nothing was deleted.
    assert_eq!(s.get("/v1/get_fast/1").text(), "keep");
    // The server's own pages (the console) write with application/json; curl -d (form type or
    // none) keeps working.
    let r = req(
        &s,
        "POST",
        "/v1/put",
        &[("Origin", &own), ("Content-Type", "application/json")],
        r#"{"key": 2, "value": "console"}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let r = req(
        &s,
        "POST",
        "/v1/put",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        r#"{"key": 3, "value": "curl"}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        req(&s, "POST", "/v1/put", &[], r#"{"key": 4, "value": "none"}"#).status,
        200
    );
    // Reads from another origin are CORS's business (no CORS headers: the page cannot read them).
    let r = req(
        &s,
        "GET",
        "/v1/get_fast/2",
        &[("Origin", "http://evil.example")],
        "",
    );
    assert_eq!(r.status, 200);
    assert!(r.header("access-control-allow-origin").is_none());
}

#[test]
fn listed_cors_origins_may_write() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(
        &dir.path().join("data"),
        &[("KYRODB_CORS_ORIGINS", "https://app.example")],
    );
    let ok = [
        ("Origin", "https://app.example"),
        ("Content-Type", "application/json"),
    ];
    let r = req(&s, "POST", "/v1/put", &ok, r#"{"key": 1, "value": "x"}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    let bad = [
        ("Origin", "https://other.example"),
        ("Content-Type", "application/json"),
    ];
    assert_eq!(
        req(&s, "POST", "/v1/put", &bad, r#"{"key": 1, "value": "y"}"#).status,
        403
    );
}

#[test]
fn a_loopback_server_answers_only_loopback_host_names() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(
        &dir.path().join("data"),
        &[("KYRODB_ALLOWED_HOSTS", "db.internal,*.corp.example")],
    );
    // DNS rebinding: evil.example resolved to 127.0.0.1 for the victim's browser.
    let status_for = |host: &str, method: &str, path: &str| -> String {
        let mut c = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        write!(
            c,
            "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: 23\r\n\r\n{{\"key\":1,\"value\":\"x\"}}"
        )
        .unwrap();
        let mut out = String::new();
        c.read_to_string(&mut out).unwrap();
        out
    };
    for host in [
        "evil.example",
        "evil.example:8080",
        "localhost.evil.example",
        "10.1.2.3",
    ] {
        let r = status_for(host, "GET", "/v1/get_fast/1");
        assert!(
            r.starts_with("HTTP/1.1 403") && r.contains("host_not_allowed"),
            "{host}: {r}"
        );
        let r = status_for(host, "POST", "/v1/put");
        assert!(r.starts_with("HTTP/1.1 403"), "{host}: {r}");
    }
    // Two Host headers, one of them foreign: refused.
    let r = status_for("localhost\r\nHost: evil.example", "GET", "/health");
    assert!(!r.starts_with("HTTP/1.1 200"), "{r}");
    for host in [
        "localhost",
        "localhost:1234",
        "127.0.0.1",
        "[::1]:9",
        "db.internal",
        "a.corp.example:80",
    ] {
        let r = status_for(host, "GET", "/health");
        assert!(r.starts_with("HTTP/1.1 200"), "{host}: {r}");
    }
}

#[test]
fn every_answer_says_nosniff_and_errors_do_not_echo_megabytes() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("data"), &[]);
    for path in ["/health", "/v1/get_fast/1", "/no/such/route"] {
        assert_eq!(
            s.get(path).header("x-content-type-options"),
            Some("nosniff"),
            "{path}"
        );
    }
    let long = "z".repeat(100_000);
    let r = s.post("/v1/put", &format!(r#"{{"key": 1, "{long}": 1}}"#));
    assert_eq!(r.status, 400);
    let msg = r.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(
        msg.chars().count() < 500,
        "{} characters",
        msg.chars().count()
    );
}

#[test]
fn routes_refuse_what_they_do_not_take_and_name_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("data"), &[]);
    assert_eq!(s.post("/v1/keyspaces", r#"{"name": "other"}"#).status, 201);
    assert_eq!(
        s.post(
            "/v1/put",
            r#"{"key": 1, "value": "x", "keyspace": "other"}"#
        )
        .status,
        200
    );
    // get_fast reads only `default`: ?keyspace= is refused, not ignored.
    let r = s.get("/v1/get_fast/1?keyspace=other");
    assert_eq!((r.status, r.error_code().as_str()), (400, "invalid_query"));
    for (body, field) in [
        (r#"{"key": 1, "value": "x", "ttl_ms": -5}"#, "ttl_ms"),
        (r#"{"key": 1, "value": "x", "if_seq": 1.5}"#, "if_seq"),
    ] {
        let r = s.post("/v1/put", body);
        assert_eq!(r.status, 400);
        let msg = r.json()["error"]["message"].as_str().unwrap().to_owned();
        assert!(msg.contains(field) && !msg.starts_with("key"), "{msg}");
    }
    let r = s.post("/v1/kv/delete_range", r#"{"start": 0, "end": -1}"#);
    let msg = r.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(msg.contains("end"), "{msg}");
    // Names that read as paths.
    for name in [".", "..", "..."] {
        let r = s.post("/v1/keyspaces", &format!(r#"{{"name": "{name}"}}"#));
        assert_eq!(r.status, 400, "{name}: {}", r.text());
    }
}

#[test]
fn ready_tells_a_stranger_no_paths_and_cluster_status_needs_admin() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(
        &dir.path().join("data"),
        &[(
            "KYRODB_API_KEYS",
            "admin:admin-token-123,read:read-token-123",
        )],
    );
    // No model is installed: the reason names the model directory, for token holders only.
    let anon = s.get("/ready");
    assert_eq!(anon.status, 200);
    let text = anon.text();
    assert!(!text.contains(dir.path().to_str().unwrap()), "{text}");
    let with = req(
        &s,
        "GET",
        "/ready",
        &[("Authorization", "Bearer read-token-123")],
        "",
    );
    assert!(
        with.text().contains(dir.path().to_str().unwrap()),
        "{}",
        with.text()
    );
    let r = req(
        &s,
        "GET",
        "/v1/cluster/status",
        &[("Authorization", "Bearer read-token-123")],
        "",
    );
    assert_eq!(r.status, 403);
}

/// A server holding 60 values of 1 MiB (keys 0..60), with a 2 s write stall timeout.
fn sixty_mib_server() -> (tempfile::TempDir, Server) {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(
        &dir.path().join("data"),
        &[("KYRODB_WRITE_STALL_TIMEOUT_MS", "2000")],
    );
    let mib = "m".repeat(1 << 20);
    for k in 0..60u64 {
        assert_eq!(
            req(&s, "PUT", &format!("/v1/kv/{k}"), &[], &mib).status,
            200
        );
    }
    (dir, s)
}

/// `kyrodb_http_write_stalls_total` on the server's /metrics.
fn write_stalls(s: &Server) -> f64 {
    s.get("/metrics")
        .text()
        .lines()
        .find_map(|l| l.strip_prefix("kyrodb_http_write_stalls_total "))
        .map_or(0.0, |v| v.trim().parse::<f64>().unwrap())
}

/// 20 clients ask for 60 MiB pages of 1 MiB values (more than the kernel buffers of a loopback
/// connection hold, ~36 MiB here) and never read: the server's memory stays
/// bounded, /health answers meanwhile, and the stalled answers are dropped.
#[test]
fn clients_that_never_read_big_answers_hold_little_memory() {
    let (_dir, s) = sixty_mib_server();
    let rss = || -> u64 {
        let st = std::fs::read_to_string(format!("/proc/{}/status", s.pid())).unwrap();
        let line = st.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace()
            .nth(1)
            .unwrap()
            .parse::<u64>()
            .unwrap()
            * 1024
    };
    let before = rss();
    let mut stalled: Vec<TcpStream> = (0..20)
        .map(|_| {
            let mut c = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
            c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            c.write_all(b"GET /v1/scan?limit=60 HTTP/1.1\r\nHost: localhost\r\n\r\n")
                .unwrap();
            c
        })
        .collect();
    // Each answer has started (its head is out), so the server has done what it does up front.
    let mut total = vec![0usize; stalled.len()];
    for (c, t) in stalled.iter_mut().zip(&mut total) {
        let mut b = [0u8; 16];
        *t = c.read(&mut b).unwrap();
        assert!(b.starts_with(b"HTTP/1.1 200"));
    }
    // /health answers while they stall.
    let t = Instant::now();
    assert_eq!(s.get("/health").status, 200);
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    let grown = rss().saturating_sub(before);
    // 20 whole answers would be 20 × 60 MiB = 1.2 GB; streaming holds a few pieces each.
    assert!(grown < 160 << 20, "RSS grew {} MiB", grown >> 20);
    // After the stall timeout the server gives up on each (its counter says so; bounded polling).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let stalls = write_stalls(&s);
        if stalls >= 20.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{stalls} stalled answers abandoned"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The clients then read what the kernel had buffered, and the end.
    for (mut c, mut total) in stalled.into_iter().zip(total) {
        let mut buf = vec![0u8; 1 << 16];
        loop {
            match c.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => total += n,
                Err(e) => panic!("the stalled answer was never abandoned: {e}"),
            }
        }
        assert!(
            total < 60 << 20,
            "the whole answer was sent ({total} bytes)"
        );
    }
}

/// Reads an answer at a trickle — 2 KiB every 100 ms, with a 16 KiB receive buffer so the kernel
/// holds little on its behalf — until the server closes or 60 s pass.
const TRICKLE: &str = r#"
import socket, sys, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
s.connect(("127.0.0.1", int(sys.argv[1])))
s.sendall(b"GET /v1/scan?limit=60 HTTP/1.1\r\nHost: localhost\r\n\r\n")
s.settimeout(10)
t = time.monotonic()
while time.monotonic() - t < 60:
    try:
        b = s.recv(2048)
    except ConnectionResetError:
        break
    if not b:
        break
    time.sleep(0.1)
"#;

/// A client that reads a big answer at a trickle (always some progress, ~20 KiB/s) loses it
/// too: the kernel wakes a blocked writer only once a share of the send buffer has drained, so
/// at that rate a write stays blocked past the stall timeout.
#[test]
fn clients_that_read_big_answers_at_a_trickle_are_dropped() {
    let (_dir, s) = sixty_mib_server();
    let mut reader = std::process::Command::new("python3")
        .args(["-c", TRICKLE, &s.port.to_string()])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The server gives the answer up while the client still reads (bounded polling of its counter).
    let started = Instant::now();
    loop {
        let stalls = write_stalls(&s);
        if stalls >= 1.0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(50) && reader.try_wait().unwrap().is_none(),
            "a trickle reader was still served after {:?}",
            started.elapsed()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = reader.kill();
    let _ = reader.wait();
}
