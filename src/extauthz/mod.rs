//! The pure core of the Envoy `ext_authz` front door: turning an agent's
//! Azure Resource Manager HTTP request into the RBAC question the engine
//! answers. [`mapping`] derives (operation, scope) from (method, path) the
//! way ARM does; [`routes`] holds the user routes that add to or override it.

pub mod mapping;
pub mod routes;

pub use mapping::{map_request, MappedBy, Mapping, MappingError, Method, MAX_PATH_LEN};
pub use routes::{RouteError, RouteIssue, RouteSpec, RouteTable};
