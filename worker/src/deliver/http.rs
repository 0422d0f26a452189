//! HTTP requests and outgoing webhooks.
//!
//! Payload: `{"url", "method"?, "headers"?, "body"?, "timeout_ms"?}`. A 2xx
//! answer completes the job; 408, 429 and 5xx answers and transport errors are
//! retried; other 4xx answers are final, since repeating them cannot help.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::job::Outcome;

const MAX_BODY: u64 = 64 * 1024;

fn failed(error: String, retry: bool, result: Value) -> Outcome {
    Outcome::Failed {
        error,
        retry,
        result,
    }
}

pub fn perform(payload: &Value) -> Outcome {
    let Some(url) = payload.get("url").and_then(Value::as_str) else {
        return failed(
            "payload.url: missing or not a string".into(),
            false,
            Value::Null,
        );
    };
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return failed(
            format!("payload.url: not an http(s) URL: {url}"),
            false,
            Value::Null,
        );
    }
    let method = payload
        .get("method")
        .and_then(Value::as_str)
        .unwrap_or("POST")
        .to_ascii_uppercase();
    let timeout = payload
        .get("timeout_ms")
        .and_then(Value::as_u64)
        .unwrap_or(10_000)
        .clamp(100, 60_000);
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_millis(timeout))
        .redirects(0)
        .build();
    let mut request = agent
        .request(&method, url)
        .set("User-Agent", "FlowTrack-Worker/0.1");
    if let Some(headers) = payload.get("headers").and_then(Value::as_object) {
        for (name, value) in headers {
            if let Some(v) = value.as_str() {
                request = request.set(name, v);
            }
        }
    }
    let started = Instant::now();
    let response = match payload.get("body") {
        None | Some(Value::Null) => request.call(),
        Some(Value::String(s)) => request.send_string(s),
        Some(body) => request.send_json(body.clone()),
    };
    let duration_ms = started.elapsed().as_millis() as u64;
    match response {
        Ok(resp) => Outcome::Done(summary(resp, duration_ms)),
        Err(ureq::Error::Status(code, resp)) => {
            let retry = code == 408 || code == 429 || code >= 500;
            failed(
                format!("HTTP {code} from {url}"),
                retry,
                summary(resp, duration_ms),
            )
        }
        Err(ureq::Error::Transport(t)) => failed(
            format!("transport error calling {url}: {t}"),
            true,
            json!({"duration_ms": duration_ms}),
        ),
    }
}

fn summary(resp: ureq::Response, duration_ms: u64) -> Value {
    use std::io::Read;
    let status = resp.status();
    let mut body = String::new();
    let _ = resp.into_reader().take(MAX_BODY).read_to_string(&mut body);
    json!({"status": status, "duration_ms": duration_ms, "body": body})
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpListener;

    /// A one-shot HTTP server on loopback answering with `status`.
    fn serve_once(status: u16) -> (String, std::thread::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let handle = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut head = String::new();
            let mut len = 0usize;
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap();
                }
                if line == "\r\n" {
                    break;
                }
                head.push_str(&line);
            }
            let mut body = vec![0; len];
            std::io::Read::read_exact(&mut reader, &mut body).unwrap();
            write!(
                stream,
                "HTTP/1.1 {status} X\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
            )
            .unwrap();
            format!("{head}\n{}", String::from_utf8(body).unwrap())
        });
        (url, handle)
    }

    #[test]
    fn posts_json_and_completes_on_2xx() {
        let (url, server) = serve_once(200);
        let out = perform(&json!({"url": url, "body": {"lead": 1}, "headers": {"X-Sig": "abc"}}));
        let seen = server.join().unwrap();
        assert!(seen.starts_with("POST /hook"), "{seen}");
        assert!(seen.to_ascii_lowercase().contains("x-sig: abc"), "{seen}");
        assert!(seen.ends_with(r#"{"lead":1}"#), "{seen}");
        match out {
            Outcome::Done(v) => assert_eq!(v["status"], 200),
            other => panic!("expected Done, got {other:?}"),
        }
    }

    #[test]
    fn server_errors_retry_client_errors_do_not() {
        let (url, server) = serve_once(503);
        assert!(matches!(
            perform(&json!({"url": url})),
            Outcome::Failed { retry: true, .. }
        ));
        server.join().unwrap();
        let (url, server) = serve_once(404);
        assert!(matches!(
            perform(&json!({"url": url})),
            Outcome::Failed { retry: false, .. }
        ));
        server.join().unwrap();
    }

    #[test]
    fn bad_payload_is_final() {
        assert!(matches!(
            perform(&json!({})),
            Outcome::Failed { retry: false, .. }
        ));
        assert!(matches!(
            perform(&json!({"url": "ftp://x"})),
            Outcome::Failed { retry: false, .. }
        ));
    }
}
