//! Notification latency: from sending an update to the notification it
//! causes arriving at a real HTTP endpoint in this process.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use hyper::Method;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::load::{self, Req};
use crate::report::Row;
use crate::{Bench, API};

const TENANT: &str = "bench-notify";
const ENTITY: &str = "urn:ngsi-ld:Probe:bench";

impl Bench {
    pub(crate) async fn notification_latency(&mut self) -> anyhow::Result<()> {
        let addr = self.broker().await?;
        let (endpoint, mut arrivals) = receiver().await?;
        let setup = [
            (
                format!("{API}/entities"),
                json!({"id": ENTITY, "type": "Probe", "seq": {"type": "Property", "value": 0}}),
            ),
            (
                format!("{API}/subscriptions"),
                json!({
                    "type": "Subscription", "entities": [{"type": "Probe"}], "watchedAttributes": ["seq"],
                    "notification": {"format": "keyValues", "attributes": ["seq"], "endpoint": {"uri": endpoint}},
                }),
            ),
        ];
        for (uri, body) in setup {
            let req = Req::with_body(Method::POST, uri, serde_json::to_vec(&body)?.into()).tenant(TENANT);
            let (status, _, answer) = load::once(addr, req).await?;
            if !status.is_success() {
                bail!(
                    "notification set-up: HTTP {status}: {}",
                    String::from_utf8_lossy(&answer)
                );
            }
        }
        let mut latencies = load::new_histogram();
        let mut errors = 0;
        let deadline = Instant::now() + Duration::from_secs(self.cli.duration_secs);
        let started = Instant::now();
        let mut seq: u64 = 0;
        // One update at a time: each latency is update sent → notification in.
        while Instant::now() < deadline {
            seq += 1;
            let body = serde_json::to_vec(&json!({"value": seq}))?;
            let req =
                Req::with_body(Method::PATCH, format!("{API}/entities/{ENTITY}/attrs/seq"), body.into()).tenant(TENANT);
            let sent = Instant::now();
            let (status, _, _) = load::once(addr, req).await?;
            if !status.is_success() {
                errors += 1;
                continue;
            }
            match wait_for(&mut arrivals, seq).await {
                Some(arrived) => {
                    let micros = u64::try_from(arrived.duration_since(sent).as_micros()).unwrap_or(u64::MAX);
                    latencies.record(micros.max(1)).context("recording a latency")?;
                }
                None => errors += 1,
            }
        }
        let mut row = Row::measured(
            "notification-latency",
            load::summarise(&latencies, errors, started.elapsed()),
        );
        row.note = "PATCH sent → HTTP notification received, one at a time".into();
        self.rows.push(row);
        Ok(())
    }
}

/// Waits for the notification carrying `seq` (earlier ones are skipped).
async fn wait_for(arrivals: &mut mpsc::UnboundedReceiver<(u64, Instant)>, seq: u64) -> Option<Instant> {
    let timeout = tokio::time::sleep(Duration::from_secs(5));
    tokio::pin!(timeout);
    loop {
        tokio::select! {
            arrival = arrivals.recv() => match arrival {
                Some((got, at)) if got == seq => return Some(at),
                Some(_) => continue,
                None => return None,
            },
            _ = &mut timeout => return None,
        }
    }
}

/// An endpoint reporting each notified `seq` with its arrival time.
async fn receiver() -> anyhow::Result<(String, mpsc::UnboundedReceiver<(u64, Instant)>)> {
    let (sender, arrivals) = mpsc::unbounded_channel();
    let sender = Arc::new(sender);
    let router = axum::Router::new().route(
        "/notify",
        axum::routing::post(move |body: axum::body::Bytes| {
            let sender = sender.clone();
            async move {
                let at = Instant::now();
                let notification: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                for item in notification["data"].as_array().into_iter().flatten() {
                    if let Some(seq) = item["seq"].as_u64() {
                        let _ = sender.send((seq, at));
                    }
                }
                hyper::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/notify", listener.local_addr()?);
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, router).await {
            eprintln!("notification receiver: {error}");
        }
    });
    Ok((url, arrivals))
}
