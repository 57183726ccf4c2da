//! Resources with tags and local-auth settings, and the access keys bound
//! to them (docs/model.md#access-keys).

use std::collections::BTreeMap;

use super::scope::Scope;

#[derive(Debug, Clone)]
pub struct Resource {
    pub scope: Scope,
    pub tags: BTreeMap<String, String>,
    pub disable_local_auth: bool,
}

/// An access key: its id is what a request names as principal; it grants
/// data-plane operations at its resource and below.
#[derive(Debug, Clone)]
pub struct AccessKey {
    pub id: String,
    pub resource: Scope,
}
