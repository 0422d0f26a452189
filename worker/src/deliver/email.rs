//! The `email` job (ACTION_SEND_EMAIL). Payload: `{"to", "subject",
//! "body"?, "html"?, "from"?, "reply_to"?, "connection_id"?}`; `to` is a
//! comma-separated string (or an array) of addresses, each one metered
//! (`internal.email_recipients`, the same count).
//!
//! Transport, in order:
//! 1. the workspace's SMTP connection: the one the step names
//!    (`connection_id`), else the workspace's only `smtp` connection in use.
//!    The sender must be an address the workspace owns there (listed in the
//!    connection's `from`, exactly or by `@domain`); any other `from` is
//!    refused, final. Without `from`, the first listed address sends.
//! 2. otherwise the operator's transport: `FLOWTRACK_SMTP_URL`
//!    (`smtp://user:pass@host:587` STARTTLS, `smtps://…:465` TLS), else
//!    `FLOWTRACK_EMAIL_OUTBOX=DIR` (one `.eml` file per message, for
//!    development). The workspace owns no address there: the message is from
//!    `FLOWTRACK_EMAIL_FROM`, and the step's `from` becomes the Reply-To
//!    (unless `reply_to` is given), so answers reach the workspace.
//!
//! Bad payloads and refusals are final; SMTP 4xx replies and connection
//! failures are retried.

use std::path::PathBuf;

use lettre::message::{header::ContentType, Mailbox, MultiPart};
use lettre::{FileTransport, Message, SmtpTransport, Transport};
use serde_json::{json, Value};

use super::connection;
use super::egress::Egress;
use super::smtp::{self, Smtp};
use crate::db::Pool;
use crate::job::{Job, Outcome};

fn failed(error: impl Into<String>, retry: bool) -> Outcome {
    Outcome::failed(error, retry)
}

fn mailbox(field: &str, value: &str) -> Result<Mailbox, Outcome> {
    value.trim().parse::<Mailbox>().map_err(|e| {
        failed(
            format!("payload.{field}: \"{value}\" is not an email address ({e})"),
            false,
        )
    })
}

fn text<'a>(payload: &'a Value, k: &str) -> Option<&'a str> {
    payload
        .get(k)
        .and_then(Value::as_str)
        .filter(|s| !s.trim().is_empty())
}

/// The recipients, split exactly as `internal.email_recipients` counts them.
pub fn recipients(payload: &Value) -> Result<Vec<Mailbox>, Outcome> {
    let raw: Vec<String> = match payload.get("to") {
        Some(Value::String(s)) => s.split(',').map(str::to_string).collect(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| v.as_str().map(str::to_string))
            .collect::<Option<_>>()
            .ok_or_else(|| failed("payload.to: every recipient must be a string", false))?,
        _ => {
            return Err(failed(
                "payload.to: missing, or not a string or list",
                false,
            ))
        }
    };
    let list = raw
        .iter()
        .map(|a| a.trim())
        .filter(|a| !a.is_empty())
        .map(|a| mailbox("to", a))
        .collect::<Result<Vec<_>, _>>()?;
    if list.is_empty() {
        return Err(failed("payload.to: no recipient", false));
    }
    Ok(list)
}

/// Build the message from `from`, or say which field is wrong.
pub fn message(
    payload: &Value,
    from: Mailbox,
    reply_to: Option<Mailbox>,
) -> Result<Message, Outcome> {
    let subject = text(payload, "subject")
        .ok_or_else(|| failed("payload.subject: missing or not a string", false))?;
    let mut builder = Message::builder().from(from).subject(subject);
    for recipient in recipients(payload)? {
        builder = builder.to(recipient);
    }
    if let Some(r) = reply_to {
        builder = builder.reply_to(r);
    }
    let body = payload
        .get("body")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let built = match text(payload, "html") {
        Some(html) => builder.multipart(MultiPart::alternative_plain_html(body, html.to_string())),
        None => builder.header(ContentType::TEXT_PLAIN).body(body),
    };
    built.map_err(|e| failed(format!("payload: cannot build the message: {e}"), false))
}

/// Sender and Reply-To through the workspace's SMTP connection: the sender
/// must be an address the connection lists.
pub fn connection_sender(
    payload: &Value,
    smtp: &Smtp,
) -> Result<(Mailbox, Option<Mailbox>), Outcome> {
    let owned = smtp.owned();
    let from = match text(payload, "from") {
        Some(f) => mailbox("from", f)?,
        None => {
            let first = smtp.default_from().ok_or_else(|| {
                failed(
                    "payload.from: missing, and the SMTP connection lists no sender address (credentials \"from\")",
                    false,
                )
            })?;
            mailbox("from", &first)?
        }
    };
    if !smtp::owns(&owned, &from.email) {
        return Err(failed(
            format!(
                "payload.from: {} is not an address this workspace owns: its SMTP connection may send from {}",
                from.email,
                if owned.is_empty() { "no address (list them in the connection's \"from\")".to_string() } else { owned.join(", ") }
            ),
            false,
        ));
    }
    let reply_to = text(payload, "reply_to")
        .map(|r| mailbox("reply_to", r))
        .transpose()?;
    Ok((from, reply_to))
}

/// Sender and Reply-To through the operator's transport: always the global
/// sender; the step's `from` (the workspace's address) becomes the Reply-To.
pub fn global_sender(
    payload: &Value,
    global_from: Option<&str>,
) -> Result<(Mailbox, Option<Mailbox>), Outcome> {
    let from = global_from.ok_or_else(|| {
        failed(
            "email: FLOWTRACK_EMAIL_FROM is not set, and the workspace has no SMTP connection to send from",
            false,
        )
    })?;
    let from = from.parse::<Mailbox>().map_err(|e| {
        failed(
            format!("FLOWTRACK_EMAIL_FROM: \"{from}\" is not an address ({e})"),
            false,
        )
    })?;
    let reply_to = match (text(payload, "reply_to"), text(payload, "from")) {
        (Some(r), _) => Some(mailbox("reply_to", r)?),
        (None, Some(f)) => Some(mailbox("from", f)?),
        (None, None) => None,
    };
    Ok((from, reply_to))
}

fn global_send(message: &Message, count: usize) -> Outcome {
    if let Ok(url) = std::env::var("FLOWTRACK_SMTP_URL") {
        let transport = match SmtpTransport::from_url(&url) {
            Ok(t) => t.build(),
            Err(e) => return failed(format!("FLOWTRACK_SMTP_URL: {e}"), false),
        };
        return match transport.send(message) {
            Ok(response) => Outcome::Done(
                json!({"transport": "smtp", "code": response.code().to_string(), "recipients": count}),
            ),
            // 4xx replies and connection trouble may pass; 5xx will not.
            Err(e) => failed(format!("SMTP: {e}"), !e.is_permanent()),
        };
    }
    if let Ok(dir) = std::env::var("FLOWTRACK_EMAIL_OUTBOX") {
        let dir = PathBuf::from(dir);
        if let Err(e) = std::fs::create_dir_all(&dir) {
            return failed(
                format!("FLOWTRACK_EMAIL_OUTBOX: {}: {e}", dir.display()),
                true,
            );
        }
        return match FileTransport::new(&dir).send(message) {
            Ok(id) => Outcome::Done(
                json!({"transport": "outbox", "file": dir.join(format!("{id}.eml")),
                                           "recipients": count}),
            ),
            Err(e) => failed(format!("outbox {}: {e}", dir.display()), true),
        };
    }
    failed("email: no transport configured; set FLOWTRACK_SMTP_URL (or FLOWTRACK_EMAIL_OUTBOX for development)", true)
}

/// Perform an `email` job.
pub async fn perform(pool: &Pool, job: &Job) -> Outcome {
    let payload = &job.payload;
    let count = match recipients(payload) {
        Ok(r) => r.len(),
        Err(outcome) => return outcome,
    };
    let conn = match connection::load(pool, job).await {
        Ok(c) => c,
        Err(outcome) => return outcome,
    };
    let Some(conn) = conn else {
        let global_from = std::env::var("FLOWTRACK_EMAIL_FROM").ok();
        let message = match global_sender(payload, global_from.as_deref())
            .and_then(|(from, reply_to)| message(payload, from, reply_to))
        {
            Ok(m) => m,
            Err(outcome) => return outcome,
        };
        return tokio::task::spawn_blocking(move || global_send(&message, count))
            .await
            .unwrap_or_else(|e| failed(format!("handler crashed: {e}"), true));
    };
    if conn.auth_type != "smtp" {
        return failed(
            format!(
                "connection_id: connection {} is a {} connection, not SMTP; email steps send through SMTP connections",
                conn.id, conn.integration_id
            ),
            false,
        );
    }
    let settings = match Smtp::from_credentials(&conn.credentials) {
        Ok(s) => s,
        Err(e) => return failed(format!("connection {}: {e}", conn.id), false),
    };
    let message = match connection_sender(payload, &settings)
        .and_then(|(from, reply_to)| message(payload, from, reply_to))
    {
        Ok(m) => m,
        Err(outcome) => return outcome,
    };
    let egress = match Egress::global() {
        Ok(e) => e,
        Err(e) => return failed(e, false),
    };
    let id = conn.id;
    tokio::task::spawn_blocking(move || match smtp::send(&settings, &message, egress) {
        Ok(code) => Outcome::Done(json!({"transport": "smtp_connection", "connection_id": id,
                                         "code": code, "recipients": count})),
        Err((e, retry)) => failed(format!("connection {id}: {e}"), retry),
    })
    .await
    .unwrap_or_else(|e| failed(format!("handler crashed: {e}"), true))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn smtp(from: Value) -> Smtp {
        Smtp::from_credentials(&json!({"host": "mail.acme.com", "from": from})).unwrap()
    }

    #[test]
    fn builds_plain_and_html_messages() {
        let from: Mailbox = "FlowTrack <no-reply@flowtrack.dev>".parse().unwrap();
        let m = message(
            &json!({"to": "ann@example.com, bob@example.com", "subject": "Hi", "body": "Hello"}),
            from.clone(),
            None,
        )
        .unwrap();
        let raw = String::from_utf8(m.formatted()).unwrap();
        assert!(
            raw.contains("To: ann@example.com, bob@example.com"),
            "{raw}"
        );
        assert!(raw.contains("Subject: Hi") && raw.contains("Hello"));
        let m = message(
            &json!({"to": ["a@b.io"], "subject": "S", "html": "<b>x</b>"}),
            from,
            None,
        )
        .unwrap();
        assert!(String::from_utf8(m.formatted())
            .unwrap()
            .contains("text/html"));
    }

    #[test]
    fn recipients_are_counted_like_the_meter_counts_them() {
        let n = |to: Value| recipients(&json!({"to": to})).map(|r| r.len()).ok();
        assert_eq!(n(json!("a@b.io")), Some(1));
        assert_eq!(n(json!("a@b.io, c@d.io,, e@f.io ,")), Some(3));
        assert_eq!(n(json!(["a@b.io", " ", "c@d.io"])), Some(2));
        assert_eq!(n(json!("")), None);
        assert_eq!(n(json!(5)), None);
    }

    #[test]
    fn bad_payloads_name_the_field_and_are_final() {
        let from: Mailbox = "a@b.io".parse().unwrap();
        for (payload, field) in [
            (json!({"subject": "S"}), "payload.to"),
            (json!({"to": "a@b.io"}), "payload.subject"),
            (
                json!({"to": "not an address", "subject": "S"}),
                "payload.to",
            ),
        ] {
            match message(&payload, from.clone(), None) {
                Err(Outcome::Failed {
                    error,
                    retry: false,
                    ..
                }) => assert!(error.starts_with(field), "{error}"),
                other => {
                    panic!("{payload}: expected a final failure naming {field}, got {other:?}")
                }
            }
        }
    }

    #[test]
    fn a_connection_sends_only_from_addresses_it_lists() {
        let s = smtp(json!(["sales@acme.com", "@news.acme.com"]));
        let (from, _) = connection_sender(&json!({}), &s).unwrap();
        assert_eq!(from.email.to_string(), "sales@acme.com");
        let (from, _) =
            connection_sender(&json!({"from": "Acme News <letters@news.acme.com>"}), &s).unwrap();
        assert_eq!(from.email.to_string(), "letters@news.acme.com");
        match connection_sender(&json!({"from": "ceo@bank.example"}), &s) {
            Err(Outcome::Failed {
                error,
                retry: false,
                ..
            }) => {
                assert!(
                    error.starts_with(
                        "payload.from: ceo@bank.example is not an address this workspace owns"
                    ),
                    "{error}"
                );
                assert!(error.contains("sales@acme.com, @news.acme.com"), "{error}");
            }
            other => panic!("{other:?}"),
        }
        assert!(connection_sender(&json!({}), &smtp(json!([]))).is_err());
    }

    #[test]
    fn the_global_transport_sends_as_itself_and_replies_go_to_the_workspace() {
        let (from, reply) = global_sender(
            &json!({"from": "sales@acme.com"}),
            Some("FlowTrack <no-reply@flowtrack.dev>"),
        )
        .unwrap();
        assert_eq!(from.email.to_string(), "no-reply@flowtrack.dev");
        assert_eq!(reply.unwrap().email.to_string(), "sales@acme.com");
        let (_, reply) = global_sender(
            &json!({"from": "a@b.io", "reply_to": "c@d.io"}),
            Some("x@y.io"),
        )
        .unwrap();
        assert_eq!(reply.unwrap().email.to_string(), "c@d.io");
        assert!(global_sender(&json!({}), None).is_err());
    }

    #[test]
    fn outbox_writes_an_eml_file() {
        let dir = std::env::temp_dir().join(format!("ft-outbox-{}", std::process::id()));
        let m = message(
            &json!({"to": "a@b.io", "subject": "Outbox", "body": "x"}),
            "c@d.io".parse().unwrap(),
            None,
        )
        .unwrap();
        std::fs::create_dir_all(&dir).unwrap();
        let id = FileTransport::new(&dir).send(&m).unwrap();
        let raw = std::fs::read_to_string(dir.join(format!("{id}.eml"))).unwrap();
        assert!(raw.contains("Subject: Outbox"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
