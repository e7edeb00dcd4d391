//! Versioned schema migrations, applied by piazza itself at start-up.
//!
//! Each migration is a numbered SQL file compiled into the binary. They are
//! applied in one transaction under an advisory lock: when several processes
//! start at once, one migrates and the others wait, then find nothing to do;
//! a migration that fails leaves the schema as it was. A migration, once
//! released, is never edited: a change is a new file.

use deadpool_postgres::{ClientWrapper, GenericClient};

use crate::{values, Error, Result};

/// The migrations, in order; the number is the version a database is at
/// after applying the file.
const MIGRATIONS: &[(i32, &str, &str)] = &[
    (1, "initial", include_str!("../migrations/0001_initial.sql")),
    (2, "outbox", include_str!("../migrations/0002_outbox.sql")),
    (
        3,
        "delivery leases",
        include_str!("../migrations/0003_delivery_leases.sql"),
    ),
    (4, "schema layers", include_str!("../migrations/0004_schema_layers.sql")),
    (5, "value indexes", include_str!("../migrations/0005_value_indexes.sql")),
    (
        6,
        "history time index",
        include_str!("../migrations/0006_history_time_index.sql"),
    ),
    (
        7,
        "history numbers",
        include_str!("../migrations/0007_history_numbers.sql"),
    ),
    (
        8,
        "history rollups",
        include_str!("../migrations/0008_history_rollups.sql"),
    ),
];

/// The migration that creates the value indexes: the rows of the entities
/// already stored are filled in right after it, by the model's rule
/// (`values::backfill`).
const VALUE_INDEXES: i32 = 5;

/// The advisory lock serialising migrations: a two-key lock, so it never
/// meets the one-key locks taken on entities (`write::lock_entities`).
pub(crate) const LOCK_CLASS: i32 = 0x5049_415A; // "PIAZ"
pub(crate) const LOCK_MIGRATIONS: i32 = 1;

const CREATE_LEDGER: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (\
     version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())";

/// The newest version this build knows.
pub(crate) fn latest() -> i32 {
    MIGRATIONS.last().map_or(0, |(version, _, _)| *version)
}

/// Brings the schema to the newest version.
pub(crate) async fn run(client: &mut ClientWrapper) -> Result<()> {
    let transaction = client.transaction().await?;
    transaction
        .execute("SELECT pg_advisory_xact_lock($1, $2)", &[&LOCK_CLASS, &LOCK_MIGRATIONS])
        .await?;
    transaction.batch_execute(CREATE_LEDGER).await?;
    let found = current(&transaction).await?;
    if found > latest() {
        return Err(Error::SchemaTooNew { found, known: latest() });
    }
    for (version, name, sql) in MIGRATIONS.iter().filter(|(version, _, _)| *version > found) {
        tracing::info!(version, name, "applying database migration");
        transaction.batch_execute(sql).await?;
        transaction
            .execute(
                "INSERT INTO schema_migrations(version, name) VALUES ($1, $2)",
                &[version, name],
            )
            .await?;
        if *version == VALUE_INDEXES {
            values::backfill(&transaction).await?;
        }
    }
    transaction.commit().await?;
    Ok(())
}

/// The version the database is at (0 before the first migration).
pub(crate) async fn current(client: &impl GenericClient) -> Result<i32> {
    let ledger: Option<String> = client
        .query_one("SELECT to_regclass('schema_migrations')::text", &[])
        .await?
        .get(0);
    if ledger.is_none() {
        return Ok(0);
    }
    let row = client
        .query_one("SELECT COALESCE(MAX(version), 0) FROM schema_migrations", &[])
        .await?;
    Ok(row.get(0))
}
