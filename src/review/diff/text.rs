//! The diff for people: one line per change, grouped by principal, with
//! where each gain or loss comes from.

use std::fmt::Write as _;

use super::report::{
    AgentChange, Coverage, DiffReport, Effect, OperationChange, OperationChangeKind, PrincipalDiff,
    ScopeChange, TermChange, TermKind, Via,
};

/// Operations listed per scope before the rest are counted (JSON lists all).
pub const OPERATIONS_SHOWN: usize = 10;

pub fn render(r: &DiffReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "rampart diff: {} (revision {}) -> {} (revision {})",
        r.old.source, r.old.revision, r.new.source, r.new.revision
    );
    for p in &r.principals {
        out.push('\n');
        principal(&mut out, p);
    }
    for a in &r.agents {
        out.push('\n');
        let _ = writeln!(
            out,
            "agent {} (identity {}), {}",
            a.agent, a.principal, a.presence
        );
        for c in &a.changes {
            let _ = writeln!(out, "  {}", agent_change(c));
        }
    }
    if !r.condition_inputs.is_empty() {
        out.push_str("\ncondition inputs\n");
        for c in &r.condition_inputs {
            let what = if c.kind == "resourceTags" {
                "tags of resource"
            } else {
                "attributes of principal"
            };
            let effect = if c.may_affect {
                "+ (a condition reads these; it may now pass)"
            } else {
                "~ (no condition reads these)"
            };
            let _ = writeln!(
                out,
                "  {} {what} {}: {} -> {}",
                &effect[..1],
                c.target,
                map_text(&c.old),
                map_text(&c.new),
            );
            let _ = writeln!(out, "    {}", &effect[2..]);
        }
    }
    out.push('\n');
    let s = &r.summary;
    let _ = writeln!(
        out,
        "summary: {} gaining access, {} losing access, {} gaining autonomy; {} named operations newly ALLOW and {} no longer, counted per principal and scope (of {} control and {} data operations named in roles and denies)",
        count(s.principals_gaining, "principal"),
        count(s.principals_losing, "principal"),
        count(s.agents_gaining_autonomy, "agent"),
        s.operations_gained,
        s.operations_lost,
        s.control_operations,
        s.data_operations,
    );
    let _ = writeln!(
        out,
        "{}",
        if r.gained {
            "result: something is gained (exit code 1)"
        } else {
            "result: nothing is gained (exit code 0)"
        }
    );
    out
}

fn count(n: usize, what: &str) -> String {
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
}

fn map_text(m: &std::collections::BTreeMap<String, String>) -> String {
    if m.is_empty() {
        return "{}".into();
    }
    let pairs: Vec<String> = m.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    format!("{{{}}}", pairs.join(", "))
}

fn principal(out: &mut String, p: &PrincipalDiff) {
    let mut head = format!("{} ({}", p.principal, p.kind);
    if let Some(name) = &p.display_name {
        let _ = write!(head, ", {name}");
    }
    head.push(')');
    match p.presence {
        "added" => head.push_str(", new"),
        "removed" => head.push_str(", removed"),
        _ => {}
    }
    for g in &p.groups_joined {
        let _ = write!(head, "; joins group {g}");
    }
    for g in &p.groups_left {
        let _ = write!(head, "; leaves group {g}");
    }
    let _ = writeln!(out, "{head}");
    for c in &p.changes {
        scope_change(out, c);
    }
}

fn place(c: &ScopeChange) -> String {
    match c.coverage {
        Coverage::ScopeAndBelow => format!("at {} and below", c.scope),
        Coverage::ScopeOnly => format!("at {} only", c.scope),
        Coverage::BelowOnly => format!("below {}", c.scope),
    }
}

fn scope_change(out: &mut String, c: &ScopeChange) {
    let at = place(c);
    if c.delta.is_empty() {
        let _ = writeln!(out, "  {at}: no change (unlike the scope above)");
        return;
    }
    let _ = writeln!(out, "  {at}:");
    for t in &c.delta.gains {
        let _ = writeln!(out, "    + {}", term(t, true));
    }
    for t in &c.delta.losses {
        let _ = writeln!(out, "    - {}", term(t, false));
    }
    // Where every term has one source, operations need not repeat it.
    let mut sources: Vec<&Via> = c
        .delta
        .gains
        .iter()
        .chain(&c.delta.losses)
        .flat_map(|t| &t.via)
        .collect();
    sources.sort();
    sources.dedup();
    let show_because = sources.len() != 1;
    // Writes, deletes and actions first: they are what a reviewer looks for.
    let mut ops: Vec<&OperationChange> = c.delta.operations.iter().collect();
    ops.sort_by_key(|o| {
        let op = o.operation.to_ascii_lowercase();
        (op.ends_with("/read"), !op.ends_with("/delete"))
    });
    for o in ops.iter().take(OPERATIONS_SHOWN) {
        let _ = writeln!(out, "    {}", operation(o, show_because));
    }
    if ops.len() > OPERATIONS_SHOWN {
        let _ = writeln!(
            out,
            "    … and {} more named operations (--format json lists them all)",
            ops.len() - OPERATIONS_SHOWN
        );
    }
}

/// `Microsoft.Compute/* minus Microsoft.Compute/*/delete`, with its plane,
/// conditions and read-only restriction.
fn set_text(t: &TermChange) -> String {
    let mut s = String::new();
    if t.data_action {
        s.push_str("data actions ");
    }
    s.push_str(&t.pattern);
    if !t.minus.is_empty() {
        let _ = write!(s, " minus {}", t.minus.join(", "));
    }
    if t.read_only {
        s.push_str(" (its reads: the agent is in Review mode)");
    }
    if !t.conditions.is_empty() {
        let _ = write!(s, " when {}", t.conditions.join(" AND "));
    }
    s
}

fn term(t: &TermChange, gain: bool) -> String {
    let set = set_text(t);
    let sources = vias(&t.via);
    match (t.kind, gain) {
        (TermKind::Grant, true) if !t.conditions.is_empty() => {
            format!("gains conditional access: {set} ({sources})")
        }
        (TermKind::Grant, false) if !t.conditions.is_empty() => {
            format!("loses conditional access: {set} ({sources})")
        }
        (TermKind::Grant | TermKind::AccessKey, true) => format!("gains {set} ({sources})"),
        (TermKind::Grant | TermKind::AccessKey, false) => format!("loses {set} ({sources})"),
        (TermKind::Deny, true) => format!("no longer denied {set} ({sources} no longer applies)"),
        (TermKind::Deny, false) => format!("newly denied {set} ({sources})"),
    }
}

fn operation(o: &OperationChange, show_because: bool) -> String {
    let op = if o.data_action {
        format!("data action {}", o.operation)
    } else {
        o.operation.clone()
    };
    let because = if show_because && !o.because.is_empty() {
        format!("; {}", vias(&o.because))
    } else {
        String::new()
    };
    let (old, new) = (&o.old, &o.new);
    match o.change {
        OperationChangeKind::Gain if !old.allow_if.is_empty() => format!(
            "+ {op}: ALLOW only when {} -> ALLOW{because}",
            old.allow_if.join(" OR ")
        ),
        OperationChangeKind::Gain => {
            format!("+ {op}: {} -> ALLOW{because}", old.decision)
        }
        OperationChangeKind::Loss if !new.allow_if.is_empty() => format!(
            "- {op}: ALLOW -> ALLOW only when {}, else {} ({}){because}",
            new.allow_if.join(" OR "),
            new.decision,
            new.reason
        ),
        OperationChangeKind::Loss => {
            format!(
                "- {op}: ALLOW -> {} ({}){because}",
                new.decision, new.reason
            )
        }
        OperationChangeKind::ConditionalGain => format!(
            "+ {op}: {} -> ALLOW when {}{because}",
            old.decision,
            new.allow_if.join(" OR ")
        ),
        OperationChangeKind::ConditionalLoss => format!(
            "- {op}: ALLOW when {} -> {} ({}){because}",
            old.allow_if.join(" OR "),
            new.decision,
            new.reason
        ),
        OperationChangeKind::ConditionChange => format!(
            "+ {op}: ALLOW when {} -> ALLOW when {}{because}",
            old.allow_if.join(" OR "),
            new.allow_if.join(" OR ")
        ),
    }
}

fn vias(list: &[Via]) -> String {
    let parts: Vec<String> = list.iter().map(via).collect();
    parts.join("; ")
}

fn via(v: &Via) -> String {
    if let Some(d) = &v.deny_assignment {
        return format!("deny assignment {d} at {}", v.scope);
    }
    if let Some(k) = &v.access_key {
        return format!("access key {k}");
    }
    let mut parts = Vec::new();
    if let Some(g) = &v.group {
        parts.push(format!("via group {g}"));
    }
    if let Some(r) = &v.role {
        parts.push(format!("role {r}"));
    }
    if let Some(a) = &v.agent {
        parts.push(format!("derived from agent {a}"));
    }
    if let Some(a) = &v.assignment {
        parts.push(format!("assignment {a}"));
    }
    parts.join(", ")
}

fn agent_change(c: &AgentChange) -> String {
    let sign = match c.effect {
        Effect::Gain => '+',
        Effect::Loss => '-',
        Effect::Change => '~',
    };
    let value = |v: &Option<serde_json::Value>| match v {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => String::new(),
    };
    let text = match (&c.old, &c.new) {
        (None, Some(_)) if c.field == "agent" => "added".to_owned(),
        (Some(_), None) if c.field == "agent" => "removed".to_owned(),
        (None, Some(_)) => format!("{} adds {}", c.field, value(&c.new)),
        (Some(_), None) => format!("{} drops {}", c.field, value(&c.old)),
        _ => format!("{}: {} -> {}", c.field, value(&c.old), value(&c.new)),
    };
    let note = match (c.field.as_str(), c.effect) {
        ("executionMode", Effect::Gain) => {
            " (writes it holds no longer wait for approval; auto-approve rules apply)"
        }
        ("elevation.autoApprove", Effect::Gain) => " (answers for humans in Auto mode)",
        ("permissionLevel", Effect::Gain) => " (holds its privileged role on its managed scopes)",
        ("managedScopes", Effect::Gain) => " (may act there)",
        ("elevation.approvalPolicies", Effect::Gain) => {
            " (its elevations need fewer or other approvers)"
        }
        _ => "",
    };
    format!("{sign} {text}{note}")
}
