//! KyroDB's HTTP server: the v1 routes over the storage engine, bearer auth with roles, per-IP rate
//! limits, CORS, Prometheus metrics and an OpenAPI document. No storage logic lives here: handlers
//! validate input, call [`kyrodb_storage::Db`], and map its errors to HTTP (only in [`error`]).
#![forbid(unsafe_code)]
// No `unwrap` outside tests: `expect` names the invariant that makes it safe.
#![deny(clippy::unwrap_used)]
#![warn(missing_docs)]

pub mod app;
pub mod audit;
pub mod auth;
pub mod browser;
pub mod config;
pub mod conn;
pub mod embed;
pub mod error;
pub mod fdlimit;
pub mod keys;
pub mod layers;
pub mod metrics;
pub mod openapi;
pub mod ratelimit;
pub mod role;
pub mod routes;
pub mod serve;
pub mod tls;

pub use config::{Config, ConfigError, Settings};
pub use serve::{run, shutdown_signal, ServeError};
