//! `rampart.v1.Approvals`: the approval channel for humans. Every call is
//! authenticated; the caller is the token's principal. Lists and watches
//! show only the elevations of agents the caller may interact with.

use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::{broadcast, mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::auth::{caller, Caller};
use super::convert;
use crate::elevation::error::echo;
use crate::elevation::{Approval, Broker, Elevation, ElevationQuery, GrantQuery};
use crate::proto as pb;
use crate::proto::approvals_server::Approvals;

pub struct ApprovalsService {
    broker: Arc<Broker>,
    /// Becomes true when the server stops: open watches end then, so a
    /// graceful shutdown does not wait on them forever.
    stop: watch::Receiver<bool>,
}

impl ApprovalsService {
    pub fn new(broker: Arc<Broker>, stop: watch::Receiver<bool>) -> Self {
        ApprovalsService { broker, stop }
    }

    /// Whether the caller may see (and act on) this agent's elevations:
    /// rule (a), or an admin token.
    fn visible(&self, caller: &Caller, agent_id: &str) -> bool {
        if caller.admin {
            return true;
        }
        self.broker
            .may_interact_with(&caller.principal_id, agent_id)
    }

    /// The agents whose records a listing may show: every one for an admin
    /// token (`None`), else those the caller may interact with.
    fn visible_agents(&self, caller: &Caller) -> Option<Vec<String>> {
        (!caller.admin).then(|| self.broker.visible_agents(&caller.principal_id))
    }
}

fn comment(text: &str) -> Option<&str> {
    (!text.trim().is_empty()).then_some(text)
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::ElevationEvent, Status>> + Send>>;

#[tonic::async_trait]
impl Approvals for ApprovalsService {
    async fn list_elevations(
        &self,
        request: Request<pb::ListElevationsRequest>,
    ) -> Result<Response<pb::ListElevationsResponse>, Status> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let query = ElevationQuery {
            state: convert::state_filter(req.state)?,
            principal_id: (!req.principal_id.is_empty()).then(|| req.principal_id.clone()),
            agent_ids: self.visible_agents(&caller),
            newest_first: false,
        };
        let page = self
            .broker
            .list_elevations(&query, req.page_size, &req.page_token)
            .map_err(convert::elevation_error)?;
        Ok(Response::new(pb::ListElevationsResponse {
            elevations: page.items.iter().map(convert::elevation).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn get_elevation(
        &self,
        request: Request<pb::GetElevationRequest>,
    ) -> Result<Response<pb::Elevation>, Status> {
        let caller = caller(&request)?;
        let id = request.into_inner().id;
        match self.broker.find(&id).map_err(convert::elevation_error)? {
            Some(e) if self.visible(&caller, &e.agent_id) => {
                Ok(Response::new(convert::elevation(&e)))
            }
            // Not visible reads as absent, so ids do not leak.
            _ => Err(Status::not_found(format!(
                "no elevation {} that you may see",
                echo(&id)
            ))),
        }
    }

    type WatchElevationsStream = EventStream;

    async fn watch_elevations(
        &self,
        request: Request<pb::WatchElevationsRequest>,
    ) -> Result<Response<Self::WatchElevationsStream>, Status> {
        let caller = caller(&request)?;
        // Subscribe first, so no change between the listing and the stream
        // is lost (a change may then arrive twice, which is harmless).
        let mut changes = self.broker.subscribe();
        let initial: Vec<pb::ElevationEvent> = self
            .broker
            .pending_elevations()
            .iter()
            .filter(|e| e.state.is_pending() && self.visible(&caller, &e.agent_id))
            .map(|e| pb::ElevationEvent {
                elevation: Some(convert::elevation(e)),
                initial: true,
            })
            .collect();
        let service = ApprovalsService {
            broker: self.broker.clone(),
            stop: self.stop.clone(),
        };
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            for event in initial {
                if tx.send(Ok(event)).await.is_err() {
                    return;
                }
            }
            loop {
                let change = tokio::select! {
                    _ = super::stopped(service.stop.clone()) => return,
                    _ = tx.closed() => return,
                    change = changes.recv() => change,
                };
                let event = match change {
                    Ok(e) if service.visible(&caller, &e.agent_id) => Ok(pb::ElevationEvent {
                        elevation: Some(convert::elevation(&e)),
                        initial: false,
                    }),
                    Ok(_) => continue,
                    Err(broadcast::error::RecvError::Lagged(n)) => Err(Status::data_loss(format!(
                        "the watch fell {n} changes behind; list again and re-watch"
                    ))),
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                let last = event.is_err();
                if tx.send(event).await.is_err() || last {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn approve_elevation(
        &self,
        request: Request<pb::ApproveElevationRequest>,
    ) -> Result<Response<pb::Elevation>, Status> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let duration = convert::std_duration(req.duration.as_ref(), "duration")
            .map_err(convert::invalid_argument)?;
        let elevation: Elevation = self
            .broker
            .approve(
                &caller.principal_id,
                &req.id,
                Approval {
                    duration,
                    max_uses: req.max_uses,
                    comment: comment(&req.comment),
                    bind_to_request: req.bind_to_request,
                },
            )
            .await
            .map_err(convert::elevation_error)?;
        Ok(Response::new(convert::elevation(&elevation)))
    }

    async fn deny_elevation(
        &self,
        request: Request<pb::DenyElevationRequest>,
    ) -> Result<Response<pb::Elevation>, Status> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let elevation = self
            .broker
            .deny(&caller.principal_id, &req.id, comment(&req.comment))
            .await
            .map_err(convert::elevation_error)?;
        Ok(Response::new(convert::elevation(&elevation)))
    }

    async fn list_grants(
        &self,
        request: Request<pb::ListGrantsRequest>,
    ) -> Result<Response<pb::ListGrantsResponse>, Status> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let query = GrantQuery {
            active_only: !req.include_ended,
            principal_id: (!req.principal_id.is_empty()).then(|| req.principal_id.clone()),
            agent_ids: self.visible_agents(&caller),
            newest_first: false,
        };
        let page = self
            .broker
            .list_grants(&query, req.page_size, &req.page_token)
            .map_err(convert::elevation_error)?;
        Ok(Response::new(pb::ListGrantsResponse {
            grants: page.items.iter().map(convert::grant).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn revoke_grant(
        &self,
        request: Request<pb::RevokeGrantRequest>,
    ) -> Result<Response<pb::Grant>, Status> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let grant = self
            .broker
            .revoke(
                &caller.principal_id,
                caller.admin,
                &req.id,
                comment(&req.comment),
            )
            .map_err(convert::elevation_error)?;
        Ok(Response::new(convert::grant(&grant)))
    }
}
