//! Active elevation grants as decisions see them (docs/agents-and-elevation.md#grants): the exact
//! operation at a scope and below, for one agent principal, until expiry or
//! use-up. The elevation broker owns their lifecycle and durability; the
//! engine only reads them, and counts uses.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use std::hash::{BuildHasher, Hasher};

use dashmap::DashMap;
use foldhash::fast::{FoldHasher, RandomState};
use hashbrown::hash_table::Entry;
use hashbrown::HashTable;

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

/// The active grants, indexed so that a decision looks at only the grants
/// that could cover it: per principal, by (plane, operation, scope), and a
/// request probes only the prefixes of its scope that some grant of the
/// principal is written at. A decision's cost does not grow with the
/// agent's other grants.
pub struct GrantTable {
    by_principal: DashMap<Box<str>, PrincipalGrants, RandomState>,
    /// Every grant by id, for removal and listing without a scan.
    by_id: DashMap<Arc<str>, Arc<ActiveGrant>, RandomState>,
    /// Seeds the slot hashes (the keys are chosen by whoever asks for
    /// elevation).
    slot_keys: RandomState,
    count: AtomicUsize,
    /// Woken when a use of a limited grant is taken, so the broker tops up
    /// its reservation before it runs out.
    pub limited_use_taken: tokio::sync::Notify,
}

impl Default for GrantTable {
    fn default() -> Self {
        GrantTable {
            by_principal: DashMap::with_hasher(RandomState::default()),
            by_id: DashMap::with_hasher(RandomState::default()),
            slot_keys: RandomState::default(),
            count: AtomicUsize::new(0),
            limited_use_taken: tokio::sync::Notify::new(),
        }
    }
}

/// The grants of one principal.
#[derive(Default)]
struct PrincipalGrants {
    slots: HashTable<Slot>,
    /// The distinct lengths of the grants' scope keys, longest first, each
    /// with how many grants have it: the only prefixes of a request's scope
    /// worth a probe.
    scope_lengths: Vec<(usize, usize)>,
}

/// The grants of one principal for one operation (ignoring ASCII case) on
/// one plane at one scope, in the order they were inserted.
struct Slot {
    hash: u64,
    grants: Vec<Arc<ActiveGrant>>,
}

impl Slot {
    fn holds(&self, data_action: bool, action: &str, scope: &[u8]) -> bool {
        self.grants.first().is_some_and(|g| {
            g.data_action == data_action
                && g.action.eq_ignore_ascii_case(action)
                && g.scope_key.as_bytes().eq_ignore_ascii_case(scope)
        })
    }
}

/// Hashes `bytes` so that texts equal ignoring ASCII case hash alike,
/// without lower-casing them anywhere: each byte has bit 0x20 set, which
/// folds `A-Z` onto `a-z` (and a few symbols onto others, which only
/// costs a comparison). Eight bytes per step.
fn write_folded(hasher: &mut impl Hasher, bytes: &[u8]) {
    const FOLD: u64 = 0x2020_2020_2020_2020;
    let mut words = bytes.chunks_exact(8);
    for word in &mut words {
        let mut w = [0u8; 8];
        w.copy_from_slice(word);
        hasher.write_u64(u64::from_le_bytes(w) | FOLD);
    }
    let mut tail = [0u8; 8];
    for (t, &b) in tail.iter_mut().zip(words.remainder()) {
        *t = b | 0x20;
    }
    hasher.write_u64(u64::from_le_bytes(tail));
    hasher.write_usize(bytes.len());
}

impl GrantTable {
    /// The hasher after the plane and operation: each probed scope prefix
    /// continues a clone of it.
    fn operation_hasher(&self, data_action: bool, action: &str) -> FoldHasher<'static> {
        let mut h = self.slot_keys.build_hasher();
        h.write_u8(u8::from(data_action));
        write_folded(&mut h, action.as_bytes());
        h
    }

    fn slot_hash(&self, grant: &ActiveGrant) -> u64 {
        let mut h = self.operation_hasher(grant.data_action, &grant.action);
        write_folded(&mut h, grant.scope_key.as_bytes());
        h.finish()
    }

    /// Adds a grant; one with the id of a grant in the table replaces it.
    pub fn insert(&self, grant: Arc<ActiveGrant>) {
        match self.by_id.insert(grant.id.clone(), grant.clone()) {
            Some(previous) => self.unindex(&previous),
            None => {
                self.count.fetch_add(1, Ordering::Release);
            }
        }
        let hash = self.slot_hash(&grant);
        let mut grants = self
            .by_principal
            .entry(grant.principal_key.clone())
            .or_default();
        let len = grant.scope_key.len();
        match grants.scope_lengths.iter_mut().find(|(l, _)| *l == len) {
            Some((_, n)) => *n += 1,
            None => {
                let at = grants.scope_lengths.partition_point(|(l, _)| *l > len);
                grants.scope_lengths.insert(at, (len, 1));
            }
        }
        let key = grant.scope_key.as_bytes();
        match grants.slots.entry(
            hash,
            |s| s.holds(grant.data_action, &grant.action, key),
            |s| s.hash,
        ) {
            Entry::Occupied(mut slot) => slot.get_mut().grants.push(grant),
            Entry::Vacant(slot) => {
                slot.insert(Slot {
                    hash,
                    grants: vec![grant],
                });
            }
        }
    }

    pub fn remove(&self, id: &str) -> Option<Arc<ActiveGrant>> {
        let (_, removed) = self.by_id.remove(id)?;
        self.count.fetch_sub(1, Ordering::Release);
        self.unindex(&removed);
        Some(removed)
    }

    /// Takes `grant` (that very one) out of its principal's index.
    fn unindex(&self, grant: &Arc<ActiveGrant>) {
        let hash = self.slot_hash(grant);
        let key = grant.scope_key.as_bytes();
        let Some(mut grants) = self.by_principal.get_mut(&grant.principal_key) else {
            return;
        };
        let Ok(mut slot) = grants
            .slots
            .find_entry(hash, |s| s.holds(grant.data_action, &grant.action, key))
        else {
            return;
        };
        let Some(at) = slot.get().grants.iter().position(|g| Arc::ptr_eq(g, grant)) else {
            return;
        };
        // Keeps the others in insertion order: the first that holds is used.
        slot.get_mut().grants.remove(at);
        if slot.get().grants.is_empty() {
            slot.remove();
        }
        let len = grant.scope_key.len();
        if let Some(at) = grants.scope_lengths.iter().position(|(l, _)| *l == len) {
            grants.scope_lengths[at].1 -= 1;
            if grants.scope_lengths[at].1 == 0 {
                grants.scope_lengths.remove(at);
            }
        }
        if grants.slots.is_empty() {
            drop(grants);
            self.by_principal
                .remove_if(&grant.principal_key, |_, g| g.slots.is_empty());
        }
    }

    /// The grant of this id.
    pub fn get(&self, id: &str) -> Option<Arc<ActiveGrant>> {
        self.by_id.get(id).map(|g| g.value().clone())
    }

    pub fn all(&self) -> Vec<Arc<ActiveGrant>> {
        self.by_id.iter().map(|e| e.value().clone()).collect()
    }

    pub fn is_empty(&self) -> bool {
        self.count.load(Ordering::Acquire) == 0
    }

    /// The unexpired grant with uses left that covers the request and whose
    /// lender still allows it (`lender_allows`, asked only of grants that
    /// cover). Takes one use of it unless the request only asks
    /// ([`Request::consumes_grants`]). The narrowest grant is tried first;
    /// at one scope, the first inserted.
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
        let operation = self.operation_hasher(req.data_action, req.action);
        let scope = req.scope.as_bytes();
        // Only prefixes that end on a segment boundary can be a grant's
        // scope: the whole scope, a prefix followed by '/', or the root.
        let prefixes = grants
            .scope_lengths
            .iter()
            .map(|&(len, _)| len)
            .filter(|&len| {
                len <= scope.len() && (len == scope.len() || scope[len] == b'/' || len == 1)
            })
            .map(|len| &scope[..len]);
        let candidates = prefixes.flat_map(|prefix| {
            let mut h = operation.clone();
            write_folded(&mut h, prefix);
            grants
                .slots
                .find(h.finish(), |s| s.holds(req.data_action, req.action, prefix))
                .map_or(&[][..], |s| &s.grants[..])
        });
        candidates
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

    fn grant_at(id: &str, action: &str, scope: &str, max_uses: u32) -> Arc<ActiveGrant> {
        let g = Arc::into_inner(grant(max_uses)).unwrap_or_else(|| panic!("shared"));
        Arc::new(ActiveGrant {
            id: id.into(),
            action: action.into(),
            scope_key: scope.to_ascii_lowercase().into(),
            scope: scope.into(),
            ..g
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

    #[test]
    fn among_many_grants_only_the_one_that_covers_is_used() {
        let table = GrantTable::default();
        for i in 0..1000 {
            let vm = format!("{RG}/providers/Microsoft.Compute/virtualMachines/vm{i}");
            table.insert(grant_at(&format!("g{i}"), RESTART, &vm, 0));
            let other = format!("{RG}-{i}");
            table.insert(grant_at(&format!("o{i}"), RESTART, &other, 0));
        }
        let now = SystemTime::now();
        let vm = format!("{RG}/providers/Microsoft.Compute/virtualMachines/vm417");
        let used = table.find("agent", &ask(RESTART, &vm, false), now, |_| true);
        assert_eq!(used.map(|g| g.id.to_string()).as_deref(), Some("g417"));
        let below = format!("{RG}-9/providers/Microsoft.Compute/virtualMachines/x");
        let used = table.find("agent", &ask(RESTART, &below, false), now, |_| true);
        assert_eq!(used.map(|g| g.id.to_string()).as_deref(), Some("o9"));
        // A scope that is not on a segment boundary of any grant's.
        let unrelated = format!("{RG}/providers/Microsoft.Compute/virtualMachines/vm4170");
        assert!(!finds(
            &table,
            "agent",
            &ask(RESTART, &unrelated, false),
            now
        ));
        assert_eq!(table.all().len(), 2000);
    }

    #[test]
    fn a_removed_grant_is_no_longer_found_and_its_neighbours_are() {
        let table = GrantTable::default();
        table.insert(grant_at("first", RESTART, RG, 0));
        table.insert(grant_at("second", RESTART, RG, 0));
        let now = SystemTime::now();
        let used = |table: &GrantTable| {
            table
                .find("agent", &ask(RESTART, RG, false), now, |_| true)
                .map(|g| g.id.to_string())
        };
        assert_eq!(used(&table).as_deref(), Some("first"));
        assert!(table.remove("first").is_some());
        assert!(table.get("first").is_none());
        assert_eq!(used(&table).as_deref(), Some("second"));
        assert!(table.remove("first").is_none(), "removed once");
        assert!(table.remove("second").is_some());
        assert_eq!(used(&table), None);
        assert!(table.is_empty());
        assert!(table.by_principal.is_empty(), "no empty index left behind");
    }

    #[test]
    fn the_same_operation_at_two_scopes_is_two_grants_narrowest_first() {
        let table = GrantTable::default();
        let vm = format!("{RG}/providers/Microsoft.Compute/virtualMachines/vm1");
        table.insert(grant_at("wide", RESTART, RG, 0));
        table.insert(grant_at("narrow", RESTART, &vm, 1));
        let now = SystemTime::now();
        let used = |scope: &str| {
            table
                .find("agent", &ask(RESTART, scope, false), now, |_| true)
                .map(|g| g.id.to_string())
        };
        assert_eq!(used(&vm).as_deref(), Some("narrow"));
        // Its one use taken, the wider grant still holds there.
        assert_eq!(used(&vm).as_deref(), Some("wide"));
        let vm2 = format!("{RG}/providers/Microsoft.Compute/virtualMachines/vm2");
        assert_eq!(used(&vm2).as_deref(), Some("wide"));
        assert!(table.remove("wide").is_some());
        assert_eq!(used(&vm2), None);
        assert_eq!(used(RG), None);
    }

    #[test]
    fn operation_and_scope_are_matched_ignoring_case() {
        let table = GrantTable::default();
        table.insert(grant_at("g", RESTART, RG, 0));
        let now = SystemTime::now();
        let op = RESTART.to_ascii_uppercase();
        let scope = RG.to_ascii_uppercase();
        assert!(finds(&table, "agent", &ask(&op, &scope, false), now));
        let lower = RESTART.to_ascii_lowercase();
        let vm = format!("{scope}/PROVIDERS/x/y/Z");
        assert!(finds(&table, "agent", &ask(&lower, &vm, false), now));
        // Folding for the hash maps '@' onto '`': still not the same text.
        let near = RESTART.replace('M', "@");
        assert!(!finds(&table, "agent", &ask(&near, RG, false), now));
    }

    #[test]
    fn a_grant_at_the_root_covers_every_scope() {
        let table = GrantTable::default();
        table.insert(grant_at("root", RESTART, "/", 0));
        let now = SystemTime::now();
        assert!(finds(&table, "agent", &ask(RESTART, "/", false), now));
        assert!(finds(&table, "agent", &ask(RESTART, RG, false), now));
    }

    #[test]
    fn inserting_an_id_again_replaces_the_grant() {
        let table = GrantTable::default();
        table.insert(grant_at("g", RESTART, RG, 0));
        let elsewhere = "/subscriptions/s/resourceGroups/other";
        table.insert(grant_at("g", RESTART, elsewhere, 0));
        let now = SystemTime::now();
        assert!(!finds(&table, "agent", &ask(RESTART, RG, false), now));
        assert!(finds(&table, "agent", &ask(RESTART, elsewhere, false), now));
        assert_eq!(table.all().len(), 1);
        assert!(table.remove("g").is_some());
        assert!(table.is_empty());
    }
}
