//! What a Redis user expects of the key-value API, end to end: keyspaces over HTTP with exact counts,
//! compare-and-set, per-key TTL, batch delete and delete-range — each durable across kill -9.

mod common;

use std::time::{Duration, Instant};

use common::Server;

fn start() -> (tempfile::TempDir, Server) {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("data"), &[]);
    (dir, s)
}

fn put(s: &Server, path: &str, body: &[u8]) -> common::Resp {
    s.req("PUT", path, &[], body)
}

fn keys_of(s: &Server, ks: &str) -> u64 {
    let r = s.get(&format!("/v1/keyspaces/{ks}"));
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["keys"].as_u64().unwrap()
}

#[test]
fn keyspaces_are_created_listed_counted_and_durable() {
    let (_d, mut s) = start();
    let listed = s.get("/v1/keyspaces").json();
    assert_eq!(listed["keyspaces"][0]["name"], "default");
    assert_eq!(s.post("/v1/keyspaces", r#"{"name":"logs"}"#).status, 201);
    assert_eq!(s.post("/v1/keyspaces", r#"{"name":"logs"}"#).status, 200);
    let bad = s.post("/v1/keyspaces", r#"{"name":"no spaces"}"#);
    assert_eq!(
        (bad.status, bad.error_code().as_str()),
        (400, "invalid_keyspace_name")
    );
    let missing = s.get("/v1/keyspaces/nope");
    assert_eq!(
        (missing.status, missing.error_code().as_str()),
        (404, "no_such_keyspace")
    );
    assert_eq!(put(&s, "/v1/kv/1?keyspace=nope", b"x").status, 404);

    assert_eq!(put(&s, "/v1/kv/1?keyspace=logs", b"in logs").status, 200);
    assert_eq!(put(&s, "/v1/kv/2?keyspace=logs", b"in logs").status, 200);
    assert_eq!(
        put(&s, "/v1/kv/2?keyspace=logs", b"overwritten").status,
        200
    );
    let r = s.post(
        "/v1/kv/batch_put",
        r#"{"items":[{"key":3,"value":"a","keyspace":"logs"},{"key":3,"value":"b"}]}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(s.get("/v1/kv/1").status, 404, "keyspaces are separate");
    assert_eq!(s.get("/v1/kv/1?keyspace=logs").text(), "in logs");
    assert_eq!(s.get("/v1/kv/3").text(), "b");
    assert_eq!(keys_of(&s, "logs"), 3);
    assert_eq!(keys_of(&s, "default"), 1);
    let scan = s.get("/v1/scan?keyspace=logs").json();
    assert_eq!(scan["items"].as_array().unwrap().len(), 3);
    let got = s
        .post("/v1/kv/batch_get", r#"{"keys":[1,2,9],"keyspace":"logs"}"#)
        .json();
    assert_eq!(got["found"], 2);

    s.kill9();
    s.restart();
    assert_eq!(keys_of(&s, "logs"), 3);
    assert_eq!(s.get("/v1/kv/2?keyspace=logs").text(), "overwritten");
}

#[test]
fn compare_and_set_by_absence_and_by_sequence() {
    let (_d, s) = start();
    let first = put(&s, "/v1/kv/7?if_absent=true", b"one");
    assert_eq!(first.status, 200, "{}", first.text());
    let seq = first.json()["offset"].as_u64().unwrap();
    let again = put(&s, "/v1/kv/7?if_absent=true", b"two");
    assert_eq!(
        (again.status, again.error_code().as_str()),
        (409, "condition_failed")
    );
    let g = s.get("/v1/kv/7");
    assert_eq!(g.text(), "one", "a failed condition writes nothing");
    assert_eq!(g.header("x-kyrodb-seq"), Some(seq.to_string().as_str()));

    assert_eq!(
        put(&s, &format!("/v1/kv/7?if_seq={}", seq + 1000), b"x").status,
        409
    );
    let cas = put(&s, &format!("/v1/kv/7?if_seq={seq}"), b"three");
    assert_eq!(cas.status, 200);
    let seq2 = cas.json()["offset"].as_u64().unwrap();
    // The old sequence number no longer matches: a lost update is refused.
    assert_eq!(
        put(&s, &format!("/v1/kv/7?if_seq={seq}"), b"lost").status,
        409
    );
    assert_eq!(
        s.req("DELETE", &format!("/v1/kv/7?if_seq={seq}"), &[], b"")
            .status,
        409
    );
    assert_eq!(
        s.req("DELETE", &format!("/v1/kv/7?if_seq={seq2}"), &[], b"")
            .status,
        200
    );
    assert_eq!(s.get("/v1/kv/7").status, 404);

    // JSON forms, and a batch whose condition fails writes none of its items.
    assert_eq!(
        s.post("/v1/put", r#"{"key":8,"value":"a","if_absent":true}"#)
            .status,
        200
    );
    let b = s.post(
        "/v1/kv/batch_put",
        r#"{"items":[{"key":9,"value":"x"},{"key":8,"value":"b","if_absent":true}]}"#,
    );
    assert_eq!(b.status, 409, "{}", b.text());
    assert_eq!(
        s.get("/v1/kv/9").status,
        404,
        "the batch was all or nothing"
    );
    // Both conditions must hold, which no key can: refused, nothing written.
    let both = put(&s, "/v1/kv/8?if_absent=true&if_seq=1", b"x");
    assert_eq!(
        (both.status, both.error_code().as_str()),
        (409, "condition_failed")
    );
    assert_eq!(s.get("/v1/kv/8").text(), "a");
}

#[test]
fn concurrent_if_absent_writers_have_exactly_one_winner() {
    let (_d, s) = start();
    let port = s.port;
    let winners: usize = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..8)
            .map(|i| {
                sc.spawn(move || {
                    let r = common::try_request(
                        port,
                        "PUT",
                        "/v1/kv/42?if_absent=true",
                        &[],
                        format!("writer {i}").as_bytes(),
                    )
                    .unwrap();
                    assert!(r.status == 200 || r.status == 409, "{}", r.status);
                    usize::from(r.status == 200)
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).sum()
    });
    assert_eq!(winners, 1);
}

#[test]
fn ttl_expires_keys_and_survives_restart() {
    let (_d, mut s) = start();
    assert_eq!(put(&s, "/v1/kv/1?ttl_ms=150", b"short").status, 200);
    assert_eq!(put(&s, "/v1/kv/2?ttl_ms=3600000", b"long").status, 200);
    assert_eq!(
        s.post(
            "/v1/put",
            r#"{"key":3,"value":"json ttl","ttl_ms":3600000}"#
        )
        .status,
        200
    );
    assert_eq!(put(&s, "/v1/kv/4", b"forever").status, 200);
    let long = s.get("/v1/kv/2");
    let expires: u64 = long
        .header("x-kyrodb-expires-at-ms")
        .unwrap()
        .parse()
        .unwrap();
    assert!(s.get("/v1/kv/4").header("x-kyrodb-expires-at-ms").is_none());
    for bad in ["/v1/kv/5?ttl_ms=0", "/v1/kv/5?ttl_ms=99999999999999999"] {
        let r = put(&s, bad, b"x");
        assert_eq!(r.status, 400, "{bad}");
    }
    // Expiry is wall-clock time: poll (bounded) until the short one is gone.
    let deadline = Instant::now() + Duration::from_secs(20);
    while s.get("/v1/kv/1").status != 404 {
        assert!(Instant::now() < deadline, "key 1 never expired");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(keys_of(&s, "default"), 3, "expired keys are not counted");
    let scan = s.get("/v1/scan").json();
    let keys: Vec<u64> = scan["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["key"].as_u64().unwrap())
        .collect();
    assert_eq!(keys, vec![2, 3, 4]);

    assert_eq!(s.post("/v1/snapshot", "").status, 200);
    s.kill9();
    s.restart();
    assert_eq!(
        s.get("/v1/kv/1").status,
        404,
        "expired stays expired after compaction and restart"
    );
    let after = s.get("/v1/kv/2");
    assert_eq!(after.text(), "long");
    assert_eq!(
        after.header("x-kyrodb-expires-at-ms"),
        Some(expires.to_string().as_str())
    );
    assert_eq!(keys_of(&s, "default"), 3);
}

#[test]
fn batch_delete_and_delete_range() {
    let (_d, mut s) = start();
    let items: Vec<String> = (0..100)
        .map(|k| format!(r#"{{"key":{k},"value":"v{k}"}}"#))
        .collect();
    assert_eq!(
        s.post(
            "/v1/kv/batch_put",
            &format!(r#"{{"items":[{}]}}"#, items.join(","))
        )
        .status,
        200
    );
    assert_eq!(
        s.post("/v1/kv/batch_delete", r#"{"keys":[1,2,3,1000]}"#)
            .status,
        200
    );
    let r = s.post("/v1/kv/delete_range", r#"{"start":10,"end":20}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        s.post("/v1/kv/delete_range", r#"{"start":50,"end":40}"#)
            .status,
        200
    );
    for (k, present) in [
        (0, true),
        (1, false),
        (3, false),
        (4, true),
        (10, false),
        (19, false),
        (20, true),
    ] {
        assert_eq!(
            s.get(&format!("/v1/kv/{k}")).status == 200,
            present,
            "key {k}"
        );
    }
    assert_eq!(keys_of(&s, "default"), 87);
    s.kill9();
    s.restart();
    assert_eq!(keys_of(&s, "default"), 87);
    assert_eq!(s.get("/v1/kv/15").status, 404);
    assert_eq!(s.post("/v1/kv/delete_range", r#"{"start":90}"#).status, 200);
    assert_eq!(keys_of(&s, "default"), 77);
}

/// The `keyspace` label values of a /metrics family.
fn metric_keyspaces(s: &Server, family: &str) -> Vec<String> {
    let text = s.get("/metrics").text();
    let prefix = format!("{family}{{keyspace=\"");
    text.lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .map(|rest| rest[..rest.find('"').unwrap()].to_owned())
        .collect()
}

#[test]
fn dropping_a_keyspace_frees_it_and_a_new_one_under_its_name_starts_empty() {
    let (_d, mut s) = start();
    let del = |s: &Server, name: &str| s.req("DELETE", &format!("/v1/keyspaces/{name}"), &[], b"");
    assert_eq!(s.post("/v1/keyspaces", r#"{"name":"logs"}"#).status, 201);
    for k in 0..50 {
        assert_eq!(
            put(&s, &format!("/v1/kv/{k}?keyspace=logs"), b"old").status,
            200
        );
    }
    assert_eq!(s.post("/v1/snapshot", "").status, 200);
    assert_eq!(
        put(&s, "/v1/kv/100?keyspace=logs", b"old, in the log").status,
        200
    );
    assert!(metric_keyspaces(&s, "kyrodb_storage_keys").contains(&"logs".to_owned()));

    let r = del(&s, "logs");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), serde_json::json!({"dropped": "logs"}));
    let gone = s.get("/v1/keyspaces/logs");
    assert_eq!(
        (gone.status, gone.error_code().as_str()),
        (404, "no_such_keyspace")
    );
    assert_eq!(s.get("/v1/kv/1?keyspace=logs").status, 404);
    assert_eq!(put(&s, "/v1/kv/1?keyspace=logs", b"x").status, 404);
    let listed = s.get("/v1/keyspaces").json();
    assert_eq!(listed["keyspaces"].as_array().unwrap().len(), 1, "{listed}");
    let again = del(&s, "logs");
    assert_eq!(
        (again.status, again.error_code().as_str()),
        (404, "no_such_keyspace")
    );
    // Its series leave /metrics (every per-keyspace family).
    for family in [
        "kyrodb_storage_keys",
        "kyrodb_storage_snapshot_keys",
        "kyrodb_index_model_bytes",
    ] {
        let mut names = metric_keyspaces(&s, family);
        names.sort();
        assert_eq!(names, ["_collections", "default"], "{family}");
    }

    // Refused: default, reserved names (collections' catalog, the cluster's state), bad names.
    for (name, code) in [
        ("default", "reserved_keyspace"),
        ("_collections", "reserved_keyspace"),
        ("_raft", "reserved_keyspace"),
        ("no%20spaces", "invalid_keyspace_name"),
    ] {
        let r = del(&s, name);
        assert_eq!((r.status, r.error_code().as_str()), (400, code), "{name}");
        assert!(r.json()["error"]["message"].as_str().unwrap().len() > 10);
    }
    assert_eq!(keys_of(&s, "default"), 0);
    assert_eq!(s.get("/v1/keyspaces/default").status, 200);

    // Created again under the name: empty, and it stays so after kill -9 and a restart.
    assert_eq!(s.post("/v1/keyspaces", r#"{"name":"logs"}"#).status, 201);
    assert_eq!(keys_of(&s, "logs"), 0);
    assert_eq!(s.get("/v1/kv/1?keyspace=logs").status, 404);
    assert_eq!(put(&s, "/v1/kv/7?keyspace=logs", b"new").status, 200);
    // Another round whose drop and creation only the log holds at the kill.
    assert_eq!(s.post("/v1/keyspaces", r#"{"name":"tmp"}"#).status, 201);
    assert_eq!(put(&s, "/v1/kv/3?keyspace=tmp", b"old tmp").status, 200);
    assert_eq!(del(&s, "tmp").status, 200);
    assert_eq!(s.post("/v1/keyspaces", r#"{"name":"tmp"}"#).status, 201);
    s.kill9();
    s.restart();
    assert_eq!(keys_of(&s, "logs"), 1);
    assert_eq!(s.get("/v1/kv/7?keyspace=logs").text(), "new");
    assert_eq!(s.get("/v1/kv/1?keyspace=logs").status, 404);
    assert_eq!(s.get("/v1/kv/100?keyspace=logs").status, 404);
    assert_eq!(keys_of(&s, "tmp"), 0);
    assert_eq!(s.get("/v1/kv/3?keyspace=tmp").status, 404);

    // Create/drop cycles, and dropped collections' keyspaces: /metrics keeps only live keyspaces.
    for i in 0..20 {
        let name = format!("cycle{i}");
        let r = s.post("/v1/keyspaces", &format!(r#"{{"name":"{name}"}}"#));
        assert_eq!(r.status, 201, "{}", r.text());
        assert_eq!(
            put(&s, &format!("/v1/kv/1?keyspace={name}"), b"v").status,
            200
        );
        assert_eq!(del(&s, &name).status, 200);
        let r = s.req(
            "PUT",
            &format!("/v2/collections/c{i}"),
            &[],
            br#"{"vectors": {"v": {"dim": 2, "metric": "cosine"}}}"#,
        );
        assert_eq!(r.status, 201, "{}", r.text());
        assert_eq!(
            s.req("DELETE", &format!("/v2/collections/c{i}"), &[], b"")
                .status,
            200
        );
    }
    let mut names = metric_keyspaces(&s, "kyrodb_storage_keys");
    names.sort();
    assert_eq!(
        names,
        ["_collections", "default", "logs", "tmp"],
        "dropped keyspaces in /metrics"
    );
}
