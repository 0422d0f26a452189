//! Cryptography that must not live in tenant-readable SQL: signing the JWTs
//! PostgREST verifies (HS256, RFC 7519).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;
use sha2::Sha256;

use crate::error::raise;

/// `header.payload.signature` for the given claims, HMAC-SHA256 signed.
pub fn sign_hs256(claims: &serde_json::Value, secret: &[u8]) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    let signing_input = format!("{header}.{payload}");
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC accepts keys of any length");
    mac.update(signing_input.as_bytes());
    let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{signing_input}.{signature}")
}

/// Sign `claims` as an HS256 JWT with `secret`. PostgREST requires secrets of
/// at least 32 characters, so shorter ones are refused here too.
#[pg_extern(immutable, strict, parallel_safe)]
fn jwt_sign(claims: pgrx::JsonB, secret: &str) -> String {
    if secret.len() < 32 {
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            "secret: JWT secret must be at least 32 characters",
            Some(format!("got {} characters", secret.len())),
            "Use the same jwt-secret as postgrest.conf.",
        );
    }
    if !claims.0.is_object() {
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            "claims: JWT claims must be a JSON object",
            None,
            "Pass e.g. '{\"role\":\"authenticated\",\"sub\":\"...\"}'::jsonb.",
        );
    }
    sign_hs256(&claims.0, secret.as_bytes())
}

extension_sql!(
    r#"
COMMENT ON FUNCTION flowtrack.jwt_sign(jsonb, text) IS
  'Signs a claims object as an HS256 JWT for PostgREST; the secret must be the API''s jwt-secret (>= 32 chars).';
"#,
    name = "comments_crypto",
    requires = [jwt_sign]
);

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    #[pg_test]
    fn jwt_sign_matches_openssl_vector() {
        // Expected value computed independently with `openssl dgst -sha256 -hmac`.
        let token = Spi::get_one::<String>(
            "SELECT flowtrack.jwt_sign('{\"sub\":\"1234567890\"}', 'a-string-secret-at-least-256-bits-long')",
        )
        .unwrap();
        assert_eq!(
            token.as_deref(),
            Some(
                "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.\
                 U7r9jdoxPWOde6gnQpR3RypTbOnnhS1pjKQrrxHqcDI"
            )
        );
    }

    #[pg_test(error = "secret: JWT secret must be at least 32 characters")]
    fn jwt_sign_rejects_short_secret() {
        Spi::run("SELECT flowtrack.jwt_sign('{}'::jsonb, 'short')").unwrap();
    }
}
