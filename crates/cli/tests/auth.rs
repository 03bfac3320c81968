//! The auth matrix: no token, wrong token, each role against read, write and admin routes.

mod common;

use common::Server;

const KEYS: &str = "admin:admin-secret-1,write:write-secret-1,read:read-secret-1";

#[test]
fn auth_matrix() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("data"), &[("KYRODB_API_KEYS", KEYS)]);
    let read = [
        ("GET", "/v1/get_fast/1"),
        ("GET", "/v1/kv/1"),
        ("GET", "/v1/scan"),
        ("GET", "/metrics"),
        ("GET", "/build_info"),
        ("GET", "/openapi.json"),
    ];
    let write = [
        ("PUT", "/v1/kv/1"),
        ("DELETE", "/v1/kv/1"),
        ("POST", "/v1/put"),
    ];
    let admin = [
        ("POST", "/v1/snapshot"),
        ("POST", "/v1/rmi/build"),
        ("POST", "/v1/warmup"),
    ];
    let call = |m: &str, p: &str, token: Option<&str>| {
        let auth = token.map(|t| format!("Bearer {t}"));
        let mut h = vec![];
        if let Some(a) = &auth {
            h.push(("Authorization", a.as_str()));
        }
        let body: &[u8] = if p == "/v1/put" {
            br#"{"key":1,"value":"v"}"#
        } else {
            b"v"
        };
        s.req(m, p, &h, body)
    };
    // Probes are always open.
    assert_eq!(s.get("/health").status, 200);
    assert_eq!(s.get("/ready").status, 200);
    for (m, p) in read.iter().chain(&write).chain(&admin) {
        for token in [None, Some("wrong-secret-1"), Some("admin-secret-")] {
            let r = call(m, p, token);
            assert_eq!(r.status, 401, "{m} {p} with {token:?}");
            assert_eq!(r.error_code(), "unauthorized");
            assert_eq!(r.header("www-authenticate"), Some("Bearer"));
        }
    }
    let expect = |routes: &[(&str, &str)], token: &str, allowed: bool| {
        for (m, p) in routes {
            let r = call(m, p, Some(token));
            if allowed {
                assert!(
                    r.status != 401 && r.status != 403,
                    "{m} {p} with {token}: {}",
                    r.status
                );
            } else {
                assert_eq!(r.status, 403, "{m} {p} with {token}");
                assert_eq!(r.error_code(), "forbidden");
            }
        }
    };
    expect(&read, "read-secret-1", true);
    expect(&write, "read-secret-1", false);
    expect(&admin, "read-secret-1", false);
    expect(&read, "write-secret-1", true);
    expect(&write, "write-secret-1", true);
    expect(&admin, "write-secret-1", false);
    expect(&read, "admin-secret-1", true);
    expect(&write, "admin-secret-1", true);
    expect(&admin, "admin-secret-1", true);
}

#[test]
fn a_bad_key_list_stops_the_server_from_starting() {
    let dir = tempfile::tempdir().unwrap();
    let out = common::command()
        .args(["serve", "--port", "1", "--data-dir"])
        .arg(dir.path())
        .env("KYRODB_API_KEYS", "root:abcdefghijkl")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("role"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_set_but_empty_key_list_stops_the_server_from_starting() {
    for text in [" , ", "", ","] {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let out = common::command()
            .args(["serve", "--port", "1", "--data-dir"])
            .arg(&data)
            .env("KYRODB_API_KEYS", text)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{text:?} started the server: {err}");
        assert!(err.contains("KYRODB_API_KEYS"), "{text:?}: {err}");
        assert!(!data.exists(), "{text:?}: the data dir was created");
    }
}

#[test]
fn public_metrics_opens_metrics_only() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(
        &dir.path().join("data"),
        &[("KYRODB_API_KEYS", KEYS), ("KYRODB_PUBLIC_METRICS", "true")],
    );
    let m = s.get("/metrics");
    assert_eq!(m.status, 200);
    assert!(m.text().contains("# HELP"));
    assert_eq!(s.get("/v1/scan").status, 401);
    assert_eq!(s.get("/build_info").status, 401);
}

/// The first log line that says the server listens, within a bounded wait.
fn banner(env: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut child = common::command()
        .args(["serve", "--port", "0", "--data-dir"])
        .arg(dir.path())
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .envs(env.iter().copied())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let line = common::first_stderr_line(child.stderr.take().unwrap(), |l| {
        l.contains("kyrodb listening").then(|| l.to_owned())
    });
    let _ = child.kill();
    let _ = child.wait();
    line.expect("no listening line in time")
}

#[test]
fn the_startup_banner_says_whether_auth_and_rate_limit_are_on() {
    let open = banner(&[]);
    assert!(open.contains("auth=\"off"), "{open}");
    assert!(open.contains("rate_limit=off"), "{open}");
    let closed = banner(&[
        ("KYRODB_API_KEYS", KEYS),
        ("KYRODB_RATE_LIMIT_PER_SEC", "50"),
    ]);
    assert!(closed.contains("auth=\"on\""), "{closed}");
    assert!(closed.contains("rate_limit=50/s"), "{closed}");
}
