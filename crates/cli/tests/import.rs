//! `kyrodb import` with realistic values (batches bounded by bytes under the server's limits, bad records
//! skipped by line number without losing their batch's good ones), binary values (`value_b64`, `put
//! --file`, `put -`), and batch_put's per-item errors.

mod common;

use std::{io::Write, process::Stdio};

use base64::{engine::general_purpose::STANDARD as BASE64, Engine as _};
use common::{command, run, Server};

/// Deterministic bytes covering every byte value, different for each `seed`.
fn binary(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if i < 256 {
                i as u8
            } else {
                x as u8
            }
        })
        .collect()
}

/// The number after `in ` and before ` requests` in the summary line.
fn requests(summary: &str) -> u64 {
    let (head, _) = summary.split_once(" requests").expect(summary);
    head.rsplit(' ').next().unwrap().parse().expect(summary)
}

#[test]
fn import_of_10kb_values_stays_under_the_servers_body_limit() {
    // The repro: 1,000 records of 10 KB are ~10 MB of JSON, over the default 8 MiB body limit.
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("data"), &[]);
    let path = dir.path().join("d.jsonl");
    let value = "d".repeat(10_000);
    let mut text = String::new();
    for k in 0..3000 {
        text.push_str(&format!("{{\"key\": {k}, \"value\": \"{value}\"}}\n"));
    }
    std::fs::write(&path, text).unwrap();
    let out = run(&s, &["import", path.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("imported 3000 records from 3000 lines"),
        "{err}"
    );
    assert!(err.contains("0 lines skipped, 0 failed"), "{err}");
    assert!(requests(&err) >= 4, "30 MB in batches under 8 MiB: {err}");
    for k in [0, 1234, 2999] {
        assert_eq!(s.get(&format!("/v1/kv/{k}")).text(), value, "key {k}");
    }
    // Where the import learned the limits.
    let limits = s.get("/build_info").json()["limits"].clone();
    assert_eq!(limits["body_bytes_max"], 8 << 20, "{limits}");
    assert_eq!(limits["value_bytes_max"], 1 << 20, "{limits}");
    assert_eq!(limits["batch_keys_max"], 10_000, "{limits}");
    assert!(limits["scan_limit_max"].is_u64() && limits["response_bytes_max"].is_u64());
}

#[test]
fn import_batches_follow_a_smaller_body_limit_and_the_batch_bytes_flag() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(
        &dir.path().join("data"),
        &[("KYRODB_BODY_BYTES_MAX", "1048576")],
    );
    let path = dir.path().join("d.jsonl");
    let mut text = String::new();
    for k in 0..400 {
        text.push_str(&format!(
            "{{\"key\": {k}, \"value\": \"{}\"}}\n",
            "e".repeat(10_000)
        ));
    }
    std::fs::write(&path, text).unwrap();
    // The limit learned from the server: 4 MB in requests under 1 MiB.
    let out = run(&s, &["import", path.to_str().unwrap(), "--batch", "1000"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("imported 400 records"), "{err}");
    assert!(requests(&err) >= 4, "{err}");
    // --batch-bytes lowers it further: at most 10 records of ~10 KB per request.
    let out = run(
        &s,
        &["import", path.to_str().unwrap(), "--batch-bytes", "110000"],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("imported 400 records"), "{err}");
    assert!(requests(&err) >= 40, "{err}");
    assert_eq!(s.get("/v1/kv/399").body.len(), 10_000);
}

#[test]
fn bad_records_are_skipped_by_line_number_and_their_batch_still_lands() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(
        &dir.path().join("data"),
        &[("KYRODB_VALUE_BYTES_MAX", "4096")],
    );
    let path = dir.path().join("mixed.jsonl");
    let mut text = String::new();
    let mut good = Vec::new();
    for line in 1..=50u64 {
        match line {
            10 => text.push_str(&format!(
                "{{\"key\": {line}, \"value\": \"{}\"}}\n",
                "o".repeat(5000)
            )),
            20 => text.push_str("{\"key\": -20, \"value\": \"bad key\"}\n"),
            _ => {
                text.push_str(&format!("{{\"key\": {line}, \"value\": \"v{line}\"}}\n"));
                good.push(line);
            }
        }
    }
    std::fs::write(&path, text).unwrap();
    // All 50 lines fit one batch: the old import lost all of them to the oversize value's 413.
    let out = run(&s, &["import", path.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "skipped lines make the exit non-zero"
    );
    assert!(err.contains("line 10: value of 5000 bytes"), "{err}");
    assert!(err.contains("line 20: key -20"), "{err}");
    assert!(
        err.contains("imported 48 records from 50 lines")
            && err.contains("2 lines skipped, 0 failed"),
        "{err}"
    );
    let keys: Vec<String> = good.iter().map(u64::to_string).collect();
    let r = s.post(
        "/v1/kv/batch_get",
        &format!("{{\"keys\": [{}]}}", keys.join(",")),
    );
    assert_eq!(r.json()["found"], 48, "{}", r.text());
    assert_eq!(s.get("/v1/kv/10").status, 404);
}

#[test]
fn value_b64_round_trips_arbitrary_bytes_via_import_and_batch_put() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(
        &dir.path().join("data"),
        &[("KYRODB_VALUE_BYTES_MAX", "4096")],
    );
    // Import: every record binary, of several sizes.
    let path = dir.path().join("bin.jsonl");
    let mut text = String::new();
    for k in 0..20u64 {
        let b64 = BASE64.encode(binary(k, 256 + 100 * k as usize));
        text.push_str(&format!("{{\"key\": {k}, \"value_b64\": \"{b64}\"}}\n"));
    }
    std::fs::write(&path, text).unwrap();
    let out = run(&s, &["import", path.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("imported 20 records"), "{err}");
    for k in 0..20u64 {
        assert_eq!(
            s.get(&format!("/v1/kv/{k}")).body,
            binary(k, 256 + 100 * k as usize)
        );
    }

    // batch_put directly, mixing text and base64 items.
    let body = serde_json::json!({"items": [
        {"key": 100, "value_b64": BASE64.encode(binary(100, 1000))},
        {"key": 101, "value": "text"},
        {"key": 102, "value_b64": ""},
    ]});
    let r = s.post("/v1/kv/batch_put", &body.to_string());
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(s.get("/v1/kv/100").body, binary(100, 1000));
    assert_eq!(s.get("/v1/kv/101").text(), "text");
    assert_eq!(s.get("/v1/kv/102").status, 200);
    assert!(s.get("/v1/kv/102").body.is_empty());

    // And /v1/put.
    let body = serde_json::json!({"key": 103, "value_b64": BASE64.encode(binary(103, 300))});
    assert_eq!(s.post("/v1/put", &body.to_string()).status, 200);
    assert_eq!(s.get("/v1/kv/103").body, binary(103, 300));

    // A bad item refuses the whole batch, naming its index.
    let ok = serde_json::json!({"key": 200, "value": "fine"});
    let cases = [
        (
            serde_json::json!({"key": 201, "value_b64": "not base64!"}),
            400,
            "invalid_base64",
        ),
        (
            serde_json::json!({"key": 201, "value": "x", "value_b64": "eA=="}),
            400,
            "invalid_request",
        ),
        (serde_json::json!({"key": 201}), 400, "invalid_request"),
        (
            serde_json::json!({"key": 201, "value_b64": BASE64.encode(vec![7u8; 5000])}),
            413,
            "value_too_large",
        ),
        (
            serde_json::json!({"key": 201, "value": "o".repeat(5000)}),
            413,
            "value_too_large",
        ),
    ];
    for (bad, status, code) in cases {
        let body = serde_json::json!({"items": [ok, ok, bad, ok]});
        let r = s.post("/v1/kv/batch_put", &body.to_string());
        assert_eq!((r.status, r.error_code().as_str()), (status, code), "{bad}");
        let msg = r.json()["error"]["message"].as_str().unwrap().to_owned();
        assert!(msg.starts_with("items[2]: "), "{msg}");
    }
    assert_eq!(
        s.get("/v1/kv/200").status,
        404,
        "batches are all or nothing"
    );
    assert_eq!(s.get("/v1/kv/201").status, 404);
}

#[test]
fn put_from_a_file_and_from_stdin_is_binary_safe() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("data"), &[]);
    let bytes = binary(1, 70_000);
    let file = dir.path().join("value.bin");
    std::fs::write(&file, &bytes).unwrap();
    let out = run(&s, &["put", "1", "--file", file.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(run(&s, &["get", "1"]).stdout, bytes);

    let bytes = binary(2, 5000);
    let mut child = command()
        .args(["put", "2", "-", "--url", &s.url()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&bytes).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(run(&s, &["get", "2"]).stdout, bytes);

    // Text as before; a value and --file together are refused.
    assert!(run(&s, &["put", "3", "hello"]).status.success());
    assert_eq!(run(&s, &["get", "3"]).stdout, b"hello");
    assert!(
        !run(&s, &["put", "3", "x", "--file", file.to_str().unwrap()])
            .status
            .success()
    );
}
