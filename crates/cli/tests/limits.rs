//! Rate limiting, CORS and configuration precedence.

mod common;

use common::Server;

#[test]
fn rate_limit_answers_429_with_retry_after_once_the_burst_is_spent() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(
        &dir.path().join("data"),
        &[
            ("KYRODB_RATE_LIMIT_PER_SEC", "1"),
            ("KYRODB_RATE_LIMIT_BURST", "5"),
        ],
    );
    // Spend the burst (the /health polling during start does not count: probes are not limited).
    let mut limited = None;
    for _ in 0..10 {
        let r = s.get("/v1/get_fast/1");
        if r.status == 429 {
            limited = Some(r);
            break;
        }
        assert_eq!(r.status, 404);
    }
    let r = limited.expect("a 429 within 10 requests of a burst of 5");
    assert_eq!(r.error_code(), "rate_limited");
    let wait: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=2).contains(&wait), "{wait}");
    // Probes share IPs with everything else and are never limited.
    for _ in 0..20 {
        assert_eq!(s.get("/health").status, 200);
        assert_eq!(s.get("/ready").status, 200);
        assert_eq!(s.get("/metrics").status, 200);
    }
    assert_eq!(
        s.get("/v1/get_fast/1").status,
        429,
        "the bucket is still spent"
    );
}

#[test]
fn forwarded_for_picks_the_bucket_only_behind_a_trusted_proxy() {
    let dir = tempfile::tempdir().unwrap();
    let burst_spent = |s: &Server, xff: &str| {
        (0..10).any(|_| {
            s.req("GET", "/v1/get_fast/1", &[("X-Forwarded-For", xff)], b"")
                .status
                == 429
        })
    };
    let trusted = Server::start(
        &dir.path().join("a"),
        &[
            ("KYRODB_RATE_LIMIT_PER_SEC", "1"),
            ("KYRODB_RATE_LIMIT_BURST", "3"),
            ("KYRODB_TRUSTED_PROXIES", "127.0.0.1"),
        ],
    );
    assert!(burst_spent(&trusted, "203.0.113.1"));
    let r = trusted.req(
        "GET",
        "/v1/get_fast/1",
        &[("X-Forwarded-For", "203.0.113.2")],
        b"",
    );
    assert_eq!(
        r.status, 404,
        "another client behind the proxy has its own bucket"
    );

    let untrusted = Server::start(
        &dir.path().join("b"),
        &[
            ("KYRODB_RATE_LIMIT_PER_SEC", "1"),
            ("KYRODB_RATE_LIMIT_BURST", "3"),
        ],
    );
    assert!(burst_spent(&untrusted, "203.0.113.1"));
    let r = untrusted.req(
        "GET",
        "/v1/get_fast/1",
        &[("X-Forwarded-For", "203.0.113.2")],
        b"",
    );
    assert_eq!(
        r.status, 429,
        "without a trusted proxy the header is ignored: same socket, same bucket"
    );
}

#[test]
fn rate_limit_is_off_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("data"), &[]);
    for _ in 0..200 {
        assert_eq!(s.get("/v1/get_fast/1").status, 404);
    }
}

#[test]
fn cors_preflight_allows_configured_origins_only() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(
        &dir.path().join("data"),
        &[
            ("KYRODB_CORS_ORIGINS", "https://app.example"),
            ("KYRODB_API_KEYS", "read:read-secret-1"),
        ],
    );
    let pre = |origin: &str| {
        s.req(
            "OPTIONS",
            "/v1/kv/1",
            &[
                ("Origin", origin),
                ("Access-Control-Request-Method", "GET"),
                ("Access-Control-Request-Headers", "authorization"),
            ],
            b"",
        )
    };
    let r = pre("https://app.example");
    assert!(r.status < 300, "{}", r.status);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    assert!(r
        .header("access-control-allow-methods")
        .unwrap()
        .contains("GET"));
    assert!(r
        .header("access-control-allow-headers")
        .unwrap()
        .to_ascii_lowercase()
        .contains("authorization"));
    let r = pre("https://evil.example");
    assert_eq!(r.header("access-control-allow-origin"), None);
    // Actual responses, errors included, carry the header for the allowed origin.
    let r = s.req("GET", "/v1/kv/1", &[("Origin", "https://app.example")], b"");
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example")
    );
}

#[test]
fn flags_beat_env_which_beats_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("kyrodb.toml");
    std::fs::write(&cfg, "rate_limit_per_sec = 1\nrate_limit_burst = 1\nvalue_bytes_max = 10\ncors_origins = [\"*\"]\n").unwrap();
    let cfg_s = cfg.to_str().unwrap().to_owned();
    // env turns the file's rate limit off; the file's value limit and CORS stay.
    let s = Server::start_with_args(
        &dir.path().join("data"),
        &[
            ("KYRODB_CONFIG", &cfg_s),
            ("KYRODB_RATE_LIMIT_PER_SEC", "0"),
            ("KYRODB_BATCH_KEYS_MAX", "3"),
        ],
        &["--batch-keys-max", "2"],
    );
    for _ in 0..5 {
        assert_eq!(
            s.get("/v1/get_fast/1").status,
            404,
            "rate limit from the file was overridden by env"
        );
    }
    assert_eq!(
        s.req("PUT", "/v1/kv/1", &[], b"more than ten bytes")
            .error_code(),
        "value_too_large"
    );
    assert_eq!(
        s.post("/v1/kv/batch_get", r#"{"keys": [1, 2, 3]}"#)
            .error_code(),
        "too_many_keys",
        "the flag (2) beat env (3)"
    );
    assert_eq!(
        s.req("GET", "/health", &[("Origin", "https://x.example")], b"")
            .header("access-control-allow-origin"),
        Some("*")
    );
}

#[test]
fn serve_help_documents_every_setting() {
    let out = common::command()
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    let extra = ["kyrodb.toml", "Precedence"];
    for needle in common::SERVE_ENV.iter().chain(&extra) {
        assert!(
            help.contains(needle),
            "{needle} missing from serve --help:\n{help}"
        );
    }
}

#[test]
fn zero_config_serve_uses_kyrodb_data_in_the_working_directory() {
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let mut child = common::command()
        .arg("serve")
        .current_dir(dir.path())
        .env("KYRODB_PORT", port.to_string())
        .env("KYRODB_DISABLE_HTTP_LOG", "1")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while common::try_request(port, "GET", "/health", &[], b"").is_err() {
        assert!(Instant::now() < deadline, "kyrodb serve did not come up");
        assert!(child.try_wait().unwrap().is_none(), "kyrodb serve exited");
        std::thread::sleep(Duration::from_millis(20));
    }
    let r =
        common::try_request(port, "POST", "/v1/put", &[], br#"{"key": 1, "value": "x"}"#).unwrap();
    assert_eq!(r.status, 200);
    assert!(
        dir.path().join("kyrodb-data").is_dir(),
        "default data dir ./kyrodb-data"
    );
    let _ = child.kill();
    let _ = child.wait();
}

/// Runs `kyrodb serve` with `env`, makes one request, stops it with SIGTERM, returns its stderr.
fn stderr_of_one_request(env: &[(&str, &str)]) -> String {
    use std::{
        io::Read,
        process::Stdio,
        time::{Duration, Instant},
    };
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let mut child = common::command()
        .args(["serve", "--port", &port.to_string(), "--data-dir"])
        .arg(dir.path())
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while common::try_request(port, "GET", "/health", &[], b"").is_err() {
        assert!(Instant::now() < deadline, "kyrodb serve did not come up");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        common::try_request(port, "GET", "/v1/get_fast/7", &[], b"")
            .unwrap()
            .status,
        404
    );
    let term = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(term.success());
    assert!(child.wait().unwrap().success());
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    err
}

#[test]
fn http_log_is_on_by_default_and_off_with_kyrodb_disable_http_log() {
    let on = stderr_of_one_request(&[("RUST_LOG", "info"), ("KYRODB_WARM_ON_START", "1")]);
    assert!(on.contains("/v1/get_fast/7"), "{on}");
    assert!(
        on.contains("warmed snapshot files"),
        "KYRODB_WARM_ON_START is honoured: {on}"
    );
    let off = stderr_of_one_request(&[("RUST_LOG", "info"), ("KYRODB_DISABLE_HTTP_LOG", "1")]);
    assert!(!off.contains("/v1/get_fast/7"), "{off}");
    assert!(off.contains("shutdown complete"), "{off}");
}

#[test]
fn answers_are_bounded_by_response_bytes_max_scan_pages_and_batch_get_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(
        &dir.path().join("data"),
        &[("KYRODB_RESPONSE_BYTES_MAX", "2048")],
    );
    let value = "v".repeat(1000);
    for k in 1..=5u64 {
        let r = s.req("PUT", &format!("/v1/kv/{k}"), &[], value.as_bytes());
        assert_eq!(r.status, 200, "{}", r.text());
    }
    // Two 1000-byte values fit in 2048 bytes, a third would not: the page ends and says where to go on.
    let r = s.get("/v1/scan?start=0&limit=10");
    assert_eq!(r.status, 200, "{}", r.text());
    let j = r.json();
    assert_eq!(j["items"].as_array().unwrap().len(), 2);
    assert_eq!(j["next_start"], 3);
    let r = s.get("/v1/scan?start=3&limit=10");
    assert_eq!(
        r.json()["items"][0]["key"],
        3,
        "paging continues where the cap stopped"
    );
    let r = s.post("/v1/kv/batch_get", r#"{"keys": [1, 2, 3, 4, 5]}"#);
    assert_eq!(r.status, 400);
    assert_eq!(r.error_code(), "response_too_large");
    let r = s.post("/v1/kv/batch_get", r#"{"keys": [1, 2]}"#);
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["found"], 2);
}
