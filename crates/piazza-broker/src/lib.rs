//! Application services: the only write path of Piazza.
//!
//! HTTP handlers and importers both call [`Broker`]; it validates input with
//! `piazza-ngsild`, runs the update semantics inside a storage transaction
//! through the [`Store`] port, and (in later layers) records history and
//! enqueues notifications. It knows nothing of HTTP.

use std::collections::HashMap;
use std::sync::Arc;

use piazza_ngsild::entity::{parse_attribute, parse_attribute_patch, parse_entity, ParseOptions};
use piazza_ngsild::query::{EntityQuery, OrderBy};
use piazza_ngsild::update::{self, UpdateOutcome};
use piazza_ngsild::{time, ActiveContext, Entity, ErrorKind, NgsiError};
use piazza_store::{Applied, Edit, EditOutcome, NewState, OutboxEntry, Page, QueryResult, Store, StoreError, Tenant};
use serde_json::{json, Value};

mod cluster;
mod contexts;
pub mod ingest;
pub mod jsonld_contexts;
mod notifier;
mod registry;
mod retention;
pub mod subscriptions;
mod temporal;

pub use contexts::{HOSTED_PATH, MAX_CONTEXT_BYTES};
pub use notifier::NotifierConfig;
pub use piazza_store;
pub use retention::Retention;

/// A failure of a broker operation: the requester's (NGSI-LD problem) or ours.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error(transparent)]
    Ngsi(#[from] NgsiError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl BrokerError {
    /// The problem type this failure maps to.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Ngsi(e) => e.kind,
            Self::Store(_) => ErrorKind::InternalError,
        }
    }
}

pub type BrokerResult<T> = Result<T, BrokerError>;

/// Documented limits; every one can be changed in configuration.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Page size when `limit` is absent.
    pub default_page_size: usize,
    /// The largest `limit` accepted (larger is 400 TooManyResults... see http).
    pub max_page_size: usize,
    /// The most entities one batch operation may carry.
    pub max_batch_size: usize,
    /// The most matches a query that is ordered or filters through linked
    /// entities may have: those are sorted/filtered in memory.
    pub max_sorted_matches: usize,
    /// The most linked entities one request may fetch (joins, linked q).
    pub max_linked_entities: usize,
    /// The most attribute instances of one entity a temporal response holds
    /// before it is cut and partial (clause 6.3.10).
    pub max_temporal_instances: usize,
    /// The most attribute instances one aggregated temporal response reads.
    pub max_aggregated_instances: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            default_page_size: 20,
            max_page_size: 1000,
            max_batch_size: 10_000,
            max_sorted_matches: 10_000,
            max_linked_entities: 1_000,
            max_temporal_instances: 30,
            max_aggregated_instances: 1_000_000,
        }
    }
}

/// The outcome of one entity in a batch operation (`T`: what success means).
#[derive(Debug)]
pub struct BatchItem<T = BatchSuccess> {
    pub entity_id: String,
    pub result: Result<T, NgsiError>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchSuccess {
    Created,
    Updated,
    Deleted,
}

/// A request body together with the context it is to be read with.
pub struct Payload {
    pub body: Value,
    pub context: Arc<ActiveContext>,
}

/// The broker.
pub struct Broker {
    store: Arc<dyn Store>,
    contexts: Arc<contexts::ContextResolver>,
    limits: Limits,
    subscriptions: Arc<registry::Registry>,
    notifier: Arc<notifier::Notifier>,
    retention: Retention,
}

impl Broker {
    pub fn new(store: Arc<dyn Store>, limits: Limits) -> Self {
        Self::with_notifier(store, limits, NotifierConfig::default())
    }

    pub fn with_notifier(store: Arc<dyn Store>, limits: Limits, notifier: NotifierConfig) -> Self {
        let contexts = Arc::new(contexts::ContextResolver::new(store.clone()));
        let subscriptions = Arc::new(registry::Registry::new(store.clone(), contexts.clone()));
        Self {
            notifier: Arc::new(notifier::Notifier::new(store.clone(), subscriptions.clone(), notifier)),
            subscriptions,
            contexts,
            store,
            limits,
            retention: Retention::default(),
        }
    }

    /// Keeps history only this long (enforced by [`Broker::start`]).
    pub fn with_retention(mut self, retention: Retention) -> Self {
        self.retention = retention;
        self
    }

    /// One history retention pass now; returns the instances deleted.
    pub async fn purge_old_history(&self) -> BrokerResult<u64> {
        retention::purge_once(&*self.store, &self.retention).await
    }

    /// Starts the background work of a serving broker: delivery of what the
    /// outbox still holds, the periodic subscriptions of every tenant, and
    /// history retention.
    pub async fn start(&self) -> BrokerResult<()> {
        if let Some(events) = self.store.cluster_events() {
            tokio::spawn(cluster::follow(
                events,
                cluster::Caches {
                    store: Arc::downgrade(&self.store),
                    notifier: Arc::downgrade(&self.notifier),
                    registry: Arc::downgrade(&self.subscriptions),
                    contexts: Arc::downgrade(&self.contexts),
                },
            ));
        }
        self.notifier.resume().await?;
        if self.retention.is_active() {
            tokio::spawn(retention::run(self.store.clone(), self.retention.clone()));
        }
        for tenant in self.store.tenants().await? {
            let subscriptions = self.subscriptions.of(&tenant).await?;
            self.notifier.start_periodic(&tenant, &subscriptions);
        }
        Ok(())
    }

    /// Stops delivering: gives this process's delivery leases up, so that
    /// the other processes sharing the store take over without waiting.
    pub async fn stop(&self) {
        self.notifier.release_leases().await;
    }

    /// Applies edits through the store, with the notifications they owe
    /// recorded in the same transactions, then wakes the notifier.
    async fn commit(&self, tenant: &Tenant, mut edits: Vec<Edit>) -> BrokerResult<Vec<Result<Applied, NgsiError>>> {
        let now = time::now();
        let watching: Vec<_> = self
            .subscriptions
            .of(tenant)
            .await?
            .iter()
            .filter(|s| s.on_change(now))
            .cloned()
            .collect();
        if watching.is_empty() {
            return Ok(self.store.edit(tenant, edits).await?);
        }
        let watching = Arc::new(watching);
        let notified = Arc::new(std::sync::Mutex::new(std::collections::BTreeSet::new()));
        for edit in &mut edits {
            let (watching, notified) = (watching.clone(), notified.clone());
            edit.observe = Some(Box::new(move |before, after| {
                let entries: Vec<OutboxEntry> = watching
                    .iter()
                    .filter_map(|subscription| {
                        let notice = subscription.watch.notice(before, after, now)?;
                        Some(OutboxEntry {
                            subscription_id: subscription.id.clone(),
                            entity_id: notice.entity.id.clone(),
                            notice: serde_json::to_value(&notice).ok()?,
                        })
                    })
                    .collect();
                if let Ok(mut notified) = notified.lock() {
                    notified.extend(entries.iter().map(|e| e.subscription_id.clone()));
                }
                entries
            }));
        }
        let results = self.store.edit(tenant, edits).await?;
        let notified = notified.lock().map(|n| n.clone()).unwrap_or_default();
        for id in notified {
            self.notifier.wake(tenant, &id);
        }
        Ok(results)
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The active context for a request: its `Link` header or `@context` member.
    pub async fn context(&self, tenant: &Tenant, local: Option<&Value>) -> BrokerResult<Arc<ActiveContext>> {
        self.contexts.resolve(tenant, local).await
    }

    /// Entity types in use (`/types`); the tenant must exist.
    pub async fn types(&self, tenant: &Tenant) -> BrokerResult<Vec<piazza_store::TypeSummary>> {
        self.require_tenant(tenant).await?;
        Ok(self.store.types(tenant).await?)
    }

    /// Attributes in use (`/attributes`); the tenant must exist.
    pub async fn attributes(&self, tenant: &Tenant) -> BrokerResult<Vec<piazza_store::AttributeSummary>> {
        self.require_tenant(tenant).await?;
        Ok(self.store.attributes(tenant).await?)
    }

    /// Fails with NonexistentTenant when a read targets a tenant nobody wrote to.
    pub async fn require_tenant(&self, tenant: &Tenant) -> BrokerResult<()> {
        if tenant.is_default() || self.store.tenant_exists(tenant).await? {
            Ok(())
        } else {
            Err(NgsiError::new(ErrorKind::NonexistentTenant, format!("tenant {tenant} does not exist")).into())
        }
    }

    async fn edit_one(&self, tenant: &Tenant, edit: Edit) -> BrokerResult<Applied> {
        let mut results = self.commit(tenant, vec![edit]).await?;
        match results.pop() {
            Some(result) => Ok(result?),
            None => Err(NgsiError::internal("the store returned no result").into()),
        }
    }

    /// Create Entity (clause 5.6.1).
    pub async fn create_entity(&self, tenant: &Tenant, payload: Payload) -> BrokerResult<Entity> {
        let mut entity = parse_entity(&payload.body, &payload.context, ParseOptions::CREATE)?;
        entity.stamp_new(time::now());
        let id = entity.id.clone();
        let applied = self
            .edit_one(tenant, Edit::new(id, move |existing| create(existing, entity)))
            .await?;
        applied
            .after
            .ok_or_else(|| NgsiError::internal("created entity missing").into())
    }

    /// Retrieve Entity (clause 5.7.1).
    pub async fn entity(&self, tenant: &Tenant, id: &str) -> BrokerResult<Entity> {
        check_id(id)?;
        self.require_tenant(tenant).await?;
        self.store
            .get(tenant, id)
            .await?
            .ok_or_else(|| NgsiError::not_found(format!("entity {id} not found")).into())
    }

    /// Query Entities (clause 5.7.2).
    pub async fn query(&self, tenant: &Tenant, query: EntityQuery, page: Page) -> BrokerResult<QueryResult> {
        self.query_ordered(tenant, query, page, None).await
    }

    /// Query Entities with an optional ordering (clause 4.23). Ordered
    /// queries and queries with linked-entity terms (`rel{attr}`) are
    /// answered in memory: every match is read (up to
    /// `max_sorted_matches`), filtered, sorted, then paged.
    pub async fn query_ordered(
        &self,
        tenant: &Tenant,
        mut query: EntityQuery,
        page: Page,
        order: Option<&OrderBy>,
    ) -> BrokerResult<QueryResult> {
        self.require_tenant(tenant).await?;
        let linked_q = query.q.take_if(|q| q.link_depth() > 0);
        if order.is_none() && linked_q.is_none() {
            return Ok(self.store.query(tenant, Arc::new(query), page).await?);
        }
        let cap = self.limits.max_sorted_matches;
        let everything = Page {
            offset: 0,
            limit: cap + 1,
            count: false,
        };
        let mut entities = self.store.query(tenant, Arc::new(query), everything).await?.entities;
        if entities.len() > cap {
            return Err(NgsiError::new(
                ErrorKind::TooManyResults,
                format!("more than {cap} entities match; narrow the query to order or filter by linked entities"),
            )
            .into());
        }
        if let Some(q) = linked_q {
            let relationships = q.link_relationships();
            let mut linked = HashMap::new();
            let mut kept = Vec::new();
            for entity in entities {
                self.fetch_linked(tenant, &entity, &relationships, q.link_depth(), &mut linked)
                    .await?;
                if q.matches_linked(&entity, &|id| linked.get(id).and_then(Option::as_ref)) {
                    kept.push(entity);
                }
            }
            entities = kept;
        }
        if let Some(order) = order {
            order.sort(&mut entities);
        }
        let total = entities.len() as u64;
        let entities = entities.into_iter().skip(page.offset).take(page.limit).collect();
        Ok(QueryResult {
            entities,
            total: page.count.then_some(total),
        })
    }

    /// Reads the entities `entity` links to through `relationships`, up to
    /// `depth` hops, into `linked` (id → entity, `None` when missing), which
    /// also serves as a cache across calls. Bounded by `max_linked_entities`.
    pub async fn fetch_linked(
        &self,
        tenant: &Tenant,
        entity: &Entity,
        relationships: &[String],
        depth: usize,
        linked: &mut HashMap<String, Option<Entity>>,
    ) -> BrokerResult<()> {
        let mut frontier = vec![entity.clone()];
        for _ in 0..depth {
            let mut next: Vec<Entity> = Vec::new();
            for source in &frontier {
                for id in relationship_objects(source, relationships) {
                    // Each entity is followed once per hop, so cycles cannot multiply work.
                    if next.iter().any(|e| e.id == id) {
                        continue;
                    }
                    if !linked.contains_key(&id) {
                        if linked.len() >= self.limits.max_linked_entities {
                            return Err(NgsiError::new(
                                ErrorKind::TooManyResults,
                                format!(
                                    "more than {} linked entities are needed",
                                    self.limits.max_linked_entities
                                ),
                            )
                            .into());
                        }
                        let target = self.store.get(tenant, &id).await?;
                        linked.insert(id.clone(), target);
                    }
                    if let Some(Some(target)) = linked.get(&id) {
                        next.push(target.clone());
                    }
                }
            }
            frontier = next;
        }
        Ok(())
    }

    /// Delete Entity (clause 5.6.6).
    pub async fn delete_entity(&self, tenant: &Tenant, id: &str) -> BrokerResult<()> {
        check_id(id)?;
        self.require_tenant(tenant).await?;
        self.edit_one(tenant, delete_edit(id)).await.map(drop)
    }

    /// Replace Entity (clause 5.6.18).
    pub async fn replace_entity(&self, tenant: &Tenant, id: &str, payload: Payload) -> BrokerResult<()> {
        check_id(id)?;
        let mut replacement = parse_entity(&payload.body, &payload.context, ParseOptions::FRAGMENT)?;
        check_body_id(&replacement, id)?;
        if replacement.types.is_empty() {
            return Err(NgsiError::bad_request("a replacement entity needs a type").into());
        }
        replacement.id = id.to_owned();
        self.require_tenant(tenant).await?;
        let edit = Edit::new(id, move |existing| {
            let mut entity = existing.cloned().ok_or_else(|| not_found(&replacement.id))?;
            update::replace_entity(&mut entity, replacement, time::now());
            Ok(EditOutcome::put(entity, UpdateOutcome::default()))
        });
        self.edit_one(tenant, edit).await.map(drop)
    }

    /// Merge Entity (clause 5.6.17).
    pub async fn merge_entity(&self, tenant: &Tenant, id: &str, payload: Payload) -> BrokerResult<()> {
        check_id(id)?;
        let fragment = parse_entity(&payload.body, &payload.context, ParseOptions::MERGE)?;
        check_body_id(&fragment, id)?;
        self.require_tenant(tenant).await?;
        let id_owned = id.to_owned();
        let edit = Edit::new(id, move |existing| {
            let mut entity = existing.cloned().ok_or_else(|| not_found(&id_owned))?;
            let report = update::merge_entity(&mut entity, fragment, time::now());
            Ok(EditOutcome::put(entity, report))
        });
        self.edit_one(tenant, edit).await.map(drop)
    }

    /// Append Entity Attributes (clause 5.6.3).
    pub async fn append_attributes(
        &self,
        tenant: &Tenant,
        id: &str,
        payload: Payload,
        no_overwrite: bool,
    ) -> BrokerResult<UpdateOutcome> {
        check_id(id)?;
        let fragment = parse_entity(&payload.body, &payload.context, ParseOptions::FRAGMENT)?;
        check_body_id(&fragment, id)?;
        self.require_tenant(tenant).await?;
        let id_owned = id.to_owned();
        let edit = Edit::new(id, move |existing| {
            let mut entity = existing.cloned().ok_or_else(|| not_found(&id_owned))?;
            let report = update::append_attributes(&mut entity, fragment, no_overwrite, time::now());
            Ok(EditOutcome::put(entity, report))
        });
        Ok(self.edit_one(tenant, edit).await?.report)
    }

    /// Update Entity Attributes (clause 5.6.2).
    pub async fn update_attributes(&self, tenant: &Tenant, id: &str, payload: Payload) -> BrokerResult<UpdateOutcome> {
        check_id(id)?;
        let fragment = parse_entity(&payload.body, &payload.context, ParseOptions::UPDATE)?;
        check_body_id(&fragment, id)?;
        self.require_tenant(tenant).await?;
        let id_owned = id.to_owned();
        let edit = Edit::new(id, move |existing| {
            let mut entity = existing.cloned().ok_or_else(|| not_found(&id_owned))?;
            let report = update::update_attributes(&mut entity, fragment, time::now());
            Ok(EditOutcome::put(entity, report))
        });
        Ok(self.edit_one(tenant, edit).await?.report)
    }

    /// Partial Attribute Update (clause 5.6.4).
    pub async fn partial_update_attribute(
        &self,
        tenant: &Tenant,
        id: &str,
        attr: &str,
        payload: Payload,
    ) -> BrokerResult<()> {
        check_id(id)?;
        check_attribute_name(attr)?;
        let name = payload.context.expand(attr);
        let instances = parse_attribute_patch(attr, &without_context(&payload.body), &payload.context)?;
        self.require_tenant(tenant).await?;
        let id_owned = id.to_owned();
        let edit = Edit::new(id, move |existing| {
            let mut entity = existing.cloned().ok_or_else(|| not_found(&id_owned))?;
            update::partial_update_attribute(&mut entity, &name, instances, time::now())?;
            Ok(EditOutcome::put(entity, UpdateOutcome::default()))
        });
        self.edit_one(tenant, edit).await.map(drop)
    }

    /// Replace Attribute (clause 5.6.19).
    pub async fn replace_attribute(&self, tenant: &Tenant, id: &str, attr: &str, payload: Payload) -> BrokerResult<()> {
        let (name, instances) = attribute_payload(id, attr, &payload)?;
        self.require_tenant(tenant).await?;
        let id_owned = id.to_owned();
        let edit = Edit::new(id, move |existing| {
            let mut entity = existing.cloned().ok_or_else(|| not_found(&id_owned))?;
            update::replace_attribute(&mut entity, &name, instances, time::now())?;
            Ok(EditOutcome::put(entity, UpdateOutcome::default()))
        });
        self.edit_one(tenant, edit).await.map(drop)
    }

    /// Delete Entity Attribute (clause 5.6.5).
    pub async fn delete_attribute(
        &self,
        tenant: &Tenant,
        id: &str,
        attr: &str,
        context: &ActiveContext,
        dataset_id: Option<String>,
        delete_all: bool,
    ) -> BrokerResult<()> {
        check_id(id)?;
        // `scope` is not an attribute, but it can be deleted like one.
        let name = if attr == "scope" {
            attr.to_owned()
        } else {
            check_attribute_name(attr)?;
            context.expand(attr)
        };
        self.require_tenant(tenant).await?;
        let id_owned = id.to_owned();
        let edit = Edit::new(id, move |existing| {
            let mut entity = existing.cloned().ok_or_else(|| not_found(&id_owned))?;
            update::delete_attribute(&mut entity, &name, dataset_id.as_deref(), delete_all, time::now())?;
            Ok(EditOutcome::put(entity, UpdateOutcome::default()))
        });
        self.edit_one(tenant, edit).await.map(drop)
    }

    /// Batch Entity Creation (clause 5.6.7).
    pub async fn batch_create(&self, tenant: &Tenant, payloads: Vec<Payload>) -> BrokerResult<Vec<BatchItem>> {
        self.check_batch(payloads.len())?;
        let now = time::now();
        let mut plan = BatchPlan::default();
        for payload in payloads {
            let edit = parse_entity(&payload.body, &payload.context, ParseOptions::CREATE).map(|mut entity| {
                entity.stamp_new(now);
                Edit::new(entity.id.clone(), move |existing| create(existing, entity))
            });
            plan.push(&payload.body, edit);
        }
        self.run_batch(tenant, plan, |_| Ok(BatchSuccess::Created)).await
    }

    /// Batch Entity Upsert (clause 5.6.8): `replace` (default) or update existing entities.
    pub async fn batch_upsert(
        &self,
        tenant: &Tenant,
        payloads: Vec<Payload>,
        replace: bool,
    ) -> BrokerResult<Vec<BatchItem>> {
        self.check_batch(payloads.len())?;
        let now = time::now();
        let mut plan = BatchPlan::default();
        for payload in payloads {
            let edit = parse_entity(&payload.body, &payload.context, ParseOptions::CREATE).map(|entity| {
                Edit::new(entity.id.clone(), move |existing| {
                    upsert(existing, entity, replace, now)
                })
            });
            plan.push(&payload.body, edit);
        }
        self.run_batch(tenant, plan, |applied| {
            Ok(if applied.before.is_some() {
                BatchSuccess::Updated
            } else {
                BatchSuccess::Created
            })
        })
        .await
    }

    /// Batch Entity Update (clause 5.6.9): append attributes to existing
    /// entities; attributes left alone (`noOverwrite`) make the entity an error.
    pub async fn batch_update(
        &self,
        tenant: &Tenant,
        payloads: Vec<Payload>,
        no_overwrite: bool,
    ) -> BrokerResult<Vec<BatchItem>> {
        self.check_batch(payloads.len())?;
        let now = time::now();
        let mut plan = BatchPlan::default();
        for payload in payloads {
            let edit = parse_entity(&payload.body, &payload.context, ParseOptions::CREATE).map(|fragment| {
                let id = fragment.id.clone();
                Edit::new(fragment.id.clone(), move |existing| {
                    let mut entity = existing.cloned().ok_or_else(|| not_found(&id))?;
                    let report = update::append_attributes(&mut entity, fragment, no_overwrite, now);
                    Ok(EditOutcome::put(entity, report))
                })
            });
            plan.push(&payload.body, edit);
        }
        self.run_batch(tenant, plan, |applied| {
            if applied.report.is_complete() {
                return Ok(BatchSuccess::Updated);
            }
            let names: Vec<_> = applied.report.not_updated.iter().map(|n| n.name.as_str()).collect();
            Err(NgsiError::bad_request(format!(
                "attributes not updated: {}",
                names.join(", ")
            )))
        })
        .await
    }

    /// Batch Entity Merge (clause 5.6.20).
    pub async fn batch_merge(&self, tenant: &Tenant, payloads: Vec<Payload>) -> BrokerResult<Vec<BatchItem>> {
        self.check_batch(payloads.len())?;
        let now = time::now();
        let mut plan = BatchPlan::default();
        for payload in payloads {
            let edit = parse_entity(&payload.body, &payload.context, ParseOptions::MERGE)
                .and_then(|f| {
                    if f.id.is_empty() {
                        Err(NgsiError::bad_request("entity id is missing"))
                    } else {
                        Ok(f)
                    }
                })
                .map(|fragment| {
                    let id = fragment.id.clone();
                    Edit::new(fragment.id.clone(), move |existing| {
                        let mut entity = existing.cloned().ok_or_else(|| not_found(&id))?;
                        let report = update::merge_entity(&mut entity, fragment, now);
                        Ok(EditOutcome::put(entity, report))
                    })
                });
            plan.push(&payload.body, edit);
        }
        self.run_batch(tenant, plan, |_| Ok(BatchSuccess::Updated)).await
    }

    /// Batch Entity Delete (clause 5.6.10).
    pub async fn batch_delete(&self, tenant: &Tenant, ids: Vec<Value>) -> BrokerResult<Vec<BatchItem>> {
        self.check_batch(ids.len())?;
        let mut plan = BatchPlan::default();
        for id in ids {
            let edit = match id.as_str().filter(|s| piazza_ngsild::entity::is_uri(s)) {
                Some(id) => Ok(delete_edit(id)),
                None => Err(NgsiError::bad_request("entity id must be a URI")),
            };
            plan.push(&json!({ "id": id }), edit);
        }
        self.run_batch(tenant, plan, |_| Ok(BatchSuccess::Deleted)).await
    }

    /// Purge Entities (clause 5.6.21): deletes every matching entity, or with
    /// `drop`/`keep` (expanded names) removes or keeps only those attributes.
    pub async fn purge(
        &self,
        tenant: &Tenant,
        query: EntityQuery,
        drop: Vec<String>,
        keep: Vec<String>,
    ) -> BrokerResult<()> {
        self.require_tenant(tenant).await?;
        let everything = Page {
            offset: 0,
            limit: usize::MAX >> 1,
            count: false,
        };
        let matched = self.store.query(tenant, Arc::new(query), everything).await?;
        let now = time::now();
        let edits = matched
            .entities
            .into_iter()
            .map(|entity| {
                let (drop, keep) = (drop.clone(), keep.clone());
                Edit::new(entity.id.clone(), move |existing| {
                    let Some(existing) = existing else {
                        return Ok(EditOutcome {
                            state: NewState::Keep,
                            report: UpdateOutcome::default(),
                        });
                    };
                    if drop.is_empty() && keep.is_empty() {
                        return Ok(EditOutcome {
                            state: NewState::Delete,
                            report: UpdateOutcome::default(),
                        });
                    }
                    let mut entity = existing.clone();
                    entity
                        .attributes
                        .retain(|name, _| !drop.contains(name) && (keep.is_empty() || keep.contains(name)));
                    entity.modified_at = Some(now);
                    Ok(EditOutcome::put(entity, UpdateOutcome::default()))
                })
            })
            .collect();
        for result in self.commit(tenant, edits).await? {
            result?;
        }
        Ok(())
    }

    fn check_batch(&self, size: usize) -> BrokerResult<()> {
        if size > self.limits.max_batch_size {
            return Err(NgsiError::bad_request(format!(
                "a batch may carry at most {} entities",
                self.limits.max_batch_size
            ))
            .into());
        }
        Ok(())
    }

    async fn run_batch<T>(
        &self,
        tenant: &Tenant,
        plan: BatchPlan<T>,
        success: impl Fn(&Applied) -> Result<T, NgsiError>,
    ) -> BrokerResult<Vec<BatchItem<T>>> {
        let BatchPlan {
            mut items,
            edits,
            slots,
        } = plan;
        if edits.is_empty() {
            return Ok(items);
        }
        let results = self.commit(tenant, edits).await?;
        for (slot, result) in slots.into_iter().zip(results) {
            items[slot].result = result.and_then(|applied| success(&applied));
        }
        Ok(items)
    }
}

/// The object ids of the Relationship instances of `entity` named in `names`
/// (all relationships when `names` is empty).
pub fn relationship_objects(entity: &Entity, names: &[String]) -> Vec<String> {
    let mut ids = Vec::new();
    for (name, instances) in &entity.attributes {
        if !names.is_empty() && !names.contains(name) {
            continue;
        }
        for instance in instances
            .iter()
            .filter(|i| i.kind == piazza_ngsild::AttributeKind::Relationship)
        {
            match &instance.value {
                Value::String(id) => ids.push(id.clone()),
                Value::Array(items) => ids.extend(items.iter().filter_map(Value::as_str).map(str::to_owned)),
                _ => {}
            }
        }
    }
    ids
}

/// The entities of a batch: those that parsed become edits (their slot in
/// `items` filled once the store answers), the others are errors already.
struct BatchPlan<T = BatchSuccess> {
    items: Vec<BatchItem<T>>,
    edits: Vec<Edit>,
    /// For each edit, its index in `items`.
    slots: Vec<usize>,
}

impl<T> Default for BatchPlan<T> {
    fn default() -> Self {
        Self {
            items: Vec::new(),
            edits: Vec::new(),
            slots: Vec::new(),
        }
    }
}

impl<T> BatchPlan<T> {
    fn push(&mut self, body: &Value, edit: Result<Edit, NgsiError>) {
        match edit {
            Ok(edit) => {
                self.slots.push(self.items.len());
                self.items.push(BatchItem {
                    entity_id: edit.entity_id.clone(),
                    // Replaced by the store's answer.
                    result: Err(NgsiError::internal("not applied")),
                });
                self.edits.push(edit);
            }
            Err(error) => self.items.push(BatchItem {
                entity_id: body_id(body),
                result: Err(error),
            }),
        }
    }
}

fn create(existing: Option<&Entity>, entity: Entity) -> Result<EditOutcome, NgsiError> {
    match existing {
        Some(_) => Err(NgsiError::already_exists(format!(
            "entity {} already exists",
            entity.id
        ))),
        None => Ok(EditOutcome::put(entity, UpdateOutcome::default())),
    }
}

fn upsert(
    existing: Option<&Entity>,
    mut entity: Entity,
    replace: bool,
    now: time::Timestamp,
) -> Result<EditOutcome, NgsiError> {
    match existing {
        None => {
            entity.stamp_new(now);
            Ok(EditOutcome::put(entity, UpdateOutcome::default()))
        }
        Some(current) => {
            let mut updated = current.clone();
            let report = if replace {
                update::replace_entity(&mut updated, entity, now);
                UpdateOutcome::default()
            } else {
                update::append_attributes(&mut updated, entity, false, now)
            };
            Ok(EditOutcome::put(updated, report))
        }
    }
}

fn delete_edit(id: &str) -> Edit {
    let id_owned = id.to_owned();
    Edit::new(id, move |existing| match existing {
        Some(_) => Ok(EditOutcome {
            state: NewState::Delete,
            report: UpdateOutcome::default(),
        }),
        None => Err(not_found(&id_owned)),
    })
}

fn not_found(id: &str) -> NgsiError {
    NgsiError::not_found(format!("entity {id} not found"))
}

/// Ids in URLs must be URIs too (clause 6.3.x: 400 otherwise).
fn check_id(id: &str) -> Result<(), NgsiError> {
    if piazza_ngsild::entity::is_uri(id) {
        Ok(())
    } else {
        Err(NgsiError::bad_request(format!("entity id '{id}' is not a URI")))
    }
}

fn check_attribute_name(attr: &str) -> Result<(), NgsiError> {
    if piazza_ngsild::entity::is_valid_name(attr) && attr != "scope" {
        Ok(())
    } else {
        Err(NgsiError::bad_request(format!("invalid attribute name '{attr}'")))
    }
}

/// A fragment may repeat the entity id, but not contradict the URL.
fn check_body_id(fragment: &Entity, id: &str) -> Result<(), NgsiError> {
    if fragment.id.is_empty() || fragment.id == id {
        Ok(())
    } else {
        Err(NgsiError::bad_request(format!(
            "the body's id {} does not match {id}",
            fragment.id
        )))
    }
}

fn attribute_payload(
    id: &str,
    attr: &str,
    payload: &Payload,
) -> Result<(String, Vec<piazza_ngsild::Attribute>), NgsiError> {
    check_id(id)?;
    check_attribute_name(attr)?;
    let name = payload.context.expand(attr);
    let instances = parse_attribute(attr, &without_context(&payload.body), &payload.context, false)?;
    Ok((name, instances))
}

fn without_context(body: &Value) -> Value {
    match body {
        Value::Object(map) => {
            let mut map = map.clone();
            map.remove("@context");
            Value::Object(map)
        }
        other => other.clone(),
    }
}

fn body_id(body: &Value) -> String {
    body.get("id").and_then(Value::as_str).unwrap_or_default().to_owned()
}
