//! The index rows of many entities at once: what a call adds or removes,
//! written in one statement per table. A statement per entity and table was
//! most of a batch's time on the server (BENCHMARKS.md, "PostgreSQL: a
//! call's rows per table").

use deadpool_postgres::GenericClient;
use piazza_ngsild::query::q::IndexedValue;
use tokio_postgres::types::ToSql;

use crate::values::Columns;
use crate::write::{execute, execute_rows, GeoRow, IndexKeys};
use crate::Result;

/// Index rows of one tenant's entities, by table.
pub(crate) struct IndexRows<'a> {
    tenant: &'a str,
    type_eids: Vec<i64>,
    types: Vec<&'a str>,
    attr_eids: Vec<i64>,
    attr_names: Vec<&'a str>,
    attr_kinds: Vec<&'a str>,
    geo: Vec<(i64, &'a GeoRow)>,
    values: Columns<'a>,
}

impl<'a> IndexRows<'a> {
    pub(crate) fn new(tenant: &'a str) -> Self {
        Self {
            tenant,
            type_eids: Vec::new(),
            types: Vec::new(),
            attr_eids: Vec::new(),
            attr_names: Vec::new(),
            attr_kinds: Vec::new(),
            geo: Vec::new(),
            values: Columns::default(),
        }
    }

    /// Every row of `keys`, for entity `eid`.
    pub(crate) fn push_all(&mut self, eid: i64, keys: &'a IndexKeys) {
        self.push_types(eid, &keys.types);
        self.push_attrs(eid, &keys.attrs);
        self.push_geo(eid, &keys.geo);
        self.push_values(eid, &keys.values);
    }

    pub(crate) fn push_types(&mut self, eid: i64, types: impl IntoIterator<Item = &'a String>) {
        for entity_type in types {
            self.type_eids.push(eid);
            self.types.push(entity_type);
        }
    }

    pub(crate) fn push_attrs(&mut self, eid: i64, attrs: impl IntoIterator<Item = &'a (String, String)>) {
        for (name, kind) in attrs {
            self.attr_eids.push(eid);
            self.attr_names.push(name);
            self.attr_kinds.push(kind);
        }
    }

    pub(crate) fn push_geo(&mut self, eid: i64, rows: &'a [GeoRow]) {
        self.geo.extend(rows.iter().map(|row| (eid, row)));
    }

    pub(crate) fn push_values(&mut self, eid: i64, rows: impl IntoIterator<Item = &'a (String, IndexedValue)>) {
        self.values.extend(self.tenant, eid, rows);
    }

    /// Inserts the rows, their statements pipelined.
    pub(crate) async fn insert(&self, client: &impl GenericClient, postgis: bool) -> Result<()> {
        let types: [&(dyn ToSql + Sync); 3] = [&self.tenant, &self.type_eids, &self.types];
        let attrs: [&(dyn ToSql + Sync); 4] = [&self.tenant, &self.attr_eids, &self.attr_names, &self.attr_kinds];
        tokio::try_join!(
            execute_rows(
                client,
                self.types.len(),
                "INSERT INTO entity_types(tenant, eid, type) SELECT $1, e, t FROM unnest($2::int8[], $3::text[]) AS u(e, t)",
                &types,
            ),
            execute_rows(
                client,
                self.attr_names.len(),
                "INSERT INTO entity_attrs(tenant, eid, name, kind) SELECT $1, e, n, k \
                 FROM unnest($2::int8[], $3::text[], $4::text[]) AS u(e, n, k)",
                &attrs,
            ),
            crate::write::insert_geo(client, self.tenant, &self.geo, postgis),
            self.values.insert(client)
        )?;
        Ok(())
    }

    /// Deletes the type, attribute and value rows (geo rows go whole, by
    /// entity: [`forget_geo`]).
    pub(crate) async fn delete(&self, client: &impl GenericClient) -> Result<()> {
        let types: [&(dyn ToSql + Sync); 3] = [&self.tenant, &self.type_eids, &self.types];
        let attrs: [&(dyn ToSql + Sync); 4] = [&self.tenant, &self.attr_eids, &self.attr_names, &self.attr_kinds];
        tokio::try_join!(
            execute_rows(
                client,
                self.types.len(),
                "DELETE FROM entity_types x USING unnest($2::int8[], $3::text[]) AS u(e, t) \
                 WHERE x.tenant = $1 AND x.eid = u.e AND x.type = u.t",
                &types,
            ),
            execute_rows(
                client,
                self.attr_names.len(),
                "DELETE FROM entity_attrs x USING unnest($2::int8[], $3::text[], $4::text[]) AS u(e, n, k) \
                 WHERE x.tenant = $1 AND x.eid = u.e AND x.name = u.n AND x.kind = u.k",
                &attrs,
            ),
            self.values.delete(client)
        )?;
        Ok(())
    }
}

/// The tables of an entity's index rows, keyed by its `eid`.
pub(crate) const INDEX_TABLES: [&str; 5] = [
    "entity_types",
    "entity_attrs",
    "entity_geo",
    "attr_numbers",
    "attr_texts",
];

/// Deletes the entities `eids`: their rows and all their index rows.
pub(crate) async fn forget(client: &impl GenericClient, tenant: &str, eids: &[i64]) -> Result<()> {
    if eids.is_empty() {
        return Ok(());
    }
    let statements: Vec<String> = INDEX_TABLES
        .iter()
        .chain(&["entities"])
        .map(|table| format!("DELETE FROM {table} WHERE tenant = $1 AND eid = ANY($2)"))
        .collect();
    let params: [&(dyn ToSql + Sync); 2] = [&tenant, &eids];
    let deletes = statements.iter().map(|sql| execute(client, sql, &params));
    futures_util::future::try_join_all(deletes).await?;
    Ok(())
}

/// Deletes the geo rows of the entities `eids` (few: one per GeoProperty
/// value).
pub(crate) async fn forget_geo(client: &impl GenericClient, tenant: &str, eids: &[i64]) -> Result<()> {
    execute_rows(
        client,
        eids.len(),
        "DELETE FROM entity_geo WHERE tenant = $1 AND eid = ANY($2)",
        &[&tenant, &eids],
    )
    .await
}
