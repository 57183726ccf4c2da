//! Snapshots (docs/snapshot-format.md): the YAML (or JSON) file of roles, assignments and
//! agents; its validation, with every problem located; and its compilation
//! into the immutable form the engine decides on.

pub mod bounds;
pub mod catalog;
pub mod compile;
pub mod error;
pub mod import;
pub mod locate;
pub mod reload;
pub mod schema;
pub mod suggest;
pub mod validate;

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use sha2::{Digest, Sha256};

pub use compile::{Anchor, CompiledSnapshot, NodeId, SnapshotInfo, ROOT_NODE};
pub use error::{Problem, SnapshotError};
use locate::SourceMap;
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
    let bytes = read_file(path)?;
    let text = String::from_utf8(bytes).map_err(|e| {
        SnapshotError::whole(
            path.display().to_string(),
            format!("the snapshot is not UTF-8: {e}"),
        )
    })?;
    load_str_within(
        &text,
        &path.display().to_string(),
        Instant::now() + LOAD_BUDGET,
    )
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
    let fail = |problems: Vec<Problem>| SnapshotError {
        source_name: source_name.to_owned(),
        problems,
    };
    let whole = |message: String| SnapshotError::whole(source_name.to_owned(), message);
    let in_time = |phase: &str| {
        if Instant::now() > deadline {
            Err(whole(format!(
                "loading took longer than its budget of {}s ({phase}); the previous snapshot keeps serving",
                LOAD_BUDGET.as_secs()
            )))
        } else {
            Ok(())
        }
    };
    if text.len() as u64 > MAX_SNAPSHOT_BYTES {
        return Err(whole(format!(
            "the snapshot is {} bytes; the limit is {MAX_SNAPSHOT_BYTES}",
            text.len()
        )));
    }
    bounds::check(text).map_err(|e| whole(e.to_string()))?;
    let content_sha256 = hex::encode(Sha256::digest(text.as_bytes()));
    if text.trim().is_empty() {
        return Err(whole(
            "the snapshot is empty (write `{}` for a deliberately empty tenant)".into(),
        ));
    }
    let file: SnapshotFile = serde_yaml::from_str(text).map_err(|e| {
        fail(vec![Problem {
            path: String::new(),
            id: None,
            message: suggest::unknown_field(e.to_string()),
            location: e.location().map(|l| locate::Location {
                line: l.line(),
                column: l.column(),
            }),
        }])
    })?;
    in_time("after parsing")?;
    let builtin = catalog::builtin_roles().map_err(|e| e.clone())?;
    let map = SourceMap::build(text);
    let default_revision = format!("sha256:{}", &content_sha256[..12]);
    let validate::Validated { tenant, routes } =
        validate::snapshot(file, &map, builtin, default_revision).map_err(fail)?;
    in_time("after validation")?;
    let info = SnapshotInfo {
        revision: tenant.revision.clone(),
        source: source_name.to_owned(),
        content_sha256,
        loaded_at: SystemTime::now(),
    };
    Ok(CompiledSnapshot::compile(tenant, info).with_routes(routes))
}
