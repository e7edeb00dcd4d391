//! The value indexes (`value_numbers`, `value_texts`, keyed through
//! `value_names`): kept with every write, built once for data dirs from
//! before them, and turned into candidate filters for `q`.

use std::collections::{HashMap, HashSet};

use piazza_ngsild::query::q::{attribute_indexed_values, indexed_values, IndexedValue, ValueBound, ValueTest};
use piazza_ngsild::Entity;
use piazza_store::{StoreResult, Tenant};
use rusqlite::types::Value as SqlValue;
use rusqlite::{params, Connection, OptionalExtension, Transaction};

use crate::rows::MultiRowInsert;
use crate::sql;

/// `PRAGMA user_version` from which the value indexes are complete in their
/// present layout (numbered names, since version 5). Built after the other
/// indexes (see `EmbeddedStore::open`), so that a data dir from before any
/// of them gets each.
const INDEXED_VERSION: i64 = 5;

/// Brings the value indexes of `entity` (row `eid`) from what `before` had
/// to what `after` has; `before` is `None` when the entity has no rows (a
/// new row, or one whose rows `clear_entity` dropped).
pub(crate) fn reindex(
    transaction: &Transaction<'_>,
    tenant: &Tenant,
    eid: i64,
    before: Option<&Entity>,
    after: Option<&Entity>,
    keys: &mut NameKeys,
) -> rusqlite::Result<()> {
    let (old, new) = match (before, after) {
        (Some(before), Some(after)) => changed_values(before, after),
        _ => (
            before.map(indexed_values).unwrap_or_default(),
            after.map(indexed_values).unwrap_or_default(),
        ),
    };
    let old: FastSet<(&str, IndexedValue)> = old.into_iter().collect();
    let new: FastSet<(&str, IndexedValue)> = new.into_iter().collect();
    for (name, value) in old.iter().filter(|entry| !new.contains(entry)) {
        let Some(key) = keys.get(transaction, tenant, name, false)? else {
            continue;
        };
        let (statements, value) = row(value);
        transaction
            .prepare_cached(statements.delete)?
            .execute(params![key, value, eid])?;
    }
    let (mut numbers, mut texts) = (Vec::new(), Vec::new());
    for (name, value) in new.iter().filter(|entry| !old.contains(entry)) {
        let Some(key) = keys.get(transaction, tenant, name, true)? else {
            continue;
        };
        match value {
            IndexedValue::Number(n) => numbers.push((key, *n, eid)),
            IndexedValue::Text(t) => texts.push((key, t.as_str(), eid)),
        }
    }
    NUMBERS
        .insert
        .run(transaction, &numbers, |(key, value, eid)| [key, value, eid])?;
    TEXTS
        .insert
        .run(transaction, &texts, |(key, value, eid)| [key, value, eid])?;
    Ok(())
}

/// Drops every value row of row `eid`.
pub(crate) fn clear_entity(transaction: &Transaction<'_>, eid: i64) -> rusqlite::Result<()> {
    for statements in [&NUMBERS, &TEXTS] {
        transaction.prepare_cached(statements.clear)?.execute([eid])?;
    }
    Ok(())
}

/// Indexed values by attribute name.
type Values<'e> = Vec<(&'e str, IndexedValue)>;

/// The indexed values of the attributes an update changed, before and
/// after: most updates change one attribute of ten, and working out every
/// value of both versions was as costly as writing the changed rows.
fn changed_values<'e>(before: &'e Entity, after: &'e Entity) -> (Values<'e>, Values<'e>) {
    let (mut old, mut new) = (Vec::new(), Vec::new());
    for (name, instances) in &after.attributes {
        let previous = before.attributes.get(name);
        if previous != Some(instances) {
            attribute_indexed_values(name, instances, &mut new);
            if let Some(previous) = previous {
                attribute_indexed_values(name, previous, &mut old);
            }
        }
    }
    for (name, instances) in &before.attributes {
        if !after.attributes.contains_key(name) {
            attribute_indexed_values(name, instances, &mut old);
        }
    }
    (old, new)
}

/// The numbers of the names a write group touches, by tenant: an edit's
/// name rows, value rows and history share a handful of names, and the
/// edits of a group (a batch, concurrent creates) mostly the same ones,
/// each looked up once. Valid within one transaction only: whoever rolls
/// back part of it, or runs a job that may delete names, clears it.
/// It also remembers which tenants' rows in `tenants` the transaction has
/// made sure of, so that a group of creates writes that row once.
#[derive(Default)]
pub(crate) struct NameKeys(Vec<TenantKeys>);

/// One tenant's part of [`NameKeys`]. A group rarely holds more than one
/// tenant, so tenants are found by a scan; names hash with foldhash, as
/// SipHash over IRIs of some fifty bytes was most of a lookup's cost.
#[derive(Default)]
struct TenantKeys {
    tenant: String,
    has_row: bool,
    names: HashMap<String, i64, foldhash::fast::RandomState>,
}

/// A set hashed with foldhash (see [`TenantKeys`]).
type FastSet<T> = HashSet<T, foldhash::fast::RandomState>;

impl NameKeys {
    /// The number of (`tenant`, `name`), made when `create` and missing.
    pub(crate) fn get(
        &mut self,
        transaction: &Transaction<'_>,
        tenant: &Tenant,
        name: &str,
        create: bool,
    ) -> rusqlite::Result<Option<i64>> {
        if let Some(key) = self.find(tenant).and_then(|keys| keys.names.get(name)) {
            return Ok(Some(*key));
        }
        let key = name_key(transaction, tenant, name, create)?;
        if let Some(key) = key {
            self.entry(tenant).names.insert(name.to_owned(), key);
        }
        Ok(key)
    }

    /// Makes sure `tenants` lists `tenant` (every entity row needs it).
    pub(crate) fn ensure_tenant(&mut self, transaction: &Transaction<'_>, tenant: &Tenant) -> rusqlite::Result<()> {
        if self.find(tenant).is_some_and(|keys| keys.has_row) {
            return Ok(());
        }
        crate::tenants::ensure(transaction, tenant)?;
        self.entry(tenant).has_row = true;
        Ok(())
    }

    /// Forgets every number (see the type's doc).
    pub(crate) fn clear(&mut self) {
        self.0.clear();
    }

    fn find(&self, tenant: &Tenant) -> Option<&TenantKeys> {
        self.0.iter().find(|keys| keys.tenant == tenant.name())
    }

    fn entry(&mut self, tenant: &Tenant) -> &mut TenantKeys {
        match self.0.iter().position(|keys| keys.tenant == tenant.name()) {
            Some(at) => &mut self.0[at],
            None => {
                self.0.push(TenantKeys {
                    tenant: tenant.name().to_owned(),
                    ..TenantKeys::default()
                });
                let last = self.0.len() - 1;
                &mut self.0[last]
            }
        }
    }
}

/// The SQL list of the numbers of `names` in the tenant of `?1`, their
/// values appended to `args`.
pub(crate) fn keys_of(args: &mut Vec<SqlValue>, names: &[String]) -> String {
    format!(
        "SELECT key FROM value_names WHERE tenant = ?1 AND name IN ({})",
        crate::read::placeholders(args, names)
    )
}

/// The tenant's number for the attribute name `name` (value rows and
/// history both carry it), made when `create` and missing.
pub(crate) fn name_key(
    connection: &Connection,
    tenant: &Tenant,
    name: &str,
    create: bool,
) -> rusqlite::Result<Option<i64>> {
    let key = connection
        .prepare_cached("SELECT key FROM value_names WHERE tenant = ?1 AND name = ?2")?
        .query_row(params![tenant.name(), name], |r| r.get(0))
        .optional()?;
    if key.is_some() || !create {
        return Ok(key);
    }
    connection
        .prepare_cached("INSERT INTO value_names(tenant, name) VALUES (?1, ?2)")?
        .execute(params![tenant.name(), name])?;
    Ok(Some(connection.last_insert_rowid()))
}

/// The statements that write one value table, spelled out once: the
/// statement cache finds a statement by its text, and text built per row
/// cost an allocation and a format for each.
struct RowStatements {
    insert: MultiRowInsert,
    delete: &'static str,
    clear: &'static str,
}

static NUMBERS: RowStatements = RowStatements {
    insert: MultiRowInsert::new("INSERT OR IGNORE INTO value_numbers(key, value, eid) VALUES", 3),
    delete: "DELETE FROM value_numbers WHERE key = ?1 AND value = ?2 AND eid = ?3",
    clear: "DELETE FROM value_numbers WHERE eid = ?1",
};

static TEXTS: RowStatements = RowStatements {
    insert: MultiRowInsert::new("INSERT OR IGNORE INTO value_texts(key, value, eid) VALUES", 3),
    delete: "DELETE FROM value_texts WHERE key = ?1 AND value = ?2 AND eid = ?3",
    clear: "DELETE FROM value_texts WHERE eid = ?1",
};

fn row(value: &IndexedValue) -> (&'static RowStatements, SqlValue) {
    match value {
        IndexedValue::Number(n) => (&NUMBERS, SqlValue::Real(*n)),
        IndexedValue::Text(t) => (&TEXTS, SqlValue::Text(t.clone())),
    }
}

/// Builds the value indexes of a data dir written before their present
/// layout, from the documents.
pub(crate) fn backfill(connection: &mut Connection) -> StoreResult<()> {
    if crate::filled_to(connection)? >= INDEXED_VERSION {
        return Ok(());
    }
    // The names stay: history is keyed by them too.
    connection
        .execute_batch("DELETE FROM value_numbers; DELETE FROM value_texts;")
        .map_err(sql)?;
    // One transaction: the names' numbers hold throughout.
    let mut keys = NameKeys::default();
    crate::backfill_entities(
        connection,
        INDEXED_VERSION,
        "value indexes",
        |transaction, eid, tenant, entity| reindex(transaction, tenant, eid, None, Some(entity), &mut keys),
    )
}

/// Deletes a tenant's value rows and names.
pub(crate) fn clear(transaction: &Transaction<'_>, tenant: &Tenant) -> rusqlite::Result<()> {
    for table in ["value_numbers", "value_texts"] {
        transaction
            .prepare_cached(&format!(
                "DELETE FROM {table} WHERE key IN (SELECT key FROM value_names WHERE tenant = ?1)"
            ))?
            .execute([tenant.name()])?;
    }
    transaction
        .prepare_cached("DELETE FROM value_names WHERE tenant = ?1")?
        .execute([tenant.name()])?;
    Ok(())
}

/// A bound meeting fewer index rows than this always drives, whatever the
/// size of the tenant: reading them costs less than a page's probes.
pub(crate) const DRIVE_LIMIT: i64 = 2_000;
/// What walking the type index spends on one candidate (its probes), in
/// index rows read by a driving bound (BENCHMARKS.md, "Driving by cost").
const PROBE_COST: f64 = 16.0;
/// The longest driving list: its eids are held in memory.
const MAX_DRIVE_ROWS: i64 = 200_000;

/// How many index rows a bound may meet and still drive the scan, in a
/// tenant whose entities span `span` eids, for a page that needs `wanted`
/// matches. Driving reads all R rows a bound meets; walking the type index
/// instead stops at a full page, after about `wanted × span / R`
/// candidates, each probed. So driving is cheaper while
/// R² < wanted × span × PROBE_COST: the limit grows as the square root of
/// the tenant (about 5,700 rows for a first page at 100k entities, 18,300
/// at 1M, where query-q's range bound meets 6,000–19,000 rows and the walk
/// it used to fall back to was half as fast).
pub(crate) fn drive_limit(span: i64, wanted: i64) -> i64 {
    let rows = (wanted.max(1) as f64 * span.max(0) as f64 * PROBE_COST).sqrt();
    (rows as i64).clamp(DRIVE_LIMIT, MAX_DRIVE_ROWS)
}

/// A bound as SQL over a value table aliased `v`: the condition and its
/// arguments, numbered from `first`. The statement's `?1` must be the
/// tenant: the name's number is looked up once per statement (an
/// uncorrelated subquery), and a name never indexed has none, so no row.
pub(crate) fn condition(bound: &ValueBound, first: usize, args: &mut Vec<SqlValue>) -> (&'static str, String) {
    let mut next = first;
    let mut arg = |args: &mut Vec<SqlValue>, value: SqlValue| {
        args.push(value);
        next += 1;
        format!("?{}", next - 1)
    };
    let name = arg(args, SqlValue::Text(bound.attribute.clone()));
    let key = format!("v.key = (SELECT key FROM value_names WHERE tenant = ?1 AND name = {name})");
    match &bound.test {
        ValueTest::Numbers(numbers) => {
            let list: Vec<String> = numbers.iter().map(|n| arg(args, SqlValue::Real(*n))).collect();
            ("value_numbers", format!("{key} AND v.value IN ({})", list.join(",")))
        }
        ValueTest::Texts(texts) => {
            let list: Vec<String> = texts.iter().map(|t| arg(args, SqlValue::Text(t.clone()))).collect();
            ("value_texts", format!("{key} AND v.value IN ({})", list.join(",")))
        }
        ValueTest::Between { low, high } => {
            let mut sql = key;
            if let Some(low) = low {
                sql.push_str(&format!(" AND v.value >= {}", arg(args, SqlValue::Real(*low))));
            }
            if let Some(high) = high {
                sql.push_str(&format!(" AND v.value <= {}", arg(args, SqlValue::Real(*high))));
            }
            ("value_numbers", sql)
        }
    }
}

/// The entities meeting `bound`, as ascending distinct eids, when fewer
/// than `limit` index rows do (`None` otherwise). Reading the eids costs
/// what counting the rows would, and the driving bound's list is then at
/// hand: SQLite need not collect and sort it again.
pub(crate) fn eids_meeting(
    connection: &Connection,
    tenant: &Tenant,
    bound: &ValueBound,
    limit: i64,
) -> StoreResult<Option<Vec<i64>>> {
    let (rows, args) = rows_of(tenant, bound, limit, "v.eid");
    let mut statement = connection.prepare_cached(&rows).map_err(sql)?;
    // Rows read as they are, without `query_map`'s per-row conversion: a
    // driving list is up to thousands of rows.
    let mut rows = statement.query(rusqlite::params_from_iter(args)).map_err(sql)?;
    let mut eids = Vec::new();
    while let Some(row) = rows.next().map_err(sql)? {
        eids.push(row.get_ref(0).and_then(|v| Ok(v.as_i64()?)).map_err(sql)?);
    }
    Ok(driving_list(eids, limit))
}

/// How many index rows meet `bound`, counted up to `limit`: what
/// `eids_meeting` reads, at two thirds of its instructions per row
/// (callgrind: ~650 against ~950), as no row leaves SQLite.
pub(crate) fn rows_meeting(
    connection: &Connection,
    tenant: &Tenant,
    bound: &ValueBound,
    limit: i64,
) -> StoreResult<i64> {
    let (rows, args) = rows_of(tenant, bound, limit, "1");
    let mut statement = connection
        .prepare_cached(&format!("SELECT count(*) FROM ({rows})"))
        .map_err(sql)?;
    statement
        .query_row(rusqlite::params_from_iter(args), |r| r.get(0))
        .map_err(sql)
}

/// `SELECT {column}` of the first `limit` index rows meeting `bound` in
/// `tenant`, and its arguments.
fn rows_of(tenant: &Tenant, bound: &ValueBound, limit: i64, column: &str) -> (String, Vec<SqlValue>) {
    let mut args = vec![SqlValue::Text(tenant.name().to_owned())];
    let (table, filter) = condition(bound, 2, &mut args);
    args.push(SqlValue::Integer(limit));
    let rows = format!("SELECT {column} FROM {table} v WHERE {filter} LIMIT ?{}", args.len());
    (rows, args)
}

/// The eids an index listed (at most `limit` rows read) as a driving list:
/// ascending and distinct, as `read` needs it (an entity is listed once per
/// value meeting a bound, or per box); `None` when the index held `limit`
/// or more, too many to drive.
pub(crate) fn driving_list(mut eids: Vec<i64>, limit: i64) -> Option<Vec<i64>> {
    if eids.len() as i64 >= limit {
        return None;
    }
    eids.sort_unstable();
    eids.dedup();
    Some(eids)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use piazza_ngsild::query::{EntityQuery, Query};
    use piazza_ngsild::ActiveContext;
    use piazza_store::{Page, Store, Tenant};
    use serde_json::json;

    use crate::EmbeddedStore;

    /// Creates the entities of these bodies (core context), in order.
    async fn create(store: &EmbeddedStore, tenant: &Tenant, bodies: impl Iterator<Item = serde_json::Value>) {
        let edits = bodies.map(crate::tests::replace_with).collect();
        store.edit(tenant, edits).await.expect("create");
    }

    /// A data dir from before the value indexes' layout (user_version
    /// below 5, the old tables or none) gets them at open, and `q` then
    /// finds its entities.
    #[tokio::test]
    async fn a_data_dir_from_before_the_value_indexes_is_backfilled_at_open() {
        let dir = tempfile::tempdir().expect("temp dir");
        let tenant = Tenant::parse("backfill").expect("tenant");
        let store = EmbeddedStore::open(dir.path()).expect("open");
        create(
            &store,
            &tenant,
            (0..30).map(|i| {
                json!({"id": format!("urn:b:{i}"), "type": "T",
                    "n": {"type": "Property", "value": i}, "s": {"type": "Property", "value": format!("s{i}")}})
            }),
        )
        .await;
        drop(store);

        let old = rusqlite::Connection::open(dir.path().join("piazza.sqlite")).expect("sqlite");
        old.execute_batch(
            "DELETE FROM value_numbers; DELETE FROM value_texts; DELETE FROM value_names; PRAGMA user_version = 4;
             CREATE TABLE attr_numbers (tenant TEXT, name TEXT, value REAL, eid INTEGER);",
        )
        .expect("age the data dir");
        drop(old);

        let store = EmbeddedStore::open(dir.path()).expect("reopen");
        let page = Page {
            offset: 0,
            limit: 100,
            count: true,
        };
        for (q, expected) in [
            ("n==7", vec!["urn:b:7"]),
            ("s==\"s12\"", vec!["urn:b:12"]),
            ("n>=28", vec!["urn:b:28", "urn:b:29"]),
        ] {
            let query = EntityQuery {
                q: Some(Query::parse(q, &ActiveContext::core()).expect("q")),
                ..Default::default()
            };
            let found = store.query(&tenant, Arc::new(query), page).await.expect("query");
            let ids: Vec<&str> = found.entities.iter().map(|e| e.id.as_str()).collect();
            assert_eq!(ids, expected, "{q}");
        }
        let check = rusqlite::Connection::open(dir.path().join("piazza.sqlite")).expect("sqlite");
        let old_tables: i64 = check
            .query_row(
                "SELECT COUNT(*) FROM sqlite_schema WHERE name IN ('attr_numbers', 'attr_texts')",
                [],
                |r| r.get(0),
            )
            .expect("schema");
        assert_eq!(old_tables, 0, "the old layout's tables are left behind");
        let names: i64 = check
            .query_row("SELECT COUNT(*) FROM value_names", [], |r| r.get(0))
            .expect("names");
        assert_eq!(names, 2, "one number per (tenant, name) pair");
    }

    /// Clearing a tenant takes its value rows and numbered names, and only
    /// its own: the other tenant's same names keep their rows.
    #[tokio::test]
    async fn clearing_a_tenant_takes_its_value_rows_only() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (kept, cleared) = (
            Tenant::parse("kept").expect("tenant"),
            Tenant::parse("cleared").expect("tenant"),
        );
        let store = EmbeddedStore::open(dir.path()).expect("open");
        for tenant in [&kept, &cleared] {
            create(
                &store,
                tenant,
                (0..5).map(|i| {
                    json!({"id": format!("urn:c:{i}"), "type": "T", "n": {"type": "Property", "value": i},
                    "s": {"type": "Property", "value": "x"}})
                }),
            )
            .await;
        }
        store.clear_tenant(&cleared).await.expect("clear");
        let check = rusqlite::Connection::open(dir.path().join("piazza.sqlite")).expect("sqlite");
        let count = |sql: &str| -> i64 { check.query_row(sql, [], |r| r.get(0)).expect(sql) };
        assert_eq!(count("SELECT COUNT(*) FROM value_names WHERE tenant = 'cleared'"), 0);
        assert_eq!(count("SELECT COUNT(*) FROM value_names WHERE tenant = 'kept'"), 2);
        assert_eq!(
            count("SELECT COUNT(*) FROM value_numbers"),
            5,
            "the kept tenant's numbers"
        );
        assert_eq!(
            count("SELECT COUNT(*) FROM value_texts"),
            5,
            "the kept tenant's strings"
        );
        let query = Arc::new(EntityQuery {
            q: Some(Query::parse("n>=3;s==\"x\"", &ActiveContext::core()).expect("q")),
            ..Default::default()
        });
        let all = Page {
            offset: 0,
            limit: 100,
            count: true,
        };
        let found = store.query(&kept, query, all).await.expect("query");
        assert_eq!(found.total, Some(2));
    }

    /// The driving bound's eids come from an index in value order; the
    /// page must still be in entity (creation) order, and the count exact.
    #[tokio::test]
    async fn a_driven_query_pages_in_creation_order() {
        let dir = tempfile::tempdir().expect("temp dir");
        let tenant = Tenant::parse("driven").expect("tenant");
        let store = EmbeddedStore::open(dir.path()).expect("open");
        // Values fall as entities are created; every other one has s "x".
        create(
            &store,
            &tenant,
            (0..60).map(|i| {
                json!({"id": format!("urn:d:{i:02}"), "type": "T",
                    "n": {"type": "Property", "value": 1000 - i},
                    "s": {"type": "Property", "value": if i % 2 == 0 { "x" } else { "y" }}})
            }),
        )
        .await;
        let query = Arc::new(EntityQuery {
            q: Some(Query::parse("n>=960;s==\"x\"", &ActiveContext::core()).expect("q")),
            ..Default::default()
        });
        let expected: Vec<String> = (0..=40).step_by(2).map(|i| format!("urn:d:{i:02}")).collect();
        let all = Page {
            offset: 0,
            limit: 100,
            count: true,
        };
        let found = store.query(&tenant, query.clone(), all).await.expect("query");
        let ids: Vec<&str> = found.entities.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, expected);
        assert_eq!(found.total, Some(expected.len() as u64));
        let window = Page {
            offset: 5,
            limit: 3,
            count: false,
        };
        let found = store.query(&tenant, query, window).await.expect("query");
        let ids: Vec<&str> = found.entities.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, expected[5..8]);
    }

    /// The value rows of entity `id`, as (attribute name, value) text,
    /// sorted; and what the entity as stored should have.
    async fn value_rows(store: &EmbeddedStore, tenant: &Tenant, id: &str) -> (Vec<String>, Vec<String>) {
        let check = rusqlite::Connection::open(store.path()).expect("sqlite");
        let mut rows: Vec<String> = check
            .prepare(
                "SELECT n.name || '=' || v.value FROM entities e \
                 JOIN (SELECT key, value, eid FROM value_numbers UNION ALL SELECT key, value, eid FROM value_texts) v \
                 ON v.eid = e.eid JOIN value_names n ON n.key = v.key WHERE e.tenant = ?1 AND e.id = ?2",
            )
            .and_then(|mut s| s.query_map([tenant.name(), id], |r| r.get(0))?.collect())
            .expect("value rows");
        rows.sort();
        let entity = store.get(tenant, id).await.expect("get").expect("stored");
        let mut expected: Vec<String> = piazza_ngsild::query::q::indexed_values(&entity)
            .into_iter()
            .map(|(name, value)| match value {
                piazza_ngsild::query::q::IndexedValue::Number(n) => format!("{name}={:?}", n),
                piazza_ngsild::query::q::IndexedValue::Text(t) => format!("{name}={t}"),
            })
            .collect();
        expected.sort();
        (rows, expected)
    }

    /// An update rewrites the value rows of the attributes it changed and
    /// leaves the others': after every kind of change (an instance's value,
    /// a value another instance shares, an attribute gone, one added) the
    /// rows are exactly the entity's values, none stale, none missing.
    #[tokio::test]
    async fn updates_leave_exactly_the_entitys_values_indexed() {
        let dir = tempfile::tempdir().expect("temp dir");
        let tenant = Tenant::parse("rows").expect("tenant");
        let store = EmbeddedStore::open(dir.path()).expect("open");
        let a = |values: &[i64]| -> serde_json::Value {
            values
                .iter()
                .enumerate()
                .map(|(i, v)| json!({"type": "Property", "value": v, "datasetId": format!("urn:ds:{i}")}))
                .collect()
        };
        let versions = [
            json!({"id": "urn:r:1", "type": "T", "a": a(&[1, 2]), "b": {"type": "Property", "value": "x"},
                "c": {"type": "Property", "value": 5}}),
            // One instance changes; the other's value (1) stays indexed.
            json!({"id": "urn:r:1", "type": "T", "a": a(&[1, 3]), "b": {"type": "Property", "value": "x"},
                "c": {"type": "Property", "value": 5}}),
            // c goes, b changes.
            json!({"id": "urn:r:1", "type": "T", "a": a(&[1, 3]), "b": {"type": "Property", "value": "y"}}),
            // d arrives; a loses an instance; c comes back with a's value.
            json!({"id": "urn:r:1", "type": "T", "a": a(&[1]), "b": {"type": "Property", "value": "y"},
                "c": {"type": "Property", "value": 1}, "d": {"type": "Property", "value": [7, "z", 7]}}),
            // Both instances of a hold the same value; d unchanged.
            json!({"id": "urn:r:1", "type": "T", "a": a(&[4, 4]), "b": {"type": "Property", "value": "y"},
                "c": {"type": "Property", "value": 1}, "d": {"type": "Property", "value": [7, "z", 7]}}),
        ];
        for (step, body) in versions.into_iter().enumerate() {
            create(&store, &tenant, std::iter::once(body)).await;
            let (rows, expected) = value_rows(&store, &tenant, "urn:r:1").await;
            assert!(!expected.is_empty());
            assert_eq!(rows, expected, "after version {step}");
        }
    }

    /// A row whose entity expired keeps its value rows until the id is
    /// created afresh; they must then give way to the new entity's (a new
    /// row has none to drop, a reused one does), and a deleted entity
    /// leaves none.
    #[tokio::test]
    async fn an_entity_created_over_an_expired_one_or_deleted_leaves_no_stale_value_rows() {
        use piazza_ngsild::entity::{parse_entity, ParseOptions};
        use piazza_ngsild::update::UpdateOutcome;
        use piazza_store::{Edit, EditOutcome, NewState};
        let dir = tempfile::tempdir().expect("temp dir");
        let tenant = Tenant::parse("expiry").expect("tenant");
        let store = EmbeddedStore::open(dir.path()).expect("open");
        let body = json!({"id": "urn:x:1", "type": "T", "n": {"type": "Property", "value": 1},
            "s": {"type": "Property", "value": "old"}});
        let mut expired = parse_entity(&body, &ActiveContext::core(), ParseOptions::CREATE).expect("entity");
        expired.stamp_new(piazza_ngsild::time::now());
        expired.expires_at = Some("2000-01-01T00:00:00Z".into());
        let put = Edit::new("urn:x:1", move |_| {
            Ok(EditOutcome::put(expired, UpdateOutcome::default()))
        });
        store.edit(&tenant, vec![put]).await.expect("edit");
        assert_eq!(all_value_rows(&store), 2, "the expired entity's rows are stored");

        let fresh = json!({"id": "urn:x:1", "type": "T", "n": {"type": "Property", "value": 2}});
        create(&store, &tenant, std::iter::once(fresh)).await;
        let (rows, expected) = value_rows(&store, &tenant, "urn:x:1").await;
        assert_eq!(rows, expected);
        assert_eq!(all_value_rows(&store), 1, "only the new entity's value");

        let delete = Edit::new("urn:x:1", |_| {
            Ok(EditOutcome {
                state: NewState::Delete,
                report: UpdateOutcome::default(),
            })
        });
        store.edit(&tenant, vec![delete]).await.expect("delete");
        assert_eq!(all_value_rows(&store), 0, "a deleted entity leaves no value rows");
    }

    /// Every value row of the store, of any tenant.
    fn all_value_rows(store: &EmbeddedStore) -> i64 {
        let check = rusqlite::Connection::open(store.path()).expect("sqlite");
        check
            .query_row(
                "SELECT (SELECT count(*) FROM value_numbers) + (SELECT count(*) FROM value_texts)",
                [],
                |r| r.get(0),
            )
            .expect("count")
    }
}
