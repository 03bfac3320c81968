//! Every class of bad input gets a 4xx with the JSON error shape, never a 5xx, and writes nothing.

mod common;

use common::Server;

#[test]
fn bad_input_of_every_class_is_a_4xx_json_error_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(
        &dir.path().join("data"),
        &[
            ("KYRODB_VALUE_BYTES_MAX", "1024"),
            ("KYRODB_BODY_BYTES_MAX", "65536"),
        ],
    );
    // The server's own start-up writes (the collections catalog keyspace) come before any input.
    let seq_at_start = s.get("/ready").json()["visible_seq"].clone();
    let big = "x".repeat(2000);
    let huge = vec![b'x'; 100_000];
    let big_put = format!(r#"{{"key": 1, "value": "{big}"}}"#);
    let big_batch =
        format!(r#"{{"items": [{{"key": 1, "value": "ok"}}, {{"key": 2, "value": "{big}"}}]}}"#);
    let too_many = format!(r#"{{"keys": [{}]}}"#, vec!["1"; 10_001].join(","));
    let cases: Vec<(&str, &str, Vec<u8>, u16, &str)> = vec![
        ("POST", "/v1/put", b"{".to_vec(), 400, "invalid_json"),
        ("POST", "/v1/put", b"not json".to_vec(), 400, "invalid_json"),
        (
            "POST",
            "/v1/put",
            br#"{"key": "1", "value": "x"}"#.to_vec(),
            400,
            "invalid_request",
        ),
        (
            "POST",
            "/v1/put",
            br#"{"key": -1, "value": "x"}"#.to_vec(),
            400,
            "invalid_request",
        ),
        (
            "POST",
            "/v1/put",
            br#"{"key": 18446744073709551616, "value": "x"}"#.to_vec(),
            400,
            "invalid_request",
        ),
        (
            "POST",
            "/v1/put",
            br#"{"key": 1.5, "value": "x"}"#.to_vec(),
            400,
            "invalid_request",
        ),
        (
            "POST",
            "/v1/put",
            br#"{"key": 1, "value": 7}"#.to_vec(),
            400,
            "invalid_request",
        ),
        (
            "POST",
            "/v1/put",
            br#"{"key": 1}"#.to_vec(),
            400,
            "invalid_request",
        ),
        (
            "POST",
            "/v1/put",
            br#"{"key": 1, "value": "x", "extra": 1}"#.to_vec(),
            400,
            "invalid_request",
        ),
        ("POST", "/v1/put", b"".to_vec(), 400, "invalid_json"),
        (
            "POST",
            "/v1/put",
            big_put.into_bytes(),
            413,
            "value_too_large",
        ),
        ("PUT", "/v1/kv/1", vec![b'x'; 2000], 413, "value_too_large"),
        ("PUT", "/v1/kv/1", huge, 413, "body_too_large"),
        (
            "POST",
            "/v1/kv/batch_put",
            big_batch.into_bytes(),
            413,
            "value_too_large",
        ),
        (
            "POST",
            "/v1/kv/batch_get",
            too_many.into_bytes(),
            400,
            "too_many_keys",
        ),
        (
            "POST",
            "/v1/kv/batch_get",
            br#"{"keys": ["a"]}"#.to_vec(),
            400,
            "invalid_request",
        ),
        ("PUT", "/v1/kv/abc", b"x".to_vec(), 400, "invalid_key"),
        ("PUT", "/v1/kv/-1", b"x".to_vec(), 400, "invalid_key"),
        (
            "PUT",
            "/v1/kv/18446744073709551616",
            b"x".to_vec(),
            400,
            "invalid_key",
        ),
        ("GET", "/v1/get_fast/1.5", vec![], 400, "invalid_key"),
        ("GET", "/v1/kv/0x10", vec![], 400, "invalid_key"),
        ("DELETE", "/v1/kv/%20", vec![], 400, "invalid_key"),
        ("GET", "/v1/kv/%FF", vec![], 400, "invalid_key"),
        (
            "POST",
            "/v1/put",
            b"{\"key\": 1, \"value\": \"\xff\"}".to_vec(),
            400,
            "invalid_json",
        ),
        (
            "POST",
            "/v1/kv/batch_put",
            br#"{"items": [{"key": 1}]}"#.to_vec(),
            400,
            "invalid_request",
        ),
        (
            "POST",
            "/v1/kv/batch_get",
            br#"{"keys": 5}"#.to_vec(),
            400,
            "invalid_request",
        ),
        ("GET", "/v1/scan?limit=-1", vec![], 400, "invalid_query"),
        ("GET", "/v1/scan?start=abc", vec![], 400, "invalid_query"),
        ("GET", "/v1/scan?limit=0", vec![], 400, "invalid_query"),
        ("GET", "/v1/scan?limit=100000", vec![], 400, "invalid_query"),
        ("GET", "/v1/kv/00042", vec![], 400, "invalid_key"),
        ("GET", "/v1/scan?bogus=1", vec![], 400, "invalid_query"),
        ("GET", "/v1/nope", vec![], 404, "no_route"),
        ("GET", "/", vec![], 404, "no_route"),
        ("PATCH", "/v1/put", vec![], 405, "method_not_allowed"),
        ("GET", "/v1/put", vec![], 405, "method_not_allowed"),
    ];
    for (method, path, body, status, code) in &cases {
        let r = s.req(method, path, &[("Content-Type", "application/json")], body);
        assert_eq!(r.status, *status, "{method} {path}: {}", r.text());
        assert_eq!(r.error_code(), *code, "{method} {path}");
    }
    // Nothing was written: no key is visible and the sequence never moved.
    assert_eq!(
        s.get("/v1/scan").json()["items"].as_array().unwrap().len(),
        0
    );
    assert_eq!(s.get("/ready").json()["visible_seq"], seq_at_start);
    // And the server is still healthy.
    assert_eq!(
        s.post("/v1/put", r#"{"key": 1, "value": "fine"}"#).status,
        200
    );
}

#[test]
fn a_malformed_request_line_is_refused_without_harm() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("data"), &[]);
    let mut c = std::net::TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    c.write_all(b"GARBAGE\r\n\r\n").unwrap();
    let mut out = Vec::new();
    let _ = c.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out);
    assert!(text.is_empty() || text.starts_with("HTTP/1.1 4"), "{text}");
    assert_eq!(s.get("/health").status, 200);
}

#[test]
fn a_body_that_never_finishes_times_out_with_408_and_writes_nothing() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(
        &dir.path().join("data"),
        &[("KYRODB_REQUEST_TIMEOUT_MS", "300")],
    );
    let mut c = std::net::TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    c.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    c.write_all(b"PUT /v1/kv/1 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: 100\r\n\r\nonly ten b").unwrap();
    let mut out = Vec::new();
    let _ = c.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("\"request_timeout\""), "{text}");
    assert_eq!(s.get("/v1/kv/1").status, 404);
}
