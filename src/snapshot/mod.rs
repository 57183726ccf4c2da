//! Snapshots (docs/snapshot-format.md): the YAML (or JSON) file of roles, assignments and
//! agents; its validation, with every problem located; and its compilation
//! into the immutable form the engine decides on.

pub mod bounds;
pub mod catalog;
pub mod compile;
pub mod error;
mod file;
pub mod import;
pub mod index;
pub mod locate;
pub mod reload;
pub mod schema;
pub mod suggest;
mod tolerant;
pub mod validate;

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use sha2::{Digest, Sha256};

use crate::extauthz::RouteTable;
use crate::model::Tenant;
pub use compile::{Anchor, CompiledSnapshot, SnapshotInfo};
pub use error::{Problem, SnapshotError};
pub use index::{
    AccessKeyIx, AgentIx, AssignmentIx, DenyIx, NodeId, Position, PrincipalIx, ResourceIx, RoleIx,
    Table, ROOT_NODE,
};
use schema::SnapshotFile;

/// The demo tenant served when no `--snapshot` is given.
pub const DEMO_SNAPSHOT: &str = include_str!("demo.yaml");
/// The source name of the demo snapshot.
pub const DEMO_SOURCE: &str = "embedded:demo";

/// The largest snapshot file accepted: a million role assignments take
/// about 150 MB of YAML.
pub const MAX_SNAPSHOT_BYTES: u64 = 512 << 20;

/// How long one load may take before it is abandoned as a failure, checked
/// between its phases (parse, validate, compile): a pathological file fails
/// instead of holding up the reloads after it.
pub const LOAD_BUDGET: Duration = Duration::from_secs(120);

/// Reads, validates and compiles a snapshot file.
pub fn load_file(path: &Path) -> Result<CompiledSnapshot, SnapshotError> {
    load_file_within(path, Instant::now() + LOAD_BUDGET)
}

/// As [`load_file`], failing when `deadline` passes between two phases.
pub fn load_file_within(path: &Path, deadline: Instant) -> Result<CompiledSnapshot, SnapshotError> {
    load_file_timed(path, deadline).map(|(snapshot, _)| snapshot)
}

/// As [`load_file_within`], with the time each phase took.
///
/// A JSON file's text is dropped once parsed, before validation: it is
/// larger than the compiled tenant (224 MB against 187 MB at a million
/// assignments), and held through the load beside everything validation
/// and compilation build it would more than double the load's peak. A
/// file that fails validation is read again, only to locate its problems.
/// Anything the JSON parser refuses, and every YAML file, is loaded as
/// [`load_str`] loads it, so the answer and every message stay the text
/// path's.
pub fn load_file_timed(
    path: &Path,
    deadline: Instant,
) -> Result<(CompiledSnapshot, LoadTimings), SnapshotError> {
    let source_name = path.display().to_string();
    let started = Instant::now();
    let (file, content_sha256) = match file::read(path)? {
        file::Read::Json {
            file,
            content_sha256,
        } => (file, content_sha256),
        file::Read::Text(text) => {
            let read = started.elapsed();
            let (snapshot, timings) = load_str_timed(&text, &source_name, deadline)?;
            return Ok((snapshot, LoadTimings { read, ..timings }));
        }
    };
    let parsed = Instant::now();
    in_time(&source_name, deadline, "after parsing")?;
    let builtin = catalog::builtin_roles().map_err(|e| e.clone())?;
    let default_revision = format!("sha256:{}", &content_sha256[..12]);
    let validate::Validated { tenant, routes } =
        match validate::snapshot_unlocated(*file, builtin, default_revision) {
            Ok(validated) => validated,
            Err(problems) => {
                let text = read_text(path)?;
                return Err(SnapshotError {
                    source_name,
                    problems: problems.into_located(&text),
                });
            }
        };
    let validated = Instant::now();
    in_time(&source_name, deadline, "after validation")?;
    let snapshot = compile(tenant, routes, source_name, content_sha256);
    let timings = LoadTimings {
        read: Duration::ZERO,
        parse: parsed - started,
        validate: validated - parsed,
        compile: validated.elapsed(),
    };
    Ok((snapshot, timings))
}

/// A snapshot file's text, as UTF-8.
fn read_text(path: &Path) -> Result<String, SnapshotError> {
    String::from_utf8(read_file(path)?).map_err(|e| {
        SnapshotError::whole(
            path.display().to_string(),
            format!("the snapshot is not UTF-8: {e}"),
        )
    })
}

/// Fails once `deadline` has passed, naming the phase reached.
fn in_time(source_name: &str, deadline: Instant, phase: &str) -> Result<(), SnapshotError> {
    if Instant::now() > deadline {
        Err(SnapshotError::whole(
            source_name.to_owned(),
            format!(
                "loading took longer than its budget of {}s ({phase}); the previous snapshot keeps serving",
                LOAD_BUDGET.as_secs()
            ),
        ))
    } else {
        Ok(())
    }
}

/// Compiles a validated tenant and hands the memory the load freed back.
fn compile(
    tenant: Tenant,
    routes: RouteTable,
    source_name: String,
    content_sha256: String,
) -> CompiledSnapshot {
    let info = SnapshotInfo {
        revision: tenant.revision.clone(),
        source: source_name,
        content_sha256,
        loaded_at: SystemTime::now(),
    };
    let snapshot = CompiledSnapshot::compile(tenant, info).with_routes(routes);
    release_free_memory();
    snapshot
}

/// Reads a snapshot file's bytes, refusing one larger than
/// [`MAX_SNAPSHOT_BYTES`] before reading it.
pub fn read_file(path: &Path) -> Result<Vec<u8>, SnapshotError> {
    let fail = |message: String| SnapshotError::whole(path.display().to_string(), message);
    let size = std::fs::metadata(path)
        .map_err(|e| fail(format!("cannot read the snapshot: {e}")))?
        .len();
    if size > MAX_SNAPSHOT_BYTES {
        return Err(fail(format!(
            "the snapshot is {size} bytes; the limit is {MAX_SNAPSHOT_BYTES}"
        )));
    }
    std::fs::read(path).map_err(|e| fail(format!("cannot read the snapshot: {e}")))
}

/// The embedded demo snapshot, compiled.
pub fn demo() -> Result<CompiledSnapshot, SnapshotError> {
    load_str(DEMO_SNAPSHOT, DEMO_SOURCE)
}

/// Validates and compiles snapshot text; `source_name` names it in errors.
pub fn load_str(text: &str, source_name: &str) -> Result<CompiledSnapshot, SnapshotError> {
    load_str_within(text, source_name, Instant::now() + LOAD_BUDGET)
}

/// As [`load_str`], failing when `deadline` passes between two phases.
pub fn load_str_within(
    text: &str,
    source_name: &str,
    deadline: Instant,
) -> Result<CompiledSnapshot, SnapshotError> {
    load_str_timed(text, source_name, deadline).map(|(snapshot, _)| snapshot)
}

/// How long each phase of one load took.
#[derive(Debug, Clone, Copy, Default)]
pub struct LoadTimings {
    /// Reading the file, when it was read as text; a JSON file's reading
    /// counts in `parse`.
    pub read: Duration,
    pub parse: Duration,
    pub validate: Duration,
    pub compile: Duration,
}

/// As [`load_str_within`], with the time each phase took.
pub fn load_str_timed(
    text: &str,
    source_name: &str,
    deadline: Instant,
) -> Result<(CompiledSnapshot, LoadTimings), SnapshotError> {
    let fail = |problems: Vec<Problem>| SnapshotError {
        source_name: source_name.to_owned(),
        problems,
    };
    let whole = |message: String| SnapshotError::whole(source_name.to_owned(), message);
    let in_time = |phase: &str| in_time(source_name, deadline, phase);
    if text.len() as u64 > MAX_SNAPSHOT_BYTES {
        return Err(whole(format!(
            "the snapshot is {} bytes; the limit is {MAX_SNAPSHOT_BYTES}",
            text.len()
        )));
    }
    let started = Instant::now();
    bounds::check(text).map_err(|e| whole(e.to_string()))?;
    let content_sha256 = hex::encode(Sha256::digest(text.as_bytes()));
    if text.trim().is_empty() {
        return Err(whole(
            "the snapshot is empty (write `{}` for a deliberately empty tenant)".into(),
        ));
    }
    let file = match parse(text) {
        Ok(file) => file,
        // A file that used up its budget failing is reported by its first
        // problem; otherwise by every one, structural and semantic.
        Err(first) if Instant::now() > deadline => return Err(fail(vec![first])),
        Err(first) => {
            let builtin = catalog::builtin_roles().map_err(|e| e.clone())?;
            return Err(fail(tolerant::every_problem(text, first, builtin)));
        }
    };
    let parsed = Instant::now();
    in_time("after parsing")?;
    let builtin = catalog::builtin_roles().map_err(|e| e.clone())?;
    let default_revision = format!("sha256:{}", &content_sha256[..12]);
    let validate::Validated { tenant, routes } =
        validate::snapshot(file, text, builtin, default_revision).map_err(fail)?;
    let validated = Instant::now();
    in_time("after validation")?;
    let snapshot = compile(tenant, routes, source_name.to_owned(), content_sha256);
    let timings = LoadTimings {
        read: Duration::ZERO,
        parse: parsed - started,
        validate: validated - parsed,
        compile: validated.elapsed(),
    };
    Ok((snapshot, timings))
}

/// Hands heap memory freed by a load (the parsed file, a swapped-out
/// snapshot) back to the system. Without it the allocator keeps it for
/// reuse, and a sidecar that loaded a large tenant once stays as large as
/// the load's peak.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free pages of glibc's own heap.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Reads the snapshot file's entries. A JSON document (JSON is YAML too)
/// is read by the JSON parser first, several times faster than the YAML
/// one on a large tenant; anything it refuses is read as YAML, whose
/// answer (and error message) counts.
fn parse(text: &str) -> Result<SnapshotFile, Problem> {
    if text.trim_start().starts_with('{') {
        if let Ok(file) = serde_json::from_str(text) {
            return Ok(file);
        }
    }
    serde_yaml::from_str(text).map_err(|e| Problem {
        path: String::new(),
        id: None,
        message: suggest::unknown_field(e.to_string()),
        location: e.location().map(|l| locate::Location {
            line: l.line(),
            column: l.column(),
        }),
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// What the YAML parser alone reads from `text`.
    fn as_yaml(text: &str) -> Result<String, String> {
        serde_yaml::from_str::<SnapshotFile>(text)
            .map(|f| format!("{f:?}"))
            .map_err(|e| e.to_string())
    }

    fn as_parsed(text: &str) -> Result<String, String> {
        parse(text).map(|f| format!("{f:?}")).map_err(|p| p.message)
    }

    fn to_json(yaml: &str) -> String {
        let value: serde_json::Value = serde_yaml::from_str(yaml).unwrap_or_else(|e| panic!("{e}"));
        serde_json::to_string_pretty(&value).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn the_demo_reads_the_same_as_json_and_as_yaml() {
        let json = to_json(DEMO_SNAPSHOT);
        assert!(json.starts_with('{'));
        assert_eq!(as_parsed(&json), as_yaml(DEMO_SNAPSHOT));
        let (yaml, json) = (
            load_str(DEMO_SNAPSHOT, "demo").unwrap_or_else(|e| panic!("{e}")),
            load_str(&json, "demo").unwrap_or_else(|e| panic!("{e}")),
        );
        assert_eq!(
            format!("{:?}", yaml.tenant.role_assignments),
            format!("{:?}", json.tenant.role_assignments)
        );
    }

    #[test]
    fn a_json_snapshot_with_a_mistake_gets_the_yaml_message_and_place() {
        let json = "{\n  \"roleAssignments\": [\n    {\"principal\": \"a\", \"rol\": \"Reader\", \"scope\": \"/\"}\n  ]\n}\n";
        let problem = parse(json).err().unwrap_or_else(|| panic!("accepted"));
        assert!(
            problem.message.contains("unknown field `rol`"),
            "{}",
            problem.message
        );
        assert_eq!(problem.location.map(|l| l.line), Some(3));
        assert!(problem.message.ends_with("(did you mean `role`?)"));
        assert_eq!(
            Err(problem.message),
            as_yaml(json).map_err(suggest::unknown_field)
        );
    }

    #[test]
    fn json_with_a_repeated_key_reads_as_yaml_would() {
        for json in [
            r#"{"principals": [{"id": "a", "type": "User", "attributes": {"k": "1", "k": "2"}}]}"#,
            r#"{"revision": "a", "revision": "b"}"#,
            r#"{"principals": [{"id": "a", "id": "b", "type": "User"}]}"#,
        ] {
            assert_eq!(as_parsed(json), as_yaml(json), "{json}");
        }
    }

    #[test]
    fn problems_of_a_large_valid_looking_file_are_located() {
        let mut yaml = String::from("principals: [{ id: alice, type: User }]\nroleAssignments:\n");
        for i in 0..1000 {
            let role = if i == 700 { "Nope" } else { "Reader" };
            yaml.push_str(&format!(
                "  - {{ principal: alice, role: {role}, scope: /subscriptions/s{i} }}\n"
            ));
        }
        let error = load_str(&yaml, "big")
            .err()
            .unwrap_or_else(|| panic!("accepted"));
        assert_eq!(error.problems.len(), 1);
        assert_eq!(error.problems[0].path, "roleAssignments[700].role");
        assert_eq!(error.problems[0].location.map(|l| l.line), Some(703));
    }

    fn written(text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("tenant.json");
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
        (dir, path)
    }

    #[test]
    fn a_json_file_loads_as_its_text_does() {
        let json = to_json(DEMO_SNAPSHOT);
        let (_dir, path) = written(&json);
        let from_file = load_file(&path).unwrap_or_else(|e| panic!("{e}"));
        let from_text = load_str(&json, "demo").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(from_file.info.content_sha256, from_text.info.content_sha256);
        assert_eq!(from_file.info.revision, from_text.info.revision);
        assert_eq!(
            format!("{:?}", from_file.tenant.role_assignments),
            format!("{:?}", from_text.tenant.role_assignments)
        );
    }

    #[test]
    fn a_json_file_that_fails_gets_the_text_paths_problems_and_places() {
        let invalid = "{\n  \"principals\": [{\"id\": \"alice\", \"type\": \"User\"}],\n  \"roleAssignments\": [\n    {\"principal\": \"alice\", \"role\": \"Reader\", \"scope\": \"/\"},\n    {\"principal\": \"bob\", \"role\": \"Nope\", \"scope\": \"/\"}\n  ]\n}\n";
        let misspelt = "{\n  \"roleAssignments\": [\n    {\"principal\": \"a\", \"rol\": \"Reader\", \"scope\": \"/\"}\n  ]\n}\n";
        for text in [invalid, misspelt] {
            let (_dir, path) = written(text);
            let from_file = load_file(&path).err().unwrap_or_else(|| panic!("accepted"));
            let from_text = load_str(text, &path.display().to_string())
                .err()
                .unwrap_or_else(|| panic!("accepted"));
            assert_eq!(from_file.to_string(), from_text.to_string());
            assert!(from_file.problems.iter().all(|p| p.location.is_some()));
        }
    }

    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-zA-Z0-9 /._-]{0,12}",
            Just("/subscriptions/S1/resourceGroups/rg".to_owned()),
            Just("\u{e9}\\\"\n\t".to_owned()),
        ]
    }

    fn entry() -> impl Strategy<Value = serde_json::Value> {
        prop_oneof![
            (text(), text(), text()).prop_map(|(p, r, s)| serde_json::json!(
                {"roleAssignments": [{"principal": p, "role": r, "scope": s}]}
            )),
            (text(), proptest::collection::btree_map(text(), text(), 0..3)).prop_map(
                |(id, attributes)| serde_json::json!(
                    {"principals": [{"id": id, "type": "User", "attributes": attributes}]}
                )
            ),
            (text(), any::<bool>(), any::<u32>()).prop_map(|(id, flag, n)| serde_json::json!(
                {"resources": [{"scope": id, "disableLocalAuth": flag, "tags": {"n": n.to_string()}}]}
            )),
            (text(), text()).prop_map(|(k, v)| serde_json::json!({ k: v })),
            any::<i64>().prop_map(|n| serde_json::json!({"revision": n})),
        ]
    }

    proptest! {
        /// The JSON path is only faster: whatever JSON it is given, it reads
        /// what the YAML parser reads, or leaves the answer to it.
        #[test]
        fn json_reads_as_yaml_would(value in entry(), pretty in any::<bool>()) {
            let json = if pretty {
                serde_json::to_string_pretty(&value)
            } else {
                serde_json::to_string(&value)
            }
            .unwrap_or_else(|e| panic!("{e}"));
            prop_assert_eq!(as_parsed(&json), as_yaml(&json));
        }

        #[test]
        fn parse_never_panics(text in "\\PC{0,80}") {
            let _ = parse(&text);
        }
    }
}
