//! The temporal scenarios: one entity with many attribute instances
//! (evolution: plain, temporalValues, aggregated), and a temporal query by
//! type and attributes over the data set.

use std::sync::Arc;

use anyhow::bail;
use hyper::Method;
use serde_json::{json, Value};

use crate::load::{self, MakeReq, Req};
use crate::template::{self, Rng, ENTITY_TYPE};
use crate::{Bench, API};

const TENANT: &str = "bench-temporal";
const ENTITY: &str = "urn:ngsi-ld:WeatherObserved:bench";
/// Instances per loading request.
const CHUNK: u64 = 1_000;
/// The first observation; one per minute after it.
const START: &str = "2024-01-01T00:00:00Z";

impl Bench {
    pub(crate) async fn temporal(&mut self) -> anyhow::Result<()> {
        let n = self.cli.temporal_instances;
        self.load_history(TENANT, n).await?;
        let base = format!("{API}/temporal/entities/{ENTITY}?attrs=temperature&timerel=after&timeAt={START}");
        let evolutions = [
            ("temporal-plain", String::new()),
            ("temporal-values", "&options=temporalValues".to_owned()),
            (
                "temporal-aggregated",
                "&options=aggregatedValues&aggrMethods=avg,min,max&aggrPeriodDuration=P1D".to_owned(),
            ),
        ];
        for (name, extra) in evolutions {
            let uri = format!("{base}{extra}");
            let make: MakeReq = Arc::new(move |_rng: &mut Rng| Some(Req::get(uri.clone()).tenant(TENANT)));
            let mut row = self.timed(make, self.cli.connections).await?.row(name);
            row.note = format!("1 entity × {n} instances");
            self.rows.push(row);
        }
        self.load_dataset(false).await?;
        let entities = self.cli.entities;
        let uri = format!(
            "{API}/temporal/entities?type={ENTITY_TYPE}&attrs=temperature&timerel=after&timeAt={START}&limit=20"
        );
        // The first page (as a dashboard asks), then pages anywhere in the
        // type: an offset costs a test of every entity it skips.
        for (name, deep) in [("temporal-query-first", false), ("temporal-query", true)] {
            let uri = uri.clone();
            let make: MakeReq = Arc::new(move |rng: &mut Rng| {
                let offset = if deep {
                    rng.below(entities.saturating_sub(20).max(1))
                } else {
                    0
                };
                Some(Req::get(format!("{uri}&offset={offset}")))
            });
            let mut row = self.timed(make, self.cli.query_connections).await?.row(name);
            let page = if deep { "a random page" } else { "the first page" };
            row.note = format!(
                "type+attrs, {page} of 20 over {entities}; {} connections",
                self.cli.query_connections
            );
            self.rows.push(row);
        }
        Ok(())
    }

    /// Creates the temporal entity in `tenant` with `n` observations.
    pub(crate) async fn load_history(&mut self, tenant: &'static str, n: u64) -> anyhow::Result<()> {
        let addr = self.broker().await?;
        eprintln!("   loading {n} attribute instances of one entity");
        let mut next = 0;
        while next < n {
            let end = (next + CHUNK).min(n);
            let instances: Vec<Value> = (next..end).map(instance).collect();
            let (method, uri, body) = if next == 0 {
                let body = json!({"id": ENTITY, "type": "WeatherObserved", "temperature": instances});
                (Method::POST, format!("{API}/temporal/entities"), body)
            } else {
                let body = json!({"temperature": instances});
                (Method::POST, format!("{API}/temporal/entities/{ENTITY}/attrs"), body)
            };
            let req = Req::with_body(method, uri, serde_json::to_vec(&body)?.into()).tenant(tenant);
            let (status, _, answer) = load::once(addr, req).await?;
            if !status.is_success() {
                bail!("loading history: HTTP {status}: {}", String::from_utf8_lossy(&answer));
            }
            next = end;
        }
        self.vacuum_analyze().await
    }
}

fn instance(k: u64) -> Value {
    let minutes = i64::try_from(k).unwrap_or(i64::MAX);
    let at = chrono::DateTime::parse_from_rfc3339(START).map(|t| t + chrono::Duration::minutes(minutes));
    let observed = at
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default();
    json!({
        "type": "Property",
        "value": 10.0 + template::mix(k) as f64 % 2000.0 / 100.0,
        "observedAt": observed,
        "unitCode": "CEL",
    })
}
