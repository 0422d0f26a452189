//! Email. Payload: `{"to", "subject", "body"?, "html"?, "from"?, "reply_to"?}`.
//!
//! The transport comes from the environment: `FLOWTRACK_SMTP_URL`
//! (`smtp://user:pass@host:587` for STARTTLS, `smtps://…:465` for TLS) sends
//! for real; `FLOWTRACK_EMAIL_OUTBOX=DIR` writes each message as an `.eml`
//! file instead (what `./dev up` uses, so demo emails can be read). The
//! sender defaults to `FLOWTRACK_EMAIL_FROM`. Bad payloads are final; SMTP
//! transient (4xx) errors and connection failures are retried.

use std::path::PathBuf;

use lettre::message::{header::ContentType, Mailbox, MultiPart};
use lettre::{FileTransport, Message, SmtpTransport, Transport};
use serde_json::{json, Value};

use crate::job::Outcome;

fn failed(error: String, retry: bool) -> Outcome {
    Outcome::Failed {
        error,
        retry,
        result: Value::Null,
    }
}

fn mailbox(field: &str, value: &str) -> Result<Mailbox, Outcome> {
    value.parse::<Mailbox>().map_err(|e| {
        failed(
            format!("payload.{field}: \"{value}\" is not an email address ({e})"),
            false,
        )
    })
}

/// Build the message, or say which field is wrong.
pub fn message(payload: &Value, default_from: Option<&str>) -> Result<Message, Outcome> {
    let text = |k: &str| payload.get(k).and_then(Value::as_str);
    let to =
        text("to").ok_or_else(|| failed("payload.to: missing or not a string".into(), false))?;
    let subject = text("subject")
        .ok_or_else(|| failed("payload.subject: missing or not a string".into(), false))?;
    let recipients = to
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(|a| mailbox("to", a))
        .collect::<Result<Vec<_>, _>>()?;
    let from = text("from").or(default_from).ok_or_else(|| {
        failed(
            "payload.from: missing, and FLOWTRACK_EMAIL_FROM is not set".into(),
            false,
        )
    })?;
    let mut builder = Message::builder()
        .from(mailbox("from", from)?)
        .subject(subject);
    for recipient in recipients {
        builder = builder.to(recipient);
    }
    if let Some(reply_to) = text("reply_to") {
        builder = builder.reply_to(mailbox("reply_to", reply_to)?);
    }
    let body = text("body").unwrap_or_default().to_string();
    let built = match text("html") {
        Some(html) => builder.multipart(MultiPart::alternative_plain_html(body, html.to_string())),
        None => builder.header(ContentType::TEXT_PLAIN).body(body),
    };
    built.map_err(|e| failed(format!("payload: cannot build the message: {e}"), false))
}

pub fn perform(payload: &Value) -> Outcome {
    let default_from = std::env::var("FLOWTRACK_EMAIL_FROM").ok();
    let message = match message(payload, default_from.as_deref()) {
        Ok(m) => m,
        Err(outcome) => return outcome,
    };
    if let Ok(url) = std::env::var("FLOWTRACK_SMTP_URL") {
        let transport = match SmtpTransport::from_url(&url) {
            Ok(t) => t.build(),
            Err(e) => return failed(format!("FLOWTRACK_SMTP_URL: {e}"), false),
        };
        return match transport.send(&message) {
            Ok(response) => {
                Outcome::Done(json!({"transport": "smtp", "code": response.code().to_string()}))
            }
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
        return match FileTransport::new(&dir).send(&message) {
            Ok(id) => {
                Outcome::Done(json!({"transport": "outbox", "file": dir.join(format!("{id}.eml"))}))
            }
            Err(e) => failed(format!("outbox {}: {e}", dir.display()), true),
        };
    }
    failed("email: no transport configured; set FLOWTRACK_SMTP_URL (or FLOWTRACK_EMAIL_OUTBOX for development)".into(), true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_plain_and_html_messages() {
        let m = message(
            &json!({"to": "ann@example.com, bob@example.com", "subject": "Hi", "body": "Hello"}),
            Some("FlowTrack <no-reply@flowtrack.dev>"),
        )
        .unwrap();
        let raw = String::from_utf8(m.formatted()).unwrap();
        assert!(
            raw.contains("To: ann@example.com, bob@example.com"),
            "{raw}"
        );
        assert!(raw.contains("Subject: Hi"));
        assert!(raw.contains("Hello"));
        let m = message(
            &json!({"to": "a@b.io", "subject": "S", "html": "<b>x</b>", "from": "c@d.io"}),
            None,
        )
        .unwrap();
        assert!(String::from_utf8(m.formatted())
            .unwrap()
            .contains("text/html"));
    }

    #[test]
    fn bad_payloads_name_the_field_and_are_final() {
        let cases = [
            (json!({"subject": "S"}), "payload.to"),
            (json!({"to": "a@b.io"}), "payload.subject"),
            (
                json!({"to": "not an address", "subject": "S"}),
                "payload.to",
            ),
            (json!({"to": "a@b.io", "subject": "S"}), "payload.from"),
        ];
        for (payload, field) in cases {
            match message(&payload, None) {
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
    fn outbox_writes_an_eml_file() {
        let dir = std::env::temp_dir().join(format!("ft-outbox-{}", std::process::id()));
        let m = message(
            &json!({"to": "a@b.io", "subject": "Outbox", "body": "x"}),
            Some("c@d.io"),
        )
        .unwrap();
        std::fs::create_dir_all(&dir).unwrap();
        let id = FileTransport::new(&dir).send(&m).unwrap();
        let raw = std::fs::read_to_string(dir.join(format!("{id}.eml"))).unwrap();
        assert!(raw.contains("Subject: Outbox"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
