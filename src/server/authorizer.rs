//! `rampart.v1.Authorizer`: the decision API for enforcement points.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::convert;
use crate::engine::Engine;
use crate::proto as pb;
use crate::proto::authorizer_server::Authorizer;

/// The most requests one `AuthorizeBatch` may carry.
pub const MAX_BATCH: usize = 1000;

pub struct AuthorizerService {
    engine: Arc<Engine>,
}

impl AuthorizerService {
    pub fn new(engine: Arc<Engine>) -> Self {
        AuthorizerService { engine }
    }
}

#[tonic::async_trait]
impl Authorizer for AuthorizerService {
    async fn authorize(
        &self,
        request: Request<pb::AuthorizeRequest>,
    ) -> Result<Response<pb::AuthorizeResponse>, Status> {
        let req = request.into_inner();
        convert::check_attributes(&req).map_err(convert::invalid_argument)?;
        let loaded = self.engine.current();
        let decision = loaded
            .decide(&convert::request(&req))
            .map_err(convert::invalid_argument)?;
        Ok(Response::new(convert::response(decision)))
    }

    async fn authorize_batch(
        &self,
        request: Request<pb::AuthorizeBatchRequest>,
    ) -> Result<Response<pb::AuthorizeBatchResponse>, Status> {
        let batch = request.into_inner();
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
            .iter()
            .map(|req| {
                let outcome = convert::check_attributes(req)
                    .and_then(|()| loaded.decide(&convert::request(req)));
                let result = match outcome {
                    Ok(decision) => {
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
