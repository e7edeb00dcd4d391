//! History retention: attribute instances older than a horizon (per
//! tenant) are deleted in the background, in small batches so that writes
//! are never held up for long.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use piazza_ngsild::time;
use piazza_store::{Store, Tenant};

/// How many instances one purge step deletes.
const BATCH: usize = 5_000;

/// How long history is kept.
#[derive(Clone, Debug)]
pub struct Retention {
    /// For every tenant without its own horizon; `None` keeps everything.
    pub default: Option<Duration>,
    /// Per-tenant horizons, by tenant name.
    pub tenants: HashMap<String, Duration>,
    /// How often the purge runs.
    pub every: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            default: None,
            tenants: HashMap::new(),
            every: Duration::from_secs(600),
        }
    }
}

impl Retention {
    pub fn is_active(&self) -> bool {
        self.default.is_some() || !self.tenants.is_empty()
    }

    fn horizon_of(&self, tenant: &Tenant) -> Option<Duration> {
        self.tenants.get(tenant.name()).copied().or(self.default)
    }
}

/// Runs forever: one purge pass every `retention.every`.
pub(crate) async fn run(store: Arc<dyn Store>, retention: Retention) {
    loop {
        if let Err(error) = purge_once(&*store, &retention).await {
            tracing::warn!(%error, "history retention pass failed");
        }
        tokio::time::sleep(retention.every).await;
    }
}

/// One pass over every tenant; returns how many instances were deleted.
pub(crate) async fn purge_once(store: &dyn Store, retention: &Retention) -> crate::BrokerResult<u64> {
    let mut total = 0;
    for tenant in store.tenants().await? {
        let Some(keep) = retention.horizon_of(&tenant) else {
            continue;
        };
        let keep = chrono::Duration::from_std(keep).unwrap_or(chrono::Duration::MAX);
        let horizon = time::now() - keep;
        loop {
            let purged = store.purge_history(&tenant, horizon, BATCH).await?;
            total += purged;
            if purged < BATCH as u64 {
                break;
            }
            // Let queued writes through between batches.
            tokio::task::yield_now().await;
        }
    }
    if total > 0 {
        tracing::info!(instances = total, "history retention purged old instances");
    }
    Ok(total)
}
