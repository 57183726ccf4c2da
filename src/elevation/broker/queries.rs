//! Reads: single elevations and grants, and listings page by page.

use super::*;

impl Broker {
    /// The elevation `id`, pending (with its waiters) or from the store,
    /// its grant as it stands now.
    pub fn find(&self, id: &str) -> Result<Option<Elevation>, ElevationError> {
        if let Some(entry) = self.lock().pending.get(id) {
            return Ok(Some(entry.elevation.clone()));
        }
        let Some(mut e) = self.store.elevation(id)? else {
            return Ok(None);
        };
        if let Some(g) = &e.grant {
            let current = match self.live_grant(&g.id) {
                Some(g) => Some(g),
                None => self.store.grant(&g.id)?,
            };
            if current.is_some() {
                e.grant = current;
            }
        }
        Ok(Some(e))
    }

    /// [`Broker::find`], a store failure reading as absent.
    pub fn get(&self, id: &str) -> Option<Elevation> {
        self.find(id).unwrap_or_else(|e| {
            tracing::error!("cannot read elevation {id}: {e}");
            None
        })
    }

    /// One page of elevations, oldest first (`page_size` 0 = 100, at most
    /// 1,000); pending ones carry their waiters.
    pub fn list_elevations(
        &self,
        query: &ElevationQuery,
        page_size_asked: u32,
        page_token: &str,
    ) -> Result<Listing<Elevation>, ElevationError> {
        let after = cursor(page_token)?;
        let Page { mut items, next } =
            self.store
                .elevations(query, after.as_ref(), page_size(page_size_asked))?;
        if !self.fleet {
            // (A shared store counts the fleet's waiters itself.)
            let inner = self.lock();
            for e in items.iter_mut().filter(|e| e.state.is_pending()) {
                if let Some(entry) = inner.pending.get(&e.id) {
                    e.waiters = entry.elevation.waiters;
                }
            }
        }
        Ok(Listing {
            items,
            next_page_token: next.map(|c| c.token()).unwrap_or_default(),
        })
    }

    /// One page of grants, oldest first; active ones with their uses as
    /// the engine counts them.
    pub fn list_grants(
        &self,
        query: &GrantQuery,
        page_size_asked: u32,
        page_token: &str,
    ) -> Result<Listing<Grant>, ElevationError> {
        let after = cursor(page_token)?;
        let Page { mut items, next } =
            self.store
                .grants(query, after.as_ref(), page_size(page_size_asked))?;
        if self.fleet {
            // Uses as recorded by every replica.
            return Ok(Listing {
                items,
                next_page_token: next.map(|c| c.token()).unwrap_or_default(),
            });
        }
        let uses: HashMap<Arc<str>, u32> = self
            .engine
            .grants
            .all()
            .iter()
            .map(|a| (a.id.clone(), a.uses.load(Ordering::Acquire)))
            .collect();
        for g in items.iter_mut().filter(|g| g.state.is_active()) {
            if let Some(&n) = uses.get(g.id.as_str()) {
                g.uses = n;
            }
        }
        Ok(Listing {
            items,
            next_page_token: next.map(|c| c.token()).unwrap_or_default(),
        })
    }

    /// The pending elevations, oldest first (bounded by
    /// [`Limits::max_pending`]).
    pub fn pending_elevations(&self) -> Vec<Elevation> {
        let mut out: Vec<Elevation> = self
            .lock()
            .pending
            .values()
            .map(|e| e.elevation.clone())
            .collect();
        out.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        out
    }

    /// What the broker holds in memory: (pending elevations, active
    /// grants). History is in the store only.
    pub fn live(&self) -> (usize, usize) {
        let inner = self.lock();
        (inner.pending.len(), inner.grants.len())
    }

    /// The first page of every elevation at the largest page size, oldest
    /// first: a convenience; page with [`Broker::list_elevations`].
    pub fn list(&self) -> Vec<Elevation> {
        self.list_elevations(&ElevationQuery::default(), MAX_PAGE_SIZE, "")
            .map(|l| l.items)
            .unwrap_or_else(|e| {
                tracing::error!("cannot list elevations: {e}");
                Vec::new()
            })
    }

    /// The first page of every grant at the largest page size: a
    /// convenience; page with [`Broker::list_grants`].
    pub fn grants(&self) -> Vec<Grant> {
        self.list_grants(&GrantQuery::default(), MAX_PAGE_SIZE, "")
            .map(|l| l.items)
            .unwrap_or_else(|e| {
                tracing::error!("cannot list grants: {e}");
                Vec::new()
            })
    }

    /// The audit trail, from the store.
    pub fn audit_trail(&self) -> Result<Vec<serde_json::Value>, StoreError> {
        self.store.audit_events()
    }
}
