//! The @context management API (clause 5.13): contexts hosted by the broker
//! for its users, and the remote ones it has cached.

use piazza_ngsild::{time, ActiveContext, ErrorKind, NgsiError};
use piazza_store::{ContextKind, StoredContext, Tenant};
use serde_json::Value;

use crate::contexts::HOSTED_PATH;
use crate::{Broker, BrokerResult};

impl Broker {
    /// Add @context (clause 5.13.2): stores a context document to be served
    /// at `{HOSTED_PATH}{id}`. The document must be an object with an
    /// `@context` member that is itself a valid context.
    pub async fn add_context(&self, tenant: &Tenant, document: Value) -> BrokerResult<StoredContext> {
        let Some(local) = document.get("@context") else {
            return Err(NgsiError::bad_request("the body must be a JSON object with an @context member").into());
        };
        if !(local.is_object() || local.is_array() || local.is_string()) {
            return Err(NgsiError::bad_request("@context must be an object, an array or a URL").into());
        }
        // Refuse what could never be used: the context must process.
        self.context(tenant, Some(local)).await?;
        let id = uuid::Uuid::new_v4().to_string();
        let context = StoredContext {
            url: format!("{HOSTED_PATH}{id}"),
            id,
            kind: ContextKind::Hosted,
            document,
            created_at: time::now(),
        };
        self.store.put_context(tenant, context.clone()).await?;
        Ok(context)
    }

    /// List @contexts (clause 5.13.3), optionally of one kind.
    pub async fn list_contexts(&self, tenant: &Tenant, kind: Option<ContextKind>) -> BrokerResult<Vec<StoredContext>> {
        let mut contexts = self.store.list_contexts(tenant).await?;
        contexts.retain(|c| kind.is_none_or(|k| c.kind == k));
        Ok(contexts)
    }

    /// Serve @context (clause 5.13.4).
    pub async fn stored_context(&self, tenant: &Tenant, id: &str) -> BrokerResult<StoredContext> {
        self.store
            .get_context(tenant, id)
            .await?
            .ok_or_else(|| NgsiError::not_found(format!("no @context with id {id}")).into())
    }

    /// Delete and reload @context (clause 5.13.5): `reload` fetches a cached
    /// context again instead of deleting it.
    pub async fn delete_context(&self, tenant: &Tenant, id: &str, reload: bool) -> BrokerResult<()> {
        let stored = self.stored_context(tenant, id).await?;
        if reload {
            if stored.kind != ContextKind::Cached {
                return Err(NgsiError::bad_request("only cached @contexts can be reloaded").into());
            }
            let document = self.contexts.fetch(&stored.url).await?;
            self.store
                .put_context(
                    tenant,
                    StoredContext {
                        document,
                        created_at: time::now(),
                        ..stored
                    },
                )
                .await?;
        } else if !self.store.delete_context(tenant, id).await? {
            return Err(NgsiError::not_found(format!("no @context with id {id}")).into());
        }
        self.contexts.invalidate(tenant);
        Ok(())
    }

    /// The core context document as served by this broker.
    pub fn core_context_document(&self) -> Value {
        ActiveContext::core_document()
    }
}

/// The error for operations on the built-in core context.
pub fn core_context_is_read_only() -> NgsiError {
    NgsiError::new(ErrorKind::BadRequestData, "the core @context cannot be changed")
}
