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

use serde::Deserialize;

use super::mapping::{self, MappingError, Method, RequestPath, ANY_METHOD, MAX_PATH_LEN};
use crate::model::{check_operation, Scope};

/// One route as written in configuration.
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
    /// Sorted by segment count, then specificity, then method, then index,
    /// so the first match is the winner.
    routes: Vec<Route>,
}

#[derive(Debug)]
pub(crate) struct Route {
    index: usize,
    methods: u8,
    segments: Box<[Segment]>,
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
        let mut routes = Vec::with_capacity(specs.len());
        for (index, spec) in specs.iter().enumerate() {
            if let Some(route) = compile_route(index, spec, &mut issues) {
                routes.push(route);
            }
        }
        routes.sort_by(|a, b| {
            let kinds = |r: &Route| {
                r.segments
                    .iter()
                    .map(|s| matches!(s, Segment::Any))
                    .collect::<Vec<_>>()
            };
            (a.segments.len(), kinds(a), a.methods == ANY_METHOD, a.index).cmp(&(
                b.segments.len(),
                kinds(b),
                b.methods == ANY_METHOD,
                b.index,
            ))
        });
        for (i, a) in routes.iter().enumerate() {
            for b in &routes[i + 1..] {
                if a.methods == b.methods && same_template(&a.segments, &b.segments) {
                    let (first, second) = (a.index.min(b.index), a.index.max(b.index));
                    issues.push(RouteIssue {
                        index: second,
                        field: "path",
                        message: format!(
                            "has the same method and path as routes[{first}]; remove one"
                        ),
                    });
                }
            }
        }
        if issues.is_empty() {
            Ok(RouteTable { routes })
        } else {
            issues.sort_by_key(|i| i.index);
            Err(RouteError { issues })
        }
    }

    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// The winning route for a validated request path.
    pub(crate) fn find(&self, method: Method, path: RequestPath<'_>) -> Option<&Route> {
        let first = self
            .routes
            .partition_point(|r| r.segments.len() < path.segments);
        self.routes[first..]
            .iter()
            .take_while(|r| r.segments.len() == path.segments)
            .find(|r| r.methods & method.bit() != 0 && r.matches(path.text))
    }
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

    fn matches(&self, path: &str) -> bool {
        self.segments.is_empty()
            || path[1..]
                .split('/')
                .zip(self.segments.iter())
                .all(|(got, want)| match want {
                    Segment::Any => true,
                    Segment::Literal(literal) => got.eq_ignore_ascii_case(literal),
                })
    }

    /// The scope for a validated `path` this route matched.
    pub(crate) fn scope<'a>(&'a self, path: &'a str) -> Result<&'a str, MappingError> {
        match &self.scope {
            RouteScope::Fixed(scope) => Ok(scope),
            RouteScope::Prefix { segments: 0, .. } => Ok(&path[..1]),
            RouteScope::Prefix { segments, checked } => {
                let end = path
                    .bytes()
                    .enumerate()
                    .filter(|&(_, b)| b == b'/')
                    .nth(*segments)
                    .map_or(path.len(), |(i, _)| i);
                let scope = &path[..end];
                if *checked && !mapping::is_scope(scope) {
                    return Err(MappingError::RouteScope);
                }
                Ok(scope)
            }
        }
    }
}

fn same_template(a: &[Segment], b: &[Segment]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| match (x, y) {
            (Segment::Any, Segment::Any) => true,
            (Segment::Literal(x), Segment::Literal(y)) => x.eq_ignore_ascii_case(y),
            _ => false,
        })
}

fn compile_route(index: usize, spec: &RouteSpec, issues: &mut Vec<RouteIssue>) -> Option<Route> {
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
    Some(Route {
        index,
        methods: methods?,
        segments: segments?.into_boxed_slice(),
        operation: spec.operation.as_str().into(),
        data_action: spec.data_action,
        scope: scope?,
    })
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
        return match mapping::derive(&filled) {
            Ok(derived) => {
                let end = derived.scope_end();
                Ok(prefix(if end == 0 {
                    0
                } else {
                    filled[..end].matches('/').count()
                }))
            }
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
    if !mapping::is_scope(&filled) {
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
        // HEAD is its own method: a GET route does not answer it.
        assert_eq!(op(Method::Head, "/api/orders/7"), Err(MappingError::NotArm));
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
