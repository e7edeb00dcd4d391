//! Subscription management (clauses 5.8.1–5.8.5): create, retrieve, query,
//! update and delete subscriptions, validated against the spec's data type
//! (clause 5.2.12). Subscriptions are kept as JSON documents with the
//! `jsonldContext` their terms are to be read with.
//!
//! Every change reloads the tenant's compiled subscriptions (`registry`),
//! which the write path matches changes against; delivery is the
//! notifier's. A subscription is served back with its `status` and the
//! delivery statistics of its `notification` member.

use piazza_ngsild::entity::{is_uri, is_utc_datetime, is_valid_name};
use piazza_ngsild::jsonld::CORE_CONTEXT_URL;
use piazza_ngsild::notification::Trigger;
use piazza_ngsild::query::{GeoQuery, Query, ScopeQuery, TypeSelector};
use piazza_ngsild::{time, ActiveContext, ErrorKind, NgsiError};
use piazza_store::{ContextKind, ResourceKind, StoredContext, Tenant};
use serde_json::{Map, Value};

use crate::contexts::HOSTED_PATH;
use crate::{Broker, BrokerResult};

const KIND: ResourceKind = ResourceKind::Subscription;

/// Members a subscription may carry (clause 5.2.12), besides `@context`.
const MEMBERS: &[&str] = &[
    "id",
    "type",
    "subscriptionName",
    "description",
    "entities",
    "watchedAttributes",
    "notificationTrigger",
    "timeInterval",
    "q",
    "geoQ",
    "csf",
    "isActive",
    "notification",
    "expiresAt",
    "throttling",
    "temporalQ",
    "scopeQ",
    "lang",
    "jsonldContext",
    "showChanges",
    "sysAttrs",
    "datasetId",
    "status",
    "createdAt",
    "modifiedAt",
];

/// Where a request's user context came from.
pub enum SubscriptionContext {
    /// No user context: the core context.
    Core,
    /// A `Link` header URL.
    Link(String),
    /// An inline `@context` (JSON-LD body): kept as an ImplicitlyCreated context.
    Inline(Value),
}

impl Broker {
    /// Create Subscription (clause 5.8.1); returns the subscription id.
    pub async fn create_subscription(
        &self,
        tenant: &Tenant,
        body: Value,
        origin: SubscriptionContext,
    ) -> BrokerResult<String> {
        let Value::Object(mut members) = body else {
            return Err(NgsiError::bad_request("a subscription must be a JSON object").into());
        };
        members.remove("@context");
        let local = match &origin {
            SubscriptionContext::Core => None,
            SubscriptionContext::Link(url) => Some(Value::String(url.clone())),
            SubscriptionContext::Inline(value) => Some(value.clone()),
        };
        let context = self.context(tenant, local.as_ref()).await?;
        let id = match members.get("id") {
            Some(Value::String(id)) if is_uri(id) => id.clone(),
            Some(_) => return Err(NgsiError::bad_request("a subscription id must be a URI").into()),
            None => format!("urn:ngsi-ld:Subscription:{}", uuid::Uuid::new_v4()),
        };
        members.insert("id".into(), Value::String(id.clone()));
        strip_read_only(&mut members);
        validate(&members, &context, true)?;
        let jsonld_context = match (members.get("jsonldContext"), origin) {
            (Some(given), _) => self.notification_context(tenant, given).await?,
            (None, SubscriptionContext::Core) => CORE_CONTEXT_URL.to_owned(),
            (None, SubscriptionContext::Link(url)) => url,
            (None, SubscriptionContext::Inline(value)) => match single_url(&value) {
                // One URL names itself; only a composite context needs hosting.
                Some(url) => url,
                None => self.implicit_context(tenant, value).await?,
            },
        };
        members.insert("jsonldContext".into(), Value::String(jsonld_context));
        // The context the subscription's terms were written with: its
        // selectors and `q` are read with it, and JSON-LD answers echo it.
        if let Some(local) = local {
            members.insert("@context".into(), local);
        }
        members.insert("createdAt".into(), Value::String(time::format(&time::now())));
        members.remove("status");
        if !self
            .store
            .put_resource(tenant, KIND, &id, Value::Object(members), true)
            .await?
        {
            return Err(NgsiError::already_exists(format!("subscription {id} already exists")).into());
        }
        self.subscriptions_changed(tenant).await?;
        Ok(id)
    }

    /// Recompiles the tenant's subscriptions and starts periodic ones.
    async fn subscriptions_changed(&self, tenant: &Tenant) -> BrokerResult<()> {
        let subscriptions = self.subscriptions.reload(tenant).await?;
        self.notifier.start_periodic(tenant, &subscriptions);
        Ok(())
    }

    /// `status` and the delivery statistics (clauses 5.2.12, 5.2.14).
    async fn with_status(&self, tenant: &Tenant, members: Map<String, Value>) -> BrokerResult<Map<String, Value>> {
        let mut members = with_status(members);
        let id = members.get("id").and_then(Value::as_str).unwrap_or_default().to_owned();
        let stats = self.store.delivery_stats(tenant, &id).await?;
        if let Some(Value::Object(notification)) = members.get_mut("notification") {
            let stamp = |t: Option<time::Timestamp>| t.map(|t| Value::String(time::format(&t)));
            let failing = match (stats.last_failure, stats.last_success) {
                (Some(failure), Some(success)) => failure > success,
                (Some(_), None) => true,
                _ => false,
            };
            if stats.times_sent + stats.times_failed > 0 {
                let status = if failing { "failed" } else { "ok" };
                notification.insert("status".into(), Value::String(status.into()));
            }
            if stats.times_sent > 0 {
                notification.insert("timesSent".into(), Value::from(stats.times_sent));
            }
            if stats.times_failed > 0 {
                notification.insert("timesFailed".into(), Value::from(stats.times_failed));
            }
            for (key, value) in [
                ("lastNotification", stamp(stats.last_notification)),
                ("lastSuccess", stamp(stats.last_success)),
                ("lastFailure", stamp(stats.last_failure)),
            ] {
                if let Some(value) = value {
                    notification.insert(key.into(), value);
                }
            }
        }
        Ok(members)
    }

    /// Checks a user-given `jsonldContext`: an absolute URI whose context
    /// can be loaded (or 504 LdContextNotAvailable).
    async fn notification_context(&self, tenant: &Tenant, given: &Value) -> BrokerResult<String> {
        let url = given
            .as_str()
            .filter(|u| u.starts_with("http://") || u.starts_with("https://"))
            .filter(|u| is_uri(u))
            .ok_or_else(|| bad("jsonldContext must be the URL of a JSON-LD context"))?;
        self.context(tenant, Some(given)).await?;
        Ok(url.to_owned())
    }

    /// Keeps an inline @context as an ImplicitlyCreated context; returns where it is served.
    async fn implicit_context(&self, tenant: &Tenant, local: Value) -> BrokerResult<String> {
        let id = uuid::Uuid::new_v4().to_string();
        let mut document = Map::new();
        document.insert("@context".into(), local);
        let stored = StoredContext {
            url: format!("{HOSTED_PATH}{id}"),
            id,
            kind: ContextKind::ImplicitlyCreated,
            document: Value::Object(document),
            created_at: time::now(),
        };
        let url = stored.url.clone();
        self.store.put_context(tenant, stored).await?;
        Ok(url)
    }

    /// Retrieve Subscription (clause 5.8.2), with its current `status`.
    pub async fn subscription(&self, tenant: &Tenant, id: &str) -> BrokerResult<Map<String, Value>> {
        if !is_uri(id) {
            return Err(NgsiError::bad_request(format!("subscription id '{id}' is not a URI")).into());
        }
        let stored = self.store.get_resource(tenant, KIND, id).await?;
        let Some(Value::Object(members)) = stored else {
            return Err(NgsiError::not_found(format!("subscription {id} not found")).into());
        };
        // One subscription's status may be read right after its endpoint
        // answered: let a delivery in flight be recorded first. A listing
        // does not wait, so it never waits once per subscription.
        self.notifier.settled(tenant, id).await;
        self.with_status(tenant, members).await
    }

    /// Query Subscriptions (clause 5.8.3).
    pub async fn subscriptions(&self, tenant: &Tenant) -> BrokerResult<Vec<Map<String, Value>>> {
        let stored = self.store.list_resources(tenant, KIND).await?;
        let mut subscriptions = Vec::with_capacity(stored.len());
        for document in stored {
            if let Value::Object(members) = document {
                subscriptions.push(self.with_status(tenant, members).await?);
            }
        }
        Ok(subscriptions)
    }

    /// Update Subscription (clause 5.8.4): a merge of top-level members.
    pub async fn update_subscription(&self, tenant: &Tenant, id: &str, patch: Value) -> BrokerResult<()> {
        let Value::Object(mut patch) = patch else {
            return Err(NgsiError::bad_request("a subscription fragment must be a JSON object").into());
        };
        patch.remove("@context");
        if patch.is_empty() {
            return Err(NgsiError::bad_request("a subscription fragment must not be empty").into());
        }
        if patch.get("id").is_some_and(|p| p.as_str() != Some(id)) {
            return Err(NgsiError::bad_request("a subscription's id cannot change").into());
        }
        let mut current = self.subscription(tenant, id).await?;
        strip_status(&mut current);
        let context = self.context(tenant, current.get("@context")).await?;
        strip_read_only(&mut patch);
        let expires_changed = patch.contains_key("expiresAt");
        let new_notification_context = patch.get("jsonldContext").cloned();
        for (key, value) in patch {
            if value.is_null() {
                current.remove(&key);
            } else {
                current.insert(key, value);
            }
        }
        validate(&current, &context, expires_changed)?;
        if let Some(given) = new_notification_context {
            let url = self.notification_context(tenant, &given).await?;
            current.insert("jsonldContext".into(), Value::String(url));
        }
        current.insert("modifiedAt".into(), Value::String(time::format(&time::now())));
        if !self
            .store
            .put_resource(tenant, KIND, id, Value::Object(current), false)
            .await?
        {
            return Err(NgsiError::not_found(format!("subscription {id} not found")).into());
        }
        self.subscriptions_changed(tenant).await
    }

    /// Delete Subscription (clause 5.8.5).
    pub async fn delete_subscription(&self, tenant: &Tenant, id: &str) -> BrokerResult<()> {
        if !is_uri(id) {
            return Err(NgsiError::bad_request(format!("subscription id '{id}' is not a URI")).into());
        }
        if self.store.delete_resource(tenant, KIND, id).await? {
            self.subscriptions_changed(tenant).await
        } else {
            Err(NgsiError::not_found(format!("subscription {id} not found")).into())
        }
    }
}

/// The URL of an inline @context that is one URL (or a list of one).
fn single_url(context: &Value) -> Option<String> {
    let url = match context {
        Value::String(url) => url,
        Value::Array(items) if items.len() == 1 => items[0].as_str()?,
        _ => return None,
    };
    (url.starts_with("http://") || url.starts_with("https://")).then(|| url.to_owned())
}

/// Drops what a client may not set: read-only members (clause 5.2.12,
/// Table 5.2.12-2) and members the spec does not define.
fn strip_read_only(members: &mut Map<String, Value>) {
    strip_status(members);
    members.remove("createdAt");
    members.remove("modifiedAt");
    members.retain(|key, _| MEMBERS.contains(&key.as_str()));
}

/// Removes what is derived, never stored: `status` and delivery statistics.
fn strip_status(members: &mut Map<String, Value>) {
    members.remove("status");
    if let Some(Value::Object(notification)) = members.get_mut("notification") {
        for key in [
            "status",
            "timesSent",
            "timesFailed",
            "lastNotification",
            "lastSuccess",
            "lastFailure",
        ] {
            notification.remove(key);
        }
    }
}

/// `status` is derived, never stored: paused, expired or active.
fn with_status(mut members: Map<String, Value>) -> Map<String, Value> {
    let paused = members.get("isActive") == Some(&Value::Bool(false));
    let expired = members
        .get("expiresAt")
        .and_then(Value::as_str)
        .and_then(time::parse)
        .is_some_and(|at| at <= time::now());
    let status = if expired {
        "expired"
    } else if paused {
        "paused"
    } else {
        "active"
    };
    members.insert("status".into(), Value::String(status.into()));
    if !members.contains_key("notificationTrigger") {
        let defaults = Trigger::DEFAULT
            .iter()
            .map(|t| Value::String(t.name().into()))
            .collect();
        members.insert("notificationTrigger".into(), Value::Array(defaults));
    }
    members
}

fn bad(detail: impl Into<String>) -> NgsiError {
    NgsiError::bad_request(detail)
}

/// Checks a subscription against clause 5.2.12 and the rules of 5.8.1.
fn validate(members: &Map<String, Value>, context: &ActiveContext, creating: bool) -> Result<(), NgsiError> {
    if let Some(unknown) = members
        .keys()
        .find(|k| *k != "@context" && !MEMBERS.contains(&k.as_str()))
    {
        return Err(bad(format!("unknown subscription member '{unknown}'")));
    }
    if members.get("type").and_then(Value::as_str) != Some("Subscription") {
        return Err(bad("a subscription's type must be \"Subscription\""));
    }
    let entities = members.get("entities");
    if let Some(entities) = entities {
        let Value::Array(selectors) = entities else {
            return Err(bad("entities must be an array"));
        };
        if selectors.is_empty() {
            return Err(bad("entities must not be empty"));
        }
        selectors.iter().try_for_each(|s| entity_selector(s, context))?;
    }
    let watched = members.get("watchedAttributes");
    if let Some(watched) = watched {
        let names = watched
            .as_array()
            .filter(|a| !a.is_empty())
            .ok_or_else(|| bad("watchedAttributes must be a non-empty array"))?;
        if !names.iter().all(|n| n.as_str().is_some_and(is_valid_name)) {
            return Err(bad("watchedAttributes must be attribute names"));
        }
    }
    if entities.is_none() && watched.is_none() {
        return Err(bad("a subscription needs entities or watchedAttributes"));
    }
    if let Some(interval) = members.get("timeInterval") {
        if !interval.as_f64().is_some_and(|i| i > 0.0) {
            return Err(bad("timeInterval must be a positive number"));
        }
        if watched.is_some() || members.contains_key("throttling") {
            return Err(bad(
                "timeInterval cannot be combined with watchedAttributes or throttling",
            ));
        }
    }
    if let Some(throttling) = members.get("throttling") {
        if !throttling.as_f64().is_some_and(|t| t > 0.0) {
            return Err(bad("throttling must be a positive number"));
        }
    }
    if let Some(q) = members.get("q") {
        Query::parse(
            &decoded_q(q.as_str().ok_or_else(|| bad("q must be a string"))?),
            context,
        )?;
    }
    if let Some(csf) = members.get("csf") {
        Query::parse(csf.as_str().ok_or_else(|| bad("csf must be a string"))?, context)?;
    }
    if let Some(scope) = members.get("scopeQ") {
        ScopeQuery::parse(scope.as_str().ok_or_else(|| bad("scopeQ must be a string"))?)?;
    }
    if let Some(geo) = members.get("geoQ") {
        GeoQuery::from_json(geo, context)?;
    }
    if let Some(active) = members.get("isActive") {
        if !active.is_boolean() {
            return Err(bad("isActive must be true or false"));
        }
    }
    if let Some(expires) = members.get("expiresAt") {
        let at = expires.as_str().filter(|s| is_utc_datetime(s)).and_then(time::parse);
        match at {
            None => return Err(bad("expiresAt must be a UTC DateTime")),
            Some(at) if creating && at <= time::now() => return Err(bad("expiresAt is in the past")),
            Some(_) => {}
        }
    }
    if let Some(trigger) = members.get("notificationTrigger") {
        const TRIGGERS: &[&str] = &[
            "entityCreated",
            "entityUpdated",
            "entityDeleted",
            "attributeCreated",
            "attributeUpdated",
            "attributeDeleted",
        ];
        let valid = trigger
            .as_array()
            .is_some_and(|t| !t.is_empty() && t.iter().all(|v| v.as_str().is_some_and(|s| TRIGGERS.contains(&s))));
        if !valid {
            return Err(bad(
                "notificationTrigger must list entityCreated, attributeUpdated, ...",
            ));
        }
    }
    notification(
        members
            .get("notification")
            .ok_or_else(|| bad("a subscription needs a notification member"))?,
    )
}

fn entity_selector(selector: &Value, context: &ActiveContext) -> Result<(), NgsiError> {
    let Value::Object(members) = selector else {
        return Err(bad("each entities item must be an object"));
    };
    let entity_type = members
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("each entities item needs a type"))?;
    TypeSelector::parse(entity_type, context)?;
    if let Some(id) = members.get("id") {
        if !id.as_str().is_some_and(is_uri) {
            return Err(bad("entities id must be a URI"));
        }
    }
    if let Some(pattern) = members.get("idPattern") {
        let pattern = pattern.as_str().ok_or_else(|| bad("idPattern must be a string"))?;
        regex::RegexBuilder::new(pattern)
            .size_limit(1 << 20)
            .build()
            .map_err(|e| bad(format!("invalid idPattern: {e}")))?;
    }
    Ok(())
}

/// A subscription's `q` as written in a query string: clients often send
/// it percent-encoded (`name=="Eiffel%20Tower"`).
pub(crate) fn decoded_q(q: &str) -> String {
    percent_encoding::percent_decode_str(q).decode_utf8_lossy().into_owned()
}

fn notification(value: &Value) -> Result<(), NgsiError> {
    let Value::Object(members) = value else {
        return Err(bad("notification must be an object"));
    };
    let name_list = |key: &str| -> Result<Option<Vec<&str>>, NgsiError> {
        let Some(value) = members.get(key) else { return Ok(None) };
        let names: Option<Vec<&str>> = value.as_array().filter(|a| !a.is_empty()).and_then(|a| {
            a.iter()
                .map(|n| n.as_str().filter(|s| is_valid_name(s) || *s == "id" || *s == "type"))
                .collect()
        });
        names
            .map(Some)
            .ok_or_else(|| bad(format!("notification {key} must be a non-empty array of names")))
    };
    let pick = name_list("pick")?;
    let omit = name_list("omit")?;
    if let (Some(pick), Some(omit)) = (&pick, &omit) {
        if pick.iter().any(|p| omit.contains(p)) {
            return Err(bad("a member cannot be both picked and omitted"));
        }
    }
    if (pick.is_some() || omit.is_some()) && members.contains_key("attributes") {
        return Err(bad("notification attributes cannot be combined with pick or omit"));
    }
    let key_values = matches!(
        members.get("format").and_then(Value::as_str),
        Some("keyValues" | "simplified")
    );
    if key_values && members.get("showChanges") == Some(&Value::Bool(true)) {
        return Err(bad("showChanges needs the normalized or concise format"));
    }
    if let Some(format) = members.get("format") {
        if !matches!(
            format.as_str(),
            Some("normalized" | "keyValues" | "concise" | "simplified")
        ) {
            return Err(bad("notification format must be normalized, concise or keyValues"));
        }
    }
    if let Some(attributes) = members.get("attributes") {
        let valid = attributes
            .as_array()
            .is_some_and(|a| !a.is_empty() && a.iter().all(|n| n.as_str().is_some_and(is_valid_name)));
        if !valid {
            return Err(bad("notification attributes must be a non-empty array of names"));
        }
    }
    let endpoint = members
        .get("endpoint")
        .and_then(Value::as_object)
        .ok_or_else(|| bad("notification needs an endpoint"))?;
    let uri = endpoint
        .get("uri")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("endpoint needs a uri"))?;
    let scheme_ok = ["http://", "https://", "mqtt://", "mqtts://"]
        .iter()
        .any(|s| uri.starts_with(s));
    if !is_uri(uri) || !scheme_ok {
        return Err(NgsiError::new(
            ErrorKind::BadRequestData,
            format!("endpoint uri '{uri}' is not an http(s) or mqtt(s) URI"),
        ));
    }
    for key in ["receiverInfo", "notifierInfo"] {
        if let Some(pairs) = endpoint.get(key) {
            let valid = pairs.as_array().is_some_and(|items| {
                items.iter().all(|item| {
                    item.as_object().is_some_and(|pair| {
                        pair.get("key").is_some_and(Value::is_string) && pair.get("value").is_some_and(Value::is_string)
                    })
                })
            });
            if !valid {
                return Err(bad(format!("endpoint {key} must be a list of string key/value pairs")));
            }
        }
    }
    if let Some(accept) = endpoint.get("accept") {
        if !matches!(
            accept.as_str(),
            Some("application/json" | "application/ld+json" | "application/geo+json")
        ) {
            return Err(bad(
                "endpoint accept must be application/json, application/ld+json or application/geo+json",
            ));
        }
    }
    Ok(())
}
