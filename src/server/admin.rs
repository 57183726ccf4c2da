//! `rampart.v1.Admin`: what operators ask of a running rampart.

use std::sync::Arc;
use std::time::SystemTime;

use tonic::{Request, Response, Status};

use super::convert;
use crate::elevation::policy::freeze::FreezeState;
use crate::elevation::Broker;
use crate::engine::view::{effective_view, AssignmentView, DenyView, EffectiveView};
use crate::engine::Engine;
use crate::model::{check_principal_id, PermissionBlock, Scope};
use crate::proto as pb;
use crate::proto::admin_server::Admin;
use crate::snapshot::reload::{ReloadOutcome, Reloader};

pub struct AdminService {
    engine: Arc<Engine>,
    broker: Arc<Broker>,
    reloader: Option<Arc<Reloader>>,
}

impl AdminService {
    pub fn new(broker: Arc<Broker>, reloader: Option<Arc<Reloader>>) -> Self {
        AdminService {
            engine: broker.engine().clone(),
            broker,
            reloader,
        }
    }

    /// Freeze or Unfreeze as the caller of `request`.
    fn set_freeze(
        &self,
        frozen: bool,
        request: Request<pb::FreezeRequest>,
    ) -> Result<Response<pb::FreezeStatus>, Status> {
        let caller = super::auth::caller(&request)?;
        let state = self
            .broker
            .set_freeze(frozen, &caller.principal_id, &request.into_inner().reason)
            .map_err(convert::elevation_error)?;
        Ok(Response::new(freeze_status(&state)))
    }
}

fn freeze_status(state: &FreezeState) -> pb::FreezeStatus {
    pb::FreezeStatus {
        frozen: state.frozen,
        by: state.by.clone(),
        reason: state.reason.clone(),
        since: (state.since_ms > 0).then(|| prost_types::Timestamp {
            seconds: state.since_ms.div_euclid(1000),
            nanos: (state.since_ms.rem_euclid(1000) * 1_000_000) as i32,
        }),
    }
}

fn timestamp(t: SystemTime) -> prost_types::Timestamp {
    prost_types::Timestamp::from(t)
}

fn effective_permissions(view: EffectiveView<'_>) -> pb::EffectivePermissions {
    pb::EffectivePermissions {
        principal_id: view.principal.id.clone(),
        principal_type: view.principal.kind.as_str().to_owned(),
        display_name: view.principal.display_name.clone().unwrap_or_default(),
        groups: view.groups.iter().map(|&g| g.to_owned()).collect(),
        agent_id: view.agent.map(|a| a.id.to_owned()).unwrap_or_default(),
        in_agent_scope: view.agent.is_some_and(|a| a.in_scope),
        assignments: view.assignments.iter().map(assignment).collect(),
        deny_assignments: view.denies.iter().map(deny).collect(),
        snapshot_revision: view.snapshot_revision.to_owned(),
    }
}

fn assignment(a: &AssignmentView<'_>) -> pb::EffectiveAssignment {
    pb::EffectiveAssignment {
        assignment_id: a.id.to_owned(),
        role_id: a.role_id.to_owned(),
        role_name: a.role_name.to_owned(),
        scope: a.scope.as_str().to_owned(),
        via_group: a.via_group.unwrap_or_default().to_owned(),
        derived_from_agent: a.derived_from_agent.unwrap_or_default().to_owned(),
        permissions: a.permissions.iter().map(permission_block).collect(),
        condition: a.condition.unwrap_or_default().to_owned(),
    }
}

fn permission_block(b: &PermissionBlock) -> pb::PermissionBlock {
    pb::PermissionBlock {
        actions: b.actions.sources(),
        not_actions: b.not_actions.sources(),
        data_actions: b.data_actions.sources(),
        not_data_actions: b.not_data_actions.sources(),
        condition: b
            .condition
            .as_ref()
            .map(|c| c.as_str().to_owned())
            .unwrap_or_default(),
    }
}

fn deny(d: &DenyView<'_>) -> pb::EffectiveDeny {
    let deny = d.deny;
    pb::EffectiveDeny {
        deny_assignment_id: deny.id.clone(),
        scope: deny.scope.as_str().to_owned(),
        do_not_apply_to_child_scopes: deny.do_not_apply_to_child_scopes,
        via_group: d.via_group.unwrap_or_default().to_owned(),
        everyone: deny.everyone,
        actions: deny.actions.sources(),
        not_actions: deny.not_actions.sources(),
        data_actions: deny.data_actions.sources(),
        not_data_actions: deny.not_data_actions.sources(),
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn get_snapshot_status(
        &self,
        _request: Request<pb::GetSnapshotStatusRequest>,
    ) -> Result<Response<pb::SnapshotStatus>, Status> {
        let loaded = self.engine.current();
        let s = &loaded.snapshot;
        let t = &s.tenant;
        let failure = self.engine.last_failure();
        let n = |len: usize| len as u64;
        Ok(Response::new(pb::SnapshotStatus {
            revision: s.info.revision.clone(),
            loaded_at: Some(timestamp(s.info.loaded_at)),
            source: s.info.source.clone(),
            content_sha256: s.info.content_sha256.clone(),
            counts: Some(pb::SnapshotCounts {
                principals: n(t.principals.len()),
                role_definitions: n(t.role_definitions.len()),
                custom_role_definitions: n(t.role_definitions.len() - t.builtin_role_count),
                role_assignments: n(t.role_assignments.len()),
                deny_assignments: n(t.deny_assignments.len()),
                management_groups: n(t.hierarchy.management_groups.len()),
                subscriptions: n(t.hierarchy.subscriptions.len()),
                resources: n(t.resources.len()),
                access_keys: n(t.access_keys.len()),
                agents: n(t.agents.len()),
                scopes: n(s.nodes.len()),
            }),
            last_error: failure
                .as_ref()
                .map(|f| f.message.clone())
                .unwrap_or_default(),
            last_error_at: failure.map(|f| timestamp(f.at)),
            cache_entries: loaded.cache_stats().effective_entries as u64,
        }))
    }

    async fn get_effective_permissions(
        &self,
        request: Request<pb::GetEffectivePermissionsRequest>,
    ) -> Result<Response<pb::EffectivePermissions>, Status> {
        let req = request.into_inner();
        check_principal_id(&req.principal_id)
            .map_err(|e| Status::invalid_argument(format!("principal_id {e}")))?;
        let scope = Scope::parse(&req.scope).map_err(|e| {
            Status::invalid_argument(format!("scope '{}' {e}", req.scope.escape_debug()))
        })?;
        let loaded = self.engine.current();
        let view =
            effective_view(&loaded.snapshot, &req.principal_id, &scope).ok_or_else(|| {
                Status::not_found(format!(
                    "principal_id '{}' is not in the snapshot",
                    req.principal_id
                ))
            })?;
        Ok(Response::new(effective_permissions(view)))
    }

    async fn reload_snapshot(
        &self,
        _request: Request<pb::ReloadSnapshotRequest>,
    ) -> Result<Response<pb::ReloadSnapshotResponse>, Status> {
        let reloader = self.reloader.clone().ok_or_else(|| {
            Status::failed_precondition(
                "rampart serves the embedded demo: there is no snapshot file to reload",
            )
        })?;
        let outcome = tokio::task::spawn_blocking(move || reloader.reload())
            .await
            .map_err(|e| Status::internal(format!("reload task failed: {e}")))?;
        let (outcome, error) = match outcome {
            ReloadOutcome::Reloaded(_) => (pb::ReloadOutcome::Reloaded, String::new()),
            ReloadOutcome::Unchanged => (pb::ReloadOutcome::Unchanged, String::new()),
            ReloadOutcome::Failed(e) => (pb::ReloadOutcome::Failed, e),
        };
        Ok(Response::new(pb::ReloadSnapshotResponse {
            outcome: outcome as i32,
            revision: self.engine.current().snapshot.info.revision.clone(),
            error,
        }))
    }

    async fn freeze(
        &self,
        request: Request<pb::FreezeRequest>,
    ) -> Result<Response<pb::FreezeStatus>, Status> {
        self.set_freeze(true, request)
    }

    async fn unfreeze(
        &self,
        request: Request<pb::FreezeRequest>,
    ) -> Result<Response<pb::FreezeStatus>, Status> {
        self.set_freeze(false, request)
    }

    async fn get_freeze_status(
        &self,
        _request: Request<pb::GetFreezeStatusRequest>,
    ) -> Result<Response<pb::FreezeStatus>, Status> {
        Ok(Response::new(freeze_status(&self.broker.freeze_state())))
    }

    async fn check_access(
        &self,
        request: Request<pb::AuthorizeRequest>,
    ) -> Result<Response<pb::AuthorizeResponse>, Status> {
        let mut req = request.into_inner();
        req.explain = true;
        convert::check_attributes(&req.attributes).map_err(convert::invalid_argument)?;
        let loaded = self.engine.current();
        // Explained, so active grants count without a use being taken.
        let decision = loaded
            .decide_with(&convert::request(&req), Some(self.engine.live()))
            .map_err(convert::invalid_argument)?;
        Ok(Response::new(convert::response(decision)))
    }
}
