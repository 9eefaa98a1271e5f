//! The HTTP listener (`serve --http-listen`, default 127.0.0.1:7080):
//! `GET /metrics`, the node's figures in the OpenMetrics text format for
//! Prometheus ([`crate::metrics`]), and `GET /`, the status page
//! ([`status`]).
//!
//! HTTP/1.1 by hyper, one task per connection, at most
//! [`HTTP_CONNECTIONS_MAX`] at once (more wait to be accepted); a client
//! gets [`HEADER_READ_TIMEOUT_SECS`] to send its request head, and a
//! connection lives [`HTTP_CONNECTION_MAX_SECS`] at most. Nothing
//! here asks for a password: the figures name ranges and views but hold
//! no data, and the listener is on loopback unless told otherwise.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{ALLOW, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use crate::metrics::{node_figures, Exposition};
use crate::node::Node;

pub mod status;

/// HTTP connections served at once.
pub const HTTP_CONNECTIONS_MAX: usize = 64;

/// Seconds a client has to send a request's head.
pub const HEADER_READ_TIMEOUT_SECS: u64 = 10;

/// Seconds a connection lives: then it finishes the request under way and
/// closes (a scraper reconnects), so a client that stops reading its
/// replies holds a connection this long at most.
pub const HTTP_CONNECTION_MAX_SECS: u64 = 30;

/// Seconds a closing connection has to finish the request under way.
const CLOSE_GRACE_SECS: u64 = 5;

/// Adds the figures of the protocol endpoints (their commands and
/// connections) to a scrape.
pub type ProtocolFigures = Arc<dyn Fn(&mut Exposition) + Send + Sync>;

/// What every request of the listener reads.
struct Endpoint {
    node: Arc<Node>,
    protocols: ProtocolFigures,
}

/// Serves HTTP on `listener` until `closing` turns true.
pub async fn serve(
    listener: TcpListener,
    node: Arc<Node>,
    protocols: ProtocolFigures,
    mut closing: watch::Receiver<bool>,
) {
    let endpoint = Arc::new(Endpoint { node, protocols });
    let slots = Arc::new(Semaphore::new(HTTP_CONNECTIONS_MAX));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else { return };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = closing.wait_for(|c| *c) => return,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "HTTP accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let endpoint = endpoint.clone();
        let mut closing = closing.clone();
        actix_rt::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let endpoint = endpoint.clone();
                async move { Ok::<_, Infallible>(endpoint.answer(req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(HEADER_READ_TIMEOUT_SECS))
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            let lifetime = tokio::time::sleep(Duration::from_secs(HTTP_CONNECTION_MAX_SECS));
            let ended = tokio::select! {
                _ = conn.as_mut() => true,
                _ = closing.wait_for(|c| *c) => false,
                () = lifetime => false,
            };
            if !ended {
                // Finishes what is under way, unless the client does not read.
                conn.as_mut().graceful_shutdown();
                let _ = tokio::time::timeout(Duration::from_secs(CLOSE_GRACE_SECS), conn).await;
            }
            drop(permit);
        });
    }
}

/// `refresh=N` of a query, when N is 1 to 3600.
fn refresh_secs(query: &str) -> Option<u32> {
    query
        .split('&')
        .find_map(|p| p.strip_prefix("refresh="))
        .and_then(|n| n.parse().ok())
        .filter(|n| (1..=3600).contains(n))
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, "text/plain; charset=utf-8".parse().expect("a header"));
    r
}

impl Endpoint {
    async fn answer(&self, req: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
        let path = req.uri().path();
        if !matches!(path, "/" | "/metrics") {
            return text(StatusCode::NOT_FOUND, "not found; the node serves / and /metrics\n");
        }
        if !matches!(*req.method(), Method::GET | Method::HEAD) {
            let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
            r.headers_mut().insert(ALLOW, "GET, HEAD".parse().expect("a header"));
            return r;
        }
        let (body, content_type) = if path == "/metrics" {
            (self.metrics().await, crate::metrics::CONTENT_TYPE)
        } else {
            let refresh = req.uri().query().and_then(refresh_secs);
            (status::page(&self.node, refresh).await, "text/html; charset=utf-8")
        };
        let mut r = Response::new(Full::new(Bytes::from(body)));
        r.headers_mut().insert(CONTENT_TYPE, content_type.parse().expect("a header"));
        r
    }

    async fn metrics(&self) -> String {
        let mut e = Exposition::default();
        node_figures(&self.node, &mut e).await;
        (self.protocols)(&mut e);
        e.encode()
    }
}
