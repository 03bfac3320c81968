//! Starts the real `kyrodb` binary on a free loopback port with a temp data dir, and talks raw
//! HTTP/1.1 to it. Readiness is awaited by polling `/health` in a bounded loop.
#![allow(dead_code, unreachable_pub)]

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

/// How long a server may take to answer `/health` after spawning.
const START_TIMEOUT: Duration = Duration::from_secs(20);

pub struct Server {
    child: Option<Child>,
    pub port: u16,
    pub dir: PathBuf,
    pub env: Vec<(String, String)>,
    pub args: Vec<String>,
    /// The open-file limit (soft and hard) the server runs under, when the test sets one.
    pub nofile: Option<u64>,
}

/// Environment variables `kyrodb serve` reads: cleared so the caller's environment cannot leak in, and
/// each must be documented by `serve --help`.
pub const SERVE_ENV: &[&str] = &[
    "KYRODB_CONFIG",
    "KYRODB_DATA_DIR",
    "KYRODB_HOST",
    "KYRODB_PORT",
    "KYRODB_API_KEYS",
    "KYRODB_RATE_LIMIT_PER_SEC",
    "KYRODB_RATE_LIMIT_BURST",
    "KYRODB_TRUSTED_PROXIES",
    "KYRODB_CORS_ORIGINS",
    "KYRODB_ALLOWED_HOSTS",
    "KYRODB_BODY_BYTES_MAX",
    "KYRODB_REQUEST_TIMEOUT_MS",
    "KYRODB_SHUTDOWN_DRAIN_MS_MAX",
    "KYRODB_WARM_ON_START",
    "KYRODB_DISABLE_HTTP_LOG",
    "RUST_LOG",
    "KYRODB_FSYNC",
    "KYRODB_VALUE_BYTES_MAX",
    "KYRODB_BATCH_KEYS_MAX",
    "KYRODB_SCAN_LIMIT_MAX",
    "KYRODB_RESPONSE_BYTES_MAX",
    "KYRODB_WORKER_THREADS",
    "KYRODB_PUBLIC_METRICS",
    "KYRODB_HEADER_READ_TIMEOUT_MS",
    "KYRODB_CONNECTIONS_MAX",
    "KYRODB_WRITE_STALL_TIMEOUT_MS",
    "KYRODB_TLS_CERT",
    "KYRODB_TLS_KEY",
    "KYRODB_BACKUP_DIRS",
    "KYRODB_MODEL_DIR",
    "KYRODB_EMBED_THREADS",
    "KYRODB_EMBED_QUEUE_MAX",
    "KYRODB_INDEX_THREADS",
    "KYRODB_VECTOR_BYTES_BUDGET",
    "KYRODB_DOCUMENTS_PER_BATCH_MAX",
];

/// Environment variables the client commands read.
const CLIENT_ENV: &[&str] = &["KYRODB_URL", "KYRODB_TOKEN", "KYRODB_CA_FILE"];

/// Reads `stderr` in a thread that passes every line through to this process's stderr, and returns
/// the first line for which `pick` gives `Some`, within [`START_TIMEOUT`].
pub fn first_stderr_line<T: Send + 'static>(
    stderr: std::process::ChildStderr,
    pick: impl Fn(&str) -> Option<T> + Send + 'static,
) -> Option<T> {
    use std::io::BufRead;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if let Some(v) = pick(&line) {
                let _ = tx.send(v);
            }
            eprintln!("{line}");
        }
    });
    rx.recv_timeout(START_TIMEOUT).ok()
}

/// The port in the server's "kyrodb listening on http://ADDR" line.
fn listening_port(stderr: std::process::ChildStderr) -> Option<u16> {
    first_stderr_line(stderr, |line| {
        let addr = line
            .strip_prefix("kyrodb listening on http://")
            .or_else(|| line.strip_prefix("kyrodb listening on https://"))?;
        addr.rsplit(':').next()?.trim().parse().ok()
    })
}

/// A free port below Linux's ephemeral range (32768+), so no server binding port 0 meanwhile can
/// take it before the node that is told to use it binds it; never one this process handed out
/// before.
pub fn raft_port() -> u16 {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static SEED: AtomicUsize = AtomicUsize::new(0);
    let mut x = SEED.fetch_add(1, Ordering::Relaxed) as u64
        ^ u64::from(std::process::id()) << 20
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos() as u64;
    // Never the same port twice in one process: tests run in parallel threads, and a port handed
    // out is free until its node binds it, so another thread could be handed it meanwhile.
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let p = 20_000 + (x % 12_000) as u16;
        let mut given = GIVEN.lock().unwrap();
        if !given.contains(&p) && std::net::TcpListener::bind(("127.0.0.1", p)).is_ok() {
            given.push(p);
            return p;
        }
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_kyrodb")
}

/// A `kyrodb` command with a clean environment.
pub fn command() -> Command {
    let mut c = Command::new(bin());
    for k in SERVE_ENV.iter().chain(CLIENT_ENV) {
        c.env_remove(k);
    }
    c
}

/// A client command (`put`, `import`, ...) against `s`; waits for it to exit.
pub fn run(s: &Server, args: &[&str]) -> std::process::Output {
    command()
        .args(args)
        .arg("--url")
        .arg(s.url())
        .output()
        .unwrap()
}

impl Server {
    pub fn start(dir: &Path, env: &[(&str, &str)]) -> Server {
        Self::start_with_args(dir, env, &[])
    }

    pub fn start_with_args(dir: &Path, env: &[(&str, &str)], args: &[&str]) -> Server {
        Self::start_limited(dir, env, args, None)
    }

    /// [`Server::start_with_args`] under an open-file limit of `nofile` (soft and hard, so the
    /// server cannot raise it), when set.
    pub fn start_limited(
        dir: &Path,
        env: &[(&str, &str)],
        args: &[&str],
        nofile: Option<u64>,
    ) -> Server {
        let env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let args = args.iter().map(|a| a.to_string()).collect();
        let mut s = Server {
            child: None,
            port: 0,
            dir: dir.to_path_buf(),
            env,
            args,
            nofile,
        };
        s.spawn();
        s
    }

    /// Starts the server on port 0 and learns the port it bound from its "listening on" line, so no
    /// other process can take the port between choosing and binding it (and no test can talk to
    /// another test's server).
    fn spawn(&mut self) {
        let mut c = match self.nofile {
            // The shell sets the limit and execs the server in its place (same pid).
            Some(n) => {
                let mut sh = Command::new("sh");
                sh.arg("-c")
                    .arg(format!("ulimit -n {n} && exec \"$0\" \"$@\""))
                    .arg(bin());
                for k in SERVE_ENV.iter().chain(CLIENT_ENV) {
                    sh.env_remove(k);
                }
                sh
            }
            None => command(),
        };
        c.arg("serve")
            .arg("--data-dir")
            .arg(&self.dir)
            .arg("--port")
            .arg("0");
        c.args(&self.args);
        c.env("KYRODB_DISABLE_HTTP_LOG", "1")
            .env("RUST_LOG", "warn");
        for (k, v) in &self.env {
            c.env(k, v);
        }
        let mut child = c
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let port = listening_port(child.stderr.take().unwrap());
        self.child = Some(child);
        match port {
            Some(p) => self.port = p,
            None => {
                let status = self.child.as_mut().unwrap().try_wait();
                panic!("kyrodb did not say where it listens within {START_TIMEOUT:?} ({status:?})");
            }
        }
        assert!(self.wait_healthy(), "kyrodb did not become healthy");
    }

    fn wait_healthy(&mut self) -> bool {
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.as_mut().unwrap().try_wait() {
                return false;
            }
            if let Ok(r) = try_request(self.port, "GET", "/health", &[], b"") {
                // A TLS port answers plain HTTP with 400 tls_required: it is up.
                let tls = self.args.iter().any(|a| a == "--tls-cert");
                if r.status == 200 || (tls && r.status == 400) {
                    return true;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    pub fn restart(&mut self) {
        self.spawn();
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill9(&mut self) {
        let mut c = self.child.take().unwrap();
        c.kill().unwrap();
        c.wait().unwrap();
    }

    /// SIGTERM and wait for the process to exit.
    pub fn term(&mut self) -> ExitStatus {
        let mut c = self.child.take().unwrap();
        let ok = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status()
            .unwrap();
        assert!(ok.success());
        c.wait().unwrap()
    }

    pub fn req(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
        try_request(self.port, method, path, headers, body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    pub fn get(&self, path: &str) -> Resp {
        self.req("GET", path, &[], b"")
    }

    pub fn post(&self, path: &str, body: &str) -> Resp {
        self.req(
            "POST",
            path,
            &[("Content-Type", "application/json")],
            body.as_bytes(),
        )
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    /// Asserts the shared error shape and returns the code.
    pub fn error_code(&self) -> String {
        assert_eq!(
            self.header("content-type"),
            Some("application/json"),
            "{self:?}"
        );
        let j = self.json();
        assert!(j["error"]["message"].is_string(), "{j}");
        j["error"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("no error code: {j}"))
            .to_owned()
    }
}

/// A keep-alive connection for several requests in turn (answers must carry a content length).
pub struct KeepAlive {
    s: TcpStream,
    port: u16,
}

impl KeepAlive {
    pub fn open(port: u16) -> std::io::Result<KeepAlive> {
        let s = TcpStream::connect(("127.0.0.1", port))?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        s.set_write_timeout(Some(Duration::from_secs(30)))?;
        Ok(KeepAlive { s, port })
    }

    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> std::io::Result<Resp> {
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n",
            self.port
        );
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
        self.s.write_all(req.as_bytes())?;
        self.s.write_all(body)?;
        let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_owned());
        let mut raw = Vec::new();
        let mut buf = [0u8; 8192];
        let end = loop {
            if let Some(e) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                break e + 4;
            }
            let n = self.s.read(&mut buf)?;
            if n == 0 {
                return Err(bad("connection closed before an answer"));
            }
            raw.extend_from_slice(&buf[..n]);
        };
        let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
        let len: usize = head
            .split("\r\n")
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| bad("no content-length"))?;
        while raw.len() < end + len {
            let n = self.s.read(&mut buf)?;
            if n == 0 {
                return Err(bad("connection closed inside the body"));
            }
            raw.extend_from_slice(&buf[..n]);
        }
        parse(&raw[..end + len]).ok_or_else(|| bad("bad response"))
    }
}

/// One request on a fresh connection (`Connection: close`).
pub fn try_request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Resp> {
    try_request_within(port, method, path, headers, body, Duration::from_secs(30))
}

/// [`try_request`] whose connect, write and read each give up after `timeout`.
pub fn try_request_within(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> std::io::Result<Resp> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    let mut req =
        format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || matches!(method, "POST" | "PUT") {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    s.write_all(body)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    parse(&raw).ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "bad response"))
}

fn parse(raw: &[u8]) -> Option<Resp> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.get(9..12)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = raw[end + 4..].to_vec();
    if headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"))
    {
        body = dechunk(&body)?;
    }
    Some(Resp {
        status,
        headers,
        body,
    })
}

fn dechunk(mut b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let i = b.windows(2).position(|w| w == b"\r\n")?;
        let size = usize::from_str_radix(std::str::from_utf8(&b[..i]).ok()?.trim(), 16).ok()?;
        b = &b[i + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(b.get(..size)?);
        b = b.get(size + 2..)?;
    }
}

/// The model directory shared by tests (`<target>/models`), with all-MiniLM-L6-v2 installed by
/// `kyrodb model install` — the user's command — once per machine (cached; a file lock keeps
/// concurrent test binaries from downloading it twice).
pub fn installed_model_dir() -> std::path::PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"),
        std::path::PathBuf::from,
    );
    let root = target.join("models");
    std::fs::create_dir_all(&root).unwrap();
    let lock = std::fs::File::create(root.join(".lock")).unwrap();
    lock.lock().unwrap();
    let out = command()
        .args(["model", "install", "--model-dir"])
        .arg(&root)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kyrodb model install failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    root
}

/// The repository's root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs `scripts/<script> args…` (the installers tests use: `pyenv`, `browser-env`) and returns
/// its stdout, trimmed; a failure fails the test with the script's stderr.
pub fn script_stdout(script: &str, args: &[&str], what: &str) -> String {
    let out = Command::new(repo_root().join("scripts").join(script))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("scripts/{script}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// A deterministic pseudo-random 8-dimensional vector in [-1, 1) (see [`pseudo_vector`]).
pub fn vector8(i: u64) -> Vec<f32> {
    pseudo_vector(i, 8)
}

/// A deterministic, well spread pseudo-random vector in [-1, 1)^dim (xorshift seeded by `i`).
pub fn pseudo_vector(i: u64, dim: usize) -> Vec<f32> {
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..dim)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % 20_000) as f32 / 10_000.0 - 1.0
        })
        .collect()
}
