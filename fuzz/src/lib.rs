//! The bodies of rampart's fuzz targets.
//!
//! One function per target, taking the bytes the fuzzer produced. The
//! libFuzzer binaries in `fuzz_targets/` call them, and so does
//! `tests/fuzz_corpus.rs` on stable Rust (it includes this file by path), so
//! the fuzzer and CI run the same code. Each body panics only when the code
//! under test breaks a promise: beyond "no panic", it checks cheap
//! invariants such as "a parsed scope re-parses to itself".

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU32};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use arbitrary::Unstructured;
use prost::Message;
use rampart::engine::{ActiveGrant, GrantTable, Live, Loaded, Request, RequestError, Verdict};
use rampart::extauthz::wire::CheckRequest;
use rampart::extauthz::{
    jwt, map_request, IdentitySource, MappedBy, Method, RouteSpec, RouteTable,
};
use rampart::model::action::MAX_OPERATION_LEN;
use rampart::model::condition::{AttributeSource, Comparison, Expr, Operand, Operator, Quantifier};
use rampart::model::principal::{principal_key, PrincipalType};
use rampart::model::scope::MAX_SCOPE_LEN;
use rampart::model::{
    check_operation, ActionPattern, Condition, ConditionInput, OperationError, PatternSet,
};
use rampart::model::{Scope, ScopeKind};
use rampart::proto as pb;
use rampart::server::convert;
use rampart::snapshot::{self, CompiledSnapshot};

/// A target's body.
pub type Target = fn(&[u8]);

/// Every target, by the name of its binary and corpus directory.
pub const TARGETS: &[(&str, Target)] = &[
    ("scope", scope),
    ("operation", operation),
    ("condition", condition),
    ("snapshot", snapshot),
    ("authorize", authorize),
    ("arm_mapping", arm_mapping),
    ("check_request", check_request),
    ("grpc_frames", grpc_frames),
];

// ---------------------------------------------------------------------------
// Scopes

/// `Scope::parse`: a scope re-parses to itself from its Display, its key is
/// its lowercase text, case does not change what it is, and its structural
/// ancestors are scopes that contain it.
pub fn scope(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    check_scope(&text);
}

fn check_scope(text: &str) {
    let scope = match Scope::parse(text) {
        Ok(scope) => scope,
        Err(e) => {
            assert!(!e.to_string().is_empty(), "an empty error for {text:?}");
            return;
        }
    };
    assert_eq!(scope.as_str(), text);
    assert!(
        text.starts_with('/') && text.len() <= MAX_SCOPE_LEN,
        "{text:?}"
    );
    assert!(text == "/" || !text.ends_with('/'), "{text:?}");
    assert_eq!(scope.key(), text.to_ascii_lowercase());
    let again = Scope::parse(&scope.to_string());
    assert_eq!(again.as_ref(), Ok(&scope), "Display does not re-parse");

    for other_case in [text.to_ascii_uppercase(), text.to_ascii_lowercase()] {
        let other = Scope::parse(&other_case)
            .unwrap_or_else(|e| panic!("{text:?} parses but {other_case:?} does not: {e}"));
        assert_eq!(other.key(), scope.key());
        assert_eq!(other.kind(), scope.kind());
        assert!(other.is_structurally_within(&scope) && scope.is_structurally_within(&other));
    }

    assert_eq!(scope.kind() == ScopeKind::Root, text == "/", "{text:?}");
    if let Some(id) = scope.subscription_id() {
        let head = format!("/subscriptions/{}", id.to_ascii_lowercase());
        assert!(scope.key().starts_with(&head), "{text:?}");
    }
    if let Some(id) = scope.management_group_id() {
        assert!(scope.key().contains(&id.to_ascii_lowercase()), "{text:?}");
        assert!(scope.subscription_id().is_none());
    }
    assert!(scope.is_structurally_within(&Scope::root()));
    assert!(scope.is_structurally_within(&scope));

    let mut deeper = scope.key().len();
    for key in scope.structural_ancestor_keys() {
        assert!(
            key.len() < deeper,
            "ancestors of {text:?} are not deepest first"
        );
        deeper = key.len();
        assert_eq!(scope.key().as_bytes().get(key.len()), Some(&b'/'));
        assert!(scope.key().starts_with(key));
        let ancestor = Scope::parse(&text[..key.len()])
            .unwrap_or_else(|e| panic!("ancestor {key:?} of {text:?} is not a scope: {e}"));
        assert!(scope.is_structurally_within(&ancestor));
        assert!(!ancestor.is_structurally_within(&scope));
    }
}

// ---------------------------------------------------------------------------
// Operations and action patterns

/// `check_operation` and action patterns. The first line is a pattern, the
/// others operations. `check_operation` must agree with a plain reading of
/// its rules (so it never accepts `*`), and a compiled pattern must match
/// exactly what a naive glob matches.
pub fn operation(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.split('\n');
    let pattern_text = lines.next().unwrap_or_default();
    let operations: Vec<&str> = lines.collect();

    check_one_operation(&text);
    check_one_operation(pattern_text);
    for op in &operations {
        check_one_operation(op);
    }

    let pattern = match ActionPattern::parse(pattern_text) {
        Ok(p) => p,
        Err(e) => {
            assert!(!e.to_string().is_empty());
            assert!(
                pattern_text.is_empty() || pattern_text.bytes().any(|b| b <= b' ' || b == 0x7f),
                "pattern {pattern_text:?} rejected: {e}"
            );
            return;
        }
    };
    assert_eq!(pattern.as_str(), pattern_text);
    assert_eq!(pattern.to_string(), pattern_text);
    let set = PatternSet::new(vec![pattern.clone()]);
    let star_free = pattern_text.replace('*', "");
    let candidates = operations
        .iter()
        .copied()
        .chain([pattern_text, star_free.as_str(), ""]);
    for op in candidates {
        let expected = glob(pattern_text.as_bytes(), op.as_bytes());
        assert_eq!(
            pattern.matches(op),
            expected,
            "pattern {pattern_text:?} against {op:?}"
        );
        assert_eq!(set.matches(op), expected);
    }
}

fn check_one_operation(op: &str) {
    let got = check_operation(op);
    let expected = reference_operation(op);
    assert_eq!(
        got.as_ref().ok().map(|info| info.read_only),
        expected,
        "check_operation({op:?}) = {got:?}"
    );
    if let Err(e) = got {
        assert!(!e.to_string().is_empty());
    }
}

/// The rules of a requested operation, read plainly: 1 to 512 bytes, no
/// `*`, whitespace or control character, three or more non-empty
/// `/`-separated segments. `Some(read_only)` when valid.
fn reference_operation(op: &str) -> Option<bool> {
    if op.is_empty() || op.len() > MAX_OPERATION_LEN {
        return None;
    }
    if op.bytes().any(|b| b == b'*' || b <= b' ' || b == 0x7f) {
        return None;
    }
    let segments: Vec<&str> = op.split('/').collect();
    if segments.len() < 3 || segments.iter().any(|s| s.is_empty()) {
        return None;
    }
    segments.last().map(|s| s.eq_ignore_ascii_case("read"))
}

/// Naive `*`-only glob, ASCII case-insensitive: the reference the compiled
/// shapes of [`ActionPattern`] are checked against.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if p < pattern.len() && pattern[p].eq_ignore_ascii_case(&text[t]) {
            p += 1;
            t += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&b| b == b'*')
}

// ---------------------------------------------------------------------------
// ABAC conditions

/// `Condition::parse` and `evaluate`: a parsed condition, printed back,
/// parses to the same expression; errors point inside the text; evaluation
/// is deterministic, and a comparison and its negated operator never both
/// hold for single values.
pub fn condition(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let parsed = match Condition::parse(&text) {
        Ok(c) => c,
        Err(e) => {
            assert!(!e.message.is_empty());
            assert!(
                e.column >= 1 && e.column <= text.chars().count() + 1,
                "column {} outside {text:?}",
                e.column
            );
            return;
        }
    };
    assert_eq!(parsed.as_str(), text);
    let printed = print_condition(parsed.expr());
    let reparsed = Condition::parse(&printed)
        .unwrap_or_else(|e| panic!("{text:?} printed as {printed:?} does not parse: {e}"));
    assert_eq!(
        reparsed.expr(),
        parsed.expr(),
        "{text:?} printed as {printed:?}"
    );
    assert_eq!(print_condition(reparsed.expr()), printed);

    let mut facts = Facts::default();
    facts.collect(parsed.expr());
    let clock = facts.reads_clock;
    let env = facts.environment(data);
    let input = env.input();
    let verdict = parsed.evaluate(&input);
    if !clock {
        assert_eq!(
            parsed.evaluate(&input),
            verdict,
            "{text:?} is not deterministic"
        );
        assert_eq!(reparsed.evaluate(&input), verdict);
        if let Ok(negated) = Condition::parse(&format!("!({printed})")) {
            assert_eq!(negated.evaluate(&input), !verdict, "{printed:?}");
        }
        for c in &facts.comparisons {
            check_negated_operator(c, &input);
        }
    }
}

/// A comparison of single values and the same with the negated operator
/// (`StringEquals` / `StringNotEquals`) never both hold.
fn check_negated_operator(c: &Comparison, input: &ConditionInput<'_>) {
    if c.quantifier.is_some() {
        return;
    }
    let name = format!("{:?}", c.operator);
    let negated = match name.find("Not") {
        Some(at) => format!("{}{}", &name[..at], &name[at + 3..]),
        None => {
            let at = ["String", "Guid", "Numeric", "DateTime", "Bool"]
                .iter()
                .find(|p| name.starts_with(*p))
                .map_or(0, |p| p.len());
            format!("{}Not{}", &name[..at], &name[at..])
        }
    };
    let Some(operator) = Operator::from_name(&negated) else {
        return;
    };
    let mut one = String::new();
    print_comparison(c, &mut one);
    let mut other = String::new();
    print_comparison(
        &Comparison {
            operator,
            ..c.clone()
        },
        &mut other,
    );
    let (Ok(one), Ok(other)) = (Condition::parse(&one), Condition::parse(&other)) else {
        panic!("a comparison printed alone does not parse: {one:?} / {other:?}");
    };
    assert!(
        !(one.evaluate(input) && other.evaluate(input)),
        "{one:?} and {other:?} both hold"
    );
}

/// Prints an expression with only the parentheses the grammar needs, so it
/// nests no deeper than the text it was parsed from.
pub fn print_condition(expr: &Expr) -> String {
    let mut out = String::new();
    print_expr(expr, &mut out);
    out
}

fn print_expr(expr: &Expr, out: &mut String) {
    match expr {
        Expr::And(a, b) | Expr::Or(a, b) => {
            print_term(a, out);
            out.push_str(if matches!(expr, Expr::And(..)) {
                " AND "
            } else {
                " OR "
            });
            print_term(b, out);
        }
        Expr::Not(a) => {
            out.push('!');
            print_term(a, out);
        }
        Expr::ActionMatches(p) => {
            out.push_str("ActionMatches{'");
            out.push_str(p.as_str());
            out.push_str("'}");
        }
        Expr::SubOperationMatches(p) => {
            out.push_str("SubOperationMatches{'");
            out.push_str(p);
            out.push_str("'}");
        }
        Expr::Compare(c) => print_comparison(c, out),
    }
}

fn print_term(expr: &Expr, out: &mut String) {
    if matches!(expr, Expr::And(..) | Expr::Or(..)) {
        out.push('(');
        print_expr(expr, out);
        out.push(')');
    } else {
        print_expr(expr, out);
    }
}

fn print_comparison(c: &Comparison, out: &mut String) {
    print_operand(&c.left, out);
    out.push(' ');
    if let Some(q) = c.quantifier {
        out.push_str(match q {
            Quantifier::AnyOfAny => "ForAnyOfAnyValues:",
            Quantifier::AllOfAny => "ForAllOfAnyValues:",
            Quantifier::AnyOfAll => "ForAnyOfAllValues:",
            Quantifier::AllOfAll => "ForAllOfAllValues:",
        });
    }
    out.push_str(&format!("{:?}", c.operator));
    out.push(' ');
    print_operand(&c.right, out);
}

fn print_operand(operand: &Operand, out: &mut String) {
    match operand {
        Operand::Attribute(a) => {
            out.push_str(match a.source {
                AttributeSource::Request => "@Request[",
                AttributeSource::Resource => "@Resource[",
                AttributeSource::Principal => "@Principal[",
                AttributeSource::Environment => "@Environment[",
            });
            out.push_str(&a.name);
            out.push(']');
        }
        Operand::Value(v) => {
            out.push('\'');
            out.push_str(v);
            out.push('\'');
        }
        Operand::Set(values) => {
            out.push('{');
            for (i, v) in values.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push('\'');
                out.push_str(v);
                out.push('\'');
            }
            out.push('}');
        }
    }
}

/// What a condition mentions, to build an input that can make its
/// comparisons true.
#[derive(Default)]
struct Facts {
    attributes: Vec<(AttributeSource, String)>,
    constants: Vec<String>,
    actions: Vec<String>,
    comparisons: Vec<Comparison>,
    reads_clock: bool,
}

impl Facts {
    fn collect(&mut self, expr: &Expr) {
        match expr {
            Expr::And(a, b) | Expr::Or(a, b) => {
                self.collect(a);
                self.collect(b);
            }
            Expr::Not(a) => self.collect(a),
            Expr::ActionMatches(p) => self.actions.push(p.as_str().replace('*', "x")),
            Expr::SubOperationMatches(p) => {
                self.attributes
                    .push((AttributeSource::Request, "subOperation".into()));
                self.constants.push(p.clone());
            }
            Expr::Compare(c) => {
                for operand in [&c.left, &c.right] {
                    match operand {
                        Operand::Attribute(a) => {
                            self.reads_clock |= a.source == AttributeSource::Environment;
                            self.attributes.push((a.source, a.name.clone()));
                        }
                        Operand::Value(v) => self.constants.push(v.clone()),
                        Operand::Set(vs) => self.constants.extend(vs.iter().cloned()),
                    }
                }
                self.comparisons.push(c.clone());
            }
        }
    }

    /// Gives each attribute one of the constants, chosen by `data`.
    fn environment(&self, data: &[u8]) -> Environment {
        let mut env = Environment {
            action: self
                .actions
                .first()
                .cloned()
                .unwrap_or_else(|| "Microsoft.Storage/storageAccounts/read".into()),
            ..Environment::default()
        };
        let fallback = ["", "true", "42", "2024-01-01T00:00:00Z"];
        for (i, (source, name)) in self.attributes.iter().enumerate() {
            let pick = usize::from(data.get(i).copied().unwrap_or(0));
            let value = if self.constants.is_empty() || pick % 5 == 4 {
                fallback[pick % fallback.len()].to_owned()
            } else {
                self.constants[pick % self.constants.len()].clone()
            };
            let map = match source {
                AttributeSource::Request => &mut env.request,
                AttributeSource::Resource => &mut env.tags,
                AttributeSource::Principal => &mut env.principal,
                AttributeSource::Environment => continue,
            };
            map.insert(name.clone(), value);
        }
        env
    }
}

#[derive(Default)]
struct Environment {
    action: String,
    request: BTreeMap<String, String>,
    tags: BTreeMap<String, String>,
    principal: BTreeMap<String, String>,
}

impl Environment {
    fn input(&self) -> ConditionInput<'_> {
        ConditionInput {
            action: &self.action,
            data_action: false,
            principal_id: "fuzz",
            principal_type: PrincipalType::User,
            principal_attributes: &self.principal,
            scope: "/subscriptions/s",
            resource_tags: Some(&self.tags),
            request_attributes: &self.request,
        }
    }
}

// ---------------------------------------------------------------------------
// Snapshots

/// `snapshot::load_str` (YAML/JSON → validate → compile): never panics; a
/// bad snapshot yields problems with messages, the same ones each time; a
/// good one answers every request built from its own principals and scopes.
pub fn snapshot(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let compiled = match snapshot::load_str(&text, "fuzz") {
        Ok(s) => s,
        Err(e) => {
            assert!(!e.problems.is_empty(), "an error without problems");
            for p in &e.problems {
                assert!(!p.message.trim().is_empty(), "an empty message: {p:?}");
            }
            assert!(!e.to_string().is_empty());
            let again = snapshot::load_str(&text, "fuzz").err().map(|e| e.problems);
            assert_eq!(
                again.as_ref(),
                Some(&e.problems),
                "problems change between loads"
            );
            return;
        }
    };
    assert!(compiled.info.content_sha256.len() == 64);
    assert!(!compiled.info.revision.is_empty());
    decide_everything(compiled);
}

/// Asks, for a few of the snapshot's own principals and scopes, a few
/// operations: each is well-formed, so each gets a decision.
fn decide_everything(compiled: CompiledSnapshot) {
    let tenant = &compiled.tenant;
    let principals: Vec<String> = tenant
        .principals
        .iter()
        .take(4)
        .map(|p| p.id.clone())
        .collect();
    let mut scopes: Vec<String> = tenant
        .role_assignments
        .iter()
        .map(|a| a.scope.as_str().to_owned())
        .chain(
            tenant
                .deny_assignments
                .iter()
                .map(|d| d.scope.as_str().to_owned()),
        )
        .chain(
            tenant
                .agents
                .iter()
                .flat_map(|a| a.managed_scopes.iter().map(|s| s.as_str().to_owned())),
        )
        .take(4)
        .collect();
    scopes.push("/".into());
    let loaded = Loaded::new(compiled);
    let attributes: HashMap<String, String> = HashMap::new();
    for principal in &principals {
        for scope in &scopes {
            for action in [
                "Microsoft.Resources/subscriptions/read",
                "Microsoft.Authorization/roleAssignments/write",
                "Microsoft.CognitiveServices/accounts/delete",
            ] {
                let mut req = Request {
                    principal_id: principal,
                    action,
                    scope,
                    data_action: false,
                    attributes: &attributes,
                    explain: false,
                    dry_run: false,
                };
                let plain = loaded.decide(&req).map(|d| (d.verdict, d.reason));
                assert!(
                    plain.is_ok(),
                    "{principal} {action} at {scope}: {:?}",
                    plain.err()
                );
                req.explain = true;
                let explained = loaded.decide(&req).map(|d| (d.verdict, d.reason));
                assert_eq!(explained, plain, "explain changes the decision");
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Authorize: protobuf → engine request → decision

/// An operation every agent holds a grant for, in [`engines`].
const GRANTED: &str = "Microsoft.Compute/virtualMachines/restart/action";

/// The snapshots requests are decided on (the demo tenant and the test
/// fixtures that load), each with unlimited grants of [`GRANTED`] to each
/// agent at its first managed scope, lent by each of a few principals.
fn engines() -> &'static [(Loaded, GrantTable)] {
    static ENGINES: OnceLock<Vec<(Loaded, GrantTable)>> = OnceLock::new();
    ENGINES.get_or_init(|| {
        [
            snapshot::DEMO_SNAPSHOT,
            include_str!("../../tests/fixtures/lending.yaml"),
            include_str!("../../tests/fixtures/rules.yaml"),
            include_str!("../../tests/fixtures/elevation.yaml"),
        ]
        .iter()
        .filter_map(|text| snapshot::load_str(text, "fixture").ok())
        .map(|compiled| {
            let grants = GrantTable::default();
            let tenant = &compiled.tenant;
            for agent in &tenant.agents {
                let Some(scope) = agent.managed_scopes.first() else {
                    continue;
                };
                let identity = &tenant.principals[agent.principal].id;
                for (n, lender) in tenant.principals.iter().take(4).enumerate() {
                    grants.insert(Arc::new(ActiveGrant {
                        id: format!("grant-{}-{n}", agent.id).into(),
                        principal_key: principal_key(identity).into(),
                        action: GRANTED.into(),
                        scope_key: scope.key().into(),
                        scope: scope.as_str().into(),
                        data_action: false,
                        on_behalf_of: lender.id.as_str().into(),
                        co_lenders: Box::default(),
                        request_digest: None,
                        expires_at: SystemTime::now() + Duration::from_secs(365 * 86_400),
                        max_uses: 0,
                        uses: AtomicU32::new(0),
                        reserved: AtomicU32::new(0),
                        wanted: AtomicBool::new(false),
                    }));
                }
            }
            (Loaded::new(compiled), grants)
        })
        .collect()
    })
}

/// Decodes the bytes as an `AuthorizeRequest` and decides it as the server
/// does; then builds a second request from the same bytes out of the
/// snapshot's own names, so the fuzzer reaches deep into the engine. Every
/// request gets a decision, or INVALID_ARGUMENT naming its field.
pub fn authorize(data: &[u8]) {
    let engines = engines();
    assert!(!engines.is_empty(), "no fixture snapshot loads");
    let pick = data.first().map_or(0, |&b| usize::from(b) % engines.len());
    let (loaded, grants) = &engines[pick];
    if let Ok(req) = pb::AuthorizeRequest::decode(data) {
        let bytes = req.encode_to_vec();
        assert_eq!(
            pb::AuthorizeRequest::decode(bytes.as_slice()).as_ref(),
            Ok(&req)
        );
        decide(loaded, grants, &req);
    }
    let mut u = Unstructured::new(data.get(1..).unwrap_or_default());
    if let Ok(req) = structured_request(&mut u, &loaded.snapshot) {
        decide(loaded, grants, &req);
    }
}

fn decide(loaded: &Loaded, grants: &GrantTable, req: &pb::AuthorizeRequest) {
    if let Err(e) = convert::check_attributes(&req.attributes) {
        assert_eq!(e.field, "attributes");
        check_invalid_argument(&e);
        return;
    }
    match loaded.decide_with(&convert::request(req), Some(Live::unfrozen(grants))) {
        Ok(d) => {
            let (verdict, reason, read_only) = (d.verdict, d.reason, d.read_only);
            let response = convert::response(d);
            assert_ne!(response.decision(), pb::Decision::Unspecified);
            assert_ne!(response.reason(), pb::Reason::Unspecified);
            assert!(!response.message.is_empty());
            assert!(!req.explain || verdict != Verdict::Allow || !response.matches.is_empty());
            // Explaining, or only asking, never changes the answer.
            for (explain, dry_run) in [(!req.explain, req.dry_run), (req.explain, !req.dry_run)] {
                let mut other = convert::request(req);
                other.explain = explain;
                other.dry_run = dry_run;
                let d = loaded
                    .decide_with(&other, Some(Live::unfrozen(grants)))
                    .unwrap_or_else(|e| panic!("{req:?} decided, then failed: {e}"));
                assert_eq!(
                    (d.verdict, d.reason, d.read_only),
                    (verdict, reason, read_only),
                    "{req:?} with explain={explain} dry_run={dry_run}"
                );
            }
            assert_eq!(
                read_only,
                check_operation(&req.action).is_ok_and(|i| i.read_only)
            );
        }
        Err(e) => {
            assert!(
                ["principal_id", "action", "scope"].contains(&e.field),
                "unexpected field {:?}",
                e.field
            );
            check_invalid_argument(&e);
        }
    }
}

fn check_invalid_argument(e: &RequestError) {
    assert!(
        e.message.starts_with(e.field),
        "the message does not name the field {}: {:?}",
        e.field,
        e.message
    );
    let status = convert::invalid_argument(e.clone());
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert_eq!(status.message(), e.message);
}

/// Picks a string: one of `names` (case changed or not), a fixed hostile
/// one, or whatever the bytes say.
fn pick_string(u: &mut Unstructured<'_>, names: &[&str]) -> arbitrary::Result<String> {
    const HOSTILE: &[&str] = &[
        "",
        "*",
        "/",
        "//",
        "Microsoft.Authorization/*/read",
        "/subscriptions/",
        "/subscriptions/11111111-1111-1111-1111-111111111111/",
        "/providers/Microsoft.Management/managementGroups/contoso",
        "00000000-0000-0000-0000-000000000000",
        "a\u{0}b",
        "é",
    ];
    Ok(match u.int_in_range(0..=7u8)? {
        0..=3 if !names.is_empty() => u.choose(names)?.to_string(),
        4 if !names.is_empty() => {
            let name = u.choose(names)?;
            if u.arbitrary()? {
                name.to_ascii_uppercase()
            } else {
                let suffix: &str = u.arbitrary()?;
                format!("{name}{suffix}")
            }
        }
        5 => u.choose(HOSTILE)?.to_string(),
        _ => u.arbitrary()?,
    })
}

fn structured_request(
    u: &mut Unstructured<'_>,
    snapshot: &CompiledSnapshot,
) -> arbitrary::Result<pb::AuthorizeRequest> {
    let tenant = &snapshot.tenant;
    let principals: Vec<&str> = tenant
        .principals
        .iter()
        .map(|p| p.id.as_str())
        .chain(tenant.access_keys.iter().map(|k| k.id.as_str()))
        .collect();
    let scopes: Vec<&str> = snapshot.nodes.iter().map(|n| &*n.text).collect();
    let mut actions: Vec<String> = vec![
        "Microsoft.Resources/subscriptions/read".into(),
        "Microsoft.Authorization/roleAssignments/write".into(),
        "Microsoft.CognitiveServices/accounts/delete".into(),
        GRANTED.into(),
        "Microsoft.App/agents/write".into(),
    ];
    for role in tenant
        .role_definitions
        .iter()
        .skip(tenant.builtin_role_count)
    {
        for block in &role.permissions {
            for p in block.actions.iter().chain(block.data_actions.iter()) {
                actions.push(p.as_str().replace('*', "x"));
            }
        }
    }
    let actions: Vec<&str> = actions.iter().map(String::as_str).collect();
    let mut attributes = HashMap::new();
    for _ in 0..u.int_in_range(0..=3u8)? {
        let key = pick_string(
            u,
            &[
                "Microsoft.Authorization/roleAssignments:RoleDefinitionId",
                "subOperation",
                "env",
            ],
        )?;
        let value = pick_string(
            u,
            &[
                "8e3af657-a8ff-443c-a75c-2fe8c4bcb635",
                "18d7d88d-d35e-4fb5-a5c3-7773c20a72d9",
                "prod",
            ],
        )?;
        attributes.insert(key, value);
    }
    Ok(pb::AuthorizeRequest {
        principal_id: pick_string(u, &principals)?,
        action: pick_string(u, &actions)?,
        scope: pick_string(u, &scopes)?,
        data_action: u.arbitrary()?,
        attributes,
        explain: u.arbitrary()?,
        dry_run: u.arbitrary()?,
        request_digest: String::new(),
    })
}

// ---------------------------------------------------------------------------
// ARM request mapping

const SEGMENTS: &[&str] = &[
    "subscriptions",
    "11111111-1111-1111-1111-111111111111",
    "resourceGroups",
    "rg-app",
    "providers",
    "Microsoft.Compute",
    "virtualMachines",
    "vm1",
    "restart",
    "Microsoft.Authorization",
    "roleAssignments",
    "roleDefinitions",
    "Microsoft.Management",
    "managementGroups",
    "tenants",
    "Microsoft.Resources",
    "deployments",
    "extensions",
    "Microsoft.Web",
    "sites",
    "config",
    "list",
    "listKeys",
    "%20",
    "a%20b",
    "%41",
    "%2F",
    "%2e",
    ".",
    "..",
    "x.",
    "",
    "*",
    "é",
];

fn pick_segment(u: &mut Unstructured<'_>, template: bool) -> arbitrary::Result<String> {
    Ok(match u.int_in_range(0..=9u8)? {
        0..=6 => u.choose(SEGMENTS)?.to_string(),
        7 if template => {
            if u.arbitrary()? {
                "{}".into()
            } else {
                "{name}".into()
            }
        }
        _ => u.arbitrary()?,
    })
}

fn pick_path(u: &mut Unstructured<'_>, template: bool) -> arbitrary::Result<String> {
    let mut path = String::new();
    for _ in 0..u.int_in_range(0..=14u8)? {
        path.push('/');
        path.push_str(&pick_segment(u, template)?);
    }
    if path.is_empty() || u.ratio(1, 8)? {
        path.push('/');
    }
    if !template && u.ratio(1, 6)? {
        path.push('?');
        path.push_str(u.arbitrary()?);
    }
    Ok(path)
}

fn pick_route(u: &mut Unstructured<'_>) -> arbitrary::Result<RouteSpec> {
    let method = u
        .choose(&["GET", "POST", "*", "PUT", "get", "DELETE", "OPTIONS"])?
        .to_string();
    let path = pick_path(u, true)?;
    let operation = match u.int_in_range(0..=3u8)? {
        0 => "Microsoft.Web/sites/config/list/action".to_owned(),
        1 => "Contoso.Api/apis/orders/read".to_owned(),
        2 => "Microsoft.Compute/*/read".to_owned(),
        _ => u.arbitrary()?,
    };
    let scope = match u.int_in_range(0..=4u8)? {
        0 => None,
        1 => {
            // A prefix of the template, at a segment boundary.
            let cut = u.int_in_range(0..=path.len())?;
            let end = path.as_bytes()[..cut]
                .iter()
                .rposition(|&b| b == b'/')
                .unwrap_or(0);
            Some(if end == 0 {
                "/".into()
            } else {
                path[..end].into()
            })
        }
        2 => Some("/subscriptions/11111111-1111-1111-1111-111111111111".into()),
        3 => Some(pick_path(u, true)?),
        _ => Some(u.arbitrary()?),
    };
    Ok(RouteSpec {
        method,
        path,
        operation,
        data_action: u.arbitrary()?,
        scope,
    })
}

/// `RouteTable::compile` and `map_request`. The first byte picks raw mode
/// (the rest is a path, no routes) or structured mode (routes and a path
/// built from ARM-like segments). A mapping's operation is a valid
/// operation, its scope parses as a scope and is a prefix of the path (or
/// the matching route's fixed scope), and user routes only ever replace
/// what the built-in rules would have said.
pub fn arm_mapping(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let method = Method::ALL[usize::from(mode >> 1) % Method::ALL.len()];
    if mode & 1 == 0 {
        check_mapping(
            &RouteTable::empty(),
            &[],
            method,
            &String::from_utf8_lossy(rest),
        );
        return;
    }
    let mut u = Unstructured::new(rest);
    let Ok((specs, path)) = (|| -> arbitrary::Result<_> {
        let mut specs = Vec::new();
        for _ in 0..u.int_in_range(0..=4u8)? {
            specs.push(pick_route(&mut u)?);
        }
        Ok((specs, pick_path(&mut u, false)?))
    })() else {
        return;
    };
    match RouteTable::compile(&specs) {
        Ok(table) => {
            assert_eq!(table.len(), specs.len());
            check_mapping(&table, &specs, method, &path);
            // Each route's own template, filled in, is mapped by some route.
            for spec in &specs {
                let filled = spec.path.replace("{name}", "x").replace("{}", "x");
                let m = Method::parse(&spec.method).unwrap_or(method);
                check_mapping(&table, &specs, m, &filled);
            }
        }
        Err(e) => {
            assert!(!e.issues.is_empty());
            for issue in &e.issues {
                assert!(issue.index < specs.len());
                assert!(["method", "path", "operation", "scope"].contains(&issue.field));
                assert!(!issue.message.is_empty());
            }
            assert!(e.issues.windows(2).all(|w| w[0].index <= w[1].index));
        }
    }
}

/// A route's scope as written, less the one trailing `/` templates may have.
fn fixed_scope(spec: &RouteSpec) -> Option<&str> {
    let scope = spec.scope.as_deref()?;
    Some(match scope.strip_suffix('/') {
        Some(stripped) if !stripped.is_empty() => stripped,
        _ => scope,
    })
}

fn check_mapping(table: &RouteTable, specs: &[RouteSpec], method: Method, path: &str) {
    let mut buffer = String::new();
    let mapped = map_request(table, method, path, &mut buffer);
    let no_routes = RouteTable::empty();
    let mut plain_buffer = String::new();
    let plain = map_request(&no_routes, method, path, &mut plain_buffer);
    let m = match mapped {
        Ok(m) => m,
        Err(e) => {
            assert!(!e.to_string().is_empty());
            // Routes are consulted only for well-formed paths: a path the
            // rules refuse as malformed is refused whatever the routes.
            if let Err(plain) = plain {
                if !matches!(
                    plain,
                    rampart::extauthz::MappingError::NotArm
                        | rampart::extauthz::MappingError::ProviderWithoutType(_)
                        | rampart::extauthz::MappingError::UnexpectedProviders(_)
                        | rampart::extauthz::MappingError::OperationTooLong
                ) {
                    assert_eq!(e, plain, "{path:?}");
                }
            }
            return;
        }
    };
    // A raw `*` is legal in a path segment, and the derivation copies
    // type segments into the operation: the engine then refuses the
    // operation as a wildcard (fails closed). Anything else must pass.
    let operation = check_operation(m.operation);
    assert!(
        operation.is_ok()
            || (matches!(operation, Err(OperationError::Wildcard(_))) && path.contains('*')),
        "{method:?} {path:?} maps to operation {:?}: {:?}",
        m.operation,
        operation.err()
    );
    let scope = Scope::parse(m.scope);
    assert!(
        scope.is_ok(),
        "{method:?} {path:?} maps to scope {:?}: {:?}",
        m.scope,
        scope.err()
    );
    let before_query = path.split('?').next().unwrap_or_default();
    let is_path_prefix = before_query.starts_with(m.scope)
        && (m.scope == "/"
            || matches!(
                before_query.as_bytes().get(m.scope.len()),
                None | Some(b'/')
            ));
    match m.by {
        MappedBy::Route(i) => {
            let spec = &specs[i];
            assert_eq!(m.operation, spec.operation);
            assert_eq!(m.data_action, spec.data_action);
            assert!(
                is_path_prefix || fixed_scope(spec) == Some(m.scope),
                "route {i} ({spec:?}) maps {path:?} to scope {:?}",
                m.scope
            );
        }
        MappedBy::BuiltIn | MappedBy::Derived => {
            assert!(
                is_path_prefix,
                "{method:?} {path:?} maps to scope {:?}",
                m.scope
            );
            assert!(!m.data_action);
            assert_eq!(plain, Ok(m), "routes changed a mapping no route made");
            if m.by == MappedBy::Derived {
                assert!(m.operation.len() <= MAX_OPERATION_LEN);
                let verb = m.operation.rsplit('/').next().unwrap_or_default();
                assert_eq!(verb, method.verb(), "{path:?} -> {}", m.operation);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Envoy's CheckRequest, read in place

/// `wire::CheckRequest::decode` and everything read from it: the bytes as
/// Envoy's `CheckRequest`. Whatever decodes can be read whole; where Envoy's
/// generated types read the bytes too, both read the same method, path and
/// peer principal, and each header rampart finds is one the generated map
/// holds (up to the case of its name); every identity source answers, the
/// bearer token's claim the same whether remembered or read afresh.
pub fn check_request(data: &[u8]) {
    use envoy_types::pb::envoy::service::auth::v3 as envoy;
    let Ok(ours) = CheckRequest::decode(prost::bytes::Bytes::copy_from_slice(data)) else {
        return;
    };
    let theirs = envoy::CheckRequest::decode(data).ok();
    let their_attributes = theirs.as_ref().and_then(|r| r.attributes.as_ref());
    let their_http = their_attributes
        .and_then(|a| a.request.as_ref())
        .and_then(|r| r.http.as_ref());
    if let Some(attributes) = their_attributes {
        let principal = attributes.source.as_ref().map(|s| s.principal.as_str());
        assert_eq!(ours.peer_principal(), principal.unwrap_or_default());
    }
    let mut names = vec![
        "authorization".to_owned(),
        "x-rampart-justification".to_owned(),
    ];
    if let Some(http) = ours.http() {
        if let Some(theirs) = their_http {
            assert_eq!(http.method(), theirs.method);
            assert_eq!(http.path(), theirs.path);
            assert_eq!(http.id(), theirs.id);
            assert_eq!(http.size(), theirs.size);
            assert_eq!(http.body(), theirs.body.as_bytes());
            assert_eq!(http.raw_body(), &theirs.raw_body[..]);
            names.extend(theirs.headers.keys().cloned());
            for name in theirs.headers.keys() {
                let found = http.header(name);
                let candidates: Vec<&str> = theirs
                    .headers
                    .iter()
                    .filter(|(k, _)| k.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v.as_str())
                    .collect();
                assert!(
                    found.is_some_and(|v| candidates.contains(&v)),
                    "header {name:?}: {found:?} is none of {candidates:?}"
                );
            }
        }
        for name in &names {
            let _ = http.header(name);
        }
        if let Some(header) = http.header_bytes("authorization") {
            let fresh = std::str::from_utf8(header)
                .ok()
                .and_then(jwt::bearer_token)
                .ok_or(jwt::JwtError::NoBearer)
                .and_then(|token| jwt::unverified_claim(token, "oid"));
            assert_eq!(jwt::bearer_claim(header, "oid"), fresh);
            assert_eq!(jwt::bearer_claim(header, "oid"), fresh, "remembered");
        }
    }
    let sources = [
        "jwt",
        "mtls",
        "header:x-agent-oid",
        "metadata:envoy.filters.http.jwt_authn/payload/oid",
        "metadata:f/a",
    ];
    for source in sources {
        if let Ok(source) = source.parse::<IdentitySource>() {
            if let Ok(id) = source.principal(&ours) {
                assert!(!id.is_empty(), "{source}: an empty principal");
            }
        }
    }
}

// ---------------------------------------------------------------------------
// gRPC framing

/// `unary::Assembler`: the first byte seeds where the rest is cut into data
/// frames. However it is cut, the outcome is the one read off the whole:
/// exactly one uncompressed message within the limit, or a refusal.
pub fn grpc_frames(data: &[u8]) {
    use rampart::server::unary::Assembler;
    const LIMIT: usize = 1024;
    let Some((&seed, stream)) = data.split_first() else {
        return;
    };
    let expected = match stream {
        [0, a, b, c, d, rest @ ..] => {
            let length = u32::from_be_bytes([*a, *b, *c, *d]) as usize;
            (length <= LIMIT && rest.len() == length).then_some(rest)
        }
        _ => None,
    };
    let mut assembler = Assembler::new(LIMIT);
    let mut state = u32::from(seed) | 1;
    let mut rest = stream;
    let mut refused = false;
    while !rest.is_empty() {
        // A small LCG: cuts of 0 to 15 bytes, empty frames included.
        state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let cut = ((state >> 16) as usize % 16).min(rest.len());
        let (chunk, tail) = rest.split_at(cut);
        rest = tail;
        if assembler
            .push(prost::bytes::Bytes::copy_from_slice(chunk))
            .is_err()
        {
            refused = true;
            break;
        }
    }
    let outcome = if refused {
        None
    } else {
        assembler.finish().ok()
    };
    assert_eq!(outcome.as_deref(), expected, "cut with seed {seed}");
}
