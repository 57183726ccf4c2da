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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    sha256: String,
    principal: String,
    #[serde(default)]
    admin: bool,
}

/// The known tokens, by the SHA-256 of the token.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    by_hash: Arc<HashMap<[u8; 32], Caller>>,
}

impl Tokens {
    /// Reads a tokens file: a YAML list of `{sha256, principal, admin}`.
    pub fn load(path: &Path) -> Result<Tokens, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let entries: Vec<TokenEntry> =
            serde_yaml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut by_hash = HashMap::new();
        for (i, entry) in entries.into_iter().enumerate() {
            let hash: [u8; 32] = hex::decode(entry.sha256.trim())
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| {
                    format!(
                        "{}: entry {i}: sha256 must be 64 hex digits",
                        path.display()
                    )
                })?;
            if entry.principal.trim().is_empty() {
                return Err(format!("{}: entry {i}: principal is empty", path.display()));
            }
            if by_hash
                .insert(
                    hash,
                    Caller {
                        principal_id: entry.principal,
                        admin: entry.admin,
                    },
                )
                .is_some()
            {
                return Err(format!(
                    "{}: entry {i}: the same token hash appears twice",
                    path.display()
                ));
            }
        }
        Ok(Tokens {
            by_hash: Arc::new(by_hash),
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
        }
    }

    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }

    pub fn authenticate(&self, metadata: &MetadataMap) -> Result<Caller, Status> {
        let header = metadata
            .get("authorization")
            .ok_or_else(|| Status::unauthenticated("missing authorization: Bearer <token>"))?;
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
            let caller = tokens.authenticate(request.metadata())?;
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
    }
}
