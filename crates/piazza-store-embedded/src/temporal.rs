//! History: attribute instances recorded with every entity change (in the
//! change's transaction), the temporal API's own edits, and temporal reads.
//!
//! Reads go attribute by attribute through the `(teid, attr, <time>)`
//! index, fetching at most the instances a response can hold, so
//! one entity's history of any length is read by time range in a bounded
//! number of rows.

use indexmap::IndexMap;
use piazza_ngsild::query::EntityQuery;
use piazza_ngsild::temporal::{self, Instance, TemporalEntity, TemporalQuery, TimeProperty, TimeRel, INSTANCE_PREFIX};
use piazza_ngsild::time::{self, Timestamp};
use piazza_ngsild::{Attribute, Entity, NgsiError};
use piazza_store::{
    range_implies_attrs, requested_attrs, Page, PageStep, Pager, RawInstance, StoreError, StoreResult, TemporalEdit,
    TemporalQueryResult, Tenant,
};
use rusqlite::types::Value as SqlValue;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension, Transaction};

use crate::read::placeholders;
use crate::rollups::{self, Summarised};
use crate::rows::MultiRowInsert;
use crate::sql;
use crate::values::{self, NameKeys};

/// A fresh instance id, as stored (see [`instance_key`]). Version 7 UUIDs
/// grow with time, so each new id lands at the right edge of
/// `attr_instances_by_id` instead of on a random page of it: a random v4
/// key dirtied (and wrote to the WAL) about one index page per instance.
fn new_instance_key() -> SqlValue {
    SqlValue::Blob(uuid::Uuid::now_v7().as_bytes().to_vec())
}

/// How an instance id is stored: the 16 bytes of its UUID when it is one
/// of ours (the prefix and the canonical text of a UUID, so that it is
/// written back exactly), the text otherwise (an imported id of another
/// form). 16 bytes instead of 67 in each row and each `attr_instances_by_id`
/// entry.
pub(crate) fn instance_key(id: &str) -> SqlValue {
    let canonical = id.strip_prefix(INSTANCE_PREFIX).and_then(|text| {
        let uuid = uuid::Uuid::try_parse(text).ok()?;
        (uuid.hyphenated().encode_lower(&mut uuid::Uuid::encode_buffer()) == text).then_some(uuid)
    });
    match canonical {
        Some(uuid) => SqlValue::Blob(uuid.as_bytes().to_vec()),
        None => SqlValue::Text(id.to_owned()),
    }
}

/// An instance id as [`instance_key`] stored it.
pub(crate) fn instance_id_of(stored: rusqlite::types::ValueRef<'_>) -> rusqlite::Result<String> {
    use rusqlite::types::ValueRef;
    match stored {
        // Written out by hand: `format!` grew the string twice through the
        // formatting machinery, a tenth of a plain temporal request's time
        // (perf, BENCHMARKS.md 2026-12-07).
        ValueRef::Blob(bytes) => uuid::Uuid::from_slice(bytes)
            .map(|uuid| {
                let mut buffer = uuid::Uuid::encode_buffer();
                let text = uuid.hyphenated().encode_lower(&mut buffer);
                let mut id = String::with_capacity(INSTANCE_PREFIX.len() + text.len());
                id.push_str(INSTANCE_PREFIX);
                id.push_str(text);
                id
            })
            .map_err(|e| rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Blob, Box::new(e))),
        other => Ok(other.as_str()?.to_owned()),
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> rusqlite::Result<String> {
    serde_json::to_string(value).map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))
}

/// An instance's `doc`: the attribute without its createdAt and
/// modifiedAt, which the row's columns hold (`attribute_from_row` puts them
/// back): two timestamps fewer to write per instance.
fn instance_doc(attribute: &Attribute) -> rusqlite::Result<String> {
    piazza_ngsild::entity::encode_instance(attribute).map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))
}

/// An instance's attribute from its row's `doc`, `created_at` and
/// `modified_at` (rows written before 2026-12-07 also hold them in `doc`,
/// with the same values).
pub(crate) fn attribute_from_row(
    doc: &str,
    created: Option<Timestamp>,
    modified: Option<Timestamp>,
) -> StoreResult<Attribute> {
    let mut attribute: Attribute = serde_json::from_str(doc).map_err(corrupt("attribute instance"))?;
    attribute.created_at = created.or(attribute.created_at);
    attribute.modified_at = modified.or(attribute.modified_at);
    Ok(attribute)
}

/// The sortable text form of an `observedAt`.
fn observed(attribute: &Attribute) -> Option<String> {
    attribute
        .observed_at
        .as_deref()
        .and_then(time::parse)
        .map(|t| time::format(&t))
}

/// One attribute's history: the temporal entity's row and the tenant's
/// number for the attribute's name (see `schema.sql`).
#[derive(Clone, Copy)]
pub(crate) struct Series {
    pub(crate) teid: i64,
    pub(crate) attr: i64,
}

/// The row of temporal entity `id`.
fn teid_of(connection: &Connection, tenant: &Tenant, id: &str) -> rusqlite::Result<Option<i64>> {
    connection
        .prepare_cached("SELECT teid FROM temporal_entities WHERE tenant = ?1 AND id = ?2")?
        .query_row(params![tenant.name(), id], |r| r.get(0))
        .optional()
}

/// The history of `attr` of entity `id`, if it can have any (the entity
/// and the name are known).
fn series_of(connection: &Connection, tenant: &Tenant, id: &str, attr: &str) -> rusqlite::Result<Option<Series>> {
    let Some(teid) = teid_of(connection, tenant, id)? else {
        return Ok(None);
    };
    Ok(values::name_key(connection, tenant, attr, false)?.map(|attr| Series { teid, attr }))
}

/// An instance about to be recorded.
struct NewInstance<'a> {
    /// As stored (see [`instance_key`]).
    instance_key: SqlValue,
    attribute: &'a Attribute,
    dataset_id: Option<&'a str>,
    /// In its sortable text form.
    observed_at: Option<String>,
    created_at: Timestamp,
    modified_at: Timestamp,
    deleted_at: Option<Timestamp>,
}

/// A new instance of one of ours, recorded as of `at`.
fn new_instance(attribute: &Attribute, at: Timestamp, deleted_at: Option<Timestamp>) -> NewInstance<'_> {
    NewInstance {
        instance_key: new_instance_key(),
        attribute,
        dataset_id: attribute.dataset_id.as_deref(),
        observed_at: observed(attribute),
        created_at: at,
        modified_at: at,
        deleted_at,
    }
}

/// An instance to insert into its history (`rolled_up`: whether the
/// history's rollups are kept).
struct Insert<'a> {
    series: Series,
    rolled_up: bool,
    instance: NewInstance<'a>,
}

/// Records an instance read from an export, under its entity's temporal
/// row (a bare one is made for an instance whose entity has none, so that
/// no instance is dropped) and its name's number.
pub(crate) fn insert_row(tx: &Transaction<'_>, tenant: &Tenant, row: &RawInstance) -> rusqlite::Result<()> {
    let teid = match teid_of(tx, tenant, &row.entity_id)? {
        Some(teid) => teid,
        None => {
            let keys = &mut NameKeys::default();
            upsert_entity(tx, tenant, &row.entity_id, &[], &[], row.created_at, keys)?.0
        }
    };
    let series = Series {
        teid,
        attr: values::name_key(tx, tenant, &row.attr, true)?.unwrap_or_default(),
    };
    let instance = NewInstance {
        instance_key: instance_key(&row.instance_id),
        attribute: &row.attribute,
        dataset_id: row.dataset_id.as_deref(),
        observed_at: row.observed_at.as_ref().map(time::format),
        created_at: row.created_at,
        modified_at: row.modified_at,
        deleted_at: row.deleted_at,
    };
    let rolled_up = rollups::is_rolled_up(tx, series)?;
    insert(
        tx,
        &[Insert {
            series,
            rolled_up,
            instance,
        }],
    )
}

/// Inserts instance rows and counts those of rolled-up histories into
/// their hours' rollups: the one way instances enter `attr_instances`
/// (edits, the temporal API and raw imports alike), so that the rollups
/// miss none.
fn insert(tx: &Transaction<'_>, rows: &[Insert<'_>]) -> rusqlite::Result<()> {
    static INSERT: MultiRowInsert = MultiRowInsert::new(
        "INSERT INTO attr_instances(teid, attr, instance_id, dataset_id, observed_at, created_at, \
         modified_at, deleted_at, doc, num) VALUES",
        10,
    );
    let cells = rows
        .iter()
        .map(|row| InstanceCells::of(&row.instance))
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let rows: Vec<(&Insert<'_>, &InstanceCells)> = rows.iter().zip(&cells).collect();
    INSERT.run(tx, &rows, |(row, cells)| {
        let instance = &row.instance;
        [
            &row.series.teid,
            &row.series.attr,
            &instance.instance_key,
            &instance.dataset_id,
            &instance.observed_at,
            &cells.created_at,
            &cells.modified_at,
            &cells.deleted_at,
            &cells.doc,
            &cells.number,
        ]
    })?;
    for (row, cells) in rows {
        if let (true, Some(observed_at)) = (row.rolled_up, &row.instance.observed_at) {
            rollups::count(tx, row.series, row.instance.dataset_id, observed_at, cells.number)?;
        }
    }
    Ok(())
}

/// The cells of an instance's row that are made from it.
struct InstanceCells {
    created_at: String,
    modified_at: String,
    deleted_at: Option<String>,
    doc: String,
    number: Option<f64>,
}

impl InstanceCells {
    fn of(instance: &NewInstance<'_>) -> rusqlite::Result<Self> {
        // An instance is mostly created and modified at once: formatted once.
        let created_at = time::format(&instance.created_at);
        let modified_at = if instance.modified_at == instance.created_at {
            created_at.clone()
        } else {
            time::format(&instance.modified_at)
        };
        Ok(Self {
            created_at,
            modified_at,
            deleted_at: instance.deleted_at.as_ref().map(time::format),
            doc: instance_doc(instance.attribute)?,
            number: rollups::number_of(instance.attribute, instance.deleted_at.is_some()),
        })
    }
}

/// Creates or refreshes the temporal entity row (types added to, scope
/// replaced unless empty, modified now, not deleted); returns its row and
/// whether it was created.
fn upsert_entity(
    tx: &Transaction<'_>,
    tenant: &Tenant,
    id: &str,
    types: &[String],
    scope: &[String],
    now: Timestamp,
    keys: &mut NameKeys,
) -> rusqlite::Result<(i64, bool)> {
    let existing: Option<(i64, String)> = tx
        .prepare_cached("SELECT teid, types FROM temporal_entities WHERE tenant = ?1 AND id = ?2")?
        .query_row(params![tenant.name(), id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let stamp = time::format(&now);
    let types_json = to_json(&types)?;
    let Some((teid, known)) = existing else {
        keys.ensure_tenant(tx, tenant)?;
        tx.prepare_cached(
            "INSERT INTO temporal_entities(tenant, id, types, scope, created_at, modified_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
        )?
        .execute(params![tenant.name(), id, types_json, to_json(&scope)?, stamp])?;
        return Ok((tx.last_insert_rowid(), true));
    };
    // Most edits keep the types: then the stored list is written back as it is.
    let all = if known == types_json {
        known
    } else {
        let mut all: Vec<String> = serde_json::from_str(&known).unwrap_or_default();
        for t in types {
            if !all.contains(t) {
                all.push(t.clone());
            }
        }
        to_json(&all)?
    };
    tx.prepare_cached(
        "UPDATE temporal_entities SET types = ?2, scope = CASE WHEN ?3 = '[]' THEN scope ELSE ?3 END, \
         modified_at = ?4, deleted_at = NULL WHERE teid = ?1",
    )?
    .execute(params![teid, all, to_json(&scope)?, stamp])?;
    Ok((teid, false))
}

/// Records what an entity edit changed: every instance that is new or
/// differs from before, a deletion record for every instance that
/// disappeared, and the deletion of the entity itself.
pub(crate) fn record(
    tx: &Transaction<'_>,
    tenant: &Tenant,
    before: Option<&Entity>,
    after: Option<&Entity>,
    keys: &mut NameKeys,
) -> rusqlite::Result<()> {
    let now = after.and_then(|a| a.modified_at).unwrap_or_else(time::now);
    let Some(id) = after.or(before).map(|e| e.id.as_str()) else {
        return Ok(());
    };
    let (teid, created) = match after {
        Some(after) => upsert_entity(tx, tenant, id, &after.types, &after.scope, now, keys)?,
        // An entity deleted after its history was: nothing to record it in.
        None => match teid_of(tx, tenant, id)? {
            Some(teid) => (teid, false),
            None => return Ok(()),
        },
    };
    let rolled_up = if created {
        Vec::new()
    } else {
        rollups::rolled_up(tx, teid)?
    };
    // The deletion records of the instances that disappeared.
    let mut gone: Vec<(&str, Attribute)> = Vec::new();
    for (name, instances) in before.map(|b| &b.attributes).into_iter().flatten() {
        for instance in instances {
            let remains = after.is_some_and(|a| a.instance(name, instance.dataset_id.as_deref()).is_some());
            if !remains {
                let mut record = Attribute::new(instance.kind, serde_json::Value::Null);
                record.dataset_id = instance.dataset_id.clone();
                gone.push((name, record));
            }
        }
    }
    let mut rows = Vec::new();
    let mut add = |name: &str, instance| -> rusqlite::Result<()> {
        let attr = keys.get(tx, tenant, name, true)?.unwrap_or_default();
        rows.push(Insert {
            series: Series { teid, attr },
            rolled_up: rolled_up.contains(&attr),
            instance,
        });
        Ok(())
    };
    for (name, instances) in after.map(|a| &a.attributes).into_iter().flatten() {
        for instance in instances {
            let previous = before.and_then(|b| b.instance(name, instance.dataset_id.as_deref()));
            if previous != Some(instance) {
                let at = instance.modified_at.unwrap_or(now);
                add(name, new_instance(instance, at, None))?;
            }
        }
    }
    for (name, record) in &gone {
        add(name, new_instance(record, now, Some(now)))?;
    }
    insert(tx, &rows)?;
    if before.is_some() && after.is_none() {
        tx.prepare_cached("UPDATE temporal_entities SET deleted_at = ?2 WHERE teid = ?1")?
            .execute(params![teid, time::format(&now)])?;
    }
    Ok(())
}

fn not_found(id: &str) -> NgsiError {
    NgsiError::not_found(format!("temporal entity {id} not found"))
}

/// The row of temporal entity `id`, which must exist.
fn existing(tx: &Connection, tenant: &Tenant, id: &str) -> Result<i64, EditFailure> {
    teid_of(tx, tenant, id)?.ok_or_else(|| not_found(id).into())
}

/// Applies a temporal API edit.
pub(crate) fn edit(tx: &Transaction<'_>, tenant: &Tenant, edit: TemporalEdit) -> Result<bool, EditFailure> {
    let now = time::now();
    match edit {
        TemporalEdit::Upsert {
            id,
            types,
            scope,
            attributes,
        } => {
            let keys = &mut NameKeys::default();
            let (teid, created) = upsert_entity(tx, tenant, &id, &types, &scope, now, keys)?;
            add_instances(tx, tenant, teid, &attributes, now)?;
            Ok(created)
        }
        TemporalEdit::Append { id, attributes } => {
            let teid = existing(tx, tenant, &id)?;
            add_instances(tx, tenant, teid, &attributes, now)?;
            tx.prepare_cached("UPDATE temporal_entities SET modified_at = ?2 WHERE teid = ?1")?
                .execute(params![teid, time::format(&now)])?;
            Ok(false)
        }
        TemporalEdit::DeleteEntity { id } => {
            let teid = existing(tx, tenant, &id)?;
            tx.prepare_cached("DELETE FROM temporal_entities WHERE teid = ?1")?
                .execute([teid])?;
            tx.prepare_cached("DELETE FROM attr_instances WHERE teid = ?1")?
                .execute([teid])?;
            rollups::forget(tx, teid, None)?;
            Ok(false)
        }
        TemporalEdit::DeleteAttribute {
            id,
            attr,
            dataset_id,
            delete_all,
        } => {
            let teid = existing(tx, tenant, &id)?;
            let no_instances = || NgsiError::not_found(format!("attribute {attr} of {id} has no such instances"));
            let Some(key) = values::name_key(tx, tenant, &attr, false)? else {
                return Err(no_instances().into());
            };
            let series = Series { teid, attr: key };
            let n = if delete_all {
                tx.prepare_cached("DELETE FROM attr_instances WHERE teid = ?1 AND attr = ?2")?
                    .execute(params![teid, key])?
            } else {
                tx.prepare_cached("DELETE FROM attr_instances WHERE teid = ?1 AND attr = ?2 AND dataset_id IS ?3")?
                    .execute(params![teid, key, dataset_id])?
            };
            if n == 0 {
                return Err(no_instances().into());
            }
            if delete_all {
                rollups::forget(tx, teid, Some(key))?;
            } else {
                rollups::refresh(tx, series)?;
            }
            Ok(false)
        }
        TemporalEdit::ModifyInstance {
            id,
            attr,
            instance_id,
            instance,
        } => {
            let missing = || NgsiError::not_found(format!("instance {instance_id} of {attr} not found"));
            let Some(series) = series_of(tx, tenant, &id, &attr)? else {
                return Err(missing().into());
            };
            // `+`: found through `attr_instances_by_id`, one row, not through
            // the time index, which would read the attribute's whole history.
            let iid: Option<i64> = tx
                .prepare_cached("SELECT iid FROM attr_instances WHERE instance_id = ?1 AND +teid = ?2 AND +attr = ?3")?
                .query_row(params![instance_key(&instance_id), series.teid, series.attr], |r| {
                    r.get(0)
                })
                .optional()?;
            let Some(iid) = iid else {
                return Err(missing().into());
            };
            // Its createdAt stays in the row's column; modifiedAt is now.
            let attribute = *instance;
            tx.prepare_cached(
                "UPDATE attr_instances SET dataset_id = ?2, observed_at = ?3, modified_at = ?4, doc = ?5, num = ?6 \
                 WHERE iid = ?1",
            )?
            .execute(params![
                iid,
                attribute.dataset_id,
                observed(&attribute),
                time::format(&now),
                instance_doc(&attribute)?,
                rollups::number_of(&attribute, false),
            ])?;
            rollups::refresh(tx, series)?;
            Ok(false)
        }
        TemporalEdit::DeleteInstance { id, attr, instance_id } => {
            let teid = existing(tx, tenant, &id)?;
            let missing = || NgsiError::not_found(format!("instance {instance_id} of {attr} not found"));
            let Some(key) = values::name_key(tx, tenant, &attr, false)? else {
                return Err(missing().into());
            };
            let n = tx
                .prepare_cached("DELETE FROM attr_instances WHERE instance_id = ?1 AND +teid = ?2 AND +attr = ?3")?
                .execute(params![instance_key(&instance_id), teid, key])?;
            if n == 0 {
                return Err(missing().into());
            }
            rollups::refresh(tx, Series { teid, attr: key })?;
            Ok(false)
        }
    }
}

fn add_instances(
    tx: &Transaction<'_>,
    tenant: &Tenant,
    teid: i64,
    attributes: &[(String, Vec<Attribute>)],
    now: Timestamp,
) -> rusqlite::Result<()> {
    for (name, instances) in attributes {
        let attr = values::name_key(tx, tenant, name, true)?.unwrap_or_default();
        let series = Series { teid, attr };
        let rolled_up = rollups::is_rolled_up(tx, series)?;
        let rows: Vec<Insert<'_>> = instances
            .iter()
            .map(|instance| Insert {
                series,
                rolled_up,
                instance: new_instance(instance, now, None),
            })
            .collect();
        insert(tx, &rows)?;
    }
    Ok(())
}

/// Deletes a tenant's history (before its names, which key it, are gone).
pub(crate) fn clear(tx: &Transaction<'_>, tenant: &Tenant) -> rusqlite::Result<()> {
    for table in ["attr_rollups", "rolled_up", "attr_instances"] {
        tx.prepare_cached(&format!(
            "DELETE FROM {table} WHERE teid IN (SELECT teid FROM temporal_entities WHERE tenant = ?1)"
        ))?
        .execute([tenant.name()])?;
    }
    tx.prepare_cached("DELETE FROM temporal_entities WHERE tenant = ?1")?
        .execute([tenant.name()])?;
    Ok(())
}

/// Why a temporal edit did not apply.
pub(crate) enum EditFailure {
    Ngsi(NgsiError),
    Sql(rusqlite::Error),
}

impl From<NgsiError> for EditFailure {
    fn from(e: NgsiError) -> Self {
        Self::Ngsi(e)
    }
}

impl From<rusqlite::Error> for EditFailure {
    fn from(e: rusqlite::Error) -> Self {
        Self::Sql(e)
    }
}

fn column(property: TimeProperty) -> &'static str {
    match property {
        TimeProperty::ObservedAt => "observed_at",
        TimeProperty::CreatedAt => "created_at",
        TimeProperty::ModifiedAt => "modified_at",
        TimeProperty::DeletedAt => "deleted_at",
    }
}

fn corrupt(what: &str) -> impl Fn(serde_json::Error) -> StoreError + '_ {
    move |e| StoreError::Corrupt(format!("{what}: {e}"))
}

struct Header {
    teid: i64,
    types: Vec<String>,
    scope: Vec<String>,
    created_at: Option<Timestamp>,
    modified_at: Option<Timestamp>,
    deleted_at: Option<Timestamp>,
}

fn header(connection: &Connection, tenant: &Tenant, id: &str) -> StoreResult<Option<Header>> {
    let row: Option<(i64, String, String, String, String, Option<String>)> = connection
        .prepare_cached(
            "SELECT teid, types, scope, created_at, modified_at, deleted_at FROM temporal_entities \
             WHERE tenant = ?1 AND id = ?2",
        )
        .and_then(|mut s| {
            s.query_row(params![tenant.name(), id], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?))
            })
            .optional()
        })
        .map_err(sql)?;
    row.map(|(teid, types, scope, created, modified, deleted)| {
        Ok(Header {
            teid,
            types: serde_json::from_str(&types).map_err(corrupt("temporal types"))?,
            scope: serde_json::from_str(&scope).map_err(corrupt("temporal scope"))?,
            created_at: time::parse(&created),
            modified_at: time::parse(&modified),
            deleted_at: deleted.as_deref().and_then(time::parse),
        })
    })
    .transpose()
}

/// The attributes with history, by name, with their numbers: the numbers
/// found by skipping through the instance index one at a time (a
/// `DISTINCT` would read every instance of a long history).
fn attribute_names(connection: &Connection, teid: i64) -> StoreResult<Vec<(String, i64)>> {
    let mut next = connection
        .prepare_cached("SELECT attr FROM attr_instances WHERE teid = ?1 AND attr > ?2 ORDER BY attr LIMIT 1")
        .map_err(sql)?;
    let mut name = connection
        .prepare_cached("SELECT name FROM value_names WHERE key = ?1")
        .map_err(sql)?;
    let mut names = Vec::new();
    let mut after = i64::MIN;
    while let Some(key) = next
        .query_row(params![teid, after], |r| r.get::<_, i64>(0))
        .optional()
        .map_err(sql)?
    {
        after = key;
        names.push((name.query_row([key], |r| r.get::<_, String>(0)).map_err(sql)?, key));
    }
    names.sort_unstable();
    Ok(names)
}

fn instance_from_row(row: &rusqlite::Row<'_>) -> StoreResult<Instance> {
    let text = |i: usize| row.get_ref(i).and_then(|v| Ok(v.as_str_or_null()?)).map_err(sql);
    Ok(Instance {
        instance_id: row.get_ref(0).and_then(instance_id_of).map_err(sql)?,
        attribute: attribute_from_row(
            text(1)?.unwrap_or_default(),
            text(3)?.and_then(time::parse),
            text(4)?.and_then(time::parse),
        )?,
        deleted_at: text(2)?.and_then(time::parse),
    })
}

/// The instances of one attribute selected by `query`, ascending, at most
/// as many as a response can hold.
fn instances(connection: &Connection, series: Series, query: &TemporalQuery) -> StoreResult<Vec<Instance>> {
    let col = column(query.timeproperty);
    let mut clause = String::from("teid = ?1 AND attr = ?2");
    let mut args = vec![SqlValue::Integer(series.teid), SqlValue::Integer(series.attr)];
    if let Some(rel) = query.timerel {
        let (lo, hi) = rel.bounds();
        if let Some(lo) = lo {
            args.push(SqlValue::Text(time::format(&lo)));
            clause.push_str(&format!(" AND {col} >= ?{}", args.len()));
        }
        if let Some(hi) = hi {
            args.push(SqlValue::Text(time::format(&hi)));
            clause.push_str(&format!(" AND {col} < ?{}", args.len()));
        }
    } else if query.timeproperty == TimeProperty::DeletedAt {
        clause.push_str(" AND deleted_at IS NOT NULL");
    }
    let cap = query.instance_limit.saturating_add(1);
    let (order, limit) = match query.last_n {
        Some(n) => ("DESC", n.min(cap)),
        None => ("ASC", cap),
    };
    args.push(SqlValue::Integer(i64::try_from(limit).unwrap_or(i64::MAX)));
    let statement = format!(
        "SELECT instance_id, doc, deleted_at, created_at, modified_at FROM attr_instances WHERE {clause} \
         ORDER BY {col} {order}, created_at {order}, iid {order} LIMIT ?{}",
        args.len()
    );
    let mut statement = connection.prepare_cached(&statement).map_err(sql)?;
    let mut rows = statement.query(params_from_iter(args)).map_err(sql)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(sql)? {
        out.push(instance_from_row(row)?);
    }
    if query.last_n.is_some() {
        out.reverse();
    }
    Ok(out)
}

/// The history of one entity. With `to_roll_up`, an aggregation over a long
/// history that has no rollups yet is left out of the answer and the
/// history added there, to be rolled up and read again (up to
/// `ROLL_UPS_PER_READ` of them).
pub(crate) fn entity(
    connection: &Connection,
    tenant: &Tenant,
    id: &str,
    query: &TemporalQuery,
    mut to_roll_up: Option<&mut Vec<Series>>,
) -> StoreResult<Option<TemporalEntity>> {
    let Some(header) = header(connection, tenant, id)? else {
        return Ok(None);
    };
    let mut entity = TemporalEntity {
        id: id.to_owned(),
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
        // A name never recorded in the tenant has no number, and no history.
        Some(names) => {
            let mut numbered = Vec::with_capacity(names.len());
            for name in names {
                if let Some(key) = values::name_key(connection, tenant, &name, false).map_err(sql)? {
                    numbered.push((name, key));
                }
            }
            numbered
        }
        None => attribute_names(connection, header.teid)?,
    };
    for (name, attr) in names {
        let series = Series {
            teid: header.teid,
            attr,
        };
        match rollups::summarised(connection, series, query)? {
            Summarised::Groups(groups) => {
                entity.summaries.insert(name, groups);
                continue;
            }
            Summarised::NotRolledUp => {
                let room = to_roll_up
                    .as_deref_mut()
                    .filter(|s| s.len() < rollups::ROLL_UPS_PER_READ);
                if let Some(to_roll_up) = room {
                    if rollups::long_in_range(connection, series, query)? {
                        to_roll_up.push(series);
                        continue;
                    }
                }
            }
            Summarised::Instances => {}
        }
        let found = instances(connection, series, query)?;
        if !found.is_empty() {
            entity.attributes.insert(name, found);
        }
    }
    temporal::paginate(&mut entity, query);
    Ok(Some(entity))
}

/// The latest recorded state of a temporal entity, for evaluating `q`,
/// geo-queries and `attrs` of a temporal query.
fn latest(connection: &Connection, id: &str, header: &Header) -> StoreResult<Entity> {
    let mut entity = Entity::new(id, header.types.clone());
    entity.scope = header.scope.clone();
    let mut statement = connection
        .prepare_cached(
            "SELECT n.name, i.doc, i.deleted_at, i.created_at, i.modified_at FROM attr_instances i \
             JOIN value_names n ON n.key = i.attr \
             WHERE i.teid = ?1 ORDER BY i.attr, COALESCE(i.observed_at, i.created_at), i.iid",
        )
        .map_err(sql)?;
    let rows = statement
        .query_map([header.teid], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Option<String>>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
            ))
        })
        .map_err(sql)?;
    for row in rows {
        let (attr, doc, deleted_at, created, modified) = row.map_err(sql)?;
        let attribute = attribute_from_row(&doc, time::parse(&created), time::parse(&modified))?;
        let instances = entity.attributes.entry(attr).or_default();
        instances.retain(|i| i.dataset_id != attribute.dataset_id);
        if deleted_at.is_none() {
            instances.push(attribute);
        }
    }
    entity.attributes.retain(|_, instances| !instances.is_empty());
    Ok(entity)
}

/// Whether the temporal entity `id` passes what SQL could not test of
/// `entities`. `attrs` alone is answered from the instance index; only `q`
/// and geo-queries need the entity's latest state rebuilt from its history.
fn passes(connection: &Connection, tenant: &Tenant, id: &str, entities: &EntityQuery) -> StoreResult<bool> {
    let Some(header) = header(connection, tenant, id)? else {
        return Ok(false);
    };
    let state = if entities.q.is_some() || entities.geo.is_some() {
        latest(connection, id, &header)?
    } else {
        let mut bare = Entity::new(id, header.types.clone());
        bare.scope = header.scope.clone();
        for attr in &entities.attrs {
            if has_history(connection, tenant, header.teid, attr)? {
                bare.attributes.insert(attr.clone(), Vec::new());
            }
        }
        bare
    };
    Ok(entities.matches(&state))
}

/// Whether `attr` of temporal entity `teid` has any recorded instance.
fn has_history(connection: &Connection, tenant: &Tenant, teid: i64, attr: &str) -> StoreResult<bool> {
    let Some(key) = values::name_key(connection, tenant, attr, false).map_err(sql)? else {
        return Ok(false);
    };
    connection
        .prepare_cached("SELECT 1 FROM attr_instances WHERE teid = ?1 AND attr = ?2 LIMIT 1")
        .and_then(|mut s| s.exists(params![teid, key]))
        .map_err(sql)
}

/// The `SELECT` of the ids of the tenant's temporal entities that SQL
/// finds for `entities` (its ids, a plain list of types, its attributes
/// with any history, any history in the time range of `query`), in the
/// order of the answer, with its arguments; and whether that is all the
/// test there is (nothing left for Rust but the page).
struct Candidates {
    sql: String,
    args: Vec<SqlValue>,
    exact: bool,
}

/// The filter keeping the entities with an instance of `query`'s
/// attributes in the time range `rel`: one without has no history to show,
/// and is no candidate, so that offsets and counts agree with the pages.
fn history_in(rel: TimeRel, query: &TemporalQuery, args: &mut Vec<SqlValue>) -> String {
    let col = column(query.timeproperty);
    let mut clause = String::new();
    if !query.attrs.is_empty() {
        clause.push_str(&format!(" AND h.attr IN ({})", values::keys_of(args, &query.attrs)));
    }
    let (lo, hi) = rel.bounds();
    for (bound, op) in [(lo, ">="), (hi, "<")] {
        if let Some(bound) = bound {
            args.push(SqlValue::Text(time::format(&bound)));
            clause.push_str(&format!(" AND h.{col} {op} ?{}", args.len()));
        }
    }
    format!(" AND EXISTS (SELECT 1 FROM attr_instances h WHERE h.teid = te.teid{clause})")
}

fn candidates(tenant: &Tenant, entities: &EntityQuery, query: &TemporalQuery) -> Candidates {
    let mut args = vec![SqlValue::Text(tenant.name().to_owned())];
    let mut filter = String::from("te.tenant = ?1");
    if !entities.ids.is_empty() {
        filter.push_str(&format!(" AND te.id IN ({})", placeholders(&mut args, &entities.ids)));
    }
    let types = entities.types.as_ref().map(|t| t.alternatives());
    if let Some(Some(types)) = &types {
        // The types column is a short JSON array; json_each reads it in C,
        // where building each entity's header in Rust cost a query apiece.
        filter.push_str(&format!(
            " AND EXISTS (SELECT 1 FROM json_each(te.types) j WHERE j.value IN ({}))",
            placeholders(&mut args, types)
        ));
    }
    if !entities.attrs.is_empty() && !range_implies_attrs(entities, query) {
        // One probe of the (teid, attr, …) index per name.
        filter.push_str(&format!(
            " AND EXISTS (SELECT 1 FROM attr_instances a WHERE a.teid = te.teid AND a.attr IN ({}))",
            values::keys_of(&mut args, &entities.attrs)
        ));
    }
    if let Some(rel) = query.timerel {
        filter.push_str(&history_in(rel, query, &mut args));
    }
    let order = match query.order_by_id {
        Some(false) => "te.id",
        Some(true) => "te.id DESC",
        None => "te.teid",
    };
    let exact = !matches!(types, Some(None))
        && entities.id_pattern.is_none()
        && entities.q.is_none()
        && entities.geo.is_none()
        && entities.scope.is_none()
        && entities.alternatives.is_empty();
    Candidates {
        sql: format!("SELECT te.id FROM temporal_entities te WHERE {filter} ORDER BY {order}"),
        args,
        exact,
    }
}

/// The histories of a page of entities (`to_roll_up`: as for [`entity`]).
pub(crate) fn query(
    connection: &Connection,
    tenant: &Tenant,
    entities: &EntityQuery,
    query: &TemporalQuery,
    page: Page,
    mut to_roll_up: Option<&mut Vec<Series>>,
) -> StoreResult<TemporalQueryResult> {
    // One snapshot for the candidates and their histories.
    let snapshot = connection.unchecked_transaction().map_err(sql)?;
    let connection: &Connection = &snapshot;
    let Candidates {
        sql: select,
        args,
        exact,
    } = candidates(tenant, entities, query);
    // Read as the page needs them: a page of 20 stops after its 20th
    // entity instead of listing the whole type first.
    let mut statement = connection.prepare_cached(&select).map_err(sql)?;
    let mut ids = statement.query(params_from_iter(args)).map_err(sql)?;
    let mut result = TemporalQueryResult::default();
    let mut pager = Pager::new(page);
    while let Some(row) = ids.next().map_err(sql)? {
        let id: String = row.get(0).map_err(sql)?;
        if exact {
            // SQL has tested it all: an entity before the offset (or after
            // a full page, for the count) costs nothing more.
            match pager.next_step() {
                PageStep::Stop => break,
                PageStep::Skip => {
                    pager.counted(false);
                    continue;
                }
                PageStep::Take => {}
            }
        }
        if !exact && !passes(connection, tenant, &id, entities)? {
            continue;
        }
        match pager.next_step() {
            PageStep::Stop => break,
            PageStep::Skip => pager.counted(false),
            PageStep::Take => {
                let Some(history) = entity(connection, tenant, &id, query, to_roll_up.as_deref_mut())? else {
                    continue;
                };
                if !history.has_attributes() && (query.timerel.is_some() || !query.attrs.is_empty()) {
                    continue;
                }
                result.entities.push(history);
                pager.counted(true);
            }
        }
    }
    result.total = pager.total();
    Ok(result)
}

#[cfg(test)]
mod tests {
    use piazza_ngsild::temporal::TemporalQuery;
    use piazza_ngsild::{Attribute, AttributeKind};
    use piazza_store::{Store, TemporalEdit, Tenant};
    use serde_json::json;

    use crate::EmbeddedStore;

    const ID: &str = "urn:ngsi-ld:R:1";
    const ATTR: &str = "https://example.org/t";

    async fn only_instance(store: &EmbeddedStore) -> piazza_ngsild::temporal::Instance {
        let entity = store
            .temporal_entity(&Tenant::default(), ID, &TemporalQuery::default())
            .await
            .expect("read")
            .expect("entity");
        let instances = &entity.attributes[ATTR];
        assert_eq!(instances.len(), 1);
        instances[0].clone()
    }

    #[test]
    fn our_instance_ids_are_stored_as_16_bytes_and_read_back_exactly() {
        use rusqlite::types::{Value, ValueRef};
        let uuid = uuid::Uuid::now_v7();
        let ours = format!("{}{uuid}", piazza_ngsild::temporal::INSTANCE_PREFIX);
        let capitals = format!(
            "{}{}",
            piazza_ngsild::temporal::INSTANCE_PREFIX,
            uuid.to_string().to_uppercase()
        );
        let key = super::instance_key(&ours);
        let Value::Blob(bytes) = &key else {
            panic!("stored as {key:?}")
        };
        assert_eq!(bytes.len(), 16);
        assert_eq!(super::instance_id_of(ValueRef::Blob(bytes)).expect("id"), ours);
        // Anything else is kept as it came, even a UUID in capitals.
        for other in [
            capitals,
            "urn:ngsi-ld:attribute:instance:x".to_owned(),
            "urn:x:1".to_owned(),
        ] {
            assert_eq!(super::instance_key(&other), Value::Text(other.clone()));
            assert_eq!(
                super::instance_id_of(ValueRef::Text(other.as_bytes())).expect("id"),
                other
            );
        }
    }

    #[tokio::test]
    async fn an_instance_keeps_its_system_times_in_its_columns_only() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = EmbeddedStore::open(dir.path()).expect("open");
        let tenant = Tenant::default();
        let edit = TemporalEdit::Upsert {
            id: ID.into(),
            types: vec!["https://example.org/R".into()],
            scope: Vec::new(),
            attributes: vec![(ATTR.into(), vec![Attribute::new(AttributeKind::Property, json!(1))])],
        };
        store.temporal_edit(&tenant, edit).await.expect("store").expect("edit");
        let first = only_instance(&store).await;
        let created = first.attribute.created_at.expect("createdAt read back");
        assert_eq!(first.attribute.modified_at, Some(created));

        let modify = TemporalEdit::ModifyInstance {
            id: ID.into(),
            attr: ATTR.into(),
            instance_id: first.instance_id.clone(),
            instance: Box::new(Attribute::new(AttributeKind::Property, json!(2))),
        };
        store
            .temporal_edit(&tenant, modify)
            .await
            .expect("store")
            .expect("modify");
        let second = only_instance(&store).await;
        assert_eq!(second.attribute.value, json!(2));
        assert_eq!(
            second.attribute.created_at,
            Some(created),
            "createdAt survives a modification"
        );
        assert!(second.attribute.modified_at.expect("modifiedAt") > created);
        let path = store.path().to_owned();
        drop(store);

        let connection = rusqlite::Connection::open(path).expect("sqlite");
        let doc: String = connection
            .query_row("SELECT doc FROM attr_instances", [], |r| r.get(0))
            .expect("doc");
        assert!(!doc.contains("created_at") && !doc.contains("modified_at"), "{doc}");
    }

    /// An edit's instances go in several to a statement, in chunks: every
    /// instance of a 40-attribute entity is recorded once with its value,
    /// under its own id, and replacing it with half its attributes records
    /// those again and a deletion for each of the other half.
    #[tokio::test]
    async fn every_instance_of_a_large_edit_is_recorded_once() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = EmbeddedStore::open(dir.path()).expect("open");
        let tenant = Tenant::default();
        let body = |attributes: usize| {
            let mut body = json!({"id": ID, "type": "R"});
            for i in 0..attributes {
                body[format!("a{i}")] = json!({"type": "Property", "value": i});
            }
            body
        };
        // Created with 40 attributes, then replaced by its first 20.
        for attributes in [40, 20] {
            store
                .edit(&tenant, vec![crate::tests::replace_with(body(attributes))])
                .await
                .expect("store")
                .remove(0)
                .expect("edit");
        }
        let entity = store
            .temporal_entity(&tenant, ID, &TemporalQuery::default())
            .await
            .expect("read")
            .expect("entity");
        let mut ids = std::collections::HashSet::new();
        for i in 0..40 {
            let name = format!("https://uri.etsi.org/ngsi-ld/default-context/a{i}");
            let instances = &entity.attributes[&name];
            let values: Vec<_> = instances
                .iter()
                .map(|x| (x.attribute.value.clone(), x.deleted_at.is_some()))
                .collect();
            // A replacement stamps its attributes anew: the kept ones are recorded again.
            let expected = if i < 20 {
                vec![(json!(i), false), (json!(i), false)]
            } else {
                vec![(json!(i), false), (json!(null), true)]
            };
            let mut values = values;
            values.sort_by_key(|(_, deleted)| *deleted);
            assert_eq!(values, expected, "{name}");
            ids.extend(instances.iter().map(|x| x.instance_id.clone()));
        }
        assert_eq!(ids.len(), 80, "every instance has its own id");
    }
}
