//! Acknowledged writes survive SIGKILL (fsync always) and a graceful SIGTERM drains in-flight writes.

mod common;

use std::{
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use common::{try_request, Server};

#[test]
fn acknowledged_puts_survive_sigkill_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start(&dir.path().join("data"), &[]);
    for k in 0..100u64 {
        let r = s.post(
            "/v1/put",
            &format!(r#"{{"key": {k}, "value": "value-{k}"}}"#),
        );
        assert_eq!(r.status, 200);
    }
    assert_eq!(s.req("PUT", "/v1/kv/1000", &[], &[1, 2, 3]).status, 200);
    assert_eq!(s.req("DELETE", "/v1/kv/5", &[], b"").status, 200);
    s.kill9();
    s.restart();
    for k in 0..100u64 {
        let r = s.get(&format!("/v1/kv/{k}"));
        if k == 5 {
            assert_eq!(r.status, 404, "the delete survived too");
        } else {
            assert_eq!((r.status, r.text()), (200, format!("value-{k}")));
        }
    }
    assert_eq!(s.get("/v1/kv/1000").body, [1, 2, 3]);
}

#[test]
fn snapshot_then_sigkill_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start(&dir.path().join("data"), &[]);
    assert_eq!(
        s.post(
            "/v1/kv/batch_put",
            r#"{"items": [{"key": 1, "value": "a"}, {"key": 2, "value": "b"}]}"#
        )
        .status,
        200
    );
    assert_eq!(s.post("/v1/snapshot", "").status, 200);
    assert_eq!(s.post("/v1/put", r#"{"key": 3, "value": "c"}"#).status, 200);
    s.kill9();
    s.restart();
    let j = s.get("/v1/scan").json();
    let vals: Vec<&str> = j["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["value"].as_str().unwrap())
        .collect();
    assert_eq!(vals, ["a", "b", "c"]);
}

#[test]
fn sigterm_drains_in_flight_writes_and_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start(&dir.path().join("data"), &[]);
    let port = s.port;
    let acked = Arc::new(Mutex::new(Vec::<u64>::new()));
    let count = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..8u64)
        .map(|w| {
            let (acked, count, stop) = (acked.clone(), count.clone(), stop.clone());
            std::thread::spawn(move || {
                for i in 0.. {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let key = w * 1_000_000 + i;
                    let body = format!(r#"{{"key": {key}, "value": "v{key}"}}"#);
                    match try_request(port, "POST", "/v1/put", &[], body.as_bytes()) {
                        Ok(r) if r.status == 200 => {
                            acked.lock().unwrap().push(key);
                            count.fetch_add(1, Ordering::Relaxed);
                        }
                        // Refused during shutdown (connection refused/reset, or 503): not acknowledged.
                        _ => return,
                    }
                }
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while count.load(Ordering::Relaxed) < 200 {
        assert!(Instant::now() < deadline, "writers made no progress");
        std::thread::yield_now();
    }
    let status = s.term();
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().unwrap();
    }
    assert!(status.success(), "graceful shutdown exits 0: {status:?}");
    let acked = acked.lock().unwrap().clone();
    s.restart();
    for key in &acked {
        let r = s.get(&format!("/v1/kv/{key}"));
        assert_eq!(
            (r.status, r.text()),
            (200, format!("v{key}")),
            "acknowledged key {key} lost"
        );
    }
}

#[test]
fn sigterm_is_not_held_up_by_idle_keep_alive_connections() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start(&dir.path().join("data"), &[]);
    let mut idle = std::net::TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    idle.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 512];
    assert!(
        idle.read(&mut buf).unwrap() > 0,
        "got the first response; the connection stays open"
    );
    let started = Instant::now();
    let status = s.term();
    assert!(status.success(), "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "shutdown waited {:?} on an idle connection",
        started.elapsed()
    );
}
