//! Several `piazza serve` processes over one database: delivery leases, so
//! that each notification is sent by one process only, and change events
//! (`LISTEN`/`NOTIFY`), so that every process wakes the delivery of what
//! another recorded and drops what it cached of a changed subscription or
//! @context.
//!
//! Events are sent in the transaction of the change: PostgreSQL delivers
//! them only if it commits, right after it does. Every process hears its
//! own events too; handling them is idempotent, so they are not filtered.

use std::future::poll_fn;
use std::time::Duration;

use deadpool_postgres::GenericClient;
use piazza_store::{ClusterEvent, Tenant};
use serde_json::Value;
use tokio::sync::broadcast;
use tokio_postgres::{AsyncMessage, NoTls};

use crate::write::execute;
use crate::Result;

/// The channel every event goes on.
pub(crate) const CHANNEL: &str = "piazza_changes";
/// PostgreSQL refuses payloads of 8,000 bytes or more.
const MAX_PAYLOAD: i32 = 7_900;
/// Events kept for a slow reader before it is told it missed some.
const BACKLOG: usize = 4_096;
const FIRST_RETRY: Duration = Duration::from_millis(200);
const LAST_RETRY: Duration = Duration::from_secs(10);

/// Announces, in `client`'s transaction, that the given subscriptions of
/// the tenant have new notices.
pub(crate) async fn announce_notices(
    client: &impl GenericClient,
    tenant: &Tenant,
    subscriptions: &[&str],
) -> Result<()> {
    // A payload too long for NOTIFY names the tenant only.
    execute(
        client,
        &format!(
            "SELECT pg_notify('{CHANNEL}', CASE WHEN octet_length(p) < {MAX_PAYLOAD} THEN p \
             ELSE json_build_array('notices', $1::text)::text END) \
             FROM (SELECT DISTINCT json_build_array('notices', $1::text, s)::text AS p \
             FROM unnest($2::text[]) AS s) AS payloads"
        ),
        &[&tenant.name(), &subscriptions],
    )
    .await?;
    Ok(())
}

/// What changed, in an [`announce`] event.
#[derive(Clone, Copy)]
pub(crate) enum Changed {
    Subscriptions,
    Contexts,
}

/// Announces, in `client`'s transaction, that a tenant's subscriptions or
/// contexts changed.
pub(crate) async fn announce(client: &impl GenericClient, tenant: &Tenant, what: Changed) -> Result<()> {
    let kind = match what {
        Changed::Subscriptions => "subscriptions",
        Changed::Contexts => "contexts",
    };
    execute(
        client,
        &format!("SELECT pg_notify('{CHANNEL}', json_build_array($1::text, $2::text)::text)"),
        &[&kind, &tenant.name()],
    )
    .await?;
    Ok(())
}

/// Reads an event's payload; `None` for what this version does not know.
fn parse(payload: &str) -> Option<ClusterEvent> {
    let Ok(Value::Array(members)) = serde_json::from_str::<Value>(payload) else {
        return None;
    };
    let text = |i: usize| members.get(i).and_then(Value::as_str);
    let tenant = Tenant::parse(text(1)?).ok()?;
    match text(0)? {
        "notices" => Some(ClusterEvent::Notices {
            tenant,
            subscription_id: text(2).map(str::to_owned),
        }),
        "subscriptions" => Some(ClusterEvent::Subscriptions { tenant }),
        "contexts" => Some(ClusterEvent::Contexts { tenant }),
        _ => None,
    }
}

/// Takes or renews the lease when it is free, expired or already ours.
/// Times are the database's, so the processes' clocks do not matter.
pub(crate) async fn claim(
    client: &impl GenericClient,
    holder: &str,
    tenant: &Tenant,
    subscription: &str,
    lease: Duration,
) -> Result<bool> {
    let millis = f64::from(u32::try_from(lease.as_millis()).unwrap_or(u32::MAX));
    let statement = client
        .prepare_cached(
            "INSERT INTO delivery_leases(tenant, subscription, holder, expires_at) \
             VALUES ($1, $2, $3, clock_timestamp() + $4 * interval '1 millisecond') \
             ON CONFLICT (tenant, subscription) DO UPDATE \
             SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at \
             WHERE delivery_leases.holder = EXCLUDED.holder OR delivery_leases.expires_at < clock_timestamp() \
             RETURNING holder",
        )
        .await?;
    let row = client
        .query_opt(&statement, &[&tenant.name(), &subscription, &holder, &millis])
        .await?;
    Ok(row.is_some())
}

pub(crate) async fn release(
    client: &impl GenericClient,
    holder: &str,
    tenant: &Tenant,
    subscription: &str,
) -> Result<()> {
    execute(
        client,
        "DELETE FROM delivery_leases WHERE tenant = $1 AND subscription = $2 AND holder = $3",
        &[&tenant.name(), &subscription, &holder],
    )
    .await?;
    Ok(())
}

/// Listens on its own connection (a pooled one could be recycled under
/// it) and forwards every event; reconnects after a loss and then sends
/// [`ClusterEvent::Resync`], since what happened meanwhile is unknown.
pub(crate) fn listen(config: tokio_postgres::Config) -> (broadcast::Sender<ClusterEvent>, tokio::task::JoinHandle<()>) {
    let (sender, _) = broadcast::channel(BACKLOG);
    let events = sender.clone();
    let task = tokio::spawn(async move {
        let mut retry = FIRST_RETRY;
        // Changes made before the first LISTEN are unknown too.
        let mut lost = true;
        loop {
            match listen_once(&config, &events, &mut lost).await {
                Ok(()) => retry = FIRST_RETRY,
                Err(error) => tracing::warn!(%error, "listening for changes by other processes failed; retrying"),
            }
            lost = true;
            tokio::time::sleep(retry).await;
            retry = (retry * 2).min(LAST_RETRY);
        }
    });
    (sender, task)
}

async fn listen_once(
    config: &tokio_postgres::Config,
    events: &broadcast::Sender<ClusterEvent>,
    lost: &mut bool,
) -> Result<()> {
    let (client, mut connection) = config.connect(NoTls).await?;
    let (messages, mut incoming) = tokio::sync::mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        while let Some(message) = poll_fn(|cx| connection.poll_message(cx)).await {
            match message {
                Ok(message) => {
                    if messages.send(message).is_err() {
                        break;
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "the connection listening for changes broke");
                    break;
                }
            }
        }
    });
    client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
    if std::mem::take(lost) {
        let _ = events.send(ClusterEvent::Resync);
    }
    while let Some(message) = incoming.recv().await {
        if let AsyncMessage::Notification(notification) = message {
            match parse(notification.payload()) {
                Some(event) => {
                    let _ = events.send(event);
                }
                None => tracing::debug!(payload = notification.payload(), "unknown change event ignored"),
            }
        }
    }
    driver.abort();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_are_read_back_as_events() {
        let tenant = Tenant::parse("t1").expect("tenant");
        assert_eq!(
            parse(r#"["notices","t1","urn:s:1"]"#),
            Some(ClusterEvent::Notices {
                tenant: tenant.clone(),
                subscription_id: Some("urn:s:1".into())
            })
        );
        assert_eq!(
            parse(r#"["notices","t1"]"#),
            Some(ClusterEvent::Notices {
                tenant: tenant.clone(),
                subscription_id: None
            })
        );
        assert_eq!(
            parse(r#"["contexts",""]"#),
            Some(ClusterEvent::Contexts {
                tenant: Tenant::default()
            })
        );
        assert_eq!(
            parse(r#"["subscriptions","t1"]"#),
            Some(ClusterEvent::Subscriptions { tenant })
        );
        assert_eq!(parse(r#"["later-kind","t1"]"#), None);
        assert_eq!(parse(r#"["notices","bad tenant"]"#), None);
        assert_eq!(parse("not json"), None);
    }
}
