//! User routes: (method, path template) → (operation, scope), for the ARM
//! calls the derivation gets wrong and for APIs that are not ARM at all.
//!
//! A template is a path whose segments are literals, compared ASCII
//! case-insensitively, or wildcards (`{}` or `{name}`, one whole segment).
//! When several routes match a request, the most specific wins: at the
//! first segment where two templates differ, a literal beats a wildcard;
//! then a route for the exact method beats a `*` route. Two routes with the
//! same method and template are an error.
//!
//! A route's scope is, by the user's choice:
//! - absent: the longest prefix of the template that is an ARM scope, the
//!   same one the derivation would pick (an error if the template is not
//!   an ARM path);
//! - a prefix of the template (`/subscriptions/{}/resourceGroups/{}`): that
//!   part of the request path;
//! - any other scope, fixed (`/subscriptions/…/providers/Contoso.Api/apis/orders`),
//!   which is how a non-ARM API gets one.

use std::hash::{BuildHasher, Hasher};

use foldhash::fast::FixedState;
use hashbrown::HashTable;
use serde::Deserialize;

use super::mapping::{
    self, MappingError, Method, RequestPath, ANY_METHOD, MAX_PATH_LEN, MAX_SEGMENTS,
};
use crate::model::{check_operation, Scope};

/// One route as written in configuration (a snapshot's `routes:` entries
/// deserialize into these).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteSpec {
    /// `GET`, `HEAD`, `PUT`, `PATCH`, `DELETE`, `POST`, or `*` for all.
    pub method: String,
    /// The path template, e.g.
    /// `/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Web/sites/{}/config/appsettings/list`.
    pub path: String,
    /// The one operation the route requires.
    pub operation: String,
    /// Whether `operation` is a data action.
    #[serde(default)]
    pub data_action: bool,
    /// A prefix of `path`, or a fixed scope; see the module documentation.
    #[serde(default)]
    pub scope: Option<String>,
}

/// One problem with one route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteIssue {
    /// The route's position in the list compiled.
    pub index: usize,
    /// `method`, `path`, `operation` or `scope`.
    pub field: &'static str,
    pub message: String,
}

impl std::fmt::Display for RouteIssue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "routes[{}].{}: {}", self.index, self.field, self.message)
    }
}

/// Every problem found in a list of routes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct RouteError {
    pub issues: Vec<RouteIssue>,
}

impl std::fmt::Display for RouteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, issue) in self.issues.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{issue}")?;
        }
        Ok(())
    }
}

/// Compiled routes, ready for matching without allocation.
#[derive(Debug, Default)]
pub struct RouteTable {
    /// In the order of the specs.
    routes: Vec<Route>,
    /// A trie over template segments, `nodes[0]` its root (when there are
    /// routes). Matching walks it depth first, literal child before
    /// wildcard child, which is the specificity order.
    nodes: Vec<Node>,
    /// Bit `n` is set when some template has `n` segments (bit 63: 63 or
    /// more), so a request no route can match skips the trie.
    lengths: u64,
}

/// Literal children are compared one by one up to this many; above, they
/// are hashed.
const LINEAR_CHILDREN: usize = 8;

#[derive(Debug, Default)]
struct Node {
    /// Literal children as (lowercase literal, child), while few.
    literals: Vec<(Box<str>, usize)>,
    /// The same, hashed, once there are more than [`LINEAR_CHILDREN`].
    hashed: HashTable<(Box<str>, usize)>,
    wildcard: Option<usize>,
    /// Routes whose template ends here: exact-method routes before `*`
    /// routes, each in spec order.
    routes: Vec<usize>,
}

#[derive(Debug)]
pub(crate) struct Route {
    index: usize,
    methods: u8,
    operation: Box<str>,
    data_action: bool,
    scope: RouteScope,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(Box<str>),
    Any,
}

#[derive(Debug)]
enum RouteScope {
    /// The request path's first `segments` segments; `checked` when some of
    /// them are wildcards, so the filled-in prefix must be re-validated.
    Prefix {
        segments: usize,
        checked: bool,
    },
    Fixed(Box<str>),
}

impl RouteTable {
    /// A table without routes: the derivation and built-in exceptions only.
    pub fn empty() -> RouteTable {
        RouteTable::default()
    }

    /// Compiles routes, reporting every problem with its index and field.
    pub fn compile(specs: &[RouteSpec]) -> Result<RouteTable, RouteError> {
        let mut issues = Vec::new();
        let mut table = RouteTable::default();
        for (index, spec) in specs.iter().enumerate() {
            let Some((route, segments)) = compile_route(index, spec, &mut issues) else {
                continue;
            };
            let leaf = table.leaf(&segments);
            let clash = table.nodes[leaf]
                .routes
                .iter()
                .map(|&r| &table.routes[r])
                .find(|other| other.methods == route.methods);
            if let Some(other) = clash {
                issues.push(RouteIssue {
                    index,
                    field: "path",
                    message: format!(
                        "has the same method and path as routes[{}]; remove one",
                        other.index
                    ),
                });
                continue;
            }
            table.nodes[leaf].routes.push(table.routes.len());
            table.routes.push(route);
            table.lengths |= length_bit(segments.len());
        }
        if !issues.is_empty() {
            issues.sort_by_key(|i| i.index);
            return Err(RouteError { issues });
        }
        let routes = &table.routes;
        for node in &mut table.nodes {
            node.routes
                .sort_by_key(|&r| (routes[r].methods == ANY_METHOD, routes[r].index));
            if node.literals.len() > LINEAR_CHILDREN {
                for (literal, child) in node.literals.drain(..) {
                    node.hashed
                        .insert_unique(fold_hash(&literal), (literal, child), |(l, _)| {
                            fold_hash(l)
                        });
                }
            }
        }
        Ok(table)
    }

    /// The trie node a template ends at, created as needed.
    fn leaf(&mut self, segments: &[Segment]) -> usize {
        if self.nodes.is_empty() {
            self.nodes.push(Node::default());
        }
        let mut node = 0;
        for segment in segments {
            let next = self.nodes.len();
            node = match segment {
                Segment::Any => *self.nodes[node].wildcard.get_or_insert(next),
                Segment::Literal(literal) => {
                    let children = &mut self.nodes[node].literals;
                    match children
                        .iter()
                        .find(|(l, _)| l.eq_ignore_ascii_case(literal))
                    {
                        Some(&(_, child)) => child,
                        None => {
                            children.push((literal.to_ascii_lowercase().into(), next));
                            next
                        }
                    }
                }
            };
            if node == next {
                self.nodes.push(Node::default());
            }
        }
        node
    }

    /// How many routes.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// The winning route for a validated request path.
    pub(crate) fn find(&self, method: Method, path: &RequestPath<'_>) -> Option<&Route> {
        if self.lengths & length_bit(path.segments) == 0 {
            return None;
        }
        self.walk(0, 0, path, method.bit()).map(|r| &self.routes[r])
    }

    /// Depth first from `node` over segments `i..` of `path`, literal
    /// before wildcard.
    fn walk(&self, node: usize, i: usize, path: &RequestPath<'_>, method: u8) -> Option<usize> {
        let node = &self.nodes[node];
        if i == path.segments {
            return node
                .routes
                .iter()
                .copied()
                .find(|&r| self.routes[r].methods & method != 0);
        }
        let segment = path.segment(i);
        let literal = |(l, _): &&(Box<str>, usize)| l.eq_ignore_ascii_case(segment);
        let child = if node.hashed.is_empty() {
            node.literals.iter().find(literal)
        } else {
            node.hashed
                .find(fold_hash(segment), |entry| literal(&entry))
        };
        if let Some(found) = child.and_then(|&(_, child)| self.walk(child, i + 1, path, method)) {
            return Some(found);
        }
        node.wildcard
            .and_then(|child| self.walk(child, i + 1, path, method))
    }
}

fn length_bit(segments: usize) -> u64 {
    1 << segments.min(63)
}

/// Hashes the ASCII-lowercase form of a segment without allocating.
fn fold_hash(segment: &str) -> u64 {
    let mut hasher = FixedState::with_seed(0x0072_616d_7061_7274).build_hasher();
    let mut buffer = [0u8; 32];
    for piece in segment.as_bytes().chunks(buffer.len()) {
        let lower = &mut buffer[..piece.len()];
        lower.copy_from_slice(piece);
        lower.make_ascii_lowercase();
        hasher.write(lower);
    }
    hasher.finish()
}

impl Route {
    pub(crate) fn index(&self) -> usize {
        self.index
    }

    pub(crate) fn operation(&self) -> &str {
        &self.operation
    }

    pub(crate) fn data_action(&self) -> bool {
        self.data_action
    }

    /// The scope for a validated `path` this route matched.
    pub(crate) fn scope<'a>(&'a self, path: &RequestPath<'a>) -> Result<&'a str, MappingError> {
        match &self.scope {
            RouteScope::Fixed(scope) => Ok(scope),
            RouteScope::Prefix { segments, checked } => {
                if *checked && !mapping::is_scope(path, *segments) {
                    return Err(MappingError::RouteScope);
                }
                Ok(path.prefix(*segments))
            }
        }
    }
}

fn compile_route(
    index: usize,
    spec: &RouteSpec,
    issues: &mut Vec<RouteIssue>,
) -> Option<(Route, Vec<Segment>)> {
    let before = issues.len();
    let mut issue = |field: &'static str, message: String| {
        issues.push(RouteIssue {
            index,
            field,
            message,
        })
    };
    let methods = parse_method(&spec.method);
    if methods.is_none() {
        issue(
            "method",
            format!(
                "'{}' is not one of GET, HEAD, PUT, PATCH, DELETE, POST or *",
                spec.method
            ),
        );
    }
    let segments = parse_template(&spec.path)
        .map_err(|message| issue("path", message))
        .ok();
    if let Err(e) = check_operation(&spec.operation) {
        issue("operation", format!("'{}' {e}", spec.operation));
    }
    let scope = segments.as_deref().and_then(|segments| {
        compile_scope(spec, segments)
            .map_err(|message| issue("scope", message))
            .ok()
    });
    if issues.len() > before {
        return None;
    }
    let route = Route {
        index,
        methods: methods?,
        operation: spec.operation.as_str().into(),
        data_action: spec.data_action,
        scope: scope?,
    };
    Some((route, segments?))
}

fn parse_method(text: &str) -> Option<u8> {
    if text == "*" {
        return Some(ANY_METHOD);
    }
    Method::ALL
        .into_iter()
        .find(|m| m.as_str().eq_ignore_ascii_case(text))
        .map(Method::bit)
}

/// Parses a template into segments. One trailing `/` is ignored, as in
/// requests.
fn parse_template(text: &str) -> Result<Vec<Segment>, String> {
    if text.is_empty() {
        return Err("is empty; write a path such as /subscriptions/{}/resourceGroups/{}".into());
    }
    if !text.starts_with('/') {
        return Err(format!("'{text}' must start with '/'"));
    }
    if text.contains(['?', '#']) {
        return Err(format!(
            "'{text}' has a query or fragment; write the path only (queries are ignored when matching)"
        ));
    }
    if text.len() > MAX_PATH_LEN {
        return Err(format!(
            "is {} bytes long; the limit is {MAX_PATH_LEN}",
            text.len()
        ));
    }
    let text = if text.len() > 1 {
        text.strip_suffix('/').unwrap_or(text)
    } else {
        text
    };
    if text == "/" {
        return Ok(Vec::new());
    }
    let mut segments = Vec::new();
    let mut at = 1;
    for segment in text[1..].split('/') {
        let inner = segment.strip_prefix('{').and_then(|s| s.strip_suffix('}'));
        match inner {
            Some(name) if !name.contains(['{', '}']) => segments.push(Segment::Any),
            _ if segment.contains(['{', '}']) => {
                return Err(format!(
                    "segment '{segment}' mixes a wildcard with text; a wildcard is a whole segment, {{}} or {{name}}"
                ))
            }
            _ => {
                mapping::check_segment(segment, at).map_err(|e| {
                    format!("'{text}' can never match a request: {e}")
                })?;
                segments.push(Segment::Literal(segment.into()));
            }
        }
        at += segment.len() + 1;
    }
    if segments.len() > MAX_SEGMENTS {
        return Err(format!(
            "has {} segments; a request has at most {MAX_SEGMENTS}",
            segments.len()
        ));
    }
    Ok(segments)
}

/// The template with each wildcard filled with a placeholder name.
fn instantiate(segments: &[Segment]) -> String {
    if segments.is_empty() {
        return "/".into();
    }
    let mut out = String::new();
    for segment in segments {
        out.push('/');
        out.push_str(match segment {
            Segment::Literal(literal) => literal,
            Segment::Any => "x",
        });
    }
    out
}

fn compile_scope(spec: &RouteSpec, segments: &[Segment]) -> Result<RouteScope, String> {
    let prefix = |n: usize| RouteScope::Prefix {
        segments: n,
        checked: segments[..n].contains(&Segment::Any),
    };
    let Some(text) = &spec.scope else {
        let filled = instantiate(segments);
        let derived = mapping::validate(&filled).and_then(|path| {
            let end = mapping::derive(&path, path.segments)?.scope_end();
            Ok((0..=path.segments)
                .find(|&n| path.prefix(n).len() == end.max(1))
                .unwrap_or(0))
        });
        return match derived {
            Ok(n) => Ok(prefix(n)),
            Err(e) => {
                let why = match e {
                    MappingError::NotArm => {
                        "it does not start with /subscriptions, /providers or /tenants".to_owned()
                    }
                    e => e.to_string(),
                };
                Err(format!(
                    "is needed because '{}' is not an Azure Resource Manager path ({why}); give a prefix of the path or a fixed scope such as /subscriptions/{{id}}/resourceGroups/{{rg}}/providers/Contoso.Api/apis/orders",
                    spec.path,
                ))
            }
        };
    };
    let scope = parse_template(text).map_err(|e| format!("'{text}': {e}"))?;
    let is_prefix = scope.len() <= segments.len()
        && scope.iter().zip(segments).all(|(s, t)| match (s, t) {
            (Segment::Any, Segment::Any) => true,
            (Segment::Literal(s), Segment::Literal(t)) => s.eq_ignore_ascii_case(t),
            _ => false,
        });
    let filled = instantiate(&scope);
    if let Err(e) = Scope::parse(&filled) {
        return Err(format!("'{text}' is not a scope: it {e}"));
    }
    let whole = mapping::validate(&filled).is_ok_and(|p| mapping::is_scope(&p, p.segments));
    if !whole {
        return Err(format!(
            "'{text}' is not a scope a request can have ('providers' where a name or type belongs)"
        ));
    }
    if is_prefix {
        Ok(prefix(scope.len()))
    } else if scope.contains(&Segment::Any) {
        Err(format!(
            "'{text}' has wildcards but is not a prefix of the path '{}'",
            spec.path
        ))
    } else {
        Ok(RouteScope::Fixed(filled.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extauthz::{map_request, MappedBy};

    const SUB: &str = "/subscriptions/00000000-0000-4000-8000-000000000001";

    fn spec(method: &str, path: &str, operation: &str, scope: Option<&str>) -> RouteSpec {
        RouteSpec {
            method: method.into(),
            path: path.into(),
            operation: operation.into(),
            data_action: false,
            scope: scope.map(Into::into),
        }
    }

    fn table(specs: &[RouteSpec]) -> RouteTable {
        RouteTable::compile(specs).unwrap_or_else(|e| panic!("{e}"))
    }

    /// (operation, scope, data action, by).
    fn map(
        table: &RouteTable,
        method: Method,
        path: &str,
    ) -> Result<(String, String, bool, MappedBy), MappingError> {
        let mut buffer = String::new();
        map_request(table, method, path, &mut buffer).map(|m| {
            (
                m.operation.to_owned(),
                m.scope.to_owned(),
                m.data_action,
                m.by,
            )
        })
    }

    fn issues(specs: &[RouteSpec]) -> Vec<String> {
        match RouteTable::compile(specs) {
            Ok(_) => Vec::new(),
            Err(e) => e.issues.iter().map(ToString::to_string).collect(),
        }
    }

    const APPSETTINGS: &str =
        "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Web/sites/{}/config/appsettings/list";

    #[test]
    fn a_route_overrides_the_derivation_with_its_operation_and_scope_prefix() {
        let table = table(&[spec(
            "POST",
            APPSETTINGS,
            "Microsoft.Web/sites/config/list/action",
            Some("/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Web/sites/{site}"),
        )]);
        let site = format!("{SUB}/resourceGroups/rg/providers/Microsoft.Web/sites/app");
        let got = map(
            &table,
            Method::Post,
            &format!("{site}/CONFIG/appsettings/list?api-version=1"),
        );
        assert_eq!(
            got,
            Ok((
                "Microsoft.Web/sites/config/list/action".into(),
                site.clone(),
                false,
                MappedBy::Route(0)
            ))
        );
        // Without the route, the derivation would have said otherwise.
        let derived = map(
            &RouteTable::empty(),
            Method::Post,
            &format!("{site}/config/appsettings/list"),
        );
        assert_eq!(
            derived.map(|m| (m.0, m.1)),
            Ok((
                "Microsoft.Web/sites/config/list/action".into(),
                format!("{site}/config/appsettings")
            ))
        );
    }

    #[test]
    fn a_route_overrides_a_built_in_exception() {
        let table = table(&[spec(
            "POST",
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Network/networkWatchers/{}/nextHop",
            "Microsoft.Network/networkWatchers/nextHop/action",
            None,
        )]);
        let nw = format!("{SUB}/resourceGroups/rg/providers/Microsoft.Network/networkWatchers/nw");
        assert_eq!(
            map(&table, Method::Post, &format!("{nw}/nextHop")),
            Ok((
                "Microsoft.Network/networkWatchers/nextHop/action".into(),
                nw,
                false,
                MappedBy::Route(0)
            ))
        );
    }

    #[test]
    fn without_a_scope_an_arm_route_takes_the_scope_the_derivation_would() {
        let table = table(&[spec(
            "POST",
            APPSETTINGS,
            "Microsoft.Web/sites/config/list/action",
            None,
        )]);
        let site = format!("{SUB}/resourceGroups/rg/providers/Microsoft.Web/sites/app");
        let got = map(
            &table,
            Method::Post,
            &format!("{site}/config/appsettings/list"),
        );
        assert_eq!(got.map(|m| m.1), Ok(format!("{site}/config/appsettings")));
        let table = self::table(&[spec(
            "GET",
            "/subscriptions/{}/resourcegroups",
            "Microsoft.Resources/subscriptions/resourceGroups/read",
            None,
        )]);
        assert_eq!(
            map(&table, Method::Get, &format!("{SUB}/resourceGroups")).map(|m| m.1),
            Ok(SUB.to_owned())
        );
        let table = self::table(&[spec(
            "GET",
            "/subscriptions",
            "Microsoft.Resources/subscriptions/read",
            None,
        )]);
        assert_eq!(
            map(&table, Method::Get, "/subscriptions").map(|m| m.1),
            Ok("/".to_owned())
        );
    }

    #[test]
    fn a_non_arm_api_maps_with_a_fixed_scope_and_data_action() {
        let scope = format!("{SUB}/resourceGroups/rg-api/providers/Contoso.Orders/apis/orders");
        let mut orders = spec(
            "GET",
            "/api/orders/{id}",
            "Contoso.Orders/orders/read",
            Some(&scope),
        );
        orders.data_action = true;
        let table = table(&[orders]);
        assert_eq!(
            map(&table, Method::Get, "/API/Orders/17?expand=lines"),
            Ok((
                "Contoso.Orders/orders/read".into(),
                scope,
                true,
                MappedBy::Route(0)
            ))
        );
        // Anything else of that API is not ARM and matches no route.
        assert_eq!(
            map(&table, Method::Delete, "/api/orders/17").map(|m| m.0),
            Err(MappingError::NotArm)
        );
        assert_eq!(
            map(&table, Method::Get, "/api/orders/17/lines").map(|m| m.0),
            Err(MappingError::NotArm)
        );
    }

    #[test]
    fn a_route_never_lets_a_malformed_path_through() {
        let table = table(&[spec(
            "*",
            "/api/{}/{}",
            "Contoso.Orders/orders/read",
            Some("/"),
        )]);
        assert_eq!(
            map(&table, Method::Get, "/api/a/b").map(|m| m.1),
            Ok("/".to_owned())
        );
        for (path, error) in [
            ("/api/../b", MappingError::DotSegment(5)),
            ("/api/a%2Fb/c", MappingError::EncodedSeparator(6)),
            ("/api//b", MappingError::EmptySegment(5)),
        ] {
            assert_eq!(
                map(&table, Method::Get, path).map(|m| m.0),
                Err(error),
                "{path}"
            );
        }
    }

    #[test]
    fn the_most_specific_route_wins() {
        let table = table(&[
            spec("*", "/api/{}/items", "Contoso.Api/any/read", Some("/")),
            spec("GET", "/api/{}/items", "Contoso.Api/get/read", Some("/")),
            spec(
                "GET",
                "/api/orders/{}",
                "Contoso.Api/orders/read",
                Some("/"),
            ),
        ]);
        let op = |method, path| map(&table, method, path).map(|m| (m.0, m.3));
        // At the first differing segment a literal beats a wildcard.
        assert_eq!(
            op(Method::Get, "/api/orders/items"),
            Ok(("Contoso.Api/orders/read".into(), MappedBy::Route(2)))
        );
        // Then the exact method beats `*`.
        assert_eq!(
            op(Method::Get, "/api/carts/items"),
            Ok(("Contoso.Api/get/read".into(), MappedBy::Route(1)))
        );
        assert_eq!(
            op(Method::Put, "/api/carts/items"),
            Ok(("Contoso.Api/any/read".into(), MappedBy::Route(0)))
        );
        // A literal branch whose route does not take the method gives way
        // to the wildcard branch.
        assert_eq!(
            op(Method::Put, "/api/orders/items"),
            Ok(("Contoso.Api/any/read".into(), MappedBy::Route(0)))
        );
        // HEAD is its own method: a GET route does not answer it.
        assert_eq!(op(Method::Head, "/api/orders/7"), Err(MappingError::NotArm));
    }

    #[test]
    fn many_literals_at_one_position_are_found_in_any_case() {
        let specs: Vec<RouteSpec> = (0..40)
            .map(|i| {
                spec(
                    "GET",
                    &format!("/api/Thing{i}/{{}}"),
                    &format!("Contoso.Api/thing{i}/read"),
                    Some("/"),
                )
            })
            .chain([spec(
                "GET",
                "/api/{}/{}",
                "Contoso.Api/other/read",
                Some("/"),
            )])
            .collect();
        let table = table(&specs);
        for i in 0..40 {
            let got = map(&table, Method::Get, &format!("/api/THING{i}/x")).map(|m| m.0);
            assert_eq!(got, Ok(format!("Contoso.Api/thing{i}/read")));
        }
        assert_eq!(
            map(&table, Method::Get, "/api/thing40/x").map(|m| m.0),
            Ok("Contoso.Api/other/read".into())
        );
    }

    #[test]
    fn a_scope_filled_from_the_request_must_still_be_a_scope() {
        let table = table(&[spec(
            "GET",
            "/subscriptions/{}/providers/{}/widgets/{}",
            "Contoso.Widgets/widgets/read",
            Some("/subscriptions/{}/providers/{}/widgets/{}"),
        )]);
        let ok = format!("{SUB}/providers/Contoso.Widgets/widgets/w1");
        assert_eq!(map(&table, Method::Get, &ok).map(|m| m.1), Ok(ok.clone()));
        let bad = format!("{SUB}/providers/providers/widgets/w1");
        assert_eq!(
            map(&table, Method::Get, &bad).map(|m| m.0),
            Err(MappingError::RouteScope)
        );
    }

    #[test]
    fn every_problem_is_reported_with_its_route_and_field() {
        let got = issues(&[
            spec("FETCH", "/api/{}", "Contoso.Api/things/read", Some("/")),
            spec("GET", "api/x", "Contoso.Api/things/read", Some("/")),
            spec("GET", "/api/x{y}", "Contoso.Api/things/read", Some("/")),
            spec("GET", "/api/a%2Fb", "Contoso.Api/things/read", Some("/")),
            spec(
                "GET",
                "/api/x?api-version=1",
                "Contoso.Api/things/read",
                Some("/"),
            ),
            spec("GET", "/api/x", "Contoso.Api/*", Some("/")),
            spec("GET", "/api/x", "read", Some("/")),
            spec("GET", "/api/{}", "Contoso.Api/things/read", None),
            spec("GET", "/api/{}", "Contoso.Api/things/read", Some("/api/{}")),
            spec(
                "GET",
                "/subscriptions/{}/x/{}",
                "Contoso.Api/things/read",
                Some("/subscriptions/{}/resourceGroups/{}"),
            ),
            spec("GET", "", "Contoso.Api/things/read", Some("/")),
        ]);
        let expected_prefixes = [
            "routes[0].method: 'FETCH' is not one of",
            "routes[1].path: 'api/x' must start with '/'",
            "routes[2].path: segment 'x{y}' mixes a wildcard with text",
            "routes[3].path: '/api/a%2Fb' can never match a request: the path has a percent-encoded '/'",
            "routes[4].path: '/api/x?api-version=1' has a query or fragment",
            "routes[5].operation: 'Contoso.Api/*' contains '*'",
            "routes[6].operation: 'read' must have the form",
            "routes[7].scope: is needed because '/api/{}' is not an Azure Resource Manager path",
            "routes[8].scope: '/api/{}' is not a scope",
            "routes[9].scope: '/subscriptions/{}/resourceGroups/{}' has wildcards but is not a prefix",
            "routes[10].path: is empty",
        ];
        assert_eq!(got.len(), expected_prefixes.len(), "{got:#?}");
        for (issue, prefix) in got.iter().zip(expected_prefixes) {
            assert!(
                issue.starts_with(prefix),
                "{issue}\n  should start with {prefix}"
            );
        }
    }

    #[test]
    fn duplicate_routes_are_refused_but_a_method_specific_one_beside_a_star_is_not() {
        let got = issues(&[
            spec("GET", "/api/{a}/x", "Contoso.Api/x/read", Some("/")),
            spec("*", "/api/{b}/x", "Contoso.Api/x/read", Some("/")),
            spec("get", "/API/{c}/X/", "Contoso.Api/y/read", Some("/")),
        ]);
        assert_eq!(
            got,
            vec!["routes[2].path: has the same method and path as routes[0]; remove one"]
        );
    }

    #[test]
    fn an_invalid_fixed_scope_is_refused() {
        let got = issues(&[spec(
            "GET",
            "/api/x",
            "Contoso.Api/x/read",
            Some("/subscriptions"),
        )]);
        assert_eq!(got.len(), 1);
        assert!(
            got[0].starts_with("routes[0].scope: '/subscriptions' is not a scope"),
            "{}",
            got[0]
        );
    }

    #[test]
    fn route_specs_deserialize_from_camel_case_and_refuse_unknown_keys() {
        let yaml = "
- method: POST
  path: /subscriptions/{}/resourceGroups/{}/providers/Microsoft.Web/sites/{}/config/appsettings/list
  operation: Microsoft.Web/sites/config/list/action
  scope: /subscriptions/{}/resourceGroups/{}/providers/Microsoft.Web/sites/{}
- method: GET
  path: /api/orders/{id}
  operation: Contoso.Orders/orders/read
  dataAction: true
  scope: /subscriptions/s1/resourceGroups/rg/providers/Contoso.Orders/apis/orders
";
        let specs: Vec<RouteSpec> = serde_yaml::from_str(yaml).unwrap();
        assert!(specs[1].data_action && !specs[0].data_action);
        assert_eq!(RouteTable::compile(&specs).map(|t| t.len()), Ok(2));
        let unknown = serde_yaml::from_str::<Vec<RouteSpec>>(
            "- {method: GET, path: /a, operation: A/b/read, data_action: true}",
        );
        assert!(unknown
            .unwrap_err()
            .to_string()
            .contains("unknown field `data_action`"));
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use crate::extauthz::{map_request, MappedBy};
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 500, failure_persistence: None, ..ProptestConfig::default() })]

        /// Whatever the routes and the request, compiling and mapping
        /// answer without panicking, and a route's prefix scope is a prefix.
        #[test]
        fn routes_and_requests_never_panic(
            templates in prop::collection::vec("(/(\\{\\}|[a-c]|subscriptions|providers|\\{x\\}|%2F|\\.)){0,6}/?", 0..6),
            scopes in prop::collection::vec(prop::option::of("(/(\\{\\}|[a-c]|subscriptions|providers)){0,3}"), 6),
            path in "(/([a-c]|subscriptions|providers|resourceGroups|%20|\\.\\.)){0,7}/?(\\?[a-z=]{0,5})?",
        ) {
            let specs: Vec<RouteSpec> = templates
                .iter()
                .zip(&scopes)
                .map(|(t, s)| RouteSpec {
                    method: "*".into(),
                    path: t.clone(),
                    operation: "Contoso.Api/things/read".into(),
                    data_action: false,
                    scope: s.clone(),
                })
                .collect();
            if let Ok(table) = RouteTable::compile(&specs) {
                let mut buffer = String::new();
                if let Ok(m) = map_request(&table, Method::Get, &path, &mut buffer) {
                    // A scope is a prefix of the path, or a route's fixed scope.
                    let fixed = match m.by {
                        MappedBy::Route(i) => specs[i].scope.as_deref(),
                        _ => None,
                    };
                    prop_assert!(
                        path.starts_with(m.scope) || fixed.is_some_and(|s| s.starts_with(m.scope)),
                        "{} → {}", path, m.scope
                    );
                }
            }
        }
    }
}
