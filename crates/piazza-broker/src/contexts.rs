//! @context resolution: user contexts are fetched once (timeout, size limit),
//! kept in the store as `Cached` contexts, and processed contexts are
//! memoised, so a busy client with a `Link` header costs one lookup.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use piazza_ngsild::jsonld::{is_core_context_url, ContextLoader, CORE_CONTEXT_URL};
use piazza_ngsild::{time, ActiveContext, ErrorKind, NgsiError};
use piazza_store::{ContextKind, Store, StoredContext, Tenant};
use serde_json::Value;

use crate::BrokerError;

/// The largest remote @context document accepted.
pub const MAX_CONTEXT_BYTES: usize = 1024 * 1024;
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Processed contexts kept in memory before the memo is reset.
const MEMO_CAPACITY: usize = 4096;
/// The path under which hosted contexts are served.
pub const HOSTED_PATH: &str = "/ngsi-ld/v1/jsonldContexts/";

type Documents = HashMap<String, Arc<Value>>;

pub(crate) struct ContextResolver {
    store: Arc<dyn Store>,
    http: reqwest::Client,
    /// Remote documents by (tenant, URL).
    documents: Mutex<HashMap<(Tenant, String), Arc<Value>>>,
    /// Processed contexts by (tenant, the local context's JSON text).
    memo: Mutex<HashMap<(Tenant, String), Arc<ActiveContext>>>,
    /// When the built-in core context was (re)loaded: its `createdAt`.
    core_loaded: Mutex<time::Timestamp>,
}

struct Loaded<'a>(&'a Documents);

impl ContextLoader for Loaded<'_> {
    fn load(&self, url: &str) -> piazza_ngsild::Result<Arc<Value>> {
        self.0.get(url).cloned().ok_or_else(|| {
            NgsiError::new(
                ErrorKind::LdContextNotAvailable,
                format!("@context {url} is not available"),
            )
        })
    }
}

impl ContextResolver {
    pub(crate) fn new(store: Arc<dyn Store>) -> Self {
        let http = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .connect_timeout(FETCH_TIMEOUT)
            .build()
            .unwrap_or_default();
        Self {
            store,
            http,
            documents: Mutex::new(HashMap::new()),
            memo: Mutex::new(HashMap::new()),
            core_loaded: Mutex::new(time::now()),
        }
    }

    /// The built-in core context as a context entry: it is always cached
    /// (clause 5.13.3), under its canonical URL and the local id `core`.
    pub(crate) fn core_entry(&self) -> StoredContext {
        let created_at = self.core_loaded.lock().map(|t| *t).unwrap_or_else(|_| time::now());
        StoredContext {
            id: CORE_ID.to_owned(),
            url: CORE_CONTEXT_URL.to_owned(),
            kind: ContextKind::Cached,
            document: ActiveContext::core_document(),
            created_at,
        }
    }

    /// "Reloads" the core context: it is built in, so this only restamps it.
    pub(crate) fn reload_core(&self) {
        if let Ok(mut loaded) = self.core_loaded.lock() {
            *loaded = time::now();
        }
    }

    /// The active context for a request's user context (None: core only).
    pub(crate) async fn resolve(
        &self,
        tenant: &Tenant,
        local: Option<&Value>,
    ) -> Result<Arc<ActiveContext>, BrokerError> {
        let Some(local) = local else {
            return Ok(ActiveContext::core());
        };
        let key = (tenant.clone(), local.to_string());
        if let Some(hit) = self.memo.lock().ok().and_then(|m| m.get(&key).cloned()) {
            return Ok(hit);
        }
        let mut documents = Documents::new();
        let mut pending = Vec::new();
        collect_urls(local, &mut pending);
        let mut fetched = 0;
        while let Some(url) = pending.pop() {
            if documents.contains_key(&url) {
                continue;
            }
            fetched += 1;
            if fetched > 32 {
                return Err(NgsiError::bad_request("too many remote @contexts").into());
            }
            let document = self.document(tenant, &url).await?;
            if let Some(inner) = document.get("@context") {
                collect_urls(inner, &mut pending);
            }
            documents.insert(url, document);
        }
        let context = Arc::new(ActiveContext::from_user_context(local, &Loaded(&documents))?);
        if let Ok(mut memo) = self.memo.lock() {
            if memo.len() >= MEMO_CAPACITY {
                memo.clear();
            }
            memo.insert(key, context.clone());
        }
        Ok(context)
    }

    /// Forgets everything memoised for a tenant (after a context is deleted or reloaded).
    pub(crate) fn invalidate(&self, tenant: &Tenant) {
        if let Ok(mut memo) = self.memo.lock() {
            memo.retain(|(t, _), _| t != tenant);
        }
        if let Ok(mut documents) = self.documents.lock() {
            documents.retain(|(t, _), _| t != tenant);
        }
    }

    /// Forgets everything memoised, for every tenant.
    pub(crate) fn invalidate_all(&self) {
        if let Ok(mut memo) = self.memo.lock() {
            memo.clear();
        }
        if let Ok(mut documents) = self.documents.lock() {
            documents.clear();
        }
    }

    async fn document(&self, tenant: &Tenant, url: &str) -> Result<Arc<Value>, BrokerError> {
        let key = (tenant.clone(), url.to_owned());
        if let Some(hit) = self.documents.lock().ok().and_then(|d| d.get(&key).cloned()) {
            return Ok(hit);
        }
        let document = match self.stored(tenant, url).await? {
            Some(document) => document,
            None => {
                let document = self.fetch(url).await?;
                let id = cached_id(url);
                let record = StoredContext {
                    id,
                    url: url.to_owned(),
                    kind: ContextKind::Cached,
                    document: document.clone(),
                    created_at: time::now(),
                };
                self.store.put_context(tenant, record).await?;
                document
            }
        };
        let document = Arc::new(document);
        if let Ok(mut documents) = self.documents.lock() {
            documents.insert(key, document.clone());
        }
        Ok(document)
    }

    /// A context this broker already holds: hosted here, or cached before.
    async fn stored(&self, tenant: &Tenant, url: &str) -> Result<Option<Value>, BrokerError> {
        Ok(self.find(tenant, url).await?.map(|c| c.document))
    }

    /// A stored context by its local id or by its URL: a cached context by
    /// the URL it was fetched from, a hosted one by the URL it is served at.
    /// Hosted URLs are recognised by their path alone, whatever the host:
    /// clients reach this broker under names (proxies, `localhost`, ports)
    /// it cannot know, and an unknown id still falls through to a fetch.
    pub(crate) async fn find(&self, tenant: &Tenant, id_or_url: &str) -> Result<Option<StoredContext>, BrokerError> {
        if is_core_context_url(id_or_url) || id_or_url == CORE_ID {
            return Ok(Some(self.core_entry()));
        }
        if let Some(id) = hosted_id(id_or_url) {
            if let Some(hosted) = self.store.get_context(tenant, id).await? {
                if hosted.kind != ContextKind::Cached {
                    return Ok(Some(hosted));
                }
            }
        }
        if let Some(found) = self.store.get_context(tenant, &cached_id(id_or_url)).await? {
            return Ok(Some(found));
        }
        Ok(self.store.get_context(tenant, id_or_url).await?)
    }

    /// Fetches a remote context document.
    pub(crate) async fn fetch(&self, url: &str) -> Result<Value, BrokerError> {
        let unavailable =
            |why: String| NgsiError::new(ErrorKind::LdContextNotAvailable, format!("@context {url}: {why}"));
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(unavailable("only http(s) URLs can be fetched".into()).into());
        }
        let mut response = self
            .http
            .get(url)
            .header("Accept", "application/ld+json, application/json;q=0.9")
            .send()
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        if !response.status().is_success() {
            return Err(unavailable(format!("answered {}", response.status())).into());
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| unavailable(e.to_string()))? {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_CONTEXT_BYTES {
                return Err(unavailable(format!("larger than {MAX_CONTEXT_BYTES} bytes")).into());
            }
        }
        // The server answered, but not with a context: that is the
        // requester's mistake (a wrong URL), not an unavailable context.
        let document: Value = serde_json::from_slice(&body)
            .map_err(|e| NgsiError::bad_request(format!("@context {url} is not JSON: {e}")))?;
        if !document
            .get("@context")
            .is_some_and(|c| c.is_object() || c.is_array() || c.is_string())
        {
            return Err(NgsiError::bad_request(format!("@context {url} has no @context member")).into());
        }
        Ok(document)
    }
}

/// The local id of the built-in core context.
pub const CORE_ID: &str = "core";

/// The local id in a URL (absolute or relative) under which this broker
/// serves contexts.
fn hosted_id(url: &str) -> Option<&str> {
    let path = match url.split_once("://") {
        Some((_, rest)) => &rest[rest.find('/')?..],
        None => url,
    };
    path.strip_prefix(HOSTED_PATH)
        .filter(|id| !id.is_empty() && !id.contains('/'))
}

/// The stable local id of a cached remote context.
pub(crate) fn cached_id(url: &str) -> String {
    // FNV-1a: stable across processes and releases, unlike `DefaultHasher`.
    let hash = url.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("cached-{hash:016x}")
}

fn collect_urls(local: &Value, into: &mut Vec<String>) {
    match local {
        Value::String(url) if !is_core_context_url(url) => into.push(url.clone()),
        Value::Array(items) => items.iter().for_each(|i| collect_urls(i, into)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosted_urls_are_recognised_by_path() {
        assert_eq!(hosted_id("/ngsi-ld/v1/jsonldContexts/abc"), Some("abc"));
        assert_eq!(
            hosted_id("http://localhost:9090/ngsi-ld/v1/jsonldContexts/abc"),
            Some("abc")
        );
        assert_eq!(hosted_id("https://example.org/ctx.jsonld"), None);
        assert_eq!(hosted_id("http://h/ngsi-ld/v1/jsonldContexts/"), None);
        assert_eq!(hosted_id("http://h/x/ngsi-ld/v1/jsonldContexts/abc"), None);
        assert_eq!(hosted_id("abc"), None);
    }

    #[test]
    fn cached_ids_are_stable_per_url() {
        assert_eq!(cached_id("http://a/b"), cached_id("http://a/b"));
        assert_ne!(cached_id("http://a/b"), cached_id("http://a/c"));
    }
}
