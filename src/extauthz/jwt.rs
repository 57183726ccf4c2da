//! Reads one claim of a bearer JWT **without verifying its signature**.
//!
//! This is only safe as a pre-filter in front of a server that verifies
//! the token itself, as Azure Resource Manager does: a forged token gets
//! past rampart as whoever it names, and ARM then refuses it. It stops an
//! honest agent from doing what it may not; it does not stop a forger. To
//! rely on the identity, take it from Envoy's `jwt_authn` filter (which
//! verifies) or from mutual TLS instead (docs/ext-authz.md).
//!
//! Sizes are bounded before anything is decoded, and every failure is an
//! error, never a panic.

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;

/// The longest token read, in bytes. Entra ID access tokens are 1–3 KB;
/// one with many group claims stays well under this.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

/// base64url as JWTs write it (no padding), also accepting padding.
const BASE64URL: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Why no claim could be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("the request has no 'authorization: Bearer' header")]
    NoBearer,
    #[error("the bearer token is {0} bytes; the limit is {MAX_TOKEN_LEN}")]
    TooLong(usize),
    #[error("the bearer token is not a JWT (three base64url parts separated by '.')")]
    NotAJwt,
    #[error("the bearer token's payload is not base64url")]
    BadBase64,
    #[error("the bearer token's payload is not a JSON object")]
    NotJson,
    #[error("the bearer token has no '{0}' claim")]
    MissingClaim(String),
    #[error("the bearer token's '{0}' claim is not a non-empty string")]
    NotAString(String),
    #[error("the bearer token has the '{0}' claim twice")]
    Twice(String),
}

/// The token of an `authorization` header value `Bearer <token>` (the
/// scheme in any case, as HTTP allows).
pub fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    let token = token.trim_start();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The string claim `claim` of a compact JWT, signature unverified.
pub fn unverified_claim(token: &str, claim: &str) -> Result<String, JwtError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(JwtError::TooLong(token.len()));
    }
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(_signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::NotAJwt);
    };
    if header.is_empty() || payload.is_empty() {
        return Err(JwtError::NotAJwt);
    }
    let bytes = BASE64URL.decode(payload).map_err(|_| JwtError::BadBase64)?;
    // serde_json bounds nesting (128 levels), so a hostile payload cannot
    // exhaust the stack; its size is bounded by MAX_TOKEN_LEN. Only the one
    // claim is kept: the others are skipped without being built.
    let found = serde::de::DeserializeSeed::deserialize(
        OneClaim(claim),
        &mut serde_json::Deserializer::from_slice(&bytes),
    )
    .map_err(|_| JwtError::NotJson)?;
    match found {
        Found::Missing => Err(JwtError::MissingClaim(claim.to_owned())),
        Found::Twice => Err(JwtError::Twice(claim.to_owned())),
        Found::Value(serde_json::Value::String(s)) if !s.is_empty() => Ok(s),
        Found::Value(_) => Err(JwtError::NotAString(claim.to_owned())),
    }
}

/// How many tokens each thread remembers.
const REMEMBERED: usize = 16;
/// Tokens longer than this are read every time (Entra ID's are 1–3 KB), so
/// what a thread remembers stays under `REMEMBERED` × 4 KB.
const MAX_REMEMBERED_TOKEN: usize = 4 * 1024;

/// The claims of the last tokens read, by the `authorization` header that
/// carried them. An agent sends the same token for the token's lifetime (an
/// hour, for Entra ID), and base64 and JSON made reading it the costliest
/// step of a check; reading is a pure function of (header, claim), so
/// remembering its result changes no answer. Entries are found by length
/// and the last bytes (the token's signature), then compared whole; the
/// oldest is replaced first.
#[derive(Default)]
pub struct RecentClaims {
    slots: Vec<Remembered>,
    next: usize,
}

struct Remembered {
    fingerprint: (usize, u64),
    header: Box<[u8]>,
    claim: Box<str>,
    value: Box<str>,
}

/// Length and last eight bytes: cheap, and unlike for most tokens.
fn fingerprint(bytes: &[u8]) -> (usize, u64) {
    let mut tail = [0u8; 8];
    let from = bytes.len().saturating_sub(8);
    tail[..bytes.len() - from].copy_from_slice(&bytes[from..]);
    (bytes.len(), u64::from_le_bytes(tail))
}

impl RecentClaims {
    /// The claim of a header's token read before, if remembered.
    pub fn get(&self, header: &[u8], claim: &str) -> Option<&str> {
        let fingerprint = fingerprint(header);
        self.slots
            .iter()
            .find(|r| r.fingerprint == fingerprint && *r.header == *header && *r.claim == *claim)
            .map(|r| &*r.value)
    }

    /// Remembers a claim just read, in place of the oldest.
    pub fn remember(&mut self, header: &[u8], claim: &str, value: &str) {
        if header.len() > MAX_REMEMBERED_TOKEN {
            return;
        }
        let entry = Remembered {
            fingerprint: fingerprint(header),
            header: header.into(),
            claim: claim.into(),
            value: value.into(),
        };
        if self.slots.len() < REMEMBERED {
            self.slots.push(entry);
        } else {
            self.slots[self.next] = entry;
            self.next = (self.next + 1) % REMEMBERED;
        }
    }
}

/// The claim of the bearer token in an `authorization` header's value, its
/// signature unverified; remembered per thread (no lock), so a token seen
/// again costs a comparison instead of a decode.
pub fn bearer_claim(header: &[u8], claim: &str) -> Result<String, JwtError> {
    thread_local! {
        static RECENT: std::cell::RefCell<RecentClaims> = std::cell::RefCell::default();
    }
    RECENT.with_borrow_mut(|recent| {
        if let Some(value) = recent.get(header, claim) {
            return Ok(value.to_owned());
        }
        let text = std::str::from_utf8(header).map_err(|_| JwtError::NoBearer)?;
        let token = bearer_token(text).ok_or(JwtError::NoBearer)?;
        let value = unverified_claim(token, claim)?;
        recent.remember(header, claim, &value);
        Ok(value)
    })
}

/// What a payload says of one claim.
enum Found {
    Missing,
    /// Written twice: readers disagree on which counts, so neither does.
    Twice,
    Value(serde_json::Value),
}

/// Reads a JSON object, keeping the value of one key.
struct OneClaim<'c>(&'c str);

impl<'de> serde::de::DeserializeSeed<'de> for OneClaim<'_> {
    type Value = Found;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Found, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for OneClaim<'_> {
    type Value = Found;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object of claims")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Found, A::Error> {
        let mut found = Found::Missing;
        while let Some(is_claim) = map.next_key_seed(KeyIs(self.0))? {
            if !is_claim {
                map.next_value::<serde::de::IgnoredAny>()?;
            } else if matches!(found, Found::Missing) {
                found = Found::Value(map.next_value()?);
            } else {
                map.next_value::<serde::de::IgnoredAny>()?;
                found = Found::Twice;
            }
        }
        Ok(found)
    }
}

/// Compares a key with the claim's name without allocating.
struct KeyIs<'c>(&'c str);

impl<'de> serde::de::DeserializeSeed<'de> for KeyIs<'_> {
    type Value = bool;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_str(self)
    }
}

impl serde::de::Visitor<'_> for KeyIs<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a claim name")
    }

    fn visit_str<E: serde::de::Error>(self, key: &str) -> Result<bool, E> {
        Ok(key == self.0)
    }
}

/// A compact JWT with this payload and a dummy signature, for tests and
/// examples (`alg: none` is never what a real token says, and this reader
/// does not care).
pub fn unsigned_token(payload: &serde_json::Value) -> String {
    let header = BASE64URL.encode(br#"{"alg":"RS256","typ":"JWT"}"#);
    let payload = BASE64URL.encode(payload.to_string());
    format!("{header}.{payload}.c2lnbmF0dXJl")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    const OID: &str = "6f1e7d4c-0000-4000-8000-0000000000a1";

    #[test]
    fn reads_the_oid_claim() {
        let token = unsigned_token(&json!({ "oid": OID, "aud": "https://management.azure.com" }));
        assert_eq!(unverified_claim(&token, "oid").as_deref(), Ok(OID));
    }

    #[test]
    fn bearer_scheme_is_case_insensitive_and_required() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer  abc"), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer "), None);
        assert_eq!(bearer_token("abc"), None);
    }

    #[test]
    fn padded_payloads_are_read_too() {
        let payload =
            base64::engine::general_purpose::URL_SAFE.encode(json!({"oid": "x"}).to_string());
        assert_eq!(
            unverified_claim(&format!("e30.{payload}.sig"), "oid").as_deref(),
            Ok("x")
        );
    }

    #[test]
    fn each_malformation_has_its_error() {
        assert_eq!(unverified_claim("a.b", "oid"), Err(JwtError::NotAJwt));
        assert_eq!(unverified_claim("a.b.c.d", "oid"), Err(JwtError::NotAJwt));
        assert_eq!(unverified_claim(".e30.x", "oid"), Err(JwtError::NotAJwt));
        assert_eq!(
            unverified_claim("e30.!!!.x", "oid"),
            Err(JwtError::BadBase64)
        );
        let array = BASE64URL.encode("[1,2]");
        assert_eq!(
            unverified_claim(&format!("e30.{array}.x"), "oid"),
            Err(JwtError::NotJson)
        );
        let token = unsigned_token(&json!({ "sub": "x" }));
        assert_eq!(
            unverified_claim(&token, "oid"),
            Err(JwtError::MissingClaim("oid".into()))
        );
        for bad in [
            json!({ "oid": 7 }),
            json!({ "oid": "" }),
            json!({ "oid": ["a"] }),
        ] {
            assert_eq!(
                unverified_claim(&unsigned_token(&bad), "oid"),
                Err(JwtError::NotAString("oid".into()))
            );
        }
    }

    #[test]
    fn a_claim_written_twice_counts_for_neither() {
        let payload = BASE64URL.encode(format!(
            r#"{{"oid":"{OID}","sub":"x","oid":"someone-else"}}"#
        ));
        assert_eq!(
            unverified_claim(&format!("e30.{payload}.x"), "oid"),
            Err(JwtError::Twice("oid".into()))
        );
    }

    #[test]
    fn escaped_keys_and_nested_claims_are_read() {
        let payload = BASE64URL.encode(format!(
            r#"{{"groups":["a","b"],"xms":{{"oid":"nested"}},"\u006fid":"{OID}"}}"#
        ));
        assert_eq!(
            unverified_claim(&format!("e30.{payload}.x"), "oid").as_deref(),
            Ok(OID)
        );
    }

    #[test]
    fn oversized_tokens_are_refused_before_decoding() {
        let token = "a".repeat(MAX_TOKEN_LEN + 1);
        assert_eq!(
            unverified_claim(&token, "oid"),
            Err(JwtError::TooLong(MAX_TOKEN_LEN + 1))
        );
    }

    #[test]
    fn deep_nesting_never_overflows_the_stack() {
        let deep = |key: &str| {
            let json = format!("{{\"{key}\":{}1{}}}", "[".repeat(5000), "]".repeat(5000));
            format!("e30.{}.x", BASE64URL.encode(json))
        };
        // Skipped claims are skipped without recursion; the claim itself is
        // built, within serde_json's nesting limit.
        assert_eq!(
            unverified_claim(&deep("groups"), "oid"),
            Err(JwtError::MissingClaim("oid".into()))
        );
        assert_eq!(
            unverified_claim(&deep("oid"), "oid"),
            Err(JwtError::NotJson)
        );
    }

    fn bearer(token: &str) -> Vec<u8> {
        format!("Bearer {token}").into_bytes()
    }

    #[test]
    fn remembered_claims_answer_as_reading_does() {
        let alice = bearer(&unsigned_token(&json!({ "oid": OID })));
        let bob = bearer(&unsigned_token(&json!({ "oid": "bob" })));
        for _ in 0..2 {
            assert_eq!(bearer_claim(&alice, "oid").as_deref(), Ok(OID));
            assert_eq!(bearer_claim(&bob, "oid").as_deref(), Ok("bob"));
            // Another claim of a remembered token is read, not remembered.
            assert_eq!(
                bearer_claim(&alice, "sub"),
                Err(JwtError::MissingClaim("sub".into()))
            );
        }
        assert_eq!(bearer_claim(b"Basic abc", "oid"), Err(JwtError::NoBearer));
        assert_eq!(bearer_claim(b"Bearer \xff", "oid"), Err(JwtError::NoBearer));
    }

    #[test]
    fn a_token_that_shares_a_fingerprint_is_still_compared_whole() {
        let mut recent = RecentClaims::default();
        let real = format!(
            "e30.{}.same-signature",
            BASE64URL.encode(r#"{"oid":"alice"}"#)
        );
        // Same length and last bytes, other payload.
        let forged = format!(
            "e30.{}.same-signature",
            BASE64URL.encode(r#"{"oid":"mally"}"#)
        );
        assert_eq!(real.len(), forged.len());
        recent.remember(real.as_bytes(), "oid", "alice");
        assert_eq!(recent.get(real.as_bytes(), "oid"), Some("alice"));
        assert_eq!(recent.get(forged.as_bytes(), "oid"), None);
        assert_eq!(recent.get(real.as_bytes(), "sub"), None);
    }

    #[test]
    fn the_oldest_is_forgotten_first_and_long_tokens_never_kept() {
        let mut recent = RecentClaims::default();
        let tokens: Vec<String> = (0..=REMEMBERED).map(|i| format!("t.{i}.x")).collect();
        for t in &tokens {
            recent.remember(t.as_bytes(), "oid", t);
        }
        assert_eq!(recent.get(tokens[0].as_bytes(), "oid"), None);
        for t in &tokens[1..] {
            assert_eq!(recent.get(t.as_bytes(), "oid"), Some(t.as_str()));
        }
        let long = "a".repeat(MAX_REMEMBERED_TOKEN + 1);
        recent.remember(long.as_bytes(), "oid", "x");
        assert_eq!(recent.get(long.as_bytes(), "oid"), None);
    }

    proptest! {
        #[test]
        fn never_panics_on_any_text(token in ".{0,300}", claim in "[a-z]{0,5}") {
            let _ = unverified_claim(&token, &claim);
            let _ = bearer_token(&token);
        }

        #[test]
        fn never_panics_on_any_payload_bytes(payload in proptest::collection::vec(any::<u8>(), 0..400)) {
            let token = format!("e30.{}.x", BASE64URL.encode(&payload));
            let _ = unverified_claim(&token, "oid");
        }

        #[test]
        fn reads_back_any_string_claim(oid in "[ -~]{1,64}") {
            let token = unsigned_token(&json!({ "oid": oid.clone() }));
            prop_assert_eq!(unverified_claim(&token, "oid"), Ok(oid.clone()));
            prop_assert_eq!(bearer_claim(&bearer(&token), "oid"), Ok(oid.clone()));
            prop_assert_eq!(bearer_claim(&bearer(&token), "oid"), Ok(oid));
        }

        /// Whatever was read before, the remembered answer is the read one.
        #[test]
        fn remembering_changes_no_answer(tokens in proptest::collection::vec(".{0,40}", 1..40)) {
            let payload = BASE64URL.encode(r#"{"oid":"x"}"#);
            let tokens: Vec<String> = tokens
                .iter()
                .enumerate()
                .map(|(i, t)| if i % 2 == 0 { format!("e30.{payload}.{t}") } else { t.clone() })
                .collect();
            for token in tokens.iter().chain(tokens.iter().rev()) {
                let read = bearer_token(&format!("Bearer {token}"))
                    .ok_or(JwtError::NoBearer)
                    .and_then(|t| unverified_claim(t, "oid"));
                prop_assert_eq!(bearer_claim(&bearer(token), "oid"), read);
            }
        }
    }
}
