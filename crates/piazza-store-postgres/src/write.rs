//! Write paths: entity edits (one transaction per call), contexts and
//! resources.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use deadpool_postgres::{GenericClient, Transaction};
use piazza_ngsild::query::geo::ValueShape;
use piazza_ngsild::query::GeoQuery;
use piazza_ngsild::{time, AttributeKind, Entity, NgsiError};
use piazza_store::{Applied, Edit, NewState, OutboxEntry, ResourceKind, StoredContext, Tenant};
use serde_json::Value;
use tokio_postgres::types::{Json, ToSql};

use crate::cluster::{self, Changed};
use crate::rows::{self, IndexRows};
use crate::values::{self, ValueRows};
use crate::{outbox, temporal, Error, Result};

/// The advisory lock key of one entity (also taken by temporal edits).
///
/// FNV-1a, not the standard library's hasher: every process of a cluster,
/// whatever piazza version it runs, must compute the same key.
pub(crate) fn lock_key(tenant: &Tenant, id: &str) -> i64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0100_0000_01b3;
    let bytes = tenant.name().bytes().chain([0u8]).chain(id.bytes());
    let hash = bytes.fold(OFFSET, |hash, byte| (hash ^ u64::from(byte)).wrapping_mul(PRIME));
    i64::from_ne_bytes(hash.to_ne_bytes())
}

/// Up to this many entities, a write locks each one; a larger batch locks
/// whole buckets instead. PostgreSQL keeps advisory locks in a shared table
/// of about `max_locks_per_transaction` (64 by default) × connections
/// slots: sixteen concurrent batches of 1000 per-entity locks overflowed it
/// ("out of shared memory").
const MAX_ENTITY_LOCKS: usize = 32;

/// Buckets the entities of all tenants are hashed into.
const BUCKETS: i64 = 16;

/// The first key of the two-key advisory locks on buckets: a space apart
/// from the one-key entity locks and from `migrate`'s.
const BUCKET_CLASS: i32 = 0x5049_4142; // "PIAB"

/// The advisory locks a write takes: every bucket its entities fall in
/// (shared when it also locks the entities one by one, exclusive when it
/// locks the buckets whole), then each entity's key.
///
/// A small write and a batch on the same bucket exclude each other
/// (shared against exclusive); two small writes meet only on an entity
/// they share. Every write takes buckets before entities, each set in
/// ascending order, so two writes never deadlock.
#[derive(Debug, PartialEq)]
pub(crate) struct EntityLocks {
    buckets: Vec<i32>,
    /// Empty when the buckets are locked whole.
    keys: Vec<i64>,
}

/// The locks of a write of `ids`.
pub(crate) fn entity_locks<'a>(tenant: &Tenant, ids: impl IntoIterator<Item = &'a str>) -> EntityLocks {
    locks_of_keys(ids.into_iter().map(|id| lock_key(tenant, id)))
}

/// The locks of a write of the entities of `keys` (from [`lock_key`]),
/// whatever their tenants.
pub(crate) fn locks_of_keys(keys: impl IntoIterator<Item = i64>) -> EntityLocks {
    let keys: BTreeSet<i64> = keys.into_iter().collect();
    let buckets: BTreeSet<i32> = keys.iter().map(|key| bucket(*key)).collect();
    EntityLocks {
        buckets: buckets.into_iter().collect(),
        keys: if keys.len() <= MAX_ENTITY_LOCKS {
            keys.into_iter().collect()
        } else {
            Vec::new()
        },
    }
}

fn bucket(key: i64) -> i32 {
    // rem_euclid of a positive divisor is in 0..BUCKETS.
    i32::try_from(key.rem_euclid(BUCKETS)).unwrap_or(0)
}

/// Takes `locks` (see [`EntityLocks`]) until the transaction ends.
pub(crate) async fn lock_entities(transaction: &Transaction<'_>, locks: &EntityLocks) -> Result<()> {
    let bucket_lock = if locks.keys.is_empty() {
        "SELECT pg_advisory_xact_lock($2::int4, b) FROM unnest($1::int4[]) AS u(b) ORDER BY b"
    } else {
        "SELECT pg_advisory_xact_lock_shared($2::int4, b) FROM unnest($1::int4[]) AS u(b) ORDER BY b"
    };
    let statement = transaction.prepare_cached(bucket_lock).await?;
    transaction
        .execute(&statement, &[&locks.buckets, &BUCKET_CLASS])
        .await?;
    if !locks.keys.is_empty() {
        let statement = transaction
            .prepare_cached("SELECT pg_advisory_xact_lock(k) FROM unnest($1::int8[]) AS u(k) ORDER BY k")
            .await?;
        transaction.execute(&statement, &[&locks.keys]).await?;
    }
    Ok(())
}

/// Applies `edits` in one transaction, each seeing the effects of those
/// before it.
///
/// Statements are what a batch costs on a server: the rows of every id
/// are locked and read, and keys for new entities reserved, in statements
/// sent together up front; the edits apply in memory; their documents,
/// index rows, history, temporal rows and notices go at the end, in one
/// statement per table.
pub(crate) async fn apply(
    client: &mut deadpool_postgres::Object,
    tenant: &Tenant,
    edits: Vec<Edit>,
    postgis: bool,
) -> Result<Vec<std::result::Result<Applied, NgsiError>>> {
    let locks = entity_locks(tenant, edits.iter().map(|e| e.entity_id.as_str()));
    let ids: Vec<&str> = edits
        .iter()
        .map(|e| e.entity_id.as_str())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let transaction = client.transaction().await?;
    lock_entities(&transaction, &locks).await?;
    // Keys for as many new entities as there are ids, reserved with the
    // reads (no round trip of their own); more are reserved if the edits
    // create more (an entity deleted and created again).
    let (entities, temporal, fresh_eids, ()) = tokio::try_join!(
        load_entities(&transaction, tenant, &ids),
        temporal::load_types(&transaction, tenant, &ids),
        reserve_eids(&transaction, ids.len()),
        generic_plans(&transaction)
    )?;
    let mut writer = Writer {
        transaction: &transaction,
        tenant,
        tenant_recorded: false,
        entities,
        staged: BTreeMap::new(),
        temporal,
        postgis,
        history: temporal::Instances::default(),
        temporal_rows: temporal::EntityRows::default(),
        notices: Vec::new(),
        fresh_eids,
        edits_left: edits.len(),
    };
    let mut results = Vec::with_capacity(edits.len());
    for edit in edits {
        results.push(writer.apply_one(edit).await?);
        writer.edits_left -= 1;
    }
    tokio::try_join!(
        writer.write_staged(),
        writer.history.insert(&transaction, tenant),
        writer.temporal_rows.write(&transaction, tenant),
        outbox::enqueue(&transaction, tenant, &writer.notices)
    )?;
    transaction.commit().await?;
    Ok(results)
}

/// Has the transaction's statements run on their cached generic plans. A
/// write's statements take its rows as arrays (`unnest($2::int8[], …)`),
/// whose length a generic plan does not know, so PostgreSQL kept planning
/// each execution afresh for the array at hand: 0.10–0.16 ms of every
/// such statement (the server's log of a single-attribute PATCH), where
/// the generic plan (index lookups per row) is the one wanted at any
/// length. (`plan_cache_mode`: PostgreSQL 12; 13 is the oldest supported.)
async fn generic_plans(transaction: &Transaction<'_>) -> Result<()> {
    Ok(transaction
        .batch_execute("SET LOCAL plan_cache_mode = force_generic_plan")
        .await?)
}

/// Reserves `count` row keys from the entities' identity sequence, in
/// descending order (the next one last). A new entity's row is inserted
/// under a reserved key, so that its index rows go out with it: waiting for
/// each row's generated key before its index rows was a round trip per
/// entity (BENCHMARKS.md, "PostgreSQL: fewer round trips per entity").
/// Keys reserved and not used are gaps, as a rolled-back insert leaves.
async fn reserve_eids(transaction: &Transaction<'_>, count: usize) -> Result<Vec<i64>> {
    let count = i64::try_from(count).unwrap_or(i64::MAX);
    let statement = transaction
        .prepare_cached(
            "SELECT nextval(pg_get_serial_sequence('entities', 'eid')) FROM generate_series(1, $1::bigint) ORDER BY 1 DESC",
        )
        .await?;
    let rows = transaction.query(&statement, &[&count]).await?;
    rows.iter().map(|row| Ok(row.try_get(0)?)).collect()
}

/// An entity row as stored (the document as written, expired or not).
struct Stored {
    eid: i64,
    entity: Entity,
}

/// Reads and locks (until the commit) the rows of `ids`.
async fn load_entities(
    transaction: &Transaction<'_>,
    tenant: &Tenant,
    ids: &[&str],
) -> Result<HashMap<String, Stored>> {
    let statement = transaction
        .prepare_cached("SELECT id, eid, doc FROM entities WHERE tenant = $1 AND id = ANY($2) FOR UPDATE")
        .await?;
    let mut rows = HashMap::new();
    for row in transaction.query(&statement, &[&tenant.name(), &ids]).await? {
        let stored = Stored {
            eid: row.try_get(1)?,
            entity: decode_entity(&row, 2)?,
        };
        rows.insert(row.try_get(0)?, stored);
    }
    Ok(rows)
}

/// The index rows of an entity: its types, its attributes with kinds, the
/// boxes (and shapes, with PostGIS) of its GeoProperty values, and the
/// values `q` can compare (`values.rs`).
#[derive(Default, PartialEq)]
pub(crate) struct IndexKeys {
    pub(crate) types: BTreeSet<String>,
    pub(crate) attrs: BTreeSet<(String, String)>,
    pub(crate) geo: Vec<GeoRow>,
    pub(crate) values: ValueRows,
}

impl IndexKeys {
    pub(crate) fn of(entity: &Entity, postgis: bool) -> Self {
        let attrs = entity
            .attributes
            .iter()
            .flat_map(|(name, instances)| instances.iter().map(move |i| (name.clone(), i.kind.name().to_owned())))
            .collect();
        Self {
            types: entity.types.iter().cloned().collect(),
            attrs,
            geo: geo_rows(entity, postgis),
            values: values::rows_of(entity),
        }
    }
}

/// One row of `entity_geo`: a GeoProperty value's box and, in PostGIS mode,
/// its shapes (`postgis.rs`).
#[derive(Debug, PartialEq)]
pub(crate) struct GeoRow {
    attr: String,
    bounds: [f64; 4],
    shape: Option<ValueShape>,
}

/// The `entity_geo` rows of an entity: one per GeoProperty value the
/// matching can read (a value without a box never matches a geo-query
/// the index narrows).
pub(crate) fn geo_rows(entity: &Entity, postgis: bool) -> Vec<GeoRow> {
    entity
        .attributes
        .iter()
        .flat_map(|(name, instances)| {
            instances
                .iter()
                .filter(|i| i.kind == AttributeKind::GeoProperty)
                .filter_map(move |i| {
                    Some(GeoRow {
                        attr: name.clone(),
                        bounds: GeoQuery::value_bounds(&i.value)?,
                        shape: if postgis { GeoQuery::value_shape(&i.value) } else { None },
                    })
                })
        })
        .collect()
}

/// Writes `entity_geo` rows, each with its entity's `eid` (whose old rows
/// are gone). In PostGIS mode with their shapes, marked `shaped` even when
/// a shape is NULL (a value the index cannot stand for), so the backfill
/// skips them.
pub(crate) async fn insert_geo(
    client: &impl GenericClient,
    tenant: &str,
    rows: &[(i64, &GeoRow)],
    postgis: bool,
) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let eids: Vec<i64> = rows.iter().map(|(eid, _)| *eid).collect();
    let names: Vec<&str> = rows.iter().map(|(_, row)| row.attr.as_str()).collect();
    let corner = |i: usize| rows.iter().map(|(_, row)| row.bounds[i]).collect::<Vec<f64>>();
    let (x0, y0, x1, y1) = (corner(0), corner(1), corner(2), corner(3));
    if !postgis {
        execute(
            client,
            "INSERT INTO entity_geo(tenant, eid, attr, bbox) SELECT $1, e, n, box(point(x0, y0), point(x1, y1)) \
             FROM unnest($2::int8[], $3::text[], $4::float8[], $5::float8[], $6::float8[], $7::float8[]) \
             AS u(e, n, x0, y0, x1, y1)",
            &[&tenant, &eids, &names, &x0, &y0, &x1, &y1],
        )
        .await?;
        return Ok(());
    }
    let shape = |pick: fn(&ValueShape) -> &Option<Vec<u8>>| {
        rows.iter()
            .map(|(_, row)| row.shape.as_ref().and_then(|s| pick(s).as_deref()))
            .collect::<Vec<Option<&[u8]>>>()
    };
    let (planar, sphere) = (shape(|s| &s.planar), shape(|s| &s.sphere));
    execute(
        client,
        "INSERT INTO entity_geo(tenant, eid, attr, bbox, shape, sphere, shaped) \
         SELECT $1, e, n, box(point(x0, y0), point(x1, y1)), ST_GeomFromWKB(w, 4326), ST_GeogFromWKB(s), true \
         FROM unnest($2::int8[], $3::text[], $4::float8[], $5::float8[], $6::float8[], $7::float8[], \
         $8::bytea[], $9::bytea[]) AS u(e, n, x0, y0, x1, y1, w, s)",
        &[&tenant, &eids, &names, &x0, &y0, &x1, &y1, &planar, &sphere],
    )
    .await?;
    Ok(())
}

struct Writer<'t> {
    transaction: &'t Transaction<'t>,
    tenant: &'t Tenant,
    /// Whether this transaction already made sure the tenant is listed.
    tenant_recorded: bool,
    /// The locked entity rows, kept current as the edits apply.
    entities: HashMap<String, Stored>,
    /// The entity rows the edits changed, by key, with their ids and their
    /// documents as stored before the call (`None`: created by it); written
    /// before the commit, from `entities`.
    staged: BTreeMap<i64, (String, Option<Entity>)>,
    /// The types of each locked temporal entity row, kept current too.
    temporal: HashMap<String, Vec<String>>,
    /// Whether `entity_geo` rows carry PostGIS shapes.
    postgis: bool,
    /// The history of the edits so far, inserted in one statement before
    /// the commit, and their temporal entity rows.
    history: temporal::Instances,
    temporal_rows: temporal::EntityRows,
    /// The notices the edits owe, enqueued before the commit.
    notices: Vec<OutboxEntry>,
    /// Row keys reserved for the entities the edits create, in descending
    /// order (the next one last).
    fresh_eids: Vec<i64>,
    /// The edits not yet applied: how many keys to reserve at once.
    edits_left: usize,
}

impl<'t> Writer<'t> {
    async fn apply_one(&mut self, edit: Edit) -> Result<std::result::Result<Applied, NgsiError>> {
        // An expired entity is absent, and its id may be created afresh
        // (over the same row).
        let stored = self.entities.remove(&edit.entity_id);
        let before = stored.as_ref().and_then(|s| s.entity.clone().live(time::now()));
        let outcome = match (edit.apply)(before.as_ref()) {
            Ok(outcome) => outcome,
            Err(refusal) => {
                // A refused edit wrote nothing: nothing to undo.
                self.keep(edit.entity_id, stored);
                return Ok(Err(refusal));
            }
        };
        // The notices the change owes go into the outbox in its transaction.
        let observe = edit.observe;
        let owed = |after: Option<&Entity>| observe.map(|o| o(before.as_ref(), after)).unwrap_or_default();
        let after = match outcome.state {
            NewState::Keep => {
                self.keep(edit.entity_id, stored);
                before.clone()
            }
            NewState::Put(entity) => {
                self.notices.extend(owed(Some(&entity)));
                let eid = self.put(stored, before.as_ref(), &entity).await?;
                let kept = Stored {
                    eid,
                    entity: entity.clone(),
                };
                self.entities.insert(edit.entity_id, kept);
                Some(entity)
            }
            NewState::Delete => {
                if let Some(stored) = stored {
                    self.notices.extend(owed(None));
                    self.stage(stored.eid, &edit.entity_id, Some(stored.entity));
                    self.record_history((before.as_ref(), None));
                }
                None
            }
        };
        Ok(Ok(Applied {
            before,
            after,
            report: outcome.report,
        }))
    }

    fn keep(&mut self, id: String, stored: Option<Stored>) {
        if let Some(stored) = stored {
            self.entities.insert(id, stored);
        }
    }

    /// Notes that the row `eid` of entity `id` changes; `stored`: its
    /// document as read, which is as stored before the call the first time.
    fn stage(&mut self, eid: i64, id: &str, stored: Option<Entity>) {
        self.staged.entry(eid).or_insert_with(|| (id.to_owned(), stored));
    }

    /// Stages the document (see [`Writer::write_staged`]) and its history;
    /// returns the row's key.
    async fn put(&mut self, stored: Option<Stored>, before: Option<&Entity>, entity: &Entity) -> Result<i64> {
        let known = self.temporal.get(&entity.id).cloned();
        if stored.is_none() || known.is_none() {
            self.record_tenant().await?;
        }
        let eid = match stored {
            Some(stored) => {
                let eid = stored.eid;
                self.stage(eid, &entity.id, Some(stored.entity));
                eid
            }
            None => {
                let eid = self.fresh_eid().await?;
                self.stage(eid, &entity.id, None);
                eid
            }
        };
        self.record_history((before, Some(entity)));
        let types = temporal::merged_types(known.as_deref(), &entity.types);
        self.temporal.insert(entity.id.clone(), types);
        Ok(eid)
    }

    /// Records an edit's change as history: its instances and its
    /// temporal entity row join the call's, written before the commit.
    fn record_history(&mut self, change: (Option<&Entity>, Option<&Entity>)) {
        let Some(id) = change.1.or(change.0).map(|e| e.id.as_str()) else {
            return;
        };
        let now = temporal::record_instances(change, &mut self.history);
        let known = self.temporal.get(id).map(Vec::as_slice);
        self.temporal_rows.record(change, now, known);
    }

    /// The row key of the next entity created (see [`reserve_eids`]).
    async fn fresh_eid(&mut self) -> Result<i64> {
        if self.fresh_eids.is_empty() {
            self.fresh_eids = reserve_eids(self.transaction, self.edits_left.max(1)).await?;
        }
        self.fresh_eids
            .pop()
            .ok_or_else(|| Error::Corrupt("the entity key sequence returned no key".into()))
    }

    /// Writes the staged rows as they now are, one statement per table:
    /// the rows of deleted entities and the index rows that went, then the
    /// documents and the new index rows.
    async fn write_staged(&self) -> Result<()> {
        let tenant = self.tenant.name();
        let net = self.net_change();
        let (gone, added, reshaped) = index_changes(tenant, &net.keys);
        let removals = async {
            tokio::try_join!(
                rows::forget(self.transaction, tenant, &net.removed),
                gone.delete(self.transaction),
                rows::forget_geo(self.transaction, tenant, &reshaped),
            )
        };
        let writes = async {
            tokio::try_join!(
                net.write_documents(self.transaction, tenant),
                added.insert(self.transaction, self.postgis)
            )
        };
        // Pipelined statements may run out of order (one waiting for its
        // statement to be prepared): removals go first, a round trip ahead,
        // only where a write depends on one, a new row under a deleted
        // entity's id or the new boxes of an entity whose boxes go.
        let recreated = net.created_ids.iter().any(|id| net.removed_ids.contains(id));
        if recreated || !reshaped.is_empty() {
            removals.await?;
            writes.await?;
        } else {
            tokio::try_join!(removals, writes)?;
        }
        Ok(())
    }

    /// The staged rows, each from its document before the call to its
    /// document now.
    fn net_change(&self) -> NetChange<'_> {
        let mut net = NetChange::default();
        for (&eid, (id, stored)) in &self.staged {
            let now = self.entities.get(id).filter(|s| s.eid == eid).map(|s| &s.entity);
            match (stored, now) {
                (Some(_), None) => {
                    net.removed.push(eid);
                    net.removed_ids.insert(id.as_str());
                }
                (Some(stored), Some(now)) => {
                    net.updated.push(eid);
                    net.updated_docs.push(Json(now));
                    let keys = (IndexKeys::of(stored, self.postgis), IndexKeys::of(now, self.postgis));
                    net.keys.push((eid, Some(keys.0), keys.1));
                }
                (None, Some(now)) => {
                    net.created.push(eid);
                    net.created_ids.push(id.as_str());
                    net.created_docs.push(Json(now));
                    net.keys.push((eid, None, IndexKeys::of(now, self.postgis)));
                }
                (None, None) => {}
            }
        }
        net
    }

    async fn record_tenant(&mut self) -> Result<()> {
        if !self.tenant_recorded {
            record_tenant(self.transaction, self.tenant).await?;
            self.tenant_recorded = true;
        }
        Ok(())
    }
}

/// What a call changes of the entity rows it staged.
#[derive(Default)]
struct NetChange<'w> {
    /// Rows of entities deleted (and not created again under that key).
    removed: Vec<i64>,
    removed_ids: BTreeSet<&'w str>,
    updated: Vec<i64>,
    updated_docs: Vec<Json<&'w Entity>>,
    created: Vec<i64>,
    created_ids: Vec<&'w str>,
    created_docs: Vec<Json<&'w Entity>>,
    /// The index keys of each updated or created row: before (`None` for
    /// a new row) and now.
    keys: Vec<(i64, Option<IndexKeys>, IndexKeys)>,
}

impl NetChange<'_> {
    /// Updates and inserts the documents (the removed rows go with
    /// [`rows::forget`]).
    async fn write_documents(&self, client: &impl GenericClient, tenant: &str) -> Result<()> {
        let updated: [&(dyn ToSql + Sync); 3] = [&tenant, &self.updated, &self.updated_docs];
        let created: [&(dyn ToSql + Sync); 4] = [&tenant, &self.created, &self.created_ids, &self.created_docs];
        let update = execute_rows(
            client,
            self.updated.len(),
            "UPDATE entities e SET doc = u.d FROM unnest($2::int8[], $3::json[]) AS u(k, d) \
             WHERE e.tenant = $1 AND e.eid = u.k",
            &updated,
        );
        let insert = execute_rows(
            client,
            self.created.len(),
            "INSERT INTO entities(tenant, eid, id, doc) OVERRIDING SYSTEM VALUE \
             SELECT $1, k, i, d FROM unnest($2::int8[], $3::text[], $4::json[]) AS u(k, i, d)",
            &created,
        );
        tokio::try_join!(update, insert)?;
        Ok(())
    }
}

/// The index rows that go and come with `keys` (before → now), and the
/// rows whose boxes are replaced whole. Most updates change values, not
/// the set of attributes, and then touch only the value rows of the values
/// that changed.
fn index_changes<'k>(
    tenant: &'k str,
    keys: &'k [(i64, Option<IndexKeys>, IndexKeys)],
) -> (IndexRows<'k>, IndexRows<'k>, Vec<i64>) {
    let (mut gone, mut added, mut reshaped) = (IndexRows::new(tenant), IndexRows::new(tenant), Vec::new());
    for (eid, old, new) in keys {
        let eid = *eid;
        let Some(old) = old else {
            added.push_all(eid, new);
            continue;
        };
        gone.push_types(eid, old.types.difference(&new.types));
        added.push_types(eid, new.types.difference(&old.types));
        gone.push_attrs(eid, old.attrs.difference(&new.attrs));
        added.push_attrs(eid, new.attrs.difference(&old.attrs));
        gone.push_values(eid, old.values.difference(&new.values));
        added.push_values(eid, new.values.difference(&old.values));
        if old.geo != new.geo {
            reshaped.push(eid);
            added.push_geo(eid, &new.geo);
        }
    }
    (gone, added, reshaped)
}

/// Lists the tenant (for `tenant_exists`) once anything is written in it.
pub(crate) async fn record_tenant(client: &impl GenericClient, tenant: &Tenant) -> Result<()> {
    execute(
        client,
        "INSERT INTO tenants(name) VALUES ($1) ON CONFLICT DO NOTHING",
        &[&tenant.name()],
    )
    .await?;
    Ok(())
}

/// Runs a statement over `rows` rows passed as arrays, unless there are
/// none.
pub(crate) async fn execute_rows(
    client: &impl GenericClient,
    rows: usize,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<()> {
    if rows > 0 {
        execute(client, sql, params).await?;
    }
    Ok(())
}

/// Runs a statement through the connection's statement cache.
pub(crate) async fn execute(client: &impl GenericClient, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64> {
    let statement = client.prepare_cached(sql).await?;
    Ok(client.execute(&statement, params).await?)
}

/// The entity document in column `index` of `row`.
pub(crate) fn decode_entity(row: &tokio_postgres::Row, index: usize) -> Result<Entity> {
    row.try_get::<_, Json<Entity>>(index)
        .map(|Json(entity)| entity)
        .map_err(|e| Error::Corrupt(format!("entity document: {e}")))
}

pub(crate) async fn put_context(client: &impl GenericClient, tenant: &Tenant, context: &StoredContext) -> Result<()> {
    execute(
        client,
        "INSERT INTO contexts(tenant, id, url, kind, document, created_at) VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (tenant, id) DO UPDATE SET url = EXCLUDED.url, kind = EXCLUDED.kind, \
         document = EXCLUDED.document, created_at = EXCLUDED.created_at",
        &[
            &tenant.name(),
            &context.id,
            &context.url,
            &context.kind.name(),
            &Json(&context.document),
            &context.created_at,
        ],
    )
    .await?;
    cluster::announce(client, tenant, Changed::Contexts).await
}

pub(crate) async fn delete_context(client: &impl GenericClient, tenant: &Tenant, id: &str) -> Result<bool> {
    let deleted = execute(
        client,
        "DELETE FROM contexts WHERE tenant = $1 AND id = $2",
        &[&tenant.name(), &id],
    )
    .await?;
    if deleted > 0 {
        cluster::announce(client, tenant, Changed::Contexts).await?;
    }
    Ok(deleted > 0)
}

/// Creates (unless the id is taken) or replaces (if it exists) a resource.
pub(crate) async fn put_resource(
    client: &mut deadpool_postgres::Object,
    tenant: &Tenant,
    kind: ResourceKind,
    id: &str,
    document: &Value,
    create: bool,
) -> Result<bool> {
    let transaction = client.transaction().await?;
    let params: [&(dyn ToSql + Sync); 4] = [&tenant.name(), &kind.name(), &id, &Json(document)];
    let changed = if create {
        execute(
            &transaction,
            "INSERT INTO resources(tenant, kind, id, document) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
            &params,
        )
        .await?
    } else {
        execute(
            &transaction,
            "UPDATE resources SET document = $4 WHERE tenant = $1 AND kind = $2 AND id = $3",
            &params,
        )
        .await?
    };
    if changed > 0 {
        record_tenant(&transaction, tenant).await?;
        announce_resource(&transaction, tenant, kind).await?;
    }
    transaction.commit().await?;
    Ok(changed > 0)
}

/// Deletes a resource; a subscription takes its pending notices and
/// delivery statistics with it, in the same transaction.
pub(crate) async fn delete_resource(
    client: &mut deadpool_postgres::Object,
    tenant: &Tenant,
    kind: ResourceKind,
    id: &str,
) -> Result<bool> {
    let transaction = client.transaction().await?;
    let deleted = execute(
        &transaction,
        "DELETE FROM resources WHERE tenant = $1 AND kind = $2 AND id = $3",
        &[&tenant.name(), &kind.name(), &id],
    )
    .await?;
    if kind == ResourceKind::Subscription {
        outbox::forget(&transaction, tenant, id).await?;
    }
    if deleted > 0 {
        announce_resource(&transaction, tenant, kind).await?;
    }
    transaction.commit().await?;
    Ok(deleted > 0)
}

/// Tells the other processes that a resource they may hold compiled changed.
pub(crate) async fn announce_resource(client: &impl GenericClient, tenant: &Tenant, kind: ResourceKind) -> Result<()> {
    match kind {
        ResourceKind::Subscription => cluster::announce(client, tenant, Changed::Subscriptions).await,
    }
}

#[cfg(test)]
mod lock_tests {
    use piazza_store::Tenant;

    use super::{entity_locks, BUCKETS, MAX_ENTITY_LOCKS};

    #[test]
    fn small_writes_lock_entities_and_large_ones_lock_buckets() {
        let tenant = Tenant::default();
        let small: Vec<String> = (0..MAX_ENTITY_LOCKS).map(|i| format!("urn:s:{i}")).collect();
        let locks = entity_locks(&tenant, small.iter().map(String::as_str));
        assert_eq!(locks.keys.len(), MAX_ENTITY_LOCKS);
        assert!(locks.keys.windows(2).all(|w| w[0] < w[1]), "keys ascending");
        assert!(locks.buckets.windows(2).all(|w| w[0] < w[1]), "buckets ascending");

        let large: Vec<String> = (0..1000).map(|i| format!("urn:l:{i}")).collect();
        let locks = entity_locks(&tenant, large.iter().map(String::as_str));
        assert!(locks.keys.is_empty(), "a batch of 1000 takes no per-entity lock");
        assert_eq!(locks.buckets.len() as i64, BUCKETS, "1000 ids fall in every bucket");
        assert!(locks.buckets.iter().all(|b| (0..BUCKETS as i32).contains(b)));
    }
}
