//! Active elevation grants as decisions see them (SPEC §3.4): the exact
//! operation at a scope and below, for one agent principal, until expiry or
//! use-up. The elevation broker owns their lifecycle and durability; the
//! engine only reads them, and counts uses.

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use dashmap::DashMap;
use foldhash::fast::RandomState;

/// One active grant.
#[derive(Debug)]
pub struct ActiveGrant {
    pub id: Arc<str>,
    /// The principal key (GUIDs lowercase) of the agent's identity.
    pub principal_key: Box<str>,
    /// The exact operation approved (compared ignoring ASCII case).
    pub action: Box<str>,
    /// Lowercase key of the scope; the grant holds there and below.
    pub scope_key: Box<str>,
    /// The scope as approved, for explanations.
    pub scope: Box<str>,
    pub data_action: bool,
    pub expires_at: SystemTime,
    /// 0 = unlimited.
    pub max_uses: u32,
    pub uses: AtomicU32,
}

impl ActiveGrant {
    /// Whether the grant covers the operation at `scope` (at or below its
    /// own scope, on a segment boundary).
    fn covers(&self, action: &str, scope: &str, data_action: bool) -> bool {
        let key = self.scope_key.as_bytes();
        let s = scope.as_bytes();
        self.data_action == data_action
            && action.eq_ignore_ascii_case(&self.action)
            && s.len() >= key.len()
            && s[..key.len()].eq_ignore_ascii_case(key)
            && (s.len() == key.len() || s[key.len()] == b'/' || key == b"/")
    }

    /// Takes one use; false when none is left.
    fn take_use(&self) -> bool {
        if self.max_uses == 0 {
            self.uses.fetch_add(1, Ordering::Relaxed);
            return true;
        }
        self.uses
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                (u < self.max_uses).then_some(u + 1)
            })
            .is_ok()
    }

    pub fn is_used_up(&self) -> bool {
        self.max_uses != 0 && self.uses.load(Ordering::Acquire) >= self.max_uses
    }
}

/// The active grants, by principal key.
#[derive(Default)]
pub struct GrantTable {
    by_principal: DashMap<Box<str>, Vec<Arc<ActiveGrant>>, RandomState>,
    count: AtomicUsize,
}

impl GrantTable {
    pub fn insert(&self, grant: Arc<ActiveGrant>) {
        self.by_principal
            .entry(grant.principal_key.clone())
            .or_default()
            .push(grant);
        self.count.fetch_add(1, Ordering::Release);
    }

    pub fn remove(&self, id: &str) -> Option<Arc<ActiveGrant>> {
        let mut removed = None;
        self.by_principal.retain(|_, grants| {
            if let Some(at) = grants.iter().position(|g| &*g.id == id) {
                removed = Some(grants.swap_remove(at));
            }
            !grants.is_empty()
        });
        if removed.is_some() {
            self.count.fetch_sub(1, Ordering::Release);
        }
        removed
    }

    pub fn all(&self) -> Vec<Arc<ActiveGrant>> {
        self.by_principal
            .iter()
            .flat_map(|e| e.value().clone())
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.count.load(Ordering::Acquire) == 0
    }

    /// Whether an unexpired grant with uses left covers the request,
    /// without taking a use.
    pub fn peek(
        &self,
        principal_key: &str,
        action: &str,
        scope: &str,
        data_action: bool,
        now: SystemTime,
    ) -> bool {
        if self.is_empty() {
            return false;
        }
        self.by_principal.get(principal_key).is_some_and(|grants| {
            grants.iter().any(|g| {
                g.expires_at > now && g.covers(action, scope, data_action) && !g.is_used_up()
            })
        })
    }

    /// The unexpired grant with uses left that covers the request, taking
    /// one use of it.
    pub fn use_grant(
        &self,
        principal_key: &str,
        action: &str,
        scope: &str,
        data_action: bool,
        now: SystemTime,
    ) -> Option<Arc<ActiveGrant>> {
        if self.is_empty() {
            return None;
        }
        let grants = self.by_principal.get(principal_key)?;
        grants
            .iter()
            .filter(|g| g.expires_at > now && g.covers(action, scope, data_action))
            .find(|g| g.take_use())
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn grant(max_uses: u32) -> Arc<ActiveGrant> {
        Arc::new(ActiveGrant {
            id: "g1".into(),
            principal_key: "agent".into(),
            action: "Microsoft.Compute/virtualMachines/restart/action".into(),
            scope_key: "/subscriptions/s/resourcegroups/rg".into(),
            scope: "/subscriptions/s/resourceGroups/rg".into(),
            data_action: false,
            expires_at: SystemTime::now() + Duration::from_secs(60),
            max_uses,
            uses: AtomicU32::new(0),
        })
    }

    #[test]
    fn a_grant_holds_for_its_exact_operation_at_its_scope_and_below() {
        let table = GrantTable::default();
        table.insert(grant(0));
        let now = SystemTime::now();
        let op = "microsoft.compute/virtualmachines/RESTART/action";
        assert!(table
            .use_grant(
                "agent",
                op,
                "/subscriptions/s/resourceGroups/RG",
                false,
                now
            )
            .is_some());
        assert!(table
            .use_grant(
                "agent",
                op,
                "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/v",
                false,
                now
            )
            .is_some());
        assert!(table
            .use_grant(
                "agent",
                op,
                "/subscriptions/s/resourceGroups/rg2",
                false,
                now
            )
            .is_none());
        assert!(table
            .use_grant("agent", op, "/subscriptions/s", false, now)
            .is_none());
        assert!(table
            .use_grant("agent", op, "/subscriptions/s/resourceGroups/rg", true, now)
            .is_none());
        assert!(table
            .use_grant(
                "agent",
                "Microsoft.Compute/virtualMachines/delete",
                "/subscriptions/s/resourceGroups/rg",
                false,
                now
            )
            .is_none());
        assert!(table
            .use_grant(
                "other",
                op,
                "/subscriptions/s/resourceGroups/rg",
                false,
                now
            )
            .is_none());
        assert!(table
            .use_grant(
                "agent",
                op,
                "/subscriptions/s/resourceGroups/rg",
                false,
                now + Duration::from_secs(61)
            )
            .is_none());
    }

    #[test]
    fn uses_run_out() {
        let table = GrantTable::default();
        table.insert(grant(2));
        let now = SystemTime::now();
        let op = "Microsoft.Compute/virtualMachines/restart/action";
        let scope = "/subscriptions/s/resourceGroups/rg";
        assert!(table.use_grant("agent", op, scope, false, now).is_some());
        assert!(table.use_grant("agent", op, scope, false, now).is_some());
        assert!(table.use_grant("agent", op, scope, false, now).is_none());
        assert!(table.remove("g1").is_some_and(|g| g.is_used_up()));
        assert!(table.is_empty());
    }
}
