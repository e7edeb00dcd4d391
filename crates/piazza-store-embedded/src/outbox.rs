//! The notification outbox and the delivery statistics of subscriptions.

use piazza_ngsild::time;
use piazza_store::{Delivery, DeliveryStats, OutboxEntry, PendingNotice, StoreError, StoreResult, Tenant};
use rusqlite::{params, Connection, OptionalExtension, Transaction};

use crate::sql;

/// Records the entries an edit owes, in the transaction of its change.
pub(crate) fn enqueue(tx: &Transaction<'_>, tenant: &Tenant, entries: &[OutboxEntry]) -> rusqlite::Result<()> {
    if entries.is_empty() {
        return Ok(());
    }
    let now = time::format(&time::now());
    let mut insert = tx.prepare_cached(
        "INSERT INTO outbox(tenant, subscription, entity_id, notice, recorded_at) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    for entry in entries {
        insert.execute(params![
            tenant.name(),
            entry.subscription_id,
            entry.entity_id,
            entry.notice.to_string(),
            now
        ])?;
    }
    Ok(())
}

/// Drops what a deleted subscription still had pending and its statistics.
pub(crate) fn forget(tx: &Transaction<'_>, tenant: &Tenant, subscription: &str) -> rusqlite::Result<()> {
    tx.prepare_cached("DELETE FROM outbox WHERE tenant = ?1 AND subscription = ?2")?
        .execute(params![tenant.name(), subscription])?;
    tx.prepare_cached("DELETE FROM delivery_stats WHERE tenant = ?1 AND subscription = ?2")?
        .execute(params![tenant.name(), subscription])?;
    Ok(())
}

pub(crate) fn pending(
    connection: &Connection,
    tenant: &Tenant,
    subscription: &str,
    limit: usize,
) -> StoreResult<Vec<PendingNotice>> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut statement = connection
        .prepare_cached(
            "SELECT seq, entity_id, notice, recorded_at FROM outbox \
             WHERE tenant = ?1 AND subscription = ?2 ORDER BY seq LIMIT ?3",
        )
        .map_err(sql)?;
    let rows = statement
        .query_map(params![tenant.name(), subscription, limit], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
            ))
        })
        .map_err(sql)?;
    rows.map(|row| {
        let (seq, entity_id, notice, recorded_at) = row.map_err(sql)?;
        Ok(PendingNotice {
            seq,
            entity_id,
            notice: serde_json::from_str(&notice).map_err(|e| StoreError::Corrupt(format!("outbox entry: {e}")))?,
            recorded_at: timestamp(&recorded_at)?,
        })
    })
    .collect()
}

pub(crate) fn backlog(connection: &Connection) -> StoreResult<Vec<(Tenant, String)>> {
    let mut statement = connection
        .prepare_cached("SELECT DISTINCT tenant, subscription FROM outbox ORDER BY tenant, subscription")
        .map_err(sql)?;
    let rows = statement
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
        .map_err(sql)?;
    rows.map(|row| {
        let (tenant, subscription) = row.map_err(sql)?;
        let tenant = Tenant::parse(&tenant).map_err(|e| StoreError::Corrupt(e.detail))?;
        Ok((tenant, subscription))
    })
    .collect()
}

pub(crate) fn record(
    tx: &Transaction<'_>,
    tenant: &Tenant,
    subscription: &str,
    delivery: &Delivery,
) -> rusqlite::Result<()> {
    let at = time::format(&delivery.at);
    let (sent, failed) = if delivery.success { (1, 0) } else { (0, 1) };
    tx.prepare_cached(
        "INSERT INTO delivery_stats(tenant, subscription, times_sent, times_failed, last_notification, \
         last_success, last_failure) VALUES (?1, ?2, ?3, ?4, ?5, \
         CASE WHEN ?6 THEN ?5 END, CASE WHEN ?6 THEN NULL ELSE ?5 END) \
         ON CONFLICT (tenant, subscription) DO UPDATE SET \
         times_sent = times_sent + ?3, times_failed = times_failed + ?4, last_notification = ?5, \
         last_success = CASE WHEN ?6 THEN ?5 ELSE last_success END, \
         last_failure = CASE WHEN ?6 THEN last_failure ELSE ?5 END",
    )?
    .execute(params![tenant.name(), subscription, sent, failed, at, delivery.success])?;
    let mut settle = tx.prepare_cached("DELETE FROM outbox WHERE seq = ?1 AND tenant = ?2 AND subscription = ?3")?;
    for seq in &delivery.settled {
        settle.execute(params![seq, tenant.name(), subscription])?;
    }
    Ok(())
}

pub(crate) fn stats(connection: &Connection, tenant: &Tenant, subscription: &str) -> StoreResult<DeliveryStats> {
    type Row = (i64, i64, Option<String>, Option<String>, Option<String>);
    let row: Option<Row> = connection
        .prepare_cached(
            "SELECT times_sent, times_failed, last_notification, last_success, last_failure \
             FROM delivery_stats WHERE tenant = ?1 AND subscription = ?2",
        )
        .and_then(|mut s| {
            s.query_row(params![tenant.name(), subscription], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })
            .optional()
        })
        .map_err(sql)?;
    let Some((sent, failed, last, success, failure)) = row else {
        return Ok(DeliveryStats::default());
    };
    let optional = |text: Option<String>| text.as_deref().map(timestamp).transpose();
    Ok(DeliveryStats {
        times_sent: u64::try_from(sent).unwrap_or(0),
        times_failed: u64::try_from(failed).unwrap_or(0),
        last_notification: optional(last)?,
        last_success: optional(success)?,
        last_failure: optional(failure)?,
    })
}

fn timestamp(text: &str) -> StoreResult<time::Timestamp> {
    time::parse(text).ok_or_else(|| StoreError::Corrupt(format!("timestamp '{text}'")))
}
