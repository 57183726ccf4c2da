//! `rampart.v1.Authorizer`: the decision API for enforcement points.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tonic::{Request, Response, Status};

use super::{convert, metrics};
use crate::audit::{AuditLog, DecisionEvent};
use crate::elevation::policy::exact;
use crate::elevation::{Broker, ElevationRequest};
use crate::engine::Engine;
use crate::engine::{Decision, RequestError};
use crate::proto as pb;
use crate::proto::authorizer_server::Authorizer;

/// The most requests one `AuthorizeBatch` may carry.
pub const MAX_BATCH: usize = 1000;

pub struct AuthorizerService {
    engine: Arc<Engine>,
    broker: Arc<Broker>,
    /// Sampled decisions go to the audit log.
    audit: Option<(Arc<AuditLog>, f64)>,
}

impl AuthorizerService {
    pub fn new(broker: Arc<Broker>, audit: Option<(Arc<AuditLog>, f64)>) -> Self {
        AuthorizerService {
            engine: broker.engine().clone(),
            broker,
            audit,
        }
    }

    fn audit(&self, req: &pb::AuthorizeRequest, d: &Decision<'_>) {
        let Some((log, rate)) = &self.audit else {
            return;
        };
        if !crate::audit::sampled(*rate) {
            return;
        }
        log.write(&DecisionEvent::new(
            &req.principal_id,
            &req.action,
            &req.scope,
            req.data_action,
            d,
        ));
    }
}

/// Counts a decision (or a malformed request) in the metrics.
fn observe<'s>(
    outcome: Result<Decision<'s>, RequestError>,
    started: Instant,
) -> Result<Decision<'s>, RequestError> {
    match &outcome {
        Ok(d) => metrics::record_decision(d.verdict, d.reason, started.elapsed()),
        Err(_) => metrics::record_invalid(),
    }
    outcome
}

/// The caller's deadline from the `grpc-timeout` header, if it sent one.
fn grpc_timeout(metadata: &tonic::metadata::MetadataMap) -> Option<Duration> {
    let value = metadata.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[tonic::async_trait]
impl Authorizer for AuthorizerService {
    async fn authorize(
        &self,
        request: Request<pb::AuthorizeRequest>,
    ) -> Result<Response<pb::AuthorizeResponse>, Status> {
        let mut req = request.into_inner();
        if !req.request_digest.is_empty() {
            let digest = std::mem::take(&mut req.request_digest);
            convert::put_digest(&mut req.attributes, &digest).map_err(convert::invalid_argument)?;
        }
        convert::check_attributes(&req.attributes).map_err(convert::invalid_argument)?;
        let loaded = self.engine.current();
        let started = Instant::now();
        let decision = loaded.decide_with(&convert::request(&req), Some(self.engine.live()));
        let decision = observe(decision, started).map_err(convert::invalid_argument)?;
        self.audit(&req, &decision);
        Ok(Response::new(convert::response(decision)))
    }

    async fn request_elevation(
        &self,
        request: Request<pb::RequestElevationRequest>,
    ) -> Result<Response<pb::Elevation>, Status> {
        let deadline = grpc_timeout(request.metadata());
        let mut req = request.into_inner();
        // The digest may come as the field or as the attribute itself.
        let digest = if req.request_digest.is_empty() {
            req.attributes
                .get(exact::DIGEST_ATTRIBUTE)
                .cloned()
                .unwrap_or_default()
        } else {
            req.request_digest.clone()
        };
        let body = (!req.request_body.is_empty()).then_some(&req.request_body[..]);
        let exact = exact::exact_request(&req.request_method, &req.request_path, &digest, body)
            .map_err(convert::elevation_error)?;
        if let Some(x) = &exact {
            convert::put_digest(&mut req.attributes, &x.digest)
                .map_err(convert::invalid_argument)?;
        }
        let requested_duration =
            convert::std_duration(req.requested_duration.as_ref(), "requested_duration")
                .map_err(convert::invalid_argument)?;
        let wait_timeout = convert::std_duration(req.wait_timeout.as_ref(), "wait_timeout")
            .map_err(convert::invalid_argument)?;
        convert::check_attributes(&req.attributes).map_err(convert::invalid_argument)?;
        let ask = self.broker.request(ElevationRequest {
            principal_id: &req.principal_id,
            action: &req.action,
            scope: &req.scope,
            data_action: req.data_action,
            justification: &req.justification,
            requested_duration,
            wait_timeout,
            attributes: req
                .attributes
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            ticket: &req.ticket,
            exact,
        });
        // A caller whose deadline passes has gone away: dropping the wait
        // cancels the elevation (when no other caller waits on it).
        let outcome = match deadline {
            Some(d) => tokio::time::timeout(d, ask).await.map_err(|_| {
                Status::deadline_exceeded("the caller's deadline passed before a decision")
            })?,
            None => ask.await,
        };
        let elevation = outcome.map_err(convert::elevation_error)?;
        Ok(Response::new(convert::elevation(&elevation)))
    }

    async fn authorize_batch(
        &self,
        request: Request<pb::AuthorizeBatchRequest>,
    ) -> Result<Response<pb::AuthorizeBatchResponse>, Status> {
        let mut batch = request.into_inner();
        if batch.requests.len() > MAX_BATCH {
            return Err(Status::invalid_argument(format!(
                "requests has {} items; the limit is {MAX_BATCH}",
                batch.requests.len()
            )));
        }
        // One snapshot for the whole batch, so its answers are consistent.
        let loaded = self.engine.current();
        let results = batch
            .requests
            .iter_mut()
            .map(|req| {
                let started = Instant::now();
                let digested = if req.request_digest.is_empty() {
                    Ok(())
                } else {
                    let digest = std::mem::take(&mut req.request_digest);
                    convert::put_digest(&mut req.attributes, &digest)
                };
                let req = &*req;
                let outcome = digested
                    .and_then(|()| convert::check_attributes(&req.attributes))
                    .and_then(|()| {
                        observe(
                            loaded.decide_with(&convert::request(req), Some(self.engine.live())),
                            started,
                        )
                    });
                let result = match outcome {
                    Ok(decision) => {
                        self.audit(req, &decision);
                        pb::authorize_batch_result::Result::Response(convert::response(decision))
                    }
                    Err(e) => pb::authorize_batch_result::Result::Error(pb::ItemError {
                        code: tonic::Code::InvalidArgument as i32,
                        message: e.message,
                        field: e.field.to_owned(),
                    }),
                };
                pb::AuthorizeBatchResult {
                    result: Some(result),
                }
            })
            .collect();
        Ok(Response::new(pb::AuthorizeBatchResponse { results }))
    }
}
