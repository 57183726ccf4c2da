//! Authentication on the admin listener: `authorization: Bearer <token>`
//! checked against the tokens file (SHA-256 of each token → principal id,
//! `admin` flag). The caller is who the token says, never a field of the
//! request.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use tonic::metadata::MetadataMap;
use tonic::{Request, Status};

/// The authenticated caller, put in the request's extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub principal_id: String,
    pub admin: bool,
}

/// One entry of the tokens file: a bearer token's hash, or a client
/// certificate's subject (mutual TLS), mapped to a principal.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    #[serde(default)]
    sha256: Option<String>,
    /// `CN=oncall` or the whole subject, e.g. `CN=oncall, O=Contoso`.
    #[serde(default)]
    subject: Option<String>,
    principal: String,
    #[serde(default)]
    admin: bool,
}

/// The known callers: by the SHA-256 of their bearer token, or by the
/// subject of their client certificate.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    by_hash: Arc<HashMap<[u8; 32], Caller>>,
    by_subject: Arc<HashMap<String, Caller>>,
}

/// The subject of a DER certificate, as `CN=…, O=…`, and its common name.
fn subject_of(der: &[u8]) -> Option<(String, Option<String>)> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let cn = subject
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_owned);
    Some((subject.to_string(), cn))
}

impl Tokens {
    /// Reads a tokens file: a YAML list of `{sha256, principal, admin}`.
    pub fn load(path: &Path) -> Result<Tokens, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let entries: Vec<TokenEntry> =
            serde_yaml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut by_hash = HashMap::new();
        let mut by_subject = HashMap::new();
        for (i, entry) in entries.into_iter().enumerate() {
            if entry.principal.trim().is_empty() {
                return Err(format!("{}: entry {i}: principal is empty", path.display()));
            }
            let caller = Caller {
                principal_id: entry.principal,
                admin: entry.admin,
            };
            match (entry.sha256, entry.subject) {
                (Some(sha), None) => {
                    let hash: [u8; 32] = hex::decode(sha.trim())
                        .ok()
                        .and_then(|b| b.try_into().ok())
                        .ok_or_else(|| {
                            format!(
                                "{}: entry {i}: sha256 must be 64 hex digits",
                                path.display()
                            )
                        })?;
                    if by_hash.insert(hash, caller).is_some() {
                        return Err(format!(
                            "{}: entry {i}: the same token hash appears twice",
                            path.display()
                        ));
                    }
                }
                (None, Some(subject)) => {
                    if by_subject
                        .insert(subject.trim().to_owned(), caller)
                        .is_some()
                    {
                        return Err(format!(
                            "{}: entry {i}: the same subject appears twice",
                            path.display()
                        ));
                    }
                }
                _ => {
                    return Err(format!(
                        "{}: entry {i}: give exactly one of sha256 or subject",
                        path.display()
                    ));
                }
            }
        }
        Ok(Tokens {
            by_hash: Arc::new(by_hash),
            by_subject: Arc::new(by_subject),
        })
    }

    /// Tokens given in the clear (the demo, tests).
    pub fn from_plain(entries: &[(&str, &str, bool)]) -> Tokens {
        let by_hash = entries
            .iter()
            .map(|(token, principal, admin)| {
                (
                    Sha256::digest(token.as_bytes()).into(),
                    Caller {
                        principal_id: (*principal).to_owned(),
                        admin: *admin,
                    },
                )
            })
            .collect();
        Tokens {
            by_hash: Arc::new(by_hash),
            by_subject: Arc::default(),
        }
    }

    /// Adds client-certificate subjects (mutual TLS) to plain tokens.
    pub fn with_subjects(mut self, entries: &[(&str, &str, bool)]) -> Tokens {
        self.by_subject = Arc::new(
            entries
                .iter()
                .map(|(subject, principal, admin)| {
                    (
                        (*subject).to_owned(),
                        Caller {
                            principal_id: (*principal).to_owned(),
                            admin: *admin,
                        },
                    )
                })
                .collect(),
        );
        self
    }

    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty() && self.by_subject.is_empty()
    }

    /// The caller of a client certificate (mutual TLS), if its subject is
    /// mapped.
    pub fn authenticate_certificate(&self, der: &[u8]) -> Option<Caller> {
        let (subject, cn) = subject_of(der)?;
        self.by_subject
            .get(&subject)
            .or_else(|| cn.and_then(|cn| self.by_subject.get(&format!("CN={cn}"))))
            .cloned()
    }

    pub fn authenticate(&self, metadata: &MetadataMap) -> Result<Caller, Status> {
        let header = metadata.get("authorization").ok_or_else(|| {
            Status::unauthenticated(
                "missing authorization: Bearer <token> (or a mapped client certificate)",
            )
        })?;
        let token = header
            .to_str()
            .ok()
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| Status::unauthenticated("authorization must be 'Bearer <token>'"))?;
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        self.by_hash
            .get(&hash)
            .cloned()
            .ok_or_else(|| Status::unauthenticated("unknown token"))
    }

    /// An interceptor that authenticates, and with `require_admin` also
    /// requires an `admin: true` token.
    pub fn interceptor(
        &self,
        require_admin: bool,
    ) -> impl Fn(Request<()>) -> Result<Request<()>, Status> + Clone {
        let tokens = self.clone();
        move |mut request: Request<()>| {
            // A bearer token first; else a client certificate whose subject
            // is mapped (the TLS layer has verified it against the CA).
            let by_certificate = || {
                let certs = request.peer_certs()?;
                tokens.authenticate_certificate(certs.first()?.as_ref())
            };
            let caller = match tokens.authenticate(request.metadata()) {
                Ok(caller) => caller,
                Err(status) if request.metadata().get("authorization").is_none() => {
                    by_certificate().ok_or(status)?
                }
                Err(status) => return Err(status),
            };
            if require_admin && !caller.admin {
                return Err(Status::permission_denied(format!(
                    "{} is authenticated but Admin calls need a token marked admin: true",
                    caller.principal_id
                )));
            }
            request.extensions_mut().insert(caller);
            Ok(request)
        }
    }
}

/// The caller an interceptor put on the request.
pub fn caller<T>(request: &Request<T>) -> Result<Caller, Status> {
    request
        .extensions()
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| Status::unauthenticated("not authenticated"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata(value: &str) -> MetadataMap {
        let mut m = MetadataMap::new();
        m.insert("authorization", value.parse().unwrap());
        m
    }

    #[test]
    fn bearer_tokens_map_to_their_principal() {
        let tokens = Tokens::from_plain(&[("s3cret", "oncall", false)]);
        assert_eq!(
            tokens.authenticate(&metadata("Bearer s3cret")).unwrap(),
            Caller {
                principal_id: "oncall".into(),
                admin: false
            }
        );
        assert_eq!(
            tokens
                .authenticate(&metadata("Bearer wrong"))
                .unwrap_err()
                .code(),
            tonic::Code::Unauthenticated
        );
        assert_eq!(
            tokens
                .authenticate(&metadata("Basic s3cret"))
                .unwrap_err()
                .code(),
            tonic::Code::Unauthenticated
        );
        assert_eq!(
            tokens.authenticate(&MetadataMap::new()).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
    }

    #[test]
    fn the_tokens_file_holds_hashes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.yaml");
        let hash = hex::encode(Sha256::digest(b"s3cret"));
        std::fs::write(&path, format!("- {{sha256: {hash}, principal: oncall}}\n- {{sha256: {}, principal: root, admin: true}}\n", hex::encode(Sha256::digest(b"adm")))).unwrap();
        let tokens = Tokens::load(&path).unwrap();
        assert!(
            !tokens
                .authenticate(&metadata("Bearer s3cret"))
                .unwrap()
                .admin
        );
        assert!(tokens.authenticate(&metadata("Bearer adm")).unwrap().admin);
        std::fs::write(&path, "- {sha256: nothex, principal: x}\n").unwrap();
        assert!(Tokens::load(&path).unwrap_err().contains("64 hex digits"));
        std::fs::write(&path, "- {subject: 'CN=oncall', principal: oncall}\n").unwrap();
        assert!(!Tokens::load(&path).unwrap().is_empty());
        std::fs::write(&path, "- {sha256: x, subject: 'CN=a', principal: a}\n").unwrap();
        assert!(Tokens::load(&path)
            .unwrap_err()
            .contains("exactly one of sha256 or subject"));
    }
}
