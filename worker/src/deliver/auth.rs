//! How a connection authenticates an HTTP request: the header it adds.
//!
//! | auth type | credentials                         | header                                   |
//! |-----------|-------------------------------------|------------------------------------------|
//! | bearer    | `{"token"}`                         | `Authorization: Bearer <token>`          |
//! | basic     | `{"username", "password"}`          | `Authorization: Basic base64(user:pass)` |
//! | api_key   | `{"api_key", "header"?}`            | catalog's header (or `header`), catalog's prefix + key |
//! | oauth2    | `{"access_token", "refresh_token"…}`| `Authorization: Bearer <access_token>`   |
//!
//! The header is sent to the request URL's origin only, never after a
//! redirect to another origin ([`super::egress`]).

use base64::Engine;
use serde_json::Value;

use super::connection::Connection;
use super::egress::valid_header_name;

fn field<'a>(c: &'a Connection, name: &str) -> Result<&'a str, String> {
    c.credentials
        .get(name)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            format!(
                "connection {}: its {} credentials have no \"{name}\"; an owner or admin saves them again",
                c.id, c.auth_type
            )
        })
}

/// The header(s) that authenticate a request with `c`.
pub fn headers(c: &Connection) -> Result<Vec<(String, String)>, String> {
    let h = |name: &str, value: String| Ok(vec![(name.to_string(), value)]);
    match c.auth_type.as_str() {
        "bearer" => h("Authorization", format!("Bearer {}", field(c, "token")?)),
        "oauth2" => h("Authorization", format!("Bearer {}", field(c, "access_token")?)),
        "basic" => {
            let user = field(c, "username")?;
            let pass = c
                .credentials
                .get("password")
                .and_then(Value::as_str)
                .unwrap_or("");
            let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
            h("Authorization", format!("Basic {encoded}"))
        }
        "api_key" => {
            let key = field(c, "api_key")?;
            let header = match &c.api_key_header {
                Some(name) => name.clone(),
                None => field(c, "header")?.to_string(),
            };
            if !valid_header_name(&header) || super::egress::is_reserved_header(&header) {
                return Err(format!(
                    "connection {}: \"{header}\" cannot carry an API key; name an ordinary header such as X-Api-Key",
                    c.id
                ));
            }
            h(&header, format!("{}{key}", c.api_key_prefix))
        }
        "none" => Ok(vec![]),
        other => Err(format!(
            "connection_id: connection {} is a{} {other} connection ({}), which cannot authenticate HTTP requests; \
             use a bearer, basic, API-key or OAuth2 connection",
            c.id,
            if other.starts_with(['a', 'e', 'i', 'o', 'u']) { "n" } else { "" },
            c.integration_id
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use uuid::Uuid;

    fn conn(auth_type: &str, credentials: Value) -> Connection {
        Connection {
            id: Uuid::nil(),
            integration_id: "x".into(),
            auth_type: auth_type.into(),
            credentials,
            expires_at: None,
            oauth_token_url: None,
            api_key_header: None,
            api_key_prefix: String::new(),
            version: None,
        }
    }

    #[test]
    fn each_auth_type_makes_its_header() {
        assert_eq!(
            headers(&conn("bearer", json!({"token": "t1"}))).unwrap(),
            vec![("Authorization".into(), "Bearer t1".into())]
        );
        assert_eq!(
            headers(&conn(
                "oauth2",
                json!({"access_token": "at", "refresh_token": "rt"})
            ))
            .unwrap(),
            vec![("Authorization".into(), "Bearer at".into())]
        );
        assert_eq!(
            headers(&conn("basic", json!({"username": "ann", "password": "pw"}))).unwrap(),
            vec![("Authorization".into(), "Basic YW5uOnB3".into())]
        );
        assert_eq!(
            headers(&conn(
                "api_key",
                json!({"api_key": "k", "header": "X-Api-Key"})
            ))
            .unwrap(),
            vec![("X-Api-Key".into(), "k".into())]
        );
        let mut resend = conn("api_key", json!({"api_key": "re_1", "header": "X-Ignored"}));
        resend.api_key_header = Some("Authorization".into());
        resend.api_key_prefix = "Bearer ".into();
        assert_eq!(
            headers(&resend).unwrap(),
            vec![("Authorization".into(), "Bearer re_1".into())]
        );
        assert!(headers(&conn("none", Value::Null)).unwrap().is_empty());
    }

    #[test]
    fn missing_fields_and_unusable_headers_are_named() {
        let e = headers(&conn("bearer", json!({"api_key": "x"}))).unwrap_err();
        assert!(e.contains("\"token\""), "{e}");
        let e = headers(&conn("api_key", json!({"api_key": "k"}))).unwrap_err();
        assert!(e.contains("\"header\""), "{e}");
        for bad in ["Host", "Content-Length", "Bad Header", "Idempotency-Key"] {
            let e = headers(&conn("api_key", json!({"api_key": "k", "header": bad}))).unwrap_err();
            assert!(e.contains("cannot carry an API key"), "{bad}: {e}");
        }
        let e = headers(&conn("smtp", json!({"host": "h"}))).unwrap_err();
        assert!(e.contains("cannot authenticate HTTP requests"), "{e}");
    }

    #[test]
    fn debug_output_never_shows_credentials() {
        let c = conn("bearer", json!({"token": "s3cr3t"}));
        assert!(!format!("{c:?}").contains("s3cr3t"));
    }
}
