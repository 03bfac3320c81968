//! Server configuration: one [`Settings`] layer per source, merged flags > env > file > defaults into a
//! resolved [`Config`]. The CLI turns flags and env (through clap) into one layer and the TOML file into
//! another; everything below is testable without a process.

use std::{net::IpAddr, path::PathBuf, str::FromStr, time::Duration};

use kyrodb_storage::FsyncPolicy;
use serde::Deserialize;

use crate::auth::{parse_api_keys, ApiKey};

/// One layer of settings; `None` means "not set here, ask the layer below".
/// The TOML file uses the same names (`port = 8080`, `api_keys = "admin:..."`, `cors_origins = ["*"]`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub data_dir: Option<PathBuf>,
    pub host: Option<IpAddr>,
    pub port: Option<u16>,
    /// `"admin:<token>,write:<token>,read:<token>"`.
    pub api_keys: Option<String>,
    /// Requests per second per client IP; 0 or unset turns rate limiting off.
    pub rate_limit_per_sec: Option<u32>,
    /// Requests a client may burst above the rate; defaults to the rate.
    pub rate_limit_burst: Option<u32>,
    /// Peers whose `X-Forwarded-For` is believed. Empty: the socket address is the client.
    pub trusted_proxies: Option<Vec<IpAddr>>,
    /// Origins allowed by CORS; `["*"]` for any. Empty: no CORS headers.
    pub cors_origins: Option<Vec<String>>,
    pub body_bytes_max: Option<usize>,
    pub request_timeout_ms: Option<u64>,
    pub shutdown_drain_ms_max: Option<u64>,
    pub warm_on_start: Option<bool>,
    pub disable_http_log: Option<bool>,
    /// A tracing filter like `RUST_LOG` (`info`, `kyrodb_server=debug`).
    pub log: Option<String>,
    /// `always`, `never` or `interval_ms:<N>`.
    pub fsync: Option<String>,
    pub value_bytes_max: Option<usize>,
    pub batch_keys_max: Option<usize>,
    pub scan_limit_max: Option<usize>,
    /// Value bytes one batch_get or scan answer may carry; a scan stops early (and pages), a batch_get
    /// over it is refused.
    pub response_bytes_max: Option<usize>,
    /// Async runtime threads serving HTTP; 0 or unset: one per CPU core.
    pub worker_threads: Option<usize>,
}

macro_rules! merge_fields {
    ($hi:ident, $lo:ident, $($f:ident),*) => { Settings { $($f: $hi.$f.or($lo.$f)),* } };
}

impl Settings {
    /// Parses a TOML config file's text.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError(format!("config file: {e}")))
    }

    /// This layer over `lower`: a field set here wins.
    pub fn over(self, lower: Settings) -> Settings {
        let (hi, lo) = (self, lower);
        merge_fields!(
            hi,
            lo,
            data_dir,
            host,
            port,
            api_keys,
            rate_limit_per_sec,
            rate_limit_burst,
            trusted_proxies,
            cors_origins,
            body_bytes_max,
            request_timeout_ms,
            shutdown_drain_ms_max,
            warm_on_start,
            disable_http_log,
            log,
            fsync,
            value_bytes_max,
            batch_keys_max,
            scan_limit_max,
            response_bytes_max,
            worker_threads
        )
    }
}

/// A configuration that cannot be used; the message names the setting.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// Per-IP rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub per_sec: u32,
    pub burst: u32,
}

/// The resolved configuration the server runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub host: IpAddr,
    pub port: u16,
    pub api_keys: Vec<ApiKey>,
    pub rate_limit: Option<RateLimit>,
    pub trusted_proxies: Vec<IpAddr>,
    pub cors_origins: Vec<String>,
    pub body_bytes_max: usize,
    pub request_timeout: Duration,
    pub shutdown_drain_max: Duration,
    pub warm_on_start: bool,
    pub disable_http_log: bool,
    pub log: String,
    pub fsync: FsyncPolicy,
    pub value_bytes_max: usize,
    pub batch_keys_max: usize,
    pub scan_limit_max: usize,
    pub response_bytes_max: usize,
    /// 0: one per CPU core.
    pub worker_threads: usize,
}

/// Defaults: everything works with no configuration at all.
pub mod defaults {
    pub const DATA_DIR: &str = "./kyrodb-data";
    pub const HOST: &str = "127.0.0.1";
    pub const PORT: u16 = 8080;
    /// Room for a 1 MiB value even when every byte is JSON-escaped, plus batches.
    pub const BODY_BYTES_MAX: usize = 8 << 20;
    pub const REQUEST_TIMEOUT_MS: u64 = 30_000;
    pub const SHUTDOWN_DRAIN_MS_MAX: u64 = 30_000;
    pub const LOG: &str = "info";
    pub const VALUE_BYTES_MAX: usize = 1 << 20;
    pub const BATCH_KEYS_MAX: usize = 10_000;
    pub const SCAN_LIMIT_MAX: usize = 10_000;
    /// Bounds what one answer holds in memory: 10,000 keys of 1 MiB would otherwise be 10 GB.
    pub const RESPONSE_BYTES_MAX: usize = 64 << 20;
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
            Some(text) => parse_api_keys(text).map_err(ConfigError)?,
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
            None => FsyncPolicy::Always,
        };
        let body_bytes_max = s.body_bytes_max.unwrap_or(defaults::BODY_BYTES_MAX);
        if body_bytes_max < 1024 {
            return bad(format!("body_bytes_max {body_bytes_max} is below 1024"));
        }
        let request_timeout_ms = s.request_timeout_ms.unwrap_or(defaults::REQUEST_TIMEOUT_MS);
        if request_timeout_ms == 0 {
            return bad("request_timeout_ms must be positive".into());
        }
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
        let cors_origins = s.cors_origins.unwrap_or_default();
        for o in &cors_origins {
            if o != "*" && axum::http::HeaderValue::from_str(o).is_err() {
                return bad(format!("cors origin {o:?} is not a valid header value"));
            }
        }
        Ok(Config {
            data_dir: s
                .data_dir
                .unwrap_or_else(|| PathBuf::from(defaults::DATA_DIR)),
            host: s
                .host
                .unwrap_or_else(|| defaults::HOST.parse().expect("valid default host")),
            port: s.port.unwrap_or(defaults::PORT),
            api_keys,
            rate_limit,
            trusted_proxies: s.trusted_proxies.unwrap_or_default(),
            cors_origins,
            body_bytes_max,
            request_timeout: Duration::from_millis(request_timeout_ms),
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
            worker_threads: s.worker_threads.unwrap_or(0),
        })
    }

    /// The engine options this configuration implies.
    pub fn storage_options(&self) -> kyrodb_storage::Options {
        kyrodb_storage::Options {
            fsync: self.fsync,
            value_bytes_max: self.value_bytes_max,
            batch_bytes_max: kyrodb_storage::Options::default()
                .batch_bytes_max
                .max(self.value_bytes_max + 64),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
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
    fn defaults_have_no_auth_and_no_rate_limit() {
        let c = Config::default();
        assert!(c.api_keys.is_empty() && c.rate_limit.is_none() && c.cors_origins.is_empty());
        assert_eq!((c.port, c.fsync), (8080, FsyncPolicy::Always));
    }
}
