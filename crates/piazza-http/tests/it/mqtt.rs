//! MQTT notifications through the real Mosquitto of the machine
//! (`PIAZZA_TEST_MQTT_URL`, default `mqtt://127.0.0.1:1883`).

use std::time::Duration;

use reqwest::StatusCode;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::{json, Value};

use crate::support::client;

/// The broker's host and port, or `None` (with a loud message) when it is
/// not running and services are not required.
async fn mqtt_server() -> Option<(String, u16)> {
    let url = std::env::var("PIAZZA_TEST_MQTT_URL").unwrap_or_else(|_| "mqtt://127.0.0.1:1883".into());
    let parsed = reqwest::Url::parse(&url).expect("PIAZZA_TEST_MQTT_URL is a URL");
    let host = parsed.host_str().expect("host").to_owned();
    let port = parsed.port().unwrap_or(1883);
    if tokio::net::TcpStream::connect((host.as_str(), port)).await.is_ok() {
        return Some((host, port));
    }
    if std::env::var("PIAZZA_TEST_REQUIRE_SERVICES").as_deref() == Ok("1") {
        panic!("no MQTT broker at {url}, and PIAZZA_TEST_REQUIRE_SERVICES=1");
    }
    eprintln!("\n*** SKIPPED: no MQTT broker at {url}; MQTT notification test not run ***\n");
    None
}

#[tokio::test]
async fn notifications_are_published_to_the_mqtt_topic() {
    let Some((host, port)) = mqtt_server().await else {
        return;
    };
    let topic = format!("piazza-test/{}/{}", std::process::id(), uuid_like());
    let mut options = MqttOptions::new(format!("piazza-test-{}", uuid_like()), &host, port);
    options.set_keep_alive(Duration::from_secs(10));
    let (listener, mut events) = AsyncClient::new(options, 16);
    listener.subscribe(&topic, QoS::AtLeastOnce).await.expect("subscribe");
    let (sender, mut inbox) = tokio::sync::mpsc::unbounded_channel::<Value>();
    let (subscribed, mut ready) = tokio::sync::mpsc::unbounded_channel::<()>();
    tokio::spawn(async move {
        while let Ok(event) = events.poll().await {
            match event {
                Event::Incoming(Packet::SubAck(_)) => drop(subscribed.send(())),
                Event::Incoming(Packet::Publish(message)) => {
                    drop(sender.send(serde_json::from_slice(&message.payload).unwrap_or(Value::Null)))
                }
                _ => {}
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(10), ready.recv())
        .await
        .expect("SUBACK");

    let c = client();
    c.create(&json!({"id": "urn:ngsi-ld:Car:mqtt", "type": "Car", "speed": {"type": "Property", "value": 1}}))
        .await;
    let subscription = json!({
        "id": "urn:ngsi-ld:Subscription:mqtt",
        "type": "Subscription",
        "entities": [{"type": "Car"}],
        "notification": {"endpoint": {
            "uri": format!("mqtt://{host}:{port}/{topic}"),
            "accept": "application/json",
            "receiverInfo": [{"key": "x-city", "value": "Prato"}],
            "notifierInfo": [{"key": "MQTT-QoS", "value": "1"}],
        }},
    });
    assert_eq!(
        c.post("/subscriptions", &subscription).await.status,
        StatusCode::CREATED
    );
    for speed in [2, 3] {
        let reply = c
            .patch(
                "/entities/urn:ngsi-ld:Car:mqtt/attrs",
                &json!({"speed": {"type": "Property", "value": speed}}),
            )
            .await;
        assert_eq!(reply.status, StatusCode::NO_CONTENT);
    }
    let mut speeds = Vec::new();
    while speeds.len() < 2 {
        let message = tokio::time::timeout(Duration::from_secs(10), inbox.recv())
            .await
            .expect("an MQTT message in time")
            .expect("listener running");
        assert_eq!(message["metadata"]["Content-Type"], "application/json");
        assert!(message["metadata"]["Link"].is_string());
        assert_eq!(message["metadata"]["x-city"], "Prato");
        assert_eq!(message["body"]["type"], "Notification");
        assert_eq!(message["body"]["subscriptionId"], "urn:ngsi-ld:Subscription:mqtt");
        for item in message["body"]["data"].as_array().expect("data") {
            speeds.push(item["speed"]["value"].as_i64().expect("speed"));
        }
    }
    assert_eq!(speeds, [2, 3], "in order");
    // QoS 1 deliveries count once Mosquitto acknowledged them.
    let mut status = Value::Null;
    for _ in 0..50 {
        status = c.get("/subscriptions/urn:ngsi-ld:Subscription:mqtt").await.body;
        if status["notification"]["timesSent"].as_u64().is_some_and(|n| n >= 1) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        status["notification"]["timesSent"].as_u64().is_some_and(|n| n >= 1),
        "{status}"
    );
    assert_eq!(status["notification"]["status"], "ok");
}

fn uuid_like() -> String {
    format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    )
}
