//! Notification delivery over HTTP to real local endpoints.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::support::{client, dead_port, Client, Receiver, CORE};

fn car(id: &str, speed: i64) -> Value {
    json!({"id": id, "type": "Car", "speed": {"type": "Property", "value": speed}, "brand": {"type": "Property", "value": "Fiat"}})
}

async fn subscribe(c: &Client, id: &str, endpoint: &str, extra: Value) -> Value {
    let mut body = json!({
        "id": id,
        "type": "Subscription",
        "entities": [{"type": "Car"}],
        "notification": {"endpoint": {"uri": endpoint, "accept": "application/json"}},
    });
    if let (Some(target), Some(more)) = (body.as_object_mut(), extra.as_object()) {
        for (key, value) in more {
            target.insert(key.clone(), value.clone());
        }
    }
    let reply = c.post("/subscriptions", &body).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    body
}

async fn set_speed(c: &Client, id: &str, speed: i64) {
    let reply = c
        .patch(
            &format!("/entities/{id}/attrs"),
            &json!({"speed": {"type": "Property", "value": speed}}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.body);
}

#[tokio::test]
async fn an_update_is_notified_with_the_entity_and_context() {
    let c = client();
    let mut receiver = Receiver::start().await;
    c.create(&car("urn:ngsi-ld:Car:n1", 10)).await;
    subscribe(
        &c,
        "urn:ngsi-ld:Subscription:n1",
        &receiver.url,
        json!({"watchedAttributes": ["speed"]}),
    )
    .await;
    set_speed(&c, "urn:ngsi-ld:Car:n1", 42).await;
    let received = receiver.next(10).await;
    let body = &received.body;
    assert_eq!(body["type"], "Notification");
    assert_eq!(body["subscriptionId"], "urn:ngsi-ld:Subscription:n1");
    assert_eq!(body["triggerReason"], "attributeUpdated");
    assert!(body["id"]
        .as_str()
        .is_some_and(|id| id.starts_with("urn:ngsi-ld:Notification:")));
    assert_eq!(body["data"][0]["id"], "urn:ngsi-ld:Car:n1");
    assert_eq!(body["data"][0]["speed"]["value"], 42);
    assert_eq!(body["data"][0]["brand"]["value"], "Fiat", "the whole entity is sent");
    let header = |name: &str| {
        received
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    assert_eq!(header("content-type").as_deref(), Some("application/json"));
    assert!(header("link").is_some_and(|l| l.contains(CORE)), "{:?}", header("link"));
    assert_eq!(header("ngsild-tenant").as_deref(), Some(c.tenant.as_str()));
    // A change of an attribute nobody watches is not notified.
    let reply = c
        .patch(
            "/entities/urn:ngsi-ld:Car:n1/attrs",
            &json!({"brand": {"type": "Property", "value": "Lancia"}}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert!(receiver.quiet_for(700).await, "brand is not watched");
    let status = c.get("/subscriptions/urn:ngsi-ld:Subscription:n1").await.body;
    assert_eq!(status["notification"]["timesSent"], 1, "{status}");
    assert_eq!(status["notification"]["status"], "ok");
    assert!(status["notification"]["lastSuccess"].is_string());
}

#[tokio::test]
async fn json_ld_endpoints_get_the_context_in_the_body_and_key_values_when_asked() {
    let c = client();
    let mut receiver = Receiver::start().await;
    let body = json!({
        "id": "urn:ngsi-ld:Subscription:ld",
        "type": "Subscription",
        "entities": [{"type": "Car"}],
        "notificationTrigger": ["entityCreated"],
        "notification": {"format": "keyValues", "endpoint": {"uri": receiver.url, "accept": "application/ld+json"}},
    });
    assert_eq!(c.post("/subscriptions", &body).await.status, StatusCode::CREATED);
    c.create(&car("urn:ngsi-ld:Car:ld", 3)).await;
    let received = receiver.next(10).await;
    assert_eq!(received.body["@context"], CORE);
    assert_eq!(received.body["triggerReason"], "entityCreated");
    assert_eq!(received.body["data"][0]["speed"], 3);
    assert_eq!(
        received.headers.get("content-type").and_then(|v| v.to_str().ok()),
        Some("application/ld+json")
    );
}

#[tokio::test]
async fn deletions_are_notified() {
    let c = client();
    let mut receiver = Receiver::start().await;
    c.create(&car("urn:ngsi-ld:Car:del", 1)).await;
    subscribe(
        &c,
        "urn:ngsi-ld:Subscription:del",
        &receiver.url,
        json!({"notificationTrigger": ["attributeDeleted", "entityDeleted"]}),
    )
    .await;
    assert_eq!(
        c.delete("/entities/urn:ngsi-ld:Car:del/attrs/brand").await.status,
        StatusCode::NO_CONTENT
    );
    let attribute = receiver.next(10).await.body;
    assert_eq!(attribute["triggerReason"], "attributeDeleted");
    assert_eq!(
        attribute["data"][0]["brand"],
        json!({"type": "Property", "value": "urn:ngsi-ld:null"})
    );
    assert_eq!(
        c.delete("/entities/urn:ngsi-ld:Car:del").await.status,
        StatusCode::NO_CONTENT
    );
    let entity = receiver.next(10).await.body;
    assert_eq!(entity["triggerReason"], "entityDeleted");
    let deleted = entity["data"][0].as_object().expect("entity");
    assert_eq!(deleted.keys().collect::<Vec<_>>(), ["id", "type", "deletedAt"]);
}

#[tokio::test]
async fn a_dead_endpoint_does_not_delay_a_live_one() {
    let c = client();
    let mut live = Receiver::start().await;
    c.create(&car("urn:ngsi-ld:Car:dl", 0)).await;
    let dead = format!("http://127.0.0.1:{}/notify", dead_port());
    subscribe(&c, "urn:ngsi-ld:Subscription:dead", &dead, json!({})).await;
    subscribe(&c, "urn:ngsi-ld:Subscription:live", &live.url, json!({})).await;
    for speed in 1..=20 {
        set_speed(&c, "urn:ngsi-ld:Car:dl", speed).await;
    }
    // Every change arrives, in order, while the other endpoint keeps failing.
    let mut seen = Vec::new();
    while seen.last() != Some(&20) {
        let body = live.next(10).await.body;
        for item in body["data"].as_array().expect("data") {
            seen.push(item["speed"]["value"].as_i64().expect("speed"));
        }
    }
    assert_eq!(seen, (1..=20).collect::<Vec<_>>(), "in order, none lost, none twice");
    let mut dead = Value::Null;
    for _ in 0..50 {
        dead = c.get("/subscriptions/urn:ngsi-ld:Subscription:dead").await.body;
        if dead["notification"]["status"] == "failed" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(dead["notification"]["status"], "failed", "{dead}");
    assert!(dead["notification"]["timesFailed"].as_u64().is_some_and(|n| n >= 1));
    assert!(dead["notification"]["lastFailure"].is_string());
    assert!(dead["notification"].get("timesSent").is_none());
}

#[tokio::test]
async fn paused_subscriptions_notify_nothing_until_resumed() {
    let c = client();
    let mut receiver = Receiver::start().await;
    c.create(&car("urn:ngsi-ld:Car:p", 0)).await;
    subscribe(
        &c,
        "urn:ngsi-ld:Subscription:p",
        &receiver.url,
        json!({"isActive": false}),
    )
    .await;
    set_speed(&c, "urn:ngsi-ld:Car:p", 1).await;
    assert!(receiver.quiet_for(700).await, "a paused subscription is silent");
    let resumed = c
        .patch("/subscriptions/urn:ngsi-ld:Subscription:p", &json!({"isActive": true}))
        .await;
    assert_eq!(resumed.status, StatusCode::NO_CONTENT);
    set_speed(&c, "urn:ngsi-ld:Car:p", 2).await;
    assert_eq!(receiver.next(10).await.body["data"][0]["speed"]["value"], 2);
}

#[tokio::test]
async fn q_selects_which_changes_are_notified() {
    let c = client();
    let mut receiver = Receiver::start().await;
    c.create(&car("urn:ngsi-ld:Car:q", 0)).await;
    subscribe(
        &c,
        "urn:ngsi-ld:Subscription:q",
        &receiver.url,
        json!({"q": "speed>100"}),
    )
    .await;
    set_speed(&c, "urn:ngsi-ld:Car:q", 50).await;
    set_speed(&c, "urn:ngsi-ld:Car:q", 150).await;
    let body = receiver.next(10).await.body;
    assert_eq!(
        body["data"][0]["speed"]["value"], 150,
        "the first change did not match q"
    );
}

#[tokio::test]
async fn throttling_coalesces_changes_into_the_latest_state() {
    let c = client();
    let mut receiver = Receiver::start().await;
    c.create(&car("urn:ngsi-ld:Car:t", 0)).await;
    subscribe(
        &c,
        "urn:ngsi-ld:Subscription:t",
        &receiver.url,
        json!({"throttling": 2}),
    )
    .await;
    set_speed(&c, "urn:ngsi-ld:Car:t", 1).await;
    assert_eq!(receiver.next(10).await.body["data"][0]["speed"]["value"], 1);
    for speed in 2..=5 {
        set_speed(&c, "urn:ngsi-ld:Car:t", speed).await;
    }
    assert!(
        receiver.quiet_for(1000).await,
        "nothing before the throttling period ends"
    );
    let body = receiver.next(10).await.body;
    assert_eq!(body["data"].as_array().map(Vec::len), Some(1));
    assert_eq!(body["data"][0]["speed"]["value"], 5, "the latest state");
}

#[tokio::test]
async fn time_interval_subscriptions_notify_periodically() {
    let c = client();
    let mut receiver = Receiver::start().await;
    c.create(&car("urn:ngsi-ld:Car:ti", 7)).await;
    let body = json!({
        "id": "urn:ngsi-ld:Subscription:ti",
        "type": "Subscription",
        "entities": [{"type": "Car"}],
        "timeInterval": 1,
        "notification": {"endpoint": {"uri": receiver.url}},
    });
    assert_eq!(c.post("/subscriptions", &body).await.status, StatusCode::CREATED);
    for _ in 0..2 {
        let body = receiver.next(10).await.body;
        assert_eq!(body["data"][0]["speed"]["value"], 7);
    }
    assert_eq!(
        c.delete("/subscriptions/urn:ngsi-ld:Subscription:ti").await.status,
        StatusCode::NO_CONTENT
    );
    // The periodic task stops with its subscription (allow one in flight).
    let _ = receiver.quiet_for(1500).await;
    assert!(receiver.quiet_for(2500).await, "no notification after deletion");
}

#[tokio::test]
async fn tenants_never_see_each_others_notifications() {
    let (a, b) = (client(), client());
    let mut receiver = Receiver::start().await;
    subscribe(&a, "urn:ngsi-ld:Subscription:iso", &receiver.url, json!({})).await;
    b.create(&car("urn:ngsi-ld:Car:iso", 1)).await;
    assert!(
        receiver.quiet_for(700).await,
        "tenant b's entity is not tenant a's business"
    );
    a.create(&car("urn:ngsi-ld:Car:iso", 2)).await;
    let body = receiver.next(10).await.body;
    assert_eq!(body["data"][0]["speed"]["value"], 2);
}

#[tokio::test]
async fn linked_entities_join_notifications_flat_or_inline() {
    let c = client();
    let mut flat = Receiver::start().await;
    let mut inline = Receiver::start().await;
    c.create(&json!({"id": "urn:ngsi-ld:City:Prato", "type": "City", "name": {"type": "Property", "value": "Prato"}}))
        .await;
    c.create(&json!({
        "id": "urn:ngsi-ld:Car:j", "type": "Car",
        "speed": {"type": "Property", "value": 1},
        "parkedIn": {"type": "Relationship", "object": "urn:ngsi-ld:City:Prato"},
    }))
    .await;
    for (id, receiver, join) in [("flat", &flat, "flat"), ("inline", &inline, "inline")] {
        let body = json!({
            "id": format!("urn:ngsi-ld:Subscription:join-{id}"), "type": "Subscription",
            "entities": [{"type": "Car"}],
            "notification": {"endpoint": {"uri": receiver.url}, "join": join, "joinLevel": 1},
        });
        assert_eq!(c.post("/subscriptions", &body).await.status, StatusCode::CREATED);
    }
    set_speed(&c, "urn:ngsi-ld:Car:j", 2).await;
    let flat_data = flat.next(10).await.body["data"].clone();
    assert_eq!(flat_data[0]["id"], "urn:ngsi-ld:Car:j");
    assert_eq!(flat_data[1]["id"], "urn:ngsi-ld:City:Prato", "{flat_data}");
    let inline_data = inline.next(10).await.body["data"].clone();
    assert_eq!(inline_data.as_array().map(Vec::len), Some(1));
    assert_eq!(
        inline_data[0]["parkedIn"]["entity"]["name"]["value"], "Prato",
        "{inline_data}"
    );
}

#[tokio::test]
async fn pick_and_omit_shape_the_notified_entity() {
    let c = client();
    let mut receiver = Receiver::start().await;
    c.create(&car("urn:ngsi-ld:Car:pick", 1)).await;
    let body = json!({
        "id": "urn:ngsi-ld:Subscription:pick", "type": "Subscription",
        "entities": [{"type": "Car"}],
        "notification": {"endpoint": {"uri": receiver.url}, "pick": ["id", "speed"]},
    });
    assert_eq!(c.post("/subscriptions", &body).await.status, StatusCode::CREATED);
    set_speed(&c, "urn:ngsi-ld:Car:pick", 2).await;
    let item = receiver.next(10).await.body["data"][0].clone();
    let keys: Vec<_> = item.as_object().expect("entity").keys().cloned().collect();
    assert_eq!(keys, ["id", "speed"]);
}
