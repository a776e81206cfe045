//! Serving HTTP/1.1 connections with the limits an internet-facing service needs, which
//! `axum::serve` alone does not set: a client must send a request's headers within
//! `header_timeout` (an idle keep-alive connection is closed after the same time), at most
//! `max_connections` are open at once (past that a new connection is answered 503 and closed at
//! once, never queued), and an accept error such as running out of file descriptors is waited
//! out briefly instead of spinning. On shutdown no connection is accepted any more and the open
//! ones finish the request they are in.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt;

/// What a connection may take.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: u32,
    pub header_timeout: Duration,
}

/// How long open connections get to finish their requests once shutting down.
const DRAIN: Duration = Duration::from_secs(30);

/// The answer to a connection over `max_connections`, written without reading anything.
const BUSY: &[u8] =
    b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

/// Serves `router` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(usize::try_from(limits.max_connections).unwrap_or(usize::MAX)));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, say: the connections that hold them end or time out.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    crate::core::metrics::inc("ownlist_http_accept_errors_total", &[]);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            crate::core::metrics::inc("ownlist_http_connections_refused_total", &[]);
            // Best effort and never waited for: a client that does not read this is dropped anyway.
            let _ = stream.try_write(BUSY);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            router.clone().oneshot(request.map(axum::body::Body::new))
        });
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout)
            .keep_alive(true)
            .serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(peer = %peer, error = %e, "connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN, graceful.shutdown()).await.is_err() {
        tracing::warn!("connections still open {} s after shutdown began were dropped", DRAIN.as_secs());
    }
    Ok(())
}

/// The limits a configuration sets.
pub fn limits(config: &crate::config::Config) -> Limits {
    Limits {
        max_connections: config.max_connections,
        header_timeout: config.header_timeout.to_std().unwrap_or(Duration::from_secs(10)),
    }
}
