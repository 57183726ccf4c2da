//! Active elevation grants as decisions see them (docs/agents-and-elevation.md#grants): the exact
//! operation at a scope and below, for one agent principal, until expiry or
//! use-up. The elevation broker owns their lifecycle and durability; the
//! engine only reads them, and counts uses.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use dashmap::DashMap;
use foldhash::fast::RandomState;

use super::Request;

/// The request attribute carrying the lowercase hex SHA-256 of the request
/// body (exact-change approvals).
pub const DIGEST_ATTRIBUTE: &str = "rampart:requestBodySha256";

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
    /// Whose permission the grant lends; checked again on every use.
    pub on_behalf_of: Box<str>,
    /// The other approvers of an elevation that needed several; each is
    /// checked on every use as `on_behalf_of` is.
    pub co_lenders: Box<[Box<str>]>,
    /// Of a grant bound to one request: the lowercase hex SHA-256 of its
    /// body; only a request at exactly the grant's scope whose
    /// [`DIGEST_ATTRIBUTE`] is this may use the grant.
    pub request_digest: Option<Box<str>>,
    pub expires_at: SystemTime,
    /// 0 = unlimited.
    pub max_uses: u32,
    pub uses: AtomicU32,
    /// Of a limited grant, the uses its lender has durably reserved: no use
    /// past this counts, so a crash can lose reserved uses but never let a
    /// grant be used more than `max_uses` times. Only ever raised, by the
    /// broker, after the reservation is durable.
    pub reserved: AtomicU32,
    /// A use was refused for want of a reservation: the broker reserves
    /// more (a replica of a fleet reserves uses only where they are
    /// wanted).
    pub wanted: AtomicBool,
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

    /// Whether a grant bound to one request's body allows this request:
    /// the same body digest, at exactly the grant's scope. Any request, for
    /// a grant not bound.
    fn binds(&self, req: &Request<'_>) -> bool {
        let Some(digest) = self.request_digest.as_deref() else {
            return true;
        };
        req.scope.len() == self.scope_key.len()
            && req
                .attributes
                .attribute(DIGEST_ATTRIBUTE)
                .is_some_and(|d| d.eq_ignore_ascii_case(digest))
    }

    /// Takes one use; false when none is left, or none is reserved yet.
    fn take_use(&self) -> bool {
        if self.max_uses == 0 {
            self.uses.fetch_add(1, Ordering::Relaxed);
            return true;
        }
        // The reservation only grows: a stale read is the stricter limit.
        let limit = self.max_uses.min(self.reserved.load(Ordering::Acquire));
        self.uses
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                (u < limit).then_some(u + 1)
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
    /// Woken when a use of a limited grant is taken, so the broker tops up
    /// its reservation before it runs out.
    pub limited_use_taken: tokio::sync::Notify,
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

    /// The unexpired grant with uses left that covers the request and whose
    /// lender still allows it (`lender_allows`, asked only of grants that
    /// cover). Takes one use of it unless the request only asks
    /// ([`Request::consumes_grants`]).
    pub fn find(
        &self,
        principal_key: &str,
        req: &Request<'_>,
        now: SystemTime,
        lender_allows: impl Fn(&ActiveGrant) -> bool,
    ) -> Option<Arc<ActiveGrant>> {
        if self.is_empty() {
            return None;
        }
        let take = req.consumes_grants();
        let grants = self.by_principal.get(principal_key)?;
        grants
            .iter()
            .filter(|g| {
                g.expires_at > now
                    && g.covers(req.action, req.scope, req.data_action)
                    && g.binds(req)
                    && !g.is_used_up()
                    && lender_allows(g)
            })
            .find(|g| {
                !take || g.take_use() || {
                    // Refused for want of a reservation, not used up: ask
                    // the broker for more.
                    if g.max_uses != 0 && !g.is_used_up() {
                        g.wanted.store(true, Ordering::Relaxed);
                        self.limited_use_taken.notify_one();
                    }
                    false
                }
            })
            .inspect(|g| {
                if take && g.max_uses != 0 {
                    self.limited_use_taken.notify_one();
                }
            })
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const RESTART: &str = "Microsoft.Compute/virtualMachines/restart/action";
    const RG: &str = "/subscriptions/s/resourceGroups/rg";

    fn grant(max_uses: u32) -> Arc<ActiveGrant> {
        Arc::new(ActiveGrant {
            id: "g1".into(),
            principal_key: "agent".into(),
            action: RESTART.into(),
            scope_key: RG.to_ascii_lowercase().into(),
            scope: RG.into(),
            data_action: false,
            on_behalf_of: "oncall".into(),
            co_lenders: Box::default(),
            request_digest: None,
            expires_at: SystemTime::now() + Duration::from_secs(60),
            max_uses,
            uses: AtomicU32::new(0),
            reserved: AtomicU32::new(max_uses),
            wanted: AtomicBool::new(false),
        })
    }

    fn ask<'a>(action: &'a str, scope: &'a str, data_action: bool) -> Request<'a> {
        Request {
            principal_id: "agent",
            action,
            scope,
            data_action,
            attributes: &NO_ATTRIBUTES,
            explain: false,
            dry_run: false,
        }
    }

    const NO_ATTRIBUTES: &[(&str, &str)] = &[];

    fn finds(table: &GrantTable, who: &str, req: &Request<'_>, now: SystemTime) -> bool {
        table.find(who, req, now, |_| true).is_some()
    }

    #[test]
    fn a_grant_holds_for_its_exact_operation_at_its_scope_and_below() {
        let table = GrantTable::default();
        table.insert(grant(0));
        let now = SystemTime::now();
        let op = "microsoft.compute/virtualmachines/RESTART/action";
        let vm = format!("{RG}/providers/Microsoft.Compute/virtualMachines/v");
        assert!(finds(
            &table,
            "agent",
            &ask(op, "/subscriptions/s/resourceGroups/RG", false),
            now
        ));
        assert!(finds(&table, "agent", &ask(op, &vm, false), now));
        assert!(!finds(
            &table,
            "agent",
            &ask(op, "/subscriptions/s/resourceGroups/rg2", false),
            now
        ));
        assert!(!finds(
            &table,
            "agent",
            &ask(op, "/subscriptions/s", false),
            now
        ));
        assert!(!finds(&table, "agent", &ask(op, RG, true), now));
        let delete = "Microsoft.Compute/virtualMachines/delete";
        assert!(!finds(&table, "agent", &ask(delete, RG, false), now));
        assert!(!finds(&table, "other", &ask(op, RG, false), now));
        let later = now + Duration::from_secs(61);
        assert!(!finds(&table, "agent", &ask(op, RG, false), later));
    }

    #[test]
    fn a_grant_bound_to_a_body_allows_only_that_body_at_exactly_its_scope() {
        let table = GrantTable::default();
        let digest = "ab".repeat(32);
        let bound = ActiveGrant {
            request_digest: Some(digest.as_str().into()),
            ..Arc::into_inner(grant(0)).unwrap_or_else(|| panic!("shared"))
        };
        table.insert(Arc::new(bound));
        let now = SystemTime::now();
        let same: &[(&str, &str)] = &[(DIGEST_ATTRIBUTE, &digest)];
        let upper = digest.to_ascii_uppercase();
        let same_upper: &[(&str, &str)] = &[(DIGEST_ATTRIBUTE, &upper)];
        let other_digest = "cd".repeat(32);
        let other: &[(&str, &str)] = &[(DIGEST_ATTRIBUTE, &other_digest)];
        let mut req = ask(RESTART, RG, false);
        // No digest, another digest: not this grant.
        assert!(!finds(&table, "agent", &req, now));
        req.attributes = &other;
        assert!(!finds(&table, "agent", &req, now));
        // The same body below the grant's scope: not this grant either.
        let below = format!("{RG}/providers/Microsoft.Compute/virtualMachines/vm1");
        let mut deeper = ask(RESTART, &below, false);
        deeper.attributes = &same;
        assert!(!finds(&table, "agent", &deeper, now));
        req.attributes = &same;
        assert!(finds(&table, "agent", &req, now));
        req.attributes = &same_upper;
        assert!(finds(&table, "agent", &req, now));
    }

    #[test]
    fn uses_run_out() {
        let table = GrantTable::default();
        table.insert(grant(2));
        let now = SystemTime::now();
        assert!(finds(&table, "agent", &ask(RESTART, RG, false), now));
        assert!(finds(&table, "agent", &ask(RESTART, RG, false), now));
        assert!(!finds(&table, "agent", &ask(RESTART, RG, false), now));
        assert!(table.remove("g1").is_some_and(|g| g.is_used_up()));
        assert!(table.is_empty());
    }

    #[test]
    fn asking_without_acting_takes_no_use() {
        let table = GrantTable::default();
        table.insert(grant(1));
        let now = SystemTime::now();
        let mut explain = ask(RESTART, RG, false);
        explain.explain = true;
        let mut dry_run = ask(RESTART, RG, false);
        dry_run.dry_run = true;
        for _ in 0..3 {
            assert!(finds(&table, "agent", &explain, now));
            assert!(finds(&table, "agent", &dry_run, now));
        }
        assert!(finds(&table, "agent", &ask(RESTART, RG, false), now));
        assert!(!finds(&table, "agent", &dry_run, now));
    }

    #[test]
    fn no_use_counts_beyond_the_reservation() {
        let table = GrantTable::default();
        let g = grant(5);
        g.reserved.store(2, Ordering::Release);
        table.insert(g.clone());
        let now = SystemTime::now();
        assert!(finds(&table, "agent", &ask(RESTART, RG, false), now));
        assert!(finds(&table, "agent", &ask(RESTART, RG, false), now));
        assert!(!finds(&table, "agent", &ask(RESTART, RG, false), now));
        assert!(!g.is_used_up(), "unreserved uses are not used up");
        assert!(
            g.wanted.load(Ordering::Relaxed),
            "the refusal asks for more"
        );
        g.reserved.store(5, Ordering::Release);
        assert!(finds(&table, "agent", &ask(RESTART, RG, false), now));
        assert_eq!(g.uses.load(Ordering::Acquire), 3);
    }

    #[test]
    fn a_grant_whose_lender_refuses_is_not_used() {
        let table = GrantTable::default();
        table.insert(grant(1));
        let now = SystemTime::now();
        let refused = table.find("agent", &ask(RESTART, RG, false), now, |g| {
            assert_eq!(&*g.on_behalf_of, "oncall");
            false
        });
        assert!(refused.is_none());
        // The refusal took no use: the one use is still there.
        assert!(finds(&table, "agent", &ask(RESTART, RG, false), now));
        assert!(!finds(&table, "agent", &ask(RESTART, RG, false), now));
    }
}
