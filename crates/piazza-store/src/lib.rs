//! The storage port: the one small trait every backend implements.
//!
//! The broker talks to storage only through [`Store`], used as
//! `Arc<dyn Store>`. Every call names its [`Tenant`], so isolation is enforced
//! here, at the port, not in handlers. Writes are expressed as [`Edit`]s: a
//! closure that turns the current state of one entity into its new state,
//! which the backend runs inside its transaction. That keeps the NGSI-LD
//! update semantics in `piazza-ngsild` and makes read-modify-write atomic on
//! every backend (one writer thread on SQLite, row locks on PostgreSQL).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use piazza_ngsild::query::EntityQuery;
use piazza_ngsild::temporal::{TemporalEntity, TemporalQuery};
use piazza_ngsild::update::UpdateOutcome;
use piazza_ngsild::{AttributeKind, Entity, NgsiError};
use serde_json::Value;

pub mod conformance;

/// A tenant (the `NGSILD-Tenant` header); the default tenant has an empty name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tenant(String);

impl Tenant {
    /// Validates a tenant name from the wire: short, and only characters that
    /// are safe in URLs, logs and file names.
    pub fn parse(name: &str) -> Result<Tenant, NgsiError> {
        let valid = name.len() <= 64
            && !name.starts_with('.')
            && !name.contains("..")
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'));
        if valid {
            Ok(Tenant(name.to_owned()))
        } else {
            Err(NgsiError::bad_request(format!("invalid tenant name '{name}'")))
        }
    }

    pub fn name(&self) -> &str {
        &self.0
    }

    pub fn is_default(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for Tenant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() { "(default)" } else { &self.0 })
    }
}

/// What an edit decided the entity becomes.
#[derive(Debug)]
pub enum NewState {
    /// Nothing to write.
    Keep,
    Put(Entity),
    Delete,
}

/// The result of running an edit closure.
#[derive(Debug)]
pub struct EditOutcome {
    pub state: NewState,
    pub report: UpdateOutcome,
}

impl EditOutcome {
    pub fn put(entity: Entity, report: UpdateOutcome) -> Self {
        Self {
            state: NewState::Put(entity),
            report,
        }
    }
}

/// The closure of an edit: sees the entity as stored (`None` if absent).
pub type EditFn = Box<dyn FnOnce(Option<&Entity>) -> Result<EditOutcome, NgsiError> + Send>;

/// Decides, from the entity before and after an edit, which notifications
/// the change owes; run by the store inside the edit's transaction.
pub type ObserveFn = Box<dyn FnOnce(Option<&Entity>, Option<&Entity>) -> Vec<OutboxEntry> + Send>;

/// A change to one entity, applied atomically.
pub struct Edit {
    pub entity_id: String,
    pub apply: EditFn,
    /// Called only when the edit wrote something; the entries it returns
    /// are recorded in the same transaction as the change (the outbox).
    pub observe: Option<ObserveFn>,
}

/// A notification owed to a subscription, recorded with the change that
/// caused it, so that it is never lost between the write and the delivery.
#[derive(Clone, Debug, PartialEq)]
pub struct OutboxEntry {
    pub subscription_id: String,
    pub entity_id: String,
    /// What the notifier needs to render it (opaque to the store).
    pub notice: Value,
}

/// An outbox entry waiting for delivery.
#[derive(Clone, Debug, PartialEq)]
pub struct PendingNotice {
    /// Position in the outbox: entries are delivered in this order.
    pub seq: i64,
    pub entity_id: String,
    pub notice: Value,
    pub recorded_at: piazza_ngsild::time::Timestamp,
}

/// One attempt to deliver a notification, as the status of its
/// subscription records it (clause 5.2.12: timesSent, lastSuccess...).
#[derive(Clone, Debug, PartialEq)]
pub struct Delivery {
    pub at: piazza_ngsild::time::Timestamp,
    pub success: bool,
    /// Outbox entries this attempt settles: delivered, or given up.
    pub settled: Vec<i64>,
}

/// A change another process sharing the store made to something this
/// process keeps in memory (several `piazza serve` over one database).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClusterEvent {
    /// Notifications were recorded for a subscription (`None`: for some
    /// subscriptions of the tenant).
    Notices {
        tenant: Tenant,
        subscription_id: Option<String>,
    },
    /// A subscription of the tenant was created, changed or deleted.
    Subscriptions { tenant: Tenant },
    /// A stored @context of the tenant was added, reloaded or deleted.
    Contexts { tenant: Tenant },
    /// Events may have been missed (the listening connection was lost):
    /// whatever is cached may be stale.
    Resync,
}

/// What a subscription's deliveries have been so far.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DeliveryStats {
    pub times_sent: u64,
    pub times_failed: u64,
    pub last_notification: Option<piazza_ngsild::time::Timestamp>,
    pub last_success: Option<piazza_ngsild::time::Timestamp>,
    pub last_failure: Option<piazza_ngsild::time::Timestamp>,
}

impl Edit {
    pub fn new(
        entity_id: impl Into<String>,
        apply: impl FnOnce(Option<&Entity>) -> Result<EditOutcome, NgsiError> + Send + 'static,
    ) -> Self {
        Self {
            entity_id: entity_id.into(),
            apply: Box::new(apply),
            observe: None,
        }
    }
}

/// What an applied edit did.
#[derive(Debug)]
pub struct Applied {
    pub before: Option<Entity>,
    pub after: Option<Entity>,
    pub report: UpdateOutcome,
}

/// The window of results a query returns.
#[derive(Clone, Copy, Debug)]
pub struct Page {
    pub offset: usize,
    pub limit: usize,
    /// Whether the total number of matches is wanted (`count=true`).
    pub count: bool,
}

/// Walks the matches of a query that is paged by the backend's own loop
/// (matches found one at a time): which to return, when to stop, the total.
#[derive(Debug)]
pub struct Pager {
    page: Page,
    matched: u64,
    taken: usize,
}

/// What to do with the next match.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageStep {
    /// It belongs to the page.
    Take,
    /// It only counts (before the offset, or after the page for `count`).
    Skip,
    /// The page is full and no total is wanted.
    Stop,
}

impl Pager {
    pub fn new(page: Page) -> Self {
        Self {
            page,
            matched: 0,
            taken: 0,
        }
    }

    pub fn next_step(&self) -> PageStep {
        let full = self.taken >= self.page.limit;
        if self.matched >= self.page.offset as u64 && !full {
            PageStep::Take
        } else if full && !self.page.count {
            PageStep::Stop
        } else {
            PageStep::Skip
        }
    }

    /// Records one match, returned in the page or not.
    pub fn counted(&mut self, taken: bool) {
        self.matched += 1;
        if taken {
            self.taken += 1;
        }
    }

    /// The total number of matches, when `count` was asked for.
    pub fn total(&self) -> Option<u64> {
        self.page.count.then_some(self.matched)
    }
}

#[derive(Debug, Default)]
pub struct QueryResult {
    pub entities: Vec<Entity>,
    /// Total matches, when asked for.
    pub total: Option<u64>,
}

/// An entity type as discovered in the data (`/types`).
#[derive(Clone, Debug, PartialEq)]
pub struct TypeSummary {
    /// Expanded type name.
    pub name: String,
    pub entity_count: u64,
    /// Expanded attribute names used by entities of this type, with their kinds.
    pub attributes: Vec<(String, Vec<AttributeKind>)>,
}

/// An attribute as discovered in the data (`/attributes`).
#[derive(Clone, Debug, PartialEq)]
pub struct AttributeSummary {
    /// Expanded attribute name.
    pub name: String,
    pub entity_count: u64,
    pub kinds: Vec<AttributeKind>,
    /// Expanded names of the types of the entities that have it.
    pub types: Vec<String>,
}

/// How a stored @context came to be (clause 5.13).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContextKind {
    /// Posted by a user to `/jsonldContexts`.
    Hosted,
    /// Fetched from its URL and kept.
    Cached,
    /// Created by the broker from an inline @context.
    ImplicitlyCreated,
}

impl ContextKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Hosted => "Hosted",
            Self::Cached => "Cached",
            Self::ImplicitlyCreated => "ImplicitlyCreated",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        [Self::Hosted, Self::Cached, Self::ImplicitlyCreated]
            .into_iter()
            .find(|k| k.name() == name)
    }
}

/// A stored @context document.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredContext {
    /// The local identifier (served at `/jsonldContexts/{id}`).
    pub id: String,
    /// Where it came from (Cached) or is served (Hosted).
    pub url: String,
    pub kind: ContextKind,
    pub document: Value,
    pub created_at: piazza_ngsild::time::Timestamp,
}

/// Kinds of management resources kept as JSON documents (subscriptions;
/// later context source registrations).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResourceKind {
    Subscription,
}

impl ResourceKind {
    pub const ALL: [ResourceKind; 1] = [Self::Subscription];

    pub fn name(self) -> &'static str {
        match self {
            Self::Subscription => "subscription",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// The kinds of stored record a raw export reads and a raw import writes
/// (moving a data dir between backends, `piazza export`), in the order a
/// dump holds them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RawKind {
    Context,
    Resource,
    DeliveryStats,
    Entity,
    TemporalEntity,
    Instance,
    Notice,
}

impl RawKind {
    pub const ALL: [RawKind; 7] = [
        Self::Context,
        Self::Resource,
        Self::DeliveryStats,
        Self::Entity,
        Self::TemporalEntity,
        Self::Instance,
        Self::Notice,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Context => "context",
            Self::Resource => "resource",
            Self::DeliveryStats => "deliveryStats",
            Self::Entity => "entity",
            Self::TemporalEntity => "temporalEntity",
            Self::Instance => "instance",
            Self::Notice => "notice",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }
}

impl fmt::Display for RawKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What the history keeps of an entity itself (its types outlive it).
#[derive(Clone, Debug, PartialEq)]
pub struct RawTemporalEntity {
    pub id: String,
    pub types: Vec<String>,
    pub scope: Vec<String>,
    pub created_at: piazza_ngsild::time::Timestamp,
    pub modified_at: piazza_ngsild::time::Timestamp,
    pub deleted_at: Option<piazza_ngsild::time::Timestamp>,
}

/// One recorded attribute instance (or deletion record), columns as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct RawInstance {
    pub entity_id: String,
    pub attr: String,
    pub instance_id: String,
    pub dataset_id: Option<String>,
    pub observed_at: Option<piazza_ngsild::time::Timestamp>,
    pub created_at: piazza_ngsild::time::Timestamp,
    pub modified_at: piazza_ngsild::time::Timestamp,
    pub deleted_at: Option<piazza_ngsild::time::Timestamp>,
    pub attribute: piazza_ngsild::Attribute,
}

/// A notification waiting in the outbox.
#[derive(Clone, Debug, PartialEq)]
pub struct RawNotice {
    pub subscription_id: String,
    pub entity_id: String,
    pub notice: Value,
    pub recorded_at: piazza_ngsild::time::Timestamp,
}

/// One stored record of a tenant, as the store keeps it: entities as
/// written (expired ones included, system timestamps as recorded), history
/// rows with their instance ids, documents untouched.
#[derive(Clone, Debug, PartialEq)]
pub enum RawRecord {
    Context(StoredContext),
    Resource {
        kind: ResourceKind,
        id: String,
        document: Value,
    },
    DeliveryStats {
        subscription_id: String,
        stats: DeliveryStats,
    },
    Entity(Entity),
    TemporalEntity(RawTemporalEntity),
    /// Boxed: an attribute document is by far the largest record.
    Instance(Box<RawInstance>),
    Notice(RawNotice),
}

impl RawRecord {
    pub fn kind(&self) -> RawKind {
        match self {
            Self::Context(_) => RawKind::Context,
            Self::Resource { .. } => RawKind::Resource,
            Self::DeliveryStats { .. } => RawKind::DeliveryStats,
            Self::Entity(_) => RawKind::Entity,
            Self::TemporalEntity(_) => RawKind::TemporalEntity,
            Self::Instance(_) => RawKind::Instance,
            Self::Notice(_) => RawKind::Notice,
        }
    }
}

/// A page of a raw export.
#[derive(Debug, Default)]
pub struct RawPage {
    pub records: Vec<RawRecord>,
    /// Where the next page starts (opaque to the caller); `None` at the end.
    pub next: Option<String>,
}

impl RawPage {
    /// A page of `records` read with `limit`: full pages go on after the
    /// key of their last record, a short one is the last.
    pub fn of(records: Vec<(String, RawRecord)>, limit: usize) -> Self {
        let full = records.len() >= limit && limit > 0;
        let next = if full {
            records.last().map(|(key, _)| key.clone())
        } else {
            None
        };
        Self {
            records: records.into_iter().map(|(_, record)| record).collect(),
            next,
        }
    }
}

/// How many records of each kind a tenant holds.
pub type RawCounts = std::collections::BTreeMap<RawKind, u64>;

/// A change to the history of one entity through the temporal API (clauses
/// 5.6.11–5.6.16). Instances given are recorded with fresh instance ids.
#[derive(Clone, Debug)]
pub enum TemporalEdit {
    /// Creates the temporal entity, or adds instances to it (and types).
    Upsert {
        id: String,
        types: Vec<String>,
        scope: Vec<String>,
        attributes: Vec<(String, Vec<piazza_ngsild::Attribute>)>,
    },
    /// Adds instances to an existing temporal entity.
    Append {
        id: String,
        attributes: Vec<(String, Vec<piazza_ngsild::Attribute>)>,
    },
    DeleteEntity {
        id: String,
    },
    /// Deletes the history of an attribute: the default instances, those of
    /// one datasetId, or all of them.
    DeleteAttribute {
        id: String,
        attr: String,
        dataset_id: Option<String>,
        delete_all: bool,
    },
    /// Replaces the content of one instance (keeping its id and createdAt).
    ModifyInstance {
        id: String,
        attr: String,
        instance_id: String,
        instance: Box<piazza_ngsild::Attribute>,
    },
    DeleteInstance {
        id: String,
        attr: String,
        instance_id: String,
    },
}

/// Whether a temporal query's time range, which a candidate passes with an
/// instance of the query's `attrs` in it, already implies the entity
/// query's `attrs` (some history of one of them): then backends test the
/// range alone, one index probe per candidate instead of two.
pub fn range_implies_attrs(entities: &EntityQuery, query: &TemporalQuery) -> bool {
    query.timerel.is_some() && !query.attrs.is_empty() && query.attrs.iter().all(|a| entities.attrs.contains(a))
}

/// The attributes a temporal query names, in the order stores list an
/// entity's attributes with history (byte order: `ORDER BY attr` on both
/// backends), so that a store reads only these without listing the
/// entity's names first; `None` when the query names none (all of them).
/// A name without history finds no instance and is left out, as it would
/// be from the list.
pub fn requested_attrs(query: &TemporalQuery) -> Option<Vec<String>> {
    if query.attrs.is_empty() {
        return None;
    }
    let mut names = query.attrs.clone();
    names.sort();
    names.dedup();
    Some(names)
}

/// Temporal entities matching a temporal query.
#[derive(Debug, Default)]
pub struct TemporalQueryResult {
    pub entities: Vec<TemporalEntity>,
    pub total: Option<u64>,
}

/// A storage failure that is not the requester's fault.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage failure: {0}")]
    Backend(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// The storage port.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Applies edits in order, each atomically; an edit whose closure fails
    /// changes nothing and reports its error in its slot.
    async fn edit(&self, tenant: &Tenant, edits: Vec<Edit>) -> StoreResult<Vec<Result<Applied, NgsiError>>>;

    /// One entity by id.
    async fn get(&self, tenant: &Tenant, id: &str) -> StoreResult<Option<Entity>>;

    /// The entities matching `query`, in a stable order (creation order).
    async fn query(&self, tenant: &Tenant, query: Arc<EntityQuery>, page: Page) -> StoreResult<QueryResult>;

    /// Every tenant anything was ever written in.
    async fn tenants(&self) -> StoreResult<Vec<Tenant>>;

    /// Whether anything was ever written in `tenant`.
    async fn tenant_exists(&self, tenant: &Tenant) -> StoreResult<bool>;

    async fn types(&self, tenant: &Tenant) -> StoreResult<Vec<TypeSummary>>;

    async fn attributes(&self, tenant: &Tenant) -> StoreResult<Vec<AttributeSummary>>;

    async fn put_context(&self, tenant: &Tenant, context: StoredContext) -> StoreResult<()>;

    async fn get_context(&self, tenant: &Tenant, id: &str) -> StoreResult<Option<StoredContext>>;

    async fn list_contexts(&self, tenant: &Tenant) -> StoreResult<Vec<StoredContext>>;

    /// Returns whether a context was deleted.
    async fn delete_context(&self, tenant: &Tenant, id: &str) -> StoreResult<bool>;

    /// Stores a resource document; with `create`, fails (returns `false`)
    /// when the id is taken, else replaces.
    async fn put_resource(
        &self,
        tenant: &Tenant,
        kind: ResourceKind,
        id: &str,
        document: Value,
        create: bool,
    ) -> StoreResult<bool>;

    async fn get_resource(&self, tenant: &Tenant, kind: ResourceKind, id: &str) -> StoreResult<Option<Value>>;

    /// All resources of a kind, in creation order.
    async fn list_resources(&self, tenant: &Tenant, kind: ResourceKind) -> StoreResult<Vec<Value>>;

    /// Returns whether a resource was deleted. Deleting a subscription
    /// also drops its pending notices and delivery statistics.
    async fn delete_resource(&self, tenant: &Tenant, kind: ResourceKind, id: &str) -> StoreResult<bool>;

    /// The history of one entity, selected by `query` (time relation,
    /// attributes, lastN, instance limit); `None` if it has none.
    async fn temporal_entity(
        &self,
        tenant: &Tenant,
        id: &str,
        query: &TemporalQuery,
    ) -> StoreResult<Option<TemporalEntity>>;

    /// The histories of the entities matching `entities` (evaluated on their
    /// latest recorded state), in creation order.
    async fn temporal_query(
        &self,
        tenant: &Tenant,
        entities: Arc<EntityQuery>,
        query: &TemporalQuery,
        page: Page,
    ) -> StoreResult<TemporalQueryResult>;

    /// Applies a temporal API edit atomically; `Ok(true)` when it created
    /// the temporal entity.
    async fn temporal_edit(&self, tenant: &Tenant, edit: TemporalEdit) -> StoreResult<Result<bool, NgsiError>>;

    /// Deletes up to `limit` attribute instances of `tenant` recorded
    /// before `horizon` (history retention); returns how many went. Small
    /// batches keep the writer free for the writes that matter.
    async fn purge_history(
        &self,
        tenant: &Tenant,
        horizon: piazza_ngsild::time::Timestamp,
        limit: usize,
    ) -> StoreResult<u64>;

    /// The oldest `limit` outbox entries of a subscription, in order.
    async fn pending_notices(
        &self,
        tenant: &Tenant,
        subscription_id: &str,
        limit: usize,
    ) -> StoreResult<Vec<PendingNotice>>;

    /// Every subscription with outbox entries waiting (to resume delivery
    /// after a restart).
    async fn subscriptions_with_notices(&self) -> StoreResult<Vec<(Tenant, String)>>;

    /// Records a delivery attempt in the subscription's statistics and
    /// removes the outbox entries it settles, atomically.
    async fn record_delivery(&self, tenant: &Tenant, subscription_id: &str, delivery: Delivery) -> StoreResult<()>;

    async fn delivery_stats(&self, tenant: &Tenant, subscription_id: &str) -> StoreResult<DeliveryStats>;

    // Several processes over one store. A store only one process can open
    // (the embedded one locks its data dir) keeps the defaults.

    /// Takes, or renews, this store handle's lease on delivering the
    /// subscription's notifications, for `lease` from now; `false` while
    /// another holder's lease runs. So each notification is sent by one
    /// process, and by another once the holder stops renewing (it died).
    async fn claim_delivery(&self, _tenant: &Tenant, _subscription_id: &str, _lease: Duration) -> StoreResult<bool> {
        Ok(true)
    }

    /// Gives the lease up (a clean shutdown), so another process takes over at once.
    async fn release_delivery(&self, _tenant: &Tenant, _subscription_id: &str) -> StoreResult<()> {
        Ok(())
    }

    /// The changes other processes make, to keep caches coherent and to
    /// wake the delivery of notifications they record; `None` when no
    /// other process can share the store.
    fn cluster_events(&self) -> Option<tokio::sync::broadcast::Receiver<ClusterEvent>> {
        None
    }

    // Raw access, for moving a data dir between backends (`piazza export`,
    // `piazza import ndjson`): the data as stored, without broker semantics.

    /// How many records of each kind `tenant` holds (every kind listed).
    async fn raw_counts(&self, tenant: &Tenant) -> StoreResult<RawCounts>;

    /// Up to `limit` records of one kind of `tenant`, as stored, in the
    /// order they were written (creation order, which an import keeps),
    /// starting after `after` (the `next` of the previous page). Keyset
    /// pages: a tenant of any size is read in bounded memory.
    async fn export_page(
        &self,
        tenant: &Tenant,
        kind: RawKind,
        after: Option<&str>,
        limit: usize,
    ) -> StoreResult<RawPage>;

    /// Writes records as they are, in one transaction: no notification
    /// and no history is generated, timestamps and instance ids are kept,
    /// and every index (types, attributes, values, geo) is written as a
    /// normal write would. For a store no server writes to meanwhile: it
    /// takes no entity locks (see the PostgreSQL backend's `raw.rs`). An entity, context, resource, statistics or
    /// temporal entity replaces the one with its id; instances and notices
    /// are added. Lists the tenant even when `records` is empty. Returns
    /// how many records were written.
    async fn import_batch(&self, tenant: &Tenant, records: Vec<RawRecord>) -> StoreResult<u64>;

    /// Deletes everything `tenant` holds, index rows, history, outbox and
    /// delivery leases included (`import --force` before it re-imports).
    async fn clear_tenant(&self, tenant: &Tenant) -> StoreResult<()>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn walk(offset: usize, limit: usize, count: bool, matches: usize) -> (Vec<usize>, Option<u64>) {
        let mut pager = Pager::new(Page { offset, limit, count });
        let mut taken = Vec::new();
        for n in 0..matches {
            match pager.next_step() {
                PageStep::Stop => break,
                PageStep::Skip => pager.counted(false),
                PageStep::Take => {
                    taken.push(n);
                    pager.counted(true);
                }
            }
        }
        (taken, pager.total())
    }

    #[test]
    fn a_pager_takes_the_window_and_counts_all_only_when_asked() {
        assert_eq!(walk(2, 3, false, 10), (vec![2, 3, 4], None));
        assert_eq!(walk(2, 3, true, 10), (vec![2, 3, 4], Some(10)));
        assert_eq!(walk(8, 5, true, 10), (vec![8, 9], Some(10)));
        assert_eq!(walk(0, 0, true, 4), (vec![], Some(4)));
    }
}
