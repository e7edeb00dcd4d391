//! @context resolution: user contexts are fetched once (timeout, size limit),
//! kept in the store as `Cached` contexts, and processed contexts are
//! memoised, so a busy client with a `Link` header costs one lookup.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use piazza_ngsild::jsonld::{is_core_context_url, ContextLoader};
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
        if let Some((_, id)) = url.split_once(HOSTED_PATH) {
            if let Some(hosted) = self.store.get_context(tenant, id).await? {
                return Ok(Some(hosted.document));
            }
        }
        Ok(self
            .store
            .get_context(tenant, &cached_id(url))
            .await?
            .map(|c| c.document))
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
        let document: Value = serde_json::from_slice(&body).map_err(|e| unavailable(format!("not JSON: {e}")))?;
        if !document
            .get("@context")
            .is_some_and(|c| c.is_object() || c.is_array() || c.is_string())
        {
            return Err(unavailable("no @context member".into()).into());
        }
        Ok(document)
    }
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
