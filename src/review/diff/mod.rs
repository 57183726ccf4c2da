//! `rampart diff OLD NEW`: who gains and who loses which operations at
//! which scopes, between two snapshots.
//!
//! How it works, in three narrowing steps:
//!
//! 1. [`changes::affected`] compares the snapshots object by object and
//!    keeps the principals and keys anything changed for.
//! 2. For each of those, the *positions* are the scopes where its access
//!    can change from one scope to the next: the scopes of assignments and
//!    denies that reach it (in either snapshot), its agent's managed scopes,
//!    the root, and every subscription and management group when the
//!    hierarchy moved. Below a position, down to the next, access is the
//!    same as just below the position, so each position is compared at the
//!    scope itself and just below it.
//! 3. At a position, the engine resolves a [`Holding`] in each snapshot;
//!    the holdings are compared as sets of pattern terms (what is gained
//!    and lost, with where it comes from) and, for precision, by the
//!    decision of every operation of the [`changes::Universe`] that a
//!    changed term takes.
//!
//! A change equal to the one inherited from the position above is left
//! out; [`DiffReport::change_at`] reads the result back for any scope.

mod changes;
pub mod report;
pub mod text;

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use crate::engine::Verdict;
use crate::model::{principal_key, Scope};
use crate::snapshot::{Anchor, CompiledSnapshot, NodeId};

use super::access::{read_operations, Holding, Outcome, Source, Subject, Term};
use super::patterns::{disjoint, includes};
pub use report::{
    Coverage, DecisionOutcome, Delta, DiffReport, OperationChange, OperationChangeKind,
    PrincipalDiff, ScopeChange, TermChange, TermKind, Via,
};
use report::{Effect, SnapshotRef, Summary};

/// Compares two snapshots.
pub fn diff(old: &CompiledSnapshot, new: &CompiledSnapshot) -> DiffReport {
    let affected = changes::affected(old, new);
    let universe = changes::Universe::of(&old.tenant, &new.tenant);
    let context = Context {
        old,
        new,
        universe,
        hierarchy_changed: affected.hierarchy_changed,
        scope_only_old: scope_only_denies(old),
        scope_only_new: scope_only_denies(new),
    };
    let mut principals: Vec<PrincipalDiff> = affected
        .subjects
        .iter()
        .filter_map(|id| subject_diff(&context, id))
        .collect();
    let universe = context.universe;
    principals.sort_by(|a, b| a.principal.cmp(&b.principal));
    let agents = changes::agents(&old.tenant, &new.tenant);
    let condition_inputs = changes::condition_inputs(old, new);

    let mut summary = Summary {
        control_operations: universe.control.len(),
        data_operations: universe.data.len(),
        ..Summary::default()
    };
    for p in &principals {
        summary.principals_gaining += usize::from(p.gains);
        summary.principals_losing += usize::from(p.losses);
        for o in p.changes.iter().flat_map(|c| &c.delta.operations) {
            summary.operations_gained += usize::from(o.change == OperationChangeKind::Gain);
            summary.operations_lost += usize::from(o.change == OperationChangeKind::Loss);
        }
    }
    summary.agents_gaining_autonomy = agents
        .iter()
        .filter(|a| a.changes.iter().any(|c| c.effect == Effect::Gain))
        .count();
    let gained = summary.principals_gaining > 0
        || summary.agents_gaining_autonomy > 0
        || condition_inputs.iter().any(|c| c.may_affect);
    DiffReport {
        schema: report::SCHEMA,
        old: snapshot_ref(old),
        new: snapshot_ref(new),
        gained,
        summary,
        principals,
        agents,
        condition_inputs,
    }
}

/// What every subject's comparison reads.
struct Context<'s> {
    old: &'s CompiledSnapshot,
    new: &'s CompiledSnapshot,
    universe: changes::Universe,
    hierarchy_changed: bool,
    /// Scopes (as nodes) holding a deny with `doNotApplyToChildScopes`: only
    /// there do a scope and the scopes below it differ.
    scope_only_old: HashSet<NodeId>,
    scope_only_new: HashSet<NodeId>,
}

fn scope_only_denies(s: &CompiledSnapshot) -> HashSet<NodeId> {
    s.tenant
        .deny_assignments
        .iter()
        .zip(s.deny_node.iter())
        .filter(|(d, _)| d.do_not_apply_to_child_scopes)
        .map(|(_, &n)| n)
        .collect()
}

fn snapshot_ref(s: &CompiledSnapshot) -> SnapshotRef {
    SnapshotRef {
        source: s.info.source.clone(),
        revision: s.info.revision.clone(),
        sha256: s.info.content_sha256.clone(),
    }
}

/// One principal's or key's changes; `None` when nothing about it changed.
fn subject_diff(cx: &Context<'_>, id: &str) -> Option<PrincipalDiff> {
    let (old, new, universe) = (cx.old, cx.new, &cx.universe);
    let (so, sn) = (Subject::find(old, id), Subject::find(new, id));
    let presence = match (so, sn) {
        (Subject::Unknown, Subject::Unknown) => return None,
        (Subject::Unknown, _) => "added",
        (_, Subject::Unknown) => "removed",
        _ => "kept",
    };
    // First the change at each position (most are empty: most positions
    // of a principal an unrelated change reached are untouched)...
    let positions = positions(old, so, new, sn, cx.hierarchy_changed);
    let mut compared: Vec<(&Scope, Delta, Delta)> = Vec::with_capacity(positions.len());
    for scope in positions.values() {
        let scope: &Scope = scope;
        let (at_old, below_old) = anchors(old, scope);
        let (at_new, below_new) = anchors(new, scope);
        let h_old = Holding::resolve(old, so, at_old);
        let h_new = Holding::resolve(new, sn, at_new);
        let at = compare(&h_old, &h_new, universe);
        let same_below = (at_old == below_old || !cx.scope_only_old.contains(&at_old.node))
            && (at_new == below_new || !cx.scope_only_new.contains(&at_new.node));
        let under = if same_below {
            at.clone()
        } else {
            let h_old = Holding::resolve(old, so, below_old);
            let h_new = Holding::resolve(new, sn, below_new);
            compare(&h_old, &h_new, universe)
        };
        compared.push((scope, at, under));
    }
    let mut changes = Vec::new();
    if compared
        .iter()
        .any(|(_, at, under)| !at.is_empty() || !under.is_empty())
    {
        // ...then, ancestors first, each stated unless it is what the
        // position above already states.
        let mut ordered: Vec<(Vec<String>, &Scope, Delta, Delta)> = compared
            .into_iter()
            .map(|(scope, at, under)| (new.tenant.hierarchy.ancestor_keys(scope), scope, at, under))
            .collect();
        ordered.sort_by(|a, b| {
            a.0.len()
                .cmp(&b.0.len())
                .then_with(|| a.1.key().cmp(b.1.key()))
        });
        let empty = Delta::default();
        let mut below: HashMap<String, Delta> = HashMap::new();
        for (keys, scope, at, under) in ordered {
            let inherited = keys[1..]
                .iter()
                .find_map(|k| below.get(k))
                .unwrap_or(&empty);
            let (emit_at, emit_below) = (at != *inherited, under != *inherited);
            let text = scope.as_str().to_owned();
            if emit_at && emit_below && at == under {
                changes.push(ScopeChange {
                    scope: text,
                    coverage: Coverage::ScopeAndBelow,
                    delta: at,
                });
            } else {
                if emit_at {
                    changes.push(ScopeChange {
                        scope: text.clone(),
                        coverage: Coverage::ScopeOnly,
                        delta: at,
                    });
                }
                if emit_below {
                    changes.push(ScopeChange {
                        scope: text,
                        coverage: Coverage::BelowOnly,
                        delta: under.clone(),
                    });
                }
            }
            below.insert(scope.key().to_owned(), under);
        }
    }

    let (joined, left) = memberships(old, so, new, sn);
    if changes.is_empty() && presence == "kept" && joined.is_empty() && left.is_empty() {
        return None;
    }
    let (kind, display_name, principal) = describe(new, sn)
        .or_else(|| describe(old, so))
        .unwrap_or_else(|| ("Unknown".into(), None, id.to_owned()));
    Some(PrincipalDiff {
        principal,
        kind,
        display_name,
        presence,
        groups_joined: joined,
        groups_left: left,
        gains: changes.iter().any(|c| c.delta.gains()),
        losses: changes.iter().any(|c| c.delta.losses()),
        changes,
    })
}

/// The anchor of `scope` itself and of the scopes just below it that the
/// snapshot does not name.
fn anchors(snapshot: &CompiledSnapshot, scope: &Scope) -> (Anchor, Anchor) {
    let at = snapshot.anchor(scope);
    (
        at,
        Anchor {
            node: at.node,
            exact: false,
        },
    )
}

/// Kind, display name and id as written.
fn describe(s: &CompiledSnapshot, subject: Subject) -> Option<(String, Option<String>, String)> {
    match subject {
        Subject::Principal(p) => {
            let p = &s.tenant.principals[p];
            Some((
                p.kind.as_str().to_owned(),
                p.display_name.clone(),
                p.id.clone(),
            ))
        }
        Subject::Key(k) => Some((
            "AccessKey".to_owned(),
            None,
            s.tenant.access_keys[k].id.clone(),
        )),
        Subject::Unknown => None,
    }
}

/// Groups named in `memberOf` in the new snapshot and not the old, and the
/// reverse.
fn memberships(
    old: &CompiledSnapshot,
    so: Subject,
    new: &CompiledSnapshot,
    sn: Subject,
) -> (Vec<String>, Vec<String>) {
    let direct = |s: &CompiledSnapshot, subject: Subject| -> BTreeMap<String, String> {
        match subject {
            Subject::Principal(p) => s.tenant.principals[p]
                .member_of
                .iter()
                .map(|&g| {
                    let id = &s.tenant.principals[g].id;
                    (principal_key(id).into_owned(), id.clone())
                })
                .collect(),
            _ => BTreeMap::new(),
        }
    };
    let (a, b) = (direct(old, so), direct(new, sn));
    let joined = b
        .iter()
        .filter(|(k, _)| !a.contains_key(*k))
        .map(|(_, v)| v.clone())
        .collect();
    let left = a
        .iter()
        .filter(|(k, _)| !b.contains_key(*k))
        .map(|(_, v)| v.clone())
        .collect();
    (joined, left)
}

/// The scopes where a subject's access may differ from the scope above:
/// see the module documentation.
fn positions<'s>(
    old: &'s CompiledSnapshot,
    so: Subject,
    new: &'s CompiledSnapshot,
    sn: Subject,
    hierarchy_changed: bool,
) -> HashMap<Cow<'s, str>, Cow<'s, Scope>, foldhash::fast::RandomState> {
    let mut out: HashMap<Cow<'s, str>, Cow<'s, Scope>, _> = HashMap::default();
    out.insert(Cow::Borrowed("/"), Cow::Owned(Scope::root()));
    let mut add = |scope: &'s Scope| {
        out.entry(Cow::Borrowed(scope.key()))
            .or_insert(Cow::Borrowed(scope));
    };
    for (s, subject) in [(old, so), (new, sn)] {
        let t = &s.tenant;
        match subject {
            Subject::Principal(p) => {
                let members = std::iter::once(p).chain(s.groups[p].iter().copied());
                for m in members {
                    for &a in s.assignments_of[m].iter() {
                        add(&t.role_assignments[a].scope);
                    }
                    for &d in s.denies_of[m].iter() {
                        add(&t.deny_assignments[d].scope);
                    }
                }
                for &d in s.everyone_denies.iter() {
                    add(&t.deny_assignments[d].scope);
                }
                if let Some(agent) = s.agent_of[p] {
                    for scope in &t.agents[agent].managed_scopes {
                        add(scope);
                    }
                }
            }
            Subject::Key(k) => add(&t.access_keys[k].resource),
            Subject::Unknown => {}
        }
    }
    if hierarchy_changed {
        for s in [old, new] {
            for (key, text) in changes::hierarchy_scopes(&s.tenant) {
                if !out.contains_key(key.as_str()) {
                    if let Ok(scope) = Scope::parse(&text) {
                        out.insert(Cow::Owned(key), Cow::Owned(scope));
                    }
                }
            }
        }
    }
    out
}

/// A term as compared: plane, pattern, subtracted patterns (lowercase,
/// sorted), conditions, and whether only its reads count.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct TermKey {
    data: bool,
    pattern: String,
    minus: Vec<String>,
    conditions: Vec<String>,
    read_only: bool,
}

impl TermKey {
    fn of(term: &Term<'_>, read_only: bool) -> TermKey {
        let mut minus: Vec<String> = term
            .minus
            .iter()
            .map(|m| m.as_str().to_ascii_lowercase())
            .collect();
        minus.sort_unstable();
        minus.dedup();
        TermKey {
            data: term.data,
            pattern: term.pattern.as_str().to_ascii_lowercase(),
            minus,
            conditions: term.conditions.iter().map(|c| (*c).to_owned()).collect(),
            read_only,
        }
    }
}

/// Terms with the same key, merged: one stands for the patterns, all give
/// their sources.
struct Merged<'h, 's> {
    key: TermKey,
    term: &'h Term<'s>,
    sources: Vec<&'h Term<'s>>,
}

fn merge<'h, 's>(terms: &'h [Term<'s>], read_only: bool) -> Vec<Merged<'h, 's>> {
    let mut by_key: BTreeMap<TermKey, Merged<'h, 's>> = BTreeMap::new();
    for t in terms {
        // A term of reads only is the same whether or not writes count.
        let read_only = read_only && !includes(read_operations(), t.pattern);
        let key = TermKey::of(t, read_only);
        by_key
            .entry(key.clone())
            .or_insert_with(|| Merged {
                key,
                term: t,
                sources: Vec::new(),
            })
            .sources
            .push(t);
    }
    by_key.into_values().collect()
}

/// What takes effect: grants and denies when the gate is open (for an
/// agent in Review mode, only the reads of its grants), an access key's
/// grant when it applies, nothing otherwise.
fn effective<'h, 's>(h: &'h Holding<'s>) -> (Vec<Merged<'h, 's>>, Vec<Merged<'h, 's>>) {
    use super::access::Gate;
    use crate::model::ExecutionMode;
    match h.gate {
        Gate::Open { agent } => {
            let reads = agent == Some(ExecutionMode::Review);
            (merge(&h.grants, reads), merge(&h.denies, false))
        }
        Gate::Key { .. } => (merge(&h.grants, false), Vec::new()),
        Gate::Unknown | Gate::OutOfAgentScope => (Vec::new(), Vec::new()),
    }
}

/// Whether every operation `small` takes, `big` takes too (under no more
/// conditions, on the same plane). Safe: may answer no to a true inclusion.
fn subsumes(big: &Merged<'_, '_>, small: &Merged<'_, '_>) -> bool {
    let (b, s) = (&big.key, &small.key);
    let reads = read_operations();
    // Only reads count in `small`: for an agent in Review mode, or because
    // its pattern names nothing else.
    let small_reads = s.read_only || includes(reads, small.term.pattern);
    b.data == s.data
        && (b.conditions.is_empty() || b.conditions == s.conditions)
        && (!b.read_only || small_reads)
        && (includes(big.term.pattern, small.term.pattern)
            || (small_reads && includes(big.term.pattern, reads)))
        && big.term.minus.iter().all(|m| {
            disjoint(small.term.pattern, m)
                || small.term.minus.iter().any(|sm| includes(sm, m))
                || (small_reads && disjoint(m, reads))
        })
}

/// Whether a deny may take an operation a grant takes. Safe: may answer
/// yes where they cannot meet.
fn meets(grant: &Merged<'_, '_>, deny: &Merged<'_, '_>) -> bool {
    let (g, d) = (grant.term, deny.term);
    g.data == d.data
        && !disjoint(g.pattern, d.pattern)
        && !g.minus.iter().any(|m| includes(m, d.pattern))
        && !d.minus.iter().any(|m| includes(m, g.pattern))
        && (!grant.key.read_only || !disjoint(d.pattern, read_operations()))
}

/// ASCII case-insensitive order of two strings, without allocating.
fn ci_cmp(a: &str, b: &str) -> Ordering {
    if a.len() == b.len() && a.eq_ignore_ascii_case(b) {
        return Ordering::Equal;
    }
    a.bytes()
        .map(|c| c.to_ascii_lowercase())
        .cmp(b.bytes().map(|c| c.to_ascii_lowercase()))
}

/// An order of terms that agrees with their keys' equality, without
/// building keys: the fast check that most holdings did not change.
fn term_cmp(a: &Term<'_>, b: &Term<'_>) -> Ordering {
    a.data
        .cmp(&b.data)
        .then_with(|| ci_cmp(a.pattern.as_str(), b.pattern.as_str()))
        .then_with(|| a.minus.len().cmp(&b.minus.len()))
        .then_with(|| {
            a.minus
                .iter()
                .zip(&b.minus)
                .map(|(x, y)| ci_cmp(x.as_str(), y.as_str()))
                .find(|o| o.is_ne())
                .unwrap_or(Ordering::Equal)
        })
        .then_with(|| a.conditions.cmp(&b.conditions))
}

/// Whether two term lists hold the same terms (a "no" may be wrong: the
/// full comparison follows it).
fn same_terms(a: &[Term<'_>], b: &[Term<'_>]) -> bool {
    // Usually the same terms come in the same order.
    if a.len() == b.len() && a.iter().zip(b).all(|(p, q)| term_cmp(p, q).is_eq()) {
        return true;
    }
    let (x, y) = (sorted_terms(a), sorted_terms(b));
    x.len() == y.len() && x.iter().zip(&y).all(|(p, q)| term_cmp(p, q).is_eq())
}

fn sorted_terms<'h, 's>(terms: &'h [Term<'s>]) -> Vec<&'h Term<'s>> {
    let mut v: Vec<&Term<'_>> = terms.iter().collect();
    v.sort_by(|x, y| term_cmp(x, y));
    v.dedup_by(|x, y| term_cmp(x, y).is_eq());
    v
}

/// How access changed from one holding to the other.
fn compare(old: &Holding<'_>, new: &Holding<'_>, universe: &changes::Universe) -> Delta {
    if old.gate == new.gate
        && same_terms(&old.grants, &new.grants)
        && same_terms(&old.denies, &new.denies)
    {
        return Delta::default();
    }
    let raw = |terms: &[Term<'_>]| -> BTreeSet<TermKey> {
        terms.iter().map(|t| TermKey::of(t, false)).collect()
    };
    let (grants_old, grants_new) = (raw(&old.grants), raw(&new.grants));
    let (denies_old, denies_new) = (raw(&old.denies), raw(&new.denies));
    let gate_changed = old.gate != new.gate;
    if !gate_changed && grants_old == grants_new && denies_old == denies_new {
        return Delta::default();
    }
    let (eg_old, ed_old) = effective(old);
    let (eg_new, ed_new) = effective(new);

    let mut gains = Vec::new();
    let mut losses = Vec::new();
    // Granted now and not before, unless denied whole.
    for t in &eg_new {
        if !eg_old.iter().any(|o| subsumes(o, t)) && !ed_new.iter().any(|d| subsumes(d, t)) {
            gains.push(term_change(t, grant_kind(t)));
        }
    }
    for t in &eg_old {
        if !eg_new.iter().any(|n| subsumes(n, t)) && !ed_old.iter().any(|d| subsumes(d, t)) {
            losses.push(term_change(t, grant_kind(t)));
        }
    }
    // A deny lifted from something still granted; a new deny on something
    // granted before.
    for d in &ed_old {
        if !ed_new.iter().any(|n| subsumes(n, d)) && eg_new.iter().any(|g| meets(g, d)) {
            gains.push(term_change(d, TermKind::Deny));
        }
    }
    for d in &ed_new {
        if !ed_old.iter().any(|o| subsumes(o, d)) && eg_old.iter().any(|g| meets(g, d)) {
            losses.push(term_change(d, TermKind::Deny));
        }
    }

    // Named operations: those a changed term takes, or, when the gate or
    // the denies changed, any granted one.
    let changed = |terms: &[Term<'_>], other: &BTreeSet<TermKey>| -> Vec<usize> {
        (0..terms.len())
            .filter(|&i| !other.contains(&TermKey::of(&terms[i], false)))
            .collect()
    };
    let new_grants = changed(&new.grants, &grants_old);
    let old_grants = changed(&old.grants, &grants_new);
    let old_denies = changed(&old.denies, &denies_new);
    let new_denies = changed(&new.denies, &denies_old);
    let denies_changed = !old_denies.is_empty() || !new_denies.is_empty();
    let mut operations = Vec::new();
    for (data, ops) in [(false, &universe.control), (true, &universe.data)] {
        let takes = |t: &Term<'_>| t.data == data;
        for (op, read_only) in ops.iter() {
            let op = op.as_str();
            let covers = |terms: &[Term<'_>], picked: &[usize]| {
                picked
                    .iter()
                    .any(|&i| takes(&terms[i]) && terms[i].covers(op))
            };
            let any = |terms: &[Term<'_>]| terms.iter().any(|t| takes(t) && t.covers(op));
            let touched = covers(&new.grants, &new_grants)
                || covers(&old.grants, &old_grants)
                || ((gate_changed
                    || (denies_changed
                        && (covers(&old.denies, &old_denies)
                            || covers(&new.denies, &new_denies))))
                    && (any(&old.grants) || any(&new.grants)));
            if !touched {
                continue;
            }
            let (o, n) = (
                old.outcome(op, data, *read_only),
                new.outcome(op, data, *read_only),
            );
            let Some(change) = classify(&o, &n) else {
                continue;
            };
            let mut because: Vec<Via> = Vec::new();
            let pick = |terms: &[Term<'_>], picked: &[usize], out: &mut Vec<Via>| {
                for &i in picked {
                    if takes(&terms[i]) && terms[i].covers(op) {
                        out.push(via(&terms[i]));
                    }
                }
            };
            if change.is_gain() {
                pick(&new.grants, &new_grants, &mut because);
                pick(&old.denies, &old_denies, &mut because);
            }
            if change.is_loss() || change == OperationChangeKind::ConditionChange {
                pick(&old.grants, &old_grants, &mut because);
                pick(&new.denies, &new_denies, &mut because);
            }
            if because.is_empty() {
                // The gate moved: what grants it on the side that allows.
                let side = if change.is_gain() { new } else { old };
                let all: Vec<usize> = (0..side.grants.len()).collect();
                pick(&side.grants, &all, &mut because);
            }
            because.sort();
            because.dedup();
            operations.push(OperationChange {
                operation: op.to_owned(),
                data_action: data,
                change,
                old: outcome(&o),
                new: outcome(&n),
                because,
            });
        }
    }
    Delta {
        gains,
        losses,
        operations,
    }
}

fn grant_kind(t: &Merged<'_, '_>) -> TermKind {
    match t.term.source {
        Source::AccessKey(_) => TermKind::AccessKey,
        _ => TermKind::Grant,
    }
}

fn classify(old: &Outcome, new: &Outcome) -> Option<OperationChangeKind> {
    let (a, b) = (old.verdict == Verdict::Allow, new.verdict == Verdict::Allow);
    match (a, b) {
        (false, true) => Some(OperationChangeKind::Gain),
        (true, false) => Some(OperationChangeKind::Loss),
        (true, true) => None,
        (false, false) => match (old.allow_if.is_empty(), new.allow_if.is_empty()) {
            (true, true) => None,
            (true, false) => Some(OperationChangeKind::ConditionalGain),
            (false, true) => Some(OperationChangeKind::ConditionalLoss),
            (false, false) => {
                (old.allow_if != new.allow_if).then_some(OperationChangeKind::ConditionChange)
            }
        },
    }
}

fn outcome(o: &Outcome) -> DecisionOutcome {
    DecisionOutcome {
        decision: o.verdict.as_str(),
        reason: o.reason.as_str(),
        allow_if: o.allow_if.clone(),
    }
}

fn term_change(t: &Merged<'_, '_>, kind: TermKind) -> TermChange {
    let mut sources: Vec<Via> = t.sources.iter().map(|s| via(s)).collect();
    sources.sort();
    sources.dedup();
    TermChange {
        kind,
        data_action: t.term.data,
        pattern: t.term.pattern.as_str().to_owned(),
        minus: t.term.minus.iter().map(|m| m.as_str().to_owned()).collect(),
        conditions: t.term.conditions.iter().map(|c| (*c).to_owned()).collect(),
        read_only: t.key.read_only,
        via: sources,
    }
}

fn via(t: &Term<'_>) -> Via {
    let mut v = Via {
        assignment: None,
        role: None,
        role_id: None,
        group: None,
        agent: None,
        deny_assignment: None,
        access_key: None,
        scope: String::new(),
    };
    match t.source {
        Source::Assignment {
            assignment,
            role,
            group,
            agent,
        } => {
            v.assignment = Some(assignment.id.clone());
            v.role = Some(role.role_name.clone());
            v.role_id = Some(role.id.clone());
            v.group = group.map(str::to_owned);
            v.agent = agent.map(str::to_owned);
            v.scope = assignment.scope.as_str().to_owned();
        }
        Source::Deny(d) => {
            v.deny_assignment = Some(d.id.clone());
            v.scope = d.scope.as_str().to_owned();
        }
        Source::AccessKey(k) => {
            v.access_key = Some(k.id.clone());
            v.scope = k.resource.as_str().to_owned();
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> CompiledSnapshot {
        crate::snapshot::load_str(text, "test").unwrap_or_else(|e| panic!("{e}"))
    }

    const RG: &str = "/subscriptions/s1/resourceGroups/rg";
    const VM: &str =
        "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm";

    fn base(extra_assignment: &str, denies: &str) -> String {
        format!(
            "principals:\n  - {{ id: alice, type: User }}\nroleAssignments:\n  - {{ id: ra-blob, principal: alice, role: Foundry Agent Consumer, scope: '{VM}' }}\n{extra_assignment}denyAssignments:\n{denies}"
        )
    }

    fn contributor() -> String {
        format!("  - {{ id: ra-new, principal: alice, role: Contributor, scope: '{RG}' }}\n")
    }

    fn scope(text: &str) -> Scope {
        Scope::parse(text).unwrap_or_else(|e| panic!("{e}"))
    }

    fn alice(report: &DiffReport) -> &PrincipalDiff {
        report
            .principals
            .iter()
            .find(|p| p.principal == "alice")
            .unwrap_or_else(|| panic!("{report:#?}"))
    }

    #[test]
    fn a_change_inherited_unchanged_below_is_stated_once() {
        let (old, new) = (
            load(&base("", "  []\n")),
            load(&base(&contributor(), "  []\n")),
        );
        let report = diff(&old, &new);
        let changes = &alice(&report).changes;
        // The data-plane assignment at the VM adds a position; the change
        // there is the one inherited from the resource group, so it is
        // left out.
        assert_eq!(changes.len(), 1, "{changes:#?}");
        assert_eq!(changes[0].scope, RG);
        assert_eq!(changes[0].coverage, Coverage::ScopeAndBelow);
        let at_vm = report.change_at("alice", &scope(VM), &new.tenant.hierarchy);
        assert_eq!(at_vm.map(|c| c.scope.as_str()), Some(RG));
        assert!(report
            .change_at("alice", &scope("/subscriptions/s1"), &new.tenant.hierarchy)
            .is_none());
        assert!(report.gained);
    }

    #[test]
    fn a_scope_where_nothing_changes_under_a_change_is_stated() {
        let deny = format!("  - {{ id: d, principals: [alice], scope: '{VM}', actions: ['*'] }}\n");
        let (old, new) = (load(&base("", &deny)), load(&base(&contributor(), &deny)));
        let report = diff(&old, &new);
        let at_vm = report.change_at("alice", &scope(VM), &new.tenant.hierarchy);
        let at_vm = at_vm.unwrap_or_else(|| panic!("{report:#?}"));
        assert_eq!(at_vm.scope, VM);
        assert!(at_vm.delta.is_empty(), "{at_vm:#?}");
    }

    #[test]
    fn a_deny_kept_to_its_own_scope_splits_the_coverage() {
        let deny = |only: bool| {
            format!("  - {{ id: d, principals: [alice], scope: '{RG}', doNotApplyToChildScopes: {only}, actions: ['*/delete'] }}\n")
        };
        let (old, new) = (
            load(&base(&contributor(), &deny(false))),
            load(&base(&contributor(), &deny(true))),
        );
        let report = diff(&old, &new);
        let changes = &alice(&report).changes;
        let below = changes
            .iter()
            .find(|c| c.scope == RG && c.coverage == Coverage::BelowOnly);
        let below = below.unwrap_or_else(|| panic!("{changes:#?}"));
        assert_eq!(below.delta.gains[0].kind, TermKind::Deny);
        assert!(!changes
            .iter()
            .any(|c| c.coverage != Coverage::BelowOnly && c.scope == RG));
        let at_rg = report.change_at("alice", &scope(RG), &new.tenant.hierarchy);
        assert!(at_rg.is_none(), "{at_rg:#?}");
    }

    #[test]
    fn a_loss_alone_is_not_a_gain() {
        let (old, new) = (
            load(&base(&contributor(), "  []\n")),
            load(&base("", "  []\n")),
        );
        let report = diff(&old, &new);
        assert!(!report.gained, "{report:#?}");
        let p = alice(&report);
        assert!(p.losses && !p.gains);
        assert!(report.summary.operations_lost > 0);
        assert_eq!(report.summary.operations_gained, 0);
    }

    #[test]
    fn redundant_grants_are_no_gain() {
        let owner =
            format!("  - {{ id: ra-owner, principal: alice, role: Owner, scope: '{RG}' }}\n");
        let both = format!("{owner}{}", contributor());
        let report = diff(
            &load(&base(&owner, "  []\n")),
            &load(&base(&both, "  []\n")),
        );
        assert!(!report.gained, "{report:#?}");
        assert!(report.principals.is_empty(), "{report:#?}");
    }

    #[test]
    fn the_text_names_principal_scope_pattern_operation_and_source() {
        let report = diff(
            &load(&base("", "  []\n")),
            &load(&base(&contributor(), "  []\n")),
        );
        let text = text::render(&report);
        assert!(text.contains("\nalice (User)\n"), "{text}");
        assert!(text.contains(&format!("  at {RG} and below:\n")), "{text}");
        assert!(
            text.contains("    + gains * minus Microsoft.Authorization/*/Delete"),
            "{text}"
        );
        assert!(
            text.contains("(role Contributor, assignment ra-new)"),
            "{text}"
        );
        assert!(text.contains(": DENY -> ALLOW"), "{text}");
        assert!(text.contains("more named operations"), "{text}");
        assert!(
            text.ends_with("result: something is gained (exit code 1)\n"),
            "{text}"
        );
    }
}
