//! `kyrodb serve`: flags and env (through clap) over the TOML file over defaults.

use std::path::PathBuf;

use clap::Args;
use kyrodb_server::{Config, Settings};

pub(crate) const SERVE_AFTER_HELP: &str = "\
Every setting can come from a flag, an environment variable, or the TOML config file (same names as the
flags with underscores, e.g. `port = 8080`, `api_keys = \"admin:...\"`, `cors_origins = [\"*\"]`).
Precedence: flags > environment > config file > defaults.

With no configuration at all: data in ./kyrodb-data, listening on 127.0.0.1:8080, no auth, no rate limit.
Auth: KYRODB_API_KEYS=\"admin:<token>,write:<token>,read:<token>\"; read < write < admin; tokens are at least 8
visible ASCII characters. Once any token is set, every route but /health and /ready (and /metrics with
KYRODB_PUBLIC_METRICS=true) needs `Authorization: Bearer <token>` (401 without, 403 with too weak a role).
A KYRODB_API_KEYS that is set but holds no key, or cannot be parsed, stops the server at start.
The startup log line says whether auth and the rate limit are on.
Shutdown: SIGINT/SIGTERM stop accepting, drain in-flight requests, flush the WAL, close files.";

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// TOML config file [default: ./kyrodb.toml when it exists]
    #[arg(long, env = "KYRODB_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Every server setting (the one list lives in `kyrodb_server::Settings`).
    #[command(flatten)]
    pub settings: Settings,
}

impl ServeArgs {
    /// Flags and env as one layer, over the config file, resolved.
    pub(crate) fn config(&self) -> Result<Config, String> {
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
        Config::resolve(self.settings.clone().over(file.unwrap_or_default()))
            .map_err(|e| e.to_string())
    }
}

fn read_file(p: &std::path::Path) -> Result<Settings, String> {
    let text =
        std::fs::read_to_string(p).map_err(|e| format!("config file {}: {e}", p.display()))?;
    Settings::from_toml(&text).map_err(|e| format!("{}: {e}", p.display()))
}

/// Runs the server on a multi-threaded runtime until SIGINT/SIGTERM.
pub(crate) fn serve(args: &ServeArgs) -> Result<(), String> {
    let cfg = args.config()?;
    // openraft logs every failed replication attempt (WARN and ERROR, many per second while a
    // peer is down); the cluster crate logs role and leader changes itself. Its own lines come
    // back when the filter names it (e.g. RUST_LOG=info,openraft=warn).
    let log = if cfg.log.contains("openraft") {
        cfg.log.clone()
    } else {
        format!("{},openraft=off", cfg.log)
    };
    let filter = tracing_subscriber::EnvFilter::try_new(&log)
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
    rt.block_on(async {
        // Inside the runtime, before the listener exists: signal handlers are in place by the
        // time "listening" is printed.
        let shutdown = kyrodb_server::shutdown_signal();
        let scheme = if cfg.tls.is_some() { "https" } else { "http" };
        kyrodb_server::run(cfg, shutdown, move |addr| {
            eprintln!("kyrodb listening on {scheme}://{addr}");
        })
        .await
    })
    .map_err(|e| e.to_string())
}
