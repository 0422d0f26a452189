//! Standard Webhooks signatures (<https://www.standardwebhooks.com/>).
//!
//! A secret is `whsec_` + base64 of its key bytes. A signature is
//! `v1,` + base64(HMAC-SHA256(key, "{webhook-id}.{webhook-timestamp}.{body}")),
//! and the `webhook-signature` header holds one per secret, separated by
//! spaces, so a receiver holding either the old or the new secret during a
//! rotation finds a match. Pure functions: no I/O, no clock.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

const PREFIX: &str = "whsec_";

/// A signing key. Its bytes never appear in `Debug` output or logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret({} bytes)", self.0.len())
    }
}

impl Secret {
    /// Parses `whsec_<base64>` (the prefix is optional, as the reference
    /// libraries accept it). The error names what is wrong, never the value.
    pub fn parse(text: &str) -> Result<Secret, String> {
        let b64 = text.strip_prefix(PREFIX).unwrap_or(text);
        let bytes = STANDARD
            .decode(b64)
            .map_err(|e| format!("signing secret: not base64 after {PREFIX} ({e})"))?;
        if bytes.is_empty() {
            return Err("signing secret: empty".into());
        }
        Ok(Secret(bytes))
    }

    pub fn from_bytes(bytes: Vec<u8>) -> Secret {
        Secret(bytes)
    }

    /// The `whsec_...` form receivers are given.
    pub fn to_whsec(&self) -> String {
        format!("{PREFIX}{}", STANDARD.encode(&self.0))
    }

    fn mac(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> Hmac<Sha256> {
        // HMAC takes keys of any length.
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC accepts any key length");
        mac.update(msg_id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }

    /// `v1,<base64 signature>` of one message under this secret.
    pub fn sign(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
        let tag = self.mac(msg_id, timestamp, body).finalize().into_bytes();
        format!("v1,{}", STANDARD.encode(tag))
    }

    /// Whether any `v1` entry of a `webhook-signature` header is this
    /// secret's signature of the message (constant-time comparison).
    pub fn verifies(&self, msg_id: &str, timestamp: i64, body: &[u8], header: &str) -> bool {
        header.split(' ').any(|entry| {
            let Some(sig) = entry.strip_prefix("v1,") else {
                return false;
            };
            let Ok(sig) = STANDARD.decode(sig) else {
                return false;
            };
            self.mac(msg_id, timestamp, body).verify_slice(&sig).is_ok()
        })
    }
}

/// The `webhook-signature` header: one `v1,` signature per secret, in the
/// order given (newest first), separated by single spaces.
pub fn signature_header(secrets: &[Secret], msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    secrets
        .iter()
        .map(|s| s.sign(msg_id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The example of the Standard Webhooks specification and its reference
    /// libraries' tests.
    #[test]
    fn matches_the_specification_example() {
        let secret = Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(
            secret.sign(
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1614265330,
                br#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn the_prefix_is_optional_and_bad_secrets_are_refused() {
        assert_eq!(
            Secret::parse("whsec_AAEC").unwrap(),
            Secret::parse("AAEC").unwrap()
        );
        assert!(Secret::parse("whsec_").is_err());
        assert!(Secret::parse("whsec_not base64!").is_err());
        let err = Secret::parse("whsec_s3cr3t!!").unwrap_err();
        assert!(!err.contains("s3cr3t"), "{err}");
        assert_eq!(
            format!("{:?}", Secret::parse("whsec_AAEC").unwrap()),
            "Secret(3 bytes)"
        );
    }

    #[test]
    fn one_signature_per_secret_newest_first() {
        let new = Secret::from_bytes(vec![1; 32]);
        let old = Secret::from_bytes(vec![2; 32]);
        let header = signature_header(&[new.clone(), old.clone()], "m", 7, b"{}");
        let parts: Vec<&str> = header.split(' ').collect();
        assert_eq!(parts, [new.sign("m", 7, b"{}"), old.sign("m", 7, b"{}")]);
        assert!(new.verifies("m", 7, b"{}", &header));
        assert!(old.verifies("m", 7, b"{}", &header));
        assert!(!Secret::from_bytes(vec![3; 32]).verifies("m", 7, b"{}", &header));
    }

    proptest! {
        #[test]
        fn whsec_round_trips(key in proptest::collection::vec(any::<u8>(), 1..80)) {
            let s = Secret::from_bytes(key);
            prop_assert_eq!(Secret::parse(&s.to_whsec()).unwrap(), s);
        }

        #[test]
        fn a_signature_verifies_only_its_own_message(
            key in proptest::collection::vec(any::<u8>(), 1..64),
            other in proptest::collection::vec(any::<u8>(), 1..64),
            id in "[a-zA-Z0-9_-]{1,40}",
            ts in 0i64..4_000_000_000,
            body in proptest::collection::vec(any::<u8>(), 0..300),
            flip in any::<prop::sample::Index>(),
        ) {
            let s = Secret::from_bytes(key.clone());
            let header = s.sign(&id, ts, &body);
            prop_assert!(header.starts_with("v1,"));
            prop_assert!(s.verifies(&id, ts, &body, &header));
            prop_assert!(!s.verifies(&id, ts + 1, &body, &header));
            let other_id = format!("{id}x");
            prop_assert!(!s.verifies(&other_id, ts, &body, &header));
            let mut longer = body.clone();
            longer.push(b' ');
            prop_assert!(!s.verifies(&id, ts, &longer, &header));
            if !body.is_empty() {
                let mut changed = body.clone();
                let i = flip.index(body.len());
                changed[i] ^= 1;
                prop_assert!(!s.verifies(&id, ts, &changed, &header));
            }
            if other != key {
                prop_assert!(!Secret::from_bytes(other).verifies(&id, ts, &body, &header));
            }
        }
    }
}
