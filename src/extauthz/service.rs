//! `envoy.service.auth.v3.Authorization/Check`: the front door for agents
//! whose Azure Resource Manager traffic goes through Envoy. Each request is
//! mapped to (operation, scope), its principal read from the configured
//! source, and decided on the same snapshot, grants, metrics and audit as
//! `rampart.v1.Authorizer/Authorize`. Batches and deployments are allowed
//! only when every operation they carry is (see [`super::nested`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use envoy_types::ext_authz::v3::pb::{
    Authorization, AuthorizationServer, CheckRequest, CheckResponse,
};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::HttpRequest;
use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
use tonic::{Request, Response, Status};

use super::answer::{self, Code, Filed, Judged};
use super::identity::{header, IdentitySource};
use super::mapping::{map_request, Method};
use super::nested::{self, Carrier, Inner, NestedError};
use crate::audit::AuditLog;
use crate::elevation::{Broker, ElevationRequest, ElevationState};
use crate::engine::{self, Engine, Loaded, RequestError, Verdict};
use crate::server::metrics;

/// The encoded descriptor set of `envoy.service.auth.v3` (and what it
/// imports), for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    tonic::include_file_descriptor_set!("envoy_ext_authz_descriptor");

/// The largest `CheckRequest` accepted: a body at the inspection limit,
/// plus headers.
pub const MAX_CHECK_MESSAGE: usize = nested::MAX_BODY_BYTES + (1 << 20);

/// The header carrying an agent's reason for an elevation rampart files.
pub const DEFAULT_JUSTIFICATION_HEADER: &str = "x-rampart-justification";
/// The header Envoy sets when it sent a truncated body.
const PARTIAL_BODY_HEADER: &str = "x-envoy-auth-partial-body";

/// How the front door reads requests: per deployment (they follow from how
/// Envoy is configured beside it), so they are flags, not snapshot content.
#[derive(Debug, Clone)]
pub struct ExtAuthzSettings {
    /// Where the principal id comes from.
    pub identity: IdentitySource,
    /// File an elevation for an `APPROVAL_REQUIRED` answer.
    pub elevate: bool,
    /// The request header whose value justifies a filed elevation; it is
    /// never forwarded to ARM.
    pub justification_header: String,
}

impl Default for ExtAuthzSettings {
    fn default() -> Self {
        ExtAuthzSettings {
            identity: IdentitySource::default(),
            elevate: false,
            justification_header: DEFAULT_JUSTIFICATION_HEADER.to_owned(),
        }
    }
}

pub struct CheckService {
    engine: Arc<Engine>,
    broker: Arc<Broker>,
    settings: Arc<ExtAuthzSettings>,
    audit: Option<(Arc<AuditLog>, f64)>,
}

/// The service, ready to add to a tonic router.
pub fn server(
    broker: Arc<Broker>,
    settings: Arc<ExtAuthzSettings>,
    audit: Option<(Arc<AuditLog>, f64)>,
) -> AuthorizationServer<CheckService> {
    AuthorizationServer::new(CheckService {
        engine: broker.engine().clone(),
        broker,
        settings,
        audit,
    })
    .max_decoding_message_size(MAX_CHECK_MESSAGE)
}

/// What the decision path concluded, before any elevation is filed.
enum Outcome {
    Allow(Judged),
    Deny { judged: Judged, principal: String },
    ApprovalRequired { judged: Judged, principal: String },
    Refuse { code: Code, message: String },
}

/// No request attributes: conditions see none (Envoy's are not ABAC's).
const NO_ATTRIBUTES: &[(&str, &str)] = &[];

impl CheckService {
    /// Decides one operation, with metrics and sampled audit.
    fn decide(
        &self,
        loaded: &Loaded,
        principal: &str,
        operation: &str,
        scope: &str,
        data_action: bool,
        http: &HttpRequest,
        at: Option<&str>,
    ) -> Result<Judged, RequestError> {
        let started = Instant::now();
        let request = engine::Request {
            principal_id: principal,
            action: operation,
            scope,
            data_action,
            attributes: &NO_ATTRIBUTES,
            explain: false,
            dry_run: false,
        };
        let decision = match loaded.decide_with(&request, Some(&self.engine.grants)) {
            Ok(d) => {
                metrics::record_decision(d.verdict, d.reason, started.elapsed());
                d
            }
            Err(e) => {
                metrics::record_invalid();
                return Err(e);
            }
        };
        if let Some((log, rate)) = &self.audit {
            if crate::audit::sampled(*rate) {
                log.write(serde_json::json!({
                    "event": "decision",
                    "via": "ext_authz",
                    "decision_id": decision.decision_id.to_string(),
                    "principal": principal,
                    "action": operation,
                    "scope": scope,
                    "data_action": data_action,
                    "decision": answer::verdict_name(decision.verdict),
                    "reason": decision.reason.as_str(),
                    "revision": decision.snapshot_revision,
                    "request_id": http.id,
                    "method": http.method,
                    "inner": at,
                }));
            }
        }
        Ok(Judged {
            verdict: decision.verdict,
            reason: decision.reason,
            operation: operation.to_owned(),
            scope: scope.to_owned(),
            data_action,
            decision_id: decision.decision_id,
            at: at.map(str::to_owned),
        })
    }

    /// The whole decision path for one request, without side effects but
    /// the decisions' own (grant uses, metrics, audit).
    fn judge(&self, attributes: &AttributeContext) -> Outcome {
        let Some(http) = attributes.request.as_ref().and_then(|r| r.http.as_ref()) else {
            return Outcome::Refuse {
                code: Code::InvalidRequestPath,
                message: "the check carries no HTTP request (attributes.request.http)".into(),
            };
        };
        let method = match Method::parse(&http.method) {
            Ok(m) => m,
            Err(e) => return invalid_path(e.to_string()),
        };
        let principal = match self.settings.identity.principal(attributes, http) {
            Ok(p) => p,
            Err(e) => {
                return Outcome::Refuse {
                    code: Code::IdentityNotFound,
                    message: format!(
                        "rampart found no identity for this request ({}): {e}",
                        self.settings.identity
                    ),
                }
            }
        };
        let loaded = self.engine.current();
        let routes = &loaded.snapshot.routes;
        let mut operation = String::with_capacity(96);

        let carrier = nested::carrier(method, &http.path);
        let outer = if carrier == Some(Carrier::Batch) {
            None
        } else {
            let mapping = match map_request(routes, method, &http.path, &mut operation) {
                Ok(m) => m,
                Err(e) => {
                    return invalid_path(format!("{} {}: {e}", http.method, bounded(&http.path)))
                }
            };
            let judged = match self.decide(
                &loaded,
                &principal,
                mapping.operation,
                mapping.scope,
                mapping.data_action,
                http,
                None,
            ) {
                Ok(j) => j,
                Err(e) => return invalid_path(format!("{}: {}", e.field, e.message)),
            };
            if judged.verdict != Verdict::Allow {
                return verdict_outcome(judged, principal);
            }
            Some(judged)
        };
        let Some(carrier) = carrier else {
            // Not a carrier: the outer decision is the answer.
            return outer.map_or_else(|| invalid_path("no decision".into()), Outcome::Allow);
        };

        let ops = match body(http).and_then(|b| nested::inner_operations(carrier, b)) {
            Ok(ops) => ops,
            Err(e) => return unverifiable(&e.to_string()),
        };
        let mut last = None;
        let count = ops.len();
        for op in &ops {
            let (op_name, scope, data_action) = match &op.inner {
                Inner::Http { method, path } => {
                    match map_request(routes, *method, path, &mut operation) {
                        Ok(m) => (m.operation.to_owned(), m.scope.to_owned(), m.data_action),
                        Err(e) => return unverifiable(&format!("{}: {e}", op.at)),
                    }
                }
                Inner::Write { operation, scope } => (operation.clone(), scope.clone(), false),
            };
            let judged = match self.decide(
                &loaded,
                &principal,
                &op_name,
                &scope,
                data_action,
                http,
                Some(&op.at),
            ) {
                Ok(j) => j,
                Err(e) => return unverifiable(&format!("{}: {}: {}", op.at, e.field, e.message)),
            };
            if judged.verdict != Verdict::Allow {
                return verdict_outcome(judged, principal);
            }
            last = Some(judged);
        }
        match (outer, last) {
            (Some(outer), _) => Outcome::Allow(outer),
            (None, Some(mut last)) => {
                // A batch: the envelope itself is no operation.
                last.operation = format!("batch of {count}");
                last.scope = "/".into();
                last.at = None;
                Outcome::Allow(last)
            }
            (None, None) => unverifiable("the batch carries no request"),
        }
    }

    /// Files the elevation an `APPROVAL_REQUIRED` answer names.
    async fn file(&self, judged: &Judged, principal: &str, http: &HttpRequest) -> Filed {
        let justification = header(http, &self.settings.justification_header)
            .filter(|j| !j.trim().is_empty())
            .map(|j| {
                j.chars()
                    .take(crate::elevation::broker::MAX_TEXT)
                    .collect::<String>()
            })
            .unwrap_or_else(|| {
                format!(
                    "requested through Envoy: {} {}",
                    http.method,
                    bounded(&http.path)
                )
            });
        let filed = self
            .broker
            .file(ElevationRequest {
                principal_id: principal,
                action: &judged.operation,
                scope: &judged.scope,
                data_action: judged.data_action,
                justification: &justification,
                requested_duration: None,
                wait_timeout: None,
                attributes: BTreeMap::new(),
            })
            .await;
        match filed {
            Ok(e) => Filed::Elevation {
                id: e.id,
                state: state_name(e.state),
            },
            Err(e) => Filed::Failed(e.to_string()),
        }
    }

    async fn check_attributes(&self, attributes: &AttributeContext) -> CheckResponse {
        let strip = [self.settings.justification_header.as_str()];
        match self.judge(attributes) {
            Outcome::Allow(judged) => answer::allow(&judged, &strip),
            Outcome::Deny { judged, principal } => answer::deny(&judged, &principal),
            Outcome::Refuse { code, message } => answer::refuse(code, &message, None, None, &[]),
            Outcome::ApprovalRequired { judged, principal } => {
                let http = attributes
                    .request
                    .as_ref()
                    .and_then(|r| r.http.as_ref())
                    .cloned()
                    .unwrap_or_default();
                if !self.settings.elevate {
                    return answer::approval_required(&judged, &principal, &Filed::NotAsked);
                }
                let filed = self.file(&judged, &principal, &http).await;
                if matches!(&filed, Filed::Elevation { state, .. } if *state == "APPROVED" || *state == "NOT_NEEDED")
                {
                    // Auto-approved (or granted meanwhile): judge once more.
                    if let Outcome::Allow(judged) = self.judge(attributes) {
                        return answer::allow(&judged, &strip);
                    }
                }
                answer::approval_required(&judged, &principal, &filed)
            }
        }
    }
}

#[tonic::async_trait]
impl Authorization for CheckService {
    async fn check(
        &self,
        request: Request<CheckRequest>,
    ) -> Result<Response<CheckResponse>, Status> {
        let attributes = request.into_inner().attributes.unwrap_or_default();
        Ok(Response::new(self.check_attributes(&attributes).await))
    }
}

fn verdict_outcome(judged: Judged, principal: String) -> Outcome {
    match judged.verdict {
        Verdict::Allow => Outcome::Allow(judged),
        Verdict::Deny => Outcome::Deny { judged, principal },
        Verdict::ApprovalRequired => Outcome::ApprovalRequired { judged, principal },
    }
}

fn invalid_path(message: String) -> Outcome {
    Outcome::Refuse {
        code: Code::InvalidRequestPath,
        message,
    }
}

fn unverifiable(why: &str) -> Outcome {
    Outcome::Refuse {
        code: Code::RequestBodyNotVerifiable,
        message: format!(
            "rampart refuses a request that carries other requests unless it can judge each of them: {why}"
        ),
    }
}

/// The request body as Envoy sent it, refused when absent or truncated.
fn body(http: &HttpRequest) -> Result<&[u8], NestedError> {
    if header(http, PARTIAL_BODY_HEADER).is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return Err(NestedError::Partial);
    }
    let body = if http.raw_body.is_empty() {
        http.body.as_bytes()
    } else {
        &http.raw_body
    };
    if body.is_empty() {
        return Err(NestedError::NoBody);
    }
    // Envoy reports the body's full size; less than that arrived.
    if usize::try_from(http.size).is_ok_and(|size| size > body.len()) {
        return Err(NestedError::Partial);
    }
    Ok(body)
}

/// A path for messages: at most 512 bytes.
fn bounded(path: &str) -> &str {
    let mut end = path.len().min(512);
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    &path[..end]
}

/// The one spelling of an elevation state (the API's).
fn state_name(state: ElevationState) -> &'static str {
    crate::server::convert::elevation_state(state).as_str_name()
}
