//! Per-client-IP rate limiting (governor's keyed GCRA), off unless configured.
//!
//! The client IP is the socket's peer address. Only when that peer is a configured trusted proxy is
//! `X-Forwarded-For` read, right to left, skipping trusted proxies: the first other address is the
//! client. A client cannot spoof its way out of its bucket unless it *is* a trusted proxy.
//! Memory stays bounded: a sweeper drops the state of clients whose bucket is full again
//! (`retain_recent`) every [`SWEEP_INTERVAL`].

use crate::error::ErrorCode;
use std::{
    net::{IpAddr, SocketAddr},
    num::NonZeroU32,
    sync::Arc,
    time::Duration,
};

use axum::{
    extract::{ConnectInfo, Request, State},
    http::HeaderMap,
    middleware::Next,
    response::{IntoResponse, Response},
};
use governor::{
    clock::Clock, clock::DefaultClock, state::keyed::DefaultKeyedStateStore, Quota, RateLimiter,
};

use crate::{config::RateLimit, error::ApiError};

/// How often stale per-IP state is swept.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(10);

type Keyed = RateLimiter<IpAddr, DefaultKeyedStateStore<IpAddr>, DefaultClock>;

/// The limiter and the proxies whose forwarding headers are believed.
#[derive(Clone)]
pub struct Limiter {
    inner: Arc<Keyed>,
    clock: DefaultClock,
    trusted_proxies: Arc<Vec<IpAddr>>,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter")
            .field("clients", &self.inner.len())
            .finish()
    }
}

impl Limiter {
    /// A limiter allowing each client IP `limit`, reading `X-Forwarded-For` only from
    /// `trusted_proxies`.
    pub fn new(limit: RateLimit, trusted_proxies: Vec<IpAddr>) -> Self {
        let per_sec = NonZeroU32::new(limit.per_sec.max(1)).expect("positive");
        let burst = NonZeroU32::new(limit.burst.max(1)).expect("positive");
        let quota = Quota::per_second(per_sec).allow_burst(burst);
        Self {
            inner: Arc::new(RateLimiter::keyed(quota)),
            clock: DefaultClock::default(),
            trusted_proxies: Arc::new(trusted_proxies),
        }
    }

    /// `Ok` to go ahead, or the whole seconds to wait.
    pub fn check(&self, ip: IpAddr) -> Result<(), u64> {
        self.inner.check_key(&ip).map_err(|not_until| {
            let wait = not_until.wait_time_from(self.clock.now());
            wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
        })
    }

    /// Drops state for clients that have been quiet long enough to be indistinguishable from new ones.
    pub fn sweep(&self) -> usize {
        self.inner.retain_recent();
        self.inner.shrink_to_fit();
        self.inner.len()
    }

    /// The client address of a request that came from `peer`.
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        client_ip(peer, headers, &self.trusted_proxies)
    }
}

/// See the module comment.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpAddr]) -> IpAddr {
    if !trusted.contains(&peer) {
        return peer;
    }
    let mut client = peer;
    for value in headers.get_all("x-forwarded-for").iter().rev() {
        let Ok(text) = value.to_str() else {
            return client;
        };
        for part in text.rsplit(',') {
            let Ok(ip) = part.trim().parse::<IpAddr>() else {
                return client;
            };
            client = ip;
            if !trusted.contains(&ip) {
                return ip;
            }
        }
    }
    client
}

/// Spawns the sweeper; it ends when the limiter is the last handle left.
pub fn spawn_sweeper(limiter: &Limiter) {
    let weak = Arc::downgrade(&limiter.inner);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(SWEEP_INTERVAL);
        loop {
            tick.tick().await;
            let Some(inner) = weak.upgrade() else { return };
            inner.retain_recent();
            inner.shrink_to_fit();
            metrics::gauge!(crate::metrics::HTTP_RATE_LIMIT_CLIENTS.name).set(inner.len() as f64);
        }
    });
}

/// Middleware: passes the request on, or answers 429 with `Retry-After` when its client IP is over
/// the limit.
pub async fn rate_limit(State(limiter): State<Limiter>, req: Request, next: Next) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::from([127, 0, 0, 1]), |c| c.0.ip());
    let ip = limiter.client_ip(peer, req.headers());
    match limiter.check(ip) {
        Ok(()) => next.run(req).await,
        Err(wait_s) => {
            metrics::counter!(crate::metrics::HTTP_RATE_LIMITED_TOTAL.name).increment(1);
            ApiError::of(
                ErrorCode::RateLimited,
                format!("rate limit exceeded for {ip}"),
            )
            .retry_after(wait_s)
            .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refusal_with_a_wait() {
        let l = Limiter::new(
            RateLimit {
                per_sec: 1,
                burst: 3,
            },
            vec![],
        );
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        for _ in 0..3 {
            assert!(l.check(ip).is_ok());
        }
        let wait = l.check(ip).unwrap_err();
        assert!((1..=1).contains(&wait), "{wait}");
        assert!(
            l.check("10.0.0.2".parse().unwrap()).is_ok(),
            "buckets are per IP"
        );
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "1.2.3.4, 10.0.0.9".parse().unwrap());
        let proxy: IpAddr = "10.0.0.9".parse().unwrap();
        let peer: IpAddr = "10.0.0.5".parse().unwrap();
        assert_eq!(
            client_ip(peer, &h, &[]),
            peer,
            "untrusted peer: header ignored"
        );
        assert_eq!(
            client_ip(peer, &h, &[peer, proxy]),
            "1.2.3.4".parse::<IpAddr>().unwrap()
        );
        h.insert("x-forwarded-for", "garbage".parse().unwrap());
        assert_eq!(client_ip(peer, &h, &[peer]), peer);
    }

    #[test]
    fn sweep_drops_quiet_clients() {
        let l = Limiter::new(
            RateLimit {
                per_sec: 1000,
                burst: 1,
            },
            vec![],
        );
        for i in 0..100u8 {
            let _ = l.check(IpAddr::from([10, 0, 0, i]));
        }
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(l.sweep(), 0);
    }
}
