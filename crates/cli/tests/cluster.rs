//! Cluster mode end to end: three real `kyrodb serve` processes on loopback. Writes taken by any
//! node, the same sequence numbers everywhere, linearizable and stale reads, kill -9 of the leader
//! under a write load (no acknowledged write lost, a new leader within a bound), the old leader
//! catching up from the log, a leader without a quorum refusing to acknowledge, and the Raft port
//! refusing requests without the cluster secret.

mod common;

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use common::{command, free_port, try_request, Server};
use serde_json::Value;

const SECRET: &str = "cluster-test-secret-0123";

struct Nodes {
    nodes: Vec<Server>,
    raft_ports: Vec<u16>,
    _dir: tempfile::TempDir,
}

impl Nodes {
    fn start(n: usize, extra: &[&str]) -> Nodes {
        let dir = tempfile::tempdir().unwrap();
        let raft_ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let members = raft_ports
            .iter()
            .enumerate()
            .map(|(i, p)| format!("{}=127.0.0.1:{p}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let nodes = (0..n)
            .map(|i| {
                let id = (i + 1).to_string();
                let mut args = vec!["--node-id", &id, "--cluster", &members];
                args.extend_from_slice(extra);
                Server::start_with_args(
                    &dir.path().join(format!("n{}", i + 1)),
                    &[("KYRODB_CLUSTER_SECRET", SECRET)],
                    &args,
                )
            })
            .collect();
        let c = Nodes {
            nodes,
            raft_ports,
            _dir: dir,
        };
        let r = c.nodes[0].post("/v1/cluster/init", "");
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(c.nodes[0].post("/v1/cluster/init", "").status, 409);
        c.wait_for_leader(None, Duration::from_secs(20));
        c
    }

    fn status(&self, i: usize) -> Option<Value> {
        let r = try_request(self.nodes[i].port, "GET", "/v1/cluster/status", &[], b"").ok()?;
        (r.status == 200).then(|| serde_json::from_slice(&r.body).unwrap())
    }

    /// The index (0-based) of the node that says it leads, polling until one other than `not`
    /// does (bounded).
    fn wait_for_leader(&self, not: Option<usize>, within: Duration) -> usize {
        let deadline = Instant::now() + within;
        loop {
            for i in 0..self.nodes.len() {
                if Some(i) == not {
                    continue;
                }
                if let Some(s) = self.status(i) {
                    if s["role"] == "leader" {
                        return i;
                    }
                }
            }
            assert!(Instant::now() < deadline, "no leader within {within:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Polls until node `i` has applied at least `index` (bounded).
    fn wait_applied(&self, i: usize, index: u64, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            if let Some(s) = self.status(i) {
                if s["applied_index"].as_u64().unwrap_or(0) >= index {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "node {} did not apply {index} within {within:?}: {:?}",
                i + 1,
                self.status(i)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn put(port: u16, key: u64, value: &str) -> Result<(u16, Value), String> {
    let r = try_request(port, "PUT", &format!("/v1/kv/{key}"), &[], value.as_bytes())
        .map_err(|e| e.to_string())?;
    Ok((
        r.status,
        serde_json::from_slice(&r.body).unwrap_or(Value::Null),
    ))
}

#[test]
fn three_nodes_replicate_fail_over_and_lose_no_acknowledged_write() {
    let mut c = Nodes::start(3, &[]);
    // A write taken by each node is readable on every node, with the same sequence number.
    for (i, n) in c.nodes.iter().enumerate() {
        let (st, v) = put(n.port, 10 + i as u64, &format!("from-{i}")).unwrap();
        assert_eq!(st, 200, "{v}");
    }
    for key in 10..13u64 {
        let seqs: Vec<String> = c
            .nodes
            .iter()
            .map(|n| {
                let r = n.get(&format!("/v1/kv/{key}"));
                assert_eq!(r.status, 200);
                assert_eq!(r.body, format!("from-{}", key - 10).as_bytes());
                assert!(r.header("x-kyrodb-applied-index").is_some());
                r.header("x-kyrodb-seq").unwrap().to_owned()
            })
            .collect();
        assert!(seqs.windows(2).all(|w| w[0] == w[1]), "{seqs:?}");
    }
    let bad = c.nodes[1].get("/v1/kv/10?consistency=sometimes");
    assert_eq!(bad.status, 400);
    assert_eq!(c.nodes[1].get("/v1/kv/10?consistency=stale").status, 200);
    assert_eq!(c.nodes[2].get("/v2/collections").status, 501);

    // Writers on every node; the leader is killed under the load.
    let acked: Arc<Mutex<BTreeMap<u64, String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let ports: Arc<Mutex<Vec<u16>>> =
        Arc::new(Mutex::new(c.nodes.iter().map(|n| n.port).collect()));
    let count = Arc::new(AtomicUsize::new(0));
    let writers: Vec<_> = (0..4u64)
        .map(|t| {
            let (acked, stop, ports, count) =
                (acked.clone(), stop.clone(), ports.clone(), count.clone());
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) && n < 5000 {
                    let key = 1_000_000 + t * 100_000 + n;
                    let value = format!("w{t}-{n}");
                    let port = ports.lock().unwrap()[(n as usize + t as usize) % 3];
                    if let Ok((200, _)) = put(port, key, &value) {
                        acked.lock().unwrap().insert(key, value);
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                    n += 1;
                }
            })
        })
        .collect();
    let wait_count = |target: usize| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while count.load(Ordering::Relaxed) < target {
            assert!(
                Instant::now() < deadline,
                "writes stalled at {}",
                count.load(Ordering::Relaxed)
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    wait_count(200);
    let leader = c.wait_for_leader(None, Duration::from_secs(10));
    c.nodes[leader].kill9();
    let killed_at = Instant::now();
    let before = count.load(Ordering::Relaxed);
    let new_leader = c.wait_for_leader(Some(leader), Duration::from_secs(10));
    wait_count(before + 100);
    let failover = killed_at.elapsed();
    c.nodes[leader].restart();
    ports.lock().unwrap()[leader] = c.nodes[leader].port;
    wait_count(before + 300);
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().unwrap();
    }
    assert!(
        failover < Duration::from_secs(10),
        "writes resumed {failover:?} after the leader was killed"
    );
    assert_ne!(new_leader, leader);

    // Every node converges on every acknowledged write, with the same sequence numbers.
    let commit = c
        .status(c.wait_for_leader(None, Duration::from_secs(10)))
        .unwrap()["commit_index"]
        .as_u64()
        .unwrap();
    for i in 0..3 {
        c.wait_applied(i, commit, Duration::from_secs(30));
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= 500,
        "only {} writes acknowledged",
        acked.len()
    );
    for (key, value) in &acked {
        let mut seqs = Vec::new();
        for n in &c.nodes {
            let r = n.get(&format!("/v1/kv/{key}?consistency=stale"));
            assert_eq!(r.status, 200, "acknowledged key {key} missing on a node");
            assert_eq!(r.body, value.as_bytes(), "key {key}");
            seqs.push(r.header("x-kyrodb-seq").unwrap().to_owned());
        }
        assert!(seqs.windows(2).all(|w| w[0] == w[1]), "key {key}: {seqs:?}");
    }
    // The restarted node answers linearizable reads of writes it never saw as leader.
    let last = acked.keys().next_back().unwrap();
    assert_eq!(c.nodes[leader].get(&format!("/v1/kv/{last}")).status, 200);
}

#[test]
fn a_leader_without_a_quorum_acknowledges_nothing() {
    let mut c = Nodes::start(3, &["--cluster-timeout-ms", "1500"]);
    let leader = c.wait_for_leader(None, Duration::from_secs(10));
    let port = c.nodes[leader].port;
    assert_eq!(put(port, 1, "before").unwrap().0, 200);
    for i in 0..3 {
        if i != leader {
            c.nodes[i].kill9();
        }
    }
    let (status, body) = put(port, 2, "alone").unwrap();
    assert_eq!(status, 503, "{body}");
    let code = body["error"]["code"].as_str().unwrap().to_owned();
    assert!(
        code == "outcome_unknown" || code == "cluster_unavailable",
        "{body}"
    );
    // A linearizable read needs a quorum too; a stale one does not.
    assert_eq!(c.nodes[leader].get("/v1/kv/1").status, 503);
    assert_eq!(
        c.nodes[leader].get("/v1/kv/1?consistency=stale").status,
        200
    );
}

#[test]
fn the_raft_port_refuses_requests_without_the_secret() {
    let c = Nodes::start(3, &[]);
    for path in [
        "/raft/vote",
        "/raft/append",
        "/raft/forward",
        "/raft/read_index",
    ] {
        let r = try_request(c.raft_ports[0], "POST", path, &[], b"x").unwrap();
        assert_eq!(r.status, 401, "{path}");
        let r = try_request(
            c.raft_ports[0],
            "POST",
            path,
            &[("x-kyrodb-cluster-secret", "wrong-secret-wrong-secret")],
            b"x",
        )
        .unwrap();
        assert_eq!(r.status, 401, "{path}");
    }
    // With the secret, garbage is refused as garbage, not acted on.
    let r = try_request(
        c.raft_ports[0],
        "POST",
        "/raft/forward",
        &[("x-kyrodb-cluster-secret", SECRET)],
        b"x",
    )
    .unwrap();
    assert_eq!(r.status, 400);
}

#[test]
fn cluster_flags_are_checked_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str], secret: Option<&str>| {
        let mut cmd = command();
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(dir.path())
            .arg("--port")
            .arg("0")
            .args(args);
        if let Some(s) = secret {
            cmd.env("KYRODB_CLUSTER_SECRET", s);
        }
        let out = cmd.output().unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let e = run(&["--node-id", "1", "--cluster", "1=127.0.0.1:1"], None);
    assert!(e.contains("KYRODB_CLUSTER_SECRET"), "{e}");
    let e = run(
        &["--node-id", "4", "--cluster", "1=127.0.0.1:1"],
        Some(SECRET),
    );
    assert!(e.contains("does not list"), "{e}");
    let e = run(&["--cluster", "1=127.0.0.1:1"], Some(SECRET));
    assert!(e.contains("both --node-id and --cluster"), "{e}");
    let e = run(&["--node-id", "1", "--cluster", "1=nowhere"], Some(SECRET));
    assert!(e.contains("IP:PORT"), "{e}");
}
