//! `rampart elevations …`: the approval channel for people without grpcurl,
//! a thin client of the Approvals service on the admin listener.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use tonic::transport::Channel;
use tonic::Request;

use crate::model::agent::parse_duration;
use crate::proto as pb;
use crate::proto::approvals_client::ApprovalsClient;

#[derive(Debug, Clone, Args)]
pub struct ElevationsArgs {
    /// The admin listener.
    #[arg(
        long,
        default_value = "http://127.0.0.1:50052",
        env = "RAMPART_ADMIN_ADDR"
    )]
    pub admin_addr: String,
    /// A file holding the bearer token (else $RAMPART_TOKEN).
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    #[command(subcommand)]
    pub command: ElevationsCommand,
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

fn token(args: &ElevationsArgs) -> Result<String, String> {
    let token = match &args.token_file {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?,
        None => std::env::var("RAMPART_TOKEN")
            .map_err(|_| "set RAMPART_TOKEN or give --token-file".to_owned())?,
    };
    let token = token.trim().to_owned();
    if token.is_empty() {
        return Err("the token is empty".into());
    }
    Ok(token)
}

fn authed<T>(message: T, token: &str) -> Result<Request<T>, String> {
    let mut request = Request::new(message);
    let value = format!("Bearer {token}")
        .parse()
        .map_err(|_| "the token is not valid header text".to_owned())?;
    request.metadata_mut().insert("authorization", value);
    Ok(request)
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
        e.scope
    );
    if e.state() == pb::ElevationState::Pending {
        out.push_str(&format!("  waiters={} why: {}", e.waiters, e.justification));
    } else if !e.resolved_by.is_empty() {
        out.push_str(&format!("  by {}", e.resolved_by));
    }
    if let Some(g) = &e.grant {
        out.push_str(&format!("  grant={}", g.id));
    }
    out
}

fn grant_line(g: &pb::Grant) -> String {
    let expires = g.expires_at.as_ref().map_or(0, |t| t.seconds);
    format!(
        "{}  {:<6} agent={} {} at {} on behalf of {} expires_at={} uses={}{}{}",
        g.id,
        g.state().as_str_name(),
        g.agent_id,
        g.action,
        g.scope,
        g.on_behalf_of,
        expires,
        g.uses,
        if g.max_uses > 0 {
            format!("/{}", g.max_uses)
        } else {
            String::new()
        },
        if g.ended_reason.is_empty() {
            String::new()
        } else {
            format!(" ended: {}", g.ended_reason)
        }
    )
}

/// Runs one `elevations` command, printing as it goes.
pub async fn run(args: ElevationsArgs) -> Result<(), String> {
    let token = token(&args)?;
    let channel = Channel::from_shared(args.admin_addr.clone())
        .map_err(|e| format!("--admin-addr {}: {e}", args.admin_addr))?
        .connect()
        .await
        .map_err(|e| format!("cannot reach {}: {e}", args.admin_addr))?;
    let mut client = ApprovalsClient::new(channel);
    let status = |s: tonic::Status| format!("{}: {}", s.code(), s.message());
    match args.command {
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
                    .list_elevations(authed(req, &token)?)
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
                .watch_elevations(authed(pb::WatchElevationsRequest {}, &token)?)
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
            };
            let e = client
                .approve_elevation(authed(req, &token)?)
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
                .deny_elevation(authed(req, &token)?)
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
                    .list_grants(authed(req, &token)?)
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
                .revoke_grant(authed(req, &token)?)
                .await
                .map_err(status)?
                .into_inner();
            println!("{}", grant_line(&g));
        }
    }
    Ok(())
}
