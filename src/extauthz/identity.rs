//! Who is asking: the principal id of a request Envoy checks, read from the
//! one source the operator configured. There is no fallback from one source
//! to another: with mutual TLS configured, a bearer token naming someone
//! else changes nothing, and a request without a client certificate has no
//! identity at all.

use super::jwt::{self, JwtError};
use super::wire::CheckRequest;
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
    pub fn principal(&self, request: &CheckRequest) -> Result<String, IdentityError> {
        let header = |name: &str| request.http().and_then(|http| http.header(name));
        let id = match self {
            IdentitySource::Metadata { filter, path } => request
                .metadata_string(filter, path)
                .ok_or_else(|| IdentityError::NoMetadata(format!("{filter}/{}", path.join("/"))))?
                .to_owned(),
            IdentitySource::Mtls => Some(request.peer_principal())
                .filter(|p| !p.is_empty())
                .ok_or(IdentityError::NoPeerPrincipal)?
                .to_owned(),
            IdentitySource::Header(name) => header(name)
                .filter(|v| !v.is_empty())
                .ok_or_else(|| IdentityError::NoHeader(name.clone()))?
                .to_owned(),
            IdentitySource::UnverifiedJwt { claim } => {
                let value = request
                    .http()
                    .and_then(|http| http.header_bytes("authorization"))
                    .ok_or(JwtError::NoBearer)?;
                jwt::bearer_claim(value, claim)?
            }
        };
        check_principal_id(&id).map_err(|e| IdentityError::Invalid {
            id: id.chars().take(64).collect(),
            reason: e.to_string(),
        })?;
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue, Metadata};
    use envoy_types::pb::envoy::service::auth::v3 as envoy;
    use envoy_types::pb::google::protobuf::{value::Kind, Struct, Value};
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

    /// A request as Envoy sends it, read as rampart reads it.
    #[derive(Default)]
    struct Sent {
        headers: Vec<(&'static str, String)>,
        raw_headers: Vec<(&'static str, &'static str)>,
        peer: &'static str,
        metadata: Option<Metadata>,
    }

    impl Sent {
        fn read(self) -> CheckRequest {
            let raw = (!self.raw_headers.is_empty()).then(|| HeaderMap {
                headers: self
                    .raw_headers
                    .iter()
                    .map(|(k, v)| HeaderValue {
                        key: (*k).into(),
                        raw_value: v.as_bytes().to_vec(),
                        ..Default::default()
                    })
                    .collect(),
            });
            let message = envoy::CheckRequest {
                attributes: Some(envoy::AttributeContext {
                    source: Some(envoy::attribute_context::Peer {
                        principal: self.peer.into(),
                        ..Default::default()
                    }),
                    request: Some(envoy::attribute_context::Request {
                        http: Some(envoy::attribute_context::HttpRequest {
                            method: "GET".into(),
                            path: "/subscriptions".into(),
                            headers: self
                                .headers
                                .into_iter()
                                .map(|(k, v)| (k.to_owned(), v))
                                .collect(),
                            header_map: raw,
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    metadata_context: self.metadata,
                    ..Default::default()
                }),
            };
            CheckRequest::from_envoy(&message).unwrap_or_else(|e| panic!("{e}"))
        }
    }

    fn bearer(oid: &str) -> (&'static str, String) {
        (
            "authorization",
            format!("Bearer {}", jwt::unsigned_token(&json!({ "oid": oid }))),
        )
    }

    fn jwt_authn(oid: &str) -> Metadata {
        let payload = object(&[("oid", string(oid))]);
        let filter = object(&[(
            "payload",
            Value {
                kind: Some(Kind::StructValue(payload)),
            },
        )]);
        Metadata {
            filter_metadata: [("envoy.filters.http.jwt_authn".to_owned(), filter)].into(),
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
        let sent = Sent {
            headers: vec![bearer(ALICE)],
            ..Sent::default()
        };
        let id = IdentitySource::default().principal(&sent.read());
        assert_eq!(id.as_deref(), Ok(ALICE));
    }

    #[test]
    fn metadata_is_read_along_its_path() {
        let request = Sent {
            metadata: Some(jwt_authn(ALICE)),
            ..Sent::default()
        }
        .read();
        let id = source("metadata:envoy.filters.http.jwt_authn/payload/oid").principal(&request);
        assert_eq!(id.as_deref(), Ok(ALICE));
        let missing =
            source("metadata:envoy.filters.http.jwt_authn/payload/sub").principal(&request);
        assert!(matches!(missing, Err(IdentityError::NoMetadata(_))));
    }

    #[test]
    fn an_unsigned_token_never_stands_in_for_verified_metadata() {
        let verified = source("metadata:envoy.filters.http.jwt_authn/payload/oid");
        // The verified payload says alice; the bearer token claims mallory.
        let request = Sent {
            headers: vec![bearer(MALLORY)],
            metadata: Some(jwt_authn(ALICE)),
            ..Sent::default()
        }
        .read();
        assert_eq!(verified.principal(&request).as_deref(), Ok(ALICE));
        // No verified payload at all: no identity, not the token's.
        let request = Sent {
            headers: vec![bearer(MALLORY)],
            ..Sent::default()
        }
        .read();
        let id = verified.principal(&request);
        assert!(matches!(id, Err(IdentityError::NoMetadata(_))));
    }

    #[test]
    fn an_unsigned_token_never_stands_in_for_mtls() {
        let mtls = source("mtls");
        let request = Sent {
            headers: vec![bearer(MALLORY)],
            ..Sent::default()
        }
        .read();
        assert_eq!(
            mtls.principal(&request),
            Err(IdentityError::NoPeerPrincipal)
        );
        let request = Sent {
            headers: vec![bearer(MALLORY)],
            peer: "spiffe://cluster.local/ns/agents/sa/agent-1",
            ..Sent::default()
        }
        .read();
        assert_eq!(
            mtls.principal(&request).as_deref(),
            Ok("spiffe://cluster.local/ns/agents/sa/agent-1")
        );
    }

    #[test]
    fn a_header_source_reads_only_its_header() {
        let header = source("header:x-agent-oid");
        let request = Sent {
            headers: vec![bearer(MALLORY)],
            ..Sent::default()
        }
        .read();
        assert_eq!(
            header.principal(&request),
            Err(IdentityError::NoHeader("x-agent-oid".into()))
        );
        let request = Sent {
            headers: vec![bearer(MALLORY), ("x-agent-oid", ALICE.into())],
            ..Sent::default()
        }
        .read();
        assert_eq!(header.principal(&request).as_deref(), Ok(ALICE));
    }

    #[test]
    fn an_identity_that_is_no_principal_id_is_refused() {
        let request = Sent {
            headers: vec![("x-agent-oid", "has space".into())],
            ..Sent::default()
        }
        .read();
        let id = source("header:x-agent-oid").principal(&request);
        assert!(matches!(id, Err(IdentityError::Invalid { .. })), "{id:?}");
    }

    #[test]
    fn raw_header_maps_are_read_too() {
        let request = Sent {
            raw_headers: vec![("x-agent-oid", ALICE)],
            ..Sent::default()
        }
        .read();
        let id = source("header:x-agent-oid").principal(&request);
        assert_eq!(id.as_deref(), Ok(ALICE));
    }
}
