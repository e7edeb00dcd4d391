//! History on PostgreSQL: the semantics of the embedded store's
//! `temporal.rs`, statement for statement. Attribute instances are recorded
//! with every entity change in the change's transaction; temporal API edits
//! take the entity's advisory lock, so they never race an entity edit on the
//! same temporal row; reads run in one read-only snapshot.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use deadpool_postgres::{GenericClient, Transaction};
use futures_util::future::try_join_all;
use indexmap::IndexMap;
use piazza_ngsild::query::EntityQuery;
use piazza_ngsild::temporal::{self, Instance, TemporalEntity, TemporalQuery, TimeProperty, TimeRel, INSTANCE_PREFIX};
use piazza_ngsild::time::{self, Timestamp};
use piazza_ngsild::{Attribute, Entity, NgsiError};
use piazza_store::{
    range_implies_attrs, requested_attrs, Page, PageStep, Pager, TemporalEdit, TemporalQueryResult, Tenant,
};
use tokio_postgres::types::{Json, ToSql};
use tokio_postgres::{IsolationLevel, Row};

use crate::aggregate;
use crate::write::{entity_locks, execute, lock_entities, record_tenant};
use crate::{Error, Result};

/// A fresh instance id: a time-ordered (v7) UUID, so that new ids append
/// to `attr_instances_by_id` instead of landing on random index pages.
fn new_instance_id() -> String {
    format!("{INSTANCE_PREFIX}{}", uuid::Uuid::now_v7())
}

/// The `observedAt` of an attribute as a time, when it is one.
fn observed(attribute: &Attribute) -> Option<Timestamp> {
    attribute.observed_at.as_deref().and_then(time::parse)
}

/// Attribute instances to insert in one statement: an entity write
/// gathers those of all its edits, so that a batch of 1,000 entities sends
/// one INSERT (and fires the rollup trigger once) instead of 1,000, which
/// took half of PostgreSQL's time in a batch upsert (BENCHMARKS.md,
/// "PostgreSQL: fewer round trips per entity").
#[derive(Default)]
pub(crate) struct Instances {
    entity_ids: Vec<String>,
    attrs: Vec<String>,
    instance_ids: Vec<String>,
    dataset_ids: Vec<Option<String>>,
    observed: Vec<Option<Timestamp>>,
    at: Vec<Timestamp>,
    deleted: Vec<Option<Timestamp>>,
    docs: Vec<Json<Attribute>>,
}

impl Instances {
    /// Adds one instance of `entity_id`'s `attr` as of `at`.
    fn push(
        &mut self,
        entity_id: &str,
        attr: &str,
        attribute: &Attribute,
        at: Timestamp,
        deleted_at: Option<Timestamp>,
    ) {
        let mut attribute = attribute.clone();
        attribute.created_at = Some(at);
        attribute.modified_at = Some(at);
        self.entity_ids.push(entity_id.to_owned());
        self.attrs.push(attr.to_owned());
        self.instance_ids.push(new_instance_id());
        self.dataset_ids.push(attribute.dataset_id.clone());
        self.observed.push(observed(&attribute));
        self.at.push(at);
        self.deleted.push(deleted_at);
        self.docs.push(Json(attribute));
    }

    /// Inserts them, in order (instance order breaks ties between equal times).
    pub(crate) async fn insert(&self, client: &impl GenericClient, tenant: &Tenant) -> Result<()> {
        if self.attrs.is_empty() {
            return Ok(());
        }
        execute(
            client,
            "INSERT INTO attr_instances(tenant, entity_id, attr, instance_id, dataset_id, observed_at, created_at, \
             modified_at, deleted_at, doc) \
             SELECT $1, e, a, i, d, o, t, t, x, j FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], \
             $6::timestamptz[], $7::timestamptz[], $8::timestamptz[], $9::json[]) WITH ORDINALITY AS u(e, a, i, d, o, t, x, j, n) \
             ORDER BY n",
            &[
                &tenant.name(),
                &self.entity_ids,
                &self.attrs,
                &self.instance_ids,
                &self.dataset_ids,
                &self.observed,
                &self.at,
                &self.deleted,
                &self.docs,
            ],
        )
        .await?;
        Ok(())
    }
}

/// The types of the temporal entity rows of `ids`, read and locked until
/// the commit.
pub(crate) async fn load_types(
    transaction: &Transaction<'_>,
    tenant: &Tenant,
    ids: &[&str],
) -> Result<HashMap<String, Vec<String>>> {
    let statement = transaction
        .prepare_cached("SELECT id, types FROM temporal_entities WHERE tenant = $1 AND id = ANY($2) FOR UPDATE")
        .await?;
    let mut types = HashMap::new();
    for row in transaction.query(&statement, &[&tenant.name(), &ids]).await? {
        types.insert(row.try_get(0)?, row.try_get(1)?);
    }
    Ok(types)
}

/// The types a temporal entity keeps: those it had, then the new ones.
pub(crate) fn merged_types(known: Option<&[String]>, types: &[String]) -> Vec<String> {
    let Some(known) = known else {
        return types.to_vec();
    };
    let mut all = known.to_vec();
    for t in types {
        if !all.contains(t) {
            all.push(t.clone());
        }
    }
    all
}

/// Creates the temporal entity row (`known` is `None`: there is none) or
/// refreshes it; returns whether it was created. The caller holds the
/// entity's advisory lock and has listed the tenant.
async fn write_entity_row(
    client: &impl GenericClient,
    tenant: &Tenant,
    id: &str,
    (types, scope): (&[String], &[String]),
    now: Timestamp,
    known: Option<&[String]>,
) -> Result<bool> {
    if known.is_none() {
        execute(
            client,
            "INSERT INTO temporal_entities(tenant, id, types, scope, created_at, modified_at) \
             VALUES ($1, $2, $3, $4, $5, $5)",
            &[&tenant.name(), &id, &types, &scope, &now],
        )
        .await?;
        return Ok(true);
    }
    execute(
        client,
        "UPDATE temporal_entities SET types = $3, scope = CASE WHEN cardinality($4::text[]) = 0 THEN scope ELSE $4 END, \
         modified_at = $5, deleted_at = NULL WHERE tenant = $1 AND id = $2",
        &[&tenant.name(), &id, &merged_types(known, types), &scope, &now],
    )
    .await?;
    Ok(false)
}

/// Creates or refreshes the temporal entity row (temporal API edits, which
/// have not read it yet); returns whether it was created.
async fn upsert_entity(
    client: &impl GenericClient,
    tenant: &Tenant,
    id: &str,
    types: &[String],
    scope: &[String],
    now: Timestamp,
) -> Result<bool> {
    let statement = client
        .prepare_cached("SELECT types FROM temporal_entities WHERE tenant = $1 AND id = $2 FOR UPDATE")
        .await?;
    let known: Option<Vec<String>> = match client.query_opt(&statement, &[&tenant.name(), &id]).await? {
        Some(row) => Some(row.try_get(0)?),
        None => None,
    };
    record_tenant(client, tenant).await?;
    write_entity_row(client, tenant, id, (types, scope), now, known.as_deref()).await
}

/// Gathers what an entity edit changed into `instances` (inserted by the
/// caller before its commit): every instance that is new or differs from
/// before, and a deletion record for every instance that disappeared.
/// Returns the time of the change, for [`record_entity`].
pub(crate) fn record_instances(
    (before, after): (Option<&Entity>, Option<&Entity>),
    instances: &mut Instances,
) -> Timestamp {
    let now = after.and_then(|a| a.modified_at).unwrap_or_else(time::now);
    let Some(id) = after.or(before).map(|e| e.id.as_str()) else {
        return now;
    };
    if let Some(after) = after {
        for (name, current) in &after.attributes {
            for instance in current {
                let previous = before.and_then(|b| b.instance(name, instance.dataset_id.as_deref()));
                if previous != Some(instance) {
                    instances.push(id, name, instance, instance.modified_at.unwrap_or(now), None);
                }
            }
        }
    }
    if let Some(before) = before {
        for (name, previous) in &before.attributes {
            for instance in previous {
                let remains = after.is_some_and(|a| a.instance(name, instance.dataset_id.as_deref()).is_some());
                if !remains {
                    let mut gone = Attribute::new(instance.kind, serde_json::Value::Null);
                    gone.dataset_id = instance.dataset_id.clone();
                    instances.push(id, name, &gone, now, Some(now));
                }
            }
        }
    }
    now
}

/// The temporal entity rows a call's entity edits change, in the order the
/// edits first touch them (new rows take their keys in that order, the
/// order temporal queries list them in), written before the commit: one
/// statement for the new rows, one for the others.
#[derive(Default)]
pub(crate) struct EntityRows {
    rows: IndexMap<String, EntityRow>,
}

/// Temporal entity rows as columns to unnest. Arrays of arrays do not
/// unnest row by row: each row's lists go as JSON.
struct RowColumns<'a> {
    ids: Vec<&'a str>,
    types: Vec<Json<&'a Vec<String>>>,
    scopes: Vec<Option<Json<&'a Vec<String>>>>,
    created: Vec<Timestamp>,
    modified: Vec<Option<Timestamp>>,
    deleted: Vec<Option<Timestamp>>,
}

impl<'a> RowColumns<'a> {
    fn of(rows: &[(&'a String, &'a EntityRow)]) -> Self {
        Self {
            ids: rows.iter().map(|(id, _)| id.as_str()).collect(),
            types: rows.iter().map(|(_, r)| Json(&r.types)).collect(),
            scopes: rows.iter().map(|(_, r)| r.scope.as_ref().map(Json)).collect(),
            created: rows.iter().map(|(_, r)| r.created_at).collect(),
            modified: rows.iter().map(|(_, r)| r.modified_at).collect(),
            deleted: rows.iter().map(|(_, r)| r.deleted_at).collect(),
        }
    }
}

/// A temporal entity row as the call leaves it.
struct EntityRow {
    /// Whether the row was there before the call.
    stored: bool,
    types: Vec<String>,
    /// The scope written, `None` to keep the row's (a write without scope
    /// keeps it; a new row takes its first write's, even empty).
    scope: Option<Vec<String>>,
    created_at: Timestamp,
    /// `None` to keep the row's (only deleted in the call).
    modified_at: Option<Timestamp>,
    deleted_at: Option<Timestamp>,
}

impl EntityRows {
    /// Records an entity edit made at `now`: the row is created or
    /// refreshed with the entity, marked deleted with it. `known` holds the
    /// types of the row, `None` when there is none.
    pub(crate) fn record(
        &mut self,
        (before, after): (Option<&Entity>, Option<&Entity>),
        now: Timestamp,
        known: Option<&[String]>,
    ) {
        let Some(id) = after.or(before).map(|e| e.id.as_str()) else {
            return;
        };
        if after.is_none() && known.is_none() && !self.rows.contains_key(id) {
            // No row to mark deleted.
            return;
        }
        let row = self.rows.entry(id.to_owned()).or_insert_with(|| EntityRow {
            stored: known.is_some(),
            types: known.map(<[String]>::to_vec).unwrap_or_default(),
            scope: None,
            created_at: now,
            modified_at: None,
            deleted_at: None,
        });
        match after {
            Some(after) => {
                row.types = merged_types(known, &after.types);
                if !after.scope.is_empty() || (!row.stored && row.scope.is_none()) {
                    row.scope = Some(after.scope.clone());
                }
                row.modified_at = Some(now);
                row.deleted_at = None;
            }
            None => row.deleted_at = Some(now),
        }
    }

    /// Writes the rows; the caller holds the entities' locks and has
    /// listed the tenant.
    pub(crate) async fn write(&self, client: &impl GenericClient, tenant: &Tenant) -> Result<()> {
        let (new, stored): (Vec<(&String, &EntityRow)>, Vec<_>) = self.rows.iter().partition(|(_, row)| !row.stored);
        let insert = async {
            if new.is_empty() {
                return Ok(());
            }
            let c = RowColumns::of(&new);
            execute(
                client,
                concat!(
                    "INSERT INTO temporal_entities(tenant, id, types, scope, created_at, modified_at, deleted_at) \
                     SELECT $1, i, ",
                    json_text_array!("t"),
                    ", ",
                    json_text_array!("s"),
                    ", c, coalesce(m, c), d \
                     FROM unnest($2::text[], $3::json[], $4::json[], $5::timestamptz[], $6::timestamptz[], \
                     $7::timestamptz[]) WITH ORDINALITY AS u(i, t, s, c, m, d, n) ORDER BY n"
                ),
                &[
                    &tenant.name(),
                    &c.ids,
                    &c.types,
                    &c.scopes,
                    &c.created,
                    &c.modified,
                    &c.deleted,
                ],
            )
            .await?;
            Ok::<_, Error>(())
        };
        let update = async {
            if stored.is_empty() {
                return Ok(());
            }
            let c = RowColumns::of(&stored);
            execute(
                client,
                concat!(
                    "UPDATE temporal_entities te SET types = ",
                    json_text_array!("u.t"),
                    ", scope = CASE WHEN u.s IS NULL THEN te.scope ELSE ",
                    json_text_array!("u.s"),
                    " END, modified_at = coalesce(u.m, te.modified_at), deleted_at = u.d \
                 FROM unnest($2::text[], $3::json[], $4::json[], $5::timestamptz[], $6::timestamptz[]) \
                 AS u(i, t, s, m, d) WHERE te.tenant = $1 AND te.id = u.i"
                ),
                &[&tenant.name(), &c.ids, &c.types, &c.scopes, &c.modified, &c.deleted],
            )
            .await?;
            Ok(())
        };
        tokio::try_join!(insert, update)?;
        Ok(())
    }
}

async fn exists(client: &impl GenericClient, tenant: &Tenant, id: &str) -> Result<bool> {
    let statement = client
        .prepare_cached("SELECT 1 FROM temporal_entities WHERE tenant = $1 AND id = $2")
        .await?;
    Ok(client.query_opt(&statement, &[&tenant.name(), &id]).await?.is_some())
}

fn not_found(id: &str) -> NgsiError {
    NgsiError::not_found(format!("temporal entity {id} not found"))
}

fn edited_id(edit: &TemporalEdit) -> &str {
    match edit {
        TemporalEdit::Upsert { id, .. }
        | TemporalEdit::Append { id, .. }
        | TemporalEdit::DeleteEntity { id }
        | TemporalEdit::DeleteAttribute { id, .. }
        | TemporalEdit::ModifyInstance { id, .. }
        | TemporalEdit::DeleteInstance { id, .. } => id,
    }
}

/// Applies a temporal API edit in its own transaction: committed when it
/// applies, rolled back when it is refused.
pub(crate) async fn edit(
    client: &mut deadpool_postgres::Object,
    tenant: &Tenant,
    edit: TemporalEdit,
) -> Result<std::result::Result<bool, NgsiError>> {
    let locks = entity_locks(tenant, [edited_id(&edit)]);
    let transaction = client.transaction().await?;
    lock_entities(&transaction, &locks).await?;
    let outcome = apply_edit(&transaction, tenant, edit).await?;
    if outcome.is_ok() {
        transaction.commit().await?;
    } else {
        transaction.rollback().await?;
    }
    Ok(outcome)
}

async fn apply_edit(
    tx: &Transaction<'_>,
    tenant: &Tenant,
    edit: TemporalEdit,
) -> Result<std::result::Result<bool, NgsiError>> {
    let now = time::now();
    let t = tenant.name();
    match edit {
        TemporalEdit::Upsert {
            id,
            types,
            scope,
            attributes,
        } => {
            let created = upsert_entity(tx, tenant, &id, &types, &scope, now).await?;
            add_instances(tx, tenant, &id, &attributes, now).await?;
            Ok(Ok(created))
        }
        TemporalEdit::Append { id, attributes } => {
            if !exists(tx, tenant, &id).await? {
                return Ok(Err(not_found(&id)));
            }
            add_instances(tx, tenant, &id, &attributes, now).await?;
            execute(
                tx,
                "UPDATE temporal_entities SET modified_at = $3 WHERE tenant = $1 AND id = $2",
                &[&t, &id, &now],
            )
            .await?;
            Ok(Ok(false))
        }
        TemporalEdit::DeleteEntity { id } => {
            let n = execute(
                tx,
                "DELETE FROM temporal_entities WHERE tenant = $1 AND id = $2",
                &[&t, &id],
            )
            .await?;
            if n == 0 {
                return Ok(Err(not_found(&id)));
            }
            execute(
                tx,
                "DELETE FROM attr_instances WHERE tenant = $1 AND entity_id = $2",
                &[&t, &id],
            )
            .await?;
            Ok(Ok(false))
        }
        TemporalEdit::DeleteAttribute {
            id,
            attr,
            dataset_id,
            delete_all,
        } => {
            if !exists(tx, tenant, &id).await? {
                return Ok(Err(not_found(&id)));
            }
            let n = if delete_all {
                execute(
                    tx,
                    "DELETE FROM attr_instances WHERE tenant = $1 AND entity_id = $2 AND attr = $3",
                    &[&t, &id, &attr],
                )
                .await?
            } else {
                execute(
                    tx,
                    "DELETE FROM attr_instances WHERE tenant = $1 AND entity_id = $2 AND attr = $3 \
                     AND dataset_id IS NOT DISTINCT FROM $4",
                    &[&t, &id, &attr, &dataset_id],
                )
                .await?
            };
            if n == 0 {
                return Ok(Err(NgsiError::not_found(format!(
                    "attribute {attr} of {id} has no such instances"
                ))));
            }
            Ok(Ok(false))
        }
        TemporalEdit::ModifyInstance {
            id,
            attr,
            instance_id,
            instance,
        } => modify_instance(tx, tenant, &id, &attr, &instance_id, *instance, now).await,
        TemporalEdit::DeleteInstance { id, attr, instance_id } => {
            let n = execute(
                tx,
                "DELETE FROM attr_instances WHERE tenant = $1 AND instance_id = $2 AND entity_id = $3 AND attr = $4",
                &[&t, &instance_id, &id, &attr],
            )
            .await?;
            if n == 0 {
                if !exists(tx, tenant, &id).await? {
                    return Ok(Err(not_found(&id)));
                }
                return Ok(Err(NgsiError::not_found(format!(
                    "instance {instance_id} of {attr} not found"
                ))));
            }
            Ok(Ok(false))
        }
    }
}

/// Replaces the content of one instance, keeping its id and createdAt.
async fn modify_instance(
    tx: &Transaction<'_>,
    tenant: &Tenant,
    id: &str,
    attr: &str,
    instance_id: &str,
    mut attribute: Attribute,
    now: Timestamp,
) -> Result<std::result::Result<bool, NgsiError>> {
    let statement = tx
        .prepare_cached(
            "SELECT iid, created_at FROM attr_instances WHERE tenant = $1 AND instance_id = $2 \
             AND entity_id = $3 AND attr = $4",
        )
        .await?;
    let Some(row) = tx
        .query_opt(&statement, &[&tenant.name(), &instance_id, &id, &attr])
        .await?
    else {
        return Ok(Err(NgsiError::not_found(format!(
            "instance {instance_id} of {attr} not found"
        ))));
    };
    let iid: i64 = row.try_get(0)?;
    attribute.created_at = Some(row.try_get(1)?);
    attribute.modified_at = Some(now);
    execute(
        tx,
        "UPDATE attr_instances SET dataset_id = $3, observed_at = $4, modified_at = $5, doc = $6 \
         WHERE tenant = $1 AND iid = $2",
        &[
            &tenant.name(),
            &iid,
            &attribute.dataset_id,
            &observed(&attribute),
            &now,
            &Json(&attribute),
        ],
    )
    .await?;
    Ok(Ok(false))
}

async fn add_instances(
    client: &impl GenericClient,
    tenant: &Tenant,
    id: &str,
    attributes: &[(String, Vec<Attribute>)],
    now: Timestamp,
) -> Result<()> {
    let mut instances = Instances::default();
    for (name, given) in attributes {
        for instance in given {
            instances.push(id, name, instance, now, None);
        }
    }
    instances.insert(client, tenant).await
}

/// Deletes up to `limit` of the tenant's instances recorded before
/// `horizon`, oldest first (instances are numbered in recording order).
pub(crate) async fn purge(
    client: &impl GenericClient,
    tenant: &Tenant,
    horizon: Timestamp,
    limit: usize,
) -> Result<u64> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    execute(
        client,
        "DELETE FROM attr_instances WHERE tenant = $1 AND iid IN (SELECT iid FROM attr_instances \
         WHERE tenant = $1 AND created_at < $2 ORDER BY iid LIMIT $3)",
        &[&tenant.name(), &horizon, &limit],
    )
    .await
}

fn column(property: TimeProperty) -> &'static str {
    match property {
        TimeProperty::ObservedAt => "observed_at",
        TimeProperty::CreatedAt => "created_at",
        TimeProperty::ModifiedAt => "modified_at",
        TimeProperty::DeletedAt => "deleted_at",
    }
}

/// The row of a temporal entity.
struct Header {
    id: String,
    types: Vec<String>,
    scope: Vec<String>,
    created_at: Option<Timestamp>,
    modified_at: Option<Timestamp>,
    deleted_at: Option<Timestamp>,
}

const HEADER_COLUMNS: &str = "id, types, scope, created_at, modified_at, deleted_at";
/// The number of `HEADER_COLUMNS`.
const HEADER_WIDTH: usize = 6;

impl Header {
    fn from_row(row: &Row) -> Result<Self> {
        Ok(Self {
            id: row.try_get(0)?,
            types: row.try_get(1)?,
            scope: row.try_get(2)?,
            created_at: row.try_get(3)?,
            modified_at: row.try_get(4)?,
            deleted_at: row.try_get(5)?,
        })
    }
}

async fn header(client: &impl GenericClient, tenant: &Tenant, id: &str) -> Result<Option<Header>> {
    let sql = format!("SELECT {HEADER_COLUMNS} FROM temporal_entities WHERE tenant = $1 AND id = $2");
    let statement = client.prepare_cached(&sql).await?;
    client
        .query_opt(&statement, &[&tenant.name(), &id])
        .await?
        .map(|row| Header::from_row(&row))
        .transpose()
}

/// The names of the attributes with history, by skipping through the
/// instance index one name at a time (a loose index scan: `DISTINCT` would
/// read every instance of a long history).
async fn attribute_names(client: &impl GenericClient, tenant: &Tenant, id: &str) -> Result<Vec<String>> {
    let statement = client
        .prepare_cached(
            "WITH RECURSIVE names(attr) AS ( \
               (SELECT attr FROM attr_instances WHERE tenant = $1 AND entity_id = $2 ORDER BY attr LIMIT 1) \
               UNION ALL \
               SELECT (SELECT a.attr FROM attr_instances a WHERE a.tenant = $1 AND a.entity_id = $2 \
                       AND a.attr > n.attr ORDER BY a.attr LIMIT 1) \
               FROM names n WHERE n.attr IS NOT NULL) \
             SELECT attr FROM names WHERE attr IS NOT NULL",
        )
        .await?;
    let rows = client.query(&statement, &[&tenant.name(), &id]).await?;
    rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
}

fn decode_attribute(row: &Row, index: usize) -> Result<Attribute> {
    row.try_get::<_, Json<Attribute>>(index)
        .map(|Json(attribute)| attribute)
        .map_err(|e| Error::Corrupt(format!("attribute instance: {e}")))
}

/// The statement reading an attribute's instances matching `clause` by
/// time property `col`, oldest or newest first, at most `$limit_param`.
/// NULLS FIRST/LAST: where SQLite puts missing times, so that instances
/// without the time property come in the same place on both backends (and
/// the order `attr_instances_observed` is kept in, migration 6).
pub(crate) fn instances_statement(col: &str, clause: &str, newest_first: bool, limit_param: usize) -> String {
    let (order, nulls) = if newest_first {
        ("DESC", "NULLS LAST")
    } else {
        ("ASC", "NULLS FIRST")
    };
    format!(
        "SELECT instance_id, doc, deleted_at FROM attr_instances WHERE {clause} \
         ORDER BY {col} {order} {nulls}, created_at {order}, iid {order} LIMIT ${limit_param}"
    )
}

/// The instances of one attribute selected by `query`, ascending, at most
/// as many as a response can hold.
async fn instances(
    client: &impl GenericClient,
    tenant: &Tenant,
    id: &str,
    attr: &str,
    query: &TemporalQuery,
) -> Result<Vec<Instance>> {
    let col = column(query.timeproperty);
    let mut clause = String::from("tenant = $1 AND entity_id = $2 AND attr = $3");
    let mut args: Vec<Box<dyn ToSql + Sync + Send>> = vec![
        Box::new(tenant.name().to_owned()),
        Box::new(id.to_owned()),
        Box::new(attr.to_owned()),
    ];
    if let Some(rel) = query.timerel {
        let (lo, hi) = rel.bounds();
        if let Some(lo) = lo {
            args.push(Box::new(lo));
            clause.push_str(&format!(" AND {col} >= ${}", args.len()));
        }
        if let Some(hi) = hi {
            args.push(Box::new(hi));
            clause.push_str(&format!(" AND {col} < ${}", args.len()));
        }
    } else if query.timeproperty == TimeProperty::DeletedAt {
        clause.push_str(" AND deleted_at IS NOT NULL");
    }
    let cap = query.instance_limit.saturating_add(1);
    let limit = query.last_n.map_or(cap, |n| n.min(cap));
    args.push(Box::new(i64::try_from(limit).unwrap_or(i64::MAX)));
    let sql = instances_statement(col, &clause, query.last_n.is_some(), args.len());
    let statement = client.prepare_cached(&sql).await?;
    let params: Vec<&(dyn ToSql + Sync)> = args.iter().map(|a| a.as_ref() as &(dyn ToSql + Sync)).collect();
    let mut out = Vec::new();
    for row in client.query(&statement, &params).await? {
        out.push(Instance {
            instance_id: row.try_get(0)?,
            attribute: decode_attribute(&row, 1)?,
            deleted_at: row.try_get::<_, Option<DateTime<Utc>>>(2)?,
        });
    }
    if query.last_n.is_some() {
        out.reverse();
    }
    Ok(out)
}

/// The history of one entity, read in one snapshot.
pub(crate) async fn entity_snapshot(
    client: &mut deadpool_postgres::Object,
    tenant: &Tenant,
    id: &str,
    query: &TemporalQuery,
) -> Result<Option<TemporalEntity>> {
    let transaction = snapshot(client).await?;
    let found = match header(&transaction, tenant, id).await? {
        Some(header) => Some(history(&transaction, tenant, header, query).await?),
        None => None,
    };
    transaction.commit().await?;
    Ok(found)
}

async fn snapshot(client: &mut deadpool_postgres::Object) -> Result<Transaction<'_>> {
    Ok(client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?)
}

/// The history of the entity of `header`.
async fn history(
    client: &impl GenericClient,
    tenant: &Tenant,
    header: Header,
    query: &TemporalQuery,
) -> Result<TemporalEntity> {
    let mut entity = TemporalEntity {
        id: header.id,
        types: header.types,
        scope: header.scope,
        created_at: header.created_at,
        modified_at: header.modified_at,
        deleted_at: header.deleted_at,
        attributes: IndexMap::new(),
        range: None,
        summaries: IndexMap::new(),
    };
    let names = match requested_attrs(query) {
        Some(names) => names,
        None => attribute_names(client, tenant, &entity.id).await?,
    };
    for name in names {
        if let Some(groups) = aggregate::summarised(client, tenant, &entity.id, &name, query).await? {
            entity.summaries.insert(name, groups);
            continue;
        }
        let found = instances(client, tenant, &entity.id, &name, query).await?;
        if !found.is_empty() {
            entity.attributes.insert(name, found);
        }
    }
    temporal::paginate(&mut entity, query);
    Ok(entity)
}

/// The latest recorded state of a temporal entity, for evaluating `q`,
/// geo-queries and `attrs` of a temporal query.
async fn latest(client: &impl GenericClient, tenant: &Tenant, header: &Header) -> Result<Entity> {
    let mut entity = Entity::new(header.id.clone(), header.types.clone());
    entity.scope = header.scope.clone();
    let statement = client
        .prepare_cached(
            "SELECT attr, doc, deleted_at FROM attr_instances WHERE tenant = $1 AND entity_id = $2 \
             ORDER BY attr, COALESCE(observed_at, created_at), iid",
        )
        .await?;
    for row in client.query(&statement, &[&tenant.name(), &header.id]).await? {
        let attr: String = row.try_get(0)?;
        let attribute = decode_attribute(&row, 1)?;
        let deleted_at: Option<Timestamp> = row.try_get(2)?;
        let instances = entity.attributes.entry(attr).or_default();
        instances.retain(|i| i.dataset_id != attribute.dataset_id);
        if deleted_at.is_none() {
            instances.push(attribute);
        }
    }
    entity.attributes.retain(|_, instances| !instances.is_empty());
    Ok(entity)
}

/// The histories of the matching entities, read in one snapshot.
pub(crate) async fn query(
    client: &mut deadpool_postgres::Object,
    tenant: &Tenant,
    entities: &EntityQuery,
    query: &TemporalQuery,
    page: Page,
) -> Result<TemporalQueryResult> {
    let transaction = snapshot(client).await?;
    let result = select(&transaction, tenant, entities, query, page).await?;
    transaction.commit().await?;
    Ok(result)
}

/// The `SELECT` of the tenant's temporal entities that SQL finds for
/// `entities` (its ids, a plain list of types, its attributes with any
/// history, any history in the time range of `query`), in the order of the
/// answer, with its arguments; and whether that is all the test there is
/// (nothing left for Rust but the page). It is read in batches, each from where the last one ended, so that each
/// is planned for the few rows it asks for.
struct Candidates {
    filter: String,
    /// The column candidates come in order of, `te.teid` or `te.id`.
    key: &'static str,
    descending: bool,
    args: Vec<Box<dyn ToSql + Sync + Send>>,
    exact: bool,
}

/// Where a batch of candidates ends: the next starts after it.
enum Key {
    Teid(i64),
    Id(String),
}

impl Candidates {
    fn new(tenant: &Tenant, entities: &EntityQuery, query: &TemporalQuery) -> Self {
        let mut candidates = Self {
            filter: "te.tenant = $1".to_owned(),
            key: if query.order_by_id.is_some() {
                "te.id"
            } else {
                "te.teid"
            },
            descending: query.order_by_id == Some(true),
            args: vec![Box::new(tenant.name().to_owned())],
            exact: false,
        };
        if !entities.ids.is_empty() {
            let ids = candidates.arg(entities.ids.clone());
            candidates.filter.push_str(&format!(" AND te.id = ANY({ids})"));
        }
        let types = entities.types.as_ref().map(|t| t.alternatives());
        if let Some(Some(types)) = &types {
            let types: Vec<String> = types.iter().map(|t| (*t).to_owned()).collect();
            let types = candidates.arg(types);
            candidates.filter.push_str(&format!(" AND te.types && {types}::text[]"));
        }
        if !entities.attrs.is_empty() && !range_implies_attrs(entities, query) {
            // One probe of the instance index per candidate.
            let attrs = candidates.arg(entities.attrs.clone());
            candidates.filter.push_str(&format!(
                " AND EXISTS (SELECT 1 FROM attr_instances a WHERE a.tenant = $1 AND a.entity_id = te.id \
                 AND a.attr = ANY({attrs}))"
            ));
        }
        if let Some(rel) = query.timerel {
            candidates.require_history_in(rel, query);
        }
        candidates.exact = !matches!(types, Some(None))
            && entities.id_pattern.is_none()
            && entities.q.is_none()
            && entities.geo.is_none()
            && entities.scope.is_none()
            && entities.alternatives.is_empty();
        candidates
    }

    /// Adds an argument; returns its placeholder.
    fn arg(&mut self, value: impl ToSql + Sync + Send + 'static) -> String {
        self.args.push(Box::new(value));
        format!("${}", self.args.len())
    }

    /// Keeps the entities with an instance of `query`'s attributes in the
    /// time range `rel`: one without has no history to show, and is no
    /// candidate, so that offsets and counts agree with the pages.
    fn require_history_in(&mut self, rel: TimeRel, query: &TemporalQuery) {
        let col = column(query.timeproperty);
        let mut clause = String::new();
        if !query.attrs.is_empty() {
            let attrs = self.arg(query.attrs.clone());
            clause.push_str(&format!(" AND h.attr = ANY({attrs})"));
        }
        let (lo, hi) = rel.bounds();
        for (bound, op) in [(lo, ">="), (hi, "<")] {
            if let Some(bound) = bound {
                let bound = self.arg(bound);
                clause.push_str(&format!(" AND h.{col} {op} {bound}"));
            }
        }
        self.filter.push_str(&format!(
            " AND EXISTS (SELECT 1 FROM attr_instances h WHERE h.tenant = $1 AND h.entity_id = te.id{clause})"
        ));
    }

    fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.args.iter().map(|a| a.as_ref() as &(dyn ToSql + Sync)).collect()
    }

    /// How many candidates there are.
    async fn count(&self, client: &impl GenericClient) -> Result<u64> {
        let sql = format!("SELECT count(*) FROM temporal_entities te WHERE {}", self.filter);
        let statement = client.prepare_cached(&sql).await?;
        let count: i64 = client.query_one(&statement, &self.params()).await?.try_get(0)?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    /// The next `limit` candidates after `after` (or after `offset` of
    /// them): their headers, their `Key` and which of `attrs` (given when
    /// Rust tests the candidates) have history (a column, so that no candidate costs a round
    /// trip of its own, computed past the offset).
    async fn batch(
        &self,
        client: &impl GenericClient,
        attrs: &[String],
        after: Option<&Key>,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<Row>> {
        let mut params = self.params();
        let (direction, beyond) = if self.descending { ("DESC", "<") } else { ("ASC", ">") };
        let mut filter = self.filter.clone();
        match after {
            Some(Key::Teid(teid)) => params.push(teid),
            Some(Key::Id(id)) => params.push(id),
            None => {}
        }
        if after.is_some() {
            filter.push_str(&format!(" AND {} {beyond} ${}", self.key, params.len()));
        }
        params.push(&limit);
        params.push(&offset);
        let mut sql = format!(
            "SELECT {HEADER_COLUMNS}, te.teid FROM temporal_entities te WHERE {filter} \
             ORDER BY {} {direction} LIMIT ${} OFFSET ${}",
            self.key,
            params.len() - 1,
            params.len()
        );
        if !attrs.is_empty() {
            params.push(&attrs);
            sql = format!(
                "SELECT te.*, ARRAY(SELECT n FROM unnest(${}::text[]) n WHERE EXISTS (SELECT 1 \
                 FROM attr_instances a WHERE a.tenant = $1 AND a.entity_id = te.id AND a.attr = n)) \
                 FROM ({sql}) te ORDER BY {} {direction}",
                params.len(),
                self.key,
            );
        }
        let statement = client.prepare_cached(&sql).await?;
        Ok(client.query(&statement, &params).await?)
    }

    fn key_of(&self, row: &Row) -> Result<Key> {
        Ok(if self.key == "te.id" {
            Key::Id(row.try_get(0)?)
        } else {
            Key::Teid(row.try_get(HEADER_WIDTH)?)
        })
    }

    /// What Rust tests of a candidate: its latest state for `q` and
    /// geo-queries, otherwise its header and which of `attrs` have history.
    async fn state(
        &self,
        client: &impl GenericClient,
        tenant: &Tenant,
        entities: &EntityQuery,
        header: &Header,
        row: &Row,
    ) -> Result<Entity> {
        if entities.q.is_some() || entities.geo.is_some() {
            return latest(client, tenant, header).await;
        }
        let mut bare = Entity::new(header.id.clone(), header.types.clone());
        bare.scope = header.scope.clone();
        if !entities.attrs.is_empty() {
            for attr in row.try_get::<_, Vec<String>>(HEADER_WIDTH + 1)? {
                bare.attributes.insert(attr, Vec::new());
            }
        }
        Ok(bare)
    }
}

/// Candidates read at a time when Rust tests them (`q`, geo-queries,
/// patterns): enough to fill a page of 20 in one batch when most match.
const CANDIDATE_BATCH: i64 = 64;

async fn select(
    client: &impl GenericClient,
    tenant: &Tenant,
    entities: &EntityQuery,
    query: &TemporalQuery,
    page: Page,
) -> Result<TemporalQueryResult> {
    let candidates = Candidates::new(tenant, entities, query);
    if candidates.exact {
        exact_page(client, tenant, &candidates, query, page).await
    } else {
        tested_page(client, tenant, &candidates, entities, query, page).await
    }
}

/// Whether a history selected for a page is empty where the query wanted
/// instances: it is then left out of the page.
fn shows_nothing(history: &TemporalEntity, query: &TemporalQuery) -> bool {
    !history.has_attributes() && (query.timerel.is_some() || !query.attrs.is_empty())
}

/// A page of candidates SQL has tested in full: PostgreSQL skips the offset
/// and counts the total, and the page's histories are read together, their
/// statements pipelined on the connection.
async fn exact_page(
    client: &impl GenericClient,
    tenant: &Tenant,
    candidates: &Candidates,
    query: &TemporalQuery,
    page: Page,
) -> Result<TemporalQueryResult> {
    let total = if page.count {
        Some(candidates.count(client).await?)
    } else {
        None
    };
    let mut result = TemporalQueryResult::default();
    // A history left out of the page (none should be: the candidates have
    // instances in the range) is not counted, as in `tested_page`.
    let mut left_out = 0;
    let mut offset = i64::try_from(page.offset).unwrap_or(i64::MAX);
    let mut after = None;
    while result.entities.len() < page.limit {
        let wanted = i64::try_from(page.limit - result.entities.len()).unwrap_or(i64::MAX);
        let rows = candidates.batch(client, &[], after.as_ref(), wanted, offset).await?;
        offset = 0;
        let Some(last) = rows.last() else { break };
        after = Some(candidates.key_of(last)?);
        let exhausted = rows.len() < usize::try_from(wanted).unwrap_or(usize::MAX);
        let histories = try_join_all(rows.iter().map(|row| async {
            let header = Header::from_row(row)?;
            history(client, tenant, header, query).await
        }))
        .await?;
        for history in histories {
            if shows_nothing(&history, query) {
                left_out += 1;
            } else {
                result.entities.push(history);
            }
        }
        if exhausted {
            break;
        }
    }
    result.total = total.map(|total| total.saturating_sub(left_out));
    Ok(result)
}

/// A page of candidates Rust tests one by one (`q`, geo-queries, patterns),
/// read in batches.
async fn tested_page(
    client: &impl GenericClient,
    tenant: &Tenant,
    candidates: &Candidates,
    entities: &EntityQuery,
    query: &TemporalQuery,
    page: Page,
) -> Result<TemporalQueryResult> {
    let mut result = TemporalQueryResult::default();
    let mut pager = Pager::new(page);
    let mut after = None;
    'scan: loop {
        let rows = candidates
            .batch(client, &entities.attrs, after.as_ref(), CANDIDATE_BATCH, 0)
            .await?;
        let Some(last) = rows.last() else { break };
        after = Some(candidates.key_of(last)?);
        let exhausted = rows.len() < usize::try_from(CANDIDATE_BATCH).unwrap_or(usize::MAX);
        for row in rows {
            let header = Header::from_row(&row)?;
            if !entities.matches(&candidates.state(client, tenant, entities, &header, &row).await?) {
                continue;
            }
            match pager.next_step() {
                PageStep::Stop => break 'scan,
                PageStep::Skip => pager.counted(false),
                PageStep::Take => {
                    let history = history(client, tenant, header, query).await?;
                    if !shows_nothing(&history, query) {
                        result.entities.push(history);
                        pager.counted(true);
                    }
                }
            }
        }
        if exhausted {
            break;
        }
    }
    result.total = pager.total();
    Ok(result)
}
