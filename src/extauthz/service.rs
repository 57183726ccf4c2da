//! `envoy.service.auth.v3.Authorization/Check`: the front door for agents
//! whose Azure Resource Manager traffic goes through Envoy. Each request is
//! mapped to (operation, scope), its principal read from the configured
//! source, and decided on the same snapshot, grants, metrics and audit as
//! `rampart.v1.Authorizer/Authorize`. Batches and deployments are allowed
//! only when every operation they carry is (see [`super::nested`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use super::answer::{self, Answer, Code, Filed, Judged};
use super::identity::IdentitySource;
use super::mapping::{map_request, Method};
use super::nested::{self, Carrier, Inner, NestedError};
use super::wire::{CheckRequest, HttpRequest};
use crate::audit::AuditLog;
use crate::elevation::policy::exact;
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

impl CheckService {
    /// Sampled decisions go to `audit`, as `Authorize`'s do.
    pub fn new(
        broker: Arc<Broker>,
        settings: Arc<ExtAuthzSettings>,
        audit: Option<(Arc<AuditLog>, f64)>,
    ) -> CheckService {
        CheckService {
            engine: broker.engine().clone(),
            broker,
            settings,
            audit,
        }
    }
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

/// Whether a decision only asks (takes no grant use) or acts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Probe,
    Consume,
}

/// One operation to decide.
struct Question<'a> {
    operation: &'a str,
    scope: &'a str,
    data_action: bool,
    /// Where in the body an inner operation was found.
    at: Option<&'a str>,
}

impl Question<'_> {
    fn to_owned(&self) -> OwnedQuestion {
        OwnedQuestion {
            operation: self.operation.to_owned(),
            scope: self.scope.to_owned(),
            data_action: self.data_action,
            at: self.at.map(str::to_owned),
        }
    }
}

struct OwnedQuestion {
    operation: String,
    scope: String,
    data_action: bool,
    at: Option<String>,
}

impl OwnedQuestion {
    fn borrow(&self) -> Question<'_> {
        Question {
            operation: &self.operation,
            scope: &self.scope,
            data_action: self.data_action,
            at: self.at.as_deref(),
        }
    }

    /// Names the operation in messages.
    fn label(&self) -> &str {
        self.at.as_deref().unwrap_or("the request")
    }
}

impl CheckService {
    /// Decides one operation. A probe takes no use of a grant; metrics and
    /// sampled audit record every decision that answers the request (all
    /// but the probes that allow).
    fn decide(
        &self,
        loaded: &Loaded,
        principal: &str,
        http: &HttpRequest<'_>,
        question: &Question<'_>,
        mode: Mode,
    ) -> Result<Judged, RequestError> {
        let started = Instant::now();
        // With grants about, a grant may be bound to one body: the body's
        // digest (on the stack) is then the request's one attribute.
        let mut hex = [0u8; 64];
        let digested: [(&str, &str); 1];
        let with_digest: &[(&str, &str)];
        let bound_body = if self.engine.grants.is_empty() {
            None
        } else {
            body(http).ok()
        };
        let attributes: &dyn crate::model::RequestAttributes = match bound_body {
            Some(b) => {
                digested = [(exact::DIGEST_ATTRIBUTE, exact::sha256_hex_into(b, &mut hex))];
                with_digest = &digested;
                &with_digest
            }
            _ => &NO_ATTRIBUTES,
        };
        let request = engine::Request {
            principal_id: principal,
            action: question.operation,
            scope: question.scope,
            data_action: question.data_action,
            attributes,
            explain: false,
            dry_run: mode == Mode::Probe,
        };
        let decision = match loaded.decide_with(&request, Some(self.engine.live())) {
            Ok(d) => d,
            Err(e) => {
                metrics::record_invalid();
                return Err(e);
            }
        };
        if mode == Mode::Probe && decision.verdict == Verdict::Allow {
            return Ok(Judged {
                verdict: decision.verdict,
                reason: decision.reason,
                operation: String::new(),
                scope: String::new(),
                data_action: question.data_action,
                decision_id: decision.decision_id,
                at: None,
            });
        }
        metrics::record_decision(decision.verdict, decision.reason, started.elapsed());
        if let Some((log, rate)) = &self.audit {
            if crate::audit::sampled(*rate) {
                let mut event = crate::audit::DecisionEvent::new(
                    principal,
                    question.operation,
                    question.scope,
                    question.data_action,
                    &decision,
                );
                event.http = Some(crate::audit::HttpOrigin {
                    via: "ext_authz",
                    request_id: http.id(),
                    method: http.method(),
                    inner: question.at,
                });
                log.write(&event);
            }
        }
        Ok(Judged {
            verdict: decision.verdict,
            reason: decision.reason,
            operation: question.operation.to_owned(),
            scope: question.scope.to_owned(),
            data_action: question.data_action,
            decision_id: decision.decision_id,
            at: question.at.map(str::to_owned),
        })
    }

    /// The whole decision path for one request, without side effects but
    /// the decisions' own (grant uses, metrics, audit).
    fn judge(&self, request: &CheckRequest) -> Outcome {
        let Some(http) = request.http() else {
            return Outcome::Refuse {
                code: Code::InvalidRequestPath,
                message: "the check carries no HTTP request (attributes.request.http)".into(),
            };
        };
        let method = match Method::parse(http.method()) {
            Ok(m) => m,
            Err(e) => return invalid_path(e.to_string()),
        };
        let principal = match self.settings.identity.principal(request) {
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
        let carrier = nested::carrier(method, http.path());

        // Every operation the request asks for: itself (unless a batch,
        // which is only an envelope), then what it carries.
        let mut questions: Vec<OwnedQuestion> = Vec::new();
        if carrier != Some(Carrier::Batch) {
            let mapping = match map_request(routes, method, http.path(), &mut operation) {
                Ok(m) => m,
                Err(e) => {
                    return invalid_path(format!("{} {}: {e}", http.method(), bounded(http.path())))
                }
            };
            let question = Question {
                operation: mapping.operation,
                scope: mapping.scope,
                data_action: mapping.data_action,
                at: None,
            };
            if carrier.is_none() {
                // The common case: one operation, decided once.
                return match self.decide(&loaded, &principal, &http, &question, Mode::Consume) {
                    Ok(judged) => verdict_outcome(judged, principal),
                    Err(e) => invalid_path(format!("{}: {}", e.field, e.message)),
                };
            }
            // Refuse before reading the body when the envelope is refused.
            match self.decide(&loaded, &principal, &http, &question, Mode::Probe) {
                Ok(j) if j.verdict == Verdict::Allow => {}
                Ok(j) => return verdict_outcome(j, principal),
                Err(e) => return invalid_path(format!("{}: {}", e.field, e.message)),
            }
            questions.push(question.to_owned());
        }
        let Some(carrier) = carrier else {
            return invalid_path("no operation".into());
        };
        let ops = match body(&http).and_then(|b| nested::inner_operations(carrier, b)) {
            Ok(ops) => ops,
            Err(e) => return unverifiable(&e.to_string()),
        };
        for op in ops {
            let question = match op.inner {
                Inner::Http { method, path } => {
                    match map_request(routes, method, &path, &mut operation) {
                        Ok(m) => OwnedQuestion {
                            operation: m.operation.to_owned(),
                            scope: m.scope.to_owned(),
                            data_action: m.data_action,
                            at: Some(op.at),
                        },
                        Err(e) => return unverifiable(&format!("{}: {e}", op.at)),
                    }
                }
                Inner::Write { operation, scope } => OwnedQuestion {
                    operation,
                    scope,
                    data_action: false,
                    at: Some(op.at),
                },
            };
            questions.push(question);
        }
        // Probe every inner operation first, so a refused request takes no
        // use of a grant; then decide them all for real.
        let inner = if carrier == Carrier::Batch { 0 } else { 1 };
        for q in &questions[inner..] {
            match self.decide(&loaded, &principal, &http, &q.borrow(), Mode::Probe) {
                Ok(j) if j.verdict == Verdict::Allow => {}
                Ok(j) => return verdict_outcome(j, principal),
                Err(e) => {
                    return unverifiable(&format!("{}: {}: {}", q.label(), e.field, e.message))
                }
            }
        }
        let mut answered: Option<Judged> = None;
        for q in &questions {
            match self.decide(&loaded, &principal, &http, &q.borrow(), Mode::Consume) {
                Ok(j) if j.verdict == Verdict::Allow => {
                    answered.get_or_insert(j);
                }
                // A grant ended between the probe and now.
                Ok(j) => return verdict_outcome(j, principal),
                Err(e) => {
                    return unverifiable(&format!("{}: {}: {}", q.label(), e.field, e.message))
                }
            }
        }
        match answered {
            Some(mut judged) => {
                if carrier == Carrier::Batch {
                    // The envelope itself is no operation.
                    judged.operation = format!("batch of {}", questions.len());
                    judged.scope = "/".into();
                    judged.at = None;
                }
                Outcome::Allow(judged)
            }
            None => unverifiable("the batch carries no request"),
        }
    }

    /// Files the elevation an `APPROVAL_REQUIRED` answer names.
    async fn file(&self, judged: &Judged, principal: &str, http: &HttpRequest<'_>) -> Filed {
        let justification = http
            .header(&self.settings.justification_header)
            .filter(|j| !j.trim().is_empty())
            .map(|j| {
                j.chars()
                    .take(crate::elevation::policy::MAX_TEXT)
                    .collect::<String>()
            })
            .unwrap_or_else(|| {
                format!(
                    "requested through Envoy: {} {}",
                    http.method(),
                    bounded(http.path())
                )
            });
        // The change itself, when Envoy sent the whole body: the approver
        // sees it and may bind the grant to it.
        let exact = body(http).ok().and_then(|b| {
            exact::exact_request(http.method(), http.path(), "", Some(b))
                .ok()
                .flatten()
        });
        let attributes: BTreeMap<String, String> = exact
            .iter()
            .map(|x| (exact::DIGEST_ATTRIBUTE.to_owned(), x.digest.clone()))
            .collect();
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
                attributes,
                ticket: "",
                exact,
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

    /// The answer to one check: always an answer, refusals included.
    pub async fn answer(&self, request: &CheckRequest) -> Answer {
        let strip = [self.settings.justification_header.as_str()];
        match self.judge(request) {
            Outcome::Allow(judged) => answer::allow(&judged, &strip),
            Outcome::Deny { judged, principal } => answer::deny(&judged, &principal),
            Outcome::Refuse { code, message } => answer::refuse(code, &message, None, None, &[]),
            Outcome::ApprovalRequired { judged, principal } => {
                if !self.settings.elevate {
                    return answer::approval_required(&judged, &principal, &Filed::NotAsked);
                }
                // Judged at all, so there is an HTTP request.
                let Some(http) = request.http() else {
                    return answer::approval_required(&judged, &principal, &Filed::NotAsked);
                };
                let filed = self.file(&judged, &principal, &http).await;
                if matches!(&filed, Filed::Elevation { state, .. } if *state == "APPROVED" || *state == "NOT_NEEDED")
                {
                    // Auto-approved (or granted meanwhile): judge once more.
                    if let Outcome::Allow(judged) = self.judge(request) {
                        return answer::allow(&judged, &strip);
                    }
                }
                answer::approval_required(&judged, &principal, &filed)
            }
        }
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
fn body<'a>(http: &HttpRequest<'a>) -> Result<&'a [u8], NestedError> {
    if http
        .header(PARTIAL_BODY_HEADER)
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    {
        return Err(NestedError::Partial);
    }
    let body = if http.raw_body().is_empty() {
        http.body()
    } else {
        http.raw_body()
    };
    if body.is_empty() {
        return Err(NestedError::NoBody);
    }
    // Envoy reports the body's full size; less than that arrived.
    if usize::try_from(http.size()).is_ok_and(|size| size > body.len()) {
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
