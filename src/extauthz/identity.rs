//! Who is asking: the principal id of a request Envoy checks, read from the
//! one source the operator configured. There is no fallback from one source
//! to another: with mutual TLS configured, a bearer token naming someone
//! else changes nothing, and a request without a client certificate has no
//! identity at all.

use envoy_types::pb::google::protobuf::value::Kind;

use super::jwt::{self, JwtError};
use super::wire::{AttributeContext, HttpRequest};
use crate::model::check_principal_id;

/// The claim read from bearer tokens by default: the Entra ID object id,
/// which is what role assignments name.
pub const DEFAULT_CLAIM: &str = "oid";

/// Where the principal id comes from, in the order of preference (the
/// first two are verified by Envoy, the third is as trustworthy as the
/// filter that sets the header, the last is not verified at all).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentitySource {
    /// A string in Envoy's dynamic metadata, e.g. the verified payload the
    /// `jwt_authn` filter writes: `metadata:envoy.filters.http.jwt_authn/payload/oid`.
    Metadata { filter: String, path: Vec<String> },
    /// The peer's mTLS principal (URI SAN, else subject): `mtls`.
    Mtls,
    /// A header Envoy sets (and strips from what the client sent): `header:x-agent-oid`.
    Header(String),
    /// A claim of the `authorization: Bearer` JWT, its signature NOT
    /// verified: `jwt` (the `oid` claim) or `jwt:CLAIM`.
    UnverifiedJwt { claim: String },
}

impl Default for IdentitySource {
    fn default() -> Self {
        IdentitySource::UnverifiedJwt {
            claim: DEFAULT_CLAIM.to_owned(),
        }
    }
}

impl std::str::FromStr for IdentitySource {
    type Err = String;

    /// Parses `metadata:FILTER/KEY[/KEY…]`, `mtls`, `header:NAME`, `jwt` or
    /// `jwt:CLAIM`.
    fn from_str(text: &str) -> Result<Self, String> {
        let (kind, rest) = match text.split_once(':') {
            Some((kind, rest)) => (kind, Some(rest)),
            None => (text, None),
        };
        match (kind, rest) {
            ("mtls", None) => Ok(IdentitySource::Mtls),
            ("jwt", None) => Ok(IdentitySource::default()),
            ("jwt", Some(claim)) if !claim.is_empty() => Ok(IdentitySource::UnverifiedJwt {
                claim: claim.to_owned(),
            }),
            ("header", Some(name))
                if !name.is_empty()
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') =>
            {
                // Envoy hands headers over with lowercase names.
                Ok(IdentitySource::Header(name.to_ascii_lowercase()))
            }
            ("metadata", Some(path)) => {
                let mut parts = path.split('/');
                let filter = parts.next().unwrap_or_default();
                let keys: Vec<String> = parts.map(str::to_owned).collect();
                if filter.is_empty() || keys.is_empty() || keys.iter().any(String::is_empty) {
                    return Err(format!("'{text}': write metadata:FILTER/KEY[/KEY…], e.g. metadata:envoy.filters.http.jwt_authn/payload/oid"));
                }
                Ok(IdentitySource::Metadata {
                    filter: filter.to_owned(),
                    path: keys,
                })
            }
            _ => Err(format!(
                "'{text}' is not an identity source: write metadata:FILTER/KEY[/KEY…], mtls, header:NAME, jwt or jwt:CLAIM"
            )),
        }
    }
}

impl std::fmt::Display for IdentitySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IdentitySource::Metadata { filter, path } => {
                write!(f, "metadata:{filter}/{}", path.join("/"))
            }
            IdentitySource::Mtls => f.write_str("mtls"),
            IdentitySource::Header(name) => write!(f, "header:{name}"),
            IdentitySource::UnverifiedJwt { claim } => write!(f, "jwt:{claim}"),
        }
    }
}

/// Why a request has no usable identity (answered 403 `IdentityNotFound`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("Envoy's metadata has no string at {0}")]
    NoMetadata(String),
    #[error("the connection has no mTLS peer principal")]
    NoPeerPrincipal,
    #[error("the request has no '{0}' header")]
    NoHeader(String),
    #[error(transparent)]
    Jwt(#[from] JwtError),
    #[error("the identity '{id}' is not a valid principal id: {reason}")]
    Invalid { id: String, reason: String },
}

impl IdentitySource {
    /// Whether Envoy or the network vouches for the identity (else it is
    /// read from a token nobody checked here).
    pub fn is_verified(&self) -> bool {
        !matches!(self, IdentitySource::UnverifiedJwt { .. })
    }

    /// The principal id of the request.
    pub fn principal(
        &self,
        attributes: &AttributeContext,
        http: &HttpRequest,
    ) -> Result<String, IdentityError> {
        let id = match self {
            IdentitySource::Metadata { filter, path } => metadata_string(attributes, filter, path)
                .ok_or_else(|| IdentityError::NoMetadata(format!("{filter}/{}", path.join("/"))))?,
            IdentitySource::Mtls => attributes
                .source
                .as_ref()
                .map(|peer| peer.principal.as_str())
                .filter(|p| !p.is_empty())
                .ok_or(IdentityError::NoPeerPrincipal)?
                .to_owned(),
            IdentitySource::Header(name) => http
                .header(name)
                .filter(|v| !v.is_empty())
                .ok_or_else(|| IdentityError::NoHeader(name.clone()))?
                .to_owned(),
            IdentitySource::UnverifiedJwt { claim } => {
                let value = http.header("authorization").ok_or(JwtError::NoBearer)?;
                let token = jwt::bearer_token(value).ok_or(JwtError::NoBearer)?;
                jwt::unverified_claim(token, claim)?
            }
        };
        check_principal_id(&id).map_err(|e| IdentityError::Invalid {
            id: id.chars().take(64).collect(),
            reason: e.to_string(),
        })?;
        Ok(id)
    }
}

/// The string at `filter` → `path` in the request's dynamic metadata.
fn metadata_string(attributes: &AttributeContext, filter: &str, path: &[String]) -> Option<String> {
    let mut fields = &attributes
        .metadata_context
        .as_ref()?
        .filter_metadata
        .get(filter)?
        .fields;
    let (last, walk) = path.split_last()?;
    for key in walk {
        match fields.get(key)?.kind.as_ref()? {
            Kind::StructValue(s) => fields = &s.fields,
            _ => return None,
        }
    }
    match fields.get(last)?.kind.as_ref()? {
        Kind::StringValue(s) if !s.is_empty() => Some(s.clone()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extauthz::wire::Peer;
    use envoy_types::pb::envoy::config::core::v3::Metadata;
    use envoy_types::pb::google::protobuf::{Struct, Value};
    use serde_json::json;

    const ALICE: &str = "6f1e7d4c-0000-4000-8000-0000000000a1";
    const MALLORY: &str = "6f1e7d4c-0000-4000-8000-0000000000ff";

    fn string(s: &str) -> Value {
        Value {
            kind: Some(Kind::StringValue(s.into())),
        }
    }

    fn object(fields: &[(&str, Value)]) -> Struct {
        Struct {
            fields: fields
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect(),
        }
    }

    fn with_bearer(oid: &str) -> HttpRequest {
        HttpRequest::default().with_header(
            "authorization",
            &format!("Bearer {}", jwt::unsigned_token(&json!({ "oid": oid }))),
        )
    }

    fn jwt_authn(oid: &str) -> AttributeContext {
        let payload = object(&[("oid", string(oid))]);
        let filter = object(&[(
            "payload",
            Value {
                kind: Some(Kind::StructValue(payload)),
            },
        )]);
        AttributeContext {
            metadata_context: Some(Metadata {
                filter_metadata: [("envoy.filters.http.jwt_authn".to_owned(), filter)].into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn source(text: &str) -> IdentitySource {
        text.parse().unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn sources_parse_and_print_back() {
        for text in [
            "metadata:envoy.filters.http.jwt_authn/payload/oid",
            "mtls",
            "header:x-agent-oid",
            "jwt:oid",
            "jwt:sub",
        ] {
            assert_eq!(source(text).to_string(), text);
        }
        assert_eq!(source("jwt"), IdentitySource::default());
        assert_eq!(
            source("header:X-Agent"),
            IdentitySource::Header("x-agent".into())
        );
    }

    #[test]
    fn bad_sources_say_what_to_write() {
        for text in [
            "",
            "oid",
            "metadata:filter",
            "metadata:/oid",
            "metadata:f//oid",
            "header:",
            "header:a b",
            "jwt:",
            "mtls:x",
        ] {
            let error = text.parse::<IdentitySource>().unwrap_err();
            assert!(error.contains("write"), "{text}: {error}");
        }
    }

    #[test]
    fn the_default_reads_the_bearer_oid() {
        let id =
            IdentitySource::default().principal(&AttributeContext::default(), &with_bearer(ALICE));
        assert_eq!(id.as_deref(), Ok(ALICE));
    }

    #[test]
    fn metadata_is_read_along_its_path() {
        let id = source("metadata:envoy.filters.http.jwt_authn/payload/oid")
            .principal(&jwt_authn(ALICE), &HttpRequest::default());
        assert_eq!(id.as_deref(), Ok(ALICE));
        let missing = source("metadata:envoy.filters.http.jwt_authn/payload/sub")
            .principal(&jwt_authn(ALICE), &HttpRequest::default());
        assert!(matches!(missing, Err(IdentityError::NoMetadata(_))));
    }

    #[test]
    fn an_unsigned_token_never_stands_in_for_verified_metadata() {
        // The verified payload says alice; the bearer token claims mallory.
        let id = source("metadata:envoy.filters.http.jwt_authn/payload/oid")
            .principal(&jwt_authn(ALICE), &with_bearer(MALLORY));
        assert_eq!(id.as_deref(), Ok(ALICE));
        // No verified payload at all: no identity, not the token's.
        let id = source("metadata:envoy.filters.http.jwt_authn/payload/oid")
            .principal(&AttributeContext::default(), &with_bearer(MALLORY));
        assert!(matches!(id, Err(IdentityError::NoMetadata(_))));
    }

    #[test]
    fn an_unsigned_token_never_stands_in_for_mtls() {
        let mtls = source("mtls");
        let id = mtls.principal(&AttributeContext::default(), &with_bearer(MALLORY));
        assert_eq!(id, Err(IdentityError::NoPeerPrincipal));
        let attributes = AttributeContext {
            source: Some(Peer {
                principal: "spiffe://cluster.local/ns/agents/sa/agent-1".into(),
            }),
            ..Default::default()
        };
        let id = mtls.principal(&attributes, &with_bearer(MALLORY));
        assert_eq!(
            id.as_deref(),
            Ok("spiffe://cluster.local/ns/agents/sa/agent-1")
        );
    }

    #[test]
    fn a_header_source_reads_only_its_header() {
        let http = with_bearer(MALLORY);
        let header = source("header:x-agent-oid");
        assert_eq!(
            header.principal(&AttributeContext::default(), &http),
            Err(IdentityError::NoHeader("x-agent-oid".into()))
        );
        let http = http.with_header("x-agent-oid", ALICE);
        assert_eq!(
            header
                .principal(&AttributeContext::default(), &http)
                .as_deref(),
            Ok(ALICE)
        );
    }

    #[test]
    fn an_identity_that_is_no_principal_id_is_refused() {
        let http = HttpRequest::default().with_header("x-agent-oid", "has space");
        let id = source("header:x-agent-oid").principal(&AttributeContext::default(), &http);
        assert!(matches!(id, Err(IdentityError::Invalid { .. })), "{id:?}");
    }

    #[test]
    fn raw_header_maps_are_read_too() {
        use crate::extauthz::wire::{HeaderMap, HeaderValue};
        let http = HttpRequest {
            header_map: Some(HeaderMap {
                headers: vec![HeaderValue {
                    key: "x-agent-oid".into(),
                    value: Default::default(),
                    raw_value: ALICE.as_bytes().to_vec().into(),
                }],
            }),
            ..Default::default()
        };
        assert_eq!(http.header("x-agent-oid"), Some(ALICE));
    }
}
