//! Snapshots (docs/snapshot-format.md): the YAML (or JSON) file of roles, assignments and
//! agents; its validation, with every problem located; and its compilation
//! into the immutable form the engine decides on.

pub mod catalog;
pub mod compile;
pub mod error;
pub mod import;
pub mod locate;
pub mod reload;
pub mod schema;
pub mod validate;

use std::path::Path;
use std::time::SystemTime;

use sha2::{Digest, Sha256};

pub use compile::{Anchor, CompiledSnapshot, NodeId, SnapshotInfo, ROOT_NODE};
pub use error::{Problem, SnapshotError};
use locate::SourceMap;
use schema::SnapshotFile;

/// The demo tenant served when no `--snapshot` is given.
pub const DEMO_SNAPSHOT: &str = include_str!("demo.yaml");
/// The source name of the demo snapshot.
pub const DEMO_SOURCE: &str = "embedded:demo";

/// The largest snapshot file accepted.
pub const MAX_SNAPSHOT_BYTES: u64 = 1 << 30;

/// Reads, validates and compiles a snapshot file.
pub fn load_file(path: &Path) -> Result<CompiledSnapshot, SnapshotError> {
    let name = path.display().to_string();
    let fail = |message: String| SnapshotError {
        source_name: name.clone(),
        problems: vec![Problem {
            path: String::new(),
            id: None,
            message,
            location: None,
        }],
    };
    let size = std::fs::metadata(path)
        .map_err(|e| fail(format!("cannot read the snapshot: {e}")))?
        .len();
    if size > MAX_SNAPSHOT_BYTES {
        return Err(fail(format!(
            "the snapshot is {size} bytes; the limit is {MAX_SNAPSHOT_BYTES}"
        )));
    }
    let bytes = std::fs::read(path).map_err(|e| fail(format!("cannot read the snapshot: {e}")))?;
    let text =
        String::from_utf8(bytes).map_err(|e| fail(format!("the snapshot is not UTF-8: {e}")))?;
    load_str(&text, &name)
}

/// The embedded demo snapshot, compiled.
pub fn demo() -> Result<CompiledSnapshot, SnapshotError> {
    load_str(DEMO_SNAPSHOT, DEMO_SOURCE)
}

/// Validates and compiles snapshot text; `source_name` names it in errors.
pub fn load_str(text: &str, source_name: &str) -> Result<CompiledSnapshot, SnapshotError> {
    let fail = |problems: Vec<Problem>| SnapshotError {
        source_name: source_name.to_owned(),
        problems,
    };
    let content_sha256 = hex::encode(Sha256::digest(text.as_bytes()));
    if text.trim().is_empty() {
        return Err(fail(vec![Problem {
            path: String::new(),
            id: None,
            message: "the snapshot is empty (write `{}` for a deliberately empty tenant)".into(),
            location: None,
        }]));
    }
    let file: SnapshotFile = serde_yaml::from_str(text).map_err(|e| {
        fail(vec![Problem {
            path: String::new(),
            id: None,
            message: e.to_string(),
            location: e.location().map(|l| locate::Location {
                line: l.line(),
                column: l.column(),
            }),
        }])
    })?;
    let builtin = catalog::builtin_roles().map_err(|e| e.clone())?;
    let map = SourceMap::build(text);
    let default_revision = format!("sha256:{}", &content_sha256[..12]);
    let validate::Validated { tenant, routes } =
        validate::snapshot(file, &map, builtin, default_revision).map_err(fail)?;
    let info = SnapshotInfo {
        revision: tenant.revision.clone(),
        source: source_name.to_owned(),
        content_sha256,
        loaded_at: SystemTime::now(),
    };
    Ok(CompiledSnapshot::compile(tenant, info).with_routes(routes))
}
