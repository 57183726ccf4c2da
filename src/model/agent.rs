//! Agents (docs/agents-and-elevation.md#agents): a managed identity working inside managed scopes at a
//! permission level and in an execution mode.

use std::time::Duration;

use super::action::ActionPattern;
use super::scope::Scope;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
pub enum PermissionLevel {
    Reader,
    Privileged,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
pub enum ExecutionMode {
    Review,
    Auto,
}

impl PermissionLevel {
    /// As the snapshot spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            PermissionLevel::Reader => "Reader",
            PermissionLevel::Privileged => "Privileged",
        }
    }
}

impl ExecutionMode {
    /// As the snapshot spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            ExecutionMode::Review => "Review",
            ExecutionMode::Auto => "Auto",
        }
    }
}

/// An agent of the snapshot; `principal` indexes the snapshot's principals
/// and `privileged_role` its role definitions.
#[derive(Debug, Clone)]
pub struct Agent {
    pub id: String,
    pub principal: usize,
    pub resource: Scope,
    pub managed_scopes: Vec<Scope>,
    pub permission_level: PermissionLevel,
    pub execution_mode: ExecutionMode,
    pub elevation: ElevationSettings,
}

/// How elevation works for one agent (docs/agents-and-elevation.md). Validated here; acted on by
/// the elevation broker.
#[derive(Debug, Clone)]
pub struct ElevationSettings {
    pub default_duration: Duration,
    pub max_duration: Duration,
    pub max_wait: Duration,
    /// What an approver must hold at the agent's resource to interact with it.
    pub interact_action: String,
    /// The role a `Privileged` agent holds on its managed scopes.
    pub privileged_role: usize,
    pub auto_approve: Vec<AutoApproveRule>,
    /// Who must approve which elevations; the first that matches applies,
    /// none matching means one approver (docs/agents-and-elevation.md#approval-policies).
    pub approval_policies: Vec<ApprovalPolicy>,
    /// New elevations the agent may file a minute (a third of it at once).
    pub max_requests_per_minute: u32,
}

/// What an agent's `elevation` section means where it is silent.
impl ElevationSettings {
    /// How long a grant lasts when the request names no duration.
    pub const DEFAULT_DURATION: Duration = Duration::from_secs(15 * 60);
    /// The longest grant an agent may ask for.
    pub const DEFAULT_MAX_DURATION: Duration = Duration::from_secs(8 * 3600);
    /// The longest a request may wait for a decision (it caps the caller's timeout).
    pub const DEFAULT_MAX_WAIT: Duration = Duration::from_secs(3600);
    /// The operation an approver must hold on the agent's resource.
    pub const DEFAULT_INTERACT_ACTION: &'static str = "Microsoft.App/agents/write";
    /// The role a `Privileged` agent holds on its managed scopes.
    pub const DEFAULT_PRIVILEGED_ROLE: &'static str = "Contributor";
    /// New elevations an agent may file a minute.
    pub const DEFAULT_MAX_REQUESTS_PER_MINUTE: u32 = 60;
    /// The highest `maxRequestsPerMinute` accepted.
    pub const MAX_REQUESTS_PER_MINUTE: u32 = 10_000;
    /// The most distinct approvers an approval policy may require.
    pub const MAX_REQUIRED_APPROVERS: u32 = 10;
}

impl PermissionLevel {
    /// The built-in role a `Reader` agent holds on its managed scopes.
    pub const READER_ROLE: &'static str = "Reader";
}

#[derive(Debug, Clone)]
pub struct AutoApproveRule {
    pub actions: Vec<ActionPattern>,
    pub scopes: Vec<Scope>,
    pub data_action: Option<bool>,
    pub read_only: Option<bool>,
    pub max_duration: Option<Duration>,
    pub on_behalf_of: usize,
    pub max_per_hour: Option<u32>,
    /// Evaluated on every elevation and recorded, never acting: a rule
    /// measured before it is trusted.
    pub shadow: bool,
}

/// An approval policy: for the elevations it matches (operation pattern,
/// scope, plane), how many distinct approvers, which ones, whether a ticket
/// is required, and the longest grant.
#[derive(Debug, Clone)]
pub struct ApprovalPolicy {
    pub actions: Vec<ActionPattern>,
    /// Empty: any scope of the agent.
    pub scopes: Vec<Scope>,
    pub data_action: Option<bool>,
    /// Distinct approvers needed, each passing the approver rules.
    pub required: u32,
    /// Principals (users or groups, by index) who may count; empty: anyone
    /// passing the approver rules.
    pub approvers: Vec<usize>,
    pub require_ticket: bool,
    pub max_duration: Option<Duration>,
}

/// Writes a duration the way [`parse_duration`] reads it (`1h30m`, `90s`),
/// for logs and messages; below a second, in milliseconds (`250ms`).
pub fn duration_text(d: Duration) -> String {
    let total = d.as_secs();
    if total == 0 {
        return match d.as_millis() {
            0 => "0s".to_owned(),
            ms => format!("{ms}ms"),
        };
    }
    let mut out = String::new();
    let mut rest = total;
    for (unit, seconds) in [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] {
        let n = rest / seconds;
        if n > 0 {
            out.push_str(&format!("{n}{unit}"));
            rest %= seconds;
        }
    }
    out
}

/// Parses durations such as `15m`, `8h`, `1h30m`, `90s`, `2d`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("is empty".into());
    }
    let mut total: u64 = 0;
    let mut number: Option<u64> = None;
    for c in text.chars() {
        if let Some(d) = c.to_digit(10) {
            let n = number.unwrap_or(0);
            number = Some(
                n.checked_mul(10)
                    .and_then(|n| n.checked_add(u64::from(d)))
                    .ok_or("is too large")?,
            );
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => {
                return Err(format!(
                    "has unknown unit '{c}' (use s, m, h or d, e.g. 15m)"
                ))
            }
        };
        let n = number.take().ok_or("has a unit without a number")?;
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or("is too large")?;
    }
    if number.is_some() {
        return Err("ends with a number without a unit (use s, m, h or d, e.g. 15m)".into());
    }
    Ok(Duration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(172_800)));
        assert!(parse_duration("15").is_err());
        assert!(parse_duration("m").is_err());
        assert!(parse_duration("15x").is_err());
        assert!(parse_duration("99999999999999999999h").is_err());
    }

    #[test]
    fn durations_are_written_as_they_are_read() {
        for text in ["45s", "15m", "1h30m", "2d", "1d1h1m1s"] {
            let d = parse_duration(text).expect("a duration");
            assert_eq!(duration_text(d), text);
        }
        assert_eq!(duration_text(Duration::from_secs(90)), "1m30s");
        assert_eq!(duration_text(Duration::from_millis(250)), "250ms");
        assert_eq!(duration_text(Duration::ZERO), "0s");
    }
}
