//! The tenants known to exist, kept in memory.
//!
//! Every request outside the default tenant first asks whether its tenant
//! exists (else NonexistentTenant). Asked of SQLite, that check was a hand-off
//! to the blocking pool and back for every request: under `partial-update`
//! the runtime threads spent about a third of their time spawning, waking
//! and parking pool threads for it (BENCHMARKS.md, "Tenants known in
//! memory"). A tenant exists from its first write until `clear_tenant`, the
//! only thing that deletes one, and both go through this store (one process
//! per data dir), so a tenant seen to exist is remembered until it is
//! cleared.

use std::collections::HashSet;
use std::sync::{PoisonError, RwLock};

use piazza_store::Tenant;

#[derive(Default)]
pub(crate) struct KnownTenants {
    inner: RwLock<Known>,
}

#[derive(Default)]
struct Known {
    names: HashSet<Tenant>,
    /// Tenants cleared so far: a lookup that began before a clear must not
    /// remember what it read.
    clears: u64,
}

/// Taken before looking a tenant up in the database; see [`KnownTenants::remember`].
#[derive(Clone, Copy)]
pub(crate) struct Ticket(u64);

impl KnownTenants {
    pub(crate) fn contains(&self, tenant: &Tenant) -> bool {
        self.inner
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .names
            .contains(tenant)
    }

    pub(crate) fn ticket(&self) -> Ticket {
        Ticket(self.inner.read().unwrap_or_else(PoisonError::into_inner).clears)
    }

    /// Remembers that `tenant` exists, as read under `ticket`, unless a
    /// tenant was cleared since: the read may predate the clear.
    pub(crate) fn remember(&self, tenant: &Tenant, ticket: Ticket) {
        let mut known = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        if known.clears == ticket.0 {
            known.names.insert(tenant.clone());
        }
    }

    /// Forgets `tenant`, once its clearing has committed.
    pub(crate) fn forget(&self, tenant: &Tenant) {
        let mut known = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        known.clears += 1;
        known.names.remove(tenant);
    }
}

/// Adds `tenant` to the `tenants` table unless it is there.
pub(crate) fn ensure(connection: &rusqlite::Connection, tenant: &Tenant) -> rusqlite::Result<()> {
    connection
        .prepare_cached("INSERT OR IGNORE INTO tenants(name) VALUES (?1)")?
        .execute([tenant.name()])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(name: &str) -> Tenant {
        Tenant::parse(name).expect("tenant")
    }

    #[test]
    fn remembers_until_forgotten() {
        let known = KnownTenants::default();
        let (a, b) = (tenant("a"), tenant("b"));
        assert!(!known.contains(&a));
        known.remember(&a, known.ticket());
        known.remember(&b, known.ticket());
        assert!(known.contains(&a) && known.contains(&b));
        known.forget(&a);
        assert!(!known.contains(&a));
        assert!(known.contains(&b), "clearing one tenant forgets only it");
    }

    #[test]
    fn a_lookup_older_than_a_clear_is_not_remembered() {
        let known = KnownTenants::default();
        let a = tenant("a");
        let before_clear = known.ticket();
        known.forget(&a);
        known.remember(&a, before_clear);
        assert!(!known.contains(&a));
        known.remember(&a, known.ticket());
        assert!(known.contains(&a));
    }
}
