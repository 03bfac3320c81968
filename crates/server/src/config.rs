//! Server configuration: one [`Settings`] layer per source, merged flags > env > file > defaults into a
//! resolved [`Config`]. The CLI turns flags and env (through clap) into one layer and the TOML file into
//! another; everything below is testable without a process.

use std::{net::IpAddr, path::PathBuf, str::FromStr, time::Duration};

use clap::builder::BoolishValueParser;
use kyrodb_storage::FsyncPolicy;
use serde::{Deserialize, Serialize};

use crate::auth::{parse_api_keys, ApiKey, TOKEN_LEN_MIN};

/// One layer of settings; `None` means "not set here, ask the layer below".
///
/// This struct is the one list of settings: the same fields are the `kyrodb serve` flags and their
/// `KYRODB_*` environment variables (clap reads the attributes and the doc comments below), and the
/// keys of the TOML file (`port = 8080`, `api_keys = "admin:..."`, `cors_origins = ["*"]`).
#[derive(Debug, Clone, Default, Deserialize, Serialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Data directory [default: ./kyrodb-data]
    #[arg(long, env = "KYRODB_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address or host name to listen on; 0.0.0.0 for every interface [default: 127.0.0.1]
    #[arg(long, env = "KYRODB_HOST")]
    pub host: Option<String>,
    /// Port to listen on [default: 8080]
    #[arg(long, short, env = "KYRODB_PORT")]
    pub port: Option<u16>,
    /// Bearer tokens with roles: "admin:<token>,write:<token>,read:<token>"; each token at least 8
    /// visible ASCII characters. Set but empty or unparsable: the server refuses to start
    /// [default: none, every route open]
    #[arg(
        long,
        env = "KYRODB_API_KEYS",
        hide_env_values = true,
        value_name = "ROLE:TOKEN,..."
    )]
    pub api_keys: Option<String>,
    /// /metrics needs no token even when tokens are set (like /health and /ready) [default: false]
    #[arg(long, env = "KYRODB_PUBLIC_METRICS", num_args = 0..=1, default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub public_metrics: Option<bool>,
    /// Per-client-IP requests per second; 0 turns rate limiting off; /health, /ready and /metrics are
    /// never limited [default: off]
    #[arg(long, env = "KYRODB_RATE_LIMIT_PER_SEC")]
    pub rate_limit_per_sec: Option<u32>,
    /// Requests a client may burst above the rate (429 + Retry-After beyond) [default: the rate]
    #[arg(long, env = "KYRODB_RATE_LIMIT_BURST")]
    pub rate_limit_burst: Option<u32>,
    /// Proxy addresses whose X-Forwarded-For names the client (comma-separated) [default: none]
    #[arg(
        long,
        env = "KYRODB_TRUSTED_PROXIES",
        value_delimiter = ',',
        value_name = "IP,..."
    )]
    pub trusted_proxies: Option<Vec<IpAddr>>,
    /// CORS allowed origins (comma-separated, or *) [default: none, no CORS headers]
    #[arg(
        long,
        env = "KYRODB_CORS_ORIGINS",
        value_delimiter = ',',
        value_name = "ORIGIN,..."
    )]
    pub cors_origins: Option<Vec<String>>,
    /// Host header values accepted besides the loopback names (localhost, *.localhost, 127.x.x.x,
    /// [::1]), comma-separated, a leading "*." matching any subdomain; on a loopback bind any other
    /// Host is refused (DNS rebinding), on other binds only when this is set [default: none]
    #[arg(
        long,
        env = "KYRODB_ALLOWED_HOSTS",
        value_delimiter = ',',
        value_name = "HOST,..."
    )]
    pub allowed_hosts: Option<Vec<String>>,
    /// TLS: the server's certificate chain, PEM (with --tls-key); HTTP/1.1 and HTTP/2 by ALPN;
    /// reloaded on SIGHUP [default: none, plain HTTP]
    #[arg(long, env = "KYRODB_TLS_CERT", value_name = "PEM")]
    pub tls_cert: Option<PathBuf>,
    /// TLS: the certificate's private key, PEM (PKCS#8, PKCS#1 or SEC1) [default: none]
    #[arg(long, env = "KYRODB_TLS_KEY", value_name = "PEM")]
    pub tls_key: Option<PathBuf>,
    /// Where `POST /v1/backups` may write: absolute directories and s3://bucket/prefix URLs
    /// (comma-separated); a backup goes into one of them or below. S3 credentials and endpoint
    /// come from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_ENDPOINT_URL and
    /// AWS_ALLOW_HTTP [default: none, backups refused with 403 backup_dir_not_allowed]
    #[arg(
        long,
        env = "KYRODB_BACKUP_DIRS",
        value_delimiter = ',',
        value_name = "DIR|s3://BUCKET/PREFIX,..."
    )]
    pub backup_dirs: Option<Vec<String>>,
    /// Largest request body in bytes (413 beyond) [default: 8388608]
    #[arg(long, env = "KYRODB_BODY_BYTES_MAX")]
    pub body_bytes_max: Option<usize>,
    /// Requests taking longer get 408 [default: 30000]
    #[arg(long, env = "KYRODB_REQUEST_TIMEOUT_MS")]
    pub request_timeout_ms: Option<u64>,
    /// A request's head (request line and headers) must arrive within this many ms of the connection
    /// opening or of the previous response, else the connection is closed; this is also how long an
    /// idle keep-alive connection stays open [default: 10000]
    #[arg(long, env = "KYRODB_HEADER_READ_TIMEOUT_MS")]
    pub header_read_timeout_ms: Option<u64>,
    /// Most connections open at once; beyond, new ones get a JSON 503 and are closed. Lowered at
    /// start to what the open-file limit allows after a reserve for files (a quarter of the limit,
    /// at least 256), so connections can never starve the engine of descriptors [default: 4096]
    #[arg(long, env = "KYRODB_CONNECTIONS_MAX")]
    pub connections_max: Option<usize>,
    /// A response the client does not read for this many ms is abandoned and its connection
    /// closed [default: 30000]
    #[arg(long, env = "KYRODB_WRITE_STALL_TIMEOUT_MS")]
    pub write_stall_timeout_ms: Option<u64>,
    /// Longest wait for in-flight requests at shutdown [default: 30000]
    #[arg(long, env = "KYRODB_SHUTDOWN_DRAIN_MS_MAX")]
    pub shutdown_drain_ms_max: Option<u64>,
    /// Read snapshot files ahead at start so first reads do not fault [default: false]
    #[arg(long, env = "KYRODB_WARM_ON_START", num_args = 0..=1, default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub warm_on_start: Option<bool>,
    /// No per-request log lines [default: false]
    #[arg(long, env = "KYRODB_DISABLE_HTTP_LOG", num_args = 0..=1, default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub disable_http_log: Option<bool>,
    /// Log filter, RUST_LOG syntax (e.g. info, kyrodb_server=debug) [default: info]
    #[arg(long, env = "RUST_LOG", value_name = "FILTER")]
    pub log: Option<String>,
    /// WAL durability: always | never | interval_ms:<N> [default: always]
    #[arg(long, env = "KYRODB_FSYNC")]
    pub fsync: Option<String>,
    /// Largest value in bytes (413 beyond) [default: 1048576]
    #[arg(long, env = "KYRODB_VALUE_BYTES_MAX")]
    pub value_bytes_max: Option<usize>,
    /// Most keys in one batch_get / batch_put / batch_delete [default: 10000]
    #[arg(long, env = "KYRODB_BATCH_KEYS_MAX")]
    pub batch_keys_max: Option<usize>,
    /// Largest scan limit [default: 10000]
    #[arg(long, env = "KYRODB_SCAN_LIMIT_MAX")]
    pub scan_limit_max: Option<usize>,
    /// Value bytes one batch_get or scan answer may carry (a scan pages early; a batch_get over it is
    /// refused) [default: 67108864]
    #[arg(long, env = "KYRODB_RESPONSE_BYTES_MAX")]
    pub response_bytes_max: Option<usize>,
    /// Async runtime threads serving HTTP; 0 means one per CPU core [default: 0]
    #[arg(long, env = "KYRODB_WORKER_THREADS")]
    pub worker_threads: Option<usize>,
    /// Bytes all vector indexes together may hold; document writes beyond it get 507 [default: 8589934592]
    #[arg(long, env = "KYRODB_VECTOR_BYTES_BUDGET")]
    pub vector_bytes_budget: Option<u64>,
    /// Most documents in one upsert request [default: 1000]
    #[arg(long, env = "KYRODB_DOCUMENTS_PER_BATCH_MAX")]
    pub documents_per_batch_max: Option<usize>,
    /// Background threads linking new vectors into the graphs, 1..=64; more than one is opt-in (see the README) [default: 1]
    #[arg(long, env = "KYRODB_INDEX_THREADS")]
    pub index_threads: Option<usize>,
    /// Where embedding models are installed (`kyrodb model install`) [default: <data dir>/models]
    #[arg(long, env = "KYRODB_MODEL_DIR", value_name = "DIR")]
    pub model_dir: Option<PathBuf>,
    /// Threads computing embeddings [default: one per core]
    #[arg(long, env = "KYRODB_EMBED_THREADS")]
    pub embed_threads: Option<usize>,
    /// Texts waiting to be embedded before requests get 503 busy [default: 4096]
    #[arg(long, env = "KYRODB_EMBED_QUEUE_MAX")]
    pub embed_queue_max: Option<usize>,
    /// Documents per second a re-embed job walks at most; 0 means as fast as the embedder allows [default: 0]
    #[arg(long, env = "KYRODB_REEMBED_DOCS_PER_S")]
    pub reembed_docs_per_s: Option<u32>,
    /// Cluster mode: this node's id, a positive integer (with --cluster) [default: none, single node]
    #[arg(long, env = "KYRODB_NODE_ID")]
    pub node_id: Option<u64>,
    /// Cluster mode: the voters' Raft addresses, "1=IP:PORT,2=IP:PORT,3=IP:PORT"; this node's Raft
    /// port is the one listed under its id (a node joining later lists itself too and is added
    /// with `kyrodb cluster join`) [default: none, single node]
    #[arg(long, env = "KYRODB_CLUSTER", value_name = "ID=IP:PORT,...")]
    pub cluster: Option<String>,
    /// Cluster mode: the shared secret every Raft request carries, at least 16 characters; the
    /// same on every node [default: none; required with --cluster]
    #[arg(long, env = "KYRODB_CLUSTER_SECRET", hide_env_values = true)]
    pub cluster_secret: Option<String>,
    /// Cluster mode: the address the Raft port binds, when peers reach this node through another
    /// one (a proxy, NAT) [default: this node's address in --cluster]
    #[arg(long, env = "KYRODB_RAFT_LISTEN", value_name = "IP:PORT")]
    pub raft_listen: Option<String>,
    /// Cluster mode: mutual TLS on the Raft port — this node's certificate chain, PEM (with
    /// --raft-tls-key and --raft-tls-ca; peers must present a certificate signed by that CA, and
    /// this node presents its own to them; the cluster secret is still checked) [default: none]
    #[arg(long, env = "KYRODB_RAFT_TLS_CERT", value_name = "PEM")]
    pub raft_tls_cert: Option<PathBuf>,
    /// Cluster mode: this node's Raft private key, PEM [default: none]
    #[arg(long, env = "KYRODB_RAFT_TLS_KEY", value_name = "PEM")]
    pub raft_tls_key: Option<PathBuf>,
    /// Cluster mode: the CA that signs every node's Raft certificate, PEM [default: none]
    #[arg(long, env = "KYRODB_RAFT_TLS_CA", value_name = "PEM")]
    pub raft_tls_ca: Option<PathBuf>,
    /// Cluster mode: leader heartbeat interval; a follower that hears nothing calls an election
    /// 6–7 intervals after the last heartbeat (a leader lease of 3.5, then a random 2.5–3.5)
    /// [default: 100]
    #[arg(long, env = "KYRODB_RAFT_HEARTBEAT_MS")]
    pub raft_heartbeat_ms: Option<u64>,
    /// Cluster mode: how long a write or a linearizable read waits for a leader and a quorum
    /// before answering 503 [default: 5000]
    #[arg(long, env = "KYRODB_CLUSTER_TIMEOUT_MS")]
    pub cluster_timeout_ms: Option<u64>,
    /// Cluster mode: take a Raft snapshot (an engine checkpoint) every this many log entries; the
    /// log before it is then dropped and a node further behind catches up from the snapshot
    /// [default: 100000]
    #[arg(long, env = "KYRODB_RAFT_SNAPSHOT_ENTRIES")]
    pub raft_snapshot_entries: Option<u64>,
}

impl Settings {
    /// Parses a TOML config file's text.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError(format!("config file: {e}")))
    }

    /// This layer over `lower`: a field set here wins. Field by field through serde, so a new
    /// setting needs no change here.
    pub fn over(self, lower: Settings) -> Settings {
        let as_map = |s: &Settings| match serde_json::to_value(s) {
            Ok(serde_json::Value::Object(m)) => m,
            _ => unreachable!("Settings serializes to a JSON object"),
        };
        let mut merged = as_map(&lower);
        for (k, v) in as_map(&self) {
            if !v.is_null() {
                merged.insert(k, v);
            }
        }
        serde_json::from_value(serde_json::Value::Object(merged))
            .expect("a merge of two valid Settings is valid")
    }
}

/// A configuration that cannot be used; the message names the setting.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// Per-IP rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Requests per second each client IP may make.
    pub per_sec: u32,
    /// Requests a client may make at once above the rate before it gets 429.
    pub burst: u32,
}

/// The resolved configuration the server runs with.
#[derive(Debug, Clone)]
pub struct Config {
    /// The data directory.
    pub data_dir: PathBuf,
    /// The address to listen on.
    pub host: IpAddr,
    /// The HTTP port to listen on.
    pub port: u16,
    /// The configured bearer tokens; empty: every route is open.
    pub api_keys: Vec<ApiKey>,
    /// `/metrics` needs no token.
    pub public_metrics: bool,
    /// The per-IP rate limit; None: off.
    pub rate_limit: Option<RateLimit>,
    /// Proxies whose `X-Forwarded-For` names the client.
    pub trusted_proxies: Vec<IpAddr>,
    /// CORS allowed origins (`*`: every origin); empty: no CORS headers.
    pub cors_origins: Vec<String>,
    /// Host names accepted besides loopback ones (lower case, without port).
    pub allowed_hosts: Vec<String>,
    /// Largest request body, in bytes (413 beyond).
    pub body_bytes_max: usize,
    /// Requests taking longer get 408.
    pub request_timeout: Duration,
    /// How long a request's head may take to arrive; also how long an idle keep-alive connection
    /// stays open.
    pub header_read_timeout: Duration,
    /// Most connections open at once, as configured (lowered at start to fit the open-file limit).
    pub connections_max: usize,
    /// A response the client does not read for this long is abandoned and its connection closed.
    pub write_stall_timeout: Duration,
    /// Longest wait for in-flight requests at shutdown.
    pub shutdown_drain_max: Duration,
    /// Read the snapshot files ahead at start so first reads do not fault.
    pub warm_on_start: bool,
    /// No per-request log lines.
    pub disable_http_log: bool,
    /// Log filter, in `RUST_LOG` syntax.
    pub log: String,
    /// When the engine fsyncs its WAL (cluster mode overrides it: see [`Config::storage_options`]).
    pub fsync: FsyncPolicy,
    /// Largest value, in bytes (413 beyond).
    pub value_bytes_max: usize,
    /// Most keys in one batch_get, batch_put or batch_delete.
    pub batch_keys_max: usize,
    /// Largest scan `limit`.
    pub scan_limit_max: usize,
    /// Most value bytes one batch_get or scan answer may carry.
    pub response_bytes_max: usize,
    /// 0: one per CPU core.
    pub worker_threads: usize,
    /// Bytes all vector indexes together may hold; document writes beyond it get 507.
    pub vector_bytes_budget: u64,
    /// Most documents in one upsert request.
    pub documents_per_batch_max: usize,
    /// Background threads linking new vectors into the graphs (1..=64).
    pub index_threads: usize,
    /// Where embedding models are installed.
    pub model_dir: PathBuf,
    /// Threads computing embeddings (1..=64).
    pub embed_threads: usize,
    /// Texts waiting to be embedded before requests get 503 `busy`.
    pub embed_queue_max: usize,
    /// Documents per second a re-embed job walks at most; 0: as fast as the embedder allows.
    pub reembed_docs_per_s: u32,
    /// Set in cluster mode.
    pub cluster: Option<ClusterSettings>,
    /// TLS on the HTTP port.
    pub tls: Option<crate::tls::CertFiles>,
    /// Where backups may go (directories are absolute).
    pub backup_dirs: Vec<kyrodb_backup::TargetSpec>,
}

/// Cluster mode's settings, resolved.
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    /// This node's id.
    pub node_id: u64,
    /// The voters by node id, with their Raft addresses (`--cluster`).
    pub members: std::collections::BTreeMap<u64, kyrodb_cluster::NodeAddr>,
    /// The shared secret every Raft request carries (at least 16 characters).
    pub secret: String,
    /// Leader heartbeat interval, in ms; election timeouts are derived from it.
    pub heartbeat_ms: u64,
    /// How long a write or a linearizable read waits for a leader and a quorum before answering
    /// 503.
    pub timeout: Duration,
    /// A Raft snapshot is taken every this many log entries.
    pub snapshot_entries: u64,
    /// Where the Raft port binds (this node's listed address unless --raft-listen).
    pub listen: std::net::SocketAddr,
    /// Mutual TLS on the Raft port: this node's certificate and the CA of every node's.
    pub tls: Option<(crate::tls::CertFiles, PathBuf)>,
}

impl ClusterSettings {
    /// The address this node's Raft port listens on.
    pub fn raft_addr(&self) -> std::net::SocketAddr {
        self.listen
    }

    /// The cluster layer's configuration: Raft log under `<data_dir>/raft`, election timeouts of
    /// 2.5 to 3.5 heartbeats, and no TLS (the caller sets it).
    pub fn config(&self, data_dir: &std::path::Path) -> kyrodb_cluster::ClusterConfig {
        kyrodb_cluster::ClusterConfig {
            node_id: self.node_id,
            members: self.members.clone(),
            raft_dir: data_dir.join("raft"),
            secret: self.secret.clone(),
            heartbeat_ms: self.heartbeat_ms,
            election_min_ms: self.heartbeat_ms * 5 / 2,
            election_max_ms: self.heartbeat_ms * 7 / 2,
            request_timeout: self.timeout,
            snapshot_entries: self.snapshot_entries,
            tls: None,
        }
    }
}

/// Defaults: everything works with no configuration at all.
pub mod defaults {
    /// Data directory.
    pub const DATA_DIR: &str = "./kyrodb-data";
    /// Address to listen on: loopback only.
    pub const HOST: &str = "127.0.0.1";
    /// HTTP port.
    pub const PORT: u16 = 8080;
    /// Room for a 1 MiB value even when every byte is JSON-escaped, plus batches.
    pub const BODY_BYTES_MAX: usize = 8 << 20;
    /// Request timeout, in ms.
    pub const REQUEST_TIMEOUT_MS: u64 = 30_000;
    /// Time for a request's head to arrive (and keep-alive idle time), in ms.
    pub const HEADER_READ_TIMEOUT_MS: u64 = 10_000;
    /// Most connections open at once.
    pub const CONNECTIONS_MAX: usize = 4096;
    /// Time a response may go unread before its connection is closed, in ms.
    pub const WRITE_STALL_TIMEOUT_MS: u64 = 30_000;
    /// Longest wait for in-flight requests at shutdown, in ms.
    pub const SHUTDOWN_DRAIN_MS_MAX: u64 = 30_000;
    /// Log filter.
    pub const LOG: &str = "info";
    /// Largest value, in bytes (1 MiB).
    pub const VALUE_BYTES_MAX: usize = 1 << 20;
    /// Most keys in one batch request.
    pub const BATCH_KEYS_MAX: usize = 10_000;
    /// Largest scan `limit`.
    pub const SCAN_LIMIT_MAX: usize = 10_000;
    /// Bounds what one answer holds in memory: 10,000 keys of 1 MiB would otherwise be 10 GB.
    pub const RESPONSE_BYTES_MAX: usize = 64 << 20;
    /// WAL durability: fsync before every acknowledgement.
    pub const FSYNC: &str = "always";
    /// 0: one per CPU core.
    pub const WORKER_THREADS: usize = 0;
    /// Texts waiting to be embedded before requests get 503.
    pub const EMBED_QUEUE_MAX: usize = 4096;
    /// 0: as fast as the embedder allows.
    pub const REEMBED_DOCS_PER_S: u32 = 0;
    /// Raft leader heartbeat interval, in ms.
    pub const RAFT_HEARTBEAT_MS: u64 = 100;
    /// How long a cluster write or linearizable read waits for a leader and a quorum, in ms.
    pub const CLUSTER_TIMEOUT_MS: u64 = 5000;
    /// Raft log entries between snapshots.
    pub const RAFT_SNAPSHOT_ENTRIES: u64 = 100_000;
}

impl Default for Config {
    fn default() -> Self {
        Config::resolve(Settings::default()).expect("defaults are valid")
    }
}

impl Config {
    /// Fills unset fields with defaults and checks ranges.
    pub fn resolve(s: Settings) -> Result<Self, ConfigError> {
        let bad = |m: String| Err(ConfigError(m));
        let api_keys = match &s.api_keys {
            Some(text) => {
                let keys = parse_api_keys(text)
                    .map_err(|e| ConfigError(format!("api_keys (KYRODB_API_KEYS): {e}")))?;
                if keys.is_empty() {
                    // Set but empty would silently leave every route open: refuse instead.
                    return bad(format!(
                        "api_keys (KYRODB_API_KEYS) is set to {text:?}, which holds no key; \
                         unset it to run without auth, or give \"role:token,...\" \
                         (roles admin, write, read; tokens of at least {TOKEN_LEN_MIN} visible ASCII characters)"
                    ));
                }
                keys
            }
            None => Vec::new(),
        };
        let rate_limit = match s.rate_limit_per_sec.unwrap_or(0) {
            0 => None,
            per_sec => {
                let burst = s.rate_limit_burst.unwrap_or(per_sec);
                if burst == 0 {
                    return bad(
                        "rate_limit_burst must be positive when rate_limit_per_sec is set".into(),
                    );
                }
                Some(RateLimit { per_sec, burst })
            }
        };
        let fsync = match &s.fsync {
            Some(p) => FsyncPolicy::from_str(p).map_err(|e| ConfigError(e.to_string()))?,
            None => FsyncPolicy::from_str(defaults::FSYNC).expect("the default parses"),
        };
        let body_bytes_max = s.body_bytes_max.unwrap_or(defaults::BODY_BYTES_MAX);
        if body_bytes_max < 1024 {
            return bad(format!("body_bytes_max {body_bytes_max} is below 1024"));
        }
        let request_timeout_ms = s.request_timeout_ms.unwrap_or(defaults::REQUEST_TIMEOUT_MS);
        if request_timeout_ms == 0 {
            return bad("request_timeout_ms must be positive".into());
        }
        let header_read_timeout_ms = s
            .header_read_timeout_ms
            .unwrap_or(defaults::HEADER_READ_TIMEOUT_MS);
        if header_read_timeout_ms == 0 {
            return bad("header_read_timeout_ms must be positive".into());
        }
        let connections_max = s.connections_max.unwrap_or(defaults::CONNECTIONS_MAX);
        if connections_max == 0 {
            return bad("connections_max must be positive".into());
        }
        let write_stall_timeout_ms = s
            .write_stall_timeout_ms
            .unwrap_or(defaults::WRITE_STALL_TIMEOUT_MS);
        if write_stall_timeout_ms == 0 {
            return bad("write_stall_timeout_ms must be positive".into());
        }
        let port = s.port.unwrap_or(defaults::PORT);
        let host = resolve_host(s.host.as_deref().unwrap_or(defaults::HOST), port)?;
        let batch_keys_max = s.batch_keys_max.unwrap_or(defaults::BATCH_KEYS_MAX);
        let scan_limit_max = s.scan_limit_max.unwrap_or(defaults::SCAN_LIMIT_MAX);
        if batch_keys_max == 0 || scan_limit_max == 0 {
            return bad("batch_keys_max and scan_limit_max must be positive".into());
        }
        let response_bytes_max = s.response_bytes_max.unwrap_or(defaults::RESPONSE_BYTES_MAX);
        if response_bytes_max < 1024 {
            return bad(format!(
                "response_bytes_max {response_bytes_max} is below 1024"
            ));
        }
        let defaults_search = kyrodb_search::SearchOptions::default();
        let vector_bytes_budget = s
            .vector_bytes_budget
            .unwrap_or(defaults_search.vector_bytes_budget);
        let documents_per_batch_max = s
            .documents_per_batch_max
            .unwrap_or(defaults_search.documents_per_batch_max);
        if documents_per_batch_max == 0 || documents_per_batch_max > 100_000 {
            return bad(format!(
                "documents_per_batch_max {documents_per_batch_max} is outside 1..=100000"
            ));
        }
        let index_threads = s
            .index_threads
            .unwrap_or_else(kyrodb_search::default_index_threads);
        if !(1..=64).contains(&index_threads) {
            return bad(format!("index_threads {index_threads} is outside 1..=64"));
        }
        let embed_threads = s
            .embed_threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        if !(1..=64).contains(&embed_threads) {
            return bad(format!("embed_threads {embed_threads} is outside 1..=64"));
        }
        let embed_queue_max = s.embed_queue_max.unwrap_or(defaults::EMBED_QUEUE_MAX);
        if !(1..=1_000_000).contains(&embed_queue_max) {
            return bad(format!(
                "embed_queue_max {embed_queue_max} is outside 1..=1000000"
            ));
        }
        let data_dir = s
            .data_dir
            .unwrap_or_else(|| PathBuf::from(defaults::DATA_DIR));
        let model_dir = s.model_dir.unwrap_or_else(|| data_dir.join("models"));
        let cors_origins = s.cors_origins.unwrap_or_default();
        for o in &cors_origins {
            if o != "*" && axum::http::HeaderValue::from_str(o).is_err() {
                return bad(format!("cors origin {o:?} is not a valid header value"));
            }
        }
        let cluster = match (s.node_id, &s.cluster) {
            (None, None) => None,
            (Some(_), None) | (None, Some(_)) => {
                return bad("cluster mode needs both --node-id and --cluster".into())
            }
            (Some(node_id), Some(list)) => {
                let members = kyrodb_cluster::parse_members(list)
                    .map_err(|e| ConfigError(format!("cluster (--cluster): {e}")))?;
                if !members.contains_key(&node_id) {
                    return bad(format!(
                        "--cluster does not list this node's id {node_id} (its Raft address)"
                    ));
                }
                let secret = s.cluster_secret.clone().unwrap_or_default();
                if secret.len() < 16 {
                    return bad("cluster mode needs KYRODB_CLUSTER_SECRET (--cluster-secret) of at least 16 characters, the same on every node".into());
                }
                let heartbeat_ms = s.raft_heartbeat_ms.unwrap_or(defaults::RAFT_HEARTBEAT_MS);
                if !(10..=10_000).contains(&heartbeat_ms) {
                    return bad(format!(
                        "raft_heartbeat_ms {heartbeat_ms} is outside 10..=10000"
                    ));
                }
                let timeout_ms = s.cluster_timeout_ms.unwrap_or(defaults::CLUSTER_TIMEOUT_MS);
                if !(100..=600_000).contains(&timeout_ms) {
                    return bad(format!(
                        "cluster_timeout_ms {timeout_ms} is outside 100..=600000"
                    ));
                }
                let listen = match &s.raft_listen {
                    Some(a) => a
                        .parse()
                        .map_err(|_| ConfigError(format!("raft_listen {a:?} must be IP:PORT")))?,
                    None => members[&node_id]
                        .raft
                        .parse()
                        .expect("checked by parse_members"),
                };
                let snapshot_entries = s
                    .raft_snapshot_entries
                    .unwrap_or(defaults::RAFT_SNAPSHOT_ENTRIES);
                if !(10..=100_000_000).contains(&snapshot_entries) {
                    return bad(format!(
                        "raft_snapshot_entries {snapshot_entries} is outside 10..=100000000"
                    ));
                }
                let tls = match (&s.raft_tls_cert, &s.raft_tls_key, &s.raft_tls_ca) {
                    (None, None, None) => None,
                    (Some(cert), Some(key), Some(ca)) => Some((
                        crate::tls::CertFiles {
                            cert: cert.clone(),
                            key: key.clone(),
                        },
                        ca.clone(),
                    )),
                    _ => {
                        return bad(
                            "raft_tls_cert, raft_tls_key and raft_tls_ca go together: set all three or none"
                                .into(),
                        )
                    }
                };
                Some(ClusterSettings {
                    tls,
                    snapshot_entries,
                    listen,
                    node_id,
                    members,
                    secret,
                    heartbeat_ms,
                    timeout: Duration::from_millis(timeout_ms),
                })
            }
        };
        let tls = match (s.tls_cert, s.tls_key) {
            (None, None) => None,
            (Some(cert), Some(key)) => Some(crate::tls::CertFiles { cert, key }),
            _ => return bad("tls_cert and tls_key go together: set both or neither".into()),
        };
        let mut backup_dirs = Vec::new();
        for d in s.backup_dirs.unwrap_or_default() {
            let d = d.trim();
            if d.is_empty() {
                continue;
            }
            let spec = kyrodb_backup::TargetSpec::parse(d)
                .map_err(|e| ConfigError(format!("backup_dirs: {e}")))?;
            if matches!(&spec, kyrodb_backup::TargetSpec::Dir(p) if !p.is_absolute()) {
                return bad(format!("backup_dirs: {d:?} is not an absolute path"));
            }
            backup_dirs.push(spec);
        }
        Ok(Config {
            backup_dirs,
            tls,
            cluster,
            data_dir,
            host,
            port,
            api_keys,
            public_metrics: s.public_metrics.unwrap_or(false),
            rate_limit,
            trusted_proxies: s.trusted_proxies.unwrap_or_default(),
            cors_origins,
            allowed_hosts: s
                .allowed_hosts
                .unwrap_or_default()
                .into_iter()
                .map(|h| h.trim().to_ascii_lowercase())
                .filter(|h| !h.is_empty())
                .collect(),
            body_bytes_max,
            request_timeout: Duration::from_millis(request_timeout_ms),
            header_read_timeout: Duration::from_millis(header_read_timeout_ms),
            connections_max,
            write_stall_timeout: Duration::from_millis(write_stall_timeout_ms),
            shutdown_drain_max: Duration::from_millis(
                s.shutdown_drain_ms_max
                    .unwrap_or(defaults::SHUTDOWN_DRAIN_MS_MAX),
            ),
            warm_on_start: s.warm_on_start.unwrap_or(false),
            disable_http_log: s.disable_http_log.unwrap_or(false),
            log: s.log.unwrap_or_else(|| defaults::LOG.to_owned()),
            fsync,
            value_bytes_max: s.value_bytes_max.unwrap_or(defaults::VALUE_BYTES_MAX),
            batch_keys_max,
            scan_limit_max,
            response_bytes_max,
            worker_threads: s.worker_threads.unwrap_or(defaults::WORKER_THREADS),
            vector_bytes_budget,
            documents_per_batch_max,
            index_threads,
            model_dir,
            embed_threads,
            embed_queue_max,
            reembed_docs_per_s: s.reembed_docs_per_s.unwrap_or(defaults::REEMBED_DOCS_PER_S),
        })
    }

    /// The engine options this configuration implies.
    /// The engine's options. In cluster mode the engine does not fsync: the Raft log is the
    /// durable log (docs/design/cluster.md, "One log, fsynced once per node").
    pub fn storage_options(&self) -> kyrodb_storage::Options {
        kyrodb_storage::Options {
            fsync: if self.cluster.is_some() {
                FsyncPolicy::Never
            } else {
                self.fsync
            },
            value_bytes_max: self.value_bytes_max,
            batch_bytes_max: kyrodb_storage::Options::default()
                .batch_bytes_max
                .max(self.value_bytes_max + 64),
            ..Default::default()
        }
    }

    /// The collections layer's options this configuration implies.
    pub fn search_options(&self) -> kyrodb_search::SearchOptions {
        kyrodb_search::SearchOptions {
            vector_bytes_budget: self.vector_bytes_budget,
            documents_per_batch_max: self.documents_per_batch_max,
            index_threads: self.index_threads,
            reembed_docs_per_s: self.reembed_docs_per_s,
            ..Default::default()
        }
    }
}

/// An IP address as is, or a host name resolved (`localhost` → 127.0.0.1); the error names the setting.
fn resolve_host(host: &str, port: u16) -> Result<IpAddr, ConfigError> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(ip);
    }
    use std::net::ToSocketAddrs as _;
    let mut addrs = (host, port).to_socket_addrs().map_err(|e| {
        ConfigError(format!(
            "host (--host / KYRODB_HOST) {host:?} is neither an IP address nor a name that resolves: {e}"
        ))
    })?;
    let all: Vec<_> = addrs.by_ref().collect();
    // Prefer IPv4 (what `localhost` means to most clients), else the first address.
    all.iter()
        .find(|a| a.is_ipv4())
        .or(all.first())
        .map(|a| a.ip())
        .ok_or_else(|| {
            ConfigError(format!(
                "host (--host / KYRODB_HOST) {host:?} resolves to no address"
            ))
        })
}

#[cfg(test)]
mod tests {

    /// Each default is written once, as a constant: the `[default: …]` that `serve --help` shows
    /// (from the doc comments) must say the constant's value, and every numeric default shown must
    /// have its constant here.
    #[test]
    fn help_shows_each_default_from_its_constant() {
        use clap::Args as _;
        let search = kyrodb_search::SearchOptions::default();
        let want: Vec<(&str, String)> = vec![
            ("data-dir", defaults::DATA_DIR.to_owned()),
            ("host", defaults::HOST.to_owned()),
            ("port", defaults::PORT.to_string()),
            ("body-bytes-max", defaults::BODY_BYTES_MAX.to_string()),
            (
                "request-timeout-ms",
                defaults::REQUEST_TIMEOUT_MS.to_string(),
            ),
            (
                "header-read-timeout-ms",
                defaults::HEADER_READ_TIMEOUT_MS.to_string(),
            ),
            ("connections-max", defaults::CONNECTIONS_MAX.to_string()),
            (
                "write-stall-timeout-ms",
                defaults::WRITE_STALL_TIMEOUT_MS.to_string(),
            ),
            (
                "shutdown-drain-ms-max",
                defaults::SHUTDOWN_DRAIN_MS_MAX.to_string(),
            ),
            ("log", defaults::LOG.to_owned()),
            ("fsync", defaults::FSYNC.to_owned()),
            ("value-bytes-max", defaults::VALUE_BYTES_MAX.to_string()),
            ("batch-keys-max", defaults::BATCH_KEYS_MAX.to_string()),
            ("scan-limit-max", defaults::SCAN_LIMIT_MAX.to_string()),
            (
                "response-bytes-max",
                defaults::RESPONSE_BYTES_MAX.to_string(),
            ),
            ("worker-threads", defaults::WORKER_THREADS.to_string()),
            (
                "vector-bytes-budget",
                search.vector_bytes_budget.to_string(),
            ),
            (
                "documents-per-batch-max",
                search.documents_per_batch_max.to_string(),
            ),
            (
                "index-threads",
                kyrodb_search::default_index_threads().to_string(),
            ),
            ("embed-queue-max", defaults::EMBED_QUEUE_MAX.to_string()),
            (
                "reembed-docs-per-s",
                defaults::REEMBED_DOCS_PER_S.to_string(),
            ),
            ("raft-heartbeat-ms", defaults::RAFT_HEARTBEAT_MS.to_string()),
            (
                "cluster-timeout-ms",
                defaults::CLUSTER_TIMEOUT_MS.to_string(),
            ),
            (
                "raft-snapshot-entries",
                defaults::RAFT_SNAPSHOT_ENTRIES.to_string(),
            ),
        ];
        let cmd = Settings::augment_args(clap::Command::new("serve"));
        let mut shown = std::collections::BTreeMap::new();
        for a in cmd.get_arguments() {
            let help = a
                .get_long_help()
                .or(a.get_help())
                .map(|h| h.to_string())
                .unwrap_or_default();
            if let (Some(long), Some(at)) = (a.get_long(), help.rfind("[default: ")) {
                let value = help[at + 10..].split(']').next().unwrap_or("").to_owned();
                shown.insert(long.to_owned(), value);
            }
        }
        for (long, value) in &want {
            assert_eq!(
                shown.get(*long),
                Some(value),
                "--{long}: the help's [default: …] and the constant differ"
            );
        }
        for (long, value) in &shown {
            let numeric = value.bytes().all(|b| b.is_ascii_digit()) && !value.is_empty();
            assert!(
                !numeric || want.iter().any(|(l, _)| l == long),
                "--{long} shows [default: {value}] without a constant in this test"
            );
        }
    }
    use super::*;

    #[test]
    fn higher_layer_wins_and_unset_fields_fall_through() {
        let flags = Settings {
            port: Some(1),
            ..Default::default()
        };
        let env = Settings {
            port: Some(2),
            rate_limit_per_sec: Some(5),
            ..Default::default()
        };
        let file = Settings::from_toml("port = 3\nrate_limit_per_sec = 9\nwarm_on_start = true\n")
            .unwrap();
        let c = Config::resolve(flags.over(env.over(file))).unwrap();
        assert_eq!(c.port, 1);
        assert_eq!(
            c.rate_limit,
            Some(RateLimit {
                per_sec: 5,
                burst: 5
            })
        );
        assert!(c.warm_on_start);
        assert_eq!(c.data_dir, PathBuf::from(defaults::DATA_DIR));
    }

    #[test]
    fn cluster_mode_is_set_from_the_config_file_too() {
        let file = Settings::from_toml(
            "node_id = 2\ncluster = \"1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003\"\n\
             cluster_secret = \"0123456789abcdef\"\nraft_heartbeat_ms = 50\n",
        )
        .unwrap();
        let c = Config::resolve(file).unwrap();
        let cl = c.cluster.as_ref().expect("cluster mode");
        assert_eq!(cl.node_id, 2);
        assert_eq!(cl.raft_addr().to_string(), "127.0.0.1:7002");
        assert_eq!(cl.heartbeat_ms, 50);
        assert_eq!(c.storage_options().fsync, FsyncPolicy::Never);
        // A short secret, or a node id missing from the list, is refused.
        for bad in [
            "node_id = 2\ncluster = \"2=127.0.0.1:7002\"\ncluster_secret = \"short\"\n",
            "node_id = 4\ncluster = \"2=127.0.0.1:7002\"\ncluster_secret = \"0123456789abcdef\"\n",
        ] {
            assert!(
                Config::resolve(Settings::from_toml(bad).unwrap()).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn unknown_file_keys_and_bad_values_are_refused() {
        assert!(Settings::from_toml("prot = 3").is_err());
        assert!(Config::resolve(Settings {
            fsync: Some("sometimes".into()),
            ..Default::default()
        })
        .is_err());
        assert!(Config::resolve(Settings {
            api_keys: Some("root:x".into()),
            ..Default::default()
        })
        .is_err());
        assert!(Config::resolve(Settings {
            body_bytes_max: Some(10),
            ..Default::default()
        })
        .is_err());
    }

    #[test]
    fn api_keys_set_but_empty_refuse_to_start() {
        for text in ["", " , ", ",", "  "] {
            let e = Config::resolve(Settings {
                api_keys: Some(text.into()),
                ..Default::default()
            })
            .unwrap_err();
            assert!(e.0.contains("KYRODB_API_KEYS"), "{text:?}: {e}");
        }
        let e = Config::resolve(Settings {
            api_keys: Some("admin:short".into()),
            ..Default::default()
        })
        .unwrap_err();
        assert!(e.0.contains("at least 8"), "{e}");
    }

    #[test]
    fn host_names_resolve_and_bad_ones_name_the_setting() {
        let c = Config::resolve(Settings {
            host: Some("localhost".into()),
            ..Default::default()
        })
        .unwrap();
        assert!(c.host.is_loopback(), "{}", c.host);
        let e = Config::resolve(Settings {
            host: Some("no such host.invalid".into()),
            ..Default::default()
        })
        .unwrap_err();
        assert!(e.0.contains("KYRODB_HOST"), "{e}");
    }

    #[test]
    fn defaults_have_no_auth_and_no_rate_limit() {
        let c = Config::default();
        assert!(c.api_keys.is_empty() && c.rate_limit.is_none() && c.cors_origins.is_empty());
        assert_eq!((c.port, c.fsync), (8080, FsyncPolicy::Always));
    }
}
