//! The notifications file (`--notifications FILE`): where to send each new
//! pending elevation and each resolution. A file of its own, not a snapshot
//! section: webhook URLs are secrets (a Slack or Teams URL is all it takes
//! to post), so they live where secrets live (a Kubernetes Secret, a file
//! only rampart reads), apart from the tenant model that is reviewed,
//! shared and reloaded; and delivery is the deployment's business, not the
//! tenant's.
//!
//! ```yaml
//! pageUrl: https://rampart.example.com/ui/approvals
//! sinks:
//!   - name: oncall-slack
//!     format: slack
//!     urlFromEnv: SLACK_WEBHOOK_URL
//!   - name: events
//!     url: https://events.example.com/rampart
//!     events: [pending, approved, denied]
//! ```

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::Url;
use serde::Deserialize;

use super::event::Kind;

/// Defaults, each overridable per sink.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_MAX_ATTEMPTS: u32 = 6;
pub const DEFAULT_INITIAL_BACKOFF: Duration = Duration::from_secs(1);
pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(60);
pub const DEFAULT_QUEUE_SIZE: usize = 1000;
/// The CloudEvents `source` when the file gives none.
pub const DEFAULT_SOURCE: &str = "rampart";
const MAX_ATTEMPTS: u32 = 20;
const MAX_QUEUE_SIZE: usize = 100_000;

/// How a sink's requests are shaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A CloudEvents 1.0 event in structured mode.
    CloudEvents,
    /// A Slack incoming-webhook message (`text` and `blocks`).
    Slack,
    /// A Microsoft Teams message with an Adaptive Card (Workflows or
    /// incoming-webhook URL).
    Teams,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::CloudEvents => "cloudevents",
            Format::Slack => "slack",
            Format::Teams => "teams",
        }
    }
}

/// Which changes a rampart announces, on a store shared by a fleet (on a
/// store only it uses, the two are the same).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Announce {
    /// Every change it sees, the fleet's included: for the one rampart of
    /// a fleet given the notifications file.
    #[default]
    Fleet,
    /// Only the changes it made: for a fleet whose every replica is given
    /// the notifications file, so that each change is announced once.
    Own,
}

impl Announce {
    pub fn as_str(self) -> &'static str {
        match self {
            Announce::Fleet => "fleet",
            Announce::Own => "own",
        }
    }
}

/// The notifications file, checked.
#[derive(Debug, Clone)]
pub struct Config {
    /// The approvals page, linked from every message.
    pub page_url: Option<Url>,
    pub announce: Announce,
    /// The CloudEvents `source` attribute.
    pub source: String,
    pub sinks: Vec<SinkConfig>,
}

/// One webhook.
#[derive(Clone)]
pub struct SinkConfig {
    /// Names the sink in logs, metrics and the audit log (the URL, a
    /// secret, appears nowhere).
    pub name: String,
    pub url: Url,
    pub format: Format,
    pub events: Vec<Kind>,
    /// Extra request headers, e.g. `Authorization` for a CloudEvents
    /// receiver.
    pub headers: HeaderMap,
    /// The whole request, connection included.
    pub timeout: Duration,
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// Notifications waiting for this sink at most; when full, the oldest
    /// is dropped.
    pub queue_size: usize,
}

impl std::fmt::Debug for SinkConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SinkConfig")
            .field("name", &self.name)
            .field("url", &format_args!("<redacted>"))
            .field("format", &self.format)
            .field("events", &self.events)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawConfig {
    #[serde(default)]
    page_url: Option<String>,
    #[serde(default)]
    source: Option<String>,
    #[serde(default)]
    announce: Option<String>,
    #[serde(default)]
    sinks: Vec<RawSink>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawSink {
    name: String,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    url_from_env: Option<String>,
    #[serde(default)]
    format: Option<String>,
    #[serde(default)]
    events: Option<Vec<String>>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    timeout: Option<String>,
    #[serde(default)]
    max_attempts: Option<u32>,
    #[serde(default)]
    initial_backoff: Option<String>,
    #[serde(default)]
    max_backoff: Option<String>,
    #[serde(default)]
    queue_size: Option<usize>,
}

/// A duration as in the snapshot (`15m`, `1h30m`), or milliseconds (`250ms`).
fn duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if let Some(ms) = text.strip_suffix("ms") {
        if !ms.is_empty() && ms.bytes().all(|b| b.is_ascii_digit()) {
            return ms
                .parse()
                .map(Duration::from_millis)
                .map_err(|_| "is too large".to_owned());
        }
    }
    crate::model::agent::parse_duration(text)
}

fn webhook_url(text: &str, field: &str) -> Result<Url, String> {
    let url = Url::parse(text.trim())
        .map_err(|e| format!("{field}: not a URL ({e}); give an http:// or https:// URL"))?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(format!(
            "{field}: the scheme '{}' is not http or https",
            url.scheme()
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("{field}: the URL has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "{field}: credentials in the URL are refused; put them in headers (e.g. Authorization)"
        ));
    }
    Ok(url)
}

impl Config {
    /// Reads and checks a notifications file; environment variables named
    /// by `urlFromEnv` are read now.
    pub fn load(path: &Path) -> Result<Config, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Config::parse(&text, |name| std::env::var(name).ok())
            .map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Parses and checks the file's text; `env` resolves `urlFromEnv`.
    /// Each error names the field and what to do.
    pub fn parse(text: &str, env: impl Fn(&str) -> Option<String>) -> Result<Config, String> {
        let raw: RawConfig = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
        let page_url = raw
            .page_url
            .as_deref()
            .map(|u| webhook_url(u, "pageUrl"))
            .transpose()?;
        let announce = match raw.announce.as_deref().map(str::trim) {
            None | Some("fleet") => Announce::Fleet,
            Some("own") => Announce::Own,
            Some(other) => {
                return Err(format!(
                    "announce: '{other}' is not fleet or own; give fleet (every change this rampart sees, for the one rampart of a fleet with this file) or own (only its own changes, when every replica has this file)"
                ))
            }
        };
        let source = raw.source.unwrap_or_else(|| DEFAULT_SOURCE.to_owned());
        if source.trim().is_empty() {
            return Err(
                "source: is empty; give a URI such as https://rampart.example.com, or leave it out"
                    .into(),
            );
        }
        if raw.sinks.is_empty() {
            return Err(
                "sinks: the list is empty; give at least one sink with a name and a url".into(),
            );
        }
        let mut names = HashSet::new();
        let mut sinks = Vec::with_capacity(raw.sinks.len());
        for (i, s) in raw.sinks.into_iter().enumerate() {
            let at = |field: &str| format!("sinks[{i}].{field}");
            let name = s.name.trim().to_owned();
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                return Err(format!(
                    "{}: '{}' must be letters, digits, '-', '_' or '.' (it labels metrics)",
                    at("name"),
                    s.name
                ));
            }
            if !names.insert(name.clone()) {
                return Err(format!("{}: '{name}' names two sinks", at("name")));
            }
            let url = match (s.url, s.url_from_env) {
                (Some(url), None) => webhook_url(&url, &at("url"))?,
                (None, Some(var)) => {
                    let value = env(&var).ok_or_else(|| {
                        format!(
                            "{}: the environment variable {var} is not set",
                            at("urlFromEnv")
                        )
                    })?;
                    webhook_url(&value, &format!("{} ({var})", at("urlFromEnv")))?
                }
                _ => {
                    return Err(format!(
                        "{}: give exactly one of url or urlFromEnv",
                        at("url")
                    ))
                }
            };
            let format = match s.format.as_deref().map(str::trim) {
                None | Some("cloudevents") => Format::CloudEvents,
                Some("slack") => Format::Slack,
                Some("teams") => Format::Teams,
                Some(other) => {
                    return Err(format!(
                        "{}: '{other}' is not one of cloudevents, slack, teams",
                        at("format")
                    ))
                }
            };
            let events = match s.events {
                None => Kind::ALL.to_vec(),
                Some(list) if list.is_empty() => {
                    return Err(format!("{}: the list is empty; leave it out for every event", at("events")))
                }
                Some(list) => list
                    .iter()
                    .map(|e| {
                        Kind::parse(e).ok_or_else(|| {
                            format!(
                                "{}: '{e}' is not one of pending, approved, denied, expired, cancelled",
                                at("events")
                            )
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            };
            let mut headers = HeaderMap::new();
            for (k, v) in &s.headers {
                let name = HeaderName::from_bytes(k.as_bytes())
                    .map_err(|_| format!("{}: '{k}' is not a header name", at("headers")))?;
                let mut value = HeaderValue::from_str(v).map_err(|_| {
                    format!(
                        "{}: the value of {k} is not valid header text",
                        at("headers")
                    )
                })?;
                value.set_sensitive(true);
                headers.insert(name, value);
            }
            let dur = |field: &str,
                       text: Option<String>,
                       default: Duration|
             -> Result<Duration, String> {
                match text {
                    None => Ok(default),
                    Some(t) => {
                        let d = duration(&t).map_err(|e| format!("{}: '{t}' {e}", at(field)))?;
                        if d.is_zero() {
                            return Err(format!("{}: must be more than zero", at(field)));
                        }
                        Ok(d)
                    }
                }
            };
            let timeout = dur("timeout", s.timeout, DEFAULT_TIMEOUT)?;
            let initial_backoff =
                dur("initialBackoff", s.initial_backoff, DEFAULT_INITIAL_BACKOFF)?;
            let max_backoff = dur("maxBackoff", s.max_backoff, DEFAULT_MAX_BACKOFF)?;
            if max_backoff < initial_backoff {
                return Err(format!(
                    "{}: is shorter than initialBackoff",
                    at("maxBackoff")
                ));
            }
            let max_attempts = s.max_attempts.unwrap_or(DEFAULT_MAX_ATTEMPTS);
            if !(1..=MAX_ATTEMPTS).contains(&max_attempts) {
                return Err(format!(
                    "{}: {max_attempts} is not between 1 and {MAX_ATTEMPTS}",
                    at("maxAttempts")
                ));
            }
            let queue_size = s.queue_size.unwrap_or(DEFAULT_QUEUE_SIZE);
            if !(1..=MAX_QUEUE_SIZE).contains(&queue_size) {
                return Err(format!(
                    "{}: {queue_size} is not between 1 and {MAX_QUEUE_SIZE}",
                    at("queueSize")
                ));
            }
            sinks.push(SinkConfig {
                name,
                url,
                format,
                events,
                headers,
                timeout,
                max_attempts,
                initial_backoff,
                max_backoff,
                queue_size,
            });
        }
        Ok(Config {
            page_url,
            announce,
            source,
            sinks,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(text, |name| {
            (name == "HOOK").then(|| "https://hooks.example.com/x".to_owned())
        })
    }

    #[test]
    fn a_small_file_gets_the_defaults() {
        let c =
            parse("sinks:\n  - {name: ce, url: 'https://events.example.com/rampart'}\n").unwrap();
        assert_eq!(c.source, "rampart");
        assert!(c.page_url.is_none());
        let s = &c.sinks[0];
        assert_eq!(s.format, Format::CloudEvents);
        assert_eq!(s.events, Kind::ALL.to_vec());
        assert_eq!(s.timeout, DEFAULT_TIMEOUT);
        assert_eq!(s.max_attempts, DEFAULT_MAX_ATTEMPTS);
        assert_eq!(s.queue_size, DEFAULT_QUEUE_SIZE);
    }

    #[test]
    fn every_setting_is_read() {
        let c = parse(
            "pageUrl: https://rampart.example.com/ui/approvals\nsource: https://rampart.example.com\nsinks:\n  - name: oncall.slack\n    format: slack\n    urlFromEnv: HOOK\n    events: [pending, expired]\n    headers: {X-Token: abc}\n    timeout: 3s\n    maxAttempts: 2\n    initialBackoff: 250ms\n    maxBackoff: 1m\n    queueSize: 7\n",
        )
        .unwrap();
        assert_eq!(
            c.page_url.unwrap().as_str(),
            "https://rampart.example.com/ui/approvals"
        );
        let s = &c.sinks[0];
        assert_eq!(s.url.as_str(), "https://hooks.example.com/x");
        assert_eq!(s.format, Format::Slack);
        assert_eq!(s.events, vec![Kind::Pending, Kind::Expired]);
        assert_eq!(s.headers["x-token"], "abc");
        assert_eq!(s.timeout, Duration::from_secs(3));
        assert_eq!(s.initial_backoff, Duration::from_millis(250));
        assert_eq!((s.max_attempts, s.queue_size), (2, 7));
        // The URL, a secret, stays out of debug output.
        assert!(!format!("{s:?}").contains("hooks.example.com"));
    }

    #[test]
    fn each_mistake_names_its_field() {
        let cases = [
            ("sinks: []", "sinks: the list is empty"),
            (
                "sinks:\n  - {name: a}",
                "sinks[0].url: give exactly one of url or urlFromEnv",
            ),
            (
                "sinks:\n  - {name: a, url: 'ftp://x/y'}",
                "sinks[0].url: the scheme 'ftp' is not http or https",
            ),
            (
                "sinks:\n  - {name: a, url: 'not a url'}",
                "sinks[0].url: not a URL",
            ),
            (
                "sinks:\n  - {name: a, url: 'https://u:p@x/y'}",
                "sinks[0].url: credentials in the URL are refused",
            ),
            (
                "sinks:\n  - {name: a, urlFromEnv: NOPE}",
                "sinks[0].urlFromEnv: the environment variable NOPE is not set",
            ),
            (
                "sinks:\n  - {name: 'a b', url: 'http://x'}",
                "sinks[0].name: 'a b' must be",
            ),
            (
                "sinks:\n  - {name: a, url: 'http://x'}\n  - {name: a, url: 'http://y'}",
                "sinks[1].name: 'a' names two sinks",
            ),
            (
                "announce: everyone\nsinks:\n  - {name: a, url: 'http://x'}",
                "announce: 'everyone' is not fleet or own",
            ),
            (
                "sinks:\n  - {name: a, url: 'http://x', format: email}",
                "sinks[0].format: 'email' is not one of",
            ),
            (
                "sinks:\n  - {name: a, url: 'http://x', events: [approve]}",
                "sinks[0].events: 'approve' is not one of",
            ),
            (
                "sinks:\n  - {name: a, url: 'http://x', timeout: 10}",
                "sinks[0].timeout: '10' ends with a number",
            ),
            (
                "sinks:\n  - {name: a, url: 'http://x', timeout: 0s}",
                "sinks[0].timeout: must be more than zero",
            ),
            (
                "sinks:\n  - {name: a, url: 'http://x', maxAttempts: 0}",
                "sinks[0].maxAttempts: 0 is not between 1 and 20",
            ),
            (
                "sinks:\n  - {name: a, url: 'http://x', queueSize: 0}",
                "sinks[0].queueSize: 0 is not between",
            ),
            (
                "sinks:\n  - {name: a, url: 'http://x', initialBackoff: 2m, maxBackoff: 1m}",
                "sinks[0].maxBackoff: is shorter",
            ),
            (
                "sinks:\n  - {name: a, url: 'http://x', headers: {'bad header': x}}",
                "sinks[0].headers: 'bad header' is not a header name",
            ),
            (
                "pageUrl: nope\nsinks:\n  - {name: a, url: 'http://x'}",
                "pageUrl: not a URL",
            ),
            (
                "sinks:\n  - {name: a, url: 'http://x', retries: 3}",
                "unknown field `retries`",
            ),
        ];
        for (text, want) in cases {
            let err = parse(text).unwrap_err();
            assert!(err.contains(want), "{text:?}: {err}");
        }
    }

    proptest! {
        /// Any text gives a config or an error, never a panic.
        #[test]
        fn any_text_parses_or_fails_cleanly(text in "\\PC{0,200}") {
            let _ = parse(&text);
        }

        /// Any sink the grammar allows parses back to what was written.
        #[test]
        fn written_sinks_read_back(
            name in "[a-z][a-z0-9_.-]{0,20}",
            host in "[a-z]{1,10}\\.example",
            attempts in 1u32..=20,
            queue in 1usize..=100_000,
            ms in 1u64..=60_000,
        ) {
            let text = format!(
                "sinks:\n  - {{name: '{name}', url: 'https://{host}/hook', maxAttempts: {attempts}, queueSize: {queue}, initialBackoff: {ms}ms, maxBackoff: 2m}}\n"
            );
            let c = parse(&text).unwrap();
            let s = &c.sinks[0];
            prop_assert_eq!(&s.name, &name);
            prop_assert_eq!(s.url.host_str(), Some(host.as_str()));
            prop_assert_eq!((s.max_attempts, s.queue_size), (attempts, queue));
            prop_assert_eq!(s.initial_backoff, Duration::from_millis(ms));
        }
    }
}
