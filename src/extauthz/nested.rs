//! Requests that carry other requests, judged from their bodies: ARM's
//! `/batch` (a list of requests ARM executes in turn) and template
//! deployments (resources ARM creates on the caller's behalf). Authorizing
//! only the envelope would let an agent smuggle a delete into a batch or a
//! role assignment into a deployment, so each inner operation is listed
//! here for the engine to decide, and anything that cannot be listed with
//! certainty is an error (the service refuses the request).
//!
//! # Batches
//!
//! `POST /batch` with `{"requests": [{"httpMethod", "url" | "relativeUrl",
//! "content"…}]}`: each entry is an (method, path) to map like any request.
//! An entry that is itself a deployment has its `content` inspected as
//! one; a batch inside a batch is refused.
//!
//! # Deployments
//!
//! `PUT {scope}/providers/Microsoft.Resources/deployments/{name}` (and
//! `deploymentStacks`, and `POST …/validate` or `…/whatIf`) with an inline
//! `properties.template`. Each resource of `template.resources` (an array,
//! or an object of symbolic names) becomes the write of its type at
//! `{scope}/providers/{namespace}/{type}/{name}[/{type}/{name}…]`; a child
//! resource under `resources` extends its parent's type and name; a
//! resource with a literal `scope` property hangs below that scope.
//! Nested `Microsoft.Resources/deployments` are the write of a deployment
//! and, recursively, their own template at their own scope
//! (`subscriptionId`, `resourceGroup`).
//!
//! Template expressions (`[parameters('name')]`, `[guid(...)]`…) are only
//! known once ARM evaluates them, so a type, name, scope or target that is
//! an expression is refused, as are `copy` loops and linked templates
//! (`templateLink`): rampart cannot tell what they would create. Resources
//! marked `existing` are references, not writes, and are skipped.
//!
//! Bounds: the body, the number of inner operations, batch entries and
//! nesting depth are all limited; JSON nesting is bounded by the parser.

use serde_json::{Map, Value};

use super::mapping::Method;

/// The largest body inspected: ARM's own limit for a template request.
pub const MAX_BODY_BYTES: usize = 4 << 20;
/// The most inner operations one request may carry (ARM's resource limit
/// per template is 800).
pub const MAX_INNER: usize = 800;
/// The most requests one batch may carry.
pub const MAX_BATCH_REQUESTS: usize = 500;
/// How deep deployments may nest (a batch entry counts as one level).
pub const MAX_DEPLOYMENT_DEPTH: usize = 5;
/// How deep child resources may nest under `resources`.
pub const MAX_RESOURCE_DEPTH: usize = 10;

/// A request that carries others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carrier<'a> {
    /// `POST /batch`.
    Batch,
    /// A template deployment (or a validation or what-if of one) at this
    /// scope (`/` at tenant scope).
    Deployment { scope: &'a str },
}

/// One operation a carrier asks ARM to perform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inner {
    /// A batch entry: to be mapped like any request.
    Http { method: Method, path: String },
    /// A resource a template would create or update.
    Write { operation: String, scope: String },
}

/// An inner operation and where it was found in the body, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InnerOperation {
    pub inner: Inner,
    /// e.g. `requests[2]` or `properties.template.resources[0].resources[1]`.
    pub at: String,
}

/// Why a carrier's inner operations cannot all be listed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NestedError {
    #[error(
        "the request body was not sent to rampart; configure Envoy's ext_authz with_request_body"
    )]
    NoBody,
    #[error("the request body reached rampart truncated (x-envoy-auth-partial-body); raise with_request_body.max_request_bytes and keep allow_partial_message off")]
    Partial,
    #[error("the request body is {0} bytes; at most {MAX_BODY_BYTES} are inspected")]
    TooLarge(usize),
    #[error("the request body is not JSON: {0}")]
    NotJson(String),
    #[error("{at}: {message}")]
    Shape { at: String, message: String },
    #[error("{at} is the template expression '{value}', which only ARM can evaluate; write the value itself to let rampart judge it")]
    Expression { at: String, value: String },
    #[error("{at}: a copy loop cannot be expanded before ARM evaluates it")]
    Copy { at: String },
    #[error(
        "{at}: a linked template (templateLink) cannot be inspected; send the template inline"
    )]
    LinkedTemplate { at: String },
    #[error("the request carries more than {MAX_INNER} operations (or a batch more than {MAX_BATCH_REQUESTS} requests)")]
    TooMany,
    #[error("{at}: nested more than {0} levels deep", at = .1)]
    TooDeep(usize, String),
}

fn shape(at: impl Into<String>, message: impl Into<String>) -> NestedError {
    NestedError::Shape {
        at: at.into(),
        message: message.into(),
    }
}

/// Whether `(method, path)` carries other requests. `path` must already
/// have passed [`super::map_request`] (or be `/batch`).
pub fn carrier(method: Method, path: &str) -> Option<Carrier<'_>> {
    let path = path.split('?').next().unwrap_or(path);
    let path = match path.strip_suffix('/') {
        Some(p) if !p.is_empty() => p,
        _ => path,
    };
    if method == Method::Post && path.eq_ignore_ascii_case("/batch") {
        return Some(Carrier::Batch);
    }
    let mut segments = path.rsplit('/');
    let last = segments.next()?;
    match method {
        Method::Put => {}
        Method::Post
            if last.eq_ignore_ascii_case("validate") || last.eq_ignore_ascii_case("whatIf") =>
        {
            segments.next()?; // the deployment's name
        }
        _ => return None,
    }
    let kind = segments.next()?;
    if !(kind.eq_ignore_ascii_case("deployments") || kind.eq_ignore_ascii_case("deploymentStacks"))
    {
        return None;
    }
    if !segments.next()?.eq_ignore_ascii_case("Microsoft.Resources") {
        return None;
    }
    let providers = segments.next()?;
    if !providers.eq_ignore_ascii_case("providers") {
        return None;
    }
    // `providers` is a slice of `path`: the scope is what precedes it.
    let start = providers.as_ptr() as usize - path.as_ptr() as usize;
    let scope = &path[..start.saturating_sub(1)];
    Some(Carrier::Deployment {
        scope: if scope.is_empty() { "/" } else { scope },
    })
}

/// Lists the inner operations of a carrier's body.
pub fn inner_operations(
    carrier: Carrier<'_>,
    body: &[u8],
) -> Result<Vec<InnerOperation>, NestedError> {
    if body.len() > MAX_BODY_BYTES {
        return Err(NestedError::TooLarge(body.len()));
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(NestedError::NoBody);
    }
    let value: Value =
        serde_json::from_slice(body).map_err(|e| NestedError::NotJson(e.to_string()))?;
    let mut out = Vec::new();
    match carrier {
        Carrier::Batch => batch(&value, &mut out)?,
        Carrier::Deployment { scope } => deployment(&value, scope, "", 0, &mut out)?,
    }
    Ok(out)
}

fn push(out: &mut Vec<InnerOperation>, inner: Inner, at: String) -> Result<(), NestedError> {
    if out.len() >= MAX_INNER {
        return Err(NestedError::TooMany);
    }
    out.push(InnerOperation { inner, at });
    Ok(())
}

fn batch(value: &Value, out: &mut Vec<InnerOperation>) -> Result<(), NestedError> {
    let requests = value
        .get("requests")
        .and_then(Value::as_array)
        .ok_or_else(|| shape("requests", "a batch must have a 'requests' array"))?;
    if requests.len() > MAX_BATCH_REQUESTS {
        return Err(NestedError::TooMany);
    }
    for (i, request) in requests.iter().enumerate() {
        let at = format!("requests[{i}]");
        let method_text = request
            .get("httpMethod")
            .and_then(Value::as_str)
            .ok_or_else(|| shape(format!("{at}.httpMethod"), "must be a string"))?;
        let method = Method::parse(&method_text.to_ascii_uppercase())
            .map_err(|e| shape(format!("{at}.httpMethod"), e.to_string()))?;
        let url = match (request.get("url"), request.get("relativeUrl")) {
            (Some(Value::String(url)), None) | (None, Some(Value::String(url))) => url,
            (Some(_), Some(_)) => {
                return Err(shape(at, "has both 'url' and 'relativeUrl'; give one"))
            }
            _ => return Err(shape(format!("{at}.url"), "must be a string")),
        };
        let path = url_path(url).ok_or_else(|| {
            shape(
                format!("{at}.url"),
                format!("'{url}' is neither a path nor an https URL"),
            )
        })?;
        match carrier(method, path) {
            Some(Carrier::Batch) => return Err(shape(at, "a batch inside a batch is refused")),
            Some(Carrier::Deployment { scope }) => {
                let content = request.get("content").ok_or_else(|| {
                    shape(format!("{at}.content"), "a deployment needs its content")
                })?;
                deployment(content, scope, &format!("{at}.content."), 1, out)?;
            }
            None => {}
        }
        push(
            out,
            Inner::Http {
                method,
                path: path.to_owned(),
            },
            at,
        )?;
    }
    Ok(())
}

/// The path (and query) of a batch entry's URL: relative as given, or the
/// part of an absolute `http(s)://` URL after its authority.
fn url_path(url: &str) -> Option<&str> {
    if url.starts_with('/') {
        return Some(url);
    }
    let scheme_end = url.find("://")?;
    let scheme = &url[..scheme_end];
    if !(scheme.eq_ignore_ascii_case("https") || scheme.eq_ignore_ascii_case("http")) {
        return None;
    }
    let rest = &url[scheme_end + 3..];
    let path_start = rest.find(['/', '?'])?;
    let path = &rest[path_start..];
    path.starts_with('/').then_some(path)
}

/// Is this string an ARM template expression? `[…]` is one, `[[…` is a
/// literal starting with `[`.
fn is_expression(text: &str) -> bool {
    let t = text.trim();
    t.starts_with('[') && t.ends_with(']') && !t.starts_with("[[")
}

/// A string property that must be a literal (not an expression).
fn literal<'v>(
    object: &'v Map<String, Value>,
    key: &str,
    at: &str,
) -> Result<Option<&'v str>, NestedError> {
    match object.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if is_expression(s) => Err(NestedError::Expression {
            at: format!("{at}.{key}"),
            value: s.chars().take(200).collect(),
        }),
        Some(Value::String(s)) => Ok(Some(s.strip_prefix("[[").map_or(s.as_str(), |_| &s[1..]))),
        Some(_) => Err(shape(format!("{at}.{key}"), "must be a string")),
    }
}

fn required<'v>(
    object: &'v Map<String, Value>,
    key: &str,
    at: &str,
) -> Result<&'v str, NestedError> {
    literal(object, key, at)?
        .filter(|s| !s.is_empty())
        .ok_or_else(|| shape(format!("{at}.{key}"), "is required"))
}

/// The operations of a deployment body at `scope`.
fn deployment(
    value: &Value,
    scope: &str,
    prefix: &str,
    depth: usize,
    out: &mut Vec<InnerOperation>,
) -> Result<(), NestedError> {
    if depth > MAX_DEPLOYMENT_DEPTH {
        return Err(NestedError::TooDeep(
            MAX_DEPLOYMENT_DEPTH,
            prefix.trim_end_matches('.').to_owned(),
        ));
    }
    let properties = value
        .get("properties")
        .and_then(Value::as_object)
        .ok_or_else(|| {
            shape(
                format!("{prefix}properties"),
                "a deployment must have properties",
            )
        })?;
    if properties.contains_key("templateLink") {
        return Err(NestedError::LinkedTemplate {
            at: format!("{prefix}properties.templateLink"),
        });
    }
    let template = properties
        .get("template")
        .and_then(Value::as_object)
        .ok_or_else(|| {
            shape(
                format!("{prefix}properties.template"),
                "must be an inline template object",
            )
        })?;
    let at = format!("{prefix}properties.template.resources");
    match template.get("resources") {
        None | Some(Value::Null) => Ok(()),
        Some(resources) => each_resource(resources, &at, scope, None, depth, 0, out),
    }
}

/// A resource's full type and name.
struct Parent {
    kind: String,
    name: String,
}

fn each_resource(
    resources: &Value,
    at: &str,
    scope: &str,
    parent: Option<&Parent>,
    depth: usize,
    level: usize,
    out: &mut Vec<InnerOperation>,
) -> Result<(), NestedError> {
    if level > MAX_RESOURCE_DEPTH {
        return Err(NestedError::TooDeep(MAX_RESOURCE_DEPTH, at.to_owned()));
    }
    match resources {
        Value::Array(list) => {
            for (i, resource) in list.iter().enumerate() {
                resource_ops(
                    resource,
                    &format!("{at}[{i}]"),
                    scope,
                    parent,
                    depth,
                    level,
                    out,
                )?;
            }
            Ok(())
        }
        // languageVersion 2.0: resources keyed by symbolic name.
        Value::Object(map) => {
            for (name, resource) in map {
                resource_ops(
                    resource,
                    &format!("{at}.{name}"),
                    scope,
                    parent,
                    depth,
                    level,
                    out,
                )?;
            }
            Ok(())
        }
        _ => Err(shape(at, "must be an array or an object of resources")),
    }
}

fn resource_ops(
    resource: &Value,
    at: &str,
    scope: &str,
    parent: Option<&Parent>,
    depth: usize,
    level: usize,
    out: &mut Vec<InnerOperation>,
) -> Result<(), NestedError> {
    let object = resource
        .as_object()
        .ok_or_else(|| shape(at, "a resource must be an object"))?;
    if object.get("existing").and_then(Value::as_bool) == Some(true) {
        return Ok(());
    }
    if object.contains_key("copy") {
        return Err(NestedError::Copy { at: at.to_owned() });
    }
    let kind = required(object, "type", at)?;
    let name = required(object, "name", at)?;
    let (kind, name) = match parent {
        // A child written short: `subnets` named `s1` under `vnet1`.
        Some(p) if !kind.contains('/') => {
            (format!("{}/{kind}", p.kind), format!("{}/{name}", p.name))
        }
        _ => (kind.to_owned(), name.to_owned()),
    };
    let mut types = kind.split('/');
    let namespace = types.next().unwrap_or_default();
    let types: Vec<&str> = types.collect();
    let names: Vec<&str> = name.split('/').collect();
    if namespace.is_empty() || types.is_empty() || types.iter().any(|t| t.is_empty()) {
        return Err(shape(
            format!("{at}.type"),
            format!("'{kind}' is not Namespace/type[/type…]"),
        ));
    }
    if names.len() != types.len() || names.iter().any(|n| n.is_empty()) {
        return Err(shape(
            format!("{at}.name"),
            format!(
                "'{name}' has {} segment(s); type '{kind}' needs {}",
                names.len(),
                types.len()
            ),
        ));
    }
    let base = match literal(object, "scope", at)? {
        Some(s) if s.starts_with('/') => s.trim_end_matches('/').to_owned(),
        // The relative form `Namespace/type/name` is a resource of the
        // deployment's scope.
        Some(s) if !s.is_empty() => format!("{}/providers/{s}", scope.trim_end_matches('/')),
        _ => scope.trim_end_matches('/').to_owned(),
    };
    let mut target = base.clone();
    if kind.eq_ignore_ascii_case("Microsoft.Resources/resourceGroups") && is_subscription(&base) {
        target.push_str("/resourceGroups/");
        target.push_str(names[0]);
    } else {
        target.push_str("/providers/");
        target.push_str(namespace);
        for (t, n) in types.iter().zip(&names) {
            target.push('/');
            target.push_str(t);
            target.push('/');
            target.push_str(n);
        }
    }
    push(
        out,
        Inner::Write {
            operation: format!("{kind}/write"),
            scope: target,
        },
        at.to_owned(),
    )?;
    if kind.eq_ignore_ascii_case("Microsoft.Resources/deployments") {
        let nested_scope = nested_deployment_scope(object, &base, at)?;
        deployment(resource, &nested_scope, &format!("{at}."), depth + 1, out)?;
    }
    if let Some(children) = object.get("resources") {
        let me = Parent { kind, name };
        each_resource(
            children,
            &format!("{at}.resources"),
            scope,
            Some(&me),
            depth,
            level + 1,
            out,
        )?;
    }
    Ok(())
}

fn is_subscription(scope: &str) -> bool {
    let mut parts = scope.trim_start_matches('/').split('/');
    matches!(
        (parts.next(), parts.next(), parts.next()),
        (Some(s), Some(id), None) if s.eq_ignore_ascii_case("subscriptions") && !id.is_empty()
    )
}

/// The subscription of a scope, if it has one.
fn subscription_of(scope: &str) -> Option<&str> {
    let mut parts = scope.trim_start_matches('/').split('/');
    match (parts.next(), parts.next()) {
        (Some(s), Some(id)) if s.eq_ignore_ascii_case("subscriptions") && !id.is_empty() => {
            Some(id)
        }
        _ => None,
    }
}

/// Where a nested deployment deploys: its `subscriptionId` and
/// `resourceGroup`, else its parent's scope.
fn nested_deployment_scope(
    object: &Map<String, Value>,
    parent_scope: &str,
    at: &str,
) -> Result<String, NestedError> {
    let subscription = literal(object, "subscriptionId", at)?;
    let group = literal(object, "resourceGroup", at)?;
    if subscription.is_none() && group.is_none() {
        return Ok(if parent_scope.is_empty() {
            "/".into()
        } else {
            parent_scope.to_owned()
        });
    }
    let subscription = subscription
        .or_else(|| subscription_of(parent_scope))
        .ok_or_else(|| {
            shape(
                format!("{at}.subscriptionId"),
                "is required outside a subscription",
            )
        })?;
    Ok(match group {
        Some(group) => format!("/subscriptions/{subscription}/resourceGroups/{group}"),
        None => format!("/subscriptions/{subscription}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    const RG: &str = "/subscriptions/11111111-1111-1111-1111-111111111111/resourceGroups/rg";

    fn deploy_path() -> String {
        format!("{RG}/providers/Microsoft.Resources/deployments/d1?api-version=2024-03-01")
    }

    fn writes(body: &Value) -> Result<Vec<(String, String)>, NestedError> {
        let path = deploy_path();
        let carrier = carrier(Method::Put, &path).expect("a deployment");
        Ok(inner_operations(carrier, body.to_string().as_bytes())?
            .into_iter()
            .map(|op| match op.inner {
                Inner::Write { operation, scope } => (operation, scope),
                Inner::Http { .. } => panic!("no http inside a deployment"),
            })
            .collect())
    }

    fn template(resources: Value) -> Value {
        json!({ "properties": { "mode": "Incremental", "template": {
            "$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#",
            "contentVersion": "1.0.0.0",
            "resources": resources } } })
    }

    #[test]
    fn carriers_are_recognised_by_method_and_path() {
        assert_eq!(
            carrier(Method::Post, "/batch?api-version=2020-06-01"),
            Some(Carrier::Batch)
        );
        assert_eq!(carrier(Method::Post, "/BATCH/"), Some(Carrier::Batch));
        assert_eq!(carrier(Method::Get, "/batch"), None);
        assert_eq!(
            carrier(Method::Put, &deploy_path()),
            Some(Carrier::Deployment { scope: RG })
        );
        for action in ["validate", "whatIf", "WHATIF"] {
            let path = format!("{RG}/providers/Microsoft.Resources/deployments/d1/{action}");
            assert_eq!(
                carrier(Method::Post, &path),
                Some(Carrier::Deployment { scope: RG }),
                "{action}"
            );
        }
        assert_eq!(
            carrier(Method::Put, "/providers/Microsoft.Resources/deployments/d1"),
            Some(Carrier::Deployment { scope: "/" })
        );
        assert_eq!(
            carrier(
                Method::Put,
                &format!("{RG}/providers/microsoft.resources/DeploymentStacks/s1")
            ),
            Some(Carrier::Deployment { scope: RG })
        );
        assert_eq!(carrier(Method::Get, &deploy_path()), None);
        assert_eq!(carrier(Method::Delete, &deploy_path()), None);
        assert_eq!(
            carrier(
                Method::Post,
                &format!("{RG}/providers/Microsoft.Resources/deployments/d1/cancel")
            ),
            None
        );
        assert_eq!(
            carrier(
                Method::Put,
                &format!("{RG}/providers/Microsoft.Compute/deployments/d1")
            ),
            None
        );
    }

    #[test]
    fn each_template_resource_is_the_write_of_its_type() {
        let ops = writes(&template(json!([
            { "type": "Microsoft.Storage/storageAccounts", "apiVersion": "2023-01-01", "name": "st1" },
            { "type": "Microsoft.Network/virtualNetworks/subnets", "apiVersion": "2023-04-01", "name": "vnet1/s1" }
        ])))
        .unwrap();
        assert_eq!(
            ops,
            [
                (
                    "Microsoft.Storage/storageAccounts/write".to_owned(),
                    format!("{RG}/providers/Microsoft.Storage/storageAccounts/st1")
                ),
                (
                    "Microsoft.Network/virtualNetworks/subnets/write".to_owned(),
                    format!("{RG}/providers/Microsoft.Network/virtualNetworks/vnet1/subnets/s1")
                ),
            ]
        );
    }

    #[test]
    fn child_resources_extend_their_parent() {
        let ops = writes(&template(json!([{
            "type": "Microsoft.Network/virtualNetworks", "apiVersion": "2023-04-01", "name": "vnet1",
            "resources": [
                { "type": "subnets", "apiVersion": "2023-04-01", "name": "s1" },
                { "type": "Microsoft.Network/virtualNetworks/subnets", "apiVersion": "2023-04-01", "name": "vnet1/s2" }
            ]
        }])))
        .unwrap();
        let scopes: Vec<&str> = ops.iter().map(|(_, s)| s.as_str()).collect();
        assert_eq!(
            scopes,
            [
                format!("{RG}/providers/Microsoft.Network/virtualNetworks/vnet1"),
                format!("{RG}/providers/Microsoft.Network/virtualNetworks/vnet1/subnets/s1"),
                format!("{RG}/providers/Microsoft.Network/virtualNetworks/vnet1/subnets/s2"),
            ]
        );
    }

    #[test]
    fn a_role_assignment_in_a_template_is_listed() {
        let ops = writes(&template(json!([{
            "type": "Microsoft.Authorization/roleAssignments", "apiVersion": "2022-04-01",
            "name": "0d3c4f1e-5a6b-4c7d-8e9f-0a1b2c3d4e5f",
            "properties": { "roleDefinitionId": "/providers/Microsoft.Authorization/roleDefinitions/8e3af657-a8ff-443c-a75c-2fe8c4bcb635", "principalId": "x" }
        }])))
        .unwrap();
        assert_eq!(ops[0].0, "Microsoft.Authorization/roleAssignments/write");
        assert_eq!(ops[0].1, format!("{RG}/providers/Microsoft.Authorization/roleAssignments/0d3c4f1e-5a6b-4c7d-8e9f-0a1b2c3d4e5f"));
    }

    #[test]
    fn extension_resources_hang_below_their_scope() {
        let st = format!("{RG}/providers/Microsoft.Storage/storageAccounts/st1");
        let ops = writes(&template(json!([
            { "type": "Microsoft.Authorization/locks", "apiVersion": "2020-05-01", "name": "nodelete", "scope": st },
            { "type": "Microsoft.Authorization/locks", "apiVersion": "2020-05-01", "name": "l2", "scope": "Microsoft.Storage/storageAccounts/st1" }
        ])))
        .unwrap();
        assert_eq!(
            ops[0].1,
            format!("{st}/providers/Microsoft.Authorization/locks/nodelete")
        );
        assert_eq!(
            ops[1].1,
            format!("{st}/providers/Microsoft.Authorization/locks/l2")
        );
    }

    #[test]
    fn nested_deployments_are_judged_at_their_own_scope() {
        let ops = writes(&template(json!([{
            "type": "Microsoft.Resources/deployments", "apiVersion": "2022-09-01", "name": "inner",
            "resourceGroup": "other",
            "properties": { "mode": "Incremental", "template": { "resources": [
                { "type": "Microsoft.KeyVault/vaults", "apiVersion": "2023-02-01", "name": "kv1" }
            ] } }
        }])))
        .unwrap();
        assert_eq!(
            ops,
            [
                ("Microsoft.Resources/deployments/write".to_owned(), format!("{RG}/providers/Microsoft.Resources/deployments/inner")),
                (
                    "Microsoft.KeyVault/vaults/write".to_owned(),
                    "/subscriptions/11111111-1111-1111-1111-111111111111/resourceGroups/other/providers/Microsoft.KeyVault/vaults/kv1".to_owned()
                ),
            ]
        );
    }

    #[test]
    fn resource_groups_of_a_subscription_deployment() {
        let sub = "/subscriptions/11111111-1111-1111-1111-111111111111";
        let path = format!("{sub}/providers/Microsoft.Resources/deployments/d1");
        let carrier = carrier(Method::Put, &path).expect("a deployment");
        let body = template(
            json!([{ "type": "Microsoft.Resources/resourceGroups", "name": "rg-new", "location": "westeurope" }]),
        );
        let ops = inner_operations(carrier, body.to_string().as_bytes()).unwrap();
        assert_eq!(
            ops[0].inner,
            Inner::Write {
                operation: "Microsoft.Resources/resourceGroups/write".into(),
                scope: format!("{sub}/resourceGroups/rg-new"),
            }
        );
    }

    #[test]
    fn an_expression_as_scope_or_target_is_refused() {
        let scoped = writes(&template(
            json!([{ "type": "Microsoft.Authorization/locks", "name": "l", "scope": "[resourceId('x')]" }]),
        ));
        assert!(
            matches!(scoped, Err(NestedError::Expression { ref at, .. }) if at.ends_with(".scope")),
            "{scoped:?}"
        );
        let elsewhere = writes(&template(
            json!([{ "type": "Microsoft.Resources/deployments", "name": "n",
            "resourceGroup": "[parameters('rg')]", "properties": { "template": { "resources": [] } } }]),
        ));
        assert!(
            matches!(elsewhere, Err(NestedError::Expression { ref at, .. }) if at.ends_with(".resourceGroup")),
            "{elsewhere:?}"
        );
    }

    #[test]
    fn symbolic_name_templates_and_existing_references() {
        let ops = writes(&template(json!({
            "st": { "type": "Microsoft.Storage/storageAccounts", "apiVersion": "2023-01-01", "name": "st1" },
            "kv": { "type": "Microsoft.KeyVault/vaults", "apiVersion": "2023-02-01", "name": "kv0", "existing": true }
        })))
        .unwrap();
        assert_eq!(ops.len(), 1);
        assert_eq!(ops[0].0, "Microsoft.Storage/storageAccounts/write");
    }

    #[test]
    fn expressions_are_refused_with_where_they_are() {
        let error = writes(&template(json!([{
            "type": "Microsoft.Authorization/roleAssignments", "apiVersion": "2022-04-01",
            "name": "[guid(resourceGroup().id, 'owner')]"
        }])))
        .unwrap_err();
        assert_eq!(
            error,
            NestedError::Expression {
                at: "properties.template.resources[0].name".into(),
                value: "[guid(resourceGroup().id, 'owner')]".into()
            }
        );
        assert!(error.to_string().contains("only ARM can evaluate"));
        // An escaped bracket is a literal.
        let ops = writes(&template(
            json!([{ "type": "Contoso.X/things", "name": "[[literal]" }]),
        ))
        .unwrap();
        assert_eq!(
            ops[0].1,
            format!("{RG}/providers/Contoso.X/things/[literal]")
        );
    }

    #[test]
    fn copy_loops_linked_templates_and_bad_shapes_are_refused() {
        let copy = writes(&template(
            json!([{ "type": "Microsoft.Storage/storageAccounts", "name": "st", "copy": { "name": "c", "count": 3 } }]),
        ));
        assert!(matches!(copy, Err(NestedError::Copy { .. })));
        let linked = writes(
            &json!({ "properties": { "templateLink": { "uri": "https://example.com/t.json" } } }),
        );
        assert!(matches!(linked, Err(NestedError::LinkedTemplate { .. })));
        let mismatch = writes(&template(
            json!([{ "type": "Microsoft.Network/virtualNetworks/subnets", "name": "s1" }]),
        ));
        assert!(
            matches!(mismatch, Err(NestedError::Shape { ref at, .. }) if at.ends_with(".name")),
            "{mismatch:?}"
        );
        let no_type = writes(&template(json!([{ "name": "x" }])));
        assert!(matches!(no_type, Err(NestedError::Shape { ref at, .. }) if at.ends_with(".type")));
        assert!(matches!(writes(&json!({})), Err(NestedError::Shape { .. })));
    }

    #[test]
    fn batch_entries_are_listed_and_deployments_inside_inspected() {
        let body = json!({ "requests": [
            { "httpMethod": "GET", "url": format!("https://management.azure.com{RG}?api-version=2021-04-01") },
            { "httpMethod": "delete", "relativeUrl": format!("{RG}/providers/Microsoft.Compute/virtualMachines/vm1?api-version=2024-03-01") },
            { "httpMethod": "PUT", "url": deploy_path(), "content": template(json!([
                { "type": "Microsoft.Storage/storageAccounts", "name": "st9" }
            ])) }
        ] });
        let ops = inner_operations(Carrier::Batch, body.to_string().as_bytes()).unwrap();
        let listed: Vec<String> = ops
            .iter()
            .map(|op| match &op.inner {
                Inner::Http { method, path } => format!("{} {path}", method.as_str()),
                Inner::Write { operation, scope } => format!("{operation} {scope}"),
            })
            .collect();
        assert_eq!(
            listed,
            [
                format!("GET {RG}?api-version=2021-04-01"),
                format!("DELETE {RG}/providers/Microsoft.Compute/virtualMachines/vm1?api-version=2024-03-01"),
                format!("Microsoft.Storage/storageAccounts/write {RG}/providers/Microsoft.Storage/storageAccounts/st9"),
                format!("PUT {}", deploy_path()),
            ]
        );
        assert_eq!(
            ops[2].at,
            "requests[2].content.properties.template.resources[0]"
        );
    }

    #[test]
    fn batch_tricks_are_refused() {
        let inner_batch = json!({ "requests": [{ "httpMethod": "POST", "url": "/batch" }] });
        assert!(matches!(
            inner_operations(Carrier::Batch, inner_batch.to_string().as_bytes()),
            Err(NestedError::Shape { .. })
        ));
        let both =
            json!({ "requests": [{ "httpMethod": "GET", "url": "/a", "relativeUrl": "/b" }] });
        assert!(matches!(
            inner_operations(Carrier::Batch, both.to_string().as_bytes()),
            Err(NestedError::Shape { .. })
        ));
        let other_scheme =
            json!({ "requests": [{ "httpMethod": "GET", "url": "file:///etc/passwd" }] });
        assert!(matches!(
            inner_operations(Carrier::Batch, other_scheme.to_string().as_bytes()),
            Err(NestedError::Shape { .. })
        ));
        let deployment_without_content =
            json!({ "requests": [{ "httpMethod": "PUT", "url": deploy_path() }] });
        assert!(matches!(
            inner_operations(
                Carrier::Batch,
                deployment_without_content.to_string().as_bytes()
            ),
            Err(NestedError::Shape { .. })
        ));
        let bad_method = json!({ "requests": [{ "httpMethod": "TRACE", "url": "/x" }] });
        assert!(matches!(
            inner_operations(Carrier::Batch, bad_method.to_string().as_bytes()),
            Err(NestedError::Shape { .. })
        ));
    }

    #[test]
    fn bodies_are_bounded() {
        assert_eq!(
            inner_operations(Carrier::Batch, b""),
            Err(NestedError::NoBody)
        );
        assert_eq!(
            inner_operations(Carrier::Batch, b"  \n"),
            Err(NestedError::NoBody)
        );
        let huge = vec![b' '; MAX_BODY_BYTES + 1];
        assert_eq!(
            inner_operations(Carrier::Batch, &huge),
            Err(NestedError::TooLarge(MAX_BODY_BYTES + 1))
        );
        assert!(matches!(
            inner_operations(Carrier::Batch, b"{\"requests\": ["),
            Err(NestedError::NotJson(_))
        ));
        let many: Vec<Value> = (0..=MAX_BATCH_REQUESTS)
            .map(|_| json!({ "httpMethod": "GET", "url": "/providers" }))
            .collect();
        assert_eq!(
            inner_operations(
                Carrier::Batch,
                json!({ "requests": many }).to_string().as_bytes()
            ),
            Err(NestedError::TooMany)
        );
        let resources: Vec<Value> = (0..=MAX_INNER)
            .map(|i| json!({ "type": "Contoso.X/things", "name": format!("t{i}") }))
            .collect();
        assert_eq!(
            writes(&template(Value::Array(resources))),
            Err(NestedError::TooMany)
        );
        let deep = format!("{}1{}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(matches!(
            inner_operations(Carrier::Batch, deep.as_bytes()),
            Err(NestedError::NotJson(_))
        ));
    }

    #[test]
    fn deployment_nesting_is_bounded() {
        let mut body = template(json!([]));
        for _ in 0..=MAX_DEPLOYMENT_DEPTH {
            let mut resource = body.clone();
            let object = resource.as_object_mut().unwrap();
            object.insert("type".into(), json!("Microsoft.Resources/deployments"));
            object.insert("name".into(), json!("n"));
            body = template(json!([resource]));
        }
        assert!(matches!(
            writes(&body),
            Err(NestedError::TooDeep(MAX_DEPLOYMENT_DEPTH, _))
        ));
    }

    proptest! {
        #[test]
        fn never_panics_on_any_body(body in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = inner_operations(Carrier::Batch, &body);
            let _ = inner_operations(Carrier::Deployment { scope: RG }, &body);
        }

        #[test]
        fn never_panics_on_any_path(path in "[/a-zA-Z.?]{0,80}") {
            for method in Method::ALL {
                let _ = carrier(method, &path);
            }
        }
    }
}
