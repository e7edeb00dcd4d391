//! The value indexes (`attr_numbers`, `attr_texts`, migration 5): the rows
//! an entity's values need, their rewrite with every write, the backfill of
//! entities stored before the migration, and a `q` bound as SQL.
//!
//! What an entity holds and what a query needs of it are the model's
//! (`piazza_ngsild::query::q::index`); this module only stores and reads
//! them, so the narrowing never drops a match the model would make.

use std::collections::HashSet;

use deadpool_postgres::{GenericClient, Transaction};
use piazza_ngsild::query::q::{indexed_values, IndexedValue, ValueBound, ValueTest};
use piazza_ngsild::Entity;
use tokio_postgres::types::ToSql;

use crate::write::{decode_entity, execute};
use crate::Result;

/// The distinct (attribute name, value) pairs of an entity, as indexed.
pub(crate) type ValueRows = HashSet<(String, IndexedValue)>;

pub(crate) fn rows_of(entity: &Entity) -> ValueRows {
    indexed_values(entity)
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value))
        .collect()
}

/// Rows of both tables as column arrays, for one `unnest` statement per
/// table whatever the number of rows.
#[derive(Default)]
pub(crate) struct Columns<'a> {
    number_tenants: Vec<&'a str>,
    number_eids: Vec<i64>,
    number_names: Vec<&'a str>,
    numbers: Vec<f64>,
    text_tenants: Vec<&'a str>,
    text_eids: Vec<i64>,
    text_names: Vec<&'a str>,
    texts: Vec<&'a str>,
}

impl<'a> Columns<'a> {
    pub(crate) fn push(&mut self, tenant: &'a str, eid: i64, name: &'a str, value: &'a IndexedValue) {
        match value {
            IndexedValue::Number(n) => {
                self.number_tenants.push(tenant);
                self.number_eids.push(eid);
                self.number_names.push(name);
                self.numbers.push(*n);
            }
            IndexedValue::Text(t) => {
                self.text_tenants.push(tenant);
                self.text_eids.push(eid);
                self.text_names.push(name);
                self.texts.push(t);
            }
        }
    }

    pub(crate) fn extend(
        &mut self,
        tenant: &'a str,
        eid: i64,
        rows: impl IntoIterator<Item = &'a (String, IndexedValue)>,
    ) {
        for (name, value) in rows {
            self.push(tenant, eid, name, value);
        }
    }

    /// Inserts the rows. A row already there is left alone: the rows are a
    /// set, and a write must not fail over a value it did not change.
    pub(crate) async fn insert(&self, client: &impl GenericClient) -> Result<()> {
        if !self.numbers.is_empty() {
            execute(
                client,
                "INSERT INTO attr_numbers(tenant, eid, name, value) \
                 SELECT * FROM unnest($1::text[], $2::int8[], $3::text[], $4::float8[]) ON CONFLICT DO NOTHING",
                &[
                    &self.number_tenants,
                    &self.number_eids,
                    &self.number_names,
                    &self.numbers,
                ],
            )
            .await?;
        }
        if !self.texts.is_empty() {
            execute(
                client,
                "INSERT INTO attr_texts(tenant, eid, name, value) \
                 SELECT * FROM unnest($1::text[], $2::int8[], $3::text[], $4::text[]) ON CONFLICT DO NOTHING",
                &[&self.text_tenants, &self.text_eids, &self.text_names, &self.texts],
            )
            .await?;
        }
        Ok(())
    }

    /// Deletes the rows (by entity first: the by-entity index finds them).
    pub(crate) async fn delete(&self, client: &impl GenericClient) -> Result<()> {
        if !self.numbers.is_empty() {
            execute(
                client,
                "DELETE FROM attr_numbers a USING unnest($1::text[], $2::int8[], $3::text[], $4::float8[]) \
                 AS u(t, e, n, v) WHERE a.tenant = u.t AND a.eid = u.e AND a.name = u.n AND a.value = u.v",
                &[
                    &self.number_tenants,
                    &self.number_eids,
                    &self.number_names,
                    &self.numbers,
                ],
            )
            .await?;
        }
        if !self.texts.is_empty() {
            execute(
                client,
                "DELETE FROM attr_texts a USING unnest($1::text[], $2::int8[], $3::text[], $4::text[]) \
                 AS u(t, e, n, v) WHERE a.tenant = u.t AND a.eid = u.e AND a.name = u.n AND a.value = u.v",
                &[&self.text_tenants, &self.text_eids, &self.text_names, &self.texts],
            )
            .await?;
        }
        Ok(())
    }
}

/// Documents read per round trip by the backfill.
const BACKFILL_CHUNK: i32 = 1_000;

/// Fills the value rows of every stored entity, in the transaction that
/// applies migration 5: it commits with the tables or not at all, so a
/// database never has the tables without the rows of its older entities.
pub(crate) async fn backfill(transaction: &Transaction<'_>) -> Result<()> {
    // A process still running an older piazza writes no value rows; held
    // off until the commit, none of its writes falls between the read of a
    // document here and the commit.
    transaction.batch_execute("LOCK TABLE entities IN SHARE MODE").await?;
    let statement = transaction
        .prepare("SELECT tenant, eid, doc FROM entities ORDER BY tenant, eid")
        .await?;
    let portal = transaction.bind(&statement, &[]).await?;
    let mut indexed: u64 = 0;
    loop {
        let rows = transaction.query_portal(&portal, BACKFILL_CHUNK).await?;
        if rows.is_empty() {
            break;
        }
        let mut entities = Vec::with_capacity(rows.len());
        for row in &rows {
            let (tenant, eid): (&str, i64) = (row.try_get(0)?, row.try_get(1)?);
            entities.push((tenant, eid, rows_of(&decode_entity(row, 2)?)));
        }
        let mut columns = Columns::default();
        for (tenant, eid, values) in &entities {
            columns.extend(tenant, *eid, values);
        }
        columns.insert(transaction).await?;
        indexed += entities.len() as u64;
    }
    if indexed > 0 {
        tracing::info!(entities = indexed, "value indexes built for the stored entities");
    }
    Ok(())
}

/// A bound as SQL over a value table aliased `v`: the table and the
/// condition, with its arguments added through `arg` (which returns each
/// one's placeholder).
pub(crate) fn condition(
    bound: &ValueBound,
    arg: &mut impl FnMut(Box<dyn ToSql + Sync + Send>) -> String,
) -> (&'static str, String) {
    let name = arg(Box::new(bound.attribute.clone()));
    match &bound.test {
        ValueTest::Numbers(numbers) => {
            let list = arg(Box::new(numbers.clone()));
            (
                "attr_numbers",
                format!("v.name = {name} AND v.value = ANY({list}::float8[])"),
            )
        }
        ValueTest::Texts(texts) => {
            let list = arg(Box::new(texts.clone()));
            (
                "attr_texts",
                format!("v.name = {name} AND v.value = ANY({list}::text[])"),
            )
        }
        ValueTest::Between { low, high } => {
            let mut sql = format!("v.name = {name}");
            if let Some(low) = low {
                sql.push_str(&format!(" AND v.value >= {}::float8", arg(Box::new(*low))));
            }
            if let Some(high) = high {
                sql.push_str(&format!(" AND v.value <= {}::float8", arg(Box::new(*high))));
            }
            ("attr_numbers", sql)
        }
    }
}
