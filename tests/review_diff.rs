//! `rampart diff` as a library: on random small tenants and random changes
//! to them, what the diff says about every (principal, operation, scope)
//! agrees with the engine's decisions on both snapshots; and the changes an
//! attacker would try to slip through (a grant through a group, a deny
//! removed, a managed scope widened, …) are all reported as gains.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

use rampart::engine::{Loaded, Request, Verdict};
use rampart::model::{check_operation, Scope};
use rampart::review::access::{Holding, Subject};
use rampart::review::diff::{self, DiffReport, OperationChangeKind};
use rampart::snapshot::{self, CompiledSnapshot};

/// Operations probed, each also named literally by a role of every
/// generated tenant so it belongs to the diff's universe.
const OPS: [(&str, bool); 11] = [
    ("Microsoft.Compute/virtualMachines/read", false),
    ("Microsoft.Compute/virtualMachines/write", false),
    ("Microsoft.Compute/virtualMachines/delete", false),
    ("Microsoft.Compute/virtualMachines/restart/action", false),
    ("Microsoft.Compute/disks/read", false),
    ("Microsoft.Storage/storageAccounts/read", false),
    ("Microsoft.Storage/storageAccounts/delete", false),
    ("Microsoft.Authorization/roleAssignments/write", false),
    (
        "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read",
        true,
    ),
    (
        "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/write",
        true,
    ),
    ("Microsoft.Compute/virtualMachines/login/action", true),
];

const PATTERNS: [&str; 14] = [
    "*",
    "*/read",
    "*/delete",
    "*/write",
    "Microsoft.Compute/*",
    "Microsoft.Compute/virtualMachines/*",
    "Microsoft.Compute/*/read",
    "Microsoft.Storage/*",
    "Microsoft.Storage/storageAccounts/blobServices/*",
    "Microsoft.Compute/virtualMachines/delete",
    "Microsoft.Compute/virtualMachines/restart/action",
    "Microsoft.Storage/storageAccounts/read",
    "Microsoft.Authorization/*",
    "*/action",
];

const S1: &str = "/subscriptions/s1";
const S2: &str = "/subscriptions/s2";
const RG1: &str = "/subscriptions/s1/resourceGroups/rg1";
const RG2: &str = "/subscriptions/s1/resourceGroups/rg2";
const RG3: &str = "/subscriptions/s2/resourceGroups/rg3";
const VM1: &str =
    "/subscriptions/s1/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachines/vm1";
const ST1: &str =
    "/subscriptions/s2/resourceGroups/rg3/providers/Microsoft.Storage/storageAccounts/st1";
const MG1: &str = "/providers/Microsoft.Management/managementGroups/mg1";

/// Scopes assignments and denies are made at.
const SCOPES: [&str; 9] = ["/", MG1, S1, S2, RG1, RG2, RG3, VM1, ST1];
const RGS: [&str; 3] = [RG1, RG2, RG3];

/// Scopes probed: the named ones and some no snapshot names.
const PROBES: [&str; 13] = [
    "/",
    MG1,
    S1,
    S2,
    RG1,
    RG2,
    RG3,
    VM1,
    ST1,
    "/subscriptions/s1/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachines/vm9",
    "/subscriptions/s9",
    "/subscriptions/s2/resourceGroups/rg3/providers/Microsoft.Storage/storageAccounts/st1/blobServices/default",
    "/subscriptions/s1/resourceGroups/rg2/providers/Microsoft.Compute/disks/d1",
];

const USERS: [&str; 4] = ["u1", "u2", "u3", "mi1"];
const GROUPS: [&str; 2] = ["g1", "g2"];
const PRINCIPALS: [&str; 6] = ["u1", "u2", "u3", "mi1", "g1", "g2"];
/// Who is probed: every principal, the access key, and a stranger.
const PROBE_PRINCIPALS: [&str; 8] = ["u1", "u2", "u3", "mi1", "g1", "g2", "k1", "ghost"];

const CONDITIONS: [&str; 4] = [
    "@Request[env] StringEquals 'prod'",
    "@Resource[env] StringEquals 'prod'",
    "(!(ActionMatches{'Microsoft.Compute/virtualMachines/delete'})) OR (@Request[ok] StringEquals 'yes')",
    "@Principal[dept] StringEquals 'sre'",
];
const BUILTIN: [&str; 3] = ["Reader", "Contributor", "Owner"];

/// xorshift: deterministic from a seed, so a failure names its case.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[self.below(from.len())]
    }
}

#[derive(Debug, Clone, Default)]
struct Block {
    actions: Vec<&'static str>,
    not_actions: Vec<&'static str>,
    data: Vec<&'static str>,
    not_data: Vec<&'static str>,
    condition: Option<usize>,
}

#[derive(Debug, Clone)]
struct Assignment {
    principal: &'static str,
    /// A custom role index, or a built-in's name.
    role: Result<usize, &'static str>,
    scope: &'static str,
    condition: Option<usize>,
}

#[derive(Debug, Clone)]
struct Deny {
    everyone: bool,
    principals: Vec<&'static str>,
    excludes: Vec<&'static str>,
    scope: &'static str,
    no_children: bool,
    actions: Vec<&'static str>,
    not_actions: Vec<&'static str>,
    data: Vec<&'static str>,
}

#[derive(Debug, Clone)]
struct Agent {
    scopes: Vec<&'static str>,
    privileged: bool,
    auto: bool,
}

#[derive(Debug, Clone)]
struct Model {
    conditions: bool,
    s1_in_mg: bool,
    s2_in_mg: bool,
    g1_in_g2: bool,
    member_of: Vec<(&'static str, &'static str)>,
    roles: Vec<Vec<Block>>,
    assignments: Vec<Assignment>,
    denies: Vec<Deny>,
    agent: Option<Agent>,
    key: bool,
    st1_disabled: bool,
}

fn patterns(rng: &mut Rng, max: usize) -> Vec<&'static str> {
    (0..rng.below(max + 1))
        .map(|_| rng.pick(&PATTERNS))
        .collect()
}

impl Model {
    fn random(rng: &mut Rng, conditions: bool) -> Model {
        let mut m = Model {
            conditions,
            s1_in_mg: rng.chance(50),
            s2_in_mg: rng.chance(30),
            g1_in_g2: rng.chance(50),
            member_of: Vec::new(),
            roles: Vec::new(),
            assignments: Vec::new(),
            denies: Vec::new(),
            agent: None,
            key: rng.chance(60),
            st1_disabled: rng.chance(40),
        };
        for u in USERS {
            for g in GROUPS {
                if rng.chance(35) {
                    m.member_of.push((u, g));
                }
            }
        }
        for _ in 0..1 + rng.below(3) {
            let role = (0..1 + rng.below(2)).map(|_| m.block(rng)).collect();
            m.roles.push(role);
        }
        for _ in 0..rng.below(7) {
            let a = m.assignment(rng);
            m.assignments.push(a);
        }
        for _ in 0..rng.below(3) {
            let d = m.deny(rng);
            m.denies.push(d);
        }
        if rng.chance(70) {
            m.agent = Some(Agent {
                scopes: vec![rng.pick(&RGS)],
                privileged: rng.chance(50),
                auto: rng.chance(50),
            });
        }
        m
    }

    fn condition(&self, rng: &mut Rng) -> Option<usize> {
        (self.conditions && rng.chance(30)).then(|| rng.below(CONDITIONS.len()))
    }

    fn block(&self, rng: &mut Rng) -> Block {
        let mut b = Block {
            actions: patterns(rng, 2),
            not_actions: patterns(rng, 1),
            data: patterns(rng, 1),
            not_data: patterns(rng, 1),
            condition: self.condition(rng),
        };
        if b.actions.is_empty() && b.data.is_empty() {
            b.actions.push(rng.pick(&PATTERNS));
        }
        b
    }

    fn assignment(&self, rng: &mut Rng) -> Assignment {
        let role = if rng.chance(60) {
            Ok(rng.below(self.roles.len()))
        } else {
            Err(rng.pick(&BUILTIN))
        };
        Assignment {
            principal: rng.pick(&PRINCIPALS),
            role,
            scope: rng.pick(&SCOPES),
            condition: self.condition(rng),
        }
    }

    fn deny(&self, rng: &mut Rng) -> Deny {
        let everyone = rng.chance(40);
        let principals = if everyone {
            Vec::new()
        } else {
            vec![rng.pick(&PRINCIPALS)]
        };
        let mut d = Deny {
            everyone,
            principals,
            excludes: if rng.chance(30) {
                vec![rng.pick(&PRINCIPALS)]
            } else {
                Vec::new()
            },
            scope: rng.pick(&SCOPES),
            no_children: rng.chance(25),
            actions: patterns(rng, 1),
            not_actions: patterns(rng, 1),
            data: patterns(rng, 1),
        };
        if d.actions.is_empty() && d.data.is_empty() {
            d.actions.push(rng.pick(&PATTERNS));
        }
        d
    }

    /// One random change, of the kinds a snapshot edit makes.
    fn mutate(&mut self, rng: &mut Rng) {
        match rng.below(14) {
            0 => {
                let a = self.assignment(rng);
                self.assignments.push(a);
            }
            1 if !self.assignments.is_empty() => {
                let i = rng.below(self.assignments.len());
                self.assignments.remove(i);
            }
            2 => {
                let pair = (rng.pick(&USERS), rng.pick(&GROUPS));
                match self.member_of.iter().position(|&p| p == pair) {
                    Some(i) => {
                        self.member_of.remove(i);
                    }
                    None => self.member_of.push(pair),
                }
            }
            3 => {
                let d = self.deny(rng);
                self.denies.push(d);
            }
            4 if !self.denies.is_empty() => {
                let i = rng.below(self.denies.len());
                self.denies.remove(i);
            }
            5 if !self.denies.is_empty() => {
                let i = rng.below(self.denies.len());
                self.denies[i].no_children ^= true;
            }
            6 => {
                let r = rng.below(self.roles.len());
                let b = rng.below(self.roles[r].len());
                let block = self.block(rng);
                self.roles[r][b] = block;
            }
            7 => match &mut self.agent {
                Some(agent) => match rng.below(4) {
                    0 => agent.auto ^= true,
                    1 => agent.privileged ^= true,
                    2 => {
                        let rg = rng.pick(&RGS);
                        if !agent.scopes.contains(&rg) {
                            agent.scopes.push(rg);
                        } else if agent.scopes.len() > 1 {
                            agent.scopes.retain(|s| *s != rg);
                        }
                    }
                    _ => self.agent = None,
                },
                None => {
                    self.agent = Some(Agent {
                        scopes: vec![rng.pick(&RGS)],
                        privileged: rng.chance(50),
                        auto: rng.chance(50),
                    })
                }
            },
            8 => self.s1_in_mg ^= true,
            9 => self.st1_disabled ^= true,
            10 if !self.denies.is_empty() => {
                let i = rng.below(self.denies.len());
                let p = rng.pick(&PRINCIPALS);
                let excludes = &mut self.denies[i].excludes;
                match excludes.iter().position(|&x| x == p) {
                    Some(at) => {
                        excludes.remove(at);
                    }
                    None => excludes.push(p),
                }
            }
            11 => self.g1_in_g2 ^= true,
            12 if !self.assignments.is_empty() => {
                let i = rng.below(self.assignments.len());
                self.assignments[i].condition = self.condition(rng);
                self.assignments[i].scope = rng.pick(&SCOPES);
            }
            13 => self.key ^= true,
            _ => {}
        }
    }

    fn yaml(&self) -> String {
        let list = |v: &[&str]| -> String {
            let quoted: Vec<String> = v.iter().map(|p| format!("'{p}'")).collect();
            format!("[{}]", quoted.join(", "))
        };
        let mut y = String::from("managementGroups:\n  - id: mg1\nsubscriptions:\n");
        let _ = writeln!(
            y,
            "  - {{ id: s1{} }}",
            if self.s1_in_mg {
                ", managementGroup: mg1"
            } else {
                ""
            }
        );
        let _ = writeln!(
            y,
            "  - {{ id: s2{} }}",
            if self.s2_in_mg {
                ", managementGroup: mg1"
            } else {
                ""
            }
        );
        y.push_str("principals:\n");
        for u in USERS {
            let groups: Vec<&str> = self
                .member_of
                .iter()
                .filter(|p| p.0 == u)
                .map(|p| p.1)
                .collect();
            let kind = if u == "mi1" {
                "ManagedIdentity"
            } else {
                "User"
            };
            let attrs = if u == "u1" {
                ", attributes: { dept: sre }"
            } else {
                ""
            };
            let _ = writeln!(
                y,
                "  - {{ id: {u}, type: {kind}, memberOf: {}{attrs} }}",
                list(&groups)
            );
        }
        let _ = writeln!(
            y,
            "  - {{ id: g1, type: Group{} }}",
            if self.g1_in_g2 {
                ", memberOf: [g2]"
            } else {
                ""
            }
        );
        y.push_str("  - { id: g2, type: Group }\n");
        y.push_str("roleDefinitions:\n");
        // Names every probed operation, so each is in the universe.
        let control: Vec<&str> = OPS.iter().filter(|o| !o.1).map(|o| o.0).collect();
        let data: Vec<&str> = OPS.iter().filter(|o| o.1).map(|o| o.0).collect();
        let _ = writeln!(
            y,
            "  - {{ id: 00000000-0000-4000-8000-0000000000ff, roleName: Universe, assignableScopes: [/], permissions: [{{ actions: {}, dataActions: {} }}] }}",
            list(&control),
            list(&data)
        );
        for (r, blocks) in self.roles.iter().enumerate() {
            let _ = writeln!(
                y,
                "  - id: 00000000-0000-4000-8000-{r:012}\n    roleName: custom-{r}\n    assignableScopes: [/]\n    permissions:"
            );
            for b in blocks {
                let _ = write!(
                    y,
                    "      - {{ actions: {}, notActions: {}, dataActions: {}, notDataActions: {}",
                    list(&b.actions),
                    list(&b.not_actions),
                    list(&b.data),
                    list(&b.not_data)
                );
                if let Some(c) = b.condition {
                    let _ = write!(y, ", condition: \"{}\"", CONDITIONS[c]);
                }
                y.push_str(" }\n");
            }
        }
        y.push_str("roleAssignments:\n");
        for (i, a) in self.assignments.iter().enumerate() {
            let role = match a.role {
                Ok(r) => format!("custom-{r}"),
                Err(name) => name.to_owned(),
            };
            let _ = write!(
                y,
                "  - {{ id: ra-{i}, principal: {}, role: {role}, scope: '{}'",
                a.principal, a.scope
            );
            if let Some(c) = a.condition {
                let _ = write!(y, ", condition: \"{}\"", CONDITIONS[c]);
            }
            y.push_str(" }\n");
        }
        if self.assignments.is_empty() {
            y.push_str("  []\n");
        }
        y.push_str("denyAssignments:\n");
        for (i, d) in self.denies.iter().enumerate() {
            let target = if d.everyone {
                "everyone: true".to_owned()
            } else {
                format!("principals: {}", list(&d.principals))
            };
            let _ = writeln!(
                y,
                "  - {{ id: deny-{i}, {target}, excludePrincipals: {}, scope: '{}', doNotApplyToChildScopes: {}, actions: {}, notActions: {}, dataActions: {} }}",
                list(&d.excludes),
                d.scope,
                d.no_children,
                list(&d.actions),
                list(&d.not_actions),
                list(&d.data)
            );
        }
        if self.denies.is_empty() {
            y.push_str("  []\n");
        }
        let _ = writeln!(
            y,
            "resources:\n  - {{ scope: '{RG1}', tags: {{ env: prod }} }}\n  - {{ scope: '{VM1}', tags: {{ env: test }} }}\n  - {{ scope: '{ST1}', disableLocalAuth: {} }}",
            self.st1_disabled
        );
        if self.key {
            let _ = writeln!(y, "accessKeys:\n  - {{ id: k1, resource: '{ST1}' }}");
        }
        if let Some(a) = &self.agent {
            let _ = writeln!(
                y,
                "agents:\n  - id: ag\n    principal: mi1\n    resource: /subscriptions/s1/resourceGroups/rg2/providers/Microsoft.App/agents/ag\n    managedScopes: {}\n    permissionLevel: {}\n    executionMode: {}",
                list(&a.scopes),
                if a.privileged { "Privileged" } else { "Reader" },
                if a.auto { "Auto" } else { "Review" }
            );
        }
        y
    }
}

fn load(yaml: &str) -> CompiledSnapshot {
    snapshot::load_str(yaml, "generated").unwrap_or_else(|e| panic!("{e}\n{yaml}"))
}

fn attribute_sets() -> [BTreeMap<String, String>; 2] {
    [
        BTreeMap::new(),
        BTreeMap::from([
            ("env".to_owned(), "prod".to_owned()),
            ("ok".to_owned(), "yes".to_owned()),
        ]),
    ]
}

fn allowed(
    loaded: &Loaded,
    principal: &str,
    op: &str,
    data: bool,
    scope: &str,
    attributes: &BTreeMap<String, String>,
) -> bool {
    let request = Request {
        principal_id: principal,
        action: op,
        scope,
        data_action: data,
        attributes,
        explain: false,
        dry_run: true,
    };
    loaded
        .decide(&request)
        .unwrap_or_else(|e| panic!("{principal} {op} {scope}: {e}"))
        .verdict
        == Verdict::Allow
}

/// Every probed (principal, operation, scope): the diff's claim against
/// both snapshots' decisions. With `exact` (no conditions anywhere), a
/// reported gain is exactly "not ALLOW before, ALLOW now" and a loss the
/// reverse; with conditions, each claim is checked under every attribute
/// set. The symbolic part must name a gain (or loss) wherever one happens,
/// and the holdings' own outcomes must agree with `decide`.
fn check(old_yaml: &str, new_yaml: &str, exact: bool) -> Result<(), TestCaseError> {
    let (old, new) = (load(old_yaml), load(new_yaml));
    let report = diff::diff(&old, &new);
    let (old, new) = (Loaded::new(old), Loaded::new(new));
    let attributes = attribute_sets();
    for principal in PROBE_PRINCIPALS {
        for probe in PROBES {
            let scope = Scope::parse(probe).unwrap_or_else(|e| panic!("{e}"));
            let change = report.change_at(principal, &scope, &new.snapshot.tenant.hierarchy);
            for (op, data) in OPS {
                let claimed = change.and_then(|c| {
                    c.delta
                        .operations
                        .iter()
                        .find(|o| o.operation.eq_ignore_ascii_case(op) && o.data_action == data)
                        .map(|o| o.change)
                });
                let mut before = Vec::new();
                let mut after = Vec::new();
                for a in &attributes {
                    before.push(allowed(&old, principal, op, data, probe, a));
                    after.push(allowed(&new, principal, op, data, probe, a));
                }
                let context = || {
                    format!("{principal} {op} (data {data}) at {probe}: claimed {claimed:?}, before {before:?}, after {after:?}\nchange: {change:#?}")
                };
                if exact {
                    let expected = match (before[0], after[0]) {
                        (false, true) => Some(OperationChangeKind::Gain),
                        (true, false) => Some(OperationChangeKind::Loss),
                        _ => None,
                    };
                    prop_assert_eq!(claimed, expected, "{}", context());
                } else {
                    for i in 0..attributes.len() {
                        if !before[i] && after[i] {
                            prop_assert!(claimed.is_some_and(|c| c.is_gain()), "{}", context());
                        }
                        if before[i] && !after[i] {
                            prop_assert!(
                                claimed
                                    .is_some_and(|c| c.is_loss()
                                        || c == OperationChangeKind::ConditionChange),
                                "{}",
                                context()
                            );
                        }
                    }
                    let all = |v: &[bool], want: bool| v.iter().all(|&x| x == want);
                    match claimed {
                        Some(OperationChangeKind::Gain) => {
                            prop_assert!(all(&after, true), "{}", context())
                        }
                        Some(OperationChangeKind::Loss) => {
                            prop_assert!(all(&before, true), "{}", context())
                        }
                        Some(OperationChangeKind::ConditionalGain) => {
                            prop_assert!(all(&before, false), "{}", context())
                        }
                        Some(OperationChangeKind::ConditionalLoss) => {
                            prop_assert!(all(&after, false), "{}", context())
                        }
                        None => prop_assert_eq!(&before, &after, "{}", context()),
                        Some(OperationChangeKind::ConditionChange) => {}
                    }
                }
                // The patterns name every gain and loss the operations show.
                if before.iter().zip(&after).any(|(b, a)| !b && *a) {
                    let symbolic = change.is_some_and(|c| !c.delta.gains.is_empty());
                    prop_assert!(symbolic, "no pattern gain for {}", context());
                }
                if before.iter().zip(&after).any(|(b, a)| *b && !a) {
                    let symbolic = change.is_some_and(|c| !c.delta.losses.is_empty());
                    prop_assert!(symbolic, "no pattern loss for {}", context());
                }
                agree(&old, principal, op, data, probe, &scope, &attributes)?;
                agree(&new, principal, op, data, probe, &scope, &attributes)?;
            }
        }
    }
    if report.summary.principals_gaining > 0 {
        prop_assert!(report.gained);
    }
    Ok(())
}

/// A holding's outcome is the engine's decision: the same verdict and
/// reason when no condition is involved; with conditions, the engine's
/// verdict is the outcome's or ALLOW.
fn agree(
    loaded: &Loaded,
    principal: &str,
    op: &str,
    data: bool,
    probe: &str,
    scope: &Scope,
    attributes: &[BTreeMap<String, String>],
) -> Result<(), TestCaseError> {
    let s = &loaded.snapshot;
    let holding = Holding::resolve(s, Subject::find(s, principal), s.anchor(scope));
    let read_only = check_operation(op).is_ok_and(|i| i.read_only);
    let outcome = holding.outcome(op, data, read_only);
    for a in attributes {
        let request = Request {
            principal_id: principal,
            action: op,
            scope: probe,
            data_action: data,
            attributes: a,
            explain: false,
            dry_run: true,
        };
        let d = loaded.decide(&request).unwrap_or_else(|e| panic!("{e}"));
        if !outcome.conditioned {
            prop_assert_eq!(
                (d.verdict, d.reason),
                (outcome.verdict, outcome.reason),
                "{} {} at {}",
                principal,
                op,
                probe
            );
        } else if outcome.allow_if.is_empty() {
            prop_assert_eq!(
                d.verdict,
                outcome.verdict,
                "{} {} at {}",
                principal,
                op,
                probe
            );
        } else {
            prop_assert!(
                d.verdict == outcome.verdict || d.verdict == Verdict::Allow,
                "{principal} {op} at {probe}: {:?} vs {outcome:?}",
                d.verdict
            );
        }
    }
    Ok(())
}

fn pair(seed: u64, conditions: bool, changes: usize) -> (String, String) {
    let mut rng = Rng::new(seed);
    let old = Model::random(&mut rng, conditions);
    let mut new = old.clone();
    for _ in 0..changes {
        new.mutate(&mut rng);
    }
    (old.yaml(), new.yaml())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// Without conditions, gains and losses are exactly the decisions that
    /// changed to and from ALLOW.
    #[test]
    fn diff_agrees_with_decisions(seed in any::<u64>(), changes in 1usize..5) {
        let (old, new) = pair(seed, false, changes);
        check(&old, &new, true)?;
    }

    /// With conditions, every claim holds under every attribute set tried.
    #[test]
    fn diff_agrees_with_conditioned_decisions(seed in any::<u64>(), changes in 1usize..5) {
        let (old, new) = pair(seed, true, changes);
        check(&old, &new, false)?;
    }

    /// Two unrelated tenants: everyone is affected, nothing is narrowed.
    #[test]
    fn diff_agrees_between_unrelated_tenants(a in any::<u64>(), b in any::<u64>()) {
        let old = Model::random(&mut Rng::new(a), false).yaml();
        let new = Model::random(&mut Rng::new(b), false).yaml();
        check(&old, &new, true)?;
    }
}

#[test]
fn an_unchanged_snapshot_diffs_to_nothing() {
    let (old, _) = pair(7, true, 0);
    let report = diff::diff(&load(&old), &load(&old));
    assert!(report.principals.is_empty(), "{report:#?}");
    assert!(report.agents.is_empty());
    assert!(!report.gained);
}

// ---- What an attacker would try to slip through ----

const BASE: &str = r#"
principals:
  - { id: alice, type: User }
  - { id: mallory, type: User }
  - { id: sre-oncall, type: Group }
  - { id: agent-mi, type: ManagedIdentity }
roleAssignments:
  - { id: ra-sre, principal: sre-oncall, role: Contributor, scope: /subscriptions/s1/resourceGroups/rg-app }
  - { id: ra-alice, principal: alice, role: Reader, scope: /subscriptions/s1 }
denyAssignments:
  - { id: deny-delete, everyone: true, excludePrincipals: [], scope: /subscriptions/s1/resourceGroups/rg-app, actions: ["*/delete"] }
resources:
  - { scope: /subscriptions/s1/resourceGroups/rg-data/providers/Microsoft.Storage/storageAccounts/st, disableLocalAuth: true }
accessKeys:
  - { id: key-st, resource: /subscriptions/s1/resourceGroups/rg-data/providers/Microsoft.Storage/storageAccounts/st }
agents:
  - id: ag
    principal: agent-mi
    resource: /subscriptions/s1/resourceGroups/rg-app/providers/Microsoft.App/agents/ag
    managedScopes: [/subscriptions/s1/resourceGroups/rg-app]
    permissionLevel: Reader
    executionMode: Review
"#;

const RG_APP: &str = "/subscriptions/s1/resourceGroups/rg-app";

fn attack(new: &str) -> DiffReport {
    diff::diff(&load(BASE), &load(new))
}

/// The report says `principal` gains `op` at `scope` (as an operation and
/// as a pattern), and exit code 1 follows.
fn assert_gain(report: &DiffReport, principal: &str, op: &str, data: bool, scope: &str) {
    assert!(report.gained, "{report:#?}");
    let scope = Scope::parse(scope).unwrap_or_else(|e| panic!("{e}"));
    let hierarchy = rampart::model::Hierarchy::default();
    let change = report
        .change_at(principal, &scope, &hierarchy)
        .unwrap_or_else(|| panic!("no change for {principal}: {report:#?}"));
    let gained = change.delta.operations.iter().any(|o| {
        o.operation.eq_ignore_ascii_case(op)
            && o.data_action == data
            && o.change == OperationChangeKind::Gain
    });
    assert!(gained, "{principal} should gain {op}: {change:#?}");
    assert!(!change.delta.gains.is_empty(), "{change:#?}");
    let p = report.principals.iter().find(|p| p.principal == principal);
    assert!(p.is_some_and(|p| p.gains));
}

#[test]
fn joining_a_privileged_group_is_a_gain() {
    let new = BASE.replace(
        "{ id: mallory, type: User }",
        "{ id: mallory, type: User, memberOf: [sre-oncall] }",
    );
    let report = attack(&new);
    assert_gain(
        &report,
        "mallory",
        "Microsoft.Compute/virtualMachines/write",
        false,
        RG_APP,
    );
    let mallory = report.principals.iter().find(|p| p.principal == "mallory");
    let mallory = mallory.unwrap_or_else(|| panic!("{report:#?}"));
    assert_eq!(mallory.groups_joined, ["sre-oncall"]);
    let via = &mallory.changes[0].delta.gains[0].via[0];
    assert_eq!(via.group.as_deref(), Some("sre-oncall"));
    assert_eq!(via.role.as_deref(), Some("Contributor"));
    // Nobody else changed.
    assert_eq!(report.principals.len(), 1, "{report:#?}");
}

#[test]
fn removing_a_deny_assignment_is_a_gain() {
    let new = BASE.replace(
        "  - { id: deny-delete, everyone: true, excludePrincipals: [], scope: /subscriptions/s1/resourceGroups/rg-app, actions: [\"*/delete\"] }\n",
        "  []\n",
    );
    let report = attack(&new);
    assert_gain(
        &report,
        "sre-oncall",
        "Microsoft.Compute/virtualMachines/delete",
        false,
        RG_APP,
    );
    let change = report
        .principals
        .iter()
        .find(|p| p.principal == "sre-oncall");
    let lifted = change.is_some_and(|p| {
        p.changes[0].delta.gains.iter().any(|t| {
            t.kind == diff::TermKind::Deny
                && t.via[0].deny_assignment.as_deref() == Some("deny-delete")
        })
    });
    assert!(lifted, "{report:#?}");
    // Alice reads only: lifting a delete deny gives her nothing.
    assert!(
        !report
            .principals
            .iter()
            .any(|p| p.principal == "alice" && p.gains),
        "{report:#?}"
    );
}

#[test]
fn excluding_someone_from_a_deny_is_a_gain() {
    let new = BASE.replace("excludePrincipals: []", "excludePrincipals: [sre-oncall]");
    assert_gain(
        &attack(&new),
        "sre-oncall",
        "Microsoft.Compute/virtualMachines/delete",
        false,
        RG_APP,
    );
}

#[test]
fn a_deny_narrowed_to_its_own_scope_is_a_gain_below_it() {
    let new = BASE.replace(
        "actions: [\"*/delete\"] }",
        "doNotApplyToChildScopes: true, actions: [\"*/delete\"] }",
    );
    let report = attack(&new);
    let vm = format!("{RG_APP}/providers/Microsoft.Compute/virtualMachines/vm1");
    assert_gain(
        &report,
        "sre-oncall",
        "Microsoft.Compute/virtualMachines/delete",
        false,
        &vm,
    );
    // At the resource group itself the deny still holds.
    let rg = Scope::parse(RG_APP).unwrap_or_else(|e| panic!("{e}"));
    let at_rg = report.change_at("sre-oncall", &rg, &rampart::model::Hierarchy::default());
    assert!(
        at_rg.is_none_or(|c| c.delta.operations.is_empty()),
        "{at_rg:#?}"
    );
}

#[test]
fn widening_an_agents_managed_scopes_is_a_gain() {
    let new = BASE.replace(
        "managedScopes: [/subscriptions/s1/resourceGroups/rg-app]",
        "managedScopes: [/subscriptions/s1/resourceGroups/rg-app, /subscriptions/s1/resourceGroups/rg-data]",
    );
    let report = attack(&new);
    assert_gain(
        &report,
        "agent-mi",
        "Microsoft.Storage/storageAccounts/read",
        false,
        "/subscriptions/s1/resourceGroups/rg-data",
    );
    let agent = report.agents.iter().find(|a| a.agent == "ag");
    let widened = agent.is_some_and(|a| {
        a.changes
            .iter()
            .any(|c| c.field == "managedScopes" && c.effect == diff::report::Effect::Gain)
    });
    assert!(widened, "{report:#?}");
}

#[test]
fn switching_an_agent_to_auto_or_adding_auto_approve_is_a_gain_of_autonomy() {
    let auto = BASE.replace("executionMode: Review", "executionMode: Auto");
    let report = attack(&auto);
    assert!(report.gained);
    assert_eq!(report.summary.agents_gaining_autonomy, 1);
    // A Reader agent's reads were allowed already: no access gain, only autonomy.
    assert!(!report.principals.iter().any(|p| p.gains), "{report:#?}");

    let privileged_auto = auto.replace("permissionLevel: Reader", "permissionLevel: Privileged");
    assert_gain(
        &attack(&privileged_auto),
        "agent-mi",
        "Microsoft.Compute/virtualMachines/write",
        false,
        RG_APP,
    );

    let rule = format!(
        "{BASE}    elevation:\n      autoApprove:\n        - {{ actions: ['Microsoft.Compute/virtualMachines/restart/action'], onBehalfOf: alice }}\n"
    );
    let report = attack(&rule);
    assert!(report.gained, "{report:#?}");
    let added = report.agents[0].changes.iter().any(|c| {
        c.field == "elevation.autoApprove"
            && c.effect == diff::report::Effect::Gain
            && c.old.is_none()
    });
    assert!(added, "{report:#?}");
}

#[test]
fn dropping_a_two_person_rule_is_a_gain_and_adding_one_is_not() {
    let strict = format!(
        "{BASE}    elevation:\n      approvalPolicies:\n        - {{ actions: ['Microsoft.Compute/*'], required: 2, approvers: [sre-oncall], requireTicket: true }}\n"
    );
    let added = diff::diff(&load(BASE), &load(&strict));
    assert!(!added.gained, "a stricter rule gains nothing: {added:#?}");
    let policy = added.agents.iter().flat_map(|a| &a.changes).find(|c| {
        c.field == "elevation.approvalPolicies" && c.effect == diff::report::Effect::Loss
    });
    let policy = policy.unwrap_or_else(|| panic!("the added policy is reported: {added:#?}"));
    assert_eq!(
        policy.new.as_ref().map(|p| p["required"].clone()),
        Some(2.into())
    );

    let dropped = diff::diff(&load(&strict), &load(BASE));
    assert!(dropped.gained, "{dropped:#?}");
    let weakened = dropped.agents.iter().flat_map(|a| &a.changes).any(|c| {
        c.field == "elevation.approvalPolicies"
            && c.effect == diff::report::Effect::Gain
            && c.new.is_none()
    });
    assert!(weakened, "{dropped:#?}");

    // One approver instead of two: the old rule goes, a weaker one comes.
    let single = strict.replace("required: 2", "required: 1");
    let changed = diff::diff(&load(&strict), &load(&single));
    let effects: Vec<_> = changed
        .agents
        .iter()
        .flat_map(|a| &a.changes)
        .filter(|c| c.field == "elevation.approvalPolicies")
        .map(|c| c.effect)
        .collect();
    assert_eq!(
        effects,
        [diff::report::Effect::Loss, diff::report::Effect::Gain],
        "{changed:#?}"
    );
    assert!(changed.gained);
}

#[test]
fn a_shadow_auto_approve_rule_gains_nothing_until_it_goes_live() {
    let shadow = format!(
        "{BASE}    elevation:\n      autoApprove:\n        - {{ actions: ['Microsoft.Compute/virtualMachines/restart/action'], onBehalfOf: alice, shadow: true }}\n"
    );
    let report = attack(&shadow);
    assert!(!report.gained, "{report:#?}");
    let live = shadow.replace(", shadow: true", "");
    let report = diff::diff(&load(&shadow), &load(&live));
    assert!(report.gained, "{report:#?}");
}

#[test]
fn widening_a_custom_role_reaches_its_holders() {
    let base = format!(
        "{BASE}roleDefinitions:\n  - {{ id: 00000000-0000-4000-8000-00000000abcd, roleName: Ops, assignableScopes: [/], permissions: [{{ actions: ['Microsoft.Compute/*'], notActions: ['Microsoft.Compute/*/delete'] }}] }}\n"
    )
    .replace("role: Reader, scope: /subscriptions/s1 }", "role: Ops, scope: /subscriptions/s1 }");
    let widened = base.replace(
        "notActions: ['Microsoft.Compute/*/delete']",
        "notActions: []",
    );
    let report = diff::diff(&load(&base), &load(&widened));
    assert!(report.gained);
    let alice = report.principals.iter().find(|p| p.principal == "alice");
    let alice = alice.unwrap_or_else(|| panic!("{report:#?}"));
    let term = &alice.changes[0].delta.gains[0];
    assert_eq!(term.pattern, "Microsoft.Compute/*");
    assert!(term.minus.is_empty());
    // What was held is inside what is held now: nothing is lost.
    assert!(alice.changes[0].delta.losses.is_empty(), "{report:#?}");
    assert!(!alice.losses);
}

#[test]
fn enabling_local_auth_gives_the_key_its_data_plane() {
    let new = BASE.replace("disableLocalAuth: true", "disableLocalAuth: false");
    let report = attack(&new);
    assert!(report.gained, "{report:#?}");
    let key = report.principals.iter().find(|p| p.principal == "key-st");
    let key = key.unwrap_or_else(|| panic!("{report:#?}"));
    assert_eq!(key.kind, "AccessKey");
    assert!(key.changes[0]
        .delta
        .gains
        .iter()
        .any(|t| t.kind == diff::TermKind::AccessKey));
}

#[test]
fn moving_a_subscription_under_a_management_group_reaches_through_it() {
    let base = format!("{BASE}managementGroups: [{{ id: mg }}]\nsubscriptions: [{{ id: s1 }}]\n")
        .replace(
            "  - { id: ra-alice, principal: alice, role: Reader, scope: /subscriptions/s1 }",
            "  - { id: ra-alice, principal: alice, role: Reader, scope: /subscriptions/s1 }\n  - { id: ra-mg, principal: mallory, role: Owner, scope: /providers/Microsoft.Management/managementGroups/mg }",
        );
    let moved = base.replace("[{ id: s1 }]", "[{ id: s1, managementGroup: mg }]");
    let (old, new) = (load(&base), load(&moved));
    let report = diff::diff(&old, &new);
    let vm = Scope::parse(&format!(
        "{RG_APP}/providers/Microsoft.Compute/virtualMachines/vm1"
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    let change = report.change_at("mallory", &vm, &new.tenant.hierarchy);
    let gained = change.is_some_and(|c| {
        !c.delta.gains.is_empty()
            && c.delta.operations.iter().any(|o| {
                o.operation == "Microsoft.Compute/virtualMachines/write"
                    && o.change == OperationChangeKind::Gain
            })
    });
    assert!(gained, "{report:#?}");
    assert!(report.gained);
}

#[test]
fn a_changed_condition_is_a_change_of_conditional_access() {
    let base = BASE.replace(
        "{ id: ra-alice, principal: alice, role: Reader, scope: /subscriptions/s1 }",
        "{ id: ra-alice, principal: alice, role: Reader, scope: /subscriptions/s1, condition: \"@Request[env] StringEquals 'test'\" }",
    );
    let loosened = base.replace("StringEquals 'test'", "StringLike '*'");
    let report = diff::diff(&load(&base), &load(&loosened));
    assert!(report.gained, "{report:#?}");
    let alice = report.principals.iter().find(|p| p.principal == "alice");
    let alice = alice.unwrap_or_else(|| panic!("{report:#?}"));
    let delta = &alice.changes[0].delta;
    assert_eq!(delta.gains[0].conditions, ["@Request[env] StringLike '*'"]);
    assert_eq!(
        delta.losses[0].conditions,
        ["@Request[env] StringEquals 'test'"]
    );
    assert!(delta
        .operations
        .iter()
        .all(|o| o.change == OperationChangeKind::ConditionChange));
}

#[test]
fn a_review_mode_agent_made_privileged_gains_autonomy_not_access() {
    // Its writes still wait for a human; its reads were allowed already.
    let new = BASE.replace("permissionLevel: Reader", "permissionLevel: Privileged");
    let report = attack(&new);
    assert!(report.gained, "{report:#?}");
    assert_eq!(report.summary.agents_gaining_autonomy, 1);
    let mi = report.principals.iter().find(|p| p.principal == "agent-mi");
    assert!(mi.is_none_or(|p| !p.gains && !p.losses), "{report:#?}");
}
