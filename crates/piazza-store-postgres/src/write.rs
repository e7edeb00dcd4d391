//! Write paths: entity edits (one transaction per call), contexts and
//! resources.

use std::collections::BTreeSet;

use deadpool_postgres::{GenericClient, Transaction};
use piazza_ngsild::query::GeoQuery;
use piazza_ngsild::{time, AttributeKind, Entity, NgsiError};
use piazza_store::{Applied, Edit, NewState, ResourceKind, StoredContext, Tenant};
use serde_json::Value;
use tokio_postgres::types::{Json, ToSql};

use crate::{temporal, Error, Result};

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

/// The lock keys of `ids`, sorted and without repeats.
pub(crate) fn lock_keys<'a>(tenant: &Tenant, ids: impl IntoIterator<Item = &'a str>) -> Vec<i64> {
    let keys: BTreeSet<i64> = ids.into_iter().map(|id| lock_key(tenant, id)).collect();
    keys.into_iter().collect()
}

/// Takes the advisory locks of `keys` (from [`lock_keys`]), in ascending
/// order: two calls that lock overlapping sets always queue on the same
/// first common key, so they never deadlock.
pub(crate) async fn lock_entities(transaction: &Transaction<'_>, keys: &[i64]) -> Result<()> {
    let statement = transaction
        .prepare_cached("SELECT pg_advisory_xact_lock(k) FROM unnest($1::int8[]) AS u(k) ORDER BY k")
        .await?;
    transaction.execute(&statement, &[&keys]).await?;
    Ok(())
}

/// Applies `edits` in one transaction, each seeing the effects of those
/// before it.
pub(crate) async fn apply(
    client: &mut deadpool_postgres::Object,
    tenant: &Tenant,
    edits: Vec<Edit>,
) -> Result<Vec<std::result::Result<Applied, NgsiError>>> {
    let keys = lock_keys(tenant, edits.iter().map(|e| e.entity_id.as_str()));
    let transaction = client.transaction().await?;
    lock_entities(&transaction, &keys).await?;
    let mut writer = Writer {
        transaction: &transaction,
        tenant,
        tenant_recorded: false,
    };
    let mut results = Vec::with_capacity(edits.len());
    for edit in edits {
        results.push(writer.apply_one(edit).await?);
    }
    transaction.commit().await?;
    Ok(results)
}

/// An entity row as stored: its key, the names it is indexed under, and
/// the entity unless it expired.
struct Stored {
    eid: i64,
    keys: IndexKeys,
    live: Option<Entity>,
}

/// The index rows of an entity: its types, its attributes with kinds, and
/// the boxes of its GeoProperty values.
#[derive(Default, PartialEq)]
struct IndexKeys {
    types: BTreeSet<String>,
    attrs: BTreeSet<(String, String)>,
    geo: Vec<(String, [f64; 4])>,
}

impl IndexKeys {
    fn of(entity: &Entity) -> Self {
        let attrs = entity
            .attributes
            .iter()
            .flat_map(|(name, instances)| instances.iter().map(move |i| (name.clone(), i.kind.name().to_owned())))
            .collect();
        let geo = entity
            .attributes
            .iter()
            .flat_map(|(name, instances)| {
                instances
                    .iter()
                    .filter(|i| i.kind == AttributeKind::GeoProperty)
                    .filter_map(move |i| GeoQuery::value_bounds(&i.value).map(|bounds| (name.clone(), bounds)))
            })
            .collect();
        Self {
            types: entity.types.iter().cloned().collect(),
            attrs,
            geo,
        }
    }
}

struct Writer<'t> {
    transaction: &'t Transaction<'t>,
    tenant: &'t Tenant,
    /// Whether this transaction already made sure the tenant is listed.
    tenant_recorded: bool,
}

impl Writer<'_> {
    async fn apply_one(&mut self, edit: Edit) -> Result<std::result::Result<Applied, NgsiError>> {
        let stored = self.load(&edit.entity_id).await?;
        let before = stored.as_ref().and_then(|s| s.live.clone());
        let outcome = match (edit.apply)(before.as_ref()) {
            Ok(outcome) => outcome,
            // A refused edit wrote nothing: nothing to undo.
            Err(refusal) => return Ok(Err(refusal)),
        };
        let after = match outcome.state {
            NewState::Keep => before.clone(),
            NewState::Put(entity) => {
                self.put(stored, &entity).await?;
                temporal::record(self.transaction, self.tenant, before.as_ref(), Some(&entity)).await?;
                Some(entity)
            }
            NewState::Delete => {
                if let Some(stored) = stored {
                    self.delete(stored.eid).await?;
                    temporal::record(self.transaction, self.tenant, before.as_ref(), None).await?;
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

    /// Reads the row and locks it until the commit. An expired entity is
    /// absent, and its id may be created afresh (over the same row).
    async fn load(&self, id: &str) -> Result<Option<Stored>> {
        let statement = self
            .transaction
            .prepare_cached("SELECT eid, doc FROM entities WHERE tenant = $1 AND id = $2 FOR UPDATE")
            .await?;
        let Some(row) = self
            .transaction
            .query_opt(&statement, &[&self.tenant.name(), &id])
            .await?
        else {
            return Ok(None);
        };
        let entity = decode_entity(&row, 1)?;
        Ok(Some(Stored {
            eid: row.try_get(0)?,
            keys: IndexKeys::of(&entity),
            live: entity.live(time::now()),
        }))
    }

    async fn put(&mut self, stored: Option<Stored>, entity: &Entity) -> Result<()> {
        let tenant = self.tenant.name();
        let (eid, old_keys) = match stored {
            Some(stored) => {
                execute(
                    self.transaction,
                    "UPDATE entities SET doc = $3 WHERE tenant = $1 AND eid = $2",
                    &[&tenant, &stored.eid, &Json(entity)],
                )
                .await?;
                (stored.eid, stored.keys)
            }
            None => {
                self.record_tenant().await?;
                let statement = self
                    .transaction
                    .prepare_cached("INSERT INTO entities(tenant, id, doc) VALUES ($1, $2, $3) RETURNING eid")
                    .await?;
                let row = self
                    .transaction
                    .query_one(&statement, &[&tenant, &entity.id, &Json(entity)])
                    .await?;
                (row.try_get(0)?, IndexKeys::default())
            }
        };
        let new_keys = IndexKeys::of(entity);
        if new_keys != old_keys {
            self.reindex(eid, &old_keys, &new_keys).await?;
        }
        Ok(())
    }

    /// Rewrites only the index rows that changed: most updates change values,
    /// not the set of attributes, and then touch no index row at all.
    async fn reindex(&self, eid: i64, old: &IndexKeys, new: &IndexKeys) -> Result<()> {
        let tenant = self.tenant.name();
        let gone_types: Vec<&String> = old.types.difference(&new.types).collect();
        let new_types: Vec<&String> = new.types.difference(&old.types).collect();
        let (gone_names, gone_kinds): (Vec<&String>, Vec<&String>) =
            old.attrs.difference(&new.attrs).map(|(n, k)| (n, k)).unzip();
        let (new_names, new_kinds): (Vec<&String>, Vec<&String>) =
            new.attrs.difference(&old.attrs).map(|(n, k)| (n, k)).unzip();
        if !gone_types.is_empty() {
            execute(
                self.transaction,
                "DELETE FROM entity_types WHERE tenant = $1 AND eid = $2 AND type = ANY($3)",
                &[&tenant, &eid, &gone_types],
            )
            .await?;
        }
        if !new_types.is_empty() {
            execute(
                self.transaction,
                "INSERT INTO entity_types(tenant, eid, type) SELECT $1, $2, unnest($3::text[])",
                &[&tenant, &eid, &new_types],
            )
            .await?;
        }
        if !gone_names.is_empty() {
            execute(
                self.transaction,
                "DELETE FROM entity_attrs WHERE tenant = $1 AND eid = $2 \
                 AND (name, kind) IN (SELECT * FROM unnest($3::text[], $4::text[]))",
                &[&tenant, &eid, &gone_names, &gone_kinds],
            )
            .await?;
        }
        if new.geo != old.geo {
            self.reindex_geo(eid, &new.geo).await?;
        }
        if !new_names.is_empty() {
            execute(
                self.transaction,
                "INSERT INTO entity_attrs(tenant, eid, name, kind) SELECT $1, $2, n, k \
                 FROM unnest($3::text[], $4::text[]) AS u(n, k)",
                &[&tenant, &eid, &new_names, &new_kinds],
            )
            .await?;
        }
        Ok(())
    }

    /// Replaces the boxes of an entity (few rows: one per GeoProperty value).
    async fn reindex_geo(&self, eid: i64, boxes: &[(String, [f64; 4])]) -> Result<()> {
        let tenant = self.tenant.name();
        execute(
            self.transaction,
            "DELETE FROM entity_geo WHERE tenant = $1 AND eid = $2",
            &[&tenant, &eid],
        )
        .await?;
        if boxes.is_empty() {
            return Ok(());
        }
        let names: Vec<&str> = boxes.iter().map(|(name, _)| name.as_str()).collect();
        let corner = |i: usize| boxes.iter().map(|(_, b)| b[i]).collect::<Vec<f64>>();
        execute(
            self.transaction,
            "INSERT INTO entity_geo(tenant, eid, attr, bbox) SELECT $1, $2, n, box(point(x0, y0), point(x1, y1)) \
             FROM unnest($3::text[], $4::float8[], $5::float8[], $6::float8[], $7::float8[]) AS u(n, x0, y0, x1, y1)",
            &[&tenant, &eid, &names, &corner(0), &corner(1), &corner(2), &corner(3)],
        )
        .await?;
        Ok(())
    }

    async fn delete(&self, eid: i64) -> Result<()> {
        let tenant = self.tenant.name();
        for statement in [
            "DELETE FROM entity_types WHERE tenant = $1 AND eid = $2",
            "DELETE FROM entity_attrs WHERE tenant = $1 AND eid = $2",
            "DELETE FROM entity_geo WHERE tenant = $1 AND eid = $2",
            "DELETE FROM entities WHERE tenant = $1 AND eid = $2",
        ] {
            execute(self.transaction, statement, &[&tenant, &eid]).await?;
        }
        Ok(())
    }

    async fn record_tenant(&mut self) -> Result<()> {
        if !self.tenant_recorded {
            record_tenant(self.transaction, self.tenant).await?;
            self.tenant_recorded = true;
        }
        Ok(())
    }
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
    Ok(())
}

pub(crate) async fn delete_context(client: &impl GenericClient, tenant: &Tenant, id: &str) -> Result<bool> {
    let deleted = execute(
        client,
        "DELETE FROM contexts WHERE tenant = $1 AND id = $2",
        &[&tenant.name(), &id],
    )
    .await?;
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
    }
    transaction.commit().await?;
    Ok(changed > 0)
}

pub(crate) async fn delete_resource(
    client: &impl GenericClient,
    tenant: &Tenant,
    kind: ResourceKind,
    id: &str,
) -> Result<bool> {
    let deleted = execute(
        client,
        "DELETE FROM resources WHERE tenant = $1 AND kind = $2 AND id = $3",
        &[&tenant.name(), &kind.name(), &id],
    )
    .await?;
    Ok(deleted > 0)
}
