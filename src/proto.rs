//! Generated gRPC types of `proto/rampart/v1`. Only `server/` and the CLI's
//! clients use them; the engine knows nothing of protobuf.

#![allow(clippy::all, missing_docs)]

tonic::include_proto!("rampart.v1");

/// The encoded descriptor set, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("rampart_descriptor");
