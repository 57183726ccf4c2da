//! `rampart elevations …`: the approval channel for people without grpcurl,
//! a thin client of the Approvals service on the admin listener, in
//! plaintext, TLS or mutual TLS.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use tonic::Request;

use crate::model::agent::parse_duration;
use crate::proto as pb;
use crate::proto::approvals_client::ApprovalsClient;

#[derive(Debug, Clone, Args)]
pub struct ElevationsArgs {
    #[command(flatten)]
    pub connection: Connection,
    #[command(subcommand)]
    pub command: ElevationsCommand,
}

/// Where the admin listener is and how to prove who you are; accepted
/// before or after the subcommand.
#[derive(Debug, Clone, Args)]
pub struct Connection {
    /// The admin listener: HOST:PORT (http, or https with --ca or --cert)
    /// or a URL (http://…, https://…).
    #[arg(
        long,
        global = true,
        default_value = "127.0.0.1:50052",
        env = "RAMPART_ADMIN_ADDR"
    )]
    pub admin_addr: String,
    /// A file holding the bearer token (else $RAMPART_TOKEN).
    #[arg(long, global = true)]
    pub token_file: Option<PathBuf>,
    /// The CA (PEM) that signed the admin listener's certificate; without
    /// it, https uses the public web roots.
    #[arg(long, global = true)]
    pub ca: Option<PathBuf>,
    /// A client certificate (PEM) for mutual TLS: its subject maps to your
    /// principal, and no token is needed.
    #[arg(long, global = true, requires = "key")]
    pub cert: Option<PathBuf>,
    /// The private key (PEM) of --cert.
    #[arg(long, global = true, requires = "cert")]
    pub key: Option<PathBuf>,
    /// The name the server certificate must carry (default: the host of
    /// --admin-addr).
    #[arg(long, global = true)]
    pub tls_server_name: Option<String>,
}

/// The URI to dial: a URL as given, or HOST:PORT with `https://` when TLS
/// is asked for (`tls`), else `http://`.
pub fn admin_uri(addr: &str, tls: bool) -> Result<String, String> {
    let addr = addr.trim();
    if addr.is_empty() {
        return Err("--admin-addr is empty; give HOST:PORT, e.g. 127.0.0.1:50052".into());
    }
    match addr.split_once("://") {
        Some(("https", rest)) if !rest.is_empty() => Ok(addr.to_owned()),
        Some(("http", rest)) if !rest.is_empty() => {
            if tls {
                Err(format!("--admin-addr {addr} is plaintext, but --ca or --cert ask for TLS; write https:// or HOST:PORT"))
            } else {
                Ok(addr.to_owned())
            }
        }
        Some((scheme, _)) => Err(format!(
            "--admin-addr {addr}: use http://, https:// or HOST:PORT, not {scheme}://"
        )),
        None if tls => Ok(format!("https://{addr}")),
        None => Ok(format!("http://{addr}")),
    }
}

fn read(flag: &str, path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {flag} {}: {e}", path.display()))
}

/// An error with its causes, since tonic's own text is often only
/// "transport error".
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text = format!("{text}: {s}");
        source = s.source();
    }
    text
}

impl Connection {
    fn wants_tls(&self) -> bool {
        self.ca.is_some() || self.cert.is_some()
    }

    /// Connects to the admin listener.
    pub async fn channel(&self) -> Result<Channel, String> {
        let uri = admin_uri(&self.admin_addr, self.wants_tls())?;
        let mut endpoint = Channel::from_shared(uri.clone())
            .map_err(|e| format!("--admin-addr {}: {e}", self.admin_addr))?;
        if uri.starts_with("https://") {
            let mut tls = ClientTlsConfig::new();
            tls = match &self.ca {
                Some(ca) => {
                    let pem = read("--ca", ca)?;
                    let path = ca.display().to_string();
                    crate::server::tls::certificates(crate::server::tls::Named {
                        flag: "--ca",
                        path: &path,
                        pem: &pem,
                    })?;
                    tls.ca_certificate(Certificate::from_pem(pem))
                }
                None => tls.with_webpki_roots(),
            };
            if let (Some(cert), Some(key)) = (&self.cert, &self.key) {
                let (cert_pem, key_pem) = (read("--cert", cert)?, read("--key", key)?);
                let (cert_path, key_path) = (cert.display().to_string(), key.display().to_string());
                // Swapped, mismatched or version-1 files are named before
                // the server sees them.
                crate::server::tls::identity(
                    crate::server::tls::Named {
                        flag: "--cert",
                        path: &cert_path,
                        pem: &cert_pem,
                    },
                    crate::server::tls::Named {
                        flag: "--key",
                        path: &key_path,
                        pem: &key_pem,
                    },
                )?;
                tls = tls.identity(Identity::from_pem(cert_pem, key_pem));
            }
            if let Some(name) = &self.tls_server_name {
                tls = tls.domain_name(name.clone());
            }
            endpoint = endpoint
                .tls_config(tls)
                .map_err(|e| format!("TLS for {uri}: {}", chain(&e)))?;
        }
        endpoint.connect().await.map_err(|e| {
            let why = chain(&e);
            match self.explain(&why) {
                Some(explained) => format!("cannot reach {uri}: {explained}"),
                None => format!("cannot reach {uri}: {why}"),
            }
        })
    }

    /// What a TLS failure means for these flags, if it is one.
    fn explain(&self, chain: &str) -> Option<String> {
        let ca = self.ca.as_ref().map_or_else(
            || "the public CAs (no --ca)".to_owned(),
            |ca| format!("--ca {}", ca.display()),
        );
        let cert = self
            .cert
            .as_ref()
            .map(|c| format!("--cert {}", c.display()));
        crate::server::tls::explain_client_error(chain, &ca, cert.as_deref())
    }

    /// The bearer token, if any: `--token-file`, else `$RAMPART_TOKEN`; a
    /// client certificate may stand in for it.
    pub(crate) fn token(&self) -> Result<Option<String>, String> {
        let token = match &self.token_file {
            Some(path) => std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?,
            None => match std::env::var("RAMPART_TOKEN") {
                Ok(t) => t,
                Err(_) if self.cert.is_some() => return Ok(None),
                Err(_) => return Err(
                    "set RAMPART_TOKEN or give --token-file (or --cert and --key for mutual TLS)"
                        .to_owned(),
                ),
            },
        };
        let token = token.trim().to_owned();
        if token.is_empty() {
            return Err("the token is empty".into());
        }
        Ok(Some(token))
    }
}

#[derive(Debug, Clone, Subcommand)]
pub enum ElevationsCommand {
    /// Elevations you may act on (default: pending ones).
    List {
        /// Show every state, not only pending.
        #[arg(long)]
        all: bool,
    },
    /// Print the pending elevations, then every change, until interrupted.
    Watch,
    /// How shadow auto-approve rules would have decided, against what
    /// humans decided, over every stored elevation you may see.
    Report,
    /// Approve as yourself (your token's principal).
    Approve {
        id: String,
        /// Shorten the grant, e.g. 10m.
        #[arg(long)]
        duration: Option<String>,
        /// Limit the grant to this many uses.
        #[arg(long, default_value_t = 0)]
        max_uses: u32,
        #[arg(long)]
        comment: Option<String>,
        /// Bind the grant to the elevation's request body (true) or not
        /// (false); unset: bound for a write whose request is known.
        #[arg(long)]
        bind_to_request: Option<bool>,
    },
    /// Deny as yourself.
    Deny {
        id: String,
        #[arg(long)]
        comment: Option<String>,
    },
    /// Active grants (with --all, ended ones too).
    Grants {
        #[arg(long)]
        all: bool,
    },
    /// End a grant now.
    Revoke {
        grant_id: String,
        #[arg(long)]
        comment: Option<String>,
    },
}

pub(crate) fn authed<T>(message: T, token: Option<&str>) -> Result<Request<T>, String> {
    let mut request = Request::new(message);
    if let Some(token) = token {
        let value = format!("Bearer {token}")
            .parse()
            .map_err(|_| "the token is not valid header text".to_owned())?;
        request.metadata_mut().insert("authorization", value);
    }
    Ok(request)
}

/// A time as RFC 3339 (UTC), or `-` when absent.
pub fn rfc3339(t: Option<&prost_types::Timestamp>) -> String {
    t.and_then(|t| chrono::DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32))
        .map_or_else(
            || "-".to_owned(),
            |t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        )
}

/// Text an agent or approver wrote, safe for a terminal: control
/// characters (escape sequences among them) are shown escaped.
pub fn printable(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect()
}

fn seconds(d: Option<&prost_types::Duration>) -> i64 {
    d.map_or(0, |d| d.seconds)
}

fn line(e: &pb::Elevation) -> String {
    let mut out = format!(
        "{}  {:<10} agent={} principal={} {}{} at {}",
        e.id,
        e.state().as_str_name(),
        e.agent_id,
        e.principal_id,
        e.action,
        if e.data_action { " (data)" } else { "" },
        printable(&e.scope)
    );
    if e.state() == pb::ElevationState::Pending {
        out.push_str(&format!(
            "  requested={}s since={} until={} waiters={} why: {}",
            seconds(e.requested_duration.as_ref()),
            rfc3339(e.created_at.as_ref()),
            rfc3339(e.wait_deadline.as_ref()),
            e.waiters,
            printable(&e.justification)
        ));
        if !e.ticket.is_empty() {
            out.push_str(&format!(" ticket={}", printable(&e.ticket)));
        }
        if let Some(r) = &e.request {
            out.push_str(&format!(
                " request={} {} sha256={}",
                printable(&r.method),
                printable(&r.path),
                printable(&r.digest)
            ));
        }
    } else {
        out.push_str(&format!("  at={}", rfc3339(e.resolved_at.as_ref())));
        if !e.resolved_by.is_empty() {
            out.push_str(&format!(" by {}", printable(&e.resolved_by)));
        }
    }
    if e.required_approvals > 1 || e.approvals.len() > 1 {
        out.push_str(&format!("  {}", approvals(e)));
    }
    for v in &e.shadow {
        out.push_str(&format!(
            "  shadow#{}={} (on behalf of {})",
            v.rule,
            v.outcome().as_str_name(),
            printable(&v.on_behalf_of)
        ));
    }
    if let Some(g) = &e.grant {
        out.push_str(&format!("  grant={}", g.id));
    }
    out
}

/// `approvals=1/2 (oncall)`: the approvals so far of the distinct ones
/// required.
fn approvals(e: &pb::Elevation) -> String {
    let by: Vec<String> = e.approvals.iter().map(|a| printable(&a.by)).collect();
    format!(
        "approvals={}/{} ({})",
        e.approvals.len(),
        e.required_approvals.max(1),
        by.join(", ")
    )
}

fn grant_line(g: &pb::Grant) -> String {
    format!(
        "{}  {:<6} agent={} {} at {} on behalf of {} created_at={} expires_at={} uses={}{}{}",
        g.id,
        g.state().as_str_name(),
        g.agent_id,
        g.action,
        printable(&g.scope),
        std::iter::once(&g.on_behalf_of)
            .chain(&g.co_lenders)
            .map(|l| printable(l))
            .collect::<Vec<_>>()
            .join(" and "),
        rfc3339(g.created_at.as_ref()),
        rfc3339(g.expires_at.as_ref()),
        g.uses,
        if g.max_uses > 0 {
            format!("/{}", g.max_uses)
        } else {
            String::new()
        },
        if g.ended_reason.is_empty() {
            String::new()
        } else {
            format!(
                " ended_at={} ended: {}",
                rfc3339(g.ended_at.as_ref()),
                printable(&g.ended_reason)
            )
        }
    )
}

/// Shadow verdicts against human decisions, per (agent, rule).
#[derive(Debug, Default)]
struct ShadowReport {
    rows: std::collections::BTreeMap<(String, u32), ShadowRow>,
}

#[derive(Debug, Default)]
struct ShadowRow {
    on_behalf_of: String,
    /// [would approve, would skip] × [approved, denied].
    decided: [[u64; 2]; 2],
    /// Expired, cancelled, auto-approved or still pending.
    undecided: u64,
}

impl ShadowReport {
    fn add(&mut self, e: &pb::Elevation) {
        use crate::elevation::policy::shadow::HumanDecision;
        let state = crate::server::convert::elevation_state_from(e.state());
        let decision = state.and_then(|s| HumanDecision::of(s, &e.resolved_by));
        for v in &e.shadow {
            let row = self.rows.entry((e.agent_id.clone(), v.rule)).or_default();
            row.on_behalf_of.clone_from(&v.on_behalf_of);
            let would = usize::from(v.outcome() != pb::ShadowOutcome::WouldApprove);
            match decision {
                Some(HumanDecision::Approved) => row.decided[would][0] += 1,
                Some(HumanDecision::Denied) => row.decided[would][1] += 1,
                None => row.undecided += 1,
            }
        }
    }

    fn render(&self) -> String {
        if self.rows.is_empty() {
            return "no shadow auto-approve verdicts recorded\n".into();
        }
        let mut out = String::new();
        for ((agent, rule), row) in &self.rows {
            let [[aa, ad], [sa, sd]] = row.decided;
            let (agree, disagree) = (aa + sd, ad + sa);
            let decided = agree + disagree;
            let rate = if decided == 0 {
                "-".to_owned()
            } else {
                format!("{:.1}%", agree as f64 * 100.0 / decided as f64)
            };
            out.push_str(&format!(
                "agent={} rule={rule} onBehalfOf={} decided={decided} AGREE={agree} DISAGREE={disagree} agreement={rate}  WOULD_APPROVE: APPROVED={aa} DENIED={ad}  WOULD_SKIP: APPROVED={sa} DENIED={sd}  undecided={}\n",
                printable(agent),
                printable(&row.on_behalf_of),
                row.undecided
            ));
        }
        out
    }
}

/// Runs one `elevations` command, printing as it goes.
pub async fn run(args: ElevationsArgs) -> Result<(), String> {
    let token = args.connection.token()?;
    let token = token.as_deref();
    let channel = args.connection.channel().await?;
    let mut client = ApprovalsClient::new(channel);
    let connection = &args.connection;
    let status = |s: tonic::Status| {
        // With TLS 1.3 a refused client certificate shows on the first
        // call, as a transport error.
        if let Some(explained) = connection.explain(&chain(&s)) {
            return format!(
                "{}: {explained}",
                crate::server::convert::code_name(s.code())
            );
        }
        format!(
            "{}: {}",
            crate::server::convert::code_name(s.code()),
            s.message()
        )
    };
    match args.command {
        ElevationsCommand::Report => {
            let mut report = ShadowReport::default();
            let mut page_token = String::new();
            loop {
                let req = pb::ListElevationsRequest {
                    state: pb::ElevationState::Unspecified as i32,
                    principal_id: String::new(),
                    page_size: 0,
                    page_token,
                };
                let page = client
                    .list_elevations(authed(req, token)?)
                    .await
                    .map_err(status)?
                    .into_inner();
                for e in &page.elevations {
                    report.add(e);
                }
                if page.next_page_token.is_empty() {
                    break;
                }
                page_token = page.next_page_token;
            }
            print!("{}", report.render());
        }
        ElevationsCommand::List { all } => {
            let state = if all {
                pb::ElevationState::Unspecified
            } else {
                pb::ElevationState::Pending
            };
            // Every page, each printed as it arrives.
            let mut page_token = String::new();
            loop {
                let req = pb::ListElevationsRequest {
                    state: state as i32,
                    principal_id: String::new(),
                    page_size: 0,
                    page_token,
                };
                let page = client
                    .list_elevations(authed(req, token)?)
                    .await
                    .map_err(status)?
                    .into_inner();
                for e in &page.elevations {
                    println!("{}", line(e));
                }
                if page.next_page_token.is_empty() {
                    break;
                }
                page_token = page.next_page_token;
            }
        }
        ElevationsCommand::Watch => {
            let mut stream = client
                .watch_elevations(authed(pb::WatchElevationsRequest {}, token)?)
                .await
                .map_err(status)?
                .into_inner();
            while let Some(event) = stream.message().await.map_err(status)? {
                if let Some(e) = event.elevation {
                    println!("{}", line(&e));
                }
            }
        }
        ElevationsCommand::Approve {
            id,
            duration,
            max_uses,
            comment,
            bind_to_request,
        } => {
            let duration = duration
                .map(|d| parse_duration(&d).map_err(|e| format!("--duration '{d}' {e}")))
                .transpose()?
                .map(|d| prost_types::Duration {
                    seconds: d.as_secs() as i64,
                    nanos: 0,
                });
            let req = pb::ApproveElevationRequest {
                id,
                duration,
                max_uses,
                comment: comment.unwrap_or_default(),
                bind_to_request,
            };
            let e = client
                .approve_elevation(authed(req, token)?)
                .await
                .map_err(status)?
                .into_inner();
            println!("{}", line(&e));
        }
        ElevationsCommand::Deny { id, comment } => {
            let req = pb::DenyElevationRequest {
                id,
                comment: comment.unwrap_or_default(),
            };
            let e = client
                .deny_elevation(authed(req, token)?)
                .await
                .map_err(status)?
                .into_inner();
            println!("{}", line(&e));
        }
        ElevationsCommand::Grants { all } => {
            let mut page_token = String::new();
            loop {
                let req = pb::ListGrantsRequest {
                    include_ended: all,
                    principal_id: String::new(),
                    page_size: 0,
                    page_token,
                };
                let page = client
                    .list_grants(authed(req, token)?)
                    .await
                    .map_err(status)?
                    .into_inner();
                for g in &page.grants {
                    println!("{}", grant_line(g));
                }
                if page.next_page_token.is_empty() {
                    break;
                }
                page_token = page.next_page_token;
            }
        }
        ElevationsCommand::Revoke { grant_id, comment } => {
            let req = pb::RevokeGrantRequest {
                id: grant_id,
                comment: comment.unwrap_or_default(),
            };
            let g = client
                .revoke_grant(authed(req, token)?)
                .await
                .map_err(status)?
                .into_inner();
            println!("{}", grant_line(&g));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn an_address_without_a_scheme_is_http_or_https_with_tls() {
        assert_eq!(
            admin_uri("127.0.0.1:50052", false).unwrap(),
            "http://127.0.0.1:50052"
        );
        assert_eq!(
            admin_uri("rampart:50052", true).unwrap(),
            "https://rampart:50052"
        );
        assert_eq!(admin_uri("https://r:1", false).unwrap(), "https://r:1");
        assert_eq!(admin_uri("http://r:1", false).unwrap(), "http://r:1");
        assert!(admin_uri("http://r:1", true)
            .unwrap_err()
            .contains("plaintext"));
        assert!(admin_uri("ftp://r:1", false)
            .unwrap_err()
            .contains("not ftp://"));
        assert!(admin_uri(" ", false).unwrap_err().contains("is empty"));
    }

    #[test]
    fn connection_flags_go_before_or_after_the_subcommand() {
        for argv in [
            vec![
                "rampart",
                "elevations",
                "--admin-addr",
                "h:1",
                "--ca",
                "ca.pem",
                "list",
            ],
            vec![
                "rampart",
                "elevations",
                "list",
                "--admin-addr",
                "h:1",
                "--ca",
                "ca.pem",
            ],
            vec![
                "rampart",
                "elevations",
                "--ca",
                "ca.pem",
                "approve",
                "ID",
                "--admin-addr",
                "h:1",
            ],
        ] {
            let cli =
                crate::cli::Cli::try_parse_from(&argv).unwrap_or_else(|e| panic!("{argv:?}: {e}"));
            let Some(crate::cli::Command::Elevations(args)) = cli.command else {
                panic!("{argv:?}");
            };
            assert_eq!(args.connection.admin_addr, "h:1");
            assert_eq!(args.connection.ca.as_deref(), Some(Path::new("ca.pem")));
        }
        // --cert and --key come together.
        assert!(crate::cli::Cli::try_parse_from([
            "rampart",
            "elevations",
            "list",
            "--cert",
            "c.pem"
        ])
        .is_err());
    }

    #[test]
    fn times_print_as_rfc3339_and_text_cannot_drive_the_terminal() {
        let t = prost_types::Timestamp {
            seconds: 1_700_000_000,
            nanos: 5,
        };
        assert_eq!(rfc3339(Some(&t)), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(None), "-");
        assert_eq!(
            printable("ok\u{1b}[2Jgone\nline"),
            "ok\\u{1b}[2Jgone\\nline"
        );
    }

    #[test]
    fn a_line_shows_the_approvals_so_far_the_ticket_and_shadow_verdicts() {
        let e = pb::Elevation {
            id: "e1".into(),
            state: pb::ElevationState::Pending as i32,
            required_approvals: 2,
            ticket: "CHG-1".into(),
            approvals: vec![pb::ApprovalRecord {
                by: "oncall".into(),
                ..Default::default()
            }],
            shadow: vec![pb::ShadowVerdict {
                rule: 0,
                outcome: pb::ShadowOutcome::WouldApprove as i32,
                on_behalf_of: "oncall".into(),
            }],
            ..Default::default()
        };
        let text = line(&e);
        assert!(text.contains(" ticket=CHG-1"), "{text}");
        assert!(text.contains("  approvals=1/2 (oncall)"), "{text}");
        assert!(
            text.contains("  shadow#0=WOULD_APPROVE (on behalf of oncall)"),
            "{text}"
        );
        // A single-approver elevation prints as before.
        let plain = pb::Elevation {
            id: "e2".into(),
            required_approvals: 1,
            ..Default::default()
        };
        assert!(!line(&plain).contains("approvals="));
        let g = pb::Grant {
            on_behalf_of: "oncall".into(),
            co_lenders: vec!["lead".into()],
            ..Default::default()
        };
        assert!(grant_line(&g).contains("on behalf of oncall and lead"));
    }

    #[test]
    fn the_shadow_report_counts_agreement_with_human_decisions() {
        let verdict = |outcome: pb::ShadowOutcome| pb::ShadowVerdict {
            rule: 0,
            outcome: outcome as i32,
            on_behalf_of: "oncall".into(),
        };
        let decided = |state: pb::ElevationState, by: &str, outcome| pb::Elevation {
            agent_id: "reviewer".into(),
            state: state as i32,
            resolved_by: by.into(),
            shadow: vec![verdict(outcome)],
            ..Default::default()
        };
        let mut report = ShadowReport::default();
        assert_eq!(
            report.render(),
            "no shadow auto-approve verdicts recorded\n"
        );
        use pb::ElevationState::*;
        use pb::ShadowOutcome::*;
        for e in [
            decided(Approved, "oncall", WouldApprove),
            decided(Approved, "oncall", WouldApprove),
            decided(Denied, "oncall", WouldSkip),
            decided(Denied, "oncall", WouldApprove),
            decided(Expired, "rampart", WouldApprove),
            decided(Approved, "auto-approve:reviewer#1", WouldApprove),
            pb::Elevation::default(),
        ] {
            report.add(&e);
        }
        assert_eq!(
            report.render(),
            "agent=reviewer rule=0 onBehalfOf=oncall decided=4 AGREE=3 DISAGREE=1 agreement=75.0%  WOULD_APPROVE: APPROVED=2 DENIED=1  WOULD_SKIP: APPROVED=0 DENIED=1  undecided=2\n"
        );
    }
}
