//! Follows what the other processes sharing the store change: their new
//! notices wake this process's delivery (it may hold the lease), and their
//! subscription and @context changes replace what this process compiled.

use std::sync::{Arc, Weak};

use piazza_store::{ClusterEvent, Store};
use tokio::sync::broadcast::{error::RecvError, Receiver};

use crate::contexts::ContextResolver;
use crate::notifier::Notifier;
use crate::registry::Registry;

/// What the follower acts on; weak, so that it never keeps a dropped broker alive.
pub(crate) struct Caches {
    pub store: Weak<dyn Store>,
    pub notifier: Weak<Notifier>,
    pub registry: Weak<Registry>,
    pub contexts: Weak<ContextResolver>,
}

struct Live {
    store: Arc<dyn Store>,
    notifier: Arc<Notifier>,
    registry: Arc<Registry>,
    contexts: Arc<ContextResolver>,
}

impl Caches {
    fn upgrade(&self) -> Option<Live> {
        Some(Live {
            store: self.store.upgrade()?,
            notifier: self.notifier.upgrade()?,
            registry: self.registry.upgrade()?,
            contexts: self.contexts.upgrade()?,
        })
    }
}

/// Runs until the store stops sending events or the broker is gone.
pub(crate) async fn follow(mut events: Receiver<ClusterEvent>, caches: Caches) {
    loop {
        let event = match events.recv().await {
            Ok(event) => event,
            // Too slow to keep up: some events are lost, so trust no cache.
            Err(RecvError::Lagged(missed)) => {
                tracing::warn!(missed, "missed changes by other processes; reloading");
                ClusterEvent::Resync
            }
            Err(RecvError::Closed) => return,
        };
        let Some(live) = caches.upgrade() else { return };
        if let Err(error) = live.apply(event).await {
            tracing::warn!(%error, "cannot follow a change by another process");
        }
    }
}

impl Live {
    async fn apply(&self, event: ClusterEvent) -> crate::BrokerResult<()> {
        match event {
            ClusterEvent::Notices {
                tenant,
                subscription_id: Some(id),
            } => self.notifier.wake(&tenant, &id),
            ClusterEvent::Notices {
                tenant,
                subscription_id: None,
            } => {
                for (_, id) in self
                    .store
                    .subscriptions_with_notices()
                    .await?
                    .into_iter()
                    .filter(|(t, _)| *t == tenant)
                {
                    self.notifier.wake(&tenant, &id);
                }
            }
            ClusterEvent::Subscriptions { tenant } => {
                let subscriptions = self.registry.reload(&tenant).await?;
                self.notifier.start_periodic(&tenant, &subscriptions);
            }
            // Subscriptions are compiled with contexts: both go.
            ClusterEvent::Contexts { tenant } => {
                self.contexts.invalidate(&tenant);
                self.registry.reload(&tenant).await?;
            }
            ClusterEvent::Resync => {
                self.contexts.invalidate_all();
                self.registry.forget_all();
                for tenant in self.store.tenants().await? {
                    let subscriptions = self.registry.of(&tenant).await?;
                    self.notifier.start_periodic(&tenant, &subscriptions);
                }
                self.notifier.resume().await?;
            }
        }
        Ok(())
    }
}
