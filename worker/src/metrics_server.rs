//! A tiny HTTP/1.1 responder for Prometheus: `GET /metrics` answers the
//! rendered metrics, `GET /healthz` answers `ok`, anything else 404. One
//! request per connection; the request head is capped and must arrive within
//! a few seconds, so a slow or hostile client costs one short-lived task.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::metrics::Metrics;

const MAX_HEAD: usize = 8192;
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Binds `addr` now (so a taken port is a startup error), then serves until
/// the task is dropped.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let metrics = metrics.clone();
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(READ_TIMEOUT * 2, answer(stream, &metrics)).await;
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "metrics: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn answer(mut stream: TcpStream, metrics: &Metrics) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    let complete = tokio::time::timeout(READ_TIMEOUT, async {
        loop {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                return Ok::<bool, std::io::Error>(false);
            }
            head.extend_from_slice(&buf[..n]);
            if head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n") {
                return Ok(true);
            }
            if head.len() > MAX_HEAD {
                return Ok(false);
            }
        }
    })
    .await;
    let response = match complete {
        Ok(Ok(true)) => route(&head, metrics),
        Ok(Ok(false)) => response(400, "text/plain", "bad request\n"),
        _ => return Ok(()),
    };
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

/// The response to one request head.
fn route(head: &[u8], metrics: &Metrics) -> String {
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    match (method, path) {
        ("GET", "/metrics") => response(
            200,
            "text/plain; version=0.0.4; charset=utf-8",
            &metrics.render(),
        ),
        ("GET", "/healthz") => response(200, "text/plain", "ok\n"),
        ("GET", _) => response(404, "text/plain", "not found: try /metrics\n"),
        _ => response(405, "text/plain", "method not allowed\n"),
    }
}

fn response(status: u16, content_type: &str, body: &str) -> String {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        _ => "Method Not Allowed",
    };
    format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let m = Metrics::new();
        m.claimed("noop", 0.0);
        let ok = route(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", &m);
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.contains("version=0.0.4"));
        assert!(ok.contains("flowtrack_worker_jobs_claimed_total{kind=\"noop\"} 1"));
        let body_len = ok.split("\r\n\r\n").nth(1).unwrap().len();
        assert!(ok.contains(&format!("Content-Length: {body_len}\r\n")));
        assert!(route(b"GET /metrics?x=1 HTTP/1.0\r\n\r\n", &m).starts_with("HTTP/1.1 200"));
        assert!(route(b"GET /healthz HTTP/1.1\r\n\r\n", &m).ends_with("ok\n"));
        assert!(route(b"GET / HTTP/1.1\r\n\r\n", &m).starts_with("HTTP/1.1 404"));
        assert!(route(b"POST /metrics HTTP/1.1\r\n\r\n", &m).starts_with("HTTP/1.1 405"));
    }

    #[tokio::test]
    async fn serves_over_tcp() {
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let metrics = Arc::new(Metrics::new());
        metrics.claimed("noop", 0.0);
        let server = tokio::spawn(serve(listener, metrics));
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap();
        let mut text = String::new();
        stream.read_to_string(&mut text).await.unwrap();
        assert!(
            text.contains("flowtrack_worker_jobs_claimed_total{kind=\"noop\"} 1"),
            "{text}"
        );
        server.abort();
    }
}
