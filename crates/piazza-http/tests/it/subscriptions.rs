//! Subscription management: create, retrieve, query, update, delete.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::support::{client, problem, CORE};

fn subscription(id: &str) -> serde_json::Value {
    json!({
        "id": id,
        "type": "Subscription",
        "entities": [{"type": "AirQualityObserved"}],
        "watchedAttributes": ["pm10"],
        "q": "pm10>50",
        "notification": {"format": "keyValues", "endpoint": {"uri": "http://127.0.0.1:9/notify", "accept": "application/json"}},
    })
}

#[tokio::test]
async fn lifecycle() {
    let c = client();
    let created = c
        .post("/subscriptions", &subscription("urn:ngsi-ld:Subscription:s1"))
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    assert_eq!(
        created.header("location"),
        Some("/ngsi-ld/v1/subscriptions/urn:ngsi-ld:Subscription:s1")
    );
    let again = c
        .post("/subscriptions", &subscription("urn:ngsi-ld:Subscription:s1"))
        .await;
    assert_eq!(again.problem(), problem("AlreadyExists"));
    let got = c.get("/subscriptions/urn:ngsi-ld:Subscription:s1").await;
    assert_eq!(got.body["status"], "active");
    assert_eq!(got.body["q"], "pm10>50");
    assert_eq!(got.body["jsonldContext"], CORE);
    let paused = c
        .patch(
            "/subscriptions/urn:ngsi-ld:Subscription:s1",
            &json!({"isActive": false}),
        )
        .await;
    assert_eq!(paused.status, StatusCode::NO_CONTENT);
    assert_eq!(
        c.get("/subscriptions/urn:ngsi-ld:Subscription:s1").await.body["status"],
        "paused"
    );
    let list = c.get("/subscriptions?count=true").await;
    assert_eq!(list.header("ngsild-results-count"), Some("1"));
    assert_eq!(
        c.delete("/subscriptions/urn:ngsi-ld:Subscription:s1").await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        c.get("/subscriptions/urn:ngsi-ld:Subscription:s1").await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn invalid_subscriptions_are_rejected() {
    let c = client();
    let mut no_endpoint = subscription("urn:ngsi-ld:Subscription:bad1");
    no_endpoint["notification"] = json!({"format": "keyValues"});
    let mut bad_q = subscription("urn:ngsi-ld:Subscription:bad2");
    bad_q["q"] = json!("pm10>>");
    let mut past = subscription("urn:ngsi-ld:Subscription:bad3");
    past["expiresAt"] = json!("2020-01-01T00:00:00Z");
    let mut nothing = subscription("urn:ngsi-ld:Subscription:bad4");
    nothing
        .as_object_mut()
        .map(|m| (m.remove("entities"), m.remove("watchedAttributes")));
    for case in [no_endpoint, bad_q, past, nothing] {
        let reply = c.post("/subscriptions", &case).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{case}");
    }
    assert_eq!(c.get("/subscriptions").await.body, json!([]));
}

#[tokio::test]
async fn an_inline_context_becomes_an_implicitly_created_context() {
    let c = client();
    let mut body = subscription("urn:ngsi-ld:Subscription:ld");
    body["@context"] = json!({"pm10": "https://example.org/pm10"});
    let created = c
        .send(
            c.request(Method::POST, "/subscriptions")
                .header("Content-Type", "application/ld+json")
                .json(&body),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let got = c.get("/subscriptions/urn:ngsi-ld:Subscription:ld").await;
    let url = got.body["jsonldContext"].as_str().unwrap_or_default().to_owned();
    let id = url.rsplit('/').next().unwrap_or_default();
    let served = c.get(&format!("/jsonldContexts/{id}")).await;
    assert_eq!(served.body, json!({"@context": {"pm10": "https://example.org/pm10"}}));
    let implicit = c.get("/jsonldContexts?kind=ImplicitlyCreated").await;
    assert_eq!(implicit.body.as_array().map(Vec::len), Some(1));
}
