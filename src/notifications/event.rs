//! What a sink receives: a CloudEvent, a Slack message or a Teams card for
//! one elevation change. Pure functions of the elevation.
//!
//! Justifications are written by agents, so in chat messages they go where
//! the chat renders no markup (Slack `plain_text`, Teams `TextRun`), and
//! every other value is escaped for the format: no text an agent writes
//! can mention a channel, add a link or format itself. Messages link to
//! the approvals page and nowhere else: approving happens there, by an
//! authenticated approver, never by a link in a message.

use std::time::SystemTime;

use reqwest::Url;
use serde_json::{json, Value};

use super::config::Format;
use crate::elevation::{Elevation, ElevationState};
use crate::model::duration_text;
use crate::ui::json;

/// The change a notification reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Pending,
    Approved,
    Denied,
    Expired,
    Cancelled,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::Pending,
        Kind::Approved,
        Kind::Denied,
        Kind::Expired,
        Kind::Cancelled,
    ];

    /// The change an elevation in this state reports; `NOT_NEEDED` is
    /// never waited on, so never reported.
    pub fn of(state: ElevationState) -> Option<Kind> {
        match state {
            ElevationState::Pending => Some(Kind::Pending),
            ElevationState::Approved => Some(Kind::Approved),
            ElevationState::Denied => Some(Kind::Denied),
            ElevationState::Expired => Some(Kind::Expired),
            ElevationState::Cancelled => Some(Kind::Cancelled),
            ElevationState::NotNeeded => None,
        }
    }

    pub fn parse(text: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == text.trim())
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Pending => "pending",
            Kind::Approved => "approved",
            Kind::Denied => "denied",
            Kind::Expired => "expired",
            Kind::Cancelled => "cancelled",
        }
    }

    /// The CloudEvents `type`.
    pub fn event_type(self) -> String {
        format!("dev.rampart.elevation.{}", self.as_str())
    }

    fn headline(self) -> &'static str {
        match self {
            Kind::Pending => "Elevation pending",
            Kind::Approved => "Elevation approved",
            Kind::Denied => "Elevation denied",
            Kind::Expired => "Elevation expired",
            Kind::Cancelled => "Elevation cancelled",
        }
    }
}

/// When the change happened: the request for `pending`, else the resolution.
fn changed_at(e: &Elevation, kind: Kind) -> SystemTime {
    match kind {
        Kind::Pending => e.created_at,
        _ => e.resolved_at.unwrap_or(e.created_at),
    }
}

/// The CloudEvents id: one per elevation and change, the same on every
/// retry, so receivers can drop duplicates.
pub fn event_id(e: &Elevation, kind: Kind) -> String {
    format!("{}-{}", e.id, kind.as_str())
}

/// A CloudEvents 1.0 event in structured mode; `data` is the elevation as
/// the approvals page's API shows it.
pub fn cloudevent(e: &Elevation, kind: Kind, source: &str) -> Value {
    json!({
        "specversion": "1.0",
        "type": kind.event_type(),
        "source": source,
        "id": event_id(e, kind),
        "time": json::rfc3339(changed_at(e, kind)),
        "subject": e.id,
        "datacontenttype": "application/json",
        "data": json::elevation(e),
    })
}

/// Escapes text for Slack's mrkdwn: `&`, `<` and `>` are the characters
/// that make links and mentions.
pub fn slack_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// At most `max` characters, marked when cut.
fn cut(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// One line summing the change up, for notifications and previews.
fn summary(e: &Elevation, kind: Kind) -> String {
    let what = format!("{} at {}", e.action, e.scope);
    match kind {
        Kind::Pending => format!("agent {} asks for {what}", e.agent_id),
        _ => format!(
            "{} for agent {}: {what}{}",
            kind.headline(),
            e.agent_id,
            e.resolved_by
                .as_deref()
                .map(|by| format!(" (by {by})"))
                .unwrap_or_default()
        ),
    }
}

/// A Slack incoming-webhook message.
pub fn slack(e: &Elevation, kind: Kind, page_url: Option<&Url>) -> Value {
    let mut fields = vec![
        json!({"type": "mrkdwn", "text": format!("*Agent*\n{}", slack_escape(&e.agent_id))}),
        json!({"type": "mrkdwn", "text": format!("*Principal*\n{}", slack_escape(&e.principal_id))}),
        json!({"type": "mrkdwn", "text": format!("*Operation*\n{}", cut(&slack_escape(&e.action), 1900))}),
        json!({"type": "mrkdwn", "text": format!("*Scope*\n{}", cut(&slack_escape(&e.scope), 1900))}),
        json!({"type": "mrkdwn", "text": format!("*Requested for*\n{}", duration_text(e.requested_duration))}),
    ];
    if let Some(by) = &e.resolved_by {
        fields.push(json!({"type": "mrkdwn", "text": format!("*Resolved by*\n{}", cut(&slack_escape(by), 1900))}));
    }
    let mut blocks = vec![
        json!({"type": "header", "text": {"type": "plain_text", "text": cut(&format!("{}: {}", kind.headline(), e.agent_id), 150), "emoji": false}}),
        json!({"type": "section", "fields": fields}),
        json!({"type": "section", "text": {"type": "plain_text", "text": cut(&format!("Justification: {}", e.justification), 3000), "emoji": false}}),
    ];
    if let Some(comment) = &e.comment {
        blocks.push(json!({"type": "section", "text": {"type": "plain_text", "text": cut(&format!("Comment: {comment}"), 3000), "emoji": false}}));
    }
    blocks.push(json!({"type": "context", "elements": [{"type": "mrkdwn", "text": format!("elevation {} · {}", slack_escape(&e.id), e.reason.as_str())}]}));
    if let Some(url) = page_url {
        blocks.push(json!({"type": "actions", "elements": [{
            "type": "button",
            "text": {"type": "plain_text", "text": "Open the approvals page"},
            "url": url.as_str(),
        }]}));
    }
    json!({
        "text": cut(&slack_escape(&format!("rampart: {}", summary(e, kind))), 3000),
        "blocks": blocks,
    })
}

/// A line of a Teams card: a bold label and a value, as text runs, which
/// Teams renders without markdown.
fn teams_line(label: &str, value: &str) -> Value {
    json!({
        "type": "RichTextBlock",
        "inlines": [
            {"type": "TextRun", "text": format!("{label}: "), "weight": "Bolder"},
            {"type": "TextRun", "text": value},
        ],
    })
}

/// A Microsoft Teams message carrying an Adaptive Card, as Teams
/// incoming webhooks and Workflows ("when a Teams webhook request is
/// received") accept.
pub fn teams(e: &Elevation, kind: Kind, page_url: Option<&Url>) -> Value {
    let mut body = vec![
        json!({"type": "RichTextBlock", "inlines": [{"type": "TextRun", "text": format!("{}: {}", kind.headline(), e.agent_id), "weight": "Bolder", "size": "Medium"}]}),
        teams_line("Principal", &e.principal_id),
        teams_line("Operation", &e.action),
        teams_line("Scope", &e.scope),
        teams_line("Requested for", &duration_text(e.requested_duration)),
        teams_line("Justification", &e.justification),
    ];
    if let Some(by) = &e.resolved_by {
        body.push(teams_line("Resolved by", by));
    }
    if let Some(comment) = &e.comment {
        body.push(teams_line("Comment", comment));
    }
    body.push(teams_line("Elevation", &e.id));
    let mut card = json!({
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "summary": cut(&format!("rampart: {}", summary(e, kind)), 200),
        "body": body,
    });
    if let Some(url) = page_url {
        card["actions"] = json!([{"type": "Action.OpenUrl", "title": "Open the approvals page", "url": url.as_str()}]);
    }
    json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "content": card,
        }],
    })
}

/// The request body and its content type for a sink's format.
pub fn body(
    format: Format,
    e: &Elevation,
    kind: Kind,
    source: &str,
    page_url: Option<&Url>,
) -> (&'static str, Vec<u8>) {
    let (content_type, value) = match format {
        Format::CloudEvents => (
            "application/cloudevents+json; charset=utf-8",
            cloudevent(e, kind, source),
        ),
        Format::Slack => ("application/json", slack(e, kind, page_url)),
        Format::Teams => ("application/json", teams(e, kind, page_url)),
    };
    (content_type, value.to_string().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Reason;
    use std::time::Duration;

    const HOSTILE: &str = "<!channel> <https://evil.example|click> [here](https://evil.example) **now** & {{DATE(x)}}";

    fn sample(state: ElevationState) -> Elevation {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        Elevation {
            id: "8a6e0804-2bd0-4672-b79d-d97027f9071a".into(),
            principal_id: "agent-r".into(),
            agent_id: "reviewer".into(),
            action: "Microsoft.Compute/virtualMachines/restart/action".into(),
            scope: "/subscriptions/1/resourceGroups/rg-app".into(),
            data_action: false,
            read_only: false,
            justification: HOSTILE.into(),
            attributes: Default::default(),
            reason: Reason::NeedsElevation,
            requested_duration: Duration::from_secs(900),
            state,
            created_at: t,
            wait_deadline: t + Duration::from_secs(300),
            resolved_at: (!state.is_pending()).then_some(t + Duration::from_secs(42)),
            resolved_by: (!state.is_pending()).then(|| "oncall".to_owned()),
            comment: None,
            grant: None,
            ticket: None,
            required_approvals: 0,
            approvals: Vec::new(),
            shadow: Vec::new(),
            request: None,
            waiters: 1,
        }
    }

    fn page() -> Url {
        Url::parse("https://rampart.example.com/ui/approvals").unwrap()
    }

    #[test]
    fn kinds_map_states_and_never_report_not_needed() {
        assert_eq!(Kind::of(ElevationState::Pending), Some(Kind::Pending));
        assert_eq!(Kind::of(ElevationState::Cancelled), Some(Kind::Cancelled));
        assert_eq!(Kind::of(ElevationState::NotNeeded), None);
        for k in Kind::ALL {
            assert_eq!(Kind::parse(k.as_str()), Some(k));
        }
        assert_eq!(Kind::Denied.event_type(), "dev.rampart.elevation.denied");
    }

    #[test]
    fn a_cloudevent_has_the_required_attributes_and_the_elevation_as_data() {
        let e = sample(ElevationState::Approved);
        let v = cloudevent(&e, Kind::Approved, "https://rampart.example.com");
        assert_eq!(v["specversion"], "1.0");
        assert_eq!(v["type"], "dev.rampart.elevation.approved");
        assert_eq!(v["source"], "https://rampart.example.com");
        assert_eq!(v["id"], format!("{}-approved", e.id));
        assert_eq!(v["time"], "2023-11-14T22:14:02.000Z");
        assert_eq!(v["subject"], e.id.as_str());
        assert_eq!(v["datacontenttype"], "application/json");
        assert_eq!(v["data"], json::elevation(&e));
        let pending = cloudevent(&sample(ElevationState::Pending), Kind::Pending, "rampart");
        assert_eq!(pending["time"], "2023-11-14T22:13:20.000Z");
        assert_ne!(pending["id"], v["id"]);
    }

    /// Every string in a JSON value.
    fn strings(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::String(s) => out.push(s.clone()),
            Value::Array(a) => a.iter().for_each(|x| strings(x, out)),
            Value::Object(o) => o.values().for_each(|x| strings(x, out)),
            _ => {}
        }
    }

    #[test]
    fn slack_shows_the_justification_as_plain_text_and_links_only_to_the_page() {
        let v = slack(
            &sample(ElevationState::Pending),
            Kind::Pending,
            Some(&page()),
        );
        assert!(v["text"].as_str().unwrap().starts_with(
            "rampart: agent reviewer asks for Microsoft.Compute/virtualMachines/restart/action"
        ));
        let blocks = v["blocks"].as_array().unwrap();
        assert_eq!(blocks[0]["type"], "header");
        let justification = blocks
            .iter()
            .find(|b| {
                b["text"]["text"]
                    .as_str()
                    .is_some_and(|t| t.starts_with("Justification"))
            })
            .unwrap();
        assert_eq!(justification["text"]["type"], "plain_text");
        assert_eq!(
            justification["text"]["text"],
            format!("Justification: {HOSTILE}")
        );
        let actions = blocks.last().unwrap();
        assert_eq!(actions["elements"][0]["url"], page().as_str());
        // Outside plain_text, no '<' survives to make a link or mention.
        let mut all = Vec::new();
        for b in blocks.iter().filter(|b| b["text"]["type"] != "plain_text") {
            strings(b, &mut all);
        }
        assert!(all.iter().all(|s| !s.contains('<')), "{all:?}");
        // No link but the page's.
        let mut everything = Vec::new();
        strings(&v, &mut everything);
        let links: Vec<&String> = everything
            .iter()
            .filter(|s| s.starts_with("http"))
            .collect();
        assert_eq!(links, [&page().to_string()]);
    }

    #[test]
    fn slack_escapes_mrkdwn_and_cuts_long_text() {
        assert_eq!(
            slack_escape("<!here> & <a|b>"),
            "&lt;!here&gt; &amp; &lt;a|b&gt;"
        );
        let mut e = sample(ElevationState::Denied);
        e.agent_id = "a".repeat(400);
        let v = slack(&e, Kind::Denied, None);
        assert_eq!(
            v["blocks"][0]["text"]["text"]
                .as_str()
                .unwrap()
                .chars()
                .count(),
            150
        );
        assert!(v["blocks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|b| b["type"] != "actions"));
        assert!(v["text"].as_str().unwrap().contains("(by oncall)"));
    }

    #[test]
    fn teams_puts_every_value_in_text_runs_under_an_adaptive_card() {
        let v = teams(
            &sample(ElevationState::Expired),
            Kind::Expired,
            Some(&page()),
        );
        assert_eq!(v["type"], "message");
        let attachment = &v["attachments"][0];
        assert_eq!(
            attachment["contentType"],
            "application/vnd.microsoft.card.adaptive"
        );
        let card = &attachment["content"];
        assert_eq!(card["type"], "AdaptiveCard");
        assert_eq!(card["version"], "1.4");
        for block in card["body"].as_array().unwrap() {
            assert_eq!(
                block["type"], "RichTextBlock",
                "no markdown-rendering TextBlock"
            );
        }
        let justification = card["body"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["inlines"][0]["text"] == "Justification: ")
            .unwrap();
        assert_eq!(justification["inlines"][1]["text"], HOSTILE);
        assert_eq!(card["actions"][0]["type"], "Action.OpenUrl");
        assert_eq!(card["actions"][0]["url"], page().as_str());
        assert!(card["summary"]
            .as_str()
            .unwrap()
            .contains("Elevation expired for agent reviewer"));
    }

    #[test]
    fn bodies_carry_their_content_type() {
        let e = sample(ElevationState::Pending);
        let (ct, bytes) = body(Format::CloudEvents, &e, Kind::Pending, "rampart", None);
        assert!(ct.starts_with("application/cloudevents+json"));
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["specversion"], "1.0");
        let (ct, _) = body(Format::Teams, &e, Kind::Pending, "rampart", None);
        assert_eq!(ct, "application/json");
    }
}
