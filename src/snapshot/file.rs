//! Reading a snapshot file so that its text is not held through the load,
//! and hashing one without holding it at all.
//!
//! A JSON file's text is larger than the compiled tenant (224 MB against
//! 187 MB at a million assignments): held through validation and
//! compilation beside everything they build, it would more than double
//! the load's peak. The JSON parser reads the text into entries whose
//! strings are interned ([`super::schema::RoleAssignments`]), far smaller
//! than the text, and the text is dropped before validation starts.
//!
//! Only a file the JSON parser accepts is answered here. Anything else
//! (YAML, JSON with a mistake, a file that is not UTF-8) goes on as text
//! down the text path, which gives today's answer and message. The text
//! path's shape guard ([`super::bounds`]) has nothing to add for a file the
//! JSON parser accepts: JSON has no aliases, the parser refuses nesting
//! beyond its recursion limit (128), and the schema's fixed types nest six
//! levels at most, so anything deeper is refused and goes down the text
//! path, where the guard runs.

use std::fs::File;
use std::io;
use std::path::Path;

use sha2::{Digest, Sha256};

use super::schema::SnapshotFile;
use super::{read_file, SnapshotError, MAX_SNAPSHOT_BYTES};

/// What reading a snapshot file made of it.
pub(super) enum Read {
    /// JSON the parser accepted: the file's entries, and the SHA-256 (hex)
    /// of its bytes. The text is gone.
    Json {
        file: Box<SnapshotFile>,
        content_sha256: String,
    },
    /// Anything else, as text, for the text path to answer.
    Text(String),
}

/// Reads the file at `path`, parsing it here if it is JSON the parser
/// accepts.
pub(super) fn read(path: &Path) -> Result<Read, SnapshotError> {
    let bytes = read_file(path)?;
    if starts_with_brace(&bytes) {
        if let Ok(file) = serde_json::from_slice::<SnapshotFile>(&bytes) {
            let content_sha256 = hex::encode(Sha256::digest(&bytes));
            return Ok(Read::Json {
                file: Box::new(file),
                content_sha256,
            });
        }
    }
    String::from_utf8(bytes).map(Read::Text).map_err(|e| {
        SnapshotError::whole(
            path.display().to_string(),
            format!("the snapshot is not UTF-8: {e}"),
        )
    })
}

/// The SHA-256 (hex) of the file at `path`, read in pieces; refused as
/// [`super::read_file`] refuses a file.
pub(super) fn sha256(path: &Path) -> Result<String, SnapshotError> {
    let fail = |message: String| SnapshotError::whole(path.display().to_string(), message);
    let (opened, size) = open(path)?;
    let mut hashing = Hashing {
        inner: io::Read::take(opened, MAX_SNAPSHOT_BYTES + 1),
        hasher: Sha256::new(),
        len: 0,
    };
    io::copy(&mut hashing, &mut io::sink())
        .map_err(|e| fail(format!("cannot read the snapshot: {e}")))?;
    if hashing.len > MAX_SNAPSHOT_BYTES {
        return Err(fail(format!(
            "the snapshot is {} bytes; the limit is {MAX_SNAPSHOT_BYTES}",
            size.max(hashing.len)
        )));
    }
    Ok(hex::encode(hashing.hasher.finalize()))
}

/// The file at `path`, opened, and its size, refused beyond the limit.
fn open(path: &Path) -> Result<(File, u64), SnapshotError> {
    let fail = |message: String| SnapshotError::whole(path.display().to_string(), message);
    let opened = File::open(path).map_err(|e| fail(format!("cannot read the snapshot: {e}")))?;
    let size = opened
        .metadata()
        .map_err(|e| fail(format!("cannot read the snapshot: {e}")))?
        .len();
    if size > MAX_SNAPSHOT_BYTES {
        return Err(fail(format!(
            "the snapshot is {size} bytes; the limit is {MAX_SNAPSHOT_BYTES}"
        )));
    }
    Ok((opened, size))
}

/// Whether the first byte that is not JSON whitespace is `{`.
fn starts_with_brace(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
        .is_some_and(|&b| b == b'{')
}

/// A reader that hashes and counts every byte read through it.
struct Hashing<R> {
    inner: R,
    hasher: Sha256,
    len: u64,
}

impl<R: io::Read> io::Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(text: &[u8]) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("s.json");
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
        (dir, path)
    }

    fn as_json(text: &str) -> Option<(Box<SnapshotFile>, String)> {
        let (_dir, path) = written(text.as_bytes());
        match read(&path).unwrap_or_else(|e| panic!("{e}")) {
            Read::Json {
                file,
                content_sha256,
            } => Some((file, content_sha256)),
            Read::Text(left) => {
                assert_eq!(left, text);
                None
            }
        }
    }

    #[test]
    fn json_is_parsed_and_hashed_as_the_whole_text_would_be() {
        let text = "\n  {\"revision\": \"r1\", \"roleAssignments\": [{\"principal\": \"a\", \"role\": \"Reader\", \"scope\": \"/\"}]}\n\n";
        let (file, hash) = as_json(text).unwrap_or_else(|| panic!("left to text"));
        assert_eq!(file.revision.as_deref(), Some("r1"));
        assert_eq!(file.role_assignments.len(), 1);
        assert_eq!(hash, hex::encode(Sha256::digest(text.as_bytes())));
    }

    #[test]
    fn what_the_json_parser_refuses_is_left_to_the_text_path() {
        for text in [
            "",
            "   \n",
            "revision: r1\n",
            "[1]",
            "{\"revision\": \"r1\"} trailing",
            "{\"rol\": 1}",
            "{\"revision\": \"r1\", \"revision\": \"r2\"}",
        ] {
            assert!(as_json(text).is_none(), "{text:?}");
        }
        let deep = format!("{{\"revision\": {}1{}}}", "[".repeat(200), "]".repeat(200));
        assert!(as_json(&deep).is_none());
    }

    #[test]
    fn a_file_is_hashed_in_pieces_as_whole() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("s.yaml");
        let text = "revision: r1\n".repeat(100_000);
        std::fs::write(&path, &text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            sha256(&path).unwrap_or_else(|e| panic!("{e}")),
            hex::encode(Sha256::digest(text.as_bytes()))
        );
        let missing = sha256(&dir.path().join("none")).err();
        assert!(missing.is_some_and(|e| e.to_string().contains("cannot read the snapshot")));
    }

    #[test]
    fn bytes_that_are_not_utf8_are_refused_as_the_text_path_refuses_them() {
        let (_dir, path) = written(b"{\"revision\": \"\xff\"}");
        let refused = read(&path).err().map(|e| e.to_string());
        assert!(
            refused.as_deref().is_some_and(|m| m.contains("not UTF-8")),
            "{refused:?}"
        );
    }
}
