//! The Envoy `ext_authz` front door (docs/ext-authz.md): an agent's Azure
//! Resource Manager requests, as Envoy hands them over, become the RBAC
//! question the engine answers.
//!
//! The pure core: [`mapping`] derives (operation, scope) from (method,
//! path) the way ARM does; [`routes`] holds the user routes that add to or
//! override it; [`identity`] and [`jwt`] read who is asking; [`nested`]
//! lists the operations a batch or a deployment carries; [`answer`] words
//! the reply. [`service`] is the gRPC edge that ties them to the engine;
//! [`wire`] reads only the parts of Envoy's request it needs, in place, and
//! [`protobuf`] is the wire format it and the answers are written in.

pub mod answer;
pub mod identity;
pub mod jwt;
pub mod mapping;
pub mod nested;
pub mod protobuf;
pub mod routes;
pub mod service;
pub mod wire;

pub use identity::IdentitySource;
pub use mapping::{map_request, MappedBy, Mapping, MappingError, Method, MAX_PATH_LEN};
pub use routes::{RouteError, RouteIssue, RouteSpec, RouteTable};
pub use service::ExtAuthzSettings;
