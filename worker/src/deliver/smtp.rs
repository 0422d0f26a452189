//! A workspace's own SMTP server (an `smtp` connection), reached through the
//! egress guard like any tenant-chosen address.
//!
//! Credentials: `{"host", "port"?, "tls"?: "starttls" | "tls" | "none",
//! "username"?, "password"?, "from": ["sales@acme.com", "@acme.com", ...]}`.
//! Port defaults to 587 (starttls), 465 (tls) or 25 (none). `from` lists the
//! addresses the workspace owns on that server: exact addresses, or
//! `@domain` for every address of a domain; the username counts too when it
//! is an address.

use std::net::SocketAddr;
use std::time::Duration;

use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{Address, Message, SmtpTransport, Transport};
use serde_json::Value;

use super::egress::{resolve_host, Egress, SendError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    StartTls,
    Implicit,
    Plain,
}

/// The settings of one SMTP connection. `Debug` leaves the password out.
#[derive(Clone)]
pub struct Smtp {
    pub host: String,
    pub port: u16,
    pub tls: TlsMode,
    pub username: Option<String>,
    pub password: Option<String>,
    pub from: Vec<String>,
}

impl std::fmt::Debug for Smtp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Smtp")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("username", &self.username)
            .field("from", &self.from)
            .finish_non_exhaustive()
    }
}

impl Smtp {
    pub fn from_credentials(c: &Value) -> Result<Smtp, String> {
        let text = |k: &str| {
            c.get(k)
                .and_then(Value::as_str)
                .map(str::trim)
                .filter(|s| !s.is_empty())
        };
        let host = text("host")
            .ok_or("SMTP connection: its credentials have no \"host\"")?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let tls = match text("tls").unwrap_or("starttls") {
            "starttls" => TlsMode::StartTls,
            "tls" | "ssl" => TlsMode::Implicit,
            "none" => TlsMode::Plain,
            other => {
                return Err(format!(
                    "SMTP connection: tls \"{other}\" is not one of starttls, tls, none"
                ))
            }
        };
        let port = match c.get("port") {
            None | Some(Value::Null) => match tls {
                TlsMode::StartTls => 587,
                TlsMode::Implicit => 465,
                TlsMode::Plain => 25,
            },
            Some(p) => p
                .as_u64()
                .or_else(|| p.as_str().and_then(|s| s.parse().ok()))
                .and_then(|p| u16::try_from(p).ok())
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("SMTP connection: port {p} is not a port number"))?,
        };
        let from = match c.get("from") {
            None | Some(Value::Null) => vec![],
            Some(Value::String(s)) => vec![s.trim().to_string()],
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(Value::as_str)
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
            Some(_) => return Err("SMTP connection: \"from\" must list addresses".into()),
        };
        Ok(Smtp {
            host,
            port,
            tls,
            username: text("username").map(str::to_string),
            password: c
                .get("password")
                .and_then(Value::as_str)
                .map(str::to_string),
            from,
        })
    }

    /// The addresses (and `@domain`s) this workspace may send from.
    pub fn owned(&self) -> Vec<String> {
        let mut owned = self.from.clone();
        if let Some(u) = &self.username {
            if u.parse::<Address>().is_ok() {
                owned.push(u.clone());
            }
        }
        owned
    }

    /// The address to send from when the step names none: the first exact
    /// address listed.
    pub fn default_from(&self) -> Option<String> {
        self.owned().into_iter().find(|a| !a.starts_with('@'))
    }
}

/// Whether `address` is one of `owned` (exact, case-insensitive) or at one
/// of its `@domain`s.
pub fn owns(owned: &[String], address: &Address) -> bool {
    let address = address.to_string().to_ascii_lowercase();
    let domain = address.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
    owned.iter().any(|o| {
        let o = o.trim().to_ascii_lowercase();
        match o.strip_prefix('@') {
            Some(d) => d == domain,
            None => o == address,
        }
    })
}

/// Send `message` through `smtp`, connecting only to an address the guard
/// checked. `Err((message, retry))`.
pub fn send(smtp: &Smtp, message: &Message, egress: &Egress) -> Result<String, (String, bool)> {
    let host = url::Host::parse(&smtp.host)
        .or_else(|_| url::Host::parse(&format!("[{}]", smtp.host)))
        .map_err(|e| {
            (
                format!("SMTP connection: host \"{}\": {e}", smtp.host),
                false,
            )
        })?;
    let addrs: Vec<SocketAddr> =
        resolve_host(&host, smtp.port, &egress.allow).map_err(|e| match e {
            SendError::Transport(m) => (format!("SMTP: {m}"), true),
            other => (format!("SMTP: {}", other.message()), false),
        })?;
    let addr = addrs[0];
    // Connect to the checked address; verify the certificate for the name.
    let tls_params = || {
        TlsParameters::new(smtp.host.clone()).map_err(|e| {
            (
                format!("SMTP connection: TLS for {}: {e}", smtp.host),
                false,
            )
        })
    };
    let tls = match smtp.tls {
        TlsMode::StartTls => Tls::Required(tls_params()?),
        TlsMode::Implicit => Tls::Wrapper(tls_params()?),
        TlsMode::Plain => Tls::None,
    };
    let mut builder = SmtpTransport::builder_dangerous(addr.ip().to_string())
        .port(addr.port())
        .tls(tls)
        .timeout(Some(Duration::from_secs(20)));
    if let Some(user) = &smtp.username {
        builder = builder.credentials(Credentials::new(
            user.clone(),
            smtp.password.clone().unwrap_or_default(),
        ));
    }
    builder
        .build()
        .send(message)
        .map(|r| r.code().to_string())
        .map_err(|e| {
            (
                format!("SMTP {}:{}: {e}", smtp.host, smtp.port),
                !e.is_permanent(),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn settings_come_from_the_credentials_with_defaults() {
        let s = Smtp::from_credentials(&json!({"host": "mail.acme.com", "username": "u@acme.com",
                                               "password": "pw", "from": ["sales@acme.com", "@news.acme.com"]}))
        .unwrap();
        assert_eq!((s.port, s.tls), (587, TlsMode::StartTls));
        assert_eq!(s.default_from().as_deref(), Some("sales@acme.com"));
        assert!(!format!("{s:?}").contains("pw"));
        let s = Smtp::from_credentials(&json!({"host": "h", "tls": "tls"})).unwrap();
        assert_eq!((s.port, s.tls), (465, TlsMode::Implicit));
        let s =
            Smtp::from_credentials(&json!({"host": "h", "tls": "none", "port": "2525"})).unwrap();
        assert_eq!((s.port, s.tls), (2525, TlsMode::Plain));
        for bad in [
            json!({}),
            json!({"host": "h", "tls": "maybe"}),
            json!({"host": "h", "port": 70000}),
        ] {
            assert!(Smtp::from_credentials(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ownership_is_exact_or_by_domain() {
        let owned = vec!["Sales@Acme.com".to_string(), "@news.acme.com".to_string()];
        let a = |s: &str| s.parse::<Address>().unwrap();
        assert!(owns(&owned, &a("sales@acme.com")));
        assert!(owns(&owned, &a("anyone@news.acme.com")));
        assert!(!owns(&owned, &a("ceo@acme.com")));
        assert!(!owns(&owned, &a("sales@acme.com.evil.io")));
        assert!(!owns(&owned, &a("x@evilnews.acme.com")));
        assert!(!owns(&[], &a("sales@acme.com")));
    }

    #[test]
    fn a_private_smtp_host_is_refused() {
        let s = Smtp::from_credentials(&json!({"host": "10.0.0.5", "tls": "none"})).unwrap();
        let m = Message::builder()
            .from("a@b.io".parse().unwrap())
            .to("c@d.io".parse().unwrap())
            .subject("s")
            .body(String::new())
            .unwrap();
        let (e, retry) = send(&s, &m, &Egress::default()).unwrap_err();
        assert!(!retry);
        assert!(
            e.contains("10.0.0.5 is a private (RFC 1918) address"),
            "{e}"
        );
    }
}
