//! The HTTP endpoint: `GET /metrics` (and HEAD), 404 elsewhere. Small and
//! bounded: a few connections at once (more are closed at once), one
//! request per connection, a deadline per connection, small buffers.
use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use http_body_util::Full;
use hyper::{
    body::{Bytes, Incoming},
    header, Method, Request, Response, StatusCode,
};
use hyper_util::rt::TokioIo;
use tokio::sync::{oneshot, Semaphore};
use tracing::{info, warn};

use super::Metrics;

/// Connections served at once; a scraper needs one.
const MAX_CONNECTIONS: usize = 8;
/// Longest a connection may take, request to response.
const CONNECTION_DEADLINE: Duration = Duration::from_secs(30);
/// hyper's read buffer (its minimum): a scrape request is a few hundred bytes.
const MAX_BUF: usize = 8192;

const OPENMETRICS: &str = "application/openmetrics-text";
const OPENMETRICS_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Bind the endpoint's socket, with an error that names the address.
pub fn bind(addr: SocketAddr) -> Result<std::net::TcpListener> {
    let l = std::net::TcpListener::bind(addr).with_context(|| {
        format!(
            "metrics: cannot listen on {addr} ([metrics] listen); free the address, \
             choose another, or set listen = false to disable the endpoint"
        )
    })?;
    l.set_nonblocking(true)
        .with_context(|| format!("metrics: {addr}: setting O_NONBLOCK"))?;
    Ok(l)
}

/// The serving task; dropping this stops accepting.
pub struct Server {
    local: SocketAddr,
    _stop: oneshot::Sender<()>,
}

impl Server {
    /// Serve `metrics` on `listener` (from [`bind`]) in a tokio task.
    pub fn spawn(listener: std::net::TcpListener, metrics: Arc<Metrics>) -> Result<Server> {
        let local = listener.local_addr().context("metrics: listener address")?;
        let listener = tokio::net::TcpListener::from_std(listener)
            .with_context(|| format!("metrics: {local}: registering with tokio"))?;
        let (stop, stopped) = oneshot::channel();
        tokio::spawn(accept_loop(listener, metrics, stopped));
        info!(listen = %local, "metrics endpoint listening (GET /metrics)");
        Ok(Server { local, _stop: stop })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    mut stopped: oneshot::Receiver<()>,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut warned: Option<Instant> = None;
    loop {
        let accepted = tokio::select! {
            biased;
            _ = &mut stopped => break,
            r = listener.accept() => r,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                if warned.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
                    warn!(error = %e, "metrics: accept failed");
                    warned = Some(Instant::now());
                }
                // Out of descriptors and the like: do not spin.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Over the bound: close at once rather than queue.
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            continue;
        };
        let metrics = Arc::clone(&metrics);
        tokio::spawn(async move {
            let _slot = slot;
            let service = hyper::service::service_fn(move |req| {
                let metrics = Arc::clone(&metrics);
                async move { Ok::<_, Infallible>(respond(req, metrics).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .keep_alive(false)
                .max_buf_size(MAX_BUF)
                .serve_connection(TokioIo::new(stream), service);
            // Errors are the client's (bad request, gone away): nothing to do.
            let _ = tokio::time::timeout(CONNECTION_DEADLINE, conn).await;
        });
    }
}

async fn respond(req: Request<Incoming>, metrics: Arc<Metrics>) -> Response<Full<Bytes>> {
    if req.uri().path() != "/metrics" {
        return plain(
            StatusCode::NOT_FOUND,
            "not found: the metrics are at /metrics\n",
        );
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = plain(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
        r.headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let openmetrics = req
        .headers()
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains(OPENMETRICS));
    // Reading the maps is a handful of syscalls, more when the allowlist
    // changed and its maps are counted: keep it off the async workers.
    let encoded = tokio::task::spawn_blocking(move || {
        if openmetrics {
            (metrics.encode_openmetrics(), OPENMETRICS_TYPE)
        } else {
            (
                metrics.encode_text(),
                prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            )
        }
    })
    .await;
    match encoded {
        Ok((body, content_type)) => {
            let mut r = Response::new(Full::new(Bytes::from(body)));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static(content_type),
            );
            r
        }
        Err(e) => {
            warn!(error = %e, "metrics: encoding failed");
            plain(StatusCode::INTERNAL_SERVER_ERROR, "encoding failed\n")
        }
    }
}

fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}
