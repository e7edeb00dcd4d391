//! History keyed by numbers, for data dirs written before it.
//!
//! Until 2026-12-07 an instance row carried the tenant, the entity id and
//! the attribute's IRI as text, and so did each entry of its time index and
//! each rollup row; now it carries the temporal entity's `teid` and the
//! name's number (see `schema.sql`). An older data dir is moved over once,
//! at open: [`set_aside`] renames the text-keyed table before the schema
//! creates the numbered one, [`rekey`] copies the rows across after it and
//! drops the old table, in one transaction, so that a crash half-way leaves
//! the old rows where the next open finds them again.

use rusqlite::types::Value as SqlValue;
use rusqlite::{params, Connection, OptionalExtension, Transaction};

use piazza_store::StoreResult;

use crate::temporal::instance_key;
use crate::{rollups, sql};

/// `PRAGMA user_version` from which history is keyed by numbers (6) and
/// our instance ids are stored as the 16 bytes of their UUID (7).
const REKEYED_VERSION: i64 = 7;

/// Where the text-keyed history waits for [`rekey`].
const TEXT_KEYED: &str = "attr_instances_by_text";

fn has_table(connection: &Connection, name: &str) -> StoreResult<bool> {
    connection
        .query_row(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1",
            [name],
            |_| Ok(()),
        )
        .optional()
        .map(|found| found.is_some())
        .map_err(sql)
}

/// Before the schema: moves a text-keyed history table out of the way,
/// without its indexes, triggers and rollups (the schema makes them anew).
pub(crate) fn set_aside(connection: &Connection) -> StoreResult<()> {
    let text_keyed = connection
        .query_row(
            "SELECT 1 FROM pragma_table_info('attr_instances') WHERE name = 'entity_id'",
            [],
            |_| Ok(()),
        )
        .optional()
        .map_err(sql)?
        .is_some();
    if !text_keyed {
        return Ok(());
    }
    connection
        .execute_batch(&format!(
            "BEGIN IMMEDIATE; DROP VIEW IF EXISTS history_rows; \
             DROP TRIGGER IF EXISTS attr_rollups_deleted; DROP TRIGGER IF EXISTS attr_rollups_changed; \
             DROP TABLE IF EXISTS attr_rollups; \
             DROP INDEX IF EXISTS attr_instances_observed; DROP INDEX IF EXISTS attr_instances_by_id; \
             DROP INDEX IF EXISTS attr_instances_created; DROP INDEX IF EXISTS attr_instances_modified; \
             ALTER TABLE attr_instances RENAME TO {TEXT_KEYED}; \
             COMMIT;"
        ))
        .map_err(sql)
}

/// After the schema and every earlier backfill: copies a set-aside history
/// into the numbered table, in recording order and with its instance
/// numbers, and gives it its numbers (`rollups::prune` rolls up the long
/// histories after it). An instance whose entity has
/// no temporal row (its history was deleted before the entity was) gets a
/// bare one, as an import does: nothing stored is dropped.
pub(crate) fn rekey(connection: &mut Connection) -> StoreResult<()> {
    if crate::filled_to(connection)? >= REKEYED_VERSION && !has_table(connection, TEXT_KEYED)? {
        return Ok(());
    }
    let transaction = connection.transaction().map_err(sql)?;
    let mut moved = 0usize;
    if has_table(&transaction, TEXT_KEYED)? {
        tracing::info!("keying the history of an older data dir by numbers, once");
        transaction
            .execute_batch(&format!(
                "INSERT OR IGNORE INTO tenants(name) SELECT DISTINCT tenant FROM {TEXT_KEYED}; \
                 INSERT OR IGNORE INTO value_names(tenant, name) SELECT DISTINCT tenant, attr FROM {TEXT_KEYED}; \
                 INSERT OR IGNORE INTO temporal_entities(tenant, id, types, scope, created_at, modified_at) \
                 SELECT tenant, entity_id, '[]', '[]', min(created_at), max(modified_at) FROM {TEXT_KEYED} \
                 GROUP BY tenant, entity_id;"
            ))
            .map_err(sql)?;
        moved = transaction
            .execute(
                &format!(
                    "INSERT INTO attr_instances(iid, teid, attr, instance_id, dataset_id, observed_at, created_at, \
                     modified_at, deleted_at, doc) \
                     SELECT o.iid, te.teid, n.key, o.instance_id, o.dataset_id, o.observed_at, o.created_at, \
                     o.modified_at, o.deleted_at, o.doc FROM {TEXT_KEYED} o \
                     JOIN temporal_entities te ON te.tenant = o.tenant AND te.id = o.entity_id \
                     JOIN value_names n ON n.tenant = o.tenant AND n.name = o.attr ORDER BY o.iid"
                ),
                [],
            )
            .map_err(sql)?;
        transaction
            .execute_batch(&format!("DROP TABLE {TEXT_KEYED};"))
            .map_err(sql)?;
        // Their rollups are rebuilt by `rollups::prune`, for the long ones.
        rollups::set_numbers(&transaction).map_err(sql)?;
    }
    let shrunk = shrink_instance_ids(&transaction).map_err(sql)?;
    transaction
        .pragma_update(None, "user_version", REKEYED_VERSION)
        .map_err(sql)?;
    transaction.commit().map_err(sql)?;
    if moved > 0 || shrunk > 0 {
        tracing::info!(instances = moved, ids = shrunk, "history keyed by numbers");
    }
    Ok(())
}

/// Stores the instance ids kept as text that [`instance_key`] stores as
/// bytes; returns how many.
fn shrink_instance_ids(transaction: &Transaction<'_>) -> rusqlite::Result<usize> {
    let texts: Vec<(i64, String)> = transaction
        .prepare("SELECT iid, instance_id FROM attr_instances WHERE typeof(instance_id) = 'text'")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut update = transaction.prepare("UPDATE attr_instances SET instance_id = ?2 WHERE iid = ?1")?;
    let mut shrunk = 0;
    for (iid, id) in texts {
        let key = instance_key(&id);
        if matches!(key, SqlValue::Blob(_)) {
            update.execute(params![iid, key])?;
            shrunk += 1;
        }
    }
    Ok(shrunk)
}

#[cfg(test)]
mod tests {
    use piazza_ngsild::temporal::{
        AggrMethod, Aggregation, Duration, TemporalEntity, TemporalQuery, TimeRel, MIN_SUMMARISED,
    };
    use piazza_ngsild::time;
    use piazza_ngsild::{Attribute, AttributeKind};
    use piazza_store::{RawKind, Store, TemporalEdit, Tenant};
    use serde_json::json;

    use crate::EmbeddedStore;

    const ID: &str = "urn:ngsi-ld:R:1";
    const ATTR: &str = "https://example.org/t";

    /// `n` numeric instances a minute apart, alternating two datasets.
    fn instances(n: i64, offset: f64) -> Vec<Attribute> {
        (0..n)
            .map(|k| {
                let mut a = Attribute::new(AttributeKind::Property, json!(offset + k as f64));
                let at = time::parse("2024-01-01T00:00:00Z").expect("instant") + chrono::TimeDelta::minutes(k);
                a.observed_at = Some(time::format(&at));
                a.dataset_id = (k % 2 == 1).then(|| "urn:ngsi-ld:Dataset:b".to_owned());
                a
            })
            .collect()
    }

    fn queries() -> [TemporalQuery; 2] {
        let aggregated = TemporalQuery {
            timerel: Some(TimeRel::After(time::parse("2024-01-01T00:00:00Z").expect("instant"))),
            aggregation: Some(Aggregation {
                methods: vec![AggrMethod::TotalCount, AggrMethod::Sum],
                period: Some(Duration::parse("PT6H").expect("duration")),
            }),
            ..TemporalQuery::default()
        };
        [TemporalQuery::default(), aggregated]
    }

    async fn histories(store: &EmbeddedStore, tenants: &[Tenant]) -> Vec<Option<TemporalEntity>> {
        let mut out = Vec::new();
        for tenant in tenants {
            for query in queries() {
                out.push(store.temporal_entity(tenant, ID, &query).await.expect("read"));
            }
        }
        out
    }

    /// Turns a data dir back into the text-keyed layout of before
    /// 2026-12-07 (the tables and indexes as they were), plus one instance
    /// whose entity has no temporal row.
    fn age(path: &std::path::Path) {
        let old = rusqlite::Connection::open(path).expect("sqlite");
        old.execute_batch(
            "DROP TRIGGER attr_rollups_deleted; DROP TRIGGER attr_rollups_changed; DROP TABLE attr_rollups; \
             DROP TABLE rolled_up; \
             CREATE TABLE text_keyed (iid INTEGER PRIMARY KEY, tenant TEXT NOT NULL, entity_id TEXT NOT NULL, \
               attr TEXT NOT NULL, instance_id TEXT NOT NULL, dataset_id TEXT, observed_at TEXT, \
               created_at TEXT NOT NULL, modified_at TEXT NOT NULL, deleted_at TEXT, doc TEXT NOT NULL, num REAL); \
             INSERT INTO text_keyed SELECT h.iid, h.tenant, h.entity_id, h.attr, \
               'urn:ngsi-ld:attribute:instance:' || lower(substr(hex(h.instance_id), 1, 8) || '-' || \
               substr(hex(h.instance_id), 9, 4) || '-' || substr(hex(h.instance_id), 13, 4) || '-' || \
               substr(hex(h.instance_id), 17, 4) || '-' || substr(hex(h.instance_id), 21)), \
               h.dataset_id, h.observed_at, h.created_at, h.modified_at, h.deleted_at, h.doc, i.num \
               FROM history_rows h JOIN attr_instances i ON i.iid = h.iid; \
             INSERT INTO text_keyed (tenant, entity_id, attr, instance_id, created_at, modified_at, doc) \
               VALUES ('', 'urn:ngsi-ld:R:orphan', 'https://example.org/gone', 'urn:ngsi-ld:attribute:instance:x', \
               '2024-01-02T00:00:00.000000Z', '2024-01-02T00:00:00.000000Z', '{\"kind\":\"Property\",\"value\":null}'); \
             DROP VIEW history_rows; DROP TABLE attr_instances; \
             DELETE FROM value_names WHERE name NOT IN ('https://example.org/v'); \
             ALTER TABLE text_keyed RENAME TO attr_instances; \
             CREATE INDEX attr_instances_observed ON attr_instances (tenant, entity_id, attr, observed_at); \
             CREATE INDEX attr_instances_by_id ON attr_instances (tenant, instance_id); \
             CREATE TABLE attr_rollups (tenant TEXT NOT NULL, entity_id TEXT NOT NULL, attr TEXT NOT NULL, \
               dataset TEXT NOT NULL, hour TEXT NOT NULL, count INTEGER NOT NULL, others INTEGER NOT NULL, \
               stale INTEGER NOT NULL, sum REAL NOT NULL, sumsq REAL NOT NULL, m2 REAL NOT NULL, min REAL, max REAL, \
               first_at TEXT, last_at TEXT, PRIMARY KEY (tenant, entity_id, attr, hour, dataset)) WITHOUT ROWID; \
             PRAGMA user_version = 5;",
        )
        .expect("age the data dir");
    }

    #[tokio::test]
    async fn a_text_keyed_history_is_keyed_by_numbers_at_open_and_reads_the_same() {
        let dir = tempfile::tempdir().expect("temp dir");
        let tenants = [Tenant::default(), Tenant::parse("acme").expect("tenant")];
        let store = EmbeddedStore::open(dir.path()).expect("open");
        // The same entity id in two tenants, with histories that differ: a
        // long one, aggregated from rollups, and a short one.
        let long = i64::try_from(MIN_SUMMARISED).expect("small") + 200;
        for (tenant, (n, offset)) in tenants.iter().zip([(long, 0.0), (200, 1000.0)]) {
            let edit = TemporalEdit::Upsert {
                id: ID.into(),
                types: vec!["https://example.org/R".into()],
                scope: Vec::new(),
                attributes: vec![(ATTR.into(), instances(n, offset))],
            };
            store.temporal_edit(tenant, edit).await.expect("store").expect("edit");
        }
        let before = histories(&store, &tenants).await;
        assert!(before.iter().all(Option::is_some));
        let summarised = |h: &Option<TemporalEntity>| h.as_ref().is_some_and(|h| !h.summaries.is_empty());
        assert_eq!(
            before.iter().map(summarised).collect::<Vec<_>>(),
            [false, true, false, false]
        );
        assert_ne!(before[0], before[2], "the tenants' histories differ");
        let path = store.path().to_owned();
        drop(store);

        age(&path);
        let store = EmbeddedStore::open(dir.path()).expect("reopen");
        assert_eq!(histories(&store, &tenants).await, before);
        let counts = store.raw_counts(&tenants[0]).await.expect("counts");
        assert_eq!(
            counts[&RawKind::Instance],
            u64::try_from(long).expect("positive") + 1,
            "the orphan instance is kept"
        );
        assert_eq!(counts[&RawKind::TemporalEntity], 2, "under a bare temporal row");
        drop(store);

        let connection = rusqlite::Connection::open(&path).expect("sqlite");
        let version: i64 = connection
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .expect("version");
        assert!(version >= super::REKEYED_VERSION, "user_version {version}");
        let left: i64 = connection
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE name = ?1",
                [super::TEXT_KEYED],
                |r| r.get(0),
            )
            .expect("tables");
        assert_eq!(left, 0, "the text-keyed table is dropped");
        let kinds: Vec<(String, i64)> = connection
            .prepare("SELECT typeof(instance_id), count(*) FROM attr_instances GROUP BY 1 ORDER BY 1")
            .and_then(|mut s| s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect())
            .expect("ids");
        assert_eq!(
            kinds,
            vec![("blob".to_owned(), long + 200), ("text".to_owned(), 1)],
            "our ids as bytes, an id of another form as it was"
        );
        let stale: i64 = connection
            .query_row("SELECT count(*) FROM attr_rollups WHERE stale = 1", [], |r| r.get(0))
            .expect("rollups");
        let hours: i64 = connection
            .query_row("SELECT count(*) FROM attr_rollups", [], |r| r.get(0))
            .expect("rollups");
        // 2,200 minutes: 37 hours of the long history, in two datasets.
        assert_eq!((stale, hours), (0, 37 * 2), "the long history's hours only");
    }
}
