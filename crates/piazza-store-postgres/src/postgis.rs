//! PostGIS, where the database has it: shapes of GeoProperty values kept
//! next to their boxes in `entity_geo`, so that geo-queries read fewer
//! candidates. Results are the same without it (the boxes narrow less,
//! Rust decides either way).
//!
//! The shapes need the extension, so they cannot be a numbered migration
//! (every database must be able to apply those). At start-up, unless told
//! `off`, the store looks for the extension, tries to create it when the
//! server has the package (which takes a superuser: other roles fall back
//! quietly), applies the PostGIS layer (`migrations/layers/`) once under
//! the migration lock and records it in `schema_layers`, then fills in the
//! shapes of rows written without them: existing entities when PostGIS
//! arrives on a database, or rows another process wrote with `off`.
//! Until then such rows are candidates of every geo-query, so a read is
//! never wrong, only slower.

use std::collections::BTreeMap;
use std::time::Instant;

use deadpool_postgres::{ClientWrapper, GenericClient};
use piazza_store::Tenant;

use crate::migrate::{LOCK_CLASS, LOCK_MIGRATIONS};
use crate::write::{self, decode_entity, execute};
use crate::{Error, Result};

/// Whether the store uses PostGIS (`piazza serve --postgis`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Postgis {
    /// Use PostGIS when the database has it or piazza can create it; else
    /// narrow geo-queries by bounding boxes only.
    #[default]
    Auto,
    /// Never touch PostGIS: bounding boxes only.
    Off,
}

/// The layers, in order: (version, name, SQL).
const LAYERS: &[(i32, &str, &str)] = &[(
    1,
    "shapes",
    include_str!("../migrations/layers/postgis_0001_shapes.sql"),
)];

/// The ledger name of the layer.
const LAYER: &str = "postgis";

/// The advisory lock (with [`LOCK_CLASS`]) one process holds while it fills
/// in shapes, so that processes starting together do not all do it.
const LOCK_BACKFILL: i32 = 2;

/// Entities whose shapes are filled in per transaction.
const BACKFILL_BATCH: i64 = 500;

/// Sets PostGIS up as `mode` asks and the database allows; returns whether
/// geo-queries use it. Says which at info level, once.
pub(crate) async fn prepare(client: &mut ClientWrapper, mode: Postgis) -> Result<bool> {
    if mode == Postgis::Off {
        tracing::info!("PostGIS off (--postgis off): geo-queries are narrowed by bounding boxes");
        return Ok(false);
    }
    match set_up(client).await? {
        Ok(version) => {
            backfill(client).await?;
            tracing::info!(postgis = %version, "PostGIS in use: geo-queries are narrowed by shapes");
            Ok(true)
        }
        Err(reason) => {
            tracing::info!(
                reason = %reason,
                "PostGIS not in use: geo-queries are narrowed by bounding boxes (same results, more candidates read)"
            );
            Ok(false)
        }
    }
}

/// Makes sure the extension and the layer are there: the extension's
/// version, or why PostGIS cannot be used (an `Err` of the database is a
/// failure of the store, not a reason to fall back).
async fn set_up(client: &mut ClientWrapper) -> Result<std::result::Result<String, String>> {
    let mut transaction = client.transaction().await?;
    transaction
        .execute("SELECT pg_advisory_xact_lock($1, $2)", &[&LOCK_CLASS, &LOCK_MIGRATIONS])
        .await?;
    let installed = transaction
        .query_opt("SELECT extversion FROM pg_extension WHERE extname = 'postgis'", &[])
        .await?;
    let version: String = match installed {
        Some(row) => row.try_get(0)?,
        None => {
            let available = transaction
                .query_opt("SELECT 1 FROM pg_available_extensions WHERE name = 'postgis'", &[])
                .await?
                .is_some();
            if !available {
                return Ok(Err("the PostgreSQL server has no PostGIS package".into()));
            }
            // A savepoint: a refusal (no privilege) must not end the transaction.
            let attempt = transaction.savepoint("create_postgis").await?;
            if let Err(error) = attempt.batch_execute("CREATE EXTENSION IF NOT EXISTS postgis").await {
                attempt.rollback().await?;
                return Ok(Err(format!(
                    "cannot create the postgis extension ({}); a superuser can run CREATE EXTENSION postgis in this database",
                    crate::explain(&error)
                )));
            }
            attempt.commit().await?;
            tracing::info!("created the postgis extension");
            let row = transaction
                .query_one("SELECT extversion FROM pg_extension WHERE extname = 'postgis'", &[])
                .await?;
            row.try_get(0)?
        }
    };
    // Installed in a schema off the search path, its types and functions
    // cannot be named by piazza's statements.
    let reachable: bool = transaction
        .query_one(
            "SELECT to_regtype('geometry') IS NOT NULL AND to_regtype('geography') IS NOT NULL \
             AND to_regprocedure('st_dwithin(geography,geography,double precision,boolean)') IS NOT NULL",
            &[],
        )
        .await?
        .try_get(0)?;
    if !reachable {
        return Ok(Err(
            "the postgis extension is installed in a schema that is not on the search path".into(),
        ));
    }
    let known = LAYERS.last().map_or(0, |(version, _, _)| *version);
    let applied: i32 = transaction
        .query_opt("SELECT version FROM schema_layers WHERE name = $1", &[&LAYER])
        .await?
        .map(|row| row.try_get(0))
        .transpose()?
        .unwrap_or(0);
    if applied > known {
        // A newer piazza keeps structures this one would not maintain.
        return Ok(Err(format!(
            "the database has PostGIS layer {applied}, newer than the {known} this piazza knows"
        )));
    }
    // `DROP EXTENSION postgis CASCADE` takes the columns with it, ledger or not.
    let present: i64 = transaction
        .query_one(
            "SELECT COUNT(*) FROM pg_attribute WHERE attrelid = to_regclass('entity_geo') \
             AND attname IN ('shape', 'sphere', 'shaped') AND NOT attisdropped",
            &[],
        )
        .await?
        .try_get(0)?;
    let from = if present == 3 { applied } else { 0 };
    for (layer, name, sql) in LAYERS.iter().filter(|(layer, _, _)| *layer > from) {
        tracing::info!(layer, name, "applying the PostGIS layer");
        transaction.batch_execute(sql).await?;
    }
    if from < known {
        transaction
            .execute(
                "INSERT INTO schema_layers(name, version) VALUES ($1, $2) \
                 ON CONFLICT (name) DO UPDATE SET version = EXCLUDED.version, applied_at = now()",
                &[&LAYER, &known],
            )
            .await?;
    }
    transaction.commit().await?;
    Ok(Ok(version))
}

/// Fills in the shapes of rows written without them, unless another
/// process is doing it.
async fn backfill(client: &mut ClientWrapper) -> Result<()> {
    let locked: bool = client
        .query_one("SELECT pg_try_advisory_lock($1, $2)", &[&LOCK_CLASS, &LOCK_BACKFILL])
        .await?
        .try_get(0)?;
    if !locked {
        tracing::info!("another process is filling in PostGIS shapes");
        return Ok(());
    }
    let filled = fill(client).await;
    // A session lock: released here, or by the server if the process dies.
    client
        .execute("SELECT pg_advisory_unlock($1, $2)", &[&LOCK_CLASS, &LOCK_BACKFILL])
        .await?;
    filled
}

async fn fill(client: &mut ClientWrapper) -> Result<()> {
    let pending: i64 = client
        .query_one(
            "SELECT COUNT(DISTINCT (tenant, eid)) FROM entity_geo WHERE NOT shaped",
            &[],
        )
        .await?
        .try_get(0)?;
    if pending == 0 {
        return Ok(());
    }
    tracing::info!(
        entities = pending,
        "filling in PostGIS shapes of entities written without them"
    );
    let started = Instant::now();
    let mut done: u64 = 0;
    // Keyset order, so the walk ends even if rows stay unshaped (another
    // process writing with --postgis off meanwhile).
    let mut after = (String::new(), -1i64);
    loop {
        let transaction = client.transaction().await?;
        let rows = transaction
            .query(
                "SELECT DISTINCT g.tenant, g.eid, e.id FROM entity_geo g \
                 JOIN entities e ON e.tenant = g.tenant AND e.eid = g.eid \
                 WHERE NOT g.shaped AND (g.tenant, g.eid) > ($1, $2) ORDER BY g.tenant, g.eid LIMIT $3",
                &[&after.0, &after.1, &BACKFILL_BATCH],
            )
            .await?;
        let Some(last) = rows.last() else {
            break;
        };
        after = (last.try_get(0)?, last.try_get(1)?);
        let mut by_tenant: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for row in &rows {
            by_tenant.entry(row.try_get(0)?).or_default().push(row.try_get(2)?);
        }
        let tenants = by_tenant
            .into_iter()
            .map(|(name, ids)| Ok((Tenant::parse(&name).map_err(|e| Error::Corrupt(e.detail))?, ids)))
            .collect::<Result<Vec<_>>>()?;
        // The writers' locks, so that no edit of these entities interleaves.
        let locks = write::locks_of_keys(
            tenants
                .iter()
                .flat_map(|(tenant, ids)| ids.iter().map(|id| write::lock_key(tenant, id))),
        );
        write::lock_entities(&transaction, &locks).await?;
        for (tenant, ids) in &tenants {
            let documents = transaction
                .query(
                    "SELECT eid, doc FROM entities WHERE tenant = $1 AND id = ANY($2) FOR UPDATE",
                    &[&tenant.name(), ids],
                )
                .await?;
            for row in documents {
                let eid: i64 = row.try_get(0)?;
                let entity = decode_entity(&row, 1)?;
                execute(
                    &transaction,
                    "DELETE FROM entity_geo WHERE tenant = $1 AND eid = $2",
                    &[&tenant.name(), &eid],
                )
                .await?;
                let rows = write::geo_rows(&entity, true);
                let rows: Vec<(i64, &write::GeoRow)> = rows.iter().map(|row| (eid, row)).collect();
                write::insert_geo(&transaction, tenant.name(), &rows, true).await?;
                done += 1;
            }
        }
        transaction.commit().await?;
        if done % 10_000 < rows.len() as u64 {
            tracing::info!(entities = done, of = pending, "filling in PostGIS shapes");
        }
    }
    tracing::info!(
        entities = done,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "PostGIS shapes filled in"
    );
    Ok(())
}
