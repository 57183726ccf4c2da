//! The page's JSON API under `/ui/api/`: the Approvals service's calls for
//! a browser. Each call is authenticated as gRPC calls are (a bearer token,
//! or a mapped client certificate), shows and acts on what the gRPC API
//! would, and fails with the same message, as
//! `{"code": "PERMISSION_DENIED", "message": "…"}`.
//!
//! Cross-site requests: a bearer token travels in a header the page sets,
//! which a browser never adds to another site's request by itself. A client
//! certificate, though, is presented to any site's request, like a cookie;
//! so every call must also carry `X-Rampart-UI: 1`, a header no cross-site
//! request can set without a CORS preflight, which this API never answers
//! with permission. Browsers that send `Sec-Fetch-Site` are also held to
//! same-origin requests.

use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::{Body, Bytes};
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Status};

use super::{json, preview, UiState};
use crate::elevation::store::{ElevationQuery, GrantQuery};
use crate::elevation::{Approval, Elevation, ElevationState};
use crate::server::auth::{self, Caller};
use crate::server::convert;

/// The largest request body accepted (approve, deny and revoke bodies are
/// a few hundred bytes).
pub const MAX_BODY: usize = 64 << 10;
/// The header every API call must carry (see the module doc).
pub const CSRF_HEADER: &str = "x-rampart-ui";
/// Resolved elevations listed at most.
const MAX_HISTORY: usize = 500;
/// How often an idle event stream carries a comment, so proxies and the
/// browser keep it open.
const KEEPALIVE: Duration = Duration::from_secs(15);

type Shared = State<Arc<UiState>>;

/// An error as the page receives it: the gRPC code's name and message.
#[derive(Debug)]
pub struct ApiError(Status);

impl From<Status> for ApiError {
    fn from(status: Status) -> ApiError {
        ApiError(status)
    }
}

/// The HTTP status of a gRPC code, and the code's name.
fn http_status(code: Code) -> (StatusCode, &'static str) {
    let status = match code {
        Code::InvalidArgument => StatusCode::BAD_REQUEST,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::FailedPrecondition => StatusCode::CONFLICT,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    (status, convert::code_name(code))
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = http_status(self.0.code());
        let body = json!({"code": code, "message": self.0.message()});
        let mut response = (status, axum::Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// The authenticated caller of an API request.
pub struct Viewer(pub Caller);

impl FromRequestParts<Arc<UiState>> for Viewer {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<UiState>,
    ) -> Result<Viewer, ApiError> {
        check_same_origin(&parts.headers)?;
        // The Approvals service's own interceptor, on the same metadata and
        // connection (whose client certificate tonic recorded).
        let mut request = axum::http::Request::new(());
        *request.headers_mut() = parts.headers.clone();
        *request.extensions_mut() = parts.extensions.clone();
        let authenticated = state.tokens.interceptor(false)(tonic::Request::from_http(request))?;
        Ok(Viewer(auth::caller(&authenticated)?))
    }
}

/// Refuses requests a page on another site could have made.
fn check_same_origin(headers: &HeaderMap) -> Result<(), Status> {
    if headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok()) != Some("1") {
        return Err(Status::permission_denied(format!(
            "API calls must carry the header {CSRF_HEADER}: 1 (the approvals page sends it)"
        )));
    }
    let site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok());
    if site.is_some_and(|s| s != "same-origin" && s != "none") {
        return Err(Status::permission_denied(
            "cross-site requests to the approvals API are refused",
        ));
    }
    Ok(())
}

/// Whether the caller sees this agent's elevations and grants: as in the
/// Approvals service, rule (a), or an admin token.
/// The agents whose records `caller` may list (`None`: every agent).
fn visible_agents(state: &UiState, caller: &Caller) -> Option<Vec<String>> {
    (!caller.admin).then(|| state.broker.visible_agents(&caller.principal_id))
}

fn visible(state: &UiState, caller: &Caller, agent_id: &str) -> bool {
    caller.admin
        || state
            .broker
            .may_interact_with(&caller.principal_id, agent_id)
}

/// An elevation as the page shows it to `caller`: the elevation, and while
/// it is pending, what approving would lend and whether the caller may.
fn view(state: &UiState, caller: &Caller, e: &Elevation, now: SystemTime) -> Value {
    let mut v = json::elevation(e);
    if e.state.is_pending() {
        let loaded = state.broker.engine().current();
        v["preview"] = preview::preview(&loaded.snapshot, e);
        drop(loaded);
        let approve = state
            .broker
            .check_approver(&caller.principal_id, e)
            .map_err(convert::elevation_error);
        v["viewer"] = json!({
            "mayApprove": approve.is_ok(),
            "approveRefusal": approve.err().map(|s| s.message().to_owned()),
            "mayDeny": state.broker.may_interact_with(&caller.principal_id, &e.agent_id),
        });
        v["waitingSeconds"] = json!(json::seconds_between(e.created_at, now));
        v["waitLeftSeconds"] = json!(json::seconds_between(now, e.wait_deadline));
    }
    v
}

pub async fn not_found(uri: axum::http::Uri) -> Response {
    if uri.path().starts_with("/ui/api/") {
        ApiError(Status::not_found(format!("no API call {}", uri.path()))).into_response()
    } else {
        (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("not found; the approvals page is {}\n", super::PAGE_PATH),
        )
            .into_response()
    }
}

pub async fn me(Viewer(caller): Viewer) -> Response {
    axum::Json(json!({"principal": caller.principal_id, "admin": caller.admin})).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// `pending` (default), `resolved` or `all`.
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    limit: Option<usize>,
}

pub async fn elevations(
    State(state): Shared,
    Viewer(caller): Viewer,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| Status::invalid_argument(e.body_text()))?;
    let wanted = query.state.as_deref().unwrap_or("pending");
    let keep: fn(&Elevation) -> bool = match wanted {
        "pending" => |e| e.state.is_pending(),
        "resolved" => |e| !e.state.is_pending(),
        "all" => |_| true,
        other => {
            return Err(Status::invalid_argument(format!(
                "state '{other}' is not one of pending, resolved, all"
            ))
            .into())
        }
    };
    let limit = query.limit.unwrap_or(100).min(MAX_HISTORY);
    let list: Vec<Elevation> = if wanted == "pending" {
        state
            .broker
            .pending_elevations()
            .into_iter()
            .filter(|e| visible(&state, &caller, &e.agent_id))
            .take(limit)
            .collect()
    } else {
        // Most recent first, from the store (history is not in memory).
        let query = ElevationQuery {
            agent_ids: visible_agents(&state, &caller),
            newest_first: true,
            ..ElevationQuery::default()
        };
        state
            .broker
            .list_elevations(&query, MAX_HISTORY as u32, "")
            .map_err(convert::elevation_error)?
            .items
            .into_iter()
            .filter(keep)
            .take(limit)
            .collect()
    };
    let now = SystemTime::now();
    let items: Vec<Value> = list
        .iter()
        .take(limit)
        .map(|e| view(&state, &caller, e, now))
        .collect();
    Ok(axum::Json(json!({ "elevations": items })).into_response())
}

/// Parses a JSON body into `T`; a bad body is INVALID_ARGUMENT naming why.
fn body<T: serde::de::DeserializeOwned>(headers: &HeaderMap, bytes: &Bytes) -> Result<T, Status> {
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !json {
        return Err(Status::invalid_argument(
            "the body must be JSON (Content-Type: application/json)",
        ));
    }
    let bytes: &[u8] = if bytes.is_empty() { b"{}" } else { bytes };
    serde_json::from_slice(bytes).map_err(|e| Status::invalid_argument(format!("body: {e}")))
}

fn comment(text: &Option<String>) -> Option<&str> {
    text.as_deref().filter(|t| !t.trim().is_empty())
}

/// The `{id}` of a path. A struct, not a `String`: tonic's route to the
/// page adds its own `rest` parameter, which a struct ignores.
#[derive(Deserialize)]
pub struct IdPath {
    id: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ApproveBody {
    /// Shortens the grant, e.g. `10m`.
    #[serde(default)]
    duration: Option<String>,
    #[serde(default)]
    max_uses: u32,
    #[serde(default)]
    comment: Option<String>,
    /// Binds the grant to the elevation's request body (absent: the
    /// default, bound for a write whose request is known).
    #[serde(default)]
    bind_to_request: Option<bool>,
}

pub async fn approve(
    State(state): Shared,
    Viewer(caller): Viewer,
    Path(IdPath { id }): Path<IdPath>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    let req: ApproveBody = body(&headers, &bytes)?;
    let duration = match req.duration.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(text) => Some(
            crate::model::agent::parse_duration(text)
                .map_err(|e| Status::invalid_argument(format!("duration '{text}' {e}")))?,
        ),
    };
    let elevation = state
        .broker
        .approve(
            &caller.principal_id,
            &id,
            Approval {
                duration,
                max_uses: req.max_uses,
                comment: comment(&req.comment),
                bind_to_request: req.bind_to_request,
            },
        )
        .await
        .map_err(convert::elevation_error)?;
    Ok(axum::Json(view(&state, &caller, &elevation, SystemTime::now())).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CommentBody {
    #[serde(default)]
    comment: Option<String>,
}

pub async fn deny(
    State(state): Shared,
    Viewer(caller): Viewer,
    Path(IdPath { id }): Path<IdPath>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    let req: CommentBody = body(&headers, &bytes)?;
    let elevation = state
        .broker
        .deny(&caller.principal_id, &id, comment(&req.comment))
        .await
        .map_err(convert::elevation_error)?;
    Ok(axum::Json(view(&state, &caller, &elevation, SystemTime::now())).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantsQuery {
    /// Ended grants too.
    #[serde(default)]
    all: bool,
}

pub async fn grants(
    State(state): Shared,
    Viewer(caller): Viewer,
    query: Result<Query<GrantsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| Status::invalid_argument(e.body_text()))?;
    let now = SystemTime::now();
    let grants = GrantQuery {
        active_only: !query.all,
        agent_ids: visible_agents(&state, &caller),
        newest_first: true,
        ..GrantQuery::default()
    };
    let list = state
        .broker
        .list_grants(&grants, MAX_HISTORY as u32, "")
        .map_err(convert::elevation_error)?
        .items;
    let items: Vec<Value> = list
        .iter()
        .take(MAX_HISTORY)
        .map(|g| {
            let mut v = json::grant(g);
            v["expiresInSeconds"] = json!(json::seconds_between(now, g.expires_at));
            v
        })
        .collect();
    Ok(axum::Json(json!({ "grants": items })).into_response())
}

pub async fn revoke(
    State(state): Shared,
    Viewer(caller): Viewer,
    Path(IdPath { id }): Path<IdPath>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    let req: CommentBody = body(&headers, &bytes)?;
    let grant = state
        .broker
        .revoke(
            &caller.principal_id,
            caller.admin,
            &id,
            comment(&req.comment),
        )
        .map_err(convert::elevation_error)?;
    Ok(axum::Json(json::grant(&grant)).into_response())
}

/// The freeze switch as the page shows it.
fn freeze_json(state: &crate::elevation::policy::freeze::FreezeState) -> Value {
    json!({
        "frozen": state.frozen,
        "by": state.by,
        "reason": state.reason,
        "sinceMs": state.since_ms,
    })
}

/// `GET /ui/api/freeze`: the freeze switch, for anyone signed in.
pub async fn freeze(State(state): Shared, Viewer(_): Viewer) -> Response {
    axum::Json(freeze_json(&state.broker.freeze_state())).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FreezeBody {
    frozen: bool,
    #[serde(default)]
    reason: String,
}

/// `POST /ui/api/freeze` `{"frozen": true|false, "reason": "…"}`: Freeze or
/// Unfreeze, for admin tokens only, as on the Admin service.
pub async fn set_freeze(
    State(state): Shared,
    Viewer(caller): Viewer,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    if !caller.admin {
        return Err(Status::permission_denied(format!(
            "{} is authenticated but freezing needs a token marked admin: true",
            caller.principal_id
        ))
        .into());
    }
    let req: FreezeBody = body(&headers, &bytes)?;
    let now = state
        .broker
        .set_freeze(req.frozen, &caller.principal_id, &req.reason)
        .map_err(convert::elevation_error)?;
    Ok(axum::Json(freeze_json(&now)).into_response())
}

/// One Server-Sent Event.
fn event(name: &str, data: &Value) -> Bytes {
    // serde_json never writes a raw newline, so the data is one line.
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}

/// `GET /ui/api/events`: Server-Sent Events from the broker's watch, the
/// one `WatchElevations` uses: first every pending elevation the caller may
/// see (`elevation` events), then `ready`, then each change as it happens.
/// If the stream falls behind, a `resync` event ends it: the page lists
/// again and reconnects.
pub async fn events(State(state): Shared, Viewer(caller): Viewer) -> Response {
    // Subscribe first, so nothing between the listing and the stream is
    // lost (a change may arrive twice; the page keys by id).
    let mut changes = state.broker.subscribe();
    let now = SystemTime::now();
    let pending: Vec<Elevation> = state
        .broker
        .pending_elevations()
        .into_iter()
        .filter(|e| visible(&state, &caller, &e.agent_id))
        .collect();
    // Elevations this stream has shown as pending: their resolution is
    // sent even if the caller lost sight of the agent meanwhile.
    let mut shown: HashSet<String> = pending.iter().map(|e| e.id.clone()).collect();
    let initial: Vec<Bytes> = pending
        .iter()
        .map(|e| event("elevation", &view(&state, &caller, e, now)))
        .collect();
    let (tx, rx) = mpsc::channel::<Result<Bytes, Infallible>>(64);
    let task_state = state.clone();
    tokio::spawn(async move {
        let state = task_state;
        for frame in initial {
            if tx.send(Ok(frame)).await.is_err() {
                return;
            }
        }
        if tx.send(Ok(event("ready", &json!({})))).await.is_err() {
            return;
        }
        let mut keepalive = tokio::time::interval(KEEPALIVE);
        keepalive.tick().await;
        loop {
            let change = tokio::select! {
                _ = crate::server::stopped(state.stop.clone()) => return,
                _ = tx.closed() => return,
                _ = keepalive.tick() => {
                    if tx.send(Ok(Bytes::from_static(b": keepalive\n\n"))).await.is_err() {
                        return;
                    }
                    continue;
                }
                change = changes.recv() => change,
            };
            let frame = match change {
                Ok(e) if e.state == ElevationState::NotNeeded => continue,
                Ok(e) => {
                    let seen = !e.state.is_pending() && shown.remove(&e.id);
                    if !seen && !visible(&state, &caller, &e.agent_id) {
                        continue;
                    }
                    if e.state.is_pending() {
                        shown.insert(e.id.clone());
                    }
                    event("elevation", &view(&state, &caller, &e, SystemTime::now()))
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    let _ = tx
                        .send(Ok(event(
                            "resync",
                            &json!({"message": format!("the stream fell {n} changes behind; list again")}),
                        )))
                        .await;
                    return;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            };
            if tx.send(Ok(frame)).await.is_err() {
                return;
            }
        }
    });
    (
        [
            (header::CONTENT_TYPE, "text/event-stream; charset=utf-8"),
            (header::HeaderName::from_static("x-accel-buffering"), "no"),
        ],
        Body::from_stream(ReceiverStream::new(rx)),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn only_same_origin_calls_with_the_page_header_pass() {
        assert!(check_same_origin(&headers(&[(CSRF_HEADER, "1")])).is_ok());
        assert!(check_same_origin(&headers(&[
            (CSRF_HEADER, "1"),
            ("sec-fetch-site", "same-origin")
        ]))
        .is_ok());
        for h in [
            headers(&[]),
            headers(&[(CSRF_HEADER, "yes")]),
            headers(&[(CSRF_HEADER, "1"), ("sec-fetch-site", "cross-site")]),
            headers(&[(CSRF_HEADER, "1"), ("sec-fetch-site", "same-site")]),
        ] {
            assert_eq!(
                check_same_origin(&h).unwrap_err().code(),
                Code::PermissionDenied
            );
        }
    }

    #[test]
    fn errors_keep_the_grpc_code_name_and_message() {
        let response =
            ApiError(Status::permission_denied("viewer does not hold x (rule b)")).into_response();
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert_eq!(
            http_status(Code::Unauthenticated).0,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            http_status(Code::FailedPrecondition).1,
            "FAILED_PRECONDITION"
        );
    }

    #[test]
    fn event_data_stays_on_one_line() {
        let frame = event(
            "elevation",
            &json!({"justification": "a\nb\r\nevent: fake"}),
        );
        let text = std::str::from_utf8(&frame).unwrap();
        assert_eq!(text.matches('\n').count(), 3, "{text}");
        assert!(text.starts_with("event: elevation\ndata: {"));
    }
}
