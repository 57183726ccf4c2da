//! `rampart freeze` and `rampart unfreeze`: the emergency stop for agents,
//! through Admin on a running server (an admin token is required).

use clap::Args;

use super::elevations::{authed, printable, rfc3339, Connection};
use crate::proto as pb;
use crate::proto::admin_client::AdminClient;

#[derive(Debug, Clone, Args)]
pub struct FreezeArgs {
    #[command(flatten)]
    pub connection: Connection,
    /// Why (required): written to the audit trail with who you are.
    #[arg(long)]
    pub reason: String,
}

/// Freezes (`frozen`) or unfreezes; the switch as it then stands, as text.
pub async fn run(frozen: bool, args: FreezeArgs) -> Result<String, String> {
    let token = args.connection.token()?;
    let mut client = AdminClient::new(args.connection.channel().await?);
    let request = authed(
        pb::FreezeRequest {
            reason: args.reason,
        },
        token.as_deref(),
    )?;
    let answer = if frozen {
        client.freeze(request).await
    } else {
        client.unfreeze(request).await
    };
    let status = answer
        .map_err(|s| {
            format!(
                "{}: {}",
                crate::server::convert::code_name(s.code()),
                s.message()
            )
        })?
        .into_inner();
    Ok(describe(&status))
}

/// One line: the state, who set it, since when, and why.
pub fn describe(s: &pb::FreezeStatus) -> String {
    format!(
        "{} by {} since {}: {}\n",
        if s.frozen {
            "FROZEN (every agent is denied)"
        } else {
            "not frozen"
        },
        printable(&s.by),
        rfc3339(s.since.as_ref()),
        printable(&s.reason)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_line_says_who_when_and_why_safely() {
        let s = pb::FreezeStatus {
            frozen: true,
            by: "admin".into(),
            reason: "incident\u{1b}[2J".into(),
            since: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            }),
        };
        assert_eq!(
            describe(&s),
            "FROZEN (every agent is denied) by admin since 2023-11-14T22:13:20Z: incident\\u{1b}[2J\n"
        );
    }
}
