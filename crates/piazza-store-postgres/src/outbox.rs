//! The notification outbox and the delivery statistics of subscriptions:
//! the semantics of the embedded store's `outbox.rs`.

use deadpool_postgres::{GenericClient, Transaction};
use piazza_ngsild::time;
use piazza_store::{Delivery, DeliveryStats, OutboxEntry, PendingNotice, Tenant};
use serde_json::Value;
use tokio_postgres::types::Json;

use crate::write::execute;
use crate::{Error, Result};

/// Records the entries an edit owes, in the edit's transaction.
pub(crate) async fn enqueue(transaction: &Transaction<'_>, tenant: &Tenant, entries: &[OutboxEntry]) -> Result<()> {
    if entries.is_empty() {
        return Ok(());
    }
    let subscriptions: Vec<&str> = entries.iter().map(|e| e.subscription_id.as_str()).collect();
    let entities: Vec<&str> = entries.iter().map(|e| e.entity_id.as_str()).collect();
    let notices: Vec<Json<&Value>> = entries.iter().map(|e| Json(&e.notice)).collect();
    execute(
        transaction,
        "INSERT INTO outbox(tenant, subscription, entity_id, notice, recorded_at) \
         SELECT $1, s, e, n, $5 FROM unnest($2::text[], $3::text[], $4::json[]) WITH ORDINALITY AS u(s, e, n, o) \
         ORDER BY o",
        &[&tenant.name(), &subscriptions, &entities, &notices, &time::now()],
    )
    .await?;
    crate::cluster::announce_notices(transaction, tenant, &subscriptions).await
}

/// Drops what a deleted subscription still had pending, its statistics
/// and its delivery lease.
pub(crate) async fn forget(client: &impl GenericClient, tenant: &Tenant, subscription: &str) -> Result<()> {
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&tenant.name(), &subscription];
    tokio::try_join!(
        execute(
            client,
            "DELETE FROM delivery_leases WHERE tenant = $1 AND subscription = $2",
            &params
        ),
        execute(
            client,
            "DELETE FROM outbox WHERE tenant = $1 AND subscription = $2",
            &params
        ),
        execute(
            client,
            "DELETE FROM delivery_stats WHERE tenant = $1 AND subscription = $2",
            &params
        ),
    )?;
    Ok(())
}

pub(crate) async fn pending(
    client: &impl GenericClient,
    tenant: &Tenant,
    subscription: &str,
    limit: usize,
) -> Result<Vec<PendingNotice>> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let statement = client
        .prepare_cached(
            "SELECT seq, entity_id, notice, recorded_at FROM outbox \
             WHERE tenant = $1 AND subscription = $2 ORDER BY seq LIMIT $3",
        )
        .await?;
    let rows = client
        .query(&statement, &[&tenant.name(), &subscription, &limit])
        .await?;
    rows.iter()
        .map(|row| {
            let Json(notice) = row
                .try_get::<_, Json<Value>>(2)
                .map_err(|e| Error::Corrupt(format!("outbox entry: {e}")))?;
            Ok(PendingNotice {
                seq: row.try_get(0)?,
                entity_id: row.try_get(1)?,
                notice,
                recorded_at: row.try_get(3)?,
            })
        })
        .collect()
}

pub(crate) async fn backlog(client: &impl GenericClient) -> Result<Vec<(Tenant, String)>> {
    let statement = client
        .prepare_cached("SELECT DISTINCT tenant, subscription FROM outbox ORDER BY tenant, subscription")
        .await?;
    let rows = client.query(&statement, &[]).await?;
    rows.iter()
        .map(|row| {
            let name: String = row.try_get(0)?;
            let tenant = Tenant::parse(&name).map_err(|e| Error::Corrupt(e.detail))?;
            Ok((tenant, row.try_get(1)?))
        })
        .collect()
}

/// Counts a delivery attempt and removes the entries it settles, atomically.
pub(crate) async fn record(
    client: &mut deadpool_postgres::Object,
    tenant: &Tenant,
    subscription: &str,
    delivery: &Delivery,
) -> Result<()> {
    let transaction = client.transaction().await?;
    let (sent, failed): (i64, i64) = if delivery.success { (1, 0) } else { (0, 1) };
    execute(
        &transaction,
        "INSERT INTO delivery_stats(tenant, subscription, times_sent, times_failed, last_notification, \
         last_success, last_failure) VALUES ($1, $2, $3, $4, $5::timestamptz, \
         CASE WHEN $6::boolean THEN $5::timestamptz END, CASE WHEN $6::boolean THEN NULL ELSE $5::timestamptz END) \
         ON CONFLICT (tenant, subscription) DO UPDATE SET \
         times_sent = delivery_stats.times_sent + $3, times_failed = delivery_stats.times_failed + $4, \
         last_notification = $5::timestamptz, \
         last_success = CASE WHEN $6::boolean THEN $5::timestamptz ELSE delivery_stats.last_success END, \
         last_failure = CASE WHEN $6::boolean THEN delivery_stats.last_failure ELSE $5::timestamptz END",
        &[
            &tenant.name(),
            &subscription,
            &sent,
            &failed,
            &delivery.at,
            &delivery.success,
        ],
    )
    .await?;
    if !delivery.settled.is_empty() {
        execute(
            &transaction,
            "DELETE FROM outbox WHERE tenant = $1 AND subscription = $2 AND seq = ANY($3)",
            &[&tenant.name(), &subscription, &delivery.settled],
        )
        .await?;
    }
    transaction.commit().await?;
    Ok(())
}

pub(crate) async fn stats(client: &impl GenericClient, tenant: &Tenant, subscription: &str) -> Result<DeliveryStats> {
    let statement = client
        .prepare_cached(
            "SELECT times_sent, times_failed, last_notification, last_success, last_failure \
             FROM delivery_stats WHERE tenant = $1 AND subscription = $2",
        )
        .await?;
    let Some(row) = client.query_opt(&statement, &[&tenant.name(), &subscription]).await? else {
        return Ok(DeliveryStats::default());
    };
    let (sent, failed): (i64, i64) = (row.try_get(0)?, row.try_get(1)?);
    Ok(DeliveryStats {
        times_sent: u64::try_from(sent).unwrap_or(0),
        times_failed: u64::try_from(failed).unwrap_or(0),
        last_notification: row.try_get(2)?,
        last_success: row.try_get(3)?,
        last_failure: row.try_get(4)?,
    })
}
