//! The @context management API (clause 5.13): contexts hosted by the broker
//! for its users, the remote ones it has cached, and the built-in core.

use piazza_ngsild::{time, ErrorKind, NgsiError};
use piazza_store::{ContextKind, StoredContext, Tenant};
use serde_json::Value;

use crate::contexts::{CORE_ID, HOSTED_PATH};
use crate::{Broker, BrokerResult};

impl Broker {
    /// Add @context (clause 5.13.2): stores a context document to be served
    /// at `{HOSTED_PATH}{id}`. The document must be an object with an
    /// `@context` member that is itself a valid context.
    pub async fn add_context(&self, tenant: &Tenant, document: Value) -> BrokerResult<StoredContext> {
        let Some(local) = document.get("@context") else {
            return Err(NgsiError::invalid_request("the body must be a JSON object with an @context member").into());
        };
        check_context_shape(local)?;
        // Refuse what could never be used: the context must process. This
        // also fetches and caches the remote contexts it refers to.
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

    /// List @contexts (clause 5.13.3), optionally of one kind. The core
    /// context is always there, as a cached one.
    pub async fn list_contexts(&self, tenant: &Tenant, kind: Option<ContextKind>) -> BrokerResult<Vec<StoredContext>> {
        let mut contexts = vec![self.contexts.core_entry()];
        contexts.extend(self.store.list_contexts(tenant).await?);
        contexts.retain(|c| kind.is_none_or(|k| c.kind == k));
        Ok(contexts)
    }

    /// Serve @context (clause 5.13.4): by local id, or by the URL of a
    /// cached (or hosted) context.
    pub async fn stored_context(&self, tenant: &Tenant, id: &str) -> BrokerResult<StoredContext> {
        self.contexts
            .find(tenant, id)
            .await?
            .ok_or_else(|| NgsiError::not_found(format!("no @context with id {id}")).into())
    }

    /// Delete and reload @context (clause 5.13.5). With `reload`, a cached
    /// context is fetched again and kept as it was if that fails; only
    /// cached contexts can be reloaded. The core context cannot be deleted,
    /// only reloaded.
    pub async fn delete_context(&self, tenant: &Tenant, id: &str, reload: bool) -> BrokerResult<()> {
        let found = self.contexts.find(tenant, id).await?;
        if reload {
            let Some(stored) = found.filter(|c| c.kind == ContextKind::Cached) else {
                return Err(NgsiError::bad_request(format!(
                    "{id} is not a cached @context; only those can be reloaded"
                ))
                .into());
            };
            if stored.id == CORE_ID {
                self.contexts.reload_core();
                return Ok(());
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
        } else {
            let Some(stored) = found else {
                return Err(NgsiError::not_found(format!("no @context with id {id}")).into());
            };
            if stored.id == CORE_ID {
                return Err(core_context_is_read_only().into());
            }
            if !self.store.delete_context(tenant, &stored.id).await? {
                return Err(NgsiError::not_found(format!("no @context with id {id}")).into());
            }
        }
        self.contexts.invalidate(tenant);
        Ok(())
    }
}

/// An `@context` is a URL, a context object, or an array of those (JSON-LD
/// 1.1, 3.1); anything else is refused before a single URL is fetched.
fn check_context_shape(local: &Value) -> Result<(), NgsiError> {
    let valid = |v: &Value| v.is_string() || v.is_object();
    match local {
        Value::Array(items) if items.iter().all(valid) => Ok(()),
        other if valid(other) => Ok(()),
        _ => Err(NgsiError::bad_request(
            "@context must be a URL, an object, or an array of URLs and objects",
        )),
    }
}

/// The error for deleting the built-in core context.
pub fn core_context_is_read_only() -> NgsiError {
    NgsiError::new(
        ErrorKind::BadRequestData,
        "the core @context cannot be deleted, only reloaded",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn context_shapes() {
        assert!(check_context_shape(&json!("http://a/ctx")).is_ok());
        assert!(check_context_shape(&json!({"a": "http://a/a"})).is_ok());
        assert!(check_context_shape(&json!(["http://a/ctx", {"a": "http://a/a"}])).is_ok());
        for bad in [json!(42), json!(true), json!(null), json!(["http://a/ctx", 7])] {
            let error = check_context_shape(&bad).err().map(|e| e.kind);
            assert_eq!(error, Some(ErrorKind::BadRequestData), "{bad}");
        }
    }
}
