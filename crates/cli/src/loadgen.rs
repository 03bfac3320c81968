//! The load generator used by bench/http: N keep-alive HTTP/1.1 connections, one request in flight
//! each, for a fixed duration; reports requests/s and latency percentiles as one JSON line.
//! Modes: `get-fast` (GET /v1/get_fast/{random key}), `batch-get` (POST /v1/kv/batch_get of
//! `batch_keys` random keys), `path` (GET a fixed path, e.g. nginx's static file), `fill`
//! (load keys 0..key_count with `value_bytes`-byte values through /v1/kv/batch_put), `put` (PUT
//! /v1/kv/{random key} of a `value_bytes`-byte value: one durable write per request) and `etcd-put`
//! (the same write to etcd's JSON gateway, POST /v3/kv/put, for bench/cluster).

use std::{
    fmt::Write as _,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use clap::{Args, ValueEnum};
use serde::Serialize;

use crate::client::{build_request_into, Conn, Target};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Mode {
    GetFast,
    BatchGet,
    Path,
    Fill,
    Put,
    EtcdPut,
}

#[derive(Debug, Args)]
pub(crate) struct LoadArgs {
    #[arg(long, value_enum, default_value = "get-fast")]
    pub mode: Mode,
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// Measured seconds (not used by `fill`).
    #[arg(long, default_value_t = 10.0)]
    pub duration_s: f64,
    /// Unmeasured seconds before measuring, so connections and caches settle.
    #[arg(long, default_value_t = 1.0)]
    pub warmup_s: f64,
    /// Keys are drawn uniformly from 0..key_count (`fill` writes exactly these).
    #[arg(long, default_value_t = 1_000_000)]
    pub key_count: u64,
    /// Keys per `batch-get` request, or per `fill` batch.
    #[arg(long, default_value_t = 100)]
    pub batch_keys: usize,
    /// Value size for `fill`, `put` and `etcd-put`.
    #[arg(long, default_value_t = 100)]
    pub value_bytes: usize,
    /// Path for `path` mode.
    #[arg(long, default_value = "/")]
    pub path: String,
    /// Runtime worker threads of the generator.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
}

#[derive(Debug, Serialize)]
pub(crate) struct Report {
    pub mode: String,
    pub connections: usize,
    pub duration_s: f64,
    pub requests: u64,
    pub non_2xx: u64,
    pub errors: u64,
    pub rps: f64,
    pub rows_per_s: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// A log-linear latency histogram in microseconds: exact below 1024 µs, then 1024 sub-buckets per
/// power of two (≤0.1% error), up to 2^31 µs.
#[derive(Debug, Clone)]
pub(crate) struct Histogram {
    counts: Vec<u32>,
    max_us: u64,
}

const SUB: u64 = 1024;
const EXP_MAX: u64 = 31;

impl Default for Histogram {
    fn default() -> Self {
        Self {
            counts: vec![0; (SUB + (EXP_MAX - 10 + 1) * SUB) as usize],
            max_us: 0,
        }
    }
}

impl Histogram {
    fn index(us: u64) -> usize {
        let us = us.min((1 << EXP_MAX) - 1);
        if us < SUB {
            return us as usize;
        }
        let e = 63 - u64::from(us.leading_zeros());
        let m = us >> (e - 10);
        (SUB + (e - 10) * SUB + (m - SUB)) as usize
    }

    fn value(idx: usize) -> u64 {
        let idx = idx as u64;
        if idx < SUB {
            return idx;
        }
        let e = (idx - SUB) / SUB + 10;
        let m = (idx - SUB) % SUB + SUB;
        m << (e - 10)
    }

    pub(crate) fn record(&mut self, us: u64) {
        let i = Self::index(us);
        self.counts[i] = self.counts[i].saturating_add(1);
        self.max_us = self.max_us.max(us);
    }

    pub(crate) fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a = a.saturating_add(*b);
        }
        self.max_us = self.max_us.max(other.max_us);
    }

    pub(crate) fn total(&self) -> u64 {
        self.counts.iter().map(|c| u64::from(*c)).sum()
    }

    /// The latency at quantile `q` in microseconds.
    pub(crate) fn quantile_us(&self, q: f64) -> u64 {
        let total = self.total();
        if total == 0 {
            return 0;
        }
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += u64::from(*c);
            if seen >= rank {
                return Self::value(i);
            }
        }
        self.max_us
    }
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    non_2xx: AtomicU64,
    errors: AtomicU64,
}

/// Runs the load and returns its report.
pub(crate) async fn run(
    target: Target,
    token: Option<String>,
    args: &LoadArgs,
) -> Result<Report, String> {
    if args.mode == Mode::Fill {
        return fill(target, token, args).await;
    }
    let warmup_end = Instant::now() + Duration::from_secs_f64(args.warmup_s);
    let end = warmup_end + Duration::from_secs_f64(args.duration_s);
    let counters = Arc::new(Counters::default());
    let target = Arc::new(target);
    let mut tasks = Vec::with_capacity(args.connections);
    for c in 0..args.connections {
        let (target, token, counters) = (target.clone(), token.clone(), counters.clone());
        let (mode, key_count, batch_keys, path, value_bytes) = (
            args.mode,
            args.key_count.max(1),
            args.batch_keys,
            args.path.clone(),
            args.value_bytes,
        );
        tasks.push(tokio::spawn(async move {
            let mut hist = Histogram::default();
            let mut rng =
                Rng(0x9E37_79B9_7F4A_7C15 ^ (c as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03));
            let mut conn = Conn::connect(&target)
                .await
                .map_err(|e| format!("connect {}: {e}", target.addr))?;
            let mut path_buf = String::new();
            let mut body = String::new();
            let mut req = Vec::with_capacity(4096);
            loop {
                let now = Instant::now();
                if now >= end {
                    break;
                }
                path_buf.clear();
                body.clear();
                let (method, ct) = match mode {
                    Mode::GetFast => {
                        let _ = write!(path_buf, "/v1/get_fast/{}", rng.next() % key_count);
                        ("GET", None)
                    }
                    Mode::BatchGet => {
                        path_buf.push_str("/v1/kv/batch_get");
                        body.push_str("{\"keys\":[");
                        for i in 0..batch_keys {
                            let sep = if i == 0 { "" } else { "," };
                            let _ = write!(body, "{sep}{}", rng.next() % key_count);
                        }
                        body.push_str("]}");
                        ("POST", Some("application/json"))
                    }
                    Mode::Put => {
                        let key = rng.next() % key_count;
                        let _ = write!(path_buf, "/v1/kv/{key}");
                        body.push_str(&fill_value(key, value_bytes));
                        ("PUT", Some("application/octet-stream"))
                    }
                    Mode::EtcdPut => {
                        use base64::Engine as _;
                        let key = rng.next() % key_count;
                        let b64 = base64::engine::general_purpose::STANDARD;
                        path_buf.push_str("/v3/kv/put");
                        let _ = write!(
                            body,
                            "{{\"key\":\"{}\",\"value\":\"{}\"}}",
                            b64.encode(key.to_be_bytes()),
                            b64.encode(fill_value(key, value_bytes))
                        );
                        ("POST", Some("application/json"))
                    }
                    Mode::Path | Mode::Fill => {
                        path_buf.push_str(&path);
                        ("GET", None)
                    }
                };
                build_request_into(
                    &mut req,
                    &target,
                    method,
                    &path_buf,
                    token.as_deref(),
                    ct,
                    body.as_bytes(),
                );
                let sent = Instant::now();
                let result = match conn.send(&req).await {
                    Ok(()) => conn.read_response(None).await,
                    Err(e) => Err(e),
                };
                let done = Instant::now();
                let measured = sent >= warmup_end && done <= end;
                match result {
                    Ok(head) => {
                        if measured {
                            hist.record(done.duration_since(sent).as_micros() as u64);
                            counters.requests.fetch_add(1, Ordering::Relaxed);
                            if !(200..300).contains(&head.status) {
                                counters.non_2xx.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                    Err(_) => {
                        counters.errors.fetch_add(1, Ordering::Relaxed);
                        // Reconnect; give up on this connection if the server is gone.
                        match Conn::connect(&target).await {
                            Ok(c) => conn = c,
                            Err(_) => break,
                        }
                    }
                }
            }
            Ok::<Histogram, String>(hist)
        }));
    }
    let mut hist = Histogram::default();
    for t in tasks {
        let h = t.await.map_err(|e| e.to_string())??;
        hist.merge(&h);
    }
    let requests = counters.requests.load(Ordering::Relaxed);
    let non_2xx = counters.non_2xx.load(Ordering::Relaxed);
    let rps = requests as f64 / args.duration_s;
    let ok_rps = (requests - non_2xx) as f64 / args.duration_s;
    let rows_per_s = if args.mode == Mode::BatchGet {
        ok_rps * args.batch_keys as f64
    } else {
        ok_rps
    };
    let ms = |us: u64| us as f64 / 1000.0;
    Ok(Report {
        mode: format!("{:?}", args.mode).to_lowercase(),
        connections: args.connections,
        duration_s: args.duration_s,
        requests,
        non_2xx,
        errors: counters.errors.load(Ordering::Relaxed),
        rps,
        rows_per_s,
        p50_ms: ms(hist.quantile_us(0.50)),
        p90_ms: ms(hist.quantile_us(0.90)),
        p99_ms: ms(hist.quantile_us(0.99)),
        max_ms: ms(hist.max_us),
    })
}

/// Writes keys 0..key_count in batches of `batch_keys` over `connections` connections.
async fn fill(target: Target, token: Option<String>, args: &LoadArgs) -> Result<Report, String> {
    let started = Instant::now();
    let next_batch = Arc::new(AtomicU64::new(0));
    let batch_keys = args.batch_keys.max(1) as u64;
    let batches = args.key_count.div_ceil(batch_keys);
    let target = Arc::new(target);
    let mut tasks = Vec::new();
    for _ in 0..args.connections.max(1) {
        let (target, token, next_batch) = (target.clone(), token.clone(), next_batch.clone());
        let (key_count, value_bytes) = (args.key_count, args.value_bytes);
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::connect(&target)
                .await
                .map_err(|e| format!("connect {}: {e}", target.addr))?;
            let mut written = 0u64;
            loop {
                let b = next_batch.fetch_add(1, Ordering::Relaxed);
                if b >= batches {
                    return Ok::<u64, String>(written);
                }
                let (lo, hi) = (b * batch_keys, ((b + 1) * batch_keys).min(key_count));
                let mut body = String::with_capacity((hi - lo) as usize * (value_bytes + 32));
                body.push_str("{\"items\":[");
                for k in lo..hi {
                    let sep = if k == lo { "" } else { "," };
                    let _ = write!(
                        body,
                        "{sep}{{\"key\":{k},\"value\":\"{}\"}}",
                        fill_value(k, value_bytes)
                    );
                }
                body.push_str("]}");
                let resp = conn
                    .request(
                        &target,
                        "POST",
                        "/v1/kv/batch_put",
                        token.as_deref(),
                        Some("application/json"),
                        body.as_bytes(),
                    )
                    .await
                    .map_err(|e| format!("batch_put: {e}"))?;
                if resp.status != 200 {
                    return Err(format!(
                        "batch_put: HTTP {}: {}",
                        resp.status,
                        String::from_utf8_lossy(&resp.body)
                    ));
                }
                written += hi - lo;
            }
        }));
    }
    let mut written = 0;
    for t in tasks {
        written += t.await.map_err(|e| e.to_string())??;
    }
    let secs = started.elapsed().as_secs_f64();
    Ok(Report {
        mode: "fill".into(),
        connections: args.connections,
        duration_s: secs,
        requests: batches,
        non_2xx: 0,
        errors: 0,
        rps: batches as f64 / secs,
        rows_per_s: written as f64 / secs,
        p50_ms: 0.0,
        p90_ms: 0.0,
        p99_ms: 0.0,
        max_ms: 0.0,
    })
}

/// A printable value of exactly `len` bytes that names its key.
pub(crate) fn fill_value(key: u64, len: usize) -> String {
    let mut s = format!("v{key}-");
    while s.len() < len {
        s.push(char::from(b'a' + (s.len() % 26) as u8));
    }
    s.truncate(len);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_quantiles_are_within_a_tenth_of_a_percent() {
        let mut h = Histogram::default();
        for us in 1..=100_000u64 {
            h.record(us);
        }
        for (q, want) in [(0.5, 50_000.0), (0.99, 99_000.0)] {
            let got = h.quantile_us(q) as f64;
            assert!((got - want).abs() / want < 0.002, "q{q}: {got} vs {want}");
        }
        assert_eq!(Histogram::value(Histogram::index(5)), 5);
        assert_eq!(h.max_us, 100_000);
    }

    #[test]
    fn fill_values_have_the_asked_length() {
        assert_eq!(fill_value(123, 100).len(), 100);
        assert!(fill_value(123, 100).starts_with("v123-"));
    }
}
