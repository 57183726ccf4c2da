//! Compiles `proto/rampart/v1/*.proto` with protox (pure Rust), so a fresh
//! machine needs no system `protoc`. The encoded descriptor set is written to
//! `OUT_DIR` for gRPC server reflection.
//!
//! Envoy's `envoy.service.auth.v3` types come from the `envoy-types` crate,
//! which ships no descriptor set, only the `.proto` files it was generated
//! from. They are compiled here too, from the crate's own copy, so gRPC
//! reflection can describe `Authorization/Check` and no Envoy proto is
//! copied into this repository. The directory found is also handed to the
//! tests (`RAMPART_ENVOY_PROTO_DIR`), which check deploy/'s Envoy
//! configuration against Envoy's schema.

use std::path::{Path, PathBuf};
use std::{env, fs};

use prost::Message as _;

/// The `envoy-types` source trees that hold the protos Envoy's ext_authz
/// service imports.
const ENVOY_INCLUDES: [&str; 4] = ["data-plane-api", "xds", "protoc-gen-validate", "googleapis"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/rampart/v1/decision.proto",
        "proto/rampart/v1/authorizer.proto",
        "proto/rampart/v1/admin.proto",
        "proto/rampart/v1/elevation.proto",
        "proto/rampart/v1/approvals.proto",
    ];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    println!("cargo:rerun-if-changed=Cargo.lock");
    println!("cargo:rerun-if-env-changed=ENVOY_TYPES_PROTO");
    let descriptors = protox::compile(protos, ["proto"])?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(
        out_dir.join("rampart_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;
    tonic_prost_build::configure().compile_fds(descriptors)?;

    let envoy = envoy_proto_dir()?;
    let includes: Vec<PathBuf> = ENVOY_INCLUDES.iter().map(|d| envoy.join(d)).collect();
    let ext_authz = protox::compile(["envoy/service/auth/v3/external_auth.proto"], &includes)?;
    fs::write(
        out_dir.join("envoy_ext_authz_descriptor.bin"),
        ext_authz.encode_to_vec(),
    )?;
    println!(
        "cargo:rustc-env=RAMPART_ENVOY_PROTO_DIR={}",
        envoy.display()
    );
    Ok(())
}

/// The `proto/` directory of the `envoy-types` crate this build uses:
/// `$ENVOY_TYPES_PROTO` when set, else the crate's sources in Cargo's
/// registry (the version pinned in Cargo.lock), else where `cargo metadata`
/// says the crate is (vendored or patched sources).
fn envoy_proto_dir() -> Result<PathBuf, String> {
    if let Some(dir) = env::var_os("ENVOY_TYPES_PROTO") {
        return Ok(PathBuf::from(dir));
    }
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").map_err(|e| e.to_string())?);
    let version = locked_version(&manifest_dir.join("Cargo.lock"), "envoy-types");
    if let Some(found) = version.as_deref().and_then(in_registry) {
        return Ok(found);
    }
    if let Some(found) = from_cargo_metadata(&manifest_dir) {
        return Ok(found);
    }
    Err(format!(
        "cannot find the .proto files of the envoy-types crate (version {}): \
         run `cargo fetch`, or set ENVOY_TYPES_PROTO to the crate's proto/ directory",
        version.as_deref().unwrap_or("unknown")
    ))
}

/// The version of `package` in a Cargo.lock.
fn locked_version(lock: &Path, package: &str) -> Option<String> {
    let text = fs::read_to_string(lock).ok()?;
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if line.trim() == format!("name = \"{package}\"") {
            let version = lines.next()?.trim();
            return Some(
                version
                    .strip_prefix("version = \"")?
                    .strip_suffix('"')?
                    .to_owned(),
            );
        }
    }
    None
}

/// `$CARGO_HOME/registry/src/*/envoy-types-{version}/proto`.
fn in_registry(version: &str) -> Option<PathBuf> {
    let cargo_home = env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))?;
    let sources = fs::read_dir(cargo_home.join("registry").join("src")).ok()?;
    sources
        .filter_map(Result::ok)
        .map(|index| {
            index
                .path()
                .join(format!("envoy-types-{version}"))
                .join("proto")
        })
        .find(|dir| dir.join("data-plane-api").is_dir())
}

/// Asks `cargo metadata` (offline) where the envoy-types manifest is.
fn from_cargo_metadata(manifest_dir: &Path) -> Option<PathBuf> {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = std::process::Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--offline"])
        .current_dir(manifest_dir)
        .output()
        .ok()?;
    let text = String::from_utf8(output.stdout).ok()?;
    let key = "\"manifest_path\":\"";
    text.match_indices(key).find_map(|(at, _)| {
        let rest = &text[at + key.len()..];
        let path = &rest[..rest.find('"')?];
        let crate_dir = Path::new(path).parent()?;
        let name = crate_dir.file_name()?.to_str()?;
        let is_envoy_types = name == "envoy-types" || name.starts_with("envoy-types-");
        let proto = crate_dir.join("proto");
        (is_envoy_types && proto.join("data-plane-api").is_dir()).then_some(proto)
    })
}
