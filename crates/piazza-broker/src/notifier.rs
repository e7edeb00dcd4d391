//! Notification delivery (clause 5.8.6): one worker per subscription reads
//! the subscription's outbox in order, sends, and settles what was
//! delivered, so a slow or dead endpoint only ever delays itself.
//!
//! Delivery is at least once: an outbox entry is removed only after its
//! endpoint acknowledged it (HTTP 2xx, MQTT PUBACK/PUBCOMP for QoS 1/2), in
//! the order of the changes. A failing endpoint is retried with exponential
//! backoff; entries older than `max_notice_age` are given up (and logged)
//! so that a dead endpoint cannot grow the outbox without bound.
//! Periodic subscriptions (`timeInterval`) have their own task.
//!
//! When several processes share the store, each subscription is delivered
//! by the one holding its lease (`Store::claim_delivery`), renewed as it
//! delivers; the others only check, while something is pending, whether
//! the lease ran out because its holder died, and then take over.

mod http;
mod mqtt;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use piazza_ngsild::notification::{render_notice, Notice};
use piazza_ngsild::query::EntityQuery;
use piazza_ngsild::render::render_entity;
use piazza_ngsild::time;
use piazza_store::{Delivery, Page, PendingNotice, Store, Tenant};
use serde_json::{Map, Value};
use tokio::sync::Notify;

use crate::registry::{Registry, Subscription};

/// How many outbox entries a worker reads at a time.
const BATCH: usize = 256;
/// The most entities one notification carries.
const MAX_DATA: usize = 100;
const FIRST_RETRY: Duration = Duration::from_millis(500);
const LAST_RETRY: Duration = Duration::from_secs(60);
/// How often an idle worker checks that its subscription still exists.
const IDLE_CHECK: Duration = Duration::from_secs(30);

/// Settings of notification delivery.
#[derive(Clone, Debug)]
pub struct NotifierConfig {
    /// Where this broker is reached, to turn its own context paths into
    /// absolute URLs in notifications (e.g. `http://127.0.0.1:1026`).
    pub public_url: String,
    /// Undelivered notifications older than this are given up.
    pub max_notice_age: Duration,
    /// How long one HTTP delivery may take.
    pub request_timeout: Duration,
    /// How long a delivery lease lasts without renewal: the longest a
    /// subscription waits when the process delivering it dies.
    pub lease: Duration,
}

impl Default for NotifierConfig {
    fn default() -> Self {
        Self {
            public_url: "http://127.0.0.1:1026".into(),
            max_notice_age: Duration::from_secs(24 * 3600),
            request_timeout: Duration::from_secs(10),
            lease: Duration::from_secs(20),
        }
    }
}

type Key = (Tenant, String);

pub(crate) struct Notifier {
    store: Arc<dyn Store>,
    registry: Arc<Registry>,
    config: NotifierConfig,
    http: http::HttpSender,
    mqtt: mqtt::MqttSender,
    workers: Mutex<HashMap<Key, Arc<Notify>>>,
    periodic: Mutex<HashSet<Key>>,
    /// Held while a delivery is sent and recorded, so that reading a
    /// subscription's status right after its endpoint answered sees it.
    delivering: Mutex<HashMap<Key, Arc<tokio::sync::Mutex<()>>>>,
    /// Until when this process holds the delivery lease of a subscription
    /// (a lower bound: measured from before the claim was sent).
    leases: Mutex<HashMap<Key, Instant>>,
}

/// One notification ready to send.
pub(crate) struct Outgoing {
    pub body: Map<String, Value>,
    pub content_type: &'static str,
    /// The `Link` header, for JSON notifications.
    pub link: Option<String>,
}

impl Notifier {
    pub fn new(store: Arc<dyn Store>, registry: Arc<Registry>, config: NotifierConfig) -> Self {
        Self {
            http: http::HttpSender::new(config.request_timeout),
            mqtt: mqtt::MqttSender::default(),
            store,
            registry,
            config,
            workers: Mutex::new(HashMap::new()),
            periodic: Mutex::new(HashSet::new()),
            delivering: Mutex::new(HashMap::new()),
            leases: Mutex::new(HashMap::new()),
        }
    }

    /// Whether this process may deliver the subscription now: it holds the
    /// lease with at least three quarters of it left, so a delivery that
    /// started under it ends under it; renewed when less is left.
    async fn hold(&self, key: &Key) -> bool {
        let lease = self.config.lease;
        let now = Instant::now();
        let held = self.leases.lock().ok().and_then(|l| l.get(key).copied());
        if held.is_some_and(|until| until >= now + lease * 3 / 4) {
            return true;
        }
        let (tenant, id) = key;
        let claimed = match self.store.claim_delivery(tenant, id, lease).await {
            Ok(claimed) => claimed,
            Err(error) => {
                tracing::warn!(%tenant, subscription = %id, %error, "cannot claim the delivery lease");
                false
            }
        };
        if let Ok(mut leases) = self.leases.lock() {
            if claimed {
                leases.insert(key.clone(), now + lease);
            } else {
                leases.remove(key);
            }
        }
        claimed
    }

    /// Gives up every lease this process holds (at shutdown), so that
    /// another process takes the deliveries over at once.
    pub async fn release_leases(&self) {
        let held: Vec<Key> = match self.leases.lock() {
            Ok(mut leases) => leases.drain().map(|(key, _)| key).collect(),
            Err(_) => return,
        };
        for (tenant, id) in held {
            if let Err(error) = self.store.release_delivery(&tenant, &id).await {
                tracing::warn!(%tenant, subscription = %id, %error, "cannot release a delivery lease");
            }
        }
    }

    fn delivery_lock(&self, tenant: &Tenant, subscription_id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let key = (tenant.clone(), subscription_id.to_owned());
        match self.delivering.lock() {
            Ok(mut locks) => locks.entry(key).or_default().clone(),
            Err(_) => Arc::default(),
        }
    }

    /// Waits (briefly) for a delivery in flight to be recorded.
    pub async fn settled(&self, tenant: &Tenant, subscription_id: &str) {
        let lock = self.delivery_lock(tenant, subscription_id);
        let _ = tokio::time::timeout(Duration::from_secs(2), lock.lock()).await;
    }

    /// Makes sure the subscription's worker runs and looks at its outbox.
    pub fn wake(self: &Arc<Self>, tenant: &Tenant, subscription_id: &str) {
        let key = (tenant.clone(), subscription_id.to_owned());
        let Ok(mut workers) = self.workers.lock() else { return };
        if let Some(wake) = workers.get(&key) {
            wake.notify_one();
            return;
        }
        let wake = Arc::new(Notify::new());
        workers.insert(key.clone(), wake.clone());
        tokio::spawn(self.clone().work(key, wake));
    }

    /// Starts the periodic task of every `timeInterval` subscription of the tenant.
    pub fn start_periodic(self: &Arc<Self>, tenant: &Tenant, subscriptions: &[Arc<Subscription>]) {
        let Ok(mut running) = self.periodic.lock() else { return };
        for subscription in subscriptions.iter().filter(|s| s.time_interval.is_some()) {
            let key = (tenant.clone(), subscription.id.clone());
            if running.insert(key.clone()) {
                tokio::spawn(self.clone().tick(key));
            }
        }
    }

    /// Resumes delivery after a start: what the outbox still holds.
    pub async fn resume(self: &Arc<Self>) -> crate::BrokerResult<()> {
        for (tenant, id) in self.store.subscriptions_with_notices().await? {
            self.wake(&tenant, &id);
        }
        Ok(())
    }

    async fn work(self: Arc<Self>, key: Key, wake: Arc<Notify>) {
        let (tenant, id) = &key;
        let mut retry = FIRST_RETRY;
        let mut last_sent: Option<Instant> = None;
        loop {
            let subscription = match self.registry.get(tenant, id).await {
                Ok(Some(subscription)) => subscription,
                Ok(None) => break,
                Err(error) => {
                    tracing::warn!(%tenant, subscription = %id, %error, "cannot read the subscription");
                    tokio::time::sleep(retry).await;
                    continue;
                }
            };
            let pending = match self.store.pending_notices(tenant, id, BATCH).await {
                Ok(pending) => pending,
                Err(error) => {
                    tracing::warn!(%tenant, subscription = %id, %error, "cannot read the outbox");
                    tokio::time::sleep(retry).await;
                    continue;
                }
            };
            if pending.is_empty() {
                let _ = tokio::time::timeout(IDLE_CHECK, wake.notified()).await;
                continue;
            }
            if !self.hold(&key).await {
                // Another process delivers; wake-ups are its business now.
                // Look again when its lease could have run out.
                tokio::time::sleep(self.config.lease / 2).await;
                continue;
            }
            let throttle = subscription.throttling.map(Duration::from_secs_f64);
            if let (Some(throttle), Some(sent)) = (throttle, last_sent) {
                let due = sent + throttle;
                if Instant::now() < due {
                    tokio::time::sleep_until(due.into()).await;
                    continue;
                }
            }
            let (notices, settled) = plan(&pending, throttle.is_some());
            let trigger = notices.last().map(|n| n.trigger.name());
            let data = self.render(tenant, &subscription, &notices).await;
            let outgoing = self.outgoing(&subscription, data, trigger);
            let lock = self.delivery_lock(tenant, id);
            let recording = lock.lock().await;
            let delivered = self.send(tenant, &subscription, outgoing).await;
            let success = delivered.is_ok();
            let settled = if success { settled } else { self.expired(&pending) };
            if let Err(error) = &delivered {
                tracing::warn!(%tenant, subscription = %id, endpoint = %subscription.endpoint.uri, %error, "notification failed");
            }
            let delivery = Delivery {
                at: time::now(),
                success,
                settled,
            };
            if let Err(error) = self.store.record_delivery(tenant, id, delivery).await {
                tracing::error!(%tenant, subscription = %id, %error, "cannot record a delivery");
            }
            drop(recording);
            if success {
                retry = FIRST_RETRY;
                last_sent = Some(Instant::now());
            } else {
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(LAST_RETRY);
            }
        }
        if let Ok(mut workers) = self.workers.lock() {
            workers.remove(&key);
        }
        if let Ok(mut locks) = self.delivering.lock() {
            locks.remove(&key);
        }
        self.forget_lease(&key).await;
    }

    /// Gives up the lease of a subscription this process stops delivering.
    async fn forget_lease(&self, key: &Key) {
        let held = self.leases.lock().ok().and_then(|mut l| l.remove(key)).is_some();
        if held {
            let _ = self.store.release_delivery(&key.0, &key.1).await;
        }
    }

    /// The entries a failed delivery gives up: those past `max_notice_age`.
    fn expired(&self, pending: &[PendingNotice]) -> Vec<i64> {
        let max_age = chrono::Duration::from_std(self.config.max_notice_age).unwrap_or(chrono::Duration::MAX);
        let horizon = time::now() - max_age;
        let expired: Vec<i64> = pending
            .iter()
            .filter(|p| p.recorded_at < horizon)
            .map(|p| p.seq)
            .collect();
        if !expired.is_empty() {
            tracing::error!(count = expired.len(), "notifications given up after max_notice_age");
        }
        expired
    }

    /// The notified entities, with their linked entities when the
    /// subscription joins them.
    async fn render(&self, tenant: &Tenant, subscription: &Subscription, notices: &[Notice]) -> Vec<Value> {
        let mut data: Vec<Value> = Vec::with_capacity(notices.len());
        let mut linked: Vec<Value> = Vec::new();
        for notice in notices {
            let mut item = render_notice(notice, &subscription.context, &subscription.options);
            if let Some(join) = subscription.join {
                let names = &subscription.options.attributes;
                let objects = crate::relationship_objects(&notice.entity, names);
                self.join(tenant, subscription, join.level, objects, &mut item, &mut linked)
                    .await;
            }
            data.push(Value::Object(item));
        }
        for entity in linked {
            let id = entity.get("id").cloned();
            if !data.iter().any(|d| d.get("id") == id.as_ref()) {
                data.push(entity);
            }
        }
        data
    }

    /// Fetches the entities `objects` name and puts them inside the
    /// relationships of `item` (inline) or in `flat`, `level` hops deep.
    fn join<'a>(
        &'a self,
        tenant: &'a Tenant,
        subscription: &'a Subscription,
        level: u32,
        objects: Vec<String>,
        item: &'a mut Map<String, Value>,
        flat: &'a mut Vec<Value>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>> {
        Box::pin(async move {
            let Some(join) = subscription.join else { return };
            for id in objects.into_iter().take(MAX_DATA) {
                let Ok(Some(entity)) = self.store.get(tenant, &id).await else {
                    continue;
                };
                let mut rendered = render_entity(&entity, &subscription.context, &subscription.options.render);
                if level > 1 {
                    let deeper = crate::relationship_objects(&entity, &[]);
                    self.join(tenant, subscription, level - 1, deeper, &mut rendered, flat)
                        .await;
                }
                if join.inline {
                    inline_into(item, &id, rendered);
                } else if !flat
                    .iter()
                    .any(|f| f.get("id").and_then(Value::as_str) == Some(id.as_str()))
                {
                    flat.push(Value::Object(rendered));
                }
            }
        })
    }

    /// A notification (clause 5.3.1) with its media type and context.
    fn outgoing(&self, subscription: &Subscription, data: Vec<Value>, trigger: Option<&str>) -> Outgoing {
        let context_url = if subscription.context_url.starts_with('/') {
            format!(
                "{}{}",
                self.config.public_url.trim_end_matches('/'),
                subscription.context_url
            )
        } else {
            subscription.context_url.clone()
        };
        let mut body = Map::new();
        body.insert(
            "id".into(),
            Value::String(format!("urn:ngsi-ld:Notification:{}", uuid::Uuid::new_v4())),
        );
        body.insert("type".into(), Value::String("Notification".into()));
        body.insert("subscriptionId".into(), Value::String(subscription.id.clone()));
        body.insert("notifiedAt".into(), Value::String(time::format(&time::now())));
        body.insert("data".into(), Value::Array(data));
        if let Some(trigger) = trigger {
            body.insert("triggerReason".into(), Value::String(trigger.into()));
        }
        if subscription.endpoint.accept == "application/ld+json" {
            // Each notified entity is a JSON-LD document of its own, too.
            if let Some(Value::Array(items)) = body.get_mut("data") {
                for item in items.iter_mut().filter_map(Value::as_object_mut) {
                    item.insert("@context".into(), Value::String(context_url.clone()));
                }
            }
            body.insert("@context".into(), Value::String(context_url));
            Outgoing {
                body,
                content_type: "application/ld+json",
                link: None,
            }
        } else {
            Outgoing {
                body,
                content_type: "application/json",
                link: Some(format!(
                    "<{context_url}>; rel=\"http://www.w3.org/ns/json-ld#context\"; type=\"application/ld+json\""
                )),
            }
        }
    }

    async fn send(&self, tenant: &Tenant, subscription: &Subscription, outgoing: Outgoing) -> Result<(), String> {
        let endpoint = &subscription.endpoint;
        if endpoint.uri.starts_with("mqtt://") || endpoint.uri.starts_with("mqtts://") {
            self.mqtt.send(tenant, endpoint, outgoing).await
        } else {
            self.http.send(tenant, endpoint, outgoing).await
        }
    }

    /// The periodic task of a `timeInterval` subscription: every interval,
    /// the current state of every matching entity.
    async fn tick(self: Arc<Self>, key: Key) {
        let (tenant, id) = &key;
        loop {
            let Ok(Some(subscription)) = self.registry.get(tenant, id).await else {
                break;
            };
            let Some(interval) = subscription.time_interval else {
                break;
            };
            if subscription.is_live(time::now()) && self.hold(&key).await {
                self.send_current_state(tenant, &subscription).await;
            }
            tokio::time::sleep(Duration::from_secs_f64(interval.max(0.1))).await;
        }
        if let Ok(mut running) = self.periodic.lock() {
            running.remove(&key);
        }
    }

    async fn send_current_state(&self, tenant: &Tenant, subscription: &Subscription) {
        let query: EntityQuery = subscription.watch.selection.clone();
        let page = Page {
            offset: 0,
            limit: MAX_DATA,
            count: false,
        };
        let entities = match self.store.query(tenant, Arc::new(query), page).await {
            Ok(result) => result.entities,
            Err(error) => {
                tracing::warn!(%tenant, subscription = %subscription.id, %error, "periodic query failed");
                return;
            }
        };
        if entities.is_empty() {
            return;
        }
        let notices: Vec<Notice> = entities
            .into_iter()
            .map(|entity| Notice {
                trigger: piazza_ngsild::notification::Trigger::EntityUpdated,
                entity,
                deleted_at: None,
                at: None,
                removed: Vec::new(),
                previous: Default::default(),
            })
            .collect();
        let data = self.render(tenant, subscription, &notices).await;
        let outgoing = self.outgoing(subscription, data, None);
        let lock = self.delivery_lock(tenant, &subscription.id);
        let _recording = lock.lock().await;
        let delivered = self.send(tenant, subscription, outgoing).await;
        if let Err(error) = &delivered {
            tracing::warn!(%tenant, subscription = %subscription.id, %error, "periodic notification failed");
        }
        let delivery = Delivery {
            at: time::now(),
            success: delivered.is_ok(),
            settled: Vec::new(),
        };
        if let Err(error) = self.store.record_delivery(tenant, &subscription.id, delivery).await {
            tracing::error!(%tenant, subscription = %subscription.id, %error, "cannot record a delivery");
        }
    }
}

/// The next notification from the head of the outbox and the entries
/// it settles. Consecutive notices of one trigger about distinct
/// entities share a notification; under throttling, everything pending
/// is coalesced into one notification with the latest state of each entity.
fn plan(pending: &[PendingNotice], coalesce: bool) -> (Vec<Notice>, Vec<i64>) {
    let mut settled = Vec::new();
    let mut notices: Vec<Notice> = Vec::new();
    for entry in pending {
        let notice: Notice = match serde_json::from_value(entry.notice.clone()) {
            Ok(notice) => notice,
            Err(error) => {
                tracing::error!(seq = entry.seq, %error, "unreadable outbox entry dropped");
                settled.push(entry.seq);
                continue;
            }
        };
        let same_entity = notices.iter().position(|n| n.entity.id == notice.entity.id);
        if coalesce {
            if let Some(at) = same_entity {
                notices.remove(at);
            }
        } else if same_entity.is_some()
            || notices.len() >= MAX_DATA
            || notices.first().is_some_and(|n| n.trigger != notice.trigger)
        {
            break;
        }
        settled.push(entry.seq);
        notices.push(notice);
    }
    (notices, settled)
}

/// Puts a linked entity inside the relationship that names it: as its
/// `entity` member (normalized, concise) or in place of the object id
/// (keyValues).
fn inline_into(item: &mut Map<String, Value>, id: &str, linked: Map<String, Value>) {
    for value in item.values_mut() {
        match value {
            Value::String(object) if object == id => *value = Value::Object(linked.clone()),
            Value::Object(relationship) if relationship.get("object").and_then(Value::as_str) == Some(id) => {
                relationship.insert("entity".into(), Value::Object(linked.clone()));
            }
            Value::Array(instances) => {
                for instance in instances.iter_mut().filter_map(Value::as_object_mut) {
                    if instance.get("object").and_then(Value::as_str) == Some(id) {
                        instance.insert("entity".into(), Value::Object(linked.clone()));
                    }
                }
            }
            _ => {}
        }
    }
}
