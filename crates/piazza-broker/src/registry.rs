//! The subscriptions of each tenant, compiled once for the write path and
//! the notifier: selectors, `q`, watched attributes and rendering options
//! read with the subscription's own `jsonldContext`.
//!
//! A tenant's subscriptions are loaded the first time it is written to and
//! reloaded whenever one of them is created, updated or deleted, so the
//! write path never reads subscription documents.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use piazza_ngsild::jsonld::CORE_CONTEXT_URL;
use piazza_ngsild::notification::{NoticeOptions, Trigger, Watch};
use piazza_ngsild::query::{EntityQuery, GeoQuery, Query, ScopeQuery, Selector, TypeSelector};
use piazza_ngsild::render::{Format, RenderOptions};
use piazza_ngsild::time::{self, Timestamp};
use piazza_ngsild::{ActiveContext, NgsiError};
use piazza_store::{ResourceKind, Store, Tenant};
use serde_json::{Map, Value};

use crate::contexts::ContextResolver;
use crate::BrokerResult;

/// A subscription ready for matching and delivery.
#[derive(Debug)]
pub(crate) struct Subscription {
    pub id: String,
    pub watch: Watch,
    pub paused: bool,
    pub expires_at: Option<Timestamp>,
    /// Periodic notifications every so many seconds (`timeInterval`).
    pub time_interval: Option<f64>,
    /// The least time between two notifications, in seconds.
    pub throttling: Option<f64>,
    pub context: Arc<ActiveContext>,
    /// The `jsonldContext` the notifications name (absolute URL, or a path of ours).
    pub context_url: String,
    pub options: NoticeOptions,
    pub endpoint: Endpoint,
    /// `notification.join`: linked entities sent along (clause 4.5.23).
    pub join: Option<Join>,
}

/// How linked entities join a notification.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Join {
    /// Inside their relationships (`inline`), else beside the entity (`flat`).
    pub inline: bool,
    /// How many relationship hops are followed (`joinLevel`).
    pub level: u32,
}

/// Where and how notifications go (`notification.endpoint`, clause 5.2.15).
#[derive(Clone, Debug)]
pub(crate) struct Endpoint {
    pub uri: String,
    /// `application/json` (default) or `application/ld+json`.
    pub accept: String,
    /// `receiverInfo`: sent as headers (HTTP) or metadata (MQTT).
    pub receiver_info: Vec<(String, String)>,
    /// `notifierInfo`: settings of the binding (e.g. `MQTT-QoS`).
    pub notifier_info: Vec<(String, String)>,
}

impl Subscription {
    /// Whether changes are notified now (not paused, not expired, not periodic).
    pub fn on_change(&self, now: Timestamp) -> bool {
        self.time_interval.is_none() && self.is_live(now)
    }

    pub fn is_live(&self, now: Timestamp) -> bool {
        !self.paused && self.expires_at.is_none_or(|at| at > now)
    }
}

pub(crate) type Subscriptions = Arc<Vec<Arc<Subscription>>>;

pub(crate) struct Registry {
    store: Arc<dyn Store>,
    contexts: Arc<ContextResolver>,
    tenants: Mutex<HashMap<Tenant, Subscriptions>>,
}

impl Registry {
    pub fn new(store: Arc<dyn Store>, contexts: Arc<ContextResolver>) -> Self {
        Self {
            store,
            contexts,
            tenants: Mutex::new(HashMap::new()),
        }
    }

    /// The tenant's subscriptions, loaded on first use.
    pub async fn of(&self, tenant: &Tenant) -> BrokerResult<Subscriptions> {
        if let Some(known) = self.tenants.lock().ok().and_then(|t| t.get(tenant).cloned()) {
            return Ok(known);
        }
        self.reload(tenant).await
    }

    pub async fn get(&self, tenant: &Tenant, id: &str) -> BrokerResult<Option<Arc<Subscription>>> {
        Ok(self.of(tenant).await?.iter().find(|s| s.id == id).cloned())
    }

    /// Drops every compiled subscription; each tenant's are read again on next use.
    pub fn forget_all(&self) {
        if let Ok(mut tenants) = self.tenants.lock() {
            tenants.clear();
        }
    }

    /// Reads the tenant's subscriptions again (after one changed).
    pub async fn reload(&self, tenant: &Tenant) -> BrokerResult<Subscriptions> {
        let documents = self.store.list_resources(tenant, ResourceKind::Subscription).await?;
        let mut compiled = Vec::with_capacity(documents.len());
        for document in documents {
            let Value::Object(members) = document else { continue };
            match self.compile(tenant, &members).await {
                Ok(subscription) => compiled.push(Arc::new(subscription)),
                // Stored subscriptions were validated; one that no longer
                // compiles (its context vanished) must not stop the others.
                Err(error) => tracing::warn!(
                    tenant = %tenant,
                    subscription = ?members.get("id"),
                    %error,
                    "subscription cannot be compiled; it notifies nothing"
                ),
            }
        }
        let compiled = Arc::new(compiled);
        if let Ok(mut tenants) = self.tenants.lock() {
            tenants.insert(tenant.clone(), compiled.clone());
        }
        Ok(compiled)
    }

    async fn compile(&self, tenant: &Tenant, members: &Map<String, Value>) -> BrokerResult<Subscription> {
        let context_url = members
            .get("jsonldContext")
            .and_then(Value::as_str)
            .unwrap_or(CORE_CONTEXT_URL)
            .to_owned();
        // Notifications are compacted with `jsonldContext`; the
        // subscription's own terms are read with the context it was written with.
        let context = if context_url == CORE_CONTEXT_URL {
            ActiveContext::core()
        } else {
            self.contexts
                .resolve(tenant, Some(&Value::String(context_url.clone())))
                .await?
        };
        let terms = self.contexts.resolve(tenant, members.get("@context")).await?;
        let id = text(members, "id").unwrap_or_default();
        let notification = members.get("notification").and_then(Value::as_object);
        Ok(Subscription {
            watch: watch(members, &terms)?,
            paused: members.get("isActive") == Some(&Value::Bool(false)),
            expires_at: text(members, "expiresAt").as_deref().and_then(time::parse),
            time_interval: members.get("timeInterval").and_then(Value::as_f64),
            throttling: members.get("throttling").and_then(Value::as_f64),
            options: notice_options(members, notification, &terms, &context),
            endpoint: endpoint(notification),
            join: join(notification),
            context,
            context_url,
            id,
        })
    }
}

fn text(members: &Map<String, Value>, key: &str) -> Option<String> {
    members.get(key).and_then(Value::as_str).map(str::to_owned)
}

fn names(value: Option<&Value>, context: &ActiveContext) -> Vec<String> {
    value
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(Value::as_str)
                .map(|n| context.expand(n))
                .collect()
        })
        .unwrap_or_default()
}

fn watch(members: &Map<String, Value>, context: &ActiveContext) -> Result<Watch, NgsiError> {
    let mut selection = EntityQuery::default();
    for selector in members.get("entities").and_then(Value::as_array).into_iter().flatten() {
        selection.alternatives.push(Selector {
            ids: selector
                .get("id")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .into_iter()
                .collect(),
            id_pattern: match selector.get("idPattern").and_then(Value::as_str) {
                Some(pattern) => Some(
                    regex::RegexBuilder::new(pattern)
                        .size_limit(1 << 20)
                        .build()
                        .map_err(|e| NgsiError::bad_request(format!("invalid idPattern: {e}")))?,
                ),
                None => None,
            },
            types: match selector.get("type").and_then(Value::as_str) {
                Some(types) => Some(TypeSelector::parse(types, context)?),
                None => None,
            },
        });
    }
    if let Some(q) = members.get("q").and_then(Value::as_str) {
        selection.q = Some(Query::parse(&crate::subscriptions::decoded_q(q), context)?);
    }
    if let Some(scope) = members.get("scopeQ").and_then(Value::as_str) {
        selection.scope = Some(ScopeQuery::parse(scope)?);
    }
    if let Some(geo) = members.get("geoQ") {
        selection.geo = Some(GeoQuery::from_json(geo, context)?);
    }
    let triggers = match members.get("notificationTrigger").and_then(Value::as_array) {
        Some(names) => names
            .iter()
            .filter_map(|n| n.as_str().and_then(Trigger::from_name))
            .collect(),
        None => Trigger::DEFAULT.to_vec(),
    };
    Ok(Watch {
        selection,
        watched: names(members.get("watchedAttributes"), context),
        triggers,
        show_changes: show_changes(members),
    })
}

fn show_changes(members: &Map<String, Value>) -> bool {
    let flag = |v: Option<&Value>| v.and_then(Value::as_bool).unwrap_or(false);
    flag(members.get("showChanges")) || flag(members.get("notification").and_then(|n| n.get("showChanges")))
}

fn notice_options(
    members: &Map<String, Value>,
    notification: Option<&Map<String, Value>>,
    terms: &ActiveContext,
    context: &ActiveContext,
) -> NoticeOptions {
    // pick/omit name members of the rendered entity: compacted with the
    // notification's context, with `id`, `type` and `scope` as they are.
    let members_named = |key: &str| -> Option<Vec<String>> {
        let items = notification?.get(key)?.as_array()?;
        Some(
            items
                .iter()
                .filter_map(Value::as_str)
                .map(|n| match n {
                    "id" | "type" | "scope" => n.to_owned(),
                    _ => context.compact(&terms.expand(n)),
                })
                .collect(),
        )
    };
    let get = |key: &str| notification.and_then(|n| n.get(key));
    let flag = |v: Option<&Value>| v.and_then(Value::as_bool).unwrap_or(false);
    NoticeOptions {
        render: RenderOptions {
            format: get("format")
                .and_then(Value::as_str)
                .and_then(Format::from_option)
                .unwrap_or_default(),
            sys_attrs: flag(get("sysAttrs")) || flag(members.get("sysAttrs")),
            lang: text(members, "lang"),
        },
        attributes: names(get("attributes"), terms),
        show_changes: show_changes(members),
        pick: members_named("pick"),
        omit: members_named("omit").unwrap_or_default(),
        dataset_ids: members
            .get("datasetId")
            .and_then(Value::as_array)
            .map(|ids| ids.iter().filter_map(Value::as_str).map(str::to_owned).collect())
            .unwrap_or_default(),
    }
}

fn join(notification: Option<&Map<String, Value>>) -> Option<Join> {
    let notification = notification?;
    let inline = match notification.get("join").and_then(Value::as_str)? {
        "inline" => true,
        "flat" => false,
        _ => return None,
    };
    let level = notification
        .get("joinLevel")
        .and_then(Value::as_u64)
        .map_or(1, |l| l.clamp(1, 10) as u32);
    Some(Join { inline, level })
}

fn endpoint(notification: Option<&Map<String, Value>>) -> Endpoint {
    let endpoint = notification.and_then(|n| n.get("endpoint"));
    let field = |key: &str| endpoint.and_then(|e| e.get(key));
    let pairs = |key: &str| -> Vec<(String, String)> {
        field(key)
            .and_then(Value::as_array)
            .map(|items| {
                items
                    .iter()
                    .filter_map(|i| Some((i.get("key")?.as_str()?.to_owned(), i.get("value")?.as_str()?.to_owned())))
                    .collect()
            })
            .unwrap_or_default()
    };
    Endpoint {
        uri: field("uri").and_then(Value::as_str).unwrap_or_default().to_owned(),
        accept: field("accept")
            .and_then(Value::as_str)
            .unwrap_or("application/json")
            .to_owned(),
        receiver_info: pairs("receiverInfo"),
        notifier_info: pairs("notifierInfo"),
    }
}
