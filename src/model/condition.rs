//! ABAC conditions (docs/model.md#conditions): the Azure condition language, version 2.0,
//! parsed once per snapshot and evaluated per request only for the
//! assignments and permission blocks that carry one.
//!
//! Written here rather than taken from `regorus::languages::azure_rbac`
//! (0.14), whose parser rejects the forms every built-in Azure condition
//! uses — `!(…)`, `ActionMatches{'…'}`, unquoted GUID sets — matches
//! actions case-sensitively segment by segment, and accepts `a AND b OR c`.
//!
//! Evaluation fails closed: a missing attribute, or a value that does not
//! parse as the operator's type, makes that comparison false.

mod parser;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

pub use parser::{ParseError, MAX_CONDITION_LEN};

use super::action::ActionPattern;
use super::principal::PrincipalType;

/// Only version 2.0 of the condition language exists.
pub const CONDITION_VERSION: &str = "2.0";

/// A parsed condition. Cheap to clone.
#[derive(Clone)]
pub struct Condition {
    source: Arc<str>,
    expr: Arc<Expr>,
}

/// Why a condition did not parse.
pub type ConditionError = ParseError;

#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    ActionMatches(ActionPattern),
    SubOperationMatches(String),
    Compare(Comparison),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    pub left: Operand,
    pub quantifier: Option<Quantifier>,
    pub operator: Operator,
    pub right: Operand,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    Attribute(Attribute),
    Value(String),
    Set(Vec<String>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Attribute {
    pub source: AttributeSource,
    pub name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttributeSource {
    Request,
    Resource,
    Principal,
    Environment,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quantifier {
    AnyOfAny,
    AllOfAny,
    AnyOfAll,
    AllOfAll,
}

/// The comparison operators, negated forms included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    StringEquals,
    StringNotEquals,
    StringEqualsIgnoreCase,
    StringNotEqualsIgnoreCase,
    StringLike,
    StringNotLike,
    StringStartsWith,
    StringNotStartsWith,
    StringStartsWithIgnoreCase,
    StringNotStartsWithIgnoreCase,
    GuidEquals,
    GuidNotEquals,
    NumericEquals,
    NumericNotEquals,
    NumericLessThan,
    NumericLessThanEquals,
    NumericGreaterThan,
    NumericGreaterThanEquals,
    DateTimeEquals,
    DateTimeNotEquals,
    DateTimeGreaterThan,
    DateTimeGreaterThanEquals,
    DateTimeLessThan,
    DateTimeLessThanEquals,
    BoolEquals,
    BoolNotEquals,
}

impl Operator {
    const ALL: [(&'static str, Operator); 26] = [
        ("StringEquals", Operator::StringEquals),
        ("StringNotEquals", Operator::StringNotEquals),
        ("StringEqualsIgnoreCase", Operator::StringEqualsIgnoreCase),
        (
            "StringNotEqualsIgnoreCase",
            Operator::StringNotEqualsIgnoreCase,
        ),
        ("StringLike", Operator::StringLike),
        ("StringNotLike", Operator::StringNotLike),
        ("StringStartsWith", Operator::StringStartsWith),
        ("StringNotStartsWith", Operator::StringNotStartsWith),
        (
            "StringStartsWithIgnoreCase",
            Operator::StringStartsWithIgnoreCase,
        ),
        (
            "StringNotStartsWithIgnoreCase",
            Operator::StringNotStartsWithIgnoreCase,
        ),
        ("GuidEquals", Operator::GuidEquals),
        ("GuidNotEquals", Operator::GuidNotEquals),
        ("NumericEquals", Operator::NumericEquals),
        ("NumericNotEquals", Operator::NumericNotEquals),
        ("NumericLessThan", Operator::NumericLessThan),
        ("NumericLessThanEquals", Operator::NumericLessThanEquals),
        ("NumericGreaterThan", Operator::NumericGreaterThan),
        (
            "NumericGreaterThanEquals",
            Operator::NumericGreaterThanEquals,
        ),
        ("DateTimeEquals", Operator::DateTimeEquals),
        ("DateTimeNotEquals", Operator::DateTimeNotEquals),
        ("DateTimeGreaterThan", Operator::DateTimeGreaterThan),
        (
            "DateTimeGreaterThanEquals",
            Operator::DateTimeGreaterThanEquals,
        ),
        ("DateTimeLessThan", Operator::DateTimeLessThan),
        ("DateTimeLessThanEquals", Operator::DateTimeLessThanEquals),
        ("BoolEquals", Operator::BoolEquals),
        ("BoolNotEquals", Operator::BoolNotEquals),
    ];

    pub fn from_name(name: &str) -> Option<Operator> {
        Self::ALL
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|&(_, op)| op)
    }

    /// Compares one left value with one right value. Values that do not
    /// parse as the operator's type make the comparison false, for negated
    /// operators too.
    fn holds(self, left: &str, right: &str) -> bool {
        use Operator::*;
        match self {
            StringEquals => left == right,
            StringNotEquals => left != right,
            StringEqualsIgnoreCase => left.to_lowercase() == right.to_lowercase(),
            StringNotEqualsIgnoreCase => left.to_lowercase() != right.to_lowercase(),
            StringLike => like(left.as_bytes(), right.as_bytes()),
            StringNotLike => !like(left.as_bytes(), right.as_bytes()),
            StringStartsWith => left.starts_with(right),
            StringNotStartsWith => !left.starts_with(right),
            StringStartsWithIgnoreCase => left.to_lowercase().starts_with(&right.to_lowercase()),
            StringNotStartsWithIgnoreCase => {
                !left.to_lowercase().starts_with(&right.to_lowercase())
            }
            GuidEquals | GuidNotEquals => match (guid(left), guid(right)) {
                (Some(l), Some(r)) => (l == r) == (self == GuidEquals),
                _ => false,
            },
            NumericEquals
            | NumericNotEquals
            | NumericLessThan
            | NumericLessThanEquals
            | NumericGreaterThan
            | NumericGreaterThanEquals => {
                match (left.trim().parse::<f64>(), right.trim().parse::<f64>()) {
                    (Ok(l), Ok(r)) => ordered(self, l.partial_cmp(&r)),
                    _ => false,
                }
            }
            DateTimeEquals
            | DateTimeNotEquals
            | DateTimeGreaterThan
            | DateTimeGreaterThanEquals
            | DateTimeLessThan
            | DateTimeLessThanEquals => match (datetime(left), datetime(right)) {
                (Some(l), Some(r)) => ordered(self, Some(l.cmp(&r))),
                _ => false,
            },
            BoolEquals | BoolNotEquals => match (boolean(left), boolean(right)) {
                (Some(l), Some(r)) => (l == r) == (self == BoolEquals),
                _ => false,
            },
        }
    }
}

fn ordered(op: Operator, ordering: Option<std::cmp::Ordering>) -> bool {
    use std::cmp::Ordering::*;
    use Operator::*;
    let Some(o) = ordering else { return false };
    match op {
        NumericEquals | DateTimeEquals => o == Equal,
        NumericNotEquals | DateTimeNotEquals => o != Equal,
        NumericLessThan | DateTimeLessThan => o == Less,
        NumericLessThanEquals | DateTimeLessThanEquals => o != Greater,
        NumericGreaterThan | DateTimeGreaterThan => o == Greater,
        NumericGreaterThanEquals | DateTimeGreaterThanEquals => o != Less,
        _ => false,
    }
}

/// A GUID as 32 lowercase hex digits, from the dashed or the plain form.
fn guid(text: &str) -> Option<[u8; 32]> {
    let text = text.trim().trim_start_matches('{').trim_end_matches('}');
    let mut out = [0u8; 32];
    let mut n = 0;
    for b in text.bytes() {
        if b == b'-' {
            continue;
        }
        if !b.is_ascii_hexdigit() || n == 32 {
            return None;
        }
        out[n] = b.to_ascii_lowercase();
        n += 1;
    }
    (n == 32).then_some(out)
}

fn datetime(text: &str) -> Option<chrono::DateTime<chrono::FixedOffset>> {
    chrono::DateTime::parse_from_rfc3339(text.trim()).ok()
}

fn boolean(text: &str) -> Option<bool> {
    match text.trim() {
        t if t.eq_ignore_ascii_case("true") => Some(true),
        t if t.eq_ignore_ascii_case("false") => Some(false),
        _ => None,
    }
}

/// `StringLike`: `*` matches any run, `?` one character; case-sensitive.
fn like(text: &[u8], pattern: &[u8]) -> bool {
    let (mut t, mut p) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == b'?' || pattern[p] == text[t]) {
            t += 1;
            p += 1;
        } else if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

impl Condition {
    pub fn parse(source: &str) -> Result<Condition, ConditionError> {
        let expr = parser::parse(source)?;
        Ok(Condition {
            source: source.into(),
            expr: Arc::new(expr),
        })
    }

    /// The condition as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// The parsed expression, for tools that inspect or re-print it.
    pub fn expr(&self) -> &Expr {
        &self.expr
    }

    pub fn evaluate(&self, input: &ConditionInput<'_>) -> bool {
        eval(&self.expr, input)
    }
}

impl fmt::Debug for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Condition({:?})", &*self.source)
    }
}

/// What a condition may look at.
pub struct ConditionInput<'a> {
    pub action: &'a str,
    pub data_action: bool,
    pub principal_id: &'a str,
    pub principal_type: PrincipalType,
    pub principal_attributes: &'a BTreeMap<String, String>,
    pub scope: &'a str,
    pub resource_tags: Option<&'a BTreeMap<String, String>>,
    pub request_attributes: &'a dyn RequestAttributes,
}

/// The request's `attributes` map, in whatever container the caller has.
pub trait RequestAttributes: Sync {
    fn attribute(&self, name: &str) -> Option<&str>;
}

impl<S: std::hash::BuildHasher + Sync> RequestAttributes
    for std::collections::HashMap<String, String, S>
{
    fn attribute(&self, name: &str) -> Option<&str> {
        self.get(name).map(String::as_str)
    }
}

impl RequestAttributes for BTreeMap<String, String> {
    fn attribute(&self, name: &str) -> Option<&str> {
        self.get(name).map(String::as_str)
    }
}

impl RequestAttributes for &[(&str, &str)] {
    fn attribute(&self, name: &str) -> Option<&str> {
        self.iter().find(|(k, _)| *k == name).map(|&(_, v)| v)
    }
}

/// Looks `name` up in a map by its full name, then by the part after the
/// last `:` with any `<$key_case_sensitive$>` marker removed (Azure writes
/// tag and custom-attribute names as `{namespace}:{name}`).
fn lookup<'m>(map: &'m BTreeMap<String, String>, name: &str) -> Option<&'m str> {
    if let Some(v) = map.get(name) {
        return Some(v);
    }
    let short = name.rsplit_once(':').map(|(_, s)| s)?;
    let short = short.split("<$").next().unwrap_or(short);
    map.get(short).map(String::as_str)
}

impl<'a> ConditionInput<'a> {
    /// An attribute's value. `@Resource` reads the snapshot's tags first;
    /// properties of the target that a snapshot cannot know (the role of a
    /// role assignment being deleted, say) come from the request attribute
    /// of the same name, and never override a tag.
    fn attribute(&self, attribute: &Attribute) -> Option<Cow<'a, str>> {
        let name = attribute.name.as_str();
        match attribute.source {
            AttributeSource::Request => self.request_attributes.attribute(name).map(Cow::Borrowed),
            AttributeSource::Resource => self
                .resource_tags
                .and_then(|t| lookup(t, name))
                .or_else(|| self.request_attributes.attribute(name))
                .map(Cow::Borrowed),
            AttributeSource::Principal => {
                lookup(self.principal_attributes, name).map(Cow::Borrowed)
            }
            AttributeSource::Environment if name.eq_ignore_ascii_case("UtcNow") => {
                Some(Cow::Owned(chrono::Utc::now().to_rfc3339()))
            }
            AttributeSource::Environment => None,
        }
    }
}

/// The values of one side of a comparison, borrowed where possible.
enum Values<'v> {
    One(Cow<'v, str>),
    Many(&'v [String]),
}

impl Values<'_> {
    fn len(&self) -> usize {
        match self {
            Values::One(_) => 1,
            Values::Many(v) => v.len(),
        }
    }

    fn iter(&self) -> impl Iterator<Item = &str> {
        let (one, many): (Option<&str>, &[String]) = match self {
            Values::One(v) => (Some(v.as_ref()), &[]),
            Values::Many(v) => (None, v),
        };
        one.into_iter().chain(many.iter().map(String::as_str))
    }
}

fn values<'v>(input: &ConditionInput<'v>, operand: &'v Operand) -> Option<Values<'v>> {
    match operand {
        Operand::Attribute(a) => input.attribute(a).map(Values::One),
        Operand::Value(v) => Some(Values::One(Cow::Borrowed(v))),
        Operand::Set(v) => Some(Values::Many(v)),
    }
}

fn eval<'v>(expr: &'v Expr, input: &ConditionInput<'v>) -> bool {
    match expr {
        Expr::And(a, b) => eval(a, input) && eval(b, input),
        Expr::Or(a, b) => eval(a, input) || eval(b, input),
        Expr::Not(a) => !eval(a, input),
        Expr::ActionMatches(pattern) => pattern.matches(input.action),
        Expr::SubOperationMatches(pattern) => input
            .request_attributes
            .attribute("subOperation")
            .is_some_and(|s| s.eq_ignore_ascii_case(pattern)),
        Expr::Compare(c) => {
            let (Some(left), Some(right)) = (values(input, &c.left), values(input, &c.right))
            else {
                return false;
            };
            let op = c.operator;
            match c.quantifier {
                None => {
                    left.len() == 1
                        && right.len() == 1
                        && left.iter().zip(right.iter()).all(|(l, r)| op.holds(l, r))
                }
                Some(Quantifier::AnyOfAny) => {
                    left.iter().any(|l| right.iter().any(|r| op.holds(l, r)))
                }
                Some(Quantifier::AllOfAny) => {
                    left.iter().all(|l| right.iter().any(|r| op.holds(l, r)))
                }
                Some(Quantifier::AnyOfAll) => {
                    left.iter().any(|l| right.iter().all(|r| op.holds(l, r)))
                }
                Some(Quantifier::AllOfAll) => {
                    left.iter().all(|l| right.iter().all(|r| op.holds(l, r)))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DELEGATION: &str = "((!(ActionMatches{'Microsoft.Authorization/roleAssignments/write'})) OR (@Request[Microsoft.Authorization/roleAssignments:RoleDefinitionId] ForAnyOfAnyValues:GuidEquals {53ca6127-db72-4b80-b1b0-d745d6d5456d}))";
    const ROLE_KEY: &str = "Microsoft.Authorization/roleAssignments:RoleDefinitionId";

    fn eval_with(
        condition: &str,
        action: &str,
        attrs: &[(&str, &str)],
        tags: Option<&BTreeMap<String, String>>,
    ) -> bool {
        let principal_attributes = BTreeMap::from([("department".to_owned(), "sre".to_owned())]);
        Condition::parse(condition)
            .unwrap_or_else(|e| panic!("{condition}: {e}"))
            .evaluate(&ConditionInput {
                action,
                data_action: false,
                principal_id: "p",
                principal_type: PrincipalType::User,
                principal_attributes: &principal_attributes,
                scope: "/subscriptions/s",
                resource_tags: tags,
                request_attributes: &attrs,
            })
    }

    fn eval_attrs(condition: &str, attrs: &[(&str, &str)]) -> bool {
        eval_with(
            condition,
            "Microsoft.Storage/storageAccounts/read",
            attrs,
            None,
        )
    }

    #[test]
    fn delegation_condition_lets_other_actions_through() {
        assert!(eval_with(
            DELEGATION,
            "Microsoft.Compute/virtualMachines/read",
            &[],
            None
        ));
    }

    #[test]
    fn delegation_condition_checks_the_role_being_assigned() {
        let write = "Microsoft.Authorization/roleAssignments/write";
        assert!(eval_with(
            DELEGATION,
            write,
            &[(ROLE_KEY, "53CA6127-DB72-4B80-B1B0-D745D6D5456D")],
            None
        ));
        assert!(!eval_with(
            DELEGATION,
            write,
            &[(ROLE_KEY, "8e3af657-a8ff-443c-a75c-2fe8c4bcb635")],
            None
        ));
        assert!(
            !eval_with(DELEGATION, write, &[], None),
            "a missing attribute fails the comparison"
        );
    }

    #[test]
    fn action_matches_ignores_case_and_takes_wildcards() {
        let owner = [(ROLE_KEY, "8e3af657-a8ff-443c-a75c-2fe8c4bcb635")];
        assert!(!eval_with(
            DELEGATION,
            "MICROSOFT.AUTHORIZATION/ROLEASSIGNMENTS/WRITE",
            &owner,
            None
        ));
        assert!(eval_with(
            "ActionMatches{'Microsoft.Storage/*/read'}",
            "microsoft.storage/storageAccounts/blobServices/read",
            &[],
            None
        ));
    }

    #[test]
    fn guids_compare_in_plain_and_dashed_forms() {
        let c = "@Request[r] ForAnyOfAnyValues:GuidEquals{4bad4d9e2a13488894bbc8432f6f3040}";
        assert!(eval_attrs(
            c,
            &[("r", "4BAD4D9E-2A13-4888-94BB-C8432F6F3040")]
        ));
        assert!(!eval_attrs(c, &[("r", "not-a-guid")]));
        assert!(eval_attrs(
            "@Request[r] GuidNotEquals 4bad4d9e-2a13-4888-94bb-c8432f6f3040",
            &[("r", "00000000-0000-0000-0000-000000000000")]
        ));
    }

    #[test]
    fn string_operators_follow_azure() {
        let a = [("x", "Alpha-01")];
        assert!(eval_attrs("@Request[x] StringEquals 'Alpha-01'", &a));
        assert!(!eval_attrs("@Request[x] StringEquals 'alpha-01'", &a));
        assert!(eval_attrs(
            "@Request[x] StringEqualsIgnoreCase 'alpha-01'",
            &a
        ));
        assert!(eval_attrs("@Request[x] StringNotEquals 'beta'", &a));
        assert!(eval_attrs("@Request[x] StringLike 'Al*-0?'", &a));
        assert!(!eval_attrs("@Request[x] StringLike 'al*'", &a));
        assert!(eval_attrs("@Request[x] StringNotLike 'Be*'", &a));
        assert!(eval_attrs("@Request[x] StringStartsWith 'Alp'", &a));
        assert!(!eval_attrs("@Request[x] StringStartsWith 'lp'", &a));
    }

    #[test]
    fn numeric_datetime_and_bool_operators() {
        let a = [("n", "42"), ("t", "2026-01-01T00:00:00Z"), ("b", "True")];
        assert!(eval_attrs("@Request[n] NumericEquals 42", &a));
        assert!(eval_attrs("@Request[n] NumericLessThan 43.5", &a));
        assert!(eval_attrs("@Request[n] NumericGreaterThan 41", &a));
        assert!(!eval_attrs("@Request[n] NumericGreaterThan 42", &a));
        assert!(
            !eval_attrs("@Request[t] NumericGreaterThan 1", &a),
            "a non-number is false"
        );
        assert!(eval_attrs(
            "@Request[t] DateTimeGreaterThan '2025-12-31T23:59:59.0Z'",
            &a
        ));
        assert!(eval_attrs(
            "@Request[t] DateTimeLessThan '2026-01-01T00:00:01Z'",
            &a
        ));
        assert!(eval_attrs("@Request[b] BoolEquals true", &a));
        assert!(eval_attrs(
            "@Environment[UtcNow] DateTimeGreaterThan '2020-01-01T00:00:00.0Z'",
            &[]
        ));
    }

    #[test]
    fn quantifiers_over_sets() {
        let a = [("r", "b")];
        assert!(eval_attrs(
            "@Request[r] ForAnyOfAnyValues:StringEquals {'a', 'b'}",
            &a
        ));
        assert!(eval_attrs(
            "@Request[r] ForAllOfAnyValues:StringEquals {'a', 'b'}",
            &a
        ));
        assert!(!eval_attrs(
            "@Request[r] ForAnyOfAllValues:StringEquals {'a', 'b'}",
            &a
        ));
        assert!(!eval_attrs(
            "@Request[r] ForAllOfAllValues:StringEquals {'a', 'b'}",
            &a
        ));
        assert!(eval_attrs(
            "@Request[r] ForAllOfAllValues:StringNotEquals {'a', 'c'}",
            &a
        ));
    }

    #[test]
    fn missing_attributes_make_comparisons_false_even_negated_ones() {
        assert!(!eval_attrs("@Request[absent] StringNotEquals 'x'", &[]));
        assert!(eval_attrs("NOT @Request[absent] StringEquals 'x'", &[]));
    }

    #[test]
    fn resource_and_principal_attributes_resolve_by_short_name() {
        let tags = BTreeMap::from([("Project".to_owned(), "Cascade".to_owned())]);
        let c = "@Resource[Microsoft.Storage/storageAccounts/blobServices/containers/blobs/tags:Project<$key_case_sensitive$>] StringEquals 'Cascade'";
        assert!(eval_with(c, "a/b/read", &[], Some(&tags)));
        assert!(!eval_with(c, "a/b/read", &[], None));
        // A tag the snapshot defines is never overridden by the request.
        let forged = [("Microsoft.Storage/storageAccounts/blobServices/containers/blobs/tags:Project<$key_case_sensitive$>", "Cascade")];
        let other = BTreeMap::from([("Project".to_owned(), "Other".to_owned())]);
        assert!(!eval_with(c, "a/b/read", &forged, Some(&other)));
        // A property the snapshot cannot know comes from the request.
        let delete = "@Resource[Microsoft.Authorization/roleAssignments:RoleDefinitionId] ForAnyOfAnyValues:GuidEquals {53ca6127-db72-4b80-b1b0-d745d6d5456d}";
        assert!(eval_with(
            delete,
            "a/b/delete",
            &[(ROLE_KEY, "53ca6127-db72-4b80-b1b0-d745d6d5456d")],
            None
        ));
        assert!(eval_attrs("@Principal[Microsoft.Directory/CustomSecurityAttributes/Id:department] StringEquals 'sre'", &[]));
    }

    #[test]
    fn logic_operators_and_parentheses() {
        let a = [("x", "1")];
        assert!(eval_attrs(
            "(@Request[x] StringEquals '1') && (@Request[x] StringEquals '1')",
            &a
        ));
        assert!(eval_attrs(
            "(@Request[x] StringEquals '2') || (@Request[x] StringEquals '1')",
            &a
        ));
        assert!(eval_attrs("!(@Request[x] StringEquals '2')", &a));
        assert!(eval_attrs("((@Request[x] StringEquals '2') OR (@Request[x] StringEquals '3')) OR (@Request[x] StringEquals '1')", &a));
    }

    #[test]
    fn three_expressions_without_parentheses_are_rejected() {
        for c in [
            "@Request[a] StringEquals 'x' AND @Request[b] StringEquals 'y' OR @Request[c] StringEquals 'z'",
            "@Request[a] StringEquals 'x' AND @Request[b] StringEquals 'y' AND @Request[c] StringEquals 'z'",
        ] {
            let e = Condition::parse(c).unwrap_err();
            assert!(e.message.contains("parentheses"), "{e}");
            assert!(e.column > 50, "{e}");
        }
    }

    #[test]
    fn parse_errors_carry_a_column() {
        let cases = [
            ("", 1),
            ("@Request[x] StringEquals", 25),
            ("@Request[x] Frobnicates 'y'", 13),
            ("@Nowhere[x] StringEquals 'y'", 2),
            ("(@Request[x] StringEquals 'y'", 30),
            ("ActionMatches{'a/b/c'", 22),
            ("@Request[x] StringEquals 'y' extra", 30),
            ("@Request[x] StringEquals {'a','b'}", 35),
        ];
        for (c, column) in cases {
            let e = Condition::parse(c).unwrap_err();
            assert_eq!(e.column, column, "{c}: {e}");
        }
    }

    #[test]
    fn every_builtin_condition_of_the_embedded_catalog_parses() {
        let roles = crate::snapshot::catalog::builtin_roles().unwrap_or_else(|e| panic!("{e}"));
        let n = roles
            .iter()
            .flat_map(|r| &r.permissions)
            .filter(|b| b.condition.is_some())
            .count();
        assert!(n >= 6, "{n} conditions");
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn parser_never_panics(text in "\\PC{0,120}") {
            let _ = Condition::parse(&text);
        }

        #[test]
        fn parser_never_panics_on_condition_shaped_input(
            text in "[()!@{}',: ]{0,6}(ActionMatches|@Request\\[a\\]|StringEquals|AND|OR|NOT|ForAnyOfAnyValues:|'x'|\\{|\\}|\\(|\\)){0,12}"
        ) {
            let _ = Condition::parse(&text);
        }

        #[test]
        fn deep_nesting_is_an_error_not_a_crash(depth in 1usize..400) {
            let text = format!("{}@Request[a] StringEquals 'x'{}", "(".repeat(depth), ")".repeat(depth));
            let parsed = Condition::parse(&text);
            prop_assert_eq!(parsed.is_ok(), depth < 64);
        }
    }
}
