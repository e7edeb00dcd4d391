//! History retention through the broker, per tenant, on the embedded store.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use piazza_broker::piazza_store::Tenant;
use piazza_broker::{Broker, Limits, Payload, Retention};
use piazza_ngsild::temporal::TemporalQuery;
use piazza_ngsild::ActiveContext;
use piazza_store_embedded::EmbeddedStore;
use serde_json::json;

async fn record_history(broker: &Broker, tenant: &Tenant) {
    let payload = |body| Payload {
        body,
        context: ActiveContext::core(),
    };
    let entity = json!({"id": "urn:ngsi-ld:Sensor:1", "type": "Sensor", "pm10": 1});
    broker.create_entity(tenant, payload(entity)).await.expect("create");
    for value in 2..=3 {
        broker
            .update_attributes(tenant, "urn:ngsi-ld:Sensor:1", payload(json!({"pm10": value})))
            .await
            .expect("update");
    }
}

async fn instances(broker: &Broker, tenant: &Tenant) -> usize {
    broker
        .store()
        .temporal_entity(tenant, "urn:ngsi-ld:Sensor:1", &TemporalQuery::default())
        .await
        .expect("history")
        .map(|e| e.attributes.values().map(Vec::len).sum())
        .unwrap_or(0)
}

#[tokio::test]
async fn each_tenant_keeps_history_for_its_own_horizon() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Arc::new(EmbeddedStore::open(dir.path()).expect("store"));
    let retention = Retention {
        default: None,
        // `short` keeps nothing older than now; everyone else keeps all.
        tenants: HashMap::from([("short".to_owned(), Duration::ZERO)]),
        ..Retention::default()
    };
    let broker = Broker::new(store, Limits::default()).with_retention(retention);
    let (short, long) = (
        Tenant::parse("short").expect("tenant"),
        Tenant::parse("long").expect("tenant"),
    );
    record_history(&broker, &short).await;
    record_history(&broker, &long).await;
    assert_eq!(instances(&broker, &short).await, 3);
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(broker.purge_old_history().await.expect("purge"), 3);
    assert_eq!(instances(&broker, &short).await, 0);
    assert_eq!(
        instances(&broker, &long).await,
        3,
        "no retention configured for this tenant"
    );
    let current = broker
        .entity(&short, "urn:ngsi-ld:Sensor:1")
        .await
        .expect("entity stays");
    assert_eq!(current.id, "urn:ngsi-ld:Sensor:1");
}
