//! TLS end to end with certificates made here (rcgen): https through the CLI with a CA file,
//! HTTP/2 by ALPN (curl), plain HTTP to the TLS port refused cleanly, an expired certificate and
//! one from another CA refused by the client, a SIGHUP reload picked up by new connections while an
//! open connection keeps working, and mutual TLS on the Raft port.

mod common;

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use common::{command, Server};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// When a certificate stops being valid.
#[derive(Clone, Copy)]
enum Until {
    /// In 2021.
    Expired,
    /// In 2120.
    Long,
    /// This long from now.
    Within(Duration),
}

/// A CA that signs certificates.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        Ca {
            issuer: CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap(),
        }
    }

    /// Writes `<stem>.pem` / `<stem>-key.pem` for 127.0.0.1 and localhost, valid from 2020 to
    /// `until`. Returns (cert, key).
    fn issue(&self, dir: &Path, stem: &str, until: Until) -> (PathBuf, PathBuf) {
        let mut p =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        p.distinguished_name.push(DnType::CommonName, stem);
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        p.not_before = rcgen::date_time_ymd(2020, 1, 1);
        p.not_after = match until {
            Until::Expired => rcgen::date_time_ymd(2021, 1, 1),
            Until::Long => rcgen::date_time_ymd(2120, 1, 1),
            Until::Within(d) => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap();
                rcgen::date_time_ymd(1970, 1, 1) + (now + d)
            }
        };
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &self.issuer).unwrap();
        let (c, k) = (
            dir.join(format!("{stem}.pem")),
            dir.join(format!("{stem}-key.pem")),
        );
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    }

    fn write(&self, dir: &Path, stem: &str) -> PathBuf {
        let p = dir.join(format!("{stem}.pem"));
        std::fs::write(&p, self.issuer.pem()).unwrap();
        p
    }
}

fn https(s: &Server) -> String {
    format!("https://127.0.0.1:{}", s.port)
}

/// `kyrodb ARGS --url URL --ca-file CA`: (success, stdout, stderr).
fn cli(url: &str, ca: &Path, args: &[&str]) -> (bool, String, String) {
    let out = command()
        .args(args)
        .arg("--url")
        .arg(url)
        .arg("--ca-file")
        .arg(ca)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn start_tls(dir: &Path, cert: &Path, key: &Path) -> Server {
    Server::start_with_args(
        &dir.join("data"),
        &[],
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    )
}

#[test]
fn https_with_a_ca_file_http2_by_alpn_and_plain_http_refused() {
    let d = tempfile::tempdir().unwrap();
    let ca = Ca::new("kyrodb test CA");
    let ca_pem = ca.write(d.path(), "ca");
    let (cert, key) = ca.issue(d.path(), "server", Until::Long);
    let s = start_tls(d.path(), &cert, &key);
    let url = https(&s);
    let (ok, _, err) = cli(&url, &ca_pem, &["put", "1", "over tls"]);
    assert!(ok, "{err}");
    let (ok, out, err) = cli(&url, &ca_pem, &["get", "1"]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "over tls");
    // HTTP/2 when the client offers it (ALPN), HTTP/1.1 otherwise.
    for (flag, want) in [("--http2", "2"), ("--http1.1", "1.1")] {
        let out = Command::new("curl")
            .args(["-sS", flag, "--cacert", ca_pem.to_str().unwrap()])
            .args(["-o", "/dev/null", "-w", "%{http_version} %{http_code}"])
            .arg(format!("{url}/v1/get_fast/1"))
            .output()
            .unwrap();
        let got = String::from_utf8_lossy(&out.stdout).into_owned();
        assert_eq!(
            got,
            format!("{want} 200"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Plain HTTP to the TLS port: a clean JSON 400 saying to use https, then the close.
    let mut c = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    c.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    c.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("\"code\":\"tls_required\""), "{answer}");
    // An http:// URL to the TLS port (with a CA file exported for other servers): the server's
    // answer says to use https.
    let (ok, _, err) = cli(
        &format!("http://127.0.0.1:{}", s.port),
        &ca_pem,
        &["get", "1"],
    );
    assert!(!ok && err.contains("tls_required"), "{err}");
}

#[test]
fn expired_and_foreign_certificates_are_refused_by_the_client() {
    let d = tempfile::tempdir().unwrap();
    let ca = Ca::new("kyrodb test CA");
    let ca_pem = ca.write(d.path(), "ca");
    let other_pem = Ca::new("some other CA").write(d.path(), "other");
    let (cert, key) = ca.issue(d.path(), "server", Until::Long);
    let s = start_tls(d.path(), &cert, &key);
    // A CA that did not sign the server's certificate.
    let (ok, _, err) = cli(&https(&s), &other_pem, &["get", "1"]);
    assert!(!ok, "a certificate from another CA was accepted");
    assert!(err.contains("certificate"), "{err}");
    drop(s);
    // An expired certificate.
    let d2 = tempfile::tempdir().unwrap();
    let (cert, key) = ca.issue(d2.path(), "expired", Until::Expired);
    let s = start_tls(d2.path(), &cert, &key);
    let (ok, _, err) = cli(&https(&s), &ca_pem, &["get", "1"]);
    assert!(!ok, "an expired certificate was accepted");
    assert!(err.to_lowercase().contains("expired"), "{err}");
    // A server whose key does not match its certificate does not start.
    let (_, other_key) = ca.issue(d2.path(), "x", Until::Long);
    let out = command()
        .args(["serve", "--port", "0", "--data-dir"])
        .arg(d2.path().join("data2"))
        .arg("--tls-cert")
        .arg(&cert)
        .arg("--tls-key")
        .arg(&other_key)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("TLS"), "{err}");
}

/// A TLS connection held open by Python's ssl module: one GET /health per line read on stdin.
const HOLDER: &str = r#"
import socket, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[2])
s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", int(sys.argv[1]))), server_hostname="127.0.0.1")
for _ in sys.stdin:
    s.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
    got = b""
    while b"\r\n\r\n" not in got or not got.rstrip().endswith(b"}"):
        got += s.recv(4096)
    print(got.split(b"\r\n")[0].decode(), flush=True)
"#;

#[test]
fn sighup_reloads_the_certificate_without_dropping_connections() {
    let d = tempfile::tempdir().unwrap();
    let (ca1, ca2) = (Ca::new("first CA"), Ca::new("second CA"));
    let (ca1_pem, ca2_pem) = (ca1.write(d.path(), "ca1"), ca2.write(d.path(), "ca2"));
    let (cert, key) = ca1.issue(d.path(), "server", Until::Long);
    let s = start_tls(d.path(), &cert, &key);
    let mut holder = Command::new("python3")
        .args(["-c", HOLDER, &s.port.to_string(), ca1_pem.to_str().unwrap()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut to = holder.stdin.take().unwrap();
    let mut from = BufReader::new(holder.stdout.take().unwrap());
    let mut line = String::new();
    let mut ask = |to: &mut std::process::ChildStdin| {
        writeln!(to, "go").unwrap();
        line.clear();
        from.read_line(&mut line).unwrap();
        line.trim().to_owned()
    };
    assert_eq!(ask(&mut to), "HTTP/1.1 200 OK");
    assert!(cli(&https(&s), &ca1_pem, &["get", "1"]).2.contains("404"));
    // The certificate files now hold one from the second CA; SIGHUP.
    let (new_cert, new_key) = ca2.issue(d.path(), "rotated", Until::Long);
    std::fs::copy(&new_cert, &cert).unwrap();
    std::fs::copy(&new_key, &key).unwrap();
    let ok = Command::new("kill")
        .args(["-HUP", &s.pid().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    // New connections get the new certificate (bounded polling: the reload is asynchronous).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (_, _, err) = cli(&https(&s), &ca2_pem, &["get", "1"]);
        if err.contains("404") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never reloaded: {err}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (ok, _, err) = cli(&https(&s), &ca1_pem, &["get", "1"]);
    assert!(!ok && err.contains("certificate"), "{err}");
    // The connection opened before the reload still works.
    assert_eq!(ask(&mut to), "HTTP/1.1 200 OK");
    drop(to);
    let _ = holder.wait();
}

const CLUSTER_SECRET: &str = "cluster-test-secret-0123";

/// Three nodes whose Raft ports speak mutual TLS with certificates from `ca` valid `until`
/// (`<dir>/node<i>.pem`), the cluster initialised. Returns the nodes and their Raft ports.
fn start_tls_cluster(dir: &Path, ca: &Ca, ca_pem: &Path, until: Until) -> (Vec<Server>, Vec<u16>) {
    let mut ports: Vec<u16> = Vec::new();
    while ports.len() < 3 {
        let p = common::raft_port();
        if !ports.contains(&p) {
            ports.push(p);
        }
    }
    let members = ports
        .iter()
        .enumerate()
        .map(|(i, p)| format!("{}=127.0.0.1:{p}", i + 1))
        .collect::<Vec<_>>()
        .join(",");
    let nodes: Vec<Server> = (1..=3)
        .map(|i| {
            let (cert, key) = ca.issue(dir, &format!("node{i}"), until);
            let id = i.to_string();
            Server::start_with_args(
                &dir.join(format!("n{i}")),
                &[("KYRODB_CLUSTER_SECRET", CLUSTER_SECRET)],
                &[
                    "--node-id",
                    &id,
                    "--cluster",
                    &members,
                    "--raft-tls-cert",
                    cert.to_str().unwrap(),
                    "--raft-tls-key",
                    key.to_str().unwrap(),
                    "--raft-tls-ca",
                    ca_pem.to_str().unwrap(),
                ],
            )
        })
        .collect();
    assert_eq!(nodes[0].post("/v1/cluster/init", "").status, 200);
    (nodes, ports)
}

#[test]
fn the_raft_port_speaks_mutual_tls_between_nodes() {
    let d = tempfile::tempdir().unwrap();
    let ca = Ca::new("cluster CA");
    let ca_pem = ca.write(d.path(), "ca");
    let (nodes, ports) = start_tls_cluster(d.path(), &ca, &ca_pem, Until::Long);
    // A write through node 3 is forwarded to the leader and replicated over mutual TLS.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let r = common::try_request(nodes[2].port, "PUT", "/v1/kv/7", &[], b"replicated");
        if r.as_ref().is_ok_and(|r| r.status == 200) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no write over mTLS: {r:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    for n in &nodes {
        assert_eq!(n.get("/v1/kv/7").text(), "replicated");
    }
    // Without a client certificate the Raft port refuses the handshake, before any HTTP.
    let out = Command::new("curl")
        .args(["-sS", "--cacert", ca_pem.to_str().unwrap(), "-X", "POST"])
        .arg(format!("https://127.0.0.1:{}/raft/vote", ports[0]))
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // With a certificate from another CA, too.
    let other = Ca::new("other CA");
    let (oc, ok) = other.issue(d.path(), "intruder", Until::Long);
    let out = Command::new("curl")
        .args(["-sS", "--cacert", ca_pem.to_str().unwrap(), "-X", "POST"])
        .args([
            "--cert",
            oc.to_str().unwrap(),
            "--key",
            ok.to_str().unwrap(),
        ])
        .arg(format!("https://127.0.0.1:{}/raft/vote", ports[0]))
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // A cluster certificate without the secret: 401 (the secret is still checked).
    let (nc, nk) = ca.issue(d.path(), "client", Until::Long);
    let out = Command::new("curl")
        .args(["-sS", "--cacert", ca_pem.to_str().unwrap(), "-X", "POST"])
        .args([
            "--cert",
            nc.to_str().unwrap(),
            "--key",
            nk.to_str().unwrap(),
        ])
        .args(["-o", "/dev/null", "-w", "%{http_code}"])
        .arg(format!("https://127.0.0.1:{}/raft/vote", ports[0]))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "401");
}

/// Prints the `notAfter` of the certificate a TLS port serves (a client certificate presented).
const PEER_NOT_AFTER: &str = r#"
import socket, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[2])
ctx.load_cert_chain(sys.argv[3], sys.argv[4])
s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5), server_hostname="127.0.0.1")
print(s.getpeercert()["notAfter"])
"#;

/// A SIGHUP renews the certificate a node presents to its peers too (the Raft port's client side):
/// nodes start with certificates that expire in a few seconds; the files are replaced and every node
/// gets SIGHUP; once the old ones have expired a node is restarted, so the others must open new
/// connections to it presenting a certificate — the reloaded one, or it refuses them and never
/// receives the next write.
#[test]
fn sighup_renews_the_certificate_nodes_present_to_their_peers() {
    const VALID_S: u64 = 8;
    let d = tempfile::tempdir().unwrap();
    let ca = Ca::new("cluster CA");
    let ca_pem = ca.write(d.path(), "ca");
    let expires = std::time::Instant::now() + Duration::from_secs(VALID_S);
    let (mut nodes, ports) = start_tls_cluster(
        d.path(),
        &ca,
        &ca_pem,
        Until::Within(Duration::from_secs(VALID_S)),
    );
    let put = |n: &Server, k: u32, v: &str| {
        common::try_request(n.port, "PUT", &format!("/v1/kv/{k}"), &[], v.as_bytes())
    };
    let until_ok = |what: &str, mut f: Box<dyn FnMut() -> bool + '_>| {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !f() {
            assert!(std::time::Instant::now() < deadline, "{what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    until_ok(
        "a first write",
        Box::new(|| put(&nodes[0], 1, "one").is_ok_and(|r| r.status == 200)),
    );
    for (i, n) in nodes.iter().enumerate() {
        ca.issue(d.path(), &format!("node{}", i + 1), Until::Long);
        let ok = Command::new("kill")
            .args(["-HUP", &n.pid().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }
    // The reload is asynchronous: wait until each Raft port serves the new certificate (the one
    // object that is also presented to peers), then for the old certificates to expire.
    let (probe, probe_key) = ca.issue(d.path(), "probe", Until::Long);
    for port in &ports {
        until_ok(
            "the Raft port serves the reloaded certificate",
            Box::new(|| {
                let out = Command::new("python3")
                    .args(["-c", PEER_NOT_AFTER, &port.to_string()])
                    .args([&ca_pem, &probe, &probe_key])
                    .output()
                    .unwrap();
                String::from_utf8_lossy(&out.stdout).contains("2120")
            }),
        );
    }
    while std::time::Instant::now() < expires + Duration::from_secs(1) {
        std::thread::sleep(Duration::from_millis(200));
    }
    nodes[2].kill9();
    nodes[2].restart();
    // Whichever node leads must reach the restarted one over a new connection.
    until_ok(
        "a write after the restart",
        Box::new(|| put(&nodes[0], 2, "two").is_ok_and(|r| r.status == 200)),
    );
    until_ok(
        "the restarted node receives the write",
        Box::new(|| {
            common::try_request(nodes[2].port, "GET", "/v1/kv/2?consistency=stale", &[], b"")
                .is_ok_and(|r| r.status == 200 && r.text() == "two")
        }),
    );
}

/// Completes a TLS handshake offering `alpn`, sends nothing, and reports how long until the server
/// closed (bounded: 20 s).
const SILENT: &str = r#"
import socket, ssl, sys, time
ctx = ssl.create_default_context(cafile=sys.argv[2])
ctx.set_alpn_protocols([sys.argv[3]])
s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", int(sys.argv[1]))), server_hostname="127.0.0.1")
s.settimeout(20)
t = time.monotonic()
try:
    while s.recv(4096):
        pass
except (ssl.SSLError, ConnectionResetError):
    pass
print(s.selected_alpn_protocol(), round(time.monotonic() - t, 1))
"#;

#[test]
fn silent_tls_connections_are_closed_and_http2_writes_from_the_own_origin_pass() {
    let d = tempfile::tempdir().unwrap();
    let ca = Ca::new("kyrodb test CA");
    let ca_pem = ca.write(d.path(), "ca");
    let (cert, key) = ca.issue(d.path(), "server", Until::Long);
    let s = Server::start_with_args(
        &d.path().join("data"),
        &[("KYRODB_HEADER_READ_TIMEOUT_MS", "500")],
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    // After the handshake, a client that says nothing is closed after the head timeout, on
    // HTTP/1.1 and on HTTP/2 (which has no head timeout of its own).
    for alpn in ["http/1.1", "h2"] {
        let out = Command::new("python3")
            .args([
                "-c",
                SILENT,
                &s.port.to_string(),
                ca_pem.to_str().unwrap(),
                alpn,
            ])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut words = text.split_whitespace();
        assert_eq!(
            words.next(),
            Some(alpn),
            "{text} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let secs: f64 = words.next().unwrap().parse().unwrap();
        assert!(
            secs < 15.0,
            "{alpn}: the silent connection stayed open {secs} s"
        );
    }
    // HTTP/2 carries the host as :authority: the console's own origin may write over it.
    let url = https(&s);
    let out = Command::new("curl")
        .args(["-sS", "--http2", "--cacert", ca_pem.to_str().unwrap()])
        .args(["-o", "/dev/null", "-w", "%{http_version} %{http_code}"])
        .args([
            "-H",
            &format!("Origin: {url}"),
            "-H",
            "Content-Type: application/json",
        ])
        .args(["-d", r#"{"key": 5, "value": "from the console"}"#])
        .arg(format!("{url}/v1/put"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "2 200");
    // And a foreign origin may not.
    let out = Command::new("curl")
        .args(["-sS", "--http2", "--cacert", ca_pem.to_str().unwrap()])
        .args(["-o", "/dev/null", "-w", "%{http_code}"])
        .args([
            "-H",
            "Origin: https://evil.example",
            "-H",
            "Content-Type: application/json",
        ])
        .args(["-d", r#"{"key": 6, "value": "x"}"#])
        .arg(format!("{url}/v1/put"))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "403",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
