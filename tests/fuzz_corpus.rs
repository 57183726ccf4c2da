//! The fuzz targets on stable Rust: every file of each target's corpus
//! (`fuzz/corpus/<target>/`, seeds and what libFuzzer found), then a bounded
//! number of random inputs, each a corpus file mutated or random bytes. The
//! target bodies are `fuzz/src/lib.rs`, included here, so this runs exactly
//! what the fuzzer runs. `fuzz/corpus-skip.txt` names inputs too slow for a
//! test run.

#[path = "../fuzz/src/lib.rs"]
mod targets;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// `target/file` names to leave out, from `fuzz/corpus-skip.txt`.
fn skipped() -> &'static HashSet<String> {
    static SKIP: OnceLock<HashSet<String>> = OnceLock::new();
    SKIP.get_or_init(|| {
        std::fs::read_to_string(fuzz_dir().join("corpus-skip.txt"))
            .unwrap_or_default()
            .lines()
            .map(|l| l.split('#').next().unwrap_or_default().trim().to_owned())
            .filter(|l| !l.is_empty())
            .collect()
    })
}

/// A target's corpus, sorted by name, skipped files left out.
fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = fuzz_dir().join("corpus").join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("a corpus directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
        .into_iter()
        .filter_map(|path| {
            let name = path.file_name()?.to_string_lossy().into_owned();
            if skipped().contains(&format!("{target}/{name}")) {
                return None;
            }
            match std::fs::read(&path) {
                Ok(bytes) => Some((name, bytes)),
                // Removed since listed: a fuzzer is minimizing the corpus.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => panic!("{}: {e}", path.display()),
            }
        })
        .collect()
}

fn body(target: &str) -> targets::Target {
    targets::TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .map(|&(_, f)| f)
        .unwrap_or_else(|| panic!("no target {target}"))
}

/// Runs every corpus file; a failure names the file.
fn replay(target: &str) {
    let run = body(target);
    let files = corpus(target);
    assert!(!files.is_empty(), "fuzz/corpus/{target} is empty");
    for (name, bytes) in files {
        let outcome = std::panic::catch_unwind(|| run(&bytes));
        assert!(outcome.is_ok(), "fuzz/corpus/{target}/{name} fails");
    }
}

/// One edit of a byte string, applied at a position taken modulo its length.
#[derive(Debug, Clone)]
enum Edit {
    Flip(usize, u8),
    Insert(usize, Vec<u8>),
    Remove(usize, usize),
    /// Copies a run of the input to another place (repeats structure).
    Duplicate(usize, usize, usize),
    /// Splices in a run of another corpus file.
    Splice(usize, usize, usize, usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(at, b)| Edit::Flip(at, b)),
        (
            any::<usize>(),
            prop_oneof![
                proptest::collection::vec(any::<u8>(), 1..8),
                proptest::sample::select(vec![
                    b"*".to_vec(),
                    b"/".to_vec(),
                    b"'".to_vec(),
                    b"(".to_vec(),
                    b"{".to_vec(),
                    b"\n".to_vec(),
                    b"%".to_vec(),
                    b"\xc3\xa9".to_vec(),
                    b"&a ".to_vec(),
                    b"*a".to_vec(),
                ]),
            ]
        )
            .prop_map(|(at, bytes)| Edit::Insert(at, bytes)),
        (any::<usize>(), 1usize..16).prop_map(|(at, n)| Edit::Remove(at, n)),
        (any::<usize>(), 1usize..64, any::<usize>()).prop_map(|(a, n, b)| Edit::Duplicate(a, n, b)),
        (any::<usize>(), any::<usize>(), 1usize..64, any::<usize>())
            .prop_map(|(f, a, n, to)| Edit::Splice(f, a, n, to)),
    ]
}

fn apply(mut data: Vec<u8>, edits: &[Edit], files: &[(String, Vec<u8>)]) -> Vec<u8> {
    for e in edits {
        let len = data.len();
        let at = |i: usize| if len == 0 { 0 } else { i % (len + 1) };
        match e {
            Edit::Flip(i, b) if len > 0 => data[i % len] ^= b | 1,
            Edit::Flip(..) => data.push(0),
            Edit::Insert(i, bytes) => {
                let i = at(*i);
                data.splice(i..i, bytes.iter().copied());
            }
            Edit::Remove(i, n) => {
                let i = at(*i);
                let end = (i + n).min(len);
                data.drain(i..end);
            }
            Edit::Duplicate(from, n, to) => {
                let from = at(*from);
                let run: Vec<u8> = data[from..(from + n).min(len)].to_vec();
                let to = at(*to);
                data.splice(to..to, run);
            }
            Edit::Splice(file, from, n, to) => {
                let other = &files[file % files.len()].1;
                let from = if other.is_empty() {
                    0
                } else {
                    from % other.len()
                };
                let run = &other[from..(from + n).min(other.len())];
                let to = at(*to);
                data.splice(to..to, run.iter().copied());
            }
        }
    }
    data
}

/// `cases` random inputs: most are a corpus file with a few edits, some
/// are random bytes.
fn random(target: &str, cases: u32) {
    let run = body(target);
    let files = corpus(target);
    assert!(!files.is_empty(), "fuzz/corpus/{target} is empty");
    let input = prop_oneof![
        4 => (0..files.len(), proptest::collection::vec(edit(), 1..6))
            .prop_map(|(i, edits)| apply(files[i].1.clone(), &edits, &files)),
        1 => proptest::collection::vec(any::<u8>(), 0..512),
    ];
    let config = Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let result = runner.run(&input, |data| {
        let outcome = std::panic::catch_unwind(|| run(&data));
        prop_assert!(
            outcome.is_ok(),
            "input (lossy) {:?}",
            String::from_utf8_lossy(&data)
        );
        Ok(())
    });
    if let Err(e) = result {
        panic!("fuzz target {target}: {e}");
    }
}

macro_rules! fuzz_tests {
    ($($target:ident: $cases:expr,)*) => {
        mod corpus {
            $(#[test] fn $target() { super::replay(stringify!($target)); })*
        }
        mod random {
            $(#[test] fn $target() { super::random(stringify!($target), $cases); })*
        }
    };
}

fuzz_tests! {
    scope: 5000,
    operation: 5000,
    condition: 5000,
    snapshot: 1000,
    authorize: 3000,
    arm_mapping: 5000,
    check_request: 3000,
    grpc_frames: 3000,
}

#[test]
fn every_target_has_a_test_and_a_corpus() {
    let tested = [
        "scope",
        "operation",
        "condition",
        "snapshot",
        "authorize",
        "arm_mapping",
        "check_request",
        "grpc_frames",
    ];
    let manifest = std::fs::read_to_string(fuzz_dir().join("Cargo.toml")).unwrap_or_default();
    for (name, _) in targets::TARGETS {
        assert!(tested.contains(name), "{name} has no test");
        let binary = fuzz_dir().join("fuzz_targets").join(format!("{name}.rs"));
        let source = std::fs::read_to_string(&binary).unwrap_or_default();
        assert!(
            source.contains(&format!("rampart_fuzz::{name}(data)")),
            "{} does not run the target {name}",
            binary.display()
        );
        assert!(
            manifest.contains(&format!("name = \"{name}\"")),
            "fuzz/Cargo.toml declares no binary {name}"
        );
    }
    assert_eq!(tested.len(), targets::TARGETS.len());
    for entry in skipped() {
        assert!(
            fuzz_dir().join("corpus").join(entry).is_file(),
            "fuzz/corpus-skip.txt names {entry}, which is not in the corpus"
        );
    }
}
