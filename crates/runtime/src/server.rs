//! The probe (`/healthz`, `/readyz`) and metrics (`/metrics`) HTTP servers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// Readiness of the manager, flipped once it can serve (API reachable, CRDs installed).
#[derive(Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    /// Marks the manager ready.
    pub fn set_ready(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Whether the manager is ready.
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(ready): State<Readiness>) -> impl IntoResponse {
    if ready.is_ready() {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting")
    }
}

async fn metrics(State(m): State<Arc<Metrics>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        m.encode(),
    )
}

/// Binds the probe server; returns the bound address (useful with port 0 in tests).
pub async fn serve_probes(
    addr: SocketAddr,
    ready: Readiness,
    shutdown: CancellationToken,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(ready);
    serve(addr, app, shutdown).await
}

/// Binds the metrics server; returns the bound address.
pub async fn serve_metrics(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let app = Router::new().route("/metrics", get(self::metrics)).with_state(metrics);
    serve(addr, app, shutdown).await
}

/// Listens on `addr`. The IPv6 wildcard (`:PORT` on the command line) gets one dual-stack
/// socket, whatever `net.ipv6.bindv6only` says, so IPv4, IPv6 and dual-stack clusters' probes
/// and scrapes all reach it; on a host without IPv6 it falls back to the IPv4 wildcard.
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = |addr: SocketAddr| -> std::io::Result<TcpListener> {
        let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        if addr.is_ipv6() && addr.ip().is_unspecified() {
            s.set_only_v6(false)?;
        }
        s.set_reuse_address(true)?;
        s.set_nonblocking(true)?;
        s.bind(&addr.into())?;
        s.listen(1024)?;
        TcpListener::from_std(s.into())
    };
    match socket(addr) {
        Err(e) if addr.is_ipv6() && addr.ip().is_unspecified() => {
            let v4 = SocketAddr::from((std::net::Ipv4Addr::UNSPECIFIED, addr.port()));
            tracing::debug!(error = %e, %addr, "no IPv6 here; listening on IPv4 only");
            socket(v4)
        }
        r => r,
    }
}

async fn serve(
    addr: SocketAddr,
    app: Router,
    shutdown: CancellationToken,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = listen(addr)?;
    let bound = listener.local_addr()?;
    let handle = tokio::spawn(async move {
        let result = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
        if let Err(e) = result {
            tracing::error!(error = %e, %bound, "HTTP server failed");
        }
    });
    Ok((bound, handle))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(addr: SocketAddr, path: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn probes_follow_readiness() {
        let ready = Readiness::default();
        let stop = CancellationToken::new();
        let (addr, handle) = serve_probes("127.0.0.1:0".parse().unwrap(), ready.clone(), stop.clone())
            .await
            .unwrap();
        assert!(get(addr, "/healthz").await.starts_with("HTTP/1.1 200"));
        assert!(get(addr, "/readyz").await.starts_with("HTTP/1.1 503"));
        ready.set_ready();
        assert!(get(addr, "/readyz").await.starts_with("HTTP/1.1 200"));
        stop.cancel();
        handle.await.unwrap();
    }

    #[tokio::test]
    async fn the_wildcard_serves_ipv4_and_ipv6() {
        let stop = CancellationToken::new();
        let wildcard = crate::flags::parse_bind_address(":0").unwrap().unwrap();
        let (addr, _h) = serve_probes(wildcard, Readiness::default(), stop.clone())
            .await
            .unwrap();
        let v4 = SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, addr.port()));
        assert!(get(v4, "/healthz").await.starts_with("HTTP/1.1 200"), "over IPv4");
        if addr.is_ipv6() {
            let v6 = SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, addr.port()));
            assert!(get(v6, "/healthz").await.starts_with("HTTP/1.1 200"), "over IPv6");
        }
        stop.cancel();
    }

    #[tokio::test]
    async fn serves_metrics() {
        let m = Arc::new(Metrics::new());
        m.start("x").finish("success");
        let stop = CancellationToken::new();
        let (addr, _h) = serve_metrics("127.0.0.1:0".parse().unwrap(), m, stop.clone())
            .await
            .unwrap();
        let body = get(addr, "/metrics").await;
        assert!(body.contains("mk8s_reconcile_total"), "{body}");
        stop.cancel();
    }
}
