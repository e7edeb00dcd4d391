//! Raw access to a tenant's rows, for moving a data dir to another backend
//! and back (`piazza export`, `piazza import ndjson`): keyset pages in
//! creation order, and batched writes that keep every index table
//! (`entity_types`, `entity_attrs`, `entity_geo`, `attr_numbers`,
//! `attr_texts`) as a normal write does, from the same [`IndexKeys`], but
//! generate no history and no notification.
//!
//! A batch is one transaction of a few statements per kind (arrays through
//! `unnest`), not one per row: moving a million entities is a matter of
//! round trips.

use std::collections::HashMap;

use deadpool_postgres::{GenericClient, Transaction};
use piazza_ngsild::time::Timestamp;
use piazza_ngsild::{Attribute, Entity};
use piazza_store::{
    DeliveryStats, RawCounts, RawInstance, RawKind, RawNotice, RawPage, RawRecord, RawTemporalEntity, ResourceKind,
    StoredContext, Tenant,
};
use serde_json::Value;
use tokio_postgres::types::Json;
use tokio_postgres::Row;

use crate::cluster::{self, Changed};
use crate::rows::{IndexRows, INDEX_TABLES};
use crate::write::{self, execute, IndexKeys};
use crate::{Error, Result};

/// The table of each kind (every one has a `tenant` column).
fn table(kind: RawKind) -> &'static str {
    match kind {
        RawKind::Context => "contexts",
        RawKind::Resource => "resources",
        RawKind::DeliveryStats => "delivery_stats",
        RawKind::Entity => "entities",
        RawKind::TemporalEntity => "temporal_entities",
        RawKind::Instance => "attr_instances",
        RawKind::Notice => "outbox",
    }
}

pub(crate) async fn counts(client: &impl GenericClient, tenant: &Tenant) -> Result<RawCounts> {
    let columns: Vec<String> = RawKind::ALL
        .iter()
        .map(|kind| format!("(SELECT count(*) FROM {} WHERE tenant = $1)", table(*kind)))
        .collect();
    let statement = client.prepare_cached(&format!("SELECT {}", columns.join(", "))).await?;
    let row = client.query_one(&statement, &[&tenant.name()]).await?;
    let mut counts = RawCounts::new();
    for (i, kind) in RawKind::ALL.into_iter().enumerate() {
        let n: i64 = row.try_get(i)?;
        counts.insert(kind, u64::try_from(n).unwrap_or(0));
    }
    Ok(counts)
}

/// The key a page of each kind is read by, and the columns it reads.
fn select(kind: RawKind) -> (&'static str, &'static str) {
    match kind {
        RawKind::Context => ("id", "id, url, kind, document, created_at"),
        RawKind::Resource => ("rid", "rid, kind, id, document"),
        RawKind::DeliveryStats => (
            "subscription",
            "subscription, times_sent, times_failed, last_notification, last_success, last_failure",
        ),
        RawKind::Entity => ("eid", "eid, doc"),
        RawKind::TemporalEntity => ("teid", "teid, id, types, scope, created_at, modified_at, deleted_at"),
        RawKind::Instance => (
            "iid",
            "iid, entity_id, attr, instance_id, dataset_id, observed_at, created_at, modified_at, deleted_at, doc",
        ),
        RawKind::Notice => ("seq", "seq, subscription, entity_id, notice, recorded_at"),
    }
}

fn text_key(kind: RawKind) -> bool {
    matches!(kind, RawKind::Context | RawKind::DeliveryStats)
}

pub(crate) async fn page(
    client: &impl GenericClient,
    tenant: &Tenant,
    kind: RawKind,
    after: Option<&str>,
    limit: usize,
) -> Result<RawPage> {
    let (key, columns) = select(kind);
    let (name, limit_arg) = (tenant.name(), i64::try_from(limit).unwrap_or(i64::MAX));
    let rows = match after {
        None => {
            let sql = format!(
                "SELECT {columns} FROM {} WHERE tenant = $1 ORDER BY {key} LIMIT $2",
                table(kind)
            );
            let statement = client.prepare_cached(&sql).await?;
            client.query(&statement, &[&name, &limit_arg]).await?
        }
        Some(cursor) => {
            let sql = format!(
                "SELECT {columns} FROM {} WHERE tenant = $1 AND {key} > $3 ORDER BY {key} LIMIT $2",
                table(kind)
            );
            let statement = client.prepare_cached(&sql).await?;
            if text_key(kind) {
                client.query(&statement, &[&name, &limit_arg, &cursor]).await?
            } else {
                let number: i64 = cursor.parse().map_err(|_| Error::InvalidCursor(cursor.to_owned()))?;
                client.query(&statement, &[&name, &limit_arg, &number]).await?
            }
        }
    };
    let records = rows.iter().map(|row| record(kind, row)).collect::<Result<Vec<_>>>()?;
    Ok(RawPage::of(records, limit))
}

fn document<T: serde::de::DeserializeOwned>(row: &Row, index: usize, what: &str) -> Result<T> {
    row.try_get::<_, Json<T>>(index)
        .map(|Json(value)| value)
        .map_err(|e| Error::Corrupt(format!("{what}: {e}")))
}

/// One row as its key (the cursor after it) and record.
fn record(kind: RawKind, row: &Row) -> Result<(String, RawRecord)> {
    let number = |i: usize| row.try_get::<_, i64>(i);
    Ok(match kind {
        RawKind::Context => {
            let kind: String = row.try_get(2)?;
            let context = StoredContext {
                id: row.try_get(0)?,
                url: row.try_get(1)?,
                kind: piazza_store::ContextKind::from_name(&kind)
                    .ok_or_else(|| Error::Corrupt(format!("unknown context kind {kind}")))?,
                document: document(row, 3, "context")?,
                created_at: row.try_get(4)?,
            };
            (context.id.clone(), RawRecord::Context(context))
        }
        RawKind::Resource => {
            let name: String = row.try_get(1)?;
            let kind = ResourceKind::from_name(&name)
                .ok_or_else(|| Error::Corrupt(format!("unknown resource kind {name}")))?;
            let record = RawRecord::Resource {
                kind,
                id: row.try_get(2)?,
                document: document(row, 3, "resource")?,
            };
            (number(0)?.to_string(), record)
        }
        RawKind::DeliveryStats => {
            let subscription_id: String = row.try_get(0)?;
            let stats = DeliveryStats {
                times_sent: u64::try_from(number(1)?).unwrap_or(0),
                times_failed: u64::try_from(number(2)?).unwrap_or(0),
                last_notification: row.try_get(3)?,
                last_success: row.try_get(4)?,
                last_failure: row.try_get(5)?,
            };
            (
                subscription_id.clone(),
                RawRecord::DeliveryStats { subscription_id, stats },
            )
        }
        // As stored: an expired entity is still a row until it is rewritten.
        RawKind::Entity => (number(0)?.to_string(), RawRecord::Entity(write::decode_entity(row, 1)?)),
        RawKind::TemporalEntity => (
            number(0)?.to_string(),
            RawRecord::TemporalEntity(RawTemporalEntity {
                id: row.try_get(1)?,
                types: row.try_get(2)?,
                scope: row.try_get(3)?,
                created_at: row.try_get(4)?,
                modified_at: row.try_get(5)?,
                deleted_at: row.try_get(6)?,
            }),
        ),
        RawKind::Instance => (
            number(0)?.to_string(),
            RawRecord::Instance(Box::new(RawInstance {
                entity_id: row.try_get(1)?,
                attr: row.try_get(2)?,
                instance_id: row.try_get(3)?,
                dataset_id: row.try_get(4)?,
                observed_at: row.try_get(5)?,
                created_at: row.try_get(6)?,
                modified_at: row.try_get(7)?,
                deleted_at: row.try_get(8)?,
                attribute: document::<Attribute>(row, 9, "attribute instance")?,
            })),
        ),
        RawKind::Notice => (
            number(0)?.to_string(),
            RawRecord::Notice(RawNotice {
                subscription_id: row.try_get(1)?,
                entity_id: row.try_get(2)?,
                notice: document(row, 3, "outbox entry")?,
                recorded_at: row.try_get(4)?,
            }),
        ),
    })
}

/// The records of a batch, by kind, each kind in the batch's order.
#[derive(Default)]
struct Batch {
    contexts: Vec<StoredContext>,
    resources: Vec<(ResourceKind, String, Value)>,
    stats: Vec<(String, DeliveryStats)>,
    entities: Vec<Entity>,
    temporal: Vec<RawTemporalEntity>,
    instances: Vec<RawInstance>,
    notices: Vec<RawNotice>,
}

impl Batch {
    fn of(records: Vec<RawRecord>) -> Self {
        let mut batch = Self::default();
        for record in records {
            match record {
                RawRecord::Context(c) => batch.contexts.push(c),
                RawRecord::Resource { kind, id, document } => batch.resources.push((kind, id, document)),
                RawRecord::DeliveryStats { subscription_id, stats } => batch.stats.push((subscription_id, stats)),
                RawRecord::Entity(e) => batch.entities.push(e),
                RawRecord::TemporalEntity(t) => batch.temporal.push(t),
                RawRecord::Instance(i) => batch.instances.push(*i),
                RawRecord::Notice(n) => batch.notices.push(n),
            }
        }
        batch
    }
}

/// Keeps the last of the items with the same key, in the order of those
/// last occurrences: one statement cannot write a row twice
/// (`ON CONFLICT DO UPDATE`), and a later record replaces an earlier one.
fn last_per_key<T>(items: Vec<T>, key: impl Fn(&T) -> String) -> Vec<T> {
    let mut last: HashMap<String, usize> = HashMap::new();
    for (i, item) in items.iter().enumerate() {
        last.insert(key(item), i);
    }
    items
        .into_iter()
        .enumerate()
        .filter(|(i, item)| last.get(&key(item)) == Some(i))
        .map(|(_, item)| item)
        .collect()
}

/// Writes `records` in one transaction; returns how many.
pub(crate) async fn write(
    client: &mut deadpool_postgres::Object,
    tenant: &Tenant,
    records: Vec<RawRecord>,
    postgis: bool,
) -> Result<u64> {
    let written = u64::try_from(records.len()).unwrap_or(u64::MAX);
    let batch = Batch::of(records);
    let transaction = client.transaction().await?;
    write::record_tenant(&transaction, tenant).await?;
    for context in &batch.contexts {
        // Announces the change too, so running processes drop their copies.
        write::put_context(&transaction, tenant, context).await?;
    }
    write_resources(&transaction, tenant, batch.resources).await?;
    write_stats(&transaction, tenant, batch.stats).await?;
    write_entities(&transaction, tenant, batch.entities, postgis).await?;
    write_temporal(&transaction, tenant, batch.temporal).await?;
    write_instances(&transaction, tenant, &batch.instances).await?;
    write_notices(&transaction, tenant, &batch.notices).await?;
    transaction.commit().await?;
    Ok(written)
}

async fn write_resources(
    transaction: &Transaction<'_>,
    tenant: &Tenant,
    resources: Vec<(ResourceKind, String, Value)>,
) -> Result<()> {
    let resources = last_per_key(resources, |(kind, id, _)| format!("{}\0{id}", kind.name()));
    if resources.is_empty() {
        return Ok(());
    }
    let kinds: Vec<&str> = resources.iter().map(|(kind, _, _)| kind.name()).collect();
    let ids: Vec<&str> = resources.iter().map(|(_, id, _)| id.as_str()).collect();
    let documents: Vec<Json<&Value>> = resources.iter().map(|(_, _, d)| Json(d)).collect();
    execute(
        transaction,
        "INSERT INTO resources(tenant, kind, id, document) SELECT $1, k, i, d \
         FROM unnest($2::text[], $3::text[], $4::json[]) WITH ORDINALITY AS u(k, i, d, n) ORDER BY n \
         ON CONFLICT (tenant, kind, id) DO UPDATE SET document = EXCLUDED.document",
        &[&tenant.name(), &kinds, &ids, &documents],
    )
    .await?;
    for kind in ResourceKind::ALL {
        if resources.iter().any(|(k, _, _)| *k == kind) {
            write::announce_resource(transaction, tenant, kind).await?;
        }
    }
    Ok(())
}

async fn write_stats(
    transaction: &Transaction<'_>,
    tenant: &Tenant,
    stats: Vec<(String, DeliveryStats)>,
) -> Result<()> {
    let stats = last_per_key(stats, |(id, _)| id.clone());
    if stats.is_empty() {
        return Ok(());
    }
    let ids: Vec<&str> = stats.iter().map(|(id, _)| id.as_str()).collect();
    let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    let sent: Vec<i64> = stats.iter().map(|(_, s)| count(s.times_sent)).collect();
    let failed: Vec<i64> = stats.iter().map(|(_, s)| count(s.times_failed)).collect();
    let last: Vec<Option<Timestamp>> = stats.iter().map(|(_, s)| s.last_notification).collect();
    let success: Vec<Option<Timestamp>> = stats.iter().map(|(_, s)| s.last_success).collect();
    let failure: Vec<Option<Timestamp>> = stats.iter().map(|(_, s)| s.last_failure).collect();
    execute(
        transaction,
        "INSERT INTO delivery_stats(tenant, subscription, times_sent, times_failed, last_notification, \
         last_success, last_failure) SELECT $1, s, ts, tf, ln, ls, lf FROM unnest($2::text[], $3::int8[], \
         $4::int8[], $5::timestamptz[], $6::timestamptz[], $7::timestamptz[]) AS u(s, ts, tf, ln, ls, lf) \
         ON CONFLICT (tenant, subscription) DO UPDATE SET times_sent = EXCLUDED.times_sent, \
         times_failed = EXCLUDED.times_failed, last_notification = EXCLUDED.last_notification, \
         last_success = EXCLUDED.last_success, last_failure = EXCLUDED.last_failure",
        &[&tenant.name(), &ids, &sent, &failed, &last, &success, &failure],
    )
    .await?;
    Ok(())
}

/// Writes entities with their index rows: an entity already stored under
/// an id is replaced whole (its index rows go with it).
///
/// Why without the entity advisory locks every edit takes: a batch of
/// thousands of entities would hold thousands of locks until its commit,
/// more than PostgreSQL's lock table has room for (`max_locks_per_transaction`
/// × connections; a million-entity import failed so). An import is for a
/// store no piazza serves from; should one write meanwhile anyway, the row
/// locks of the replaced rows and the unique key on `(tenant, id)` still
/// make one of the two writes fail rather than leave two rows.
async fn write_entities(
    transaction: &Transaction<'_>,
    tenant: &Tenant,
    entities: Vec<Entity>,
    postgis: bool,
) -> Result<()> {
    let entities = last_per_key(entities, |e| e.id.clone());
    if entities.is_empty() {
        return Ok(());
    }
    let ids: Vec<&str> = entities.iter().map(|e| e.id.as_str()).collect();
    let t = tenant.name();
    let replaced = "(SELECT eid FROM entities WHERE tenant = $1 AND id = ANY($2))";
    for index in INDEX_TABLES {
        execute(
            transaction,
            &format!("DELETE FROM {index} WHERE tenant = $1 AND eid IN {replaced}"),
            &[&t, &ids],
        )
        .await?;
    }
    execute(
        transaction,
        "DELETE FROM entities WHERE tenant = $1 AND id = ANY($2)",
        &[&t, &ids],
    )
    .await?;
    // Identity values follow the insertion order, which ORDER BY n fixes:
    // the entities keep their creation order.
    let documents: Vec<Json<&Entity>> = entities.iter().map(Json).collect();
    let statement = transaction
        .prepare_cached(
            "INSERT INTO entities(tenant, id, doc) SELECT $1, i, d FROM unnest($2::text[], $3::json[]) \
             WITH ORDINALITY AS u(i, d, n) ORDER BY n RETURNING id, eid",
        )
        .await?;
    let mut eids: HashMap<String, i64> = HashMap::new();
    for row in transaction.query(&statement, &[&t, &ids, &documents]).await? {
        eids.insert(row.try_get(0)?, row.try_get(1)?);
    }
    let mut keys = Vec::with_capacity(entities.len());
    for entity in &entities {
        let eid = *eids
            .get(&entity.id)
            .ok_or_else(|| Error::Corrupt(format!("no row was inserted for {}", entity.id)))?;
        keys.push((eid, IndexKeys::of(entity, postgis)));
    }
    let mut rows = IndexRows::new(t);
    for (eid, keys) in &keys {
        rows.push_all(*eid, keys);
    }
    rows.insert(transaction, postgis).await
}

async fn write_temporal(transaction: &Transaction<'_>, tenant: &Tenant, rows: Vec<RawTemporalEntity>) -> Result<()> {
    let rows = last_per_key(rows, |r| r.id.clone());
    if rows.is_empty() {
        return Ok(());
    }
    let ids: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
    // Arrays of arrays do not unnest row by row: each row's lists go as JSON.
    let types: Vec<Json<&Vec<String>>> = rows.iter().map(|r| Json(&r.types)).collect();
    let scopes: Vec<Json<&Vec<String>>> = rows.iter().map(|r| Json(&r.scope)).collect();
    let created: Vec<Timestamp> = rows.iter().map(|r| r.created_at).collect();
    let modified: Vec<Timestamp> = rows.iter().map(|r| r.modified_at).collect();
    let deleted: Vec<Option<Timestamp>> = rows.iter().map(|r| r.deleted_at).collect();
    execute(
        transaction,
        concat!(
            "INSERT INTO temporal_entities(tenant, id, types, scope, created_at, modified_at, deleted_at) SELECT $1, i, ",
            json_text_array!("t"),
            ", ",
            json_text_array!("s"),
            ", c, m, d FROM unnest($2::text[], $3::json[], $4::json[], $5::timestamptz[], $6::timestamptz[], $7::timestamptz[]) \
         WITH ORDINALITY AS u(i, t, s, c, m, d, n) ORDER BY n \
         ON CONFLICT (tenant, id) DO UPDATE SET types = EXCLUDED.types, scope = EXCLUDED.scope, \
         created_at = EXCLUDED.created_at, modified_at = EXCLUDED.modified_at, deleted_at = EXCLUDED.deleted_at"
        ),
        &[&tenant.name(), &ids, &types, &scopes, &created, &modified, &deleted],
    )
    .await?;
    Ok(())
}

async fn write_instances(transaction: &Transaction<'_>, tenant: &Tenant, instances: &[RawInstance]) -> Result<()> {
    if instances.is_empty() {
        return Ok(());
    }
    let column = |f: fn(&RawInstance) -> &str| instances.iter().map(f).collect::<Vec<&str>>();
    let (entity_ids, attrs, instance_ids) = (
        column(|i| &i.entity_id),
        column(|i| &i.attr),
        column(|i| &i.instance_id),
    );
    let dataset_ids: Vec<Option<&str>> = instances.iter().map(|i| i.dataset_id.as_deref()).collect();
    let observed: Vec<Option<Timestamp>> = instances.iter().map(|i| i.observed_at).collect();
    let created: Vec<Timestamp> = instances.iter().map(|i| i.created_at).collect();
    let modified: Vec<Timestamp> = instances.iter().map(|i| i.modified_at).collect();
    let deleted: Vec<Option<Timestamp>> = instances.iter().map(|i| i.deleted_at).collect();
    let documents: Vec<Json<&Attribute>> = instances.iter().map(|i| Json(&i.attribute)).collect();
    // In order: the instance number breaks ties between equal times.
    execute(
        transaction,
        "INSERT INTO attr_instances(tenant, entity_id, attr, instance_id, dataset_id, observed_at, created_at, \
         modified_at, deleted_at, doc) SELECT $1, e, a, i, d, o, c, m, x, j FROM unnest($2::text[], $3::text[], \
         $4::text[], $5::text[], $6::timestamptz[], $7::timestamptz[], $8::timestamptz[], $9::timestamptz[], \
         $10::json[]) WITH ORDINALITY AS u(e, a, i, d, o, c, m, x, j, n) ORDER BY n",
        &[
            &tenant.name(),
            &entity_ids,
            &attrs,
            &instance_ids,
            &dataset_ids,
            &observed,
            &created,
            &modified,
            &deleted,
            &documents,
        ],
    )
    .await?;
    Ok(())
}

async fn write_notices(transaction: &Transaction<'_>, tenant: &Tenant, notices: &[RawNotice]) -> Result<()> {
    if notices.is_empty() {
        return Ok(());
    }
    let subscriptions: Vec<&str> = notices.iter().map(|n| n.subscription_id.as_str()).collect();
    let entities: Vec<&str> = notices.iter().map(|n| n.entity_id.as_str()).collect();
    let documents: Vec<Json<&Value>> = notices.iter().map(|n| Json(&n.notice)).collect();
    let recorded: Vec<Timestamp> = notices.iter().map(|n| n.recorded_at).collect();
    execute(
        transaction,
        "INSERT INTO outbox(tenant, subscription, entity_id, notice, recorded_at) SELECT $1, s, e, j, r \
         FROM unnest($2::text[], $3::text[], $4::json[], $5::timestamptz[]) WITH ORDINALITY AS u(s, e, j, r, n) \
         ORDER BY n",
        &[&tenant.name(), &subscriptions, &entities, &documents, &recorded],
    )
    .await?;
    // Wakes the delivery of running processes, as a normal write would.
    cluster::announce_notices(transaction, tenant, &subscriptions).await
}

/// Every table that holds rows of a tenant, index tables included.
const TENANT_TABLES: [&str; 15] = [
    "entity_types",
    "entity_attrs",
    "entity_geo",
    "attr_numbers",
    "attr_texts",
    "entities",
    "contexts",
    "resources",
    "temporal_entities",
    "attr_instances",
    "attr_rollups",
    "outbox",
    "delivery_stats",
    "delivery_leases",
    "tenants",
];

pub(crate) async fn clear(client: &mut deadpool_postgres::Object, tenant: &Tenant) -> Result<()> {
    let transaction = client.transaction().await?;
    for table in TENANT_TABLES {
        let column = if table == "tenants" { "name" } else { "tenant" };
        execute(
            &transaction,
            &format!("DELETE FROM {table} WHERE {column} = $1"),
            &[&tenant.name()],
        )
        .await?;
    }
    cluster::announce(&transaction, tenant, Changed::Subscriptions).await?;
    cluster::announce(&transaction, tenant, Changed::Contexts).await?;
    transaction.commit().await?;
    Ok(())
}
