//! Running the server: open the engine, bind, serve until a shutdown signal, drain, close the engine.

use std::{future::Future, net::SocketAddr, sync::atomic::Ordering, sync::Arc};

use kyrodb_storage::Db;
use tokio::net::TcpListener;

use crate::{
    app::{app, state},
    config::Config,
    conn::{self, ConnLimits},
    ratelimit::{spawn_sweeper, Limiter},
};

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The engine could not be opened.
    #[error("cannot open the database in {dir}: {source}")]
    Open {
        /// The data directory.
        dir: String,
        /// The engine's error.
        source: kyrodb_storage::Error,
    },
    /// The HTTP or the Raft port could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The bind's error.
        source: std::io::Error,
    },
    /// Any other I/O error.
    #[error("server error: {0}")]
    Io(#[from] std::io::Error),
    /// A blocking task or the server's task panicked or was cancelled.
    #[error("{0}")]
    Task(String),
    /// The collections (`/v2`) could not be loaded.
    #[error("cannot load collections: {0}")]
    Collections(String),
    /// Cluster mode could not start.
    #[error("cannot start cluster mode: {0}")]
    Cluster(#[from] kyrodb_cluster::StartError),
    /// The TLS setup failed: a certificate, key or CA file could not be used.
    #[error("TLS: {0}")]
    Tls(String),
}

/// The TLS sides, built once and kept across restarts in place.
#[derive(Clone, Default)]
struct Tls {
    /// The HTTP port's.
    http: Option<crate::tls::ServerTls>,
    /// The Raft port's (mutual) and the client side of calls to peers (presenting the same
    /// certificate, reloaded with it).
    raft: Option<(crate::tls::ServerTls, Arc<rustls::ClientConfig>)>,
}

impl Tls {
    fn load(cfg: &Config) -> Result<Tls, ServeError> {
        let http = match &cfg.tls {
            Some(files) => Some(
                crate::tls::server(files.clone(), None, &[b"h2", b"http/1.1"])
                    .map_err(ServeError::Tls)?,
            ),
            None => None,
        };
        let raft = match cfg.cluster.as_ref().and_then(|c| c.tls.as_ref()) {
            Some((files, ca)) => {
                let server = crate::tls::server(files.clone(), Some(ca), &[b"http/1.1"])
                    .map_err(|e| ServeError::Tls(format!("raft port: {e}")))?;
                let client = crate::tls::peer_client(ca, server.certs.clone())
                    .map_err(|e| ServeError::Tls(format!("raft client: {e}")))?;
                Some((server, Arc::new(client)))
            }
            None => None,
        };
        Ok(Tls { http, raft })
    }

    /// On every SIGHUP, reloads the certificates from their files (a file that fails to load keeps
    /// the old certificate and is logged). Connections open meanwhile keep theirs.
    fn reload_on_sighup(&self) {
        let sides: Vec<(&'static str, Arc<crate::tls::Reloading>)> = self
            .http
            .iter()
            .map(|t| ("http", t.certs.clone()))
            .chain(self.raft.iter().map(|(t, _)| ("raft", t.certs.clone())))
            .collect();
        if sides.is_empty() {
            return;
        }
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let Ok(mut hup) = signal(SignalKind::hangup()) else {
                tracing::warn!("cannot listen for SIGHUP: certificates will not be reloaded");
                return;
            };
            tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    for (port, certs) in &sides {
                        match certs.reload() {
                            Ok(()) => tracing::info!(port, "SIGHUP: TLS certificate reloaded"),
                            Err(e) => {
                                tracing::error!(port, error = %e, "SIGHUP: TLS certificate not reloaded; the old one stays")
                            }
                        }
                    }
                }
            });
        }
    }
}

/// Opens the engine in `cfg.data_dir`, serves until `shutdown` resolves, then stops accepting, lets
/// in-flight requests finish (at most `cfg.shutdown_drain_max`), and closes the engine (flushing the
/// WAL). `on_listening` is told the bound address.
pub async fn run(
    cfg: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_listening: impl FnOnce(SocketAddr),
) -> Result<(), ServeError> {
    // Connections must never take the descriptors the engine needs for its files.
    let nofile = crate::fdlimit::raise_nofile_limit();
    // Certificates are checked before anything is bound or opened.
    let tls = Tls::load(&cfg)?;
    tls.reload_on_sighup();
    // Bind first: a port already taken must fail before the data directory is created or opened.
    let addr = SocketAddr::new(cfg.host, cfg.port);
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })?;
    let raft_listener = match &cfg.cluster {
        Some(c) => {
            let addr = c.raft_addr();
            Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|source| ServeError::Bind { addr, source })?
                    .into_std()?,
            )
        }
        None => None,
    };
    // The listeners stay bound across restarts in place (cluster mode: installing a snapshot);
    // each run serves a duplicate of them.
    let listener = listener.into_std()?;
    let mut shutdown: std::pin::Pin<Box<dyn Future<Output = ()> + Send>> = Box::pin(shutdown);
    let mut on_listening = Some(on_listening);
    loop {
        let l = TcpListener::from_std(listener.try_clone()?)?;
        let rl = match &raft_listener {
            Some(r) => Some(TcpListener::from_std(r.try_clone()?)?),
            None => None,
        };
        let notify = |a: SocketAddr| {
            if let Some(f) = on_listening.take() {
                f(a)
            }
        };
        match run_once(&cfg, &tls, nofile, l, rl, shutdown.as_mut(), notify).await? {
            Ended::Stopped => return Ok(()),
            Ended::Restart => tracing::info!("restarting in place to install a snapshot"),
        }
    }
}

enum Ended {
    Stopped,
    Restart,
}

/// One life of the server over its data directory, until shutdown or a restart request.
async fn run_once(
    cfg: &Config,
    tls: &Tls,
    nofile: Option<u64>,
    listener: TcpListener,
    raft_listener: Option<TcpListener>,
    shutdown: std::pin::Pin<&mut (dyn Future<Output = ()> + Send)>,
    on_listening: impl FnOnce(SocketAddr),
) -> Result<Ended, ServeError> {
    let local = listener.local_addr()?;
    if cfg.cluster.is_some() {
        let dir = cfg.data_dir.clone();
        tokio::task::spawn_blocking(move || kyrodb_cluster::prepare_data_dir(&dir))
            .await
            .map_err(|e| ServeError::Task(e.to_string()))?
            .map_err(ServeError::Cluster)?;
    }
    let opts = cfg.storage_options();
    let dir = cfg.data_dir.clone();
    let db = tokio::task::spawn_blocking(move || Db::open(&dir, opts))
        .await
        .map_err(|e| ServeError::Task(e.to_string()))?
        .map_err(|source| ServeError::Open {
            dir: cfg.data_dir.display().to_string(),
            source,
        })?;
    let db = Arc::new(db);
    if cfg.warm_on_start {
        let w = db.warm();
        tracing::info!(
            bytes = w.bytes,
            pages = w.pages_touched,
            "warmed snapshot files (KYRODB_WARM_ON_START)"
        );
    }

    let budget = crate::fdlimit::budget(nofile, cfg.connections_max, cfg.cluster.is_some());
    if budget.http < cfg.connections_max {
        tracing::info!(
            open_file_limit = nofile,
            connections_max = budget.http,
            raft_connections_max = budget.raft,
            files_reserve = budget.files,
            "connections_max lowered to fit the open-file limit (raise `ulimit -n` for more)"
        );
    }
    let cluster = match (&cfg.cluster, raft_listener) {
        (Some(c), Some(l)) => {
            let mut ccfg = c.config(&cfg.data_dir);
            ccfg.tls = tls.raft.as_ref().map(|(_, client)| client.clone());
            let cluster = kyrodb_cluster::Cluster::start(
                ccfg,
                db.clone(),
                &[kyrodb_search::CATALOG_KEYSPACE],
            )
            .await
            .map_err(ServeError::Cluster)?;
            let limits = ConnLimits {
                header_read_timeout: cfg.header_read_timeout,
                connections_max: budget.raft,
                write_stall_timeout: cfg.write_stall_timeout,
                port: "raft",
            };
            // Until the node shuts down; then connections without a request in progress close
            // and the rest finish theirs.
            let acceptor = tls.raft.as_ref().map(|(t, _)| t.acceptor.clone());
            let port = conn::serve(
                l,
                cluster.raft_router(),
                limits,
                acceptor,
                cluster.port_stop(),
            );
            tokio::spawn(async move {
                let mut conns = port.await;
                conn::drain(&mut conns).await;
            });
            Some(cluster)
        }
        _ => None,
    };
    if let Some(c) = &cluster {
        tracing::info!(node_id = c.node_id(), raft = %cfg.cluster.as_ref().map(|c| c.raft_addr().to_string()).unwrap_or_default(), "cluster mode: every write goes through Raft; run `kyrodb cluster init` on one node of a new cluster");
    }
    let search_opts = cfg.search_options();
    let db2 = db.clone();
    let collections =
        tokio::task::spawn_blocking(move || kyrodb_search::Collections::open(db2, search_opts))
            .await
            .map_err(|e| ServeError::Task(e.to_string()))?
            .map_err(|e| ServeError::Collections(e.to_string()))?;
    let collections = Arc::new(collections);
    let (model_dir, threads, queue_max) = (
        cfg.model_dir.clone(),
        cfg.embed_threads,
        cfg.embed_queue_max,
    );
    let embed = tokio::task::spawn_blocking(move || {
        crate::embed::EmbedState::load(&model_dir, threads, queue_max)
    })
    .await
    .map_err(|e| ServeError::Task(e.to_string()))?;
    embed.resume_jobs(&collections);
    let shared = state(
        db.clone(),
        collections.clone(),
        Arc::new(embed),
        cfg,
        cluster.clone(),
    );
    crate::metrics::spawn_upkeep(shared.metrics.clone());
    if let Some(c) = &cluster {
        c.register_metrics();
        crate::metrics::export_cluster_counters();
    }
    let limiter = cfg
        .rate_limit
        .map(|rl| Limiter::new(rl, cfg.trusted_proxies.clone()));
    if let Some(l) = &limiter {
        spawn_sweeper(l);
    }
    let router = app(shared.clone(), cfg, limiter);

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let limits = ConnLimits {
        header_read_timeout: cfg.header_read_timeout,
        connections_max: budget.http,
        write_stall_timeout: cfg.write_stall_timeout,
        port: "http",
    };
    let acceptor = tls.http.as_ref().map(|t| t.acceptor.clone());
    let mut server = tokio::spawn(conn::serve(listener, router, limits, acceptor, stop_rx));
    tracing::info!(
        %local,
        data_dir = %cfg.data_dir.display(),
        tls = cfg.tls.is_some(),
        auth = if cfg.api_keys.is_empty() { "off (no KYRODB_API_KEYS): every route is open" } else { "on" },
        rate_limit = %cfg.rate_limit.map_or("off".to_owned(), |r| format!("{}/s per client IP, burst {}", r.per_sec, r.burst)),
        public_metrics = cfg.public_metrics,
        "kyrodb listening"
    );
    on_listening(local);

    let restart = {
        let c = cluster.clone();
        async move {
            match c {
                Some(c) => c.restart_requested().await,
                None => std::future::pending().await,
            }
        }
    };
    let ended = tokio::select! {
        r = &mut server => {
            // The accept loop ended on its own (it only does when told to stop). Close all the same.
            close(db, collections, cluster).await;
            return r.map(|_| Ended::Stopped).map_err(|e| ServeError::Task(e.to_string()));
        }
        () = shutdown => Ended::Stopped,
        () = restart => Ended::Restart,
    };
    tracing::info!("shutdown: no new connections; closing idle ones; draining in-flight requests");
    shared.shutting_down.store(true, Ordering::Release);
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(cfg.shutdown_drain_max, async {
        let mut conns = (&mut server)
            .await
            .map_err(|e| ServeError::Task(e.to_string()))?;
        conn::drain(&mut conns).await;
        Ok::<_, ServeError>(())
    })
    .await;
    match drained {
        Ok(r) => r?,
        Err(_) => {
            tracing::warn!(
                drain_ms_max = cfg.shutdown_drain_max.as_millis() as u64,
                "drain took too long; closing connections"
            );
            server.abort();
        }
    }
    shared.embed.close();
    close(db, collections, cluster).await;
    tracing::info!("shutdown complete");
    Ok(ended)
}

/// Flushes the WAL and stops background work. Writes still running on the blocking pool finish first
/// or get `Closed`; nothing acknowledged is lost.
async fn close(
    db: Arc<Db>,
    collections: Arc<kyrodb_search::Collections>,
    cluster: Option<Arc<kyrodb_cluster::Cluster>>,
) {
    if let Some(c) = cluster {
        c.shutdown().await;
    }
    let _ = tokio::task::spawn_blocking(move || {
        collections.close();
        db.close()
    })
    .await;
}

/// Resolves on SIGINT or SIGTERM.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    // The handlers are installed here, when this is called (inside the runtime, before the
    // listener is bound), not when the future is first polled: a SIGTERM that arrives right after
    // "listening" is printed must start a graceful shutdown, not kill the process by default.
    #[cfg(unix)]
    let (term, int) = {
        use tokio::signal::unix::{signal, SignalKind};
        (
            signal(SignalKind::terminate()).ok(),
            signal(SignalKind::interrupt()).ok(),
        )
    };
    async move {
        #[cfg(unix)]
        {
            let wait = |s: Option<tokio::signal::unix::Signal>| async move {
                match s {
                    Some(mut s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                () = wait(int) => tracing::info!("SIGINT received"),
                () = wait(term) => tracing::info!("SIGTERM received"),
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            tracing::info!("Ctrl-C received");
        }
    }
}
