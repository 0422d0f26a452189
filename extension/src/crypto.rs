//! Cryptography that must not live in tenant-readable SQL: signing the JWTs
//! PostgREST verifies (HS256, RFC 7519), and encrypting secrets at rest
//! (AES-256-GCM) with keys that live outside the database.
//!
//! ## Secrets at rest
//!
//! Keys are read from the file named by the superuser-only setting
//! `flowtrack.key_file`: one `key_id=base64(32 bytes)` per line (`#` comments
//! and blank lines allowed). The first key, or the one `flowtrack.active_key_id`
//! names, encrypts; every key in the file decrypts, so retired keys stay until
//! `internal.rotate_secrets` has re-encrypted their rows. The file must not be
//! readable by other OS users (the same rule Postgres applies to
//! `ssl_key_file`), and is re-read when it changes (size, mtime or inode).
//!
//! A ciphertext is `version (1 byte) || nonce (12 random bytes) || AES-GCM
//! ciphertext and 16-byte tag`; the key id is stored beside it, not in it.
//! The authenticated data is `version || key_id || 0x00 || aad`, so a
//! ciphertext decrypts only under the key id, format version and `aad` it
//! was made with: callers pass the row's identity as `aad` (for connections
//! `connection:<id>`), and a ciphertext copied into another row fails.
//! Random 96-bit nonces are safe for 2^32 encryptions per key (NIST SP
//! 800-38D); rotation starts the count again.
//!
//! SQLSTATEs: F0000 (config_file_error) for a missing, unreadable,
//! over-permissive or malformed key file or an active key that is not in it;
//! 42704 (undefined_object) for a key id the file does not hold; 22P03
//! (invalid_binary_representation) for bytes that are not a FlowTrack
//! ciphertext; 39000 (external_routine_invocation_exception, what pgcrypto
//! raises for "wrong key or corrupt data") when authentication fails:
//! tampered bytes, another row's `aad` or another key.

use std::cell::RefCell;
use std::os::unix::fs::MetadataExt;
use std::rc::Rc;

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use hmac::{Hmac, Mac};
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;
use sha2::Sha256;

use crate::error::raise;
use crate::guc;

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

/// Version byte of the ciphertext format written today.
const FORMAT_V1: u8 = 1;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const KEY_LEN: usize = 32;
const HINT_KEY_FILE: &str = "Each line is key_id=base64 of 32 random bytes, e.g. `echo \"k1=$(openssl rand -base64 32)\"`; ./dev writes one per checkout.";

/// One key of the key file, ready to use.
struct Key {
    id: String,
    cipher: Aes256Gcm,
}

/// The keys of one key file, in file order.
struct Keyring {
    keys: Vec<Key>,
}

impl Keyring {
    fn get(&self, id: &str) -> Option<&Key> {
        self.keys.iter().find(|k| k.id == id)
    }
}

/// Why a key file could not be used: `(message, hint)`.
type KeyFileError = (String, &'static str);

fn valid_key_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

/// Parse key file text: `key_id=base64(32 bytes)` lines, `#` comments and
/// blank lines; at least one key; ids unique.
fn parse_keyring(text: &str) -> Result<Keyring, KeyFileError> {
    let mut keys: Vec<Key> = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let at = n + 1;
        let Some((id, b64)) = line.split_once('=') else {
            return Err((format!("line {at} is not key_id=base64"), HINT_KEY_FILE));
        };
        let (id, b64) = (id.trim(), b64.trim());
        if !valid_key_id(id) {
            return Err((
                format!("line {at}: key id \"{id}\" must be 1 to 64 of A-Z a-z 0-9 _ . -"),
                HINT_KEY_FILE,
            ));
        }
        let bytes = STANDARD.decode(b64).map_err(|_| {
            (
                format!("line {at}: key \"{id}\" is not base64"),
                HINT_KEY_FILE,
            )
        })?;
        if bytes.len() != KEY_LEN {
            return Err((
                format!(
                    "line {at}: key \"{id}\" is {} bytes, AES-256 needs {KEY_LEN}",
                    bytes.len()
                ),
                HINT_KEY_FILE,
            ));
        }
        if keys.iter().any(|k| k.id == id) {
            return Err((
                format!("line {at}: key id \"{id}\" appears twice"),
                "Key ids name keys for good: give a new key a new id.",
            ));
        }
        let cipher = Aes256Gcm::new_from_slice(&bytes).expect("the key length was checked");
        keys.push(Key {
            id: id.to_string(),
            cipher,
        });
    }
    if keys.is_empty() {
        return Err(("holds no key".to_string(), HINT_KEY_FILE));
    }
    Ok(Keyring { keys })
}

/// Refuse key files other OS users could read or change. Like Postgres'
/// rule for `ssl_key_file`: no access for others, and group read only when
/// root owns the file.
fn check_permissions(meta: &std::fs::Metadata) -> Result<(), KeyFileError> {
    let mode = meta.mode() & 0o777;
    let group_ok = if meta.uid() == 0 { 0o040 } else { 0 };
    if mode & 0o007 != 0 || mode & 0o070 & !group_ok != 0 {
        return Err((
            format!("is accessible by other users (mode {mode:04o})"),
            "chmod 600 the key file and let the database server's OS user own it (or root with mode 640).",
        ));
    }
    Ok(())
}

/// What identifies one version of the key file on disk.
#[derive(PartialEq)]
struct FileStamp {
    path: String,
    dev: u64,
    ino: u64,
    len: u64,
    mtime: i64,
    mtime_nsec: i64,
}

thread_local! {
    /// The parsed key file, kept for the life of the backend until the file
    /// changes on disk, so a rotation over many rows reads it once.
    static KEYRING: RefCell<Option<(FileStamp, Rc<Keyring>)>> = const { RefCell::new(None) };
}

fn key_file_error(path: &str, problem: impl Into<String>, hint: &str) -> ! {
    raise(
        PgSqlErrorCode::ERRCODE_CONFIG_FILE_ERROR,
        format!("flowtrack.key_file: {}", problem.into()),
        Some(format!("key file: {path}")),
        hint,
    )
}

/// The keys of `flowtrack.key_file`, re-read when the file changed.
fn keyring() -> Rc<Keyring> {
    let Some(path) = guc::key_file() else {
        raise(
            PgSqlErrorCode::ERRCODE_CONFIG_FILE_ERROR,
            "flowtrack.key_file is not set: secrets cannot be encrypted or decrypted",
            None,
            "Set flowtrack.key_file in postgresql.conf to the key file's absolute path and reload; ./dev does this for its clusters.",
        );
    };
    let meta = std::fs::metadata(&path).unwrap_or_else(|e| {
        key_file_error(
            &path,
            format!("cannot read the key file ({e})"),
            "The file must exist and be readable by the database server's OS user.",
        )
    });
    let stamp = FileStamp {
        path: path.clone(),
        dev: meta.dev(),
        ino: meta.ino(),
        len: meta.len(),
        mtime: meta.mtime(),
        mtime_nsec: meta.mtime_nsec(),
    };
    let cached = KEYRING.with(|k| match &*k.borrow() {
        Some((s, ring)) if *s == stamp => Some(Rc::clone(ring)),
        _ => None,
    });
    if let Some(ring) = cached {
        return ring;
    }
    if let Err((problem, hint)) = check_permissions(&meta) {
        key_file_error(&path, problem, hint);
    }
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        key_file_error(
            &path,
            format!("cannot read the key file ({e})"),
            "The file must be readable by the database server's OS user.",
        )
    });
    let ring = Rc::new(parse_keyring(&text).unwrap_or_else(|(p, h)| key_file_error(&path, p, h)));
    KEYRING.with(|k| *k.borrow_mut() = Some((stamp, Rc::clone(&ring))));
    ring
}

/// The id of the key new encryptions use.
fn active_id(ring: &Keyring) -> String {
    match guc::active_key_id() {
        None => ring.keys[0].id.clone(),
        Some(id) if ring.get(&id).is_some() => id,
        Some(id) => raise(
            PgSqlErrorCode::ERRCODE_CONFIG_FILE_ERROR,
            format!("flowtrack.active_key_id: key \"{id}\" is not in the key file"),
            guc::key_file().map(|p| format!("key file: {p}")),
            "Add the key to flowtrack.key_file first, or reset flowtrack.active_key_id to use the file's first key.",
        ),
    }
}

fn unknown_key(id: &str) -> ! {
    raise(
        PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
        format!("key_id: no key \"{id}\" in the key file"),
        guc::key_file().map(|p| format!("key file: {p}")),
        "Keys that still encrypt rows must stay in flowtrack.key_file until internal.rotate_secrets has moved those rows to another key.",
    )
}

/// What GCM authenticates besides the ciphertext: the format version, the
/// key id and the caller's `aad`, so none of them can be swapped.
fn associated_data(version: u8, key_id: &str, aad: &str) -> Vec<u8> {
    let mut ad = Vec::with_capacity(2 + key_id.len() + aad.len());
    ad.push(version);
    ad.extend_from_slice(key_id.as_bytes());
    ad.push(0);
    ad.extend_from_slice(aad.as_bytes());
    ad
}

fn seal(key: &Key, plaintext: &[u8], aad: &str) -> Vec<u8> {
    let mut nonce = [0u8; NONCE_LEN];
    if let Err(e) = getrandom::fill(&mut nonce) {
        raise(
            PgSqlErrorCode::ERRCODE_SYSTEM_ERROR,
            "encrypt_secret: the operating system gave no random bytes for a nonce",
            Some(e.to_string()),
            "",
        );
    }
    let ad = associated_data(FORMAT_V1, &key.id, aad);
    let sealed = key
        .cipher
        .encrypt(
            &Nonce::from(nonce),
            Payload {
                msg: plaintext,
                aad: &ad,
            },
        )
        .unwrap_or_else(|_| {
            raise(
                PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
                "plaintext: too long for AES-GCM",
                None,
                "",
            )
        });
    let mut out = Vec::with_capacity(1 + NONCE_LEN + sealed.len());
    out.push(FORMAT_V1);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&sealed);
    out
}

fn open(key: &Key, ciphertext: &[u8], aad: &str) -> Vec<u8> {
    if ciphertext.len() < 1 + NONCE_LEN + TAG_LEN {
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_BINARY_REPRESENTATION,
            "ciphertext: too short to be a FlowTrack ciphertext",
            Some(format!(
                "{} bytes; version, nonce and tag alone take {}",
                ciphertext.len(),
                1 + NONCE_LEN + TAG_LEN
            )),
            "Pass the ciphertext flowtrack.encrypt_secret returned, unchanged.",
        );
    }
    if ciphertext[0] != FORMAT_V1 {
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_BINARY_REPRESENTATION,
            format!("ciphertext: unknown format version {}", ciphertext[0]),
            None,
            "This build reads format 1; pass the ciphertext flowtrack.encrypt_secret returned, unchanged.",
        );
    }
    let nonce: [u8; NONCE_LEN] = ciphertext[1..1 + NONCE_LEN]
        .try_into()
        .expect("the length was checked");
    let ad = associated_data(FORMAT_V1, &key.id, aad);
    key.cipher
        .decrypt(
            &Nonce::from(nonce),
            Payload {
                msg: &ciphertext[1 + NONCE_LEN..],
                aad: &ad,
            },
        )
        .unwrap_or_else(|_| {
            raise(
                PgSqlErrorCode::ERRCODE_EXTERNAL_ROUTINE_INVOCATION_EXCEPTION,
                "ciphertext: authentication failed (tampered data, wrong aad or wrong key)",
                Some(format!("key_id {}, {} bytes", key.id, ciphertext.len())),
                "Pass the aad the value was encrypted with (for connections 'connection:' || id); a ciphertext copied to another row or altered never decrypts.",
            )
        })
}

fn require_aad(aad: &str) {
    if aad.is_empty() {
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            "aad: must not be empty",
            None,
            "Bind the ciphertext to its row, e.g. 'connection:' || id, so it cannot be moved to another row.",
        );
    }
}

/// Encrypt `plaintext` with AES-256-GCM under the active key (or `key_id`),
/// bound to `aad`. Returns the key id to store beside the ciphertext.
#[pg_extern(volatile, parallel_safe)]
fn encrypt_secret(
    plaintext: Option<&str>,
    aad: Option<&str>,
    key_id: default!(Option<&str>, "NULL"),
) -> TableIterator<'static, (name!(key_id, String), name!(ciphertext, Vec<u8>))> {
    let Some(plaintext) = plaintext else {
        raise(
            PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
            "plaintext: must not be NULL",
            None,
            "Encrypt a value, or delete the row that would hold it.",
        );
    };
    let Some(aad) = aad else {
        raise(
            PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
            "aad: must not be NULL",
            None,
            "Bind the ciphertext to its row, e.g. 'connection:' || id.",
        );
    };
    require_aad(aad);
    let ring = keyring();
    let id = match key_id {
        Some(id) => id.to_string(),
        None => active_id(&ring),
    };
    let key = ring.get(&id).unwrap_or_else(|| unknown_key(&id));
    let ciphertext = seal(key, plaintext.as_bytes(), aad);
    TableIterator::once((id, ciphertext))
}

/// Decrypt what [`encrypt_secret`] returned, given the same key id and aad.
#[pg_extern(stable, strict, parallel_safe)]
fn decrypt_secret(key_id: &str, ciphertext: &[u8], aad: &str) -> String {
    require_aad(aad);
    let ring = keyring();
    let key = ring.get(key_id).unwrap_or_else(|| unknown_key(key_id));
    let plaintext = open(key, ciphertext, aad);
    String::from_utf8(plaintext).unwrap_or_else(|_| {
        raise(
            PgSqlErrorCode::ERRCODE_CHARACTER_NOT_IN_REPERTOIRE,
            "plaintext: the decrypted value is not UTF-8 text",
            None,
            "encrypt_secret only encrypts text; this ciphertext was made elsewhere.",
        )
    })
}

/// The id of the key new encryptions use: `flowtrack.active_key_id`, else
/// the key file's first key.
#[pg_extern(stable, parallel_safe)]
fn active_key_id() -> String {
    active_id(&keyring())
}

extension_sql!(
    r#"
COMMENT ON FUNCTION flowtrack.jwt_sign(jsonb, text) IS
  'Signs a claims object as an HS256 JWT for PostgREST; the secret must be the API''s jwt-secret (>= 32 chars).';
COMMENT ON FUNCTION flowtrack.encrypt_secret(text, text, text) IS
  'AES-256-GCM encryption under the active key of flowtrack.key_file (or key_id), bound to aad (e.g. ''connection:'' || id). Returns the key id to store beside the ciphertext (version byte || 12-byte nonce || ciphertext || tag). Not executable by API roles.';
COMMENT ON FUNCTION flowtrack.decrypt_secret(text, bytea, text) IS
  'Decrypts an encrypt_secret ciphertext with the named key and the same aad. 39000 when tampered or bound to another aad, 42704 for a key not in the key file. Not executable by API roles.';
COMMENT ON FUNCTION flowtrack.active_key_id() IS
  'Id of the key new encryptions use: flowtrack.active_key_id, else the first key of flowtrack.key_file.';
"#,
    name = "comments_crypto",
    requires = [jwt_sign, encrypt_secret, decrypt_secret, active_key_id]
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

    // The tests run inside the backend, as the server's OS user, so they
    // write their own key files and point this transaction at them.

    use base64::engine::general_purpose::STANDARD;
    use base64::Engine;
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;

    fn random_key() -> String {
        let mut k = [0u8; 32];
        getrandom::fill(&mut k).unwrap();
        STANDARD.encode(k)
    }

    /// A key file written for one test; removed when the test ends, also
    /// when it ends in an ERROR (which unwinds).
    struct KeyFile(String);

    impl Drop for KeyFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    /// Write `text` to a fresh key file (mode 0600) and use it for the rest
    /// of this test's transaction.
    #[must_use]
    fn use_key_file(text: &str) -> KeyFile {
        let mut tag = [0u8; 8];
        getrandom::fill(&mut tag).unwrap();
        let path = std::env::temp_dir().join(format!(
            "flowtrack-pgtest-{}-{}.keys",
            std::process::id(),
            u64::from_le_bytes(tag)
        ));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .unwrap();
        f.write_all(text.as_bytes()).unwrap();
        let path = path.to_str().unwrap().to_string();
        Spi::run_with_args(
            "SELECT set_config('flowtrack.key_file', $1, true)",
            &[path.as_str().into()],
        )
        .unwrap();
        KeyFile(path)
    }

    fn keys(ids: &[&str]) -> String {
        ids.iter()
            .map(|id| format!("{id}={}\n", random_key()))
            .collect()
    }

    fn encrypt(plaintext: &str, aad: &str) -> (String, Vec<u8>) {
        Spi::get_two_with_args::<String, Vec<u8>>(
            "SELECT key_id, ciphertext FROM flowtrack.encrypt_secret($1, $2)",
            &[plaintext.into(), aad.into()],
        )
        .map(|(k, c)| (k.unwrap(), c.unwrap()))
        .unwrap()
    }

    fn decrypt(key_id: &str, ciphertext: &[u8], aad: &str) -> String {
        Spi::get_one_with_args::<String>(
            "SELECT flowtrack.decrypt_secret($1, $2, $3)",
            &[key_id.into(), ciphertext.into(), aad.into()],
        )
        .unwrap()
        .unwrap()
    }

    #[pg_test]
    fn secrets_round_trip_under_the_first_key_with_fresh_nonces() {
        let _keys = use_key_file(&format!("# test keys\n\n{}", keys(&["k1", "k0"])));
        let (key_id, ct) = encrypt("{\"api_key\":\"re_123\"}", "connection:a");
        assert_eq!(key_id, "k1", "the first key encrypts");
        assert_eq!(ct[0], 1, "format version byte");
        assert_eq!(ct.len(), 1 + 12 + "{\"api_key\":\"re_123\"}".len() + 16);
        assert_eq!(
            decrypt("k1", &ct, "connection:a"),
            "{\"api_key\":\"re_123\"}"
        );
        let (_, again) = encrypt("{\"api_key\":\"re_123\"}", "connection:a");
        assert_ne!(ct, again, "every encryption draws a new nonce");
        let active = Spi::get_one::<String>("SELECT flowtrack.active_key_id()").unwrap();
        assert_eq!(active.as_deref(), Some("k1"));
    }

    #[pg_test]
    fn older_keys_still_decrypt_and_active_key_id_picks_the_encrypting_key() {
        let old = keys(&["old"]);
        let _old = use_key_file(&old);
        let (key_id, ct) = encrypt("s3cret", "connection:b");
        assert_eq!(key_id, "old");
        // A new key is rolled in at the top; the old one stays for decryption.
        let _new = use_key_file(&format!("{}{old}", keys(&["new"])));
        assert_eq!(decrypt("old", &ct, "connection:b"), "s3cret");
        assert_eq!(encrypt("x", "connection:b").0, "new");
        Spi::run("SELECT set_config('flowtrack.active_key_id', 'old', true)").unwrap();
        assert_eq!(encrypt("x", "connection:b").0, "old");
        let (k, ct2) = Spi::get_two::<String, Vec<u8>>(
            "SELECT key_id, ciphertext FROM flowtrack.encrypt_secret('y', 'connection:b', 'new')",
        )
        .unwrap();
        assert_eq!(k.as_deref(), Some("new"), "an explicit key_id wins");
        assert_eq!(decrypt("new", &ct2.unwrap(), "connection:b"), "y");
    }

    #[pg_test(error = "ciphertext: authentication failed (tampered data, wrong aad or wrong key)")]
    fn tampered_ciphertext_is_refused() {
        let _keys = use_key_file(&keys(&["k1"]));
        let (key_id, mut ct) = encrypt("hunter2", "connection:c");
        let last = ct.len() - 1;
        ct[last] ^= 0x01;
        decrypt(&key_id, &ct, "connection:c");
    }

    #[pg_test(error = "ciphertext: authentication failed (tampered data, wrong aad or wrong key)")]
    fn flipped_ciphertext_body_is_refused() {
        let _keys = use_key_file(&keys(&["k1"]));
        let (key_id, mut ct) = encrypt("hunter2", "connection:c");
        ct[1 + 12] ^= 0x80;
        decrypt(&key_id, &ct, "connection:c");
    }

    #[pg_test(error = "ciphertext: authentication failed (tampered data, wrong aad or wrong key)")]
    fn ciphertext_moved_to_another_row_is_refused() {
        let _keys = use_key_file(&keys(&["k1"]));
        let (key_id, ct) = encrypt("hunter2", "connection:row-1");
        decrypt(&key_id, &ct, "connection:row-2");
    }

    #[pg_test(error = "ciphertext: authentication failed (tampered data, wrong aad or wrong key)")]
    fn relabelled_key_id_is_refused() {
        let _keys = use_key_file(&keys(&["k1", "k2"]));
        let (_, ct) = encrypt("hunter2", "connection:d");
        decrypt("k2", &ct, "connection:d");
    }

    #[pg_test(error = "key_id: no key \"gone\" in the key file")]
    fn unknown_key_id_is_refused() {
        let _keys = use_key_file(&keys(&["k1"]));
        let (_, ct) = encrypt("hunter2", "connection:e");
        decrypt("gone", &ct, "connection:e");
    }

    #[pg_test(error = "ciphertext: unknown format version 7")]
    fn unknown_format_version_is_refused() {
        let _keys = use_key_file(&keys(&["k1"]));
        let (key_id, mut ct) = encrypt("hunter2", "connection:f");
        ct[0] = 7;
        decrypt(&key_id, &ct, "connection:f");
    }

    #[pg_test(error = "ciphertext: too short to be a FlowTrack ciphertext")]
    fn truncated_ciphertext_is_refused() {
        let _keys = use_key_file(&keys(&["k1"]));
        let (key_id, ct) = encrypt("hunter2", "connection:g");
        decrypt(&key_id, &ct[..20], "connection:g");
    }

    #[pg_test(error = "aad: must not be empty")]
    fn empty_aad_is_refused() {
        let _keys = use_key_file(&keys(&["k1"]));
        encrypt("hunter2", "");
    }

    #[pg_test(error = "flowtrack.key_file is not set: secrets cannot be encrypted or decrypted")]
    fn unset_key_file_is_refused() {
        Spi::run("SELECT set_config('flowtrack.key_file', '', true)").unwrap();
        encrypt("hunter2", "connection:h");
    }

    #[pg_test(
        error = "flowtrack.key_file: cannot read the key file (No such file or directory (os error 2))"
    )]
    fn missing_key_file_is_refused() {
        Spi::run("SELECT set_config('flowtrack.key_file', '/nonexistent/flowtrack.keys', true)")
            .unwrap();
        encrypt("hunter2", "connection:i");
    }

    #[pg_test(error = "flowtrack.key_file: is accessible by other users (mode 0644)")]
    fn world_readable_key_file_is_refused() {
        let file = use_key_file(&keys(&["k1"]));
        // The mode is set after creation so the process umask cannot mask it.
        std::fs::set_permissions(&file.0, std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .unwrap();
        encrypt("hunter2", "connection:j");
    }

    #[pg_test(error = "flowtrack.key_file: line 2: key \"short\" is 16 bytes, AES-256 needs 32")]
    fn short_key_is_refused() {
        let _keys = use_key_file(&format!(
            "k1={}\nshort={}\n",
            random_key(),
            STANDARD.encode([7u8; 16])
        ));
        encrypt("hunter2", "connection:k");
    }

    #[pg_test(error = "flowtrack.active_key_id: key \"k9\" is not in the key file")]
    fn active_key_id_must_be_in_the_key_file() {
        let _keys = use_key_file(&keys(&["k1"]));
        Spi::run("SELECT set_config('flowtrack.active_key_id', 'k9', true)").unwrap();
        encrypt("hunter2", "connection:l");
    }

    #[pg_test]
    fn errors_carry_their_sqlstates() {
        let _keys = use_key_file(&keys(&["k1"]));
        let (_, ct) = encrypt("hunter2", "connection:m");
        let ct_hex: String = ct.iter().map(|b| format!("{b:02x}")).collect();
        // Each case runs in a subtransaction and reports the SQLSTATE it raised.
        let cases = [
            (
                format!("SELECT flowtrack.decrypt_secret('k1', '\\x{ct_hex}', 'connection:other')"),
                "39000",
            ),
            (
                format!("SELECT flowtrack.decrypt_secret('nope', '\\x{ct_hex}', 'connection:m')"),
                "42704",
            ),
            (
                "SELECT flowtrack.decrypt_secret('k1', '\\x0102', 'connection:m')".to_string(),
                "22P03",
            ),
            (
                "SELECT flowtrack.encrypt_secret('x', '')".to_string(),
                "22023",
            ),
            (
                "SELECT flowtrack.encrypt_secret(NULL, 'connection:m')".to_string(),
                "22004",
            ),
        ];
        Spi::run(
            "CREATE FUNCTION pg_temp.sqlstate_of(q text) RETURNS text LANGUAGE plpgsql AS $f$
             BEGIN EXECUTE q; RETURN 'no error'; EXCEPTION WHEN OTHERS THEN RETURN SQLSTATE; END $f$",
        )
        .unwrap();
        for (sql, want) in cases {
            let got = Spi::get_one_with_args::<String>(
                "SELECT pg_temp.sqlstate_of($1)",
                &[sql.as_str().into()],
            )
            .unwrap();
            assert_eq!(got.as_deref(), Some(want), "{sql}");
        }
        Spi::run("SELECT set_config('flowtrack.key_file', '/nonexistent/flowtrack.keys', true)")
            .unwrap();
        let got = Spi::get_one::<String>(
            "SELECT pg_temp.sqlstate_of('SELECT flowtrack.active_key_id()')",
        )
        .unwrap();
        assert_eq!(
            got.as_deref(),
            Some("F0000"),
            "a missing key file is a config file error"
        );
    }
}

#[cfg(test)]
mod unit {
    use super::{check_permissions, parse_keyring};

    #[test]
    fn key_file_lines_are_parsed_in_order_and_checked() {
        let k = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
        let ring = parse_keyring(&format!("# c\n\n b = {k} \r\na={k}\n")).unwrap();
        let ids: Vec<&str> = ring.keys.iter().map(|k| k.id.as_str()).collect();
        assert_eq!(ids, ["b", "a"]);
        let err = |t: &str| parse_keyring(t).err().unwrap().0;
        assert_eq!(err("# only comments\n"), "holds no key");
        assert_eq!(err("k1\n"), "line 1 is not key_id=base64");
        assert_eq!(
            err(&format!("a={k}\na={k}\n")),
            "line 2: key id \"a\" appears twice"
        );
        assert_eq!(err("k1=!!!\n"), "line 1: key \"k1\" is not base64");
        assert_eq!(
            err(&format!("bad id={k}\n")),
            "line 1: key id \"bad id\" must be 1 to 64 of A-Z a-z 0-9 _ . -"
        );
    }

    #[test]
    fn key_file_permissions_follow_the_ssl_key_rule() {
        let dir = std::env::temp_dir().join(format!("flowtrack-perm-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("k");
        std::fs::write(&f, "x").unwrap();
        let mode = |m: u32| {
            std::fs::set_permissions(&f, std::os::unix::fs::PermissionsExt::from_mode(m)).unwrap();
            check_permissions(&std::fs::metadata(&f).unwrap()).is_ok()
        };
        let root = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&f).unwrap()) == 0;
        assert!(mode(0o600));
        assert!(mode(0o400));
        assert!(!mode(0o644));
        assert!(!mode(0o604));
        assert_eq!(mode(0o640), root, "group read only for root-owned files");
        assert!(!mode(0o660));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
