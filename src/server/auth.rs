//! Authentication on the admin listener: `authorization: Bearer <token>`
//! checked against the tokens file (SHA-256 of each token → principal id,
//! `admin` flag). The caller is who the token says, never a field of the
//! request. The Authorizer may require a token of its own
//! (`--authorizer-tokens`). Both files are re-read on SIGHUP and with each
//! new snapshot; a file that fails to load leaves the previous tokens in
//! place (less any whose principal became a group).

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tonic::metadata::MetadataMap;
use tonic::{Request, Status};

use crate::model::PrincipalType;
use crate::snapshot::CompiledSnapshot;

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
/// subject of their client certificate. Clones share one table, which a
/// reload replaces for all of them at once.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    table: Arc<ArcSwap<Table>>,
}

#[derive(Debug, Default)]
struct Table {
    by_hash: HashMap<[u8; 32], Caller>,
    by_subject: HashMap<String, Caller>,
}

impl Tokens {
    fn from_table(table: Table) -> Tokens {
        Tokens {
            table: Arc::new(ArcSwap::from_pointee(table)),
        }
    }

    /// Makes every clone of `self` use the tokens of `new`.
    pub fn replace_with(&self, new: &Tokens) {
        self.table.store(new.table.load_full());
    }

    /// Drops the tokens of principals that are groups in `snapshot` (a
    /// group's token would let any member approve, their own elevations
    /// too), naming each one dropped.
    pub fn drop_groups(&self, snapshot: &CompiledSnapshot) -> Vec<String> {
        let table = self.table.load();
        let is_group =
            |c: &Caller| principal_kind(snapshot, &c.principal_id) == Some(PrincipalType::Group);
        let dropped: Vec<String> = table
            .by_hash
            .values()
            .chain(table.by_subject.values())
            .filter(|c| is_group(c))
            .map(|c| c.principal_id.clone())
            .collect();
        if !dropped.is_empty() {
            self.table.store(Arc::new(Table {
                by_hash: table
                    .by_hash
                    .iter()
                    .filter(|(_, c)| !is_group(c))
                    .map(|(k, c)| (*k, c.clone()))
                    .collect(),
                by_subject: table
                    .by_subject
                    .iter()
                    .filter(|(_, c)| !is_group(c))
                    .map(|(k, c)| (k.clone(), c.clone()))
                    .collect(),
            }));
        }
        dropped
    }
}

/// The kind of principal `id` is in `snapshot`, if it is there.
fn principal_kind(snapshot: &CompiledSnapshot, id: &str) -> Option<PrincipalType> {
    let index = snapshot.principal(id)?;
    Some(snapshot.tenant.principals[index].kind)
}

/// Warns when a secrets file can be read by others, or by a group other
/// than the process's own (Kubernetes shares a Secret with the pod through
/// its `fsGroup`, which is the process's group).
pub fn readable_by_others(path: &Path) -> Option<String> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let meta = std::fs::metadata(path).ok()?;
    let mode = meta.permissions().mode() & 0o777;
    // SAFETY: getegid has no preconditions and cannot fail.
    let own_group = meta.gid() == unsafe { libc::getegid() };
    let exposed = mode & 0o007 != 0 || (mode & 0o070 != 0 && !own_group);
    exposed.then(|| {
        format!(
            "{} is readable or writable by its group or others (mode {mode:04o}): token hashes of short tokens can be brute-forced; chmod 600 {}",
            path.display(),
            path.display()
        )
    })
}

/// The line of each top-level list entry of a YAML text, 1-based.
fn entry_lines(text: &str) -> Vec<usize> {
    use yaml_rust2::parser::{Event, Parser};
    let mut parser = Parser::new_from_str(text);
    let mut lines = Vec::new();
    let mut depth = 0usize;
    while let Ok((event, marker)) = parser.next_token() {
        match event {
            Event::StreamEnd => break,
            Event::SequenceStart(..) | Event::MappingStart(..) => {
                if depth == 1 {
                    lines.push(marker.line());
                }
                depth += 1;
            }
            Event::SequenceEnd | Event::MappingEnd => depth = depth.saturating_sub(1),
            Event::Scalar(..) | Event::Alias(..) if depth == 1 => lines.push(marker.line()),
            _ => {}
        }
    }
    lines
}

/// What checking a tokens file against the snapshot found.
#[derive(Debug, Default)]
pub struct TokenCheck {
    /// Tokens that must not be honoured: the file is refused.
    pub errors: Vec<String>,
    /// Tokens that work but cannot do anything useful yet.
    pub warnings: Vec<String>,
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
        Tokens::read(path).map(|(tokens, _)| tokens)
    }

    /// Reads a tokens file and checks it against `snapshot`: a token for a
    /// group refuses the file (naming its entry and line); a token for a
    /// principal the snapshot lacks, or a file others can read, is a
    /// warning.
    pub fn load_checked(
        path: &Path,
        snapshot: &CompiledSnapshot,
    ) -> Result<(Tokens, Vec<String>), String> {
        let (tokens, lines) = Tokens::read(path)?;
        let check = tokens.check(snapshot, path, &lines);
        if !check.errors.is_empty() {
            return Err(check.errors.join("; "));
        }
        let mut warnings = check.warnings;
        warnings.extend(readable_by_others(path));
        Ok((tokens, warnings))
    }

    /// Checks each token's principal against `snapshot`.
    fn check(
        &self,
        snapshot: &CompiledSnapshot,
        path: &Path,
        lines: &HashMap<String, Vec<(usize, usize)>>,
    ) -> TokenCheck {
        let mut check = TokenCheck::default();
        let table = self.table.load();
        let mut principals: Vec<&str> = table
            .by_hash
            .values()
            .chain(table.by_subject.values())
            .map(|c| c.principal_id.as_str())
            .collect();
        principals.sort_unstable();
        principals.dedup();
        for principal in principals {
            let at = lines.get(principal).map_or_else(String::new, |places| {
                places
                    .iter()
                    .map(|(i, line)| format!("entry {i} (line {line})"))
                    .collect::<Vec<_>>()
                    .join(", ")
            });
            match principal_kind(snapshot, principal) {
                Some(PrincipalType::Group) => check.errors.push(format!(
                    "{}: {at}: principal '{principal}' is a Group in the snapshot; a group's token would let any member approve, even their own elevation: give each member a token of their own",
                    path.display()
                )),
                Some(_) => {}
                None => check.warnings.push(format!(
                    "{}: {at}: principal '{principal}' is not in the snapshot (revision {}); its token authenticates but may approve nothing until the snapshot names it",
                    path.display(),
                    snapshot.info.revision
                )),
            }
        }
        check
    }

    /// Parses the file; also where each principal's entries are (entry
    /// index, line).
    #[allow(clippy::type_complexity)]
    fn read(path: &Path) -> Result<(Tokens, HashMap<String, Vec<(usize, usize)>>), String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let entries: Vec<TokenEntry> =
            serde_yaml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let entry_lines = entry_lines(&text);
        let mut places: HashMap<String, Vec<(usize, usize)>> = HashMap::new();
        let mut by_hash = HashMap::new();
        let mut by_subject = HashMap::new();
        for (i, entry) in entries.into_iter().enumerate() {
            places
                .entry(entry.principal.clone())
                .or_default()
                .push((i, entry_lines.get(i).copied().unwrap_or(0)));
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
        Ok((
            Tokens::from_table(Table {
                by_hash,
                by_subject,
            }),
            places,
        ))
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
        Tokens::from_table(Table {
            by_hash,
            by_subject: HashMap::new(),
        })
    }

    /// Adds client-certificate subjects (mutual TLS) to plain tokens.
    pub fn with_subjects(self, entries: &[(&str, &str, bool)]) -> Tokens {
        let by_subject = entries
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
            .collect();
        let by_hash = self.table.load().by_hash.clone();
        Tokens::from_table(Table {
            by_hash,
            by_subject,
        })
    }

    pub fn is_empty(&self) -> bool {
        let table = self.table.load();
        table.by_hash.is_empty() && table.by_subject.is_empty()
    }

    /// The caller of a client certificate (mutual TLS), if its subject is
    /// mapped.
    pub fn authenticate_certificate(&self, der: &[u8]) -> Option<Caller> {
        let (subject, cn) = subject_of(der)?;
        let table = self.table.load();
        table
            .by_subject
            .get(&subject)
            .or_else(|| cn.and_then(|cn| table.by_subject.get(&format!("CN={cn}"))))
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
            .and_then(bearer)
            .ok_or_else(|| Status::unauthenticated("authorization must be 'Bearer <token>'"))?;
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        self.table
            .load()
            .by_hash
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

/// The token of an `authorization` value: the scheme `Bearer` in any case
/// (RFC 7235), then the token.
pub fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim_start().split_once([' ', '\t'])?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The tokens the Authorizer accepts (`--authorizer-tokens`): a YAML list
/// of `{sha256, name}`, the name only for the operator. Clones share one
/// set, which a reload replaces.
#[derive(Debug, Clone, Default)]
pub struct AuthorizerTokens {
    hashes: Arc<ArcSwap<HashSet<[u8; 32]>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthorizerTokenEntry {
    sha256: String,
    #[serde(default)]
    #[allow(dead_code)]
    name: Option<String>,
}

impl AuthorizerTokens {
    /// Reads the file; warnings (a file others can read) beside.
    pub fn load(path: &Path) -> Result<(AuthorizerTokens, Vec<String>), String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let entries: Vec<AuthorizerTokenEntry> =
            serde_yaml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let lines = entry_lines(&text);
        let mut hashes = HashSet::new();
        for (i, entry) in entries.into_iter().enumerate() {
            let line = lines.get(i).copied().unwrap_or(0);
            let hash: [u8; 32] = hex::decode(entry.sha256.trim())
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| {
                    format!(
                        "{}: entry {i} (line {line}): sha256 must be 64 hex digits (sha256sum of the token)",
                        path.display()
                    )
                })?;
            hashes.insert(hash);
        }
        if hashes.is_empty() {
            return Err(format!(
                "{}: no tokens: every Authorizer call would be refused; list at least one {{sha256: …}}",
                path.display()
            ));
        }
        let tokens = AuthorizerTokens {
            hashes: Arc::new(ArcSwap::from_pointee(hashes)),
        };
        Ok((tokens, readable_by_others(path).into_iter().collect()))
    }

    /// Tokens given in the clear (tests).
    pub fn from_plain(tokens: &[&str]) -> AuthorizerTokens {
        let hashes = tokens
            .iter()
            .map(|t| Sha256::digest(t.as_bytes()).into())
            .collect();
        AuthorizerTokens {
            hashes: Arc::new(ArcSwap::from_pointee(hashes)),
        }
    }

    /// Makes every clone of `self` accept the tokens of `new`.
    pub fn replace_with(&self, new: &AuthorizerTokens) {
        self.hashes.store(new.hashes.load_full());
    }

    /// An interceptor that lets through calls bearing a listed token.
    pub fn interceptor(&self) -> impl Fn(Request<()>) -> Result<Request<()>, Status> + Clone {
        let tokens = self.clone();
        move |request: Request<()>| {
            tokens.admit(request.metadata().as_ref())?;
            Ok(request)
        }
    }

    /// Whether `headers` bear a listed token. The token is hashed on the
    /// stack and the set read without a lock.
    pub fn admit(&self, headers: &http::HeaderMap) -> Result<(), Status> {
        let token = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(bearer)
            .ok_or_else(|| {
                Status::unauthenticated(
                    "this Authorizer requires authorization: Bearer <token> (one of --authorizer-tokens)",
                )
            })?;
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if self.hashes.load().contains(&hash) {
            Ok(())
        } else {
            Err(Status::unauthenticated(
                "unknown token: not one of --authorizer-tokens",
            ))
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
    fn the_bearer_scheme_is_case_insensitive() {
        let tokens = Tokens::from_plain(&[("s3cret", "oncall", false)]);
        for value in [
            "Bearer s3cret",
            "bearer s3cret",
            "BEARER s3cret",
            "bEaReR  s3cret ",
            "Bearer\ts3cret",
        ] {
            assert_eq!(
                tokens.authenticate(&metadata(value)).unwrap().principal_id,
                "oncall",
                "{value:?}"
            );
        }
        for value in [
            "Bearers3cret",
            "Bearer",
            "Bearer   ",
            "Basic s3cret",
            "Token s3cret",
        ] {
            assert_eq!(
                tokens.authenticate(&metadata(value)).unwrap_err().message(),
                "authorization must be 'Bearer <token>'",
                "{value:?}"
            );
        }
    }

    #[test]
    fn entry_lines_point_at_each_list_item() {
        let text = "# tokens\n- sha256: a\n  principal: x\n\n- {sha256: b, principal: y}\n-   sha256: c\n    principal: z\n";
        assert_eq!(entry_lines(text), [2, 5, 6]);
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
