//! Raw access to a tenant's rows, for moving a data dir to another backend
//! and back (`piazza export`, `piazza import ndjson`): pages read by key
//! (the row numbers that give creation order), and batched writes that keep
//! every index table as a normal write does but generate no history and no
//! notification.

use piazza_ngsild::time::{self, Timestamp};
use piazza_ngsild::Entity;
use piazza_store::{
    DeliveryStats, RawCounts, RawInstance, RawKind, RawNotice, RawPage, RawRecord, RawTemporalEntity, ResourceKind,
    StoreError, StoreResult, StoredContext, Tenant,
};
use rusqlite::types::Value as SqlValue;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension, Row, Transaction};

use crate::{context_kind, decode, sql};

/// The table of each kind (every one has a `tenant` column; history is
/// read through the view that names its rows, see `schema.sql`).
fn table(kind: RawKind) -> &'static str {
    match kind {
        RawKind::Context => "contexts",
        RawKind::Resource => "resources",
        RawKind::DeliveryStats => "delivery_stats",
        RawKind::Entity => "entities",
        RawKind::TemporalEntity => "temporal_entities",
        RawKind::Instance => "history_rows",
        RawKind::Notice => "outbox",
    }
}

pub(crate) fn counts(connection: &Connection, tenant: &Tenant) -> StoreResult<RawCounts> {
    let mut counts = RawCounts::new();
    for kind in RawKind::ALL {
        let n: i64 = connection
            .prepare_cached(&format!("SELECT COUNT(*) FROM {} WHERE tenant = ?1", table(kind)))
            .and_then(|mut s| s.query_row([tenant.name()], |r| r.get(0)))
            .map_err(sql)?;
        counts.insert(kind, u64::try_from(n).unwrap_or(0));
    }
    Ok(counts)
}

/// The columns a page of each kind is read in the order of (its key: the
/// last record's values are where the next page starts), and the columns
/// that make the record.
///
/// The order is the one a normal write gave, which an import keeps:
/// creation order for entities, temporal entities and resources; outbox
/// order per subscription. History goes by instance number, the order it
/// was recorded in: the import numbers it again in that order, so every
/// order a read depends on (instances of one attribute by time, ties by
/// instance number) is kept, and a page starts where the row ids do
/// instead of sorting a tenant's whole history.
fn select(kind: RawKind) -> (&'static [&'static str], &'static str) {
    match kind {
        RawKind::Context => (&["id"], "id, url, kind, document, created_at"),
        RawKind::Resource => (&["rid"], "kind, id, document"),
        RawKind::DeliveryStats => (
            &["subscription"],
            "subscription, times_sent, times_failed, last_notification, last_success, last_failure",
        ),
        RawKind::Entity => (&["eid"], "doc"),
        RawKind::TemporalEntity => (&["teid"], "id, types, scope, created_at, modified_at, deleted_at"),
        RawKind::Instance => (
            &["iid"],
            "entity_id, attr, instance_id, dataset_id, observed_at, created_at, modified_at, deleted_at, doc",
        ),
        RawKind::Notice => (&["subscription", "seq"], "subscription, entity_id, notice, recorded_at"),
    }
}

/// The values of a cursor (a JSON array of the key's values).
fn cursor_values(cursor: &str, width: usize) -> StoreResult<Vec<SqlValue>> {
    let invalid = || StoreError::Backend(format!("invalid export cursor '{cursor}'"));
    let values: Vec<serde_json::Value> = serde_json::from_str(cursor).map_err(|_| invalid())?;
    if values.len() != width {
        return Err(invalid());
    }
    values
        .into_iter()
        .map(|value| match value {
            serde_json::Value::String(text) => Ok(SqlValue::Text(text)),
            serde_json::Value::Number(n) => n.as_i64().map(SqlValue::Integer).ok_or_else(invalid),
            _ => Err(invalid()),
        })
        .collect()
}

fn cursor_of(row: &Row<'_>, width: usize) -> StoreResult<String> {
    let mut values = Vec::with_capacity(width);
    for i in 0..width {
        values.push(match row.get::<_, SqlValue>(i).map_err(sql)? {
            SqlValue::Integer(n) => serde_json::Value::from(n),
            SqlValue::Text(text) => serde_json::Value::from(text),
            _ => {
                return Err(StoreError::Corrupt(
                    "a key column that is neither text nor integer".into(),
                ))
            }
        });
    }
    Ok(serde_json::Value::Array(values).to_string())
}

pub(crate) fn page(
    connection: &Connection,
    tenant: &Tenant,
    kind: RawKind,
    after: Option<&str>,
    limit: usize,
) -> StoreResult<RawPage> {
    let (key, columns) = select(kind);
    let mut args = vec![
        SqlValue::Text(tenant.name().to_owned()),
        SqlValue::Integer(i64::try_from(limit).unwrap_or(i64::MAX)),
    ];
    let keys = key.join(", ");
    let from = match after {
        None => String::new(),
        Some(cursor) => {
            args.extend(cursor_values(cursor, key.len())?);
            let places: Vec<String> = (3..3 + key.len()).map(|i| format!("?{i}")).collect();
            format!(" AND ({keys}) > ({})", places.join(", "))
        }
    };
    // Row ids drive these scans, not a tenant index, which is not in their
    // order: resources are few, and history has no index that starts with
    // the tenant and ends in recording order (see `schema.sql`).
    let tenant_column = if matches!(kind, RawKind::Resource | RawKind::Instance) {
        "+tenant"
    } else {
        "tenant"
    };
    let statement = format!(
        "SELECT {keys}, {columns} FROM {} WHERE {tenant_column} = ?1{from} ORDER BY {keys} LIMIT ?2",
        table(kind)
    );
    let mut statement = connection.prepare_cached(&statement).map_err(sql)?;
    let mut rows = statement.query(params_from_iter(args)).map_err(sql)?;
    let mut records = Vec::new();
    while let Some(row) = rows.next().map_err(sql)? {
        records.push((cursor_of(row, key.len())?, record(kind, row, key.len())?));
    }
    Ok(RawPage::of(records, limit))
}

fn stamp(text: &str) -> StoreResult<Timestamp> {
    time::parse(text).ok_or_else(|| StoreError::Corrupt(format!("timestamp '{text}'")))
}

fn optional_stamp(text: Option<String>) -> StoreResult<Option<Timestamp>> {
    text.as_deref().map(stamp).transpose()
}

fn json<T: serde::de::DeserializeOwned>(what: &str, text: &str) -> StoreResult<T> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

/// The record in the columns of `row` from `first` on.
fn record(kind: RawKind, row: &Row<'_>, first: usize) -> StoreResult<RawRecord> {
    let text = |i: usize| row.get::<_, String>(first + i).map_err(sql);
    let maybe = |i: usize| row.get::<_, Option<String>>(first + i).map_err(sql);
    let number = |i: usize| row.get::<_, i64>(first + i).map_err(sql);
    Ok(match kind {
        RawKind::Context => RawRecord::Context(StoredContext {
            id: text(0)?,
            url: text(1)?,
            kind: context_kind(&text(2)?)?,
            document: json("context", &text(3)?)?,
            created_at: stamp(&text(4)?)?,
        }),
        RawKind::Resource => {
            let name = text(0)?;
            let kind = ResourceKind::from_name(&name)
                .ok_or_else(|| StoreError::Corrupt(format!("unknown resource kind {name}")))?;
            RawRecord::Resource {
                kind,
                id: text(1)?,
                document: json("resource", &text(2)?)?,
            }
        }
        RawKind::DeliveryStats => RawRecord::DeliveryStats {
            subscription_id: text(0)?,
            stats: DeliveryStats {
                times_sent: u64::try_from(number(1)?).unwrap_or(0),
                times_failed: u64::try_from(number(2)?).unwrap_or(0),
                last_notification: optional_stamp(maybe(3)?)?,
                last_success: optional_stamp(maybe(4)?)?,
                last_failure: optional_stamp(maybe(5)?)?,
            },
        },
        // As stored: an expired entity is still a row until it is rewritten.
        RawKind::Entity => RawRecord::Entity(decode(&text(0)?)?),
        RawKind::TemporalEntity => RawRecord::TemporalEntity(RawTemporalEntity {
            id: text(0)?,
            types: json("temporal types", &text(1)?)?,
            scope: json("temporal scope", &text(2)?)?,
            created_at: stamp(&text(3)?)?,
            modified_at: stamp(&text(4)?)?,
            deleted_at: optional_stamp(maybe(5)?)?,
        }),
        RawKind::Instance => {
            let (created_at, modified_at) = (stamp(&text(5)?)?, stamp(&text(6)?)?);
            RawRecord::Instance(Box::new(RawInstance {
                entity_id: text(0)?,
                attr: text(1)?,
                instance_id: row
                    .get_ref(first + 2)
                    .and_then(crate::temporal::instance_id_of)
                    .map_err(sql)?,
                dataset_id: maybe(3)?,
                observed_at: optional_stamp(maybe(4)?)?,
                created_at,
                modified_at,
                deleted_at: optional_stamp(maybe(7)?)?,
                attribute: crate::temporal::attribute_from_row(&text(8)?, Some(created_at), Some(modified_at))?,
            }))
        }
        RawKind::Notice => RawRecord::Notice(RawNotice {
            subscription_id: text(0)?,
            entity_id: text(1)?,
            notice: json("outbox entry", &text(2)?)?,
            recorded_at: stamp(&text(3)?)?,
        }),
    })
}

fn to_json<T: serde::Serialize>(value: &T) -> rusqlite::Result<String> {
    serde_json::to_string(value).map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))
}

fn format_opt(stamp: Option<&Timestamp>) -> Option<String> {
    stamp.map(time::format)
}

/// Writes `records` in the caller's savepoint; returns how many.
pub(crate) fn write(tx: &Transaction<'_>, tenant: &Tenant, records: Vec<RawRecord>) -> rusqlite::Result<u64> {
    let t = tenant.name();
    crate::tenants::ensure(tx, tenant)?;
    let mut written = 0u64;
    for record in records {
        match record {
            RawRecord::Context(context) => {
                tx.prepare_cached(
                    "INSERT OR REPLACE INTO contexts(tenant, id, url, kind, document, created_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )?
                .execute(params![
                    t,
                    context.id,
                    context.url,
                    context.kind.name(),
                    context.document.to_string(),
                    time::format(&context.created_at)
                ])?;
            }
            RawRecord::Resource { kind, id, document } => {
                tx.prepare_cached(
                    "INSERT INTO resources(tenant, kind, id, document) VALUES (?1, ?2, ?3, ?4) \
                     ON CONFLICT (tenant, kind, id) DO UPDATE SET document = excluded.document",
                )?
                .execute(params![t, kind.name(), id, document.to_string()])?;
            }
            RawRecord::DeliveryStats { subscription_id, stats } => {
                tx.prepare_cached(
                    "INSERT OR REPLACE INTO delivery_stats(tenant, subscription, times_sent, times_failed, \
                     last_notification, last_success, last_failure) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )?
                .execute(params![
                    t,
                    subscription_id,
                    i64::try_from(stats.times_sent).unwrap_or(i64::MAX),
                    i64::try_from(stats.times_failed).unwrap_or(i64::MAX),
                    format_opt(stats.last_notification.as_ref()),
                    format_opt(stats.last_success.as_ref()),
                    format_opt(stats.last_failure.as_ref()),
                ])?;
            }
            RawRecord::Entity(entity) => write_entity(tx, tenant, &entity)?,
            RawRecord::TemporalEntity(row) => {
                tx.prepare_cached(
                    "INSERT INTO temporal_entities(tenant, id, types, scope, created_at, modified_at, deleted_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (tenant, id) DO UPDATE SET \
                     types = excluded.types, scope = excluded.scope, created_at = excluded.created_at, \
                     modified_at = excluded.modified_at, deleted_at = excluded.deleted_at",
                )?
                .execute(params![
                    t,
                    row.id,
                    to_json(&row.types)?,
                    to_json(&row.scope)?,
                    time::format(&row.created_at),
                    time::format(&row.modified_at),
                    format_opt(row.deleted_at.as_ref()),
                ])?;
            }
            RawRecord::Instance(instance) => crate::temporal::insert_row(tx, tenant, &instance)?,
            RawRecord::Notice(notice) => {
                tx.prepare_cached(
                    "INSERT INTO outbox(tenant, subscription, entity_id, notice, recorded_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )?
                .execute(params![
                    t,
                    notice.subscription_id,
                    notice.entity_id,
                    notice.notice.to_string(),
                    time::format(&notice.recorded_at)
                ])?;
            }
        }
        written += 1;
    }
    Ok(written)
}

/// Writes an entity through the path every edit takes (`put`), so its
/// type, attribute and value index rows are exactly a normal write's; a
/// row already there is replaced whole, index rows included.
fn write_entity(tx: &Transaction<'_>, tenant: &Tenant, entity: &Entity) -> rusqlite::Result<()> {
    let eid: Option<i64> = tx
        .prepare_cached("SELECT eid FROM entities WHERE tenant = ?1 AND id = ?2")?
        .query_row(params![tenant.name(), entity.id], |r| r.get(0))
        .optional()?;
    crate::put(tx, tenant, eid, None, entity, &mut crate::values::NameKeys::default())
}

/// Every table that holds rows of a tenant, index tables included.
/// (History is keyed by a tenant's temporal entities, `temporal::clear`,
/// the value rows by its numbered names, `values::clear`, and the
/// entities' names by their rows, cleared first.)
const TENANT_TABLES: [&str; 6] = [
    "entity_types",
    "entities",
    "contexts",
    "resources",
    "outbox",
    "delivery_stats",
];

pub(crate) fn clear(tx: &Transaction<'_>, tenant: &Tenant) -> rusqlite::Result<()> {
    crate::temporal::clear(tx, tenant)?;
    tx.prepare_cached("DELETE FROM entity_names WHERE eid IN (SELECT eid FROM entities WHERE tenant = ?1)")?
        .execute([tenant.name()])?;
    crate::values::clear(tx, tenant)?;
    for table in TENANT_TABLES {
        tx.prepare_cached(&format!("DELETE FROM {table} WHERE tenant = ?1"))?
            .execute([tenant.name()])?;
    }
    tx.prepare_cached("DELETE FROM tenants WHERE name = ?1")?
        .execute([tenant.name()])?;
    Ok(())
}
