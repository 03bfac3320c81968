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

use common::{command, raft_port, try_request, try_request_within, Server};
use serde_json::Value;

const SECRET: &str = "cluster-test-secret-0123";

struct Nodes {
    nodes: Vec<Server>,
    raft_ports: Vec<u16>,
    /// The admin token when the nodes have `KYRODB_API_KEYS`.
    token: Option<&'static str>,
    _dir: tempfile::TempDir,
}

impl Nodes {
    fn start(n: usize, extra: &[&str]) -> Nodes {
        Self::start_with(n, extra, None)
    }

    fn start_with(n: usize, extra: &[&str], proxy: Option<&Proxy>) -> Nodes {
        Self::start_full(n, extra, proxy, None)
    }

    /// With `proxy`, peers reach node i through the proxy's port for it (the address listed in
    /// --cluster) while the node binds its own (--raft-listen). With `admin`, the nodes have that
    /// admin token (`KYRODB_API_KEYS`) and the helpers send it.
    fn start_full(
        n: usize,
        extra: &[&str],
        proxy: Option<&Proxy>,
        admin: Option<&'static str>,
    ) -> Nodes {
        let keys = admin.map(|t| format!("admin:{t}"));
        let dir = tempfile::tempdir().unwrap();
        let raft_ports: Vec<u16> = (0..n).map(|_| raft_port()).collect();
        let listed: Vec<u16> = match proxy {
            Some(p) => (0..n)
                .map(|i| p.add_route(i as u64 + 1, raft_ports[i]))
                .collect(),
            None => raft_ports.clone(),
        };
        let members = listed
            .iter()
            .enumerate()
            .map(|(i, p)| format!("{}=127.0.0.1:{p}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let nodes = (0..n)
            .map(|i| {
                let id = (i + 1).to_string();
                let listen = format!("127.0.0.1:{}", raft_ports[i]);
                let mut args = vec!["--node-id", &id, "--cluster", &members];
                if proxy.is_some() {
                    args.extend_from_slice(&["--raft-listen", &listen]);
                }
                args.extend_from_slice(extra);
                let mut env = vec![("KYRODB_CLUSTER_SECRET", SECRET)];
                if let Some(k) = &keys {
                    env.push(("KYRODB_API_KEYS", k));
                }
                Server::start_with_args(&dir.path().join(format!("n{}", i + 1)), &env, &args)
            })
            .collect();
        let c = Nodes {
            nodes,
            raft_ports,
            token: admin,
            _dir: dir,
        };
        let init = || {
            let auth = c.token.map(|t| format!("Bearer {t}"));
            let h: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
            c.nodes[0].req("POST", "/v1/cluster/init", &h, b"")
        };
        let r = init();
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(init().status, 409);
        c.wait_for_leader(None, Duration::from_secs(20));
        c
    }

    /// A request to node `i` with `token` (and a JSON body when `body` is not empty).
    fn call_as(&self, i: usize, token: &str, m: &str, p: &str, body: &str) -> common::Resp {
        let auth = format!("Bearer {token}");
        let mut h = vec![("Authorization", auth.as_str())];
        if !body.is_empty() {
            h.push(("Content-Type", "application/json"));
        }
        self.nodes[i].req(m, p, &h, body.as_bytes())
    }

    fn status(&self, i: usize) -> Option<Value> {
        let auth = self.token.map(|t| format!("Bearer {t}"));
        let h: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
        let r = try_request_within(
            self.nodes[i].port,
            "GET",
            "/v1/cluster/status",
            &h,
            b"",
            Duration::from_secs(2),
        )
        .ok()?;
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
    // The cluster's metrics: term, role, indexes (the commit index is sampled once a second).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let m = String::from_utf8_lossy(&c.nodes[0].get("/metrics").body).into_owned();
        for family in [
            "kyrodb_cluster_term",
            "kyrodb_cluster_role_info",
            "kyrodb_cluster_applied_index",
            "kyrodb_cluster_last_log_index",
            "kyrodb_cluster_elections_total",
        ] {
            assert!(m.contains(family), "{family} missing from /metrics");
        }
        let committed = m
            .lines()
            .find_map(|l| l.strip_prefix("kyrodb_cluster_commit_index "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0);
        if committed >= 3.0 {
            break;
        }
        assert!(Instant::now() < deadline, "no commit index gauge");
        std::thread::sleep(Duration::from_millis(50));
    }
    let bad = c.nodes[1].get("/v1/kv/10?consistency=sometimes");
    assert_eq!(bad.status, 400);
    assert_eq!(c.nodes[1].get("/v1/kv/10?consistency=stale").status, 200);

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

// ---------------------------------------------------------------------------------------------
// Fault injection: a TCP proxy in front of every node's Raft port, a recorded history of client
// operations, and a linearizability check per key (Wing & Gong's search with memoisation).

/// A TCP proxy per node: peers connect to the node's listed address (the proxy), which forwards
/// to the node's own Raft port unless the link from the sender is cut. The sender is read from
/// the `x-kyrodb-from` header of the first request on each connection (the Raft client keeps a
/// connection per destination, so a connection carries one sender's requests).
#[derive(Clone, Default)]
struct Proxy {
    cut: Arc<Mutex<std::collections::HashSet<(u64, u64)>>>,
    conns: Arc<Mutex<Vec<(u64, u64, std::net::TcpStream)>>>,
}

impl Proxy {
    /// Starts forwarding a new listening port to `upstream` (node `to`'s Raft port).
    fn add_route(&self, to: u64, upstream: u16) -> u16 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let me = self.clone();
        std::thread::spawn(move || {
            for conn in l.incoming().flatten() {
                let me = me.clone();
                std::thread::spawn(move || me.forward(conn, to, upstream));
            }
        });
        port
    }

    fn forward(&self, mut client: std::net::TcpStream, to: u64, upstream: u16) {
        use std::io::{Read, Write};
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut head = Vec::new();
        let mut buf = [0u8; 4096];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 65536 {
            match client.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
        let Some(from) = text
            .lines()
            .find_map(|l| l.strip_prefix("x-kyrodb-from:"))
            .and_then(|v| v.trim().parse::<u64>().ok())
        else {
            return;
        };
        if self.cut.lock().unwrap().contains(&(from, to)) {
            return;
        }
        let Ok(mut server) = std::net::TcpStream::connect(("127.0.0.1", upstream)) else {
            return;
        };
        client.set_read_timeout(None).unwrap();
        if server.write_all(&head).is_err() {
            return;
        }
        self.conns
            .lock()
            .unwrap()
            .push((from, to, client.try_clone().unwrap()));
        let (mut c2, mut s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
        let up = std::thread::spawn(move || {
            let _ = std::io::copy(&mut c2, &mut s2);
            let _ = s2.shutdown(std::net::Shutdown::Both);
        });
        let _ = std::io::copy(&mut server, &mut client);
        let _ = client.shutdown(std::net::Shutdown::Both);
        let _ = up.join();
    }

    /// Cuts every link to and from `node` (both directions), closing open connections on them.
    fn isolate(&self, node: u64, all: &[u64]) {
        let mut cut = self.cut.lock().unwrap();
        for &o in all.iter().filter(|o| **o != node) {
            cut.insert((node, o));
            cut.insert((o, node));
        }
        drop(cut);
        self.conns.lock().unwrap().retain(|(f, t, s)| {
            let dead = *f == node || *t == node;
            if dead {
                let _ = s.shutdown(std::net::Shutdown::Both);
            }
            !dead
        });
    }

    fn heal(&self) {
        self.cut.lock().unwrap().clear();
    }
}

/// One client operation: a write of a unique value, or a read and what it returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Write(u64),
    Read(Option<u64>),
}

/// An operation with its invoke and return times (ns since the run began); `ret` None: the
/// outcome is unknown (it may take effect at any time after `call`, or never).
#[derive(Debug, Clone, Copy)]
struct Event {
    key: u64,
    op: Op,
    call: u64,
    ret: Option<u64>,
}

/// Whether one key's history of register operations is linearizable. Writes whose outcome is
/// unknown and whose value no read returned are dropped first (leaving them out never makes a
/// history less linearizable); the rest are optional and unbounded on the right.
fn linearizable(events: &[Event]) -> Result<(), String> {
    let read_values: std::collections::HashSet<u64> = events
        .iter()
        .filter_map(|e| match e.op {
            Op::Read(Some(v)) => Some(v),
            _ => None,
        })
        .collect();
    let mut ops: Vec<Event> = events
        .iter()
        .copied()
        .filter(|e| e.ret.is_some() || matches!(e.op, Op::Write(v) if read_values.contains(&v)))
        .collect();
    ops.sort_by_key(|e| e.call);
    let n = ops.len();
    let words = n.div_ceil(64).max(1);
    let is_set = |set: &[u64], i: usize| set[i / 64] & (1 << (i % 64)) != 0;
    // The operations that may come next: invoked before the earliest return among completed
    // operations not yet linearized (ops are sorted by invocation, and a return is never before
    // its invocation, so the scan stops at the first invocation past that bound).
    let window = |set: &[u64]| -> (Vec<usize>, bool) {
        let mut horizon = u64::MAX;
        let mut out = Vec::new();
        let mut any_required = false;
        let first = set
            .iter()
            .position(|w| *w != u64::MAX)
            .map_or(n, |w| w * 64);
        for (i, e) in ops.iter().enumerate().skip(first) {
            if e.call > horizon {
                break;
            }
            if is_set(set, i) {
                continue;
            }
            if let Some(r) = e.ret {
                horizon = horizon.min(r);
                any_required = true;
            }
            out.push(i);
        }
        out.retain(|i| ops[*i].call <= horizon);
        // Completed operations beyond the window still need linearizing.
        any_required |= ops
            .iter()
            .enumerate()
            .skip(first)
            .any(|(i, e)| e.ret.is_some() && !is_set(set, i));
        (out, any_required)
    };
    let mut seen: std::collections::HashSet<(Vec<u64>, Option<u64>)> = Default::default();
    let mut stack: Vec<(Vec<u64>, Option<u64>)> = vec![(vec![0; words], None)];
    let mut steps: u64 = 0;
    let mut deepest = (0u32, vec![0u64; words]);
    while let Some((mut set, state)) = stack.pop() {
        // Reads that may come next and see the current value go next: placing them now is
        // always as good as later (a read changes nothing), so they are not branched on.
        loop {
            let (w, _) = window(&set);
            let reads: Vec<usize> = w
                .into_iter()
                .filter(|i| ops[*i].op == Op::Read(state))
                .collect();
            if reads.is_empty() {
                break;
            }
            for i in reads {
                set[i / 64] |= 1 << (i % 64);
            }
        }
        let (w, any_required) = window(&set);
        if !any_required {
            return Ok(());
        }
        if !seen.insert((set.clone(), state)) {
            continue;
        }
        let depth = set.iter().map(|w| w.count_ones()).sum::<u32>();
        if depth > deepest.0 {
            deepest = (depth, set.clone());
        }
        steps += 1;
        if steps > 2_000_000 {
            return Err(format!("search budget exhausted over {n} operations"));
        }
        for i in w.into_iter().rev() {
            if let Op::Write(v) = ops[i].op {
                let mut s2 = set.clone();
                s2[i / 64] |= 1 << (i % 64);
                stack.push((s2, Some(v)));
            }
        }
    }
    // Show the operations around the furthest point the search reached.
    let stuck = (0..n).find(|i| !is_set(&deepest.1, *i)).unwrap_or(0);
    let near: Vec<String> = ops[stuck.saturating_sub(5)..n.min(stuck + 25)]
        .iter()
        .map(|e| {
            format!(
                "{:?}@{}..{:?}",
                e.op,
                e.call / 1000,
                e.ret.map(|r| r / 1000)
            )
        })
        .collect();
    Err(format!(
        "not linearizable ({n} operations; the search got through {} of them; near there, µs: {})",
        deepest.0,
        near.join(" ")
    ))
}

#[test]
fn the_checker_tells_linearizable_histories_from_broken_ones() {
    let ev = |op, call, ret| Event {
        key: 0,
        op,
        call,
        ret,
    };
    // Sequential write then read of it: fine.
    assert!(linearizable(&[
        ev(Op::Write(1), 0, Some(10)),
        ev(Op::Read(Some(1)), 20, Some(30))
    ])
    .is_ok());
    // A read after an acknowledged write that returns the older value: a lost write.
    assert!(linearizable(&[
        ev(Op::Write(1), 0, Some(10)),
        ev(Op::Write(2), 20, Some(30)),
        ev(Op::Read(Some(1)), 40, Some(50))
    ])
    .is_err());
    // Concurrent write and read: either value is fine.
    assert!(linearizable(&[
        ev(Op::Write(1), 0, Some(10)),
        ev(Op::Write(2), 20, Some(60)),
        ev(Op::Read(Some(1)), 30, Some(40))
    ])
    .is_ok());
    // A value that was never written.
    assert!(linearizable(&[ev(Op::Read(Some(9)), 0, Some(10))]).is_err());
    // An unknown-outcome write may appear late...
    assert!(linearizable(&[
        ev(Op::Write(1), 0, None),
        ev(Op::Read(None), 20, Some(30)),
        ev(Op::Read(Some(1)), 40, Some(50))
    ])
    .is_ok());
    // ...but once seen, it cannot be unseen.
    assert!(linearizable(&[
        ev(Op::Write(1), 0, None),
        ev(Op::Read(Some(1)), 20, Some(30)),
        ev(Op::Read(None), 40, Some(50))
    ])
    .is_err());
}

/// Client threads doing random reads and writes, each recorded with its invoke and return time.
struct Load {
    handles: Vec<std::thread::JoinHandle<Vec<Event>>>,
    stop: Arc<AtomicBool>,
    done: Arc<AtomicUsize>,
    keys: u64,
    t0: Instant,
}

impl Load {
    /// Waits (bounded) until `n` more operations have completed.
    fn wait_ops(&self, n: usize, within: Duration) {
        let target = self.done.load(Ordering::Relaxed) + n;
        let deadline = Instant::now() + within;
        while self.done.load(Ordering::Relaxed) < target {
            assert!(Instant::now() < deadline, "the load stalled");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Stops the clients; adds final linearizable reads of every key on every node (an
    /// acknowledged write that was lost shows there) and checks the history. Returns
    /// (operations checked, acknowledged writes, writes of unknown outcome).
    fn finish(self, c: &Nodes) -> (usize, usize, usize) {
        self.stop.store(true, Ordering::Relaxed);
        let mut events: Vec<Event> = self
            .handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        c.wait_healthy(Duration::from_secs(60));
        c.final_reads(self.keys, self.t0, &mut events);
        let acked = events
            .iter()
            .filter(|e| matches!(e.op, Op::Write(_)) && e.ret.is_some())
            .count();
        let unknown = events.iter().filter(|e| e.ret.is_none()).count();
        (check_history(events, self.keys), acked, unknown)
    }
}

/// Starts `clients` threads of random reads and writes over `keys` keys against random nodes.
fn run_clients(ports: Arc<Mutex<Vec<u16>>>, keys: u64, clients: u64) -> Load {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let t0 = Instant::now();
    let handles = (0..clients)
        .map(|c| {
            let (ports, stop, done) = (ports.clone(), stop.clone(), done.clone());
            std::thread::spawn(move || {
                let mut rng = c.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
                let mut next = || {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    rng
                };
                let mut out = Vec::new();
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let key = next() % keys;
                    let nodes = ports.lock().unwrap().clone();
                    let port = nodes[(next() % nodes.len() as u64) as usize];
                    let now = || t0.elapsed().as_nanos() as u64;
                    if next() % 2 == 0 {
                        n += 1;
                        let v = (c + 1) * 1_000_000_000 + n;
                        let call = now();
                        let r = try_request_within(
                            port,
                            "PUT",
                            &format!("/v1/kv/{key}"),
                            &[],
                            v.to_string().as_bytes(),
                            Duration::from_secs(4),
                        );
                        let ret = now();
                        let ret = match r {
                            Ok(r) if r.status == 200 => Some(ret),
                            Ok(r)
                                if r.status == 503
                                    && String::from_utf8_lossy(&r.body)
                                        .contains("cluster_unavailable") =>
                            {
                                // Definitely not applied: leave it out; a read of it fails the check.
                                continue;
                            }
                            _ => None,
                        };
                        out.push(Event {
                            key,
                            op: Op::Write(v),
                            call,
                            ret,
                        });
                        done.fetch_add(1, Ordering::Relaxed);
                    } else {
                        let call = now();
                        let r = try_request_within(
                            port,
                            "GET",
                            &format!("/v1/kv/{key}"),
                            &[],
                            b"",
                            Duration::from_secs(4),
                        );
                        let ret = now();
                        let op = match r {
                            Ok(r) if r.status == 200 => {
                                Op::Read(Some(String::from_utf8_lossy(&r.body).parse().unwrap()))
                            }
                            Ok(r) if r.status == 404 => Op::Read(None),
                            _ => continue,
                        };
                        out.push(Event {
                            key,
                            op,
                            call,
                            ret: Some(ret),
                        });
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
                out
            })
        })
        .collect();
    Load {
        handles,
        stop,
        done,
        keys,
        t0,
    }
}

/// Checks every key's history; panics naming the first violation.
fn check_history(events: Vec<Event>, keys: u64) -> usize {
    let mut checked = 0;
    for k in 0..keys {
        let ev: Vec<Event> = events.iter().copied().filter(|e| e.key == k).collect();
        checked += ev.len();
        let r = std::thread::Builder::new()
            .stack_size(64 << 20)
            .spawn(move || linearizable(&ev))
            .unwrap()
            .join()
            .unwrap();
        if let Err(e) = r {
            panic!("key {k}: {e}");
        }
    }
    checked
}

fn signal(pid: u32, sig: &str) {
    let ok = std::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{sig} {pid}");
}

impl Nodes {
    /// Polls (bounded) until a leader exists and every node has applied what it had committed
    /// when the wait began.
    fn wait_healthy(&self, within: Duration) {
        let leader = self.wait_for_leader(None, within);
        let commit = self
            .status(leader)
            .and_then(|s| s["commit_index"].as_u64())
            .unwrap_or(0);
        for i in 0..self.nodes.len() {
            self.wait_applied(i, commit, within);
        }
    }
}

#[test]
fn histories_stay_linearizable_under_kills_pauses_partitions_and_full_restarts() {
    let faults: usize = std::env::var("KYRODB_CLUSTER_FAULTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(24);
    let proxy = Proxy::default();
    let mut c = Nodes::start_with(
        3,
        &[
            "--cluster-timeout-ms",
            "2000",
            "--raft-snapshot-entries",
            "300",
        ],
        Some(&proxy),
    );
    let ids = [1u64, 2, 3];
    let keys = 6;
    let ports = Arc::new(Mutex::new(
        c.nodes.iter().map(|n| n.port).collect::<Vec<_>>(),
    ));
    let load = run_clients(ports.clone(), keys, 6);
    let mut rng = 0x2545_F491_4F6C_DD1Du64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut kinds = BTreeMap::new();
    for f in 0..faults {
        let leader = c.wait_for_leader(None, Duration::from_secs(30));
        let victim = if next() % 2 == 0 {
            leader
        } else {
            (next() % 3) as usize
        };
        let kind = match f % 5 {
            0 => "kill9",
            1 => "pause",
            2 => "partition",
            3 => "kill9",
            _ if f % 10 == 4 => "restart_all",
            _ => "partition",
        };
        *kinds.entry(kind).or_insert(0) += 1;
        let hold = Duration::from_millis(300 + next() % 1500);
        match kind {
            "kill9" => {
                c.nodes[victim].kill9();
                std::thread::sleep(hold);
                c.nodes[victim].restart();
                ports.lock().unwrap()[victim] = c.nodes[victim].port;
            }
            "pause" => {
                let pid = c.nodes[victim].pid();
                signal(pid, "STOP");
                std::thread::sleep(hold);
                signal(pid, "CONT");
            }
            "partition" => {
                proxy.isolate(victim as u64 + 1, &ids);
                std::thread::sleep(hold);
                proxy.heal();
            }
            _ => {
                for n in c.nodes.iter_mut() {
                    n.kill9();
                }
                for (i, n) in c.nodes.iter_mut().enumerate() {
                    n.restart();
                    ports.lock().unwrap()[i] = n.port;
                }
            }
        }
        c.wait_healthy(Duration::from_secs(60));
        // Some operations on the healed cluster before the next fault.
        load.wait_ops(50, Duration::from_secs(60));
    }
    let (checked, acked, unknown) = load.finish(&c);
    assert!(
        acked > faults * 5,
        "only {acked} acknowledged writes over {faults} faults"
    );
    let snapshots = c
        .nodes
        .iter()
        .map(|n| counter(n, "kyrodb_cluster_snapshot_transfers_total", "received") as u64)
        .sum::<u64>();
    eprintln!(
        "cluster faults: {faults} injected {kinds:?}; {checked} operations checked ({acked} acknowledged writes, {unknown} of unknown outcome): linearizable, no acknowledged write lost; snapshots installed by the processes alive at the end: {snapshots}"
    );
}

impl Nodes {
    /// Starts node `id` alone (to be added with `POST /v1/cluster/nodes`); returns its Raft address.
    fn start_joiner(&mut self, id: u64) -> String {
        let raft = format!("127.0.0.1:{}", raft_port());
        let members = format!("{id}={raft}");
        let id_s = id.to_string();
        let n = Server::start_with_args(
            &self._dir.path().join(format!("n{id}")),
            &[("KYRODB_CLUSTER_SECRET", SECRET)],
            &["--node-id", &id_s, "--cluster", &members],
        );
        self.nodes.push(n);
        raft
    }

    fn final_reads(&self, keys: u64, t0: Instant, events: &mut Vec<Event>) {
        for k in 0..keys {
            for n in &self.nodes {
                let call = t0.elapsed().as_nanos() as u64;
                let r = n.get(&format!("/v1/kv/{k}"));
                let ret = t0.elapsed().as_nanos() as u64;
                let op = match r.status {
                    200 => Op::Read(Some(String::from_utf8_lossy(&r.body).parse().unwrap())),
                    404 => Op::Read(None),
                    s => panic!("final read of {k}: HTTP {s}"),
                };
                events.push(Event {
                    key: k,
                    op,
                    call,
                    ret: Some(ret),
                });
            }
        }
    }
}

#[test]
fn nodes_are_added_removed_and_replaced_under_load() {
    let mut c = Nodes::start(3, &["--cluster-timeout-ms", "3000"]);
    let keys = 4;
    let ports = Arc::new(Mutex::new(
        c.nodes.iter().map(|n| n.port).collect::<Vec<_>>(),
    ));
    let load = run_clients(ports.clone(), keys, 4);
    let voters = |c: &Nodes, i: usize| -> Vec<u64> {
        let s = c.status(i).unwrap();
        s["voters"]
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.parse().unwrap())
            .collect()
    };
    // Add node 4: it catches up from the log and votes.
    let raft4 = c.start_joiner(4);
    let r = c.nodes[1].post(
        "/v1/cluster/nodes",
        &format!(r#"{{"node_id": 4, "raft_addr": "{raft4}"}}"#),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(voters(&c, 0), vec![1, 2, 3, 4]);
    ports.lock().unwrap().push(c.nodes[3].port);
    // Remove node 1 (perhaps the leader) through another node, then stop it.
    ports.lock().unwrap().remove(0);
    let r = c.nodes[2].req("DELETE", "/v1/cluster/nodes/1", &[], b"");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    drop(c.nodes.remove(0));
    c.wait_healthy(Duration::from_secs(30));
    assert_eq!(voters(&c, 0), vec![2, 3, 4]);
    // Replace a dead node: node 2 dies, node 5 takes its place.
    ports.lock().unwrap().remove(0);
    drop(c.nodes.remove(0));
    let raft5 = c.start_joiner(5);
    let r = c.nodes[0].post(
        "/v1/cluster/nodes",
        &format!(r#"{{"node_id": 5, "raft_addr": "{raft5}"}}"#),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let r = c.nodes[1].req("DELETE", "/v1/cluster/nodes/2", &[], b"");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    ports.lock().unwrap().push(c.nodes[2].port);
    c.wait_healthy(Duration::from_secs(30));
    assert_eq!(voters(&c, 0), vec![3, 4, 5]);
    // Some operations on the new membership, then check everything.
    load.wait_ops(200, Duration::from_secs(60));
    let (_, acked, _) = load.finish(&c);
    assert!(acked > 50, "only {acked} acknowledged writes");
    // Bad membership requests are refused with a reason.
    assert_eq!(
        c.nodes[0]
            .post(
                "/v1/cluster/nodes",
                r#"{"node_id": 0, "raft_addr": "127.0.0.1:1"}"#
            )
            .status,
        400
    );
    assert_eq!(
        c.nodes[0]
            .post(
                "/v1/cluster/nodes",
                r#"{"node_id": 9, "raft_addr": "nowhere"}"#
            )
            .status,
        400
    );
    assert_eq!(
        c.nodes[0]
            .req("DELETE", "/v1/cluster/nodes/x", &[], b"")
            .status,
        400
    );
    assert_eq!(
        c.nodes[0]
            .req("DELETE", "/v1/cluster/nodes/42", &[], b"")
            .status,
        404
    );
}

#[test]
fn collections_created_written_and_dropped_on_any_node_are_served_by_every_node() {
    let mut c = Nodes::start(3, &[]);
    let schema = r#"{"vectors": {"v": {"dim": 3, "metric": "cosine"}}, "text_fields": ["body"],
                     "fields": {"tag": "keyword"}}"#;
    let r = c.nodes[1].req("PUT", "/v2/collections/docs", &[], schema.as_bytes());
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    // Every node knows it at once (a linearizable read waits for the catalog).
    for n in &c.nodes {
        let r = n.get("/v2/collections/docs");
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    }
    // Documents written through each node are searchable on every node right after.
    for (i, n) in c.nodes.iter().enumerate() {
        let v = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]][i];
        let body = serde_json::json!({"documents": [
            {"id": format!("d{i}"), "vector": v, "text": format!("written through node {i}"),
             "fields": {"tag": format!("t{i}")}}]});
        let r = n.post("/v2/collections/docs/documents", &body.to_string());
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        for m in &c.nodes {
            let q = serde_json::json!({"vector": v, "limit": 1});
            let r = m.post("/v2/collections/docs/search", &q.to_string());
            assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
            let hits: Value = serde_json::from_slice(&r.body).unwrap();
            assert_eq!(hits["hits"][0]["id"], format!("d{i}"), "{hits}");
        }
    }
    // The leader dies: the new leader and the restarted node still serve every document.
    let leader = c.wait_for_leader(None, Duration::from_secs(10));
    c.nodes[leader].kill9();
    let other = (leader + 1) % 3;
    c.wait_for_leader(Some(leader), Duration::from_secs(10));
    let r = c.nodes[other].get("/v2/collections/docs/documents/d2");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    c.nodes[leader].restart();
    let r = c.nodes[leader].get("/v2/collections/docs/documents/d0");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    // Dropped through one node: gone everywhere; recreated with another schema: the new one.
    let r = c.nodes[other].req("DELETE", "/v2/collections/docs", &[], b"");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    for n in &c.nodes {
        assert_eq!(n.get("/v2/collections/docs").status, 404);
    }
    let schema2 = r#"{"vectors": {"v": {"dim": 2, "metric": "l2"}}}"#;
    let r = c.nodes[leader].req("PUT", "/v2/collections/docs", &[], schema2.as_bytes());
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    for n in &c.nodes {
        let r = n.get("/v2/collections/docs");
        assert_eq!(r.status, 200);
        let info: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(info["schema"]["vectors"]["v"]["dim"], 2, "{info}");
        assert_eq!(info["documents"], 0, "{info}");
    }
}

/// A keyspace dropped through one node is gone on every node, through restarts of them all, and one
/// created again under the name starts empty everywhere; writes racing the drop either land before
/// it (and are dropped) or are refused — none reaches the new keyspace that reuses the id.
#[test]
fn keyspaces_dropped_through_any_node_are_gone_on_every_node() {
    let mut c = Nodes::start(3, &[]);
    let json = [("content-type", "application/json")];
    let r = c.nodes[0].req("POST", "/v1/keyspaces", &json, br#"{"name": "logs"}"#);
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    for k in 0..20u64 {
        let body = format!(r#"{{"key": {k}, "value": "old {k}", "keyspace": "logs"}}"#);
        let r = c.nodes[(k % 3) as usize].req("POST", "/v1/put", &json, body.as_bytes());
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    }
    // Writes keep coming through another node while the drop goes through a third.
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (writer, dropper) = (c.nodes[2].port, &c.nodes[1]);
    std::thread::scope(|s| {
        let w = s.spawn(|| {
            let (mut ok, mut gone, mut k) = (0, 0, 100u64);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && k < 5_000 {
                let body = format!(r#"{{"key": {k}, "value": "racing", "keyspace": "logs"}}"#);
                let r = try_request(writer, "POST", "/v1/put", &json, body.as_bytes()).unwrap();
                match r.status {
                    200 => ok += 1,
                    404 => gone += 1,
                    s => panic!("{s}: {}", String::from_utf8_lossy(&r.body)),
                }
                k += 1;
            }
            (ok, gone)
        });
        let r = dropper.req("DELETE", "/v1/keyspaces/logs", &[], b"");
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        // Created again at once, under another name: it may take the dropped id.
        let r = dropper.req("POST", "/v1/keyspaces", &json, br#"{"name": "fresh"}"#);
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let (ok, gone) = w.join().unwrap();
        assert!(ok + gone > 0);
    });
    let check = |c: &Nodes| {
        for n in &c.nodes {
            assert_eq!(n.get("/v1/keyspaces/logs").status, 404);
            let r = n.get("/v1/keyspaces/fresh");
            assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
            let info: Value = serde_json::from_slice(&r.body).unwrap();
            assert_eq!(
                info["keys"], 0,
                "no racing write reached the new keyspace: {info}"
            );
            let names: Value = serde_json::from_slice(&n.get("/v1/keyspaces").body).unwrap();
            assert!(!names.to_string().contains("\"logs\""), "{names}");
        }
    };
    check(&c);
    for i in 0..3 {
        c.nodes[i].kill9();
    }
    for i in 0..3 {
        c.nodes[i].restart();
    }
    c.wait_for_leader(None, Duration::from_secs(20));
    check(&c);
    // Created again under the old name: empty on every node, and it takes writes.
    let r = c.nodes[2].req("POST", "/v1/keyspaces", &json, br#"{"name": "logs"}"#);
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let r = c.nodes[0].req(
        "POST",
        "/v1/put",
        &json,
        br#"{"key": 1, "value": "new", "keyspace": "logs"}"#,
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    for n in &c.nodes {
        let info: Value = serde_json::from_slice(&n.get("/v1/keyspaces/logs").body).unwrap();
        assert_eq!(info["keys"], 1, "{info}");
        assert_eq!(n.get("/v1/kv/1?keyspace=logs").text(), "new");
    }
}

/// The value of a counter family with `label` on a node's /metrics (0 when absent).
fn counter(n: &Server, family: &str, label: &str) -> f64 {
    let r = n.get("/metrics");
    String::from_utf8_lossy(&r.body)
        .lines()
        .filter(|l| l.starts_with(family) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn nodes_catch_up_from_snapshots_of_engine_files_once_the_log_is_purged() {
    let mut c = Nodes::start(3, &["--raft-snapshot-entries", "20"]);
    let leader = c.wait_for_leader(None, Duration::from_secs(10));
    let lagger = (leader + 1) % 3;
    let put = |n: &Server, k: u64| {
        let r = n.req(
            "PUT",
            &format!("/v1/kv/{k}"),
            &[],
            format!("v{k}").as_bytes(),
        );
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    };
    for k in 0..30 {
        put(&c.nodes[leader], k);
    }
    // A follower is down while snapshots are taken (openraft keeps the log it still needs, so
    // it catches up from the log or a snapshot, whichever the leader has).
    c.nodes[lagger].kill9();
    for k in 30..200 {
        put(&c.nodes[leader], k);
    }
    c.nodes[lagger].restart();
    let same_everywhere = |c: &Nodes, nodes: &[usize]| {
        for k in (0..200).step_by(7) {
            let a = c.nodes[leader].get(&format!("/v1/kv/{k}?consistency=stale"));
            for &i in nodes {
                let b = c.nodes[i].get(&format!("/v1/kv/{k}?consistency=stale"));
                assert_eq!(
                    (a.status, b.status),
                    (200, 200),
                    "key {k} on node index {i}"
                );
                assert_eq!(a.body, b.body);
                assert_eq!(
                    a.header("x-kyrodb-seq"),
                    b.header("x-kyrodb-seq"),
                    "key {k}"
                );
            }
        }
    };
    let commit = c.status(leader).unwrap()["commit_index"].as_u64().unwrap();
    c.wait_applied(lagger, commit, Duration::from_secs(60));
    same_everywhere(&c, &[lagger]);
    for k in 200..260 {
        put(&c.nodes[lagger], k);
    }
    let st = c.status(leader).unwrap();
    assert!(
        st["purged_index"].as_u64().unwrap_or(0) > 100 && st["snapshot_index"].as_u64().is_some(),
        "the leader kept its whole log: {st}"
    );
    // A new node needs entries the log no longer holds: it gets the snapshot's files, checks
    // them, restarts in place to install them (same port), then follows the log.
    let raft4 = c.start_joiner(4);
    let r = c.nodes[0].post(
        "/v1/cluster/nodes",
        &format!(r#"{{"node_id": 4, "raft_addr": "{raft4}"}}"#),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let commit = c.status(leader).unwrap()["commit_index"].as_u64().unwrap();
    c.wait_applied(3, commit, Duration::from_secs(60));
    assert!(
        counter(
            &c.nodes[3],
            "kyrodb_cluster_snapshot_transfers_total",
            "received"
        ) >= 1.0,
        "node 4 caught up without a snapshot"
    );
    assert!(
        counter(
            &c.nodes[leader],
            "kyrodb_cluster_snapshot_transfers_total",
            "sent"
        ) >= 1.0
    );
    same_everywhere(&c, &[3]);
    let r = c.nodes[3].get("/v1/kv/259");
    assert_eq!((r.status, r.body.as_slice()), (200, b"v259".as_slice()));
    put(&c.nodes[3], 1000);
    assert_eq!(c.nodes[leader].get("/v1/kv/1000").status, 200);
}

#[test]
fn a_leader_partitioned_from_the_majority_acknowledges_nothing_and_its_write_never_appears() {
    let proxy = Proxy::default();
    let c = Nodes::start_with(3, &["--cluster-timeout-ms", "1500"], Some(&proxy));
    let old = c.wait_for_leader(None, Duration::from_secs(10));
    assert_eq!(put(c.nodes[old].port, 1, "before").unwrap().0, 200);
    proxy.isolate(old as u64 + 1, &[1, 2, 3]);
    // The majority elects a new leader and keeps taking writes.
    let new = c.wait_for_leader(Some(old), Duration::from_secs(10));
    assert_eq!(put(c.nodes[new].port, 2, "majority").unwrap().0, 200);
    // The cut-off leader cannot commit: its write fails (503), and its reads need a quorum too.
    let (status, body) = put(c.nodes[old].port, 3, "minority").unwrap();
    assert_eq!(status, 503, "{body}");
    assert_eq!(c.nodes[old].get("/v1/kv/1").status, 503);
    proxy.heal();
    c.wait_healthy(Duration::from_secs(30));
    // The minority's write was never committed: after the heal nobody has it, the old leader
    // included (its uncommitted entry was replaced by the new leader's log).
    for n in &c.nodes {
        assert_eq!(n.get("/v1/kv/3").status, 404);
        assert_eq!(n.get("/v1/kv/2").status, 200);
    }
}

/// Sends only the head of a request (no body) and reads the answer: the server must answer from
/// the head alone.
fn head_only(port: u16, path: &str, headers: &[(&str, &str)], content_length: u64) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    // The bound: a server that waits for the body it was promised fails the test.
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut req =
        format!("POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {content_length}\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut buf = [0u8; 4096];
    let n = s
        .read(&mut buf)
        .expect("an answer before any of the body was sent");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn the_raft_port_checks_the_secret_and_the_size_before_reading_a_body() {
    let c = Nodes::start(1, &[]);
    let port = c.raft_ports[0];
    // 499 MiB promised, nothing sent, no secret: refused at once (was read in full first).
    let a = head_only(port, "/raft/append", &[], 499 << 20);
    assert!(a.starts_with("HTTP/1.1 401"), "{a}");
    let a = head_only(
        port,
        "/raft/forward",
        &[("x-kyrodb-cluster-secret", "wrong-secret-wrong-secret")],
        499 << 20,
    );
    assert!(a.starts_with("HTTP/1.1 401"), "{a}");
    // With the secret, each route has its own cap: a vote is small.
    let a = head_only(
        port,
        "/raft/vote",
        &[("x-kyrodb-cluster-secret", SECRET)],
        1 << 20,
    );
    assert!(a.starts_with("HTTP/1.1 413"), "{a}");
    let a = head_only(
        port,
        "/raft/append",
        &[("x-kyrodb-cluster-secret", SECRET)],
        600 << 20,
    );
    assert!(a.starts_with("HTTP/1.1 413"), "{a}");
    // The node still works.
    assert_eq!(put(c.nodes[0].port, 1, "x").unwrap().0, 200);
}

#[test]
fn idle_connections_to_the_raft_port_never_stop_the_node() {
    let dir = tempfile::tempdir().unwrap();
    let rp = raft_port();
    let members = format!("1=127.0.0.1:{rp}");
    let n = Server::start_limited(
        &dir.path().join("n1"),
        &[
            ("KYRODB_CLUSTER_SECRET", SECRET),
            ("KYRODB_HEADER_READ_TIMEOUT_MS", "120000"),
        ],
        &["--node-id", "1", "--cluster", &members],
        Some(512),
    );
    assert_eq!(n.post("/v1/cluster/init", "").status, 200);
    let mut c = common::KeepAlive::open(n.port).unwrap();
    // The first write waits for the node to lead.
    let deadline = Instant::now() + Duration::from_secs(20);
    while c.request("PUT", "/v1/kv/0", &[], b"x").unwrap().status != 200 {
        assert!(Instant::now() < deadline, "the node never took a write");
        std::thread::sleep(Duration::from_millis(20));
    }
    // More idle connections to the Raft port than the node has descriptors.
    let mut idle = Vec::new();
    for _ in 0..700 {
        match std::net::TcpStream::connect(("127.0.0.1", rp)) {
            Ok(s) => idle.push(s),
            Err(_) => break,
        }
    }
    let value = "v".repeat(4000);
    for k in 1..300u64 {
        let r = c
            .request("PUT", &format!("/v1/kv/{k}"), &[], value.as_bytes())
            .unwrap();
        assert_eq!(
            r.status,
            200,
            "write while the Raft port is flooded: {}",
            r.text()
        );
    }
    let r = c.request("POST", "/v1/snapshot", &[], b"").unwrap();
    assert_eq!(r.status, 200, "snapshot while flooded: {}", r.text());
    let r = c.request("GET", "/ready", &[], b"").unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    drop(idle);
    assert_eq!(put(n.port, 1000, "after").unwrap().0, 200);
}

/// Scoped keys live in the engine, so they are replicated: a key made through one node works on
/// every node (tenant isolation included, for writes forwarded to the leader) as soon as it is
/// made, and a key revoked through another is refused by every node as soon as the answer comes.
#[test]
fn scoped_keys_made_on_one_node_hold_on_every_node() {
    const ADMIN: &str = "cluster-admin-token-1";
    let c = Nodes::start_full(3, &[], None, Some(ADMIN));
    let call =
        |i: usize, token: &str, m: &str, p: &str, body: &str| c.call_as(i, token, m, p, body);
    let schema = r#"{"vectors": {"v": {"dim": 2, "metric": "cosine"}}, "fields": {"org": "keyword"},
                     "tenant_field": "org"}"#;
    let r = call(0, ADMIN, "PUT", "/v2/collections/shared", schema);
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let r = call(
        0,
        ADMIN,
        "POST",
        "/v2/collections/shared/documents",
        r#"{"documents": [{"id": "g1", "vector": [1, 0], "fields": {"org": "globex"}}]}"#,
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let r = call(
        1,
        ADMIN,
        "POST",
        "/v1/keys",
        r#"{"role": "write", "collections": ["shared"], "tenant": "acme"}"#,
    );
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let key: Value = serde_json::from_slice(&r.body).unwrap();
    let (id, token) = (key["id"].as_str().unwrap(), key["token"].as_str().unwrap());
    // The answer came once every member had applied the key: every node takes it at once.
    assert_eq!(key["pending_nodes"], serde_json::json!([]), "{key}");
    for i in 0..3 {
        let r = call(
            i,
            token,
            "GET",
            "/v2/collections/shared?consistency=stale",
            "",
        );
        assert_eq!(
            r.status,
            200,
            "node {i}: {}",
            String::from_utf8_lossy(&r.body)
        );
    }
    // A write through each node is stamped, and each node's search shows the tenant only its own.
    for i in 0..3 {
        let body = format!(r#"{{"documents": [{{"id": "a{i}", "vector": [1, 0]}}]}}"#);
        let r = call(i, token, "POST", "/v2/collections/shared/documents", &body);
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let r = call(
            i,
            token,
            "POST",
            "/v2/collections/shared/documents",
            r#"{"documents": [{"id": "g1", "vector": [0, 1]}]}"#,
        );
        assert_eq!(r.status, 403, "{}", String::from_utf8_lossy(&r.body));
    }
    for i in 0..3 {
        let r = call(
            i,
            token,
            "POST",
            "/v2/collections/shared/search",
            r#"{"vector": [1, 0], "limit": 10}"#,
        );
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let j: Value = serde_json::from_slice(&r.body).unwrap();
        let mut ids: Vec<&str> = j["hits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["id"].as_str().unwrap())
            .collect();
        ids.sort();
        assert_eq!(ids, ["a0", "a1", "a2"], "node {i}: {j}");
    }
    // Revoked through the third node: the answer waits until every member applied it, so the key
    // is refused everywhere at once — a write through any node, a read, a stale read.
    let r = call(2, ADMIN, "DELETE", &format!("/v1/keys/{id}"), "");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let j: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(j["pending_nodes"], serde_json::json!([]), "{j}");
    for i in 0..3 {
        let body = format!(r#"{{"documents": [{{"id": "late{i}", "vector": [1, 0]}}]}}"#);
        let w = call(i, token, "POST", "/v2/collections/shared/documents", &body);
        assert_eq!(
            w.status,
            401,
            "node {i}: {}",
            String::from_utf8_lossy(&w.body)
        );
        let r = call(i, token, "GET", "/v2/collections/shared", "");
        assert_eq!(
            r.status,
            401,
            "node {i}: {}",
            String::from_utf8_lossy(&r.body)
        );
        let r = call(
            i,
            token,
            "GET",
            "/v2/collections/shared?consistency=stale",
            "",
        );
        assert_eq!(
            r.status,
            401,
            "node {i}: {}",
            String::from_utf8_lossy(&r.body)
        );
    }
}

/// A key revoked while a node is cut off from the others: the answer names that node as pending,
/// and once it is reachable again its next read refuses the key — even a read whose key was looked
/// up before the node had applied the revocation (the key is checked again at the read point).
#[test]
fn a_key_revoked_while_a_node_is_cut_off_is_refused_there_at_its_next_read_point() {
    const ADMIN: &str = "cluster-admin-token-2";
    let proxy = Proxy::default();
    let c = Nodes::start_full(
        3,
        &["--cluster-timeout-ms", "5000"],
        Some(&proxy),
        Some(ADMIN),
    );
    let call =
        |i: usize, token: &str, m: &str, p: &str, body: &str| c.call_as(i, token, m, p, body);
    let leader = c.wait_for_leader(None, Duration::from_secs(20));
    let victim = (leader + 1) % 3;
    let r = call(leader, ADMIN, "PUT", "/v1/kv/1", "one");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let r = call(
        leader,
        ADMIN,
        "POST",
        "/v1/keys",
        r#"{"role": "write", "keyspaces": ["default"]}"#,
    );
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let key: Value = serde_json::from_slice(&r.body).unwrap();
    let (id, token) = (key["id"].as_str().unwrap(), key["token"].as_str().unwrap());
    assert_eq!(key["pending_nodes"], serde_json::json!([]), "{key}");
    let r = call(victim, token, "GET", "/v1/kv/1", "");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));

    proxy.isolate(victim as u64 + 1, &[1, 2, 3]);
    let r = call(leader, ADMIN, "DELETE", &format!("/v1/keys/{id}"), "");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let j: Value = serde_json::from_slice(&r.body).unwrap();
    let pending: Vec<u64> = j["pending_nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["node_id"].as_u64().unwrap())
        .collect();
    assert_eq!(pending, [victim as u64 + 1], "{j}");
    // The cut-off node still holds the key; a linearizable read there waits for a read point.
    // Healed while it waits, the read is refused: the revocation came with the read point.
    // So is a write: the key is confirmed at a read point before a follower forwards it.
    std::thread::scope(|s| {
        let read = s.spawn(|| call(victim, token, "GET", "/v1/kv/1", ""));
        let write = s.spawn(|| call(victim, token, "PUT", "/v1/kv/2", "two"));
        std::thread::sleep(Duration::from_millis(300));
        proxy.heal();
        for r in [read.join().unwrap(), write.join().unwrap()] {
            assert_eq!(r.status, 401, "{}", String::from_utf8_lossy(&r.body));
        }
    });
    let r = call(leader, ADMIN, "GET", "/v1/kv/2", "");
    assert_eq!(r.status, 404, "{}", String::from_utf8_lossy(&r.body));
}

/// A membership change that is not possible as asked — removing the last voter — is refused with
/// 409 `cluster_change_refused` and changes nothing (it is not a 503 to retry).
#[test]
fn a_membership_change_that_is_not_possible_is_refused_and_changes_nothing() {
    let c = Nodes::start(1, &[]);
    let r = c.nodes[0].req("DELETE", "/v1/cluster/nodes/1", &[], b"");
    assert_eq!(r.status, 409, "{}", String::from_utf8_lossy(&r.body));
    let j: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(j["error"]["code"], "cluster_change_refused", "{j}");
    assert!(r.header("retry-after").is_none());
    let st = c.status(0).unwrap();
    assert!(st["voters"].get("1").is_some(), "{st}");
    assert_eq!(
        c.nodes[0]
            .req("PUT", "/v1/kv/1", &[], b"still a cluster")
            .status,
        200
    );
}
