//! Compiles `proto/rampart/v1/*.proto` with protox (pure Rust), so a fresh
//! machine needs no system `protoc`. The encoded descriptor set is written to
//! `OUT_DIR` for gRPC server reflection.

use std::{env, fs, path::PathBuf};

use prost::Message as _;

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
    let descriptors = protox::compile(protos, ["proto"])?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(
        out_dir.join("rampart_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;
    tonic_prost_build::configure().compile_fds(descriptors)?;
    Ok(())
}
