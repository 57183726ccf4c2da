//! The command line: flag definitions apart from the logic they configure.
//! `rampart` alone serves; `validate`, `check`, `diff` and `test` work offline on files;
//! `elevations` talks to a running server's approval channel. The serve
//! flags become opened resources in [`crate::daemon`].

pub mod elevations;
pub mod review;
pub mod run;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::engine::{Decision, Loaded, MatchKind, Request, Verdict};
use crate::snapshot::{self, CompiledSnapshot, SnapshotError};

#[derive(Debug, Parser)]
#[command(
    name = "rampart",
    version,
    about = "A gRPC authorization sidecar with Azure RBAC semantics",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the Authorizer and Admin APIs (the default).
    Serve(Box<ServeArgs>),
    /// Check a snapshot file and print every problem in it.
    Validate {
        /// The snapshot file (YAML or JSON).
        file: PathBuf,
    },
    /// Decide one request offline against a snapshot and explain it.
    Check(CheckArgs),
    /// Write a snapshot from `az role definition list` and `az role assignment list --all` output.
    Import(ImportArgs),
    /// List, watch, approve, deny and revoke on a running server's approval channel.
    Elevations(elevations::ElevationsArgs),
    /// Who gains and who loses which operations between two snapshots (exit 1 when anything is gained).
    Diff(review::DiffArgs),
    /// Run policy tests: requests with expected decisions, in YAML, against a snapshot.
    Test(review::TestArgs),
    /// Show a built-in role by id, name or earlier name (any case), list
    /// them all, or search them.
    Role(RoleArgs),
}

#[derive(Debug, Clone, Args)]
#[group(required = true, multiple = false)]
pub struct RoleArgs {
    /// A role id, name or earlier name, e.g. "Azure AI User".
    #[arg(value_name = "ID_OR_NAME")]
    pub reference: Option<String>,
    /// List every built-in role: id and name.
    #[arg(long)]
    pub list: bool,
    /// The built-in roles whose name, earlier names or description contain
    /// TEXT (any case) or, when TEXT is an operation such as
    /// Microsoft.Compute/virtualMachines/restart/action, that allow it.
    #[arg(long, value_name = "TEXT")]
    pub search: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct ImportArgs {
    /// JSON printed by `az role definition list`.
    #[arg(long)]
    pub role_definitions: Option<PathBuf>,
    /// JSON printed by `az role assignment list --all`.
    #[arg(long)]
    pub role_assignments: Option<PathBuf>,
    /// Where to write the snapshot (default: standard output).
    #[arg(long, short)]
    pub output: Option<PathBuf>,
}

/// How log lines on stderr are written.
#[derive(Debug, Clone, Copy, Default, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object a line, for log collectors.
    Json,
}

/// The flags of `rampart serve` (also accepted with no subcommand).
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Snapshot file (YAML or JSON); without it the embedded demo is served.
    #[arg(long, env = "RAMPART_SNAPSHOT")]
    pub snapshot: Option<PathBuf>,
    /// Address of the Authorizer listener: IP:PORT or HOST:PORT (a name is
    /// resolved once, at start).
    #[arg(long, default_value = "127.0.0.1:50051", value_parser = parse_listen)]
    pub listen: SocketAddr,
    /// Also serve the Authorizer on this Unix socket.
    #[arg(long)]
    pub uds: Option<PathBuf>,
    /// Address of the admin listener (Approvals and Admin).
    #[arg(long, default_value = "127.0.0.1:50052", value_parser = parse_listen)]
    pub admin_listen: SocketAddr,
    /// Address of a listener serving only grpc.health.v1, for kubelet probes.
    #[arg(long, value_parser = parse_listen)]
    pub health_listen: Option<SocketAddr>,
    /// The most connections the Authorizer holds at once (on TCP, and
    /// again on --uds); more are closed at once.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,
    /// The most connections the admin listener holds at once.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_admin_connections: u32,
    /// The most connections the health listener holds at once.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_health_connections: u32,
    /// How long a client has to complete the TLS handshake, or to send its
    /// first bytes on a plaintext listener.
    #[arg(long, default_value = "10s", value_parser = parse_positive_duration)]
    pub handshake_timeout: std::time::Duration,
    /// Close a connection that has had no call in flight for this long
    /// (clients reconnect when they need to).
    #[arg(long, default_value = "5m", value_parser = parse_positive_duration)]
    pub idle_timeout: std::time::Duration,
    /// Send an HTTP/2 PING after this much silence on a connection…
    #[arg(long, default_value = "60s", value_parser = parse_positive_duration)]
    pub keepalive_interval: std::time::Duration,
    /// …and close the connection when its answer takes longer than this.
    #[arg(long, default_value = "20s", value_parser = parse_positive_duration)]
    pub keepalive_timeout: std::time::Duration,
    /// Append the audit trail (elevations, grants, sampled decisions) to
    /// this file as JSON lines.
    #[arg(long)]
    pub audit_log: Option<PathBuf>,
    /// The share of decisions written to --audit-log, from 0 to 1.
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate)]
    pub audit_decisions_sample: f64,
    /// Serve Prometheus metrics (GET /metrics) on this address.
    #[arg(long, value_parser = parse_listen)]
    pub metrics_listen: Option<SocketAddr>,
    /// Directory for durable state: elevations, grants, the audit trail
    /// (created if missing). Without it, that state lives in memory only.
    #[arg(long, env = "RAMPART_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// PostgreSQL shared by every replica, instead of --state-dir:
    /// postgres://USER:PASSWORD@HOST:5432/DATABASE?sslmode=verify-full.
    /// Replicas on one database share one approval queue and honour each
    /// other's grants; rampart creates and migrates its tables.
    #[arg(
        long,
        env = "RAMPART_STATE_DB",
        conflicts_with = "state_dir",
        hide_env_values = true
    )]
    pub state_db: Option<String>,
    /// CA certificates (PEM) that sign the --state-db server's certificate
    /// (or `sslrootcert` in the URL); without either, the public web roots.
    #[arg(long, requires = "state_db")]
    pub state_db_ca: Option<PathBuf>,
    /// How long resolved elevations, ended grants and the store's audit
    /// events are kept in --state-dir before a purge deletes them (the
    /// --audit-log file keeps the history).
    #[arg(long, default_value = "30d", value_parser = parse_duration_arg)]
    pub retention: std::time::Duration,
    /// The most pending elevations rampart keeps, across every agent.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_pending_elevations: u32,
    /// Bearer tokens for the admin listener: a YAML list of
    /// `{sha256, principal, admin}`.
    #[arg(long, env = "RAMPART_TOKENS")]
    pub tokens: Option<PathBuf>,
    /// Certificate (PEM) for TLS on the Authorizer and admin listeners.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) for --tls-cert.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// CA (PEM) for client certificates on the admin listener (mutual TLS;
    /// subjects map to principals in the tokens file).
    #[arg(long, requires = "tls_cert")]
    pub admin_client_ca: Option<PathBuf>,
    /// CA (PEM) the Authorizer's TCP clients must present a certificate
    /// from (mutual TLS, required).
    #[arg(long, requires = "tls_cert")]
    pub authorizer_client_ca: Option<PathBuf>,
    /// Require a bearer token on every Authorizer call (TCP and --uds): a
    /// YAML list of `{sha256, name}`.
    #[arg(long, env = "RAMPART_AUTHORIZER_TOKENS")]
    pub authorizer_tokens: Option<PathBuf>,
    /// Webhooks to notify of each new pending elevation and each
    /// resolution: a YAML file of sinks (CloudEvents, Slack, Teams).
    #[arg(long, env = "RAMPART_NOTIFICATIONS")]
    pub notifications: Option<PathBuf>,
    /// Allow --listen or --admin-listen on a non-loopback address without
    /// TLS.
    #[arg(long)]
    pub insecure: bool,
    /// Watch the snapshot's directory and reload on change.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub watch: bool,
    /// Also re-read the snapshot this often (a fallback for missed events).
    #[arg(long, default_value = "30s", value_parser = parse_duration_arg)]
    pub reload_poll: std::time::Duration,
    /// Where Envoy's ext_authz Check reads the principal id:
    /// `metadata:FILTER/KEY[/KEY…]` (e.g. the jwt_authn filter's verified
    /// payload: metadata:envoy.filters.http.jwt_authn/payload/oid), `mtls`
    /// (the client certificate's principal), `header:NAME`, or `jwt[:CLAIM]`
    /// (a claim of the bearer token, its signature NOT verified: only as a
    /// pre-filter in front of a server that verifies it, as ARM does).
    #[arg(long, default_value = "jwt:oid")]
    pub ext_authz_identity: crate::extauthz::IdentitySource,
    /// On APPROVAL_REQUIRED, file the elevation for the agent and name it
    /// in the 403 answer (without waiting for it).
    #[arg(long)]
    pub ext_authz_elevate: bool,
    /// The request header that justifies an elevation filed by
    /// --ext-authz-elevate; never forwarded upstream.
    #[arg(long, default_value = crate::extauthz::service::DEFAULT_JUSTIFICATION_HEADER)]
    pub ext_authz_justification_header: String,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Args)]
pub struct CheckArgs {
    /// Snapshot file; without it the embedded demo is used.
    #[arg(long)]
    pub snapshot: Option<PathBuf>,
    /// The principal (or access key) id asking.
    #[arg(long)]
    pub principal: String,
    /// The operation, e.g. Microsoft.Compute/virtualMachines/read.
    #[arg(long)]
    pub action: String,
    /// The scope, e.g. /subscriptions/{id}/resourceGroups/{rg}.
    #[arg(long)]
    pub scope: String,
    /// The operation is a data-plane operation.
    #[arg(long)]
    pub data: bool,
    /// A request attribute for conditions, as KEY=VALUE (repeatable).
    #[arg(long = "attribute", value_name = "KEY=VALUE")]
    pub attributes: Vec<String>,
}

/// Loads the snapshot named on the command line, or the demo.
pub fn load_snapshot(path: Option<&PathBuf>) -> Result<CompiledSnapshot, SnapshotError> {
    match path {
        Some(p) => snapshot::load_file(p),
        None => snapshot::demo(),
    }
}

/// `n` and the noun, in the plural unless `n` is 1.
pub fn counted(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// `rampart validate FILE`: the report and whether the file is valid.
pub fn validate(file: &Path) -> (String, bool) {
    match snapshot::load_file(file) {
        Ok(s) => {
            let t = &s.tenant;
            let report = format!(
                "{} is valid: revision {}, {}, {}, {}, {}, {}\n",
                file.display(),
                s.info.revision,
                counted(t.principals.len(), "principal"),
                counted(
                    t.role_definitions.len() - t.builtin_role_count,
                    "custom role"
                ),
                // As written: not the ones agents' permission levels derive.
                counted(
                    t.role_assignments
                        .iter()
                        .filter(|a| a.derived_from_agent.is_none())
                        .count(),
                    "role assignment"
                ),
                counted(t.deny_assignments.len(), "deny assignment"),
                counted(t.agents.len(), "agent"),
            );
            (report, true)
        }
        Err(e) => (format!("{e}\n"), false),
    }
}

/// `rampart check`: the decision, explained, or an error message.
pub fn check(args: &CheckArgs) -> Result<String, String> {
    let snapshot = load_snapshot(args.snapshot.as_ref()).map_err(|e| e.to_string())?;
    let mut attributes = BTreeMap::new();
    for pair in &args.attributes {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| format!("--attribute '{pair}' must be KEY=VALUE"))?;
        attributes.insert(k.to_owned(), v.to_owned());
    }
    let loaded = Loaded::new(snapshot);
    let request = Request {
        principal_id: &args.principal,
        action: &args.action,
        scope: &args.scope,
        data_action: args.data,
        attributes: &attributes,
        explain: true,
        dry_run: true,
    };
    let decision = loaded
        .decide(&request)
        .map_err(|e| format!("invalid {}: {e}", e.field))?;
    Ok(render(&decision))
}

/// A decision as people read it.
pub fn render(d: &Decision<'_>) -> String {
    let verdict = match d.verdict {
        Verdict::Allow => "ALLOW",
        Verdict::Deny => "DENY",
        Verdict::ApprovalRequired => "APPROVAL_REQUIRED",
    };
    let mut out = String::new();
    let _ = writeln!(out, "decision:  {verdict}");
    let _ = writeln!(
        out,
        "reason:    {} ({})",
        d.reason.as_str(),
        d.reason.message()
    );
    let _ = writeln!(out, "read-only: {}", if d.read_only { "yes" } else { "no" });
    let _ = writeln!(out, "snapshot:  {}", d.snapshot_revision);
    if !d.matches.is_empty() {
        let _ = writeln!(out, "matched:");
    }
    for m in &d.matches {
        let line = match m.kind {
            MatchKind::RoleAssignment => {
                let mut s = format!(
                    "role assignment {}: {} ({}) at {}",
                    m.id, m.role_name, m.role_id, m.scope
                );
                if let Some(g) = &m.via_group {
                    let _ = write!(s, " via group {g}");
                }
                if let Some(a) = &m.derived_from_agent {
                    let _ = write!(s, " derived from agent {a}");
                }
                if let Some(p) = &m.pattern {
                    let _ = write!(s, ", pattern '{p}'");
                }
                s
            }
            MatchKind::DenyAssignment => format!("deny assignment {} at {}", m.id, m.scope),
            MatchKind::AccessKey => format!("access key {} for {}", m.id, m.scope),
            MatchKind::AgentScope => format!("agent {} manages {}", m.id, m.scope),
            MatchKind::Grant => format!("elevation grant {} for {} at {}", m.id, m.pattern.as_deref().unwrap_or_default(), m.scope),
            MatchKind::ConditionNotMet => format!(
                "role assignment {}: {} ({}) at {} covers the operation, but its condition does not hold: {}",
                m.id,
                m.role_name,
                m.role_id,
                m.scope,
                m.condition.as_deref().unwrap_or_default()
            ),
        };
        let _ = writeln!(out, "  - {line}");
    }
    out
}

/// `rampart import`: the snapshot text (already validated) and notes, or
/// every problem found.
pub fn import(args: &ImportArgs) -> Result<(String, Vec<String>), String> {
    if args.role_definitions.is_none() && args.role_assignments.is_none() {
        return Err("give --role-definitions, --role-assignments or both".into());
    }
    let read = |p: &Option<PathBuf>| -> Result<Option<String>, String> {
        p.as_ref()
            .map(|p| {
                std::fs::read_to_string(p).map_err(|e| format!("cannot read {}: {e}", p.display()))
            })
            .transpose()
    };
    let definitions = read(&args.role_definitions)?;
    let assignments = read(&args.role_assignments)?;
    let imported = snapshot::import::from_azure_cli(definitions.as_deref(), assignments.as_deref())
        .map_err(|problems| {
            let mut out = format!("cannot import ({} problems):", problems.len());
            for p in problems {
                let _ = write!(out, "\n  {p}");
            }
            out
        })?;
    // Refuse to write what rampart would refuse to load.
    snapshot::load_str(&imported.yaml, "imported snapshot").map_err(|e| e.to_string())?;
    Ok((imported.yaml, imported.notes))
}

/// `rampart role REF`: a built-in role, as its definition reads.
/// Whether a block of the role allows the operation, on either plane.
fn allows(role: &crate::model::RoleDefinition, operation: &str) -> bool {
    role.permissions.iter().any(|block| {
        [false, true].into_iter().any(|data| {
            let (allowed, excluded) = block.plane(data);
            allowed.matches(operation) && !excluded.matches(operation)
        })
    })
}

/// `rampart role --list` or `--search TEXT`: one line per role, by name.
pub fn role_list(search: Option<&str>) -> Result<String, String> {
    let roles = crate::snapshot::catalog::builtin_roles().map_err(|e| e.to_string())?;
    let wanted = search.map(str::to_ascii_lowercase);
    let matches = |r: &&crate::model::RoleDefinition| match (&wanted, search) {
        (Some(text), Some(raw)) => {
            r.role_name.to_ascii_lowercase().contains(text)
                || r.aliases
                    .iter()
                    .any(|a| a.to_ascii_lowercase().contains(text))
                || r.description.to_ascii_lowercase().contains(text)
                || (raw.contains('/') && allows(r, raw))
        }
        _ => true,
    };
    let mut found: Vec<&crate::model::RoleDefinition> = roles.iter().filter(matches).collect();
    found.sort_by_key(|r| r.role_name.to_ascii_lowercase());
    if found.is_empty() {
        return Err(format!(
            "no built-in role's name, earlier names or description contains '{}', and none allows it as an operation",
            search.unwrap_or_default()
        ));
    }
    let mut out = String::new();
    for r in &found {
        let _ = writeln!(out, "{}  {}", r.id, r.role_name);
    }
    let _ = writeln!(out, "{}", counted(found.len(), "role"));
    Ok(out)
}

/// `rampart role REFERENCE`: the role's definition.
pub fn role(reference: &str) -> Result<String, String> {
    let role = crate::snapshot::catalog::find(reference).ok_or_else(|| {
        let names = crate::snapshot::catalog::builtin_roles()
            .map(|roles| roles.iter().map(|r| r.role_name.as_str()).collect::<Vec<_>>())
            .unwrap_or_default();
        format!(
            "no built-in role has the id, name or earlier name '{reference}'{}; `rampart role --search TEXT` searches them",
            crate::snapshot::suggest::role_hint(reference, names)
        )
    })?;
    let mut out = String::new();
    let _ = writeln!(out, "id:       {}", role.id);
    let _ = writeln!(out, "roleName: {}", role.role_name);
    if !role.aliases.is_empty() {
        let _ = writeln!(out, "aliases:  {}", role.aliases.join(", "));
    }
    if !role.description.is_empty() {
        let _ = writeln!(out, "description: {}", role.description);
    }
    let scopes: Vec<&str> = role.assignable_scopes.iter().map(|s| s.as_str()).collect();
    let _ = writeln!(out, "assignableScopes: {}", scopes.join(", "));
    for (i, block) in role.permissions.iter().enumerate() {
        let _ = writeln!(out, "permissions[{i}]:");
        for (name, set) in [
            ("actions", &block.actions),
            ("notActions", &block.not_actions),
            ("dataActions", &block.data_actions),
            ("notDataActions", &block.not_data_actions),
        ] {
            if !set.is_empty() {
                let _ = writeln!(out, "  {name}:");
                for p in set.iter() {
                    let _ = writeln!(out, "    - {p}");
                }
            }
        }
        if let Some(c) = &block.condition {
            let _ = writeln!(out, "  condition: {}", c.as_str());
        }
    }
    Ok(out)
}

fn parse_duration_arg(text: &str) -> Result<std::time::Duration, String> {
    crate::model::agent::parse_duration(text).map_err(|e| format!("'{text}' {e}"))
}

/// A listen address: `IP:PORT`, or `HOST:PORT` resolved now (the first
/// address the name has).
fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err(format!(
            "'{text}' has no port: give IP:PORT or HOST:PORT, e.g. 127.0.0.1:50051"
        ));
    };
    if port.parse::<u16>().is_err() {
        return Err(format!(
            "'{text}': '{port}' is not a port number: give IP:PORT or HOST:PORT, e.g. 127.0.0.1:50051"
        ));
    }
    use std::net::ToSocketAddrs;
    let mut addrs = text.to_socket_addrs().map_err(|e| {
        format!("cannot resolve '{host}' ({e}): give an IP address instead, e.g. 127.0.0.1:{port}")
    })?;
    addrs.next().ok_or_else(|| {
        format!("'{host}' has no address: give an IP address instead, e.g. 127.0.0.1:{port}")
    })
}

/// A duration that must be longer than zero (a timeout or an interval).
fn parse_positive_duration(text: &str) -> Result<std::time::Duration, String> {
    match parse_duration_arg(text)? {
        d if d.is_zero() => Err(format!("'{text}' must be longer than zero")),
        d => Ok(d),
    }
}

fn parse_rate(text: &str) -> Result<f64, String> {
    let rate: f64 = text
        .parse()
        .map_err(|_| format!("'{text}' is not a number"))?;
    if (0.0..=1.0).contains(&rate) {
        Ok(rate)
    } else {
        Err(format!("'{text}' is not between 0 and 1"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_singular_only_for_one() {
        assert_eq!(counted(0, "agent"), "0 agents");
        assert_eq!(counted(1, "agent"), "1 agent");
        assert_eq!(counted(2, "deny assignment"), "2 deny assignments");
    }

    #[test]
    fn validate_reports_counts_with_their_plurals() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let file = dir.path().join("one.yaml");
        let yaml = "revision: one-1\nsubscriptions: [{ id: 11111111-1111-1111-1111-111111111111 }]\nprincipals:\n  - { id: mi, type: ManagedIdentity }\nroleAssignments:\n  - { id: ra, principal: mi, role: Reader, scope: /subscriptions/11111111-1111-1111-1111-111111111111/resourceGroups/rg }\nagents:\n  - { id: a, principal: mi, resource: /subscriptions/11111111-1111-1111-1111-111111111111/resourceGroups/rg/providers/Microsoft.App/agents/a, managedScopes: [/subscriptions/11111111-1111-1111-1111-111111111111/resourceGroups/rg], permissionLevel: Reader, executionMode: Review }\n";
        std::fs::write(&file, yaml).unwrap_or_else(|e| panic!("{e}"));
        let (report, valid) = validate(&file);
        assert!(valid, "{report}");
        assert!(
            report.contains("revision one-1, 1 principal, 0 custom roles, 1 role assignment, 0 deny assignments, 1 agent\n"),
            "{report}"
        );
    }
}
