//! Exact-change approvals (docs/agents-and-elevation.md#exact-change-approvals):
//! an elevation may carry the HTTP request it is for — method, path and the
//! SHA-256 of its body — and an approval may be bound to that body, so the
//! grant allows that one change and nothing else.
//!
//! The digest travels as a request attribute ([`DIGEST_ATTRIBUTE`]): it
//! makes two requests with different bodies two elevations, and the engine
//! compares a bound grant's digest with the request's without allocating.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::elevation::ElevationError;

pub use crate::engine::grants::DIGEST_ATTRIBUTE;

/// The most characters of a body preview kept for approvers.
pub const MAX_PREVIEW: usize = 16 * 1024;

/// The longest method and path kept.
pub const MAX_PATH: usize = 2048;

/// What the approver is shown in place of a secret-looking value.
pub const REDACTED: &str = "[REDACTED]";

/// The HTTP request an elevation is for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExactRequest {
    #[serde(default)]
    pub method: String,
    #[serde(default)]
    pub path: String,
    /// Lowercase hex SHA-256 of the body.
    pub digest: String,
    /// The body for approvers: JSON pretty-printed with secret-looking
    /// values redacted; `None` when the body was not sent or is not JSON.
    #[serde(default)]
    pub body_preview: Option<String>,
}

/// The lowercase hex SHA-256 of `body`, written into `out` (no allocation,
/// for the ext_authz path).
pub fn sha256_hex_into<'b>(body: &[u8], out: &'b mut [u8; 64]) -> &'b str {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = Sha256::digest(body);
    for (i, b) in digest.iter().enumerate() {
        out[2 * i] = HEX[(b >> 4) as usize];
        out[2 * i + 1] = HEX[(b & 0xf) as usize];
    }
    // Only ASCII hex digits were written.
    std::str::from_utf8(out).unwrap_or_default()
}

/// The lowercase hex SHA-256 of `body`.
pub fn sha256_hex(body: &[u8]) -> String {
    let mut out = [0u8; 64];
    sha256_hex_into(body, &mut out).to_owned()
}

/// A digest as a caller gives it — 64 hex digits, optionally after
/// `sha256:` — in lowercase.
pub fn parse_digest(text: &str) -> Result<String, ElevationError> {
    let hex = text.strip_prefix("sha256:").unwrap_or(text);
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ElevationError::InvalidRequest {
            field: "request_digest",
            message: "request_digest must be the SHA-256 of the request body: 64 hex digits, optionally prefixed sha256:".into(),
        });
    }
    Ok(hex.to_ascii_lowercase())
}

/// Whether a JSON key names something secret: passwords, keys, tokens,
/// connection strings, signatures. Erring towards redaction.
pub fn is_secret_key(key: &str) -> bool {
    let k: String = key
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect();
    const PARTS: [&str; 14] = [
        "password",
        "passwd",
        "pwd",
        "secret",
        "token",
        "apikey",
        "accesskey",
        "privatekey",
        "connectionstring",
        "credential",
        "authorization",
        "signature",
        "cookie",
        "certificate",
    ];
    PARTS.iter().any(|p| k.contains(p))
        || k.ends_with("key")
        || k.ends_with("keys")
        || k.starts_with("sas")
}

/// `value` with every secret-looking key's value replaced by [`REDACTED`].
fn redact(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                if is_secret_key(k) {
                    *v = serde_json::Value::String(REDACTED.into());
                } else {
                    redact(v);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(redact),
        _ => {}
    }
}

/// The body as approvers see it: JSON, pretty-printed, secret-looking
/// values redacted, cut to [`MAX_PREVIEW`] characters. `None` for an empty
/// body or one that is not JSON (shown as its size and digest only: there
/// is no telling what in it is secret).
pub fn preview(body: &[u8]) -> Option<String> {
    if body.is_empty() {
        return None;
    }
    let mut value: serde_json::Value = serde_json::from_slice(body).ok()?;
    redact(&mut value);
    let text = serde_json::to_string_pretty(&value).ok()?;
    if text.chars().count() <= MAX_PREVIEW {
        return Some(text);
    }
    let mut cut: String = text.chars().take(MAX_PREVIEW).collect();
    cut.push_str("\n… (cut)");
    Some(cut)
}

/// The request an elevation is for: method and path bounded, the digest of
/// `body` when given (checked against `digest` when both are), else
/// `digest` as given. `None` when neither is given.
pub fn exact_request(
    method: &str,
    path: &str,
    digest: &str,
    body: Option<&[u8]>,
) -> Result<Option<ExactRequest>, ElevationError> {
    let given = if digest.is_empty() {
        None
    } else {
        Some(parse_digest(digest)?)
    };
    let body = body.filter(|b| !b.is_empty());
    let digest = match (given, body) {
        (None, None) => return Ok(None),
        (Some(d), None) => d,
        (given, Some(b)) => {
            let actual = sha256_hex(b);
            if given.as_ref().is_some_and(|d| *d != actual) {
                return Err(ElevationError::InvalidRequest {
                    field: "request_digest",
                    message: "request_digest is not the SHA-256 of request_body".into(),
                });
            }
            actual
        }
    };
    let bounded = |text: &str| -> String {
        text.chars()
            .filter(|c| !c.is_control())
            .take(MAX_PATH)
            .collect()
    };
    Ok(Some(ExactRequest {
        method: bounded(method),
        path: bounded(path),
        digest,
        body_preview: body.and_then(preview),
    }))
}

/// Whether an approval binds the grant to the request's digest: as the
/// approver says, else by default for a write whose request is known.
pub fn binds(asked: Option<bool>, known: bool, read_only: bool) -> Result<bool, ElevationError> {
    match asked {
        Some(true) if !known => Err(ElevationError::InvalidRequest {
            field: "bind_to_request",
            message: "the elevation carries no request digest to bind to".into(),
        }),
        Some(b) => Ok(b),
        None => Ok(known && !read_only),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn digests_are_lowercase_hex_sha256() {
        assert_eq!(sha256_hex(b""), EMPTY_SHA256);
        let mut buf = [0u8; 64];
        assert_eq!(sha256_hex_into(b"", &mut buf), EMPTY_SHA256);
        assert_eq!(
            parse_digest(&format!("sha256:{}", EMPTY_SHA256.to_ascii_uppercase())).ok(),
            Some(EMPTY_SHA256.to_owned())
        );
        for bad in [
            "",
            "sha256:",
            "abc",
            &format!("{EMPTY_SHA256}0"),
            &"g".repeat(64),
        ] {
            let err = parse_digest(bad).err().map(|e| e.to_string());
            assert!(
                err.as_deref()
                    .is_some_and(|e| e.starts_with("request_digest: request_digest must be")),
                "{bad}: {err:?}"
            );
        }
    }

    #[test]
    fn secret_looking_values_are_redacted_at_any_depth() {
        let body = br#"{"properties":{"adminPassword":{"value":"hunter2"},"osProfile":{"adminUsername":"azureuser","customData":"x"},"accessKeys":["k1","k2"],"client_secret":"s","connectionString":"AccountKey=abc","sasToken":"sv=1","storageAccountKey":"abc","tags":{"env":"prod"}},"items":[{"token":"t"}]}"#;
        let text = preview(body).unwrap_or_default();
        for secret in [
            "hunter2",
            "k1",
            "\"s\"",
            "AccountKey=abc",
            "sv=1",
            "\"abc\"",
            "\"t\"",
        ] {
            assert!(!text.contains(secret), "{secret} leaked:\n{text}");
        }
        for kept in ["azureuser", "\"env\": \"prod\"", "\"customData\": \"x\""] {
            assert!(text.contains(kept), "{kept} missing:\n{text}");
        }
        assert!(text.contains("\"adminPassword\": \"[REDACTED]\""), "{text}");
        // Pretty-printed, one key a line.
        assert!(text.lines().count() > 10, "{text}");
    }

    #[test]
    fn a_body_that_is_not_json_is_not_shown() {
        assert_eq!(preview(b"password=hunter2"), None);
        assert_eq!(preview(b""), None);
        let long = format!("[{}]", vec!["\"abcdefgh\""; 5000].join(","));
        let cut = preview(long.as_bytes()).unwrap_or_default();
        assert!(cut.ends_with("… (cut)"));
        assert!(cut.chars().count() <= MAX_PREVIEW + 10);
    }

    #[test]
    fn the_request_takes_the_bodys_digest_and_refuses_a_mismatch() {
        let body = br#"{"a":1}"#;
        let e = exact_request("PUT", "/x", "", Some(body))
            .ok()
            .flatten()
            .unwrap_or_default();
        assert_eq!(e.digest, sha256_hex(body));
        assert_eq!(e.body_preview.as_deref(), Some("{\n  \"a\": 1\n}"));
        let given = exact_request("", "", &sha256_hex(body), None)
            .ok()
            .flatten()
            .unwrap_or_default();
        assert_eq!(
            (given.digest.as_str(), given.body_preview),
            (e.digest.as_str(), None)
        );
        assert!(exact_request("PUT", "/x", EMPTY_SHA256, Some(body)).is_err());
        assert_eq!(exact_request("", "", "", None).ok(), Some(None));
        let path = exact_request("PUT", "/a\u{1b}[2J\nb", "", Some(body))
            .ok()
            .flatten()
            .unwrap_or_default();
        assert_eq!(path.path, "/a[2Jb");
    }

    #[test]
    fn writes_bind_by_default_when_the_request_is_known() {
        assert_eq!(binds(None, true, false).ok(), Some(true));
        assert_eq!(binds(None, true, true).ok(), Some(false));
        assert_eq!(binds(None, false, false).ok(), Some(false));
        assert_eq!(binds(Some(false), true, false).ok(), Some(false));
        assert_eq!(binds(Some(true), true, true).ok(), Some(true));
        assert!(binds(Some(true), false, false).is_err());
    }

    proptest! {
        /// Any bytes: never a panic; a JSON string value under a secret key
        /// never shows.
        #[test]
        fn previews_never_panic_and_never_show_a_secret(
            body in proptest::collection::vec(any::<u8>(), 0..512),
            secret in "[a-z0-9]{12,24}",
            key in prop::sample::select(vec!["password", "apiKey", "client_secret", "sasToken", "x-ms-token", "Authorization"]),
        ) {
            let _ = preview(&body);
            let json = format!(r#"{{"outer":[{{"{key}":"{secret}","other":1}}]}}"#);
            let shown = preview(json.as_bytes()).unwrap_or_default();
            prop_assert!(!shown.contains(&secret));
            prop_assert!(shown.contains(REDACTED));
        }
    }
}
