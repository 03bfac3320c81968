//! `kyrodb serve`: flags and env (through clap) over the TOML file over defaults.

use std::{net::IpAddr, path::PathBuf};

use clap::{builder::BoolishValueParser, Args};
use kyrodb_server::{Config, Settings};

pub const SERVE_AFTER_HELP: &str = "\
Every setting can come from a flag, an environment variable, or the TOML config file (same names as the
flags with underscores, e.g. `port = 8080`, `api_keys = \"admin:...\"`, `cors_origins = [\"*\"]`).
Precedence: flags > environment > config file > defaults.

With no configuration at all: data in ./kyrodb-data, listening on 127.0.0.1:8080, no auth, no rate limit.
Auth: KYRODB_API_KEYS=\"admin:<token>,write:<token>,read:<token>\"; read < write < admin; once any token is
set every route but /health needs `Authorization: Bearer <token>` (401 without, 403 with too weak a role).
Shutdown: SIGINT/SIGTERM stop accepting, drain in-flight requests, flush the WAL, close files.";

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// TOML config file [default: ./kyrodb.toml when it exists]
    #[arg(long, env = "KYRODB_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Data directory [default: ./kyrodb-data]
    #[arg(long, env = "KYRODB_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address to listen on; 0.0.0.0 for every interface [default: 127.0.0.1]
    #[arg(long, env = "KYRODB_HOST")]
    pub host: Option<IpAddr>,
    /// Port to listen on [default: 8080]
    #[arg(long, short, env = "KYRODB_PORT")]
    pub port: Option<u16>,
    /// Bearer tokens with roles: "admin:<token>,write:<token>,read:<token>" [default: none, open]
    #[arg(
        long,
        env = "KYRODB_API_KEYS",
        hide_env_values = true,
        value_name = "ROLE:TOKEN,..."
    )]
    pub api_keys: Option<String>,
    /// Per-client-IP requests per second; 0 turns rate limiting off [default: off]
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
    /// Largest request body in bytes (413 beyond) [default: 8388608]
    #[arg(long, env = "KYRODB_BODY_BYTES_MAX")]
    pub body_bytes_max: Option<usize>,
    /// Requests taking longer get 408 [default: 30000]
    #[arg(long, env = "KYRODB_REQUEST_TIMEOUT_MS")]
    pub request_timeout_ms: Option<u64>,
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
    /// Most keys in one batch_get / batch_put [default: 10000]
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
}

impl ServeArgs {
    /// Flags and env as one layer, over the config file, resolved.
    pub fn config(&self) -> Result<Config, String> {
        let file = match &self.config {
            Some(p) => Some(read_file(p)?),
            None => {
                let default = PathBuf::from("kyrodb.toml");
                if default.exists() {
                    Some(read_file(&default)?)
                } else {
                    None
                }
            }
        };
        let top = Settings {
            data_dir: self.data_dir.clone(),
            host: self.host,
            port: self.port,
            api_keys: self.api_keys.clone(),
            rate_limit_per_sec: self.rate_limit_per_sec,
            rate_limit_burst: self.rate_limit_burst,
            trusted_proxies: self.trusted_proxies.clone(),
            cors_origins: self.cors_origins.clone(),
            body_bytes_max: self.body_bytes_max,
            request_timeout_ms: self.request_timeout_ms,
            shutdown_drain_ms_max: self.shutdown_drain_ms_max,
            warm_on_start: self.warm_on_start,
            disable_http_log: self.disable_http_log,
            log: self.log.clone(),
            fsync: self.fsync.clone(),
            value_bytes_max: self.value_bytes_max,
            batch_keys_max: self.batch_keys_max,
            scan_limit_max: self.scan_limit_max,
            response_bytes_max: self.response_bytes_max,
            worker_threads: self.worker_threads,
        };
        Config::resolve(top.over(file.unwrap_or_default())).map_err(|e| e.to_string())
    }
}

fn read_file(p: &std::path::Path) -> Result<Settings, String> {
    let text =
        std::fs::read_to_string(p).map_err(|e| format!("config file {}: {e}", p.display()))?;
    Settings::from_toml(&text).map_err(|e| format!("{}: {e}", p.display()))
}

/// Runs the server on a multi-threaded runtime until SIGINT/SIGTERM.
pub fn serve(args: &ServeArgs) -> Result<(), String> {
    let cfg = args.config()?;
    let filter = tracing_subscriber::EnvFilter::try_new(&cfg.log)
        .map_err(|e| format!("log filter {:?}: {e}", cfg.log))?;
    use std::io::IsTerminal as _;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if cfg.worker_threads > 0 {
        rt.worker_threads(cfg.worker_threads);
    }
    let rt = rt
        .enable_all()
        // Writers park on the blocking pool until their group commit; bound how many.
        .max_blocking_threads(256)
        .thread_name("kyrodb")
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    rt.block_on(kyrodb_server::run(
        cfg,
        kyrodb_server::shutdown_signal(),
        |addr| {
            eprintln!("kyrodb listening on http://{addr}");
        },
    ))
    .map_err(|e| e.to_string())
}
