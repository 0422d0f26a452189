//! Guarded outgoing HTTP: the one way the worker calls a URL a tenant chose
//! (HTTP actions, webhooks, OAuth token endpoints).
//!
//! For every hop it parses the URL, resolves the host itself, refuses any
//! address the classifier ([`super::ssrf`]) denies unless the development
//! allowlist lists it, and then connects only to the addresses it checked:
//! the agent's resolver returns exactly those, so a DNS answer that changes
//! between check and connect (rebinding) never reaches a socket. Redirects
//! are followed here, a bounded number of times, each hop checked again, and
//! credentials never follow a redirect to another origin. Connect, read and
//! total timeouts and a response-size cap apply to every call.

use std::io::Read;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

use url::{Host, Url};

use super::ssrf::{self, Allowlist};

/// Limits and the allowlist, from the environment once per process.
#[derive(Debug, Clone)]
pub struct Egress {
    pub allow: Allowlist,
    pub connect_timeout: Duration,
    /// Longest wait for the next bytes of an answer.
    pub read_timeout: Duration,
    pub max_response_bytes: usize,
    pub max_redirects: u32,
}

impl Default for Egress {
    fn default() -> Self {
        Egress {
            allow: Allowlist::default(),
            connect_timeout: Duration::from_secs(5),
            read_timeout: Duration::from_secs(30),
            max_response_bytes: 1 << 20,
            max_redirects: 5,
        }
    }
}

fn env_num<T: std::str::FromStr>(name: &str) -> Result<Option<T>, String> {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| format!("{name}: \"{v}\" is not a number")),
        Err(_) => Ok(None),
    }
}

impl Egress {
    /// `FLOWTRACK_EGRESS_ALLOW` (addresses/CIDRs, development only),
    /// `FLOWTRACK_HTTP_CONNECT_TIMEOUT_MS` (5000), `FLOWTRACK_HTTP_READ_TIMEOUT_MS` (30000),
    /// `FLOWTRACK_HTTP_MAX_RESPONSE_BYTES` (1 MiB), `FLOWTRACK_HTTP_MAX_REDIRECTS` (5).
    pub fn from_env() -> Result<Self, String> {
        let d = Egress::default();
        Ok(Egress {
            allow: Allowlist::from_env()?,
            connect_timeout: env_num("FLOWTRACK_HTTP_CONNECT_TIMEOUT_MS")?
                .map(Duration::from_millis)
                .unwrap_or(d.connect_timeout),
            read_timeout: env_num("FLOWTRACK_HTTP_READ_TIMEOUT_MS")?
                .map(Duration::from_millis)
                .unwrap_or(d.read_timeout),
            max_response_bytes: env_num("FLOWTRACK_HTTP_MAX_RESPONSE_BYTES")?
                .unwrap_or(d.max_response_bytes),
            max_redirects: env_num("FLOWTRACK_HTTP_MAX_REDIRECTS")?.unwrap_or(d.max_redirects),
        })
    }

    /// The process's settings, read on first use. A malformed variable is
    /// reported by every request rather than silently ignored.
    pub fn global() -> Result<&'static Egress, String> {
        static CELL: std::sync::OnceLock<Result<Egress, String>> = std::sync::OnceLock::new();
        CELL.get_or_init(Egress::from_env)
            .as_ref()
            .map_err(Clone::clone)
    }
}

/// One request. `credentials` are headers sent to the first URL's origin
/// only (a connection's Authorization or API-key header); `Debug` shows
/// their names, never their values.
#[derive(Clone)]
pub struct HttpRequest {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub credentials: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
    /// The whole exchange, redirects and body included.
    pub timeout: Duration,
    /// Sent as `Idempotency-Key` on every hop (none when empty).
    pub idempotency_key: String,
}

impl std::fmt::Debug for HttpRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.credentials.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("HttpRequest")
            .field("method", &self.method)
            .field("url", &self.url)
            .field("headers", &self.headers)
            .field("credentials", &names)
            .field("body_bytes", &self.body.as_ref().map(Vec::len))
            .field("timeout", &self.timeout)
            .field("idempotency_key", &self.idempotency_key)
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct HttpResponse {
    pub status: u16,
    /// Lower-case names; repeated headers joined with ", ".
    pub headers: Vec<(String, String)>,
    /// At most `max_response_bytes`.
    pub body: Vec<u8>,
    /// The body was longer than the cap and was cut.
    pub truncated: bool,
    pub duration: Duration,
    /// The URL that answered (after redirects).
    pub url: String,
    pub redirects: u32,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Why no response came back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    /// The guard refused an address (final: retrying cannot help).
    Refused(String),
    /// The request itself is unusable: bad URL, method or header, too many
    /// redirects (final).
    Invalid(String),
    /// Network trouble: DNS failure, refused connection, timeout (retry).
    Transport(String),
}

impl SendError {
    pub fn message(&self) -> &str {
        match self {
            SendError::Refused(m) | SendError::Invalid(m) | SendError::Transport(m) => m,
        }
    }

    pub fn retryable(&self) -> bool {
        matches!(self, SendError::Transport(_))
    }
}

/// Headers the caller may not set: the transport owns them, or they would
/// let a payload override what the guard or the connection decided.
const RESERVED: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
    "proxy-authorization",
    "proxy-connection",
    "idempotency-key",
];

/// Sent to the origin that was asked, never to another one a redirect names.
const ORIGIN_ONLY: &[&str] = &["authorization", "cookie", "proxy-authorization"];

/// The transport's own headers, which neither a payload nor a connection sets.
pub fn is_reserved_header(name: &str) -> bool {
    RESERVED.contains(&name.to_ascii_lowercase().as_str())
}

pub fn valid_header_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 256
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn valid_header_value(value: &str) -> bool {
    value.len() <= 16 * 1024 && !value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0)
}

/// Parse and check a URL's form (not its address): http or https, a host.
pub fn parse_url(raw: &str) -> Result<Url, SendError> {
    let url = Url::parse(raw.trim())
        .map_err(|e| SendError::Invalid(format!("url: \"{raw}\" is not a URL ({e})")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(SendError::Invalid(format!(
            "url: only http and https URLs are called, not {}:",
            url.scheme()
        )));
    }
    if url.host().is_none() {
        return Err(SendError::Invalid(format!("url: \"{raw}\" has no host")));
    }
    Ok(url)
}

/// Resolve `url`'s host and check every address; all must pass. Returns the
/// socket addresses to connect to (and only those).
pub fn resolve_checked(url: &Url, allow: &Allowlist) -> Result<Vec<SocketAddr>, SendError> {
    let port = url
        .port_or_known_default()
        .ok_or_else(|| SendError::Invalid(format!("url: no port for {url}")))?;
    match url.host() {
        Some(host) => resolve_host(&host, port, allow),
        None => Err(SendError::Invalid(format!("url: {url} has no host"))),
    }
}

/// Resolve a host name (or take an address literal) and check every
/// address; all must pass. For any protocol: HTTP, SMTP.
pub fn resolve_host<S: AsRef<str>>(
    host: &Host<S>,
    port: u16,
    allow: &Allowlist,
) -> Result<Vec<SocketAddr>, SendError> {
    let (name, addrs): (String, Vec<IpAddr>) = match host {
        Host::Ipv4(a) => (a.to_string(), vec![IpAddr::V4(*a)]),
        Host::Ipv6(a) => (a.to_string(), vec![IpAddr::V6(*a)]),
        Host::Domain(d) => {
            let d = d.as_ref();
            let found = (d, port)
                .to_socket_addrs()
                .map_err(|e| SendError::Transport(format!("cannot resolve host {d}: {e}")))?;
            let mut ips: Vec<IpAddr> = found.map(|s| s.ip()).collect();
            ips.dedup();
            if ips.is_empty() {
                return Err(SendError::Transport(format!("host {d} has no address")));
            }
            (d.to_string(), ips)
        }
    };
    for ip in &addrs {
        if let Err(denied) = ssrf::check(*ip, allow) {
            let shown = if name == ip.to_string() {
                ip.to_string()
            } else {
                format!("{name} ({ip})")
            };
            return Err(SendError::Refused(format!(
                "egress refused: {shown} is {denied}; the worker only connects to public \
                 addresses ({} lists exceptions for development)",
                Allowlist::ENV
            )));
        }
    }
    Ok(addrs
        .into_iter()
        .map(|ip| SocketAddr::new(ip, port))
        .collect())
}

/// Where a redirect leads and how to ask there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hop {
    pub url: Url,
    pub method: String,
    /// The body goes along (307/308); 301/302/303 turn into a GET without one.
    pub keep_body: bool,
    /// Same scheme, host and port as the first URL: credentials may go.
    pub same_origin: bool,
}

/// The next hop of a redirect answer, or `None` when `status` is not one.
/// Pure, so the rules are tested without a network.
pub fn redirect(
    first: &Url,
    current: &Url,
    method: &str,
    status: u16,
    location: Option<&str>,
) -> Result<Option<Hop>, SendError> {
    if !matches!(status, 301 | 302 | 303 | 307 | 308) {
        return Ok(None);
    }
    let location = location.ok_or_else(|| {
        SendError::Invalid(format!("redirect {status} from {current} has no Location"))
    })?;
    let url = current.join(location).map_err(|e| {
        SendError::Invalid(format!("redirect to \"{location}\" from {current}: {e}"))
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(SendError::Invalid(format!(
            "redirect from {current} to {url}: only http and https URLs are followed"
        )));
    }
    let keep =
        matches!(status, 307 | 308) || (status != 303 && (method == "GET" || method == "HEAD"));
    let method = if keep || method == "HEAD" {
        method.to_string()
    } else {
        "GET".to_string()
    };
    let same_origin = url.origin() == first.origin();
    Ok(Some(Hop {
        url,
        keep_body: keep && matches!(status, 307 | 308),
        method,
        same_origin,
    }))
}

fn build_agent(addrs: Vec<SocketAddr>, egress: &Egress, remaining: Duration) -> ureq::Agent {
    // The resolver answers with the addresses checked above, whatever it is
    // asked: no second lookup, no window for a rebinding answer.
    let pinned = move |_netloc: &str| -> std::io::Result<Vec<SocketAddr>> { Ok(addrs.clone()) };
    ureq::AgentBuilder::new()
        .try_proxy_from_env(false)
        .resolver(pinned)
        .redirects(0)
        .timeout_connect(egress.connect_timeout.min(remaining))
        .timeout_read(egress.read_timeout.min(remaining))
        .timeout(remaining)
        .user_agent("FlowTrack-Worker/0.1")
        .max_idle_connections(0)
        .build()
}

fn method_ok(m: &str) -> bool {
    matches!(
        m,
        "GET" | "POST" | "PUT" | "PATCH" | "DELETE" | "HEAD" | "OPTIONS"
    )
}

/// Call `req.url` through the guard. Answers of every status come back as
/// `Ok` (the caller decides what a 4xx or 5xx means); `Err` is a refusal,
/// an unusable request or a transport failure.
pub fn send(req: &HttpRequest, egress: &Egress) -> Result<HttpResponse, SendError> {
    let started = Instant::now();
    let method = req.method.trim().to_ascii_uppercase();
    if !method_ok(&method) {
        return Err(SendError::Invalid(format!(
            "method: \"{}\" is not one of GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS",
            req.method
        )));
    }
    for (name, value) in req.headers.iter().chain(&req.credentials) {
        if !valid_header_name(name) {
            return Err(SendError::Invalid(format!(
                "headers: \"{name}\" is not a valid header name"
            )));
        }
        if !valid_header_value(value) {
            return Err(SendError::Invalid(format!(
                "headers.{name}: values may not contain line breaks and are at most 16 KiB"
            )));
        }
    }
    let first = parse_url(&req.url)?;
    let mut url = first.clone();
    let mut method = method;
    let mut body = req.body.clone();
    let mut redirects = 0;
    loop {
        let remaining = req.timeout.saturating_sub(started.elapsed());
        if remaining.is_zero() {
            return Err(SendError::Transport(format!(
                "timed out after {} ms calling {url}",
                req.timeout.as_millis()
            )));
        }
        let addrs = resolve_checked(&url, &egress.allow)?;
        let agent = build_agent(addrs, egress, remaining);
        let same_origin = url.origin() == first.origin();
        let mut call = agent.request_url(&method, &url);
        for (name, value) in &req.headers {
            let lower = name.to_ascii_lowercase();
            if RESERVED.contains(&lower.as_str())
                || (!same_origin && ORIGIN_ONLY.contains(&lower.as_str()))
            {
                continue;
            }
            call = call.set(name, value);
        }
        if same_origin {
            for (name, value) in &req.credentials {
                call = call.set(name, value);
            }
        }
        if !req.idempotency_key.is_empty() {
            call = call.set("Idempotency-Key", &req.idempotency_key);
        }
        let result = match &body {
            Some(b) => call.send_bytes(b),
            None => call.call(),
        };
        let resp = match result {
            Ok(r) | Err(ureq::Error::Status(_, r)) => r,
            Err(ureq::Error::Transport(t)) => {
                return Err(SendError::Transport(format!(
                    "transport error calling {url}: {t}"
                )))
            }
        };
        let status = resp.status();
        if let Some(hop) = redirect(&first, &url, &method, status, resp.header("location"))? {
            if redirects >= egress.max_redirects {
                return Err(SendError::Invalid(format!(
                    "more than {} redirects, the last from {url} to {}",
                    egress.max_redirects, hop.url
                )));
            }
            redirects += 1;
            if !hop.keep_body {
                body = None;
            }
            url = hop.url;
            method = hop.method;
            continue;
        }
        return read_response(resp, url, redirects, started, egress.max_response_bytes);
    }
}

fn read_response(
    resp: ureq::Response,
    url: Url,
    redirects: u32,
    started: Instant,
    cap: usize,
) -> Result<HttpResponse, SendError> {
    let status = resp.status();
    let mut headers: Vec<(String, String)> = Vec::new();
    for name in resp.headers_names() {
        let values = resp.all(&name).join(", ");
        if !headers.iter().any(|(n, _)| *n == name) {
            headers.push((name, values));
        }
    }
    let mut body = Vec::new();
    resp.into_reader()
        .take(cap as u64 + 1)
        .read_to_end(&mut body)
        .map_err(|e| SendError::Transport(format!("reading the answer from {url}: {e}")))?;
    let truncated = body.len() > cap;
    body.truncate(cap);
    Ok(HttpResponse {
        status,
        headers,
        body,
        truncated,
        duration: started.elapsed(),
        url: url.to_string(),
        redirects,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn redirects_keep_or_drop_method_and_body_like_browsers() {
        let a = u("https://api.example.com/x");
        let r = |m: &str, s: u16, l: &str| redirect(&a, &a, m, s, Some(l)).unwrap().unwrap();
        let h = r("POST", 303, "/y");
        assert_eq!((h.method.as_str(), h.keep_body), ("GET", false));
        assert_eq!(h.url.as_str(), "https://api.example.com/y");
        assert!(h.same_origin);
        let h = r("POST", 302, "/y");
        assert_eq!((h.method.as_str(), h.keep_body), ("GET", false));
        let h = r("PUT", 307, "/y");
        assert_eq!((h.method.as_str(), h.keep_body), ("PUT", true));
        let h = r("POST", 308, "https://other.example.com/z");
        assert_eq!((h.method.as_str(), h.keep_body), ("POST", true));
        assert!(!h.same_origin, "another host is another origin");
        let h = r("GET", 301, "http://api.example.com/x");
        assert!(!h.same_origin, "a scheme change is another origin");
        let h = r("HEAD", 303, "/h");
        assert_eq!(h.method, "HEAD");
        assert_eq!(redirect(&a, &a, "GET", 200, None).unwrap(), None);
        assert_eq!(redirect(&a, &a, "GET", 304, None).unwrap(), None);
    }

    #[test]
    fn unusable_redirects_are_final_errors() {
        let a = u("https://api.example.com/x");
        for (status, location) in [
            (302, None),
            (301, Some("ftp://x/y")),
            (307, Some("file:///etc/passwd")),
        ] {
            match redirect(&a, &a, "GET", status, location) {
                Err(SendError::Invalid(m)) => assert!(m.contains("redirect"), "{m}"),
                other => panic!("{status} {location:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn every_hop_is_checked_again() {
        // The redirect target is resolved and classified like the first URL.
        let a = u("https://api.example.com/x");
        for target in [
            "http://127.0.0.1:8080/",
            "http://[::1]/",
            "http://169.254.169.254/latest/meta-data/",
            "http://[::ffff:10.0.0.1]/",
            "http://2130706433/",
            "http://0x7f.1/",
            "http://localhost/",
        ] {
            let hop = redirect(&a, &a, "GET", 302, Some(target)).unwrap().unwrap();
            match resolve_checked(&hop.url, &Allowlist::default()) {
                Err(SendError::Refused(m)) => assert!(m.starts_with("egress refused"), "{m}"),
                other => panic!("{target}: {other:?}"),
            }
        }
    }

    #[test]
    fn urls_are_parsed_like_the_transport_parses_them() {
        assert!(matches!(parse_url("ftp://x/"), Err(SendError::Invalid(_))));
        assert!(matches!(parse_url("not a url"), Err(SendError::Invalid(_))));
        // Numeric shorthands normalise to the address they mean.
        assert_eq!(
            parse_url("http://2130706433/").unwrap().host_str(),
            Some("127.0.0.1")
        );
        assert_eq!(
            parse_url("http://0177.0.0.1/").unwrap().host_str(),
            Some("127.0.0.1")
        );
    }

    #[test]
    fn bad_methods_and_headers_are_refused_before_any_io() {
        let base = HttpRequest {
            method: "GET".into(),
            url: "http://127.0.0.1:9/".into(),
            headers: vec![],
            credentials: vec![],
            body: None,
            timeout: Duration::from_secs(1),
            idempotency_key: "k".into(),
        };
        let e = Egress::default();
        let bad = [
            HttpRequest {
                method: "TRACE".into(),
                ..base.clone()
            },
            HttpRequest {
                headers: vec![("X-A".into(), "a\r\nInjected: 1".into())],
                ..base.clone()
            },
            HttpRequest {
                headers: vec![("Bad Name".into(), "x".into())],
                ..base.clone()
            },
        ];
        for r in bad {
            assert!(matches!(send(&r, &e), Err(SendError::Invalid(_))), "{r:?}");
        }
        let with_secret = HttpRequest {
            credentials: vec![("Authorization".into(), "Bearer s3cr3t".into())],
            ..base.clone()
        };
        assert!(!format!("{with_secret:?}").contains("s3cr3t"));
        // Without the allowlist, loopback is refused before connecting.
        match send(&base, &e) {
            Err(SendError::Refused(m)) => assert!(m.contains("loopback"), "{m}"),
            other => panic!("{other:?}"),
        }
    }
}
