//! The operations endpoint: `/metrics` (Prometheus text format),
//! `/healthz` (the process is up) and `/readyz` (the upstream accepts
//! connections; 503 with the reason otherwise).
//!
//! A deliberately small HTTP/1.1 server: GET and HEAD only, one request per
//! connection, request heads up to 8 KiB, a few seconds per request. It is
//! meant for Prometheus and orchestrator probes on a private address, not
//! for the public internet.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::ProxyMetrics;
use crate::proxy::upstream::Connector;

/// Longest request head read.
const MAX_HEAD: usize = 8 * 1024;
/// Time allowed to send a request and receive the answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What the endpoint needs to answer.
pub struct Endpoint {
    pub metrics: Arc<ProxyMetrics>,
    pub connector: Arc<Connector>,
}

/// Serves until `shutdown` is cancelled.
pub async fn serve(listener: TcpListener, endpoint: Arc<Endpoint>, shutdown: CancellationToken) {
    loop {
        let stream = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    debug!(error = %e, "metrics endpoint: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let endpoint = endpoint.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(REQUEST_TIMEOUT, answer(stream, &endpoint)).await;
        });
    }
}

/// A parsed request line.
#[derive(Debug, PartialEq, Eq)]
struct Request<'a> {
    method: &'a str,
    path: &'a str,
}

/// Parses the request line of a complete head; `None` if malformed.
fn parse_head(head: &[u8]) -> Option<Request<'_>> {
    let line_end = head.windows(2).position(|w| w == b"\r\n")?;
    let line = std::str::from_utf8(&head[..line_end]).ok()?;
    let mut parts = line.split(' ');
    let method = parts.next()?;
    let target = parts.next()?;
    let version = parts.next()?;
    if parts.next().is_some() || !version.starts_with("HTTP/1.") {
        return None;
    }
    let path = target.split('?').next().unwrap_or(target);
    Some(Request { method, path })
}

async fn answer(mut stream: TcpStream, endpoint: &Endpoint) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() > MAX_HEAD {
            return respond(
                &mut stream,
                431,
                "text/plain",
                "request head too large\n",
                false,
            )
            .await;
        }
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let Some(req) = parse_head(&head) else {
        return respond(&mut stream, 400, "text/plain", "bad request\n", false).await;
    };
    let head_only = req.method == "HEAD";
    if req.method != "GET" && !head_only {
        return respond(&mut stream, 405, "text/plain", "only GET and HEAD\n", false).await;
    }
    match req.path {
        "/metrics" => {
            let body = endpoint.metrics.render();
            respond(
                &mut stream,
                200,
                "text/plain; version=0.0.4; charset=utf-8",
                &body,
                head_only,
            )
            .await
        }
        "/healthz" => respond(&mut stream, 200, "text/plain", "ok\n", head_only).await,
        "/readyz" => {
            let (status, body) = match endpoint.connector.connect().await {
                // Closing before sending anything: PostgreSQL logs nothing.
                Ok(_) => (200, "ready\n".to_string()),
                Err(e) => (
                    503,
                    format!("not ready: the upstream does not accept connections: {e}\n"),
                ),
            };
            respond(&mut stream, status, "text/plain", &body, head_only).await
        }
        _ => {
            respond(
                &mut stream,
                404,
                "text/plain",
                "not found; try /metrics, /healthz or /readyz\n",
                head_only,
            )
            .await
        }
    }
}

async fn respond(
    stream: &mut TcpStream,
    status: u16,
    content_type: &str,
    body: &str,
    head_only: bool,
) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        _ => "Service Unavailable",
    };
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(body.as_bytes());
    }
    stream.write_all(&out).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines() {
        assert_eq!(
            parse_head(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Some(Request {
                method: "GET",
                path: "/metrics"
            })
        );
        assert_eq!(
            parse_head(b"HEAD /readyz?verbose=1 HTTP/1.0\r\n\r\n"),
            Some(Request {
                method: "HEAD",
                path: "/readyz"
            })
        );
        assert_eq!(parse_head(b"GET /metrics\r\n\r\n"), None);
        assert_eq!(parse_head(b"GET / HTTP/2 extra\r\n\r\n"), None);
        assert_eq!(parse_head(b"\xff\xfe\r\n\r\n"), None);
    }
}
