//! The live MQTT bridge of `piazza serve --mqtt`, through the real
//! Mosquitto of the machine (`PIAZZA_TEST_MQTT_URL`, default
//! `mqtt://127.0.0.1:1883`).

use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, MqttOptions, QoS};
use serde_json::{json, Value};

use crate::process::Server;

/// The broker's URL, host and port, or `None` (with a loud message) when it
/// is not running and services are not required.
async fn mqtt_server() -> Option<(String, String, u16)> {
    let url = std::env::var("PIAZZA_TEST_MQTT_URL").unwrap_or_else(|_| "mqtt://127.0.0.1:1883".into());
    let parsed = reqwest::Url::parse(&url).expect("PIAZZA_TEST_MQTT_URL is a URL");
    let host = parsed.host_str().expect("host").to_owned();
    let port = parsed.port().unwrap_or(1883);
    if tokio::net::TcpStream::connect((host.as_str(), port)).await.is_ok() {
        return Some((url, host, port));
    }
    if std::env::var("PIAZZA_TEST_REQUIRE_SERVICES").as_deref() == Ok("1") {
        panic!("no MQTT broker at {url}, and PIAZZA_TEST_REQUIRE_SERVICES=1");
    }
    eprintln!("\n*** SKIPPED: no MQTT broker at {url}; MQTT bridge test not run ***\n");
    None
}

fn unique() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos();
    format!("{}-{nanos}", std::process::id())
}

/// Polls `check` every 100 ms until it gives a value or 20 s pass.
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn get_json(url: &str) -> Option<Value> {
    let reply = reqwest::get(url).await.ok()?;
    if !reply.status().is_success() {
        return None;
    }
    reply.json().await.ok()
}

#[tokio::test]
async fn sensor_messages_update_entities_and_history() {
    let Some((url, host, port)) = mqtt_server().await else {
        return;
    };
    let prefix = format!("piazza-test/{}", unique());
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start_with(dir.path(), &["--mqtt", &url, "--mqtt-prefix", &prefix]);

    let mut options = MqttOptions::new(format!("piazza-test-{}", unique()), &host, port);
    options.set_keep_alive(Duration::from_secs(10));
    let (publisher, mut events) = AsyncClient::new(options, 16);
    tokio::spawn(async move { while events.poll().await.is_ok() {} });

    let id = "urn:ngsi-ld:AirQualityObserved:mqtt-1";
    let topic = format!("{prefix}/-/AirQualityObserved/{id}/attrs");
    let entity_url = server.url(&format!("/ngsi-ld/v1/entities/{id}"));
    let publish = |payload: Vec<u8>| {
        let publisher = publisher.clone();
        let topic = topic.clone();
        async move {
            publisher
                .publish(topic, QoS::AtLeastOnce, false, payload)
                .await
                .expect("publish");
        }
    };

    // The bridge subscribes in the background: publish until it is heard.
    let first = eventually("the first message to create the entity", || {
        let entity_url = entity_url.clone();
        async move {
            publish(br#"{"pm10": 31, "name": "Prato Roma"}"#.to_vec()).await;
            tokio::time::sleep(Duration::from_millis(400)).await;
            get_json(&entity_url).await
        }
    })
    .await;
    assert_eq!(first["pm10"]["value"], json!(31), "{first}");
    assert_eq!(first["name"]["value"], json!("Prato Roma"), "{first}");
    assert_eq!(first["type"], json!("AirQualityObserved"));

    // Malformed messages (bad JSON, not an object, bad topic) change nothing
    // and do not stop the bridge: the next good message is applied.
    publish(b"{not json".to_vec()).await;
    publish(b"[1, 2, 3]".to_vec()).await;
    publisher
        .publish(
            format!("{prefix}/-/AirQualityObserved/not-a-uri/attrs"),
            QoS::AtLeastOnce,
            false,
            b"{\"pm10\": 1}".to_vec(),
        )
        .await
        .expect("publish");
    publish(br#"{"pm10": {"type": "Property", "value": 42, "unitCode": "GQ"}}"#.to_vec()).await;
    let second = eventually("the normalized message after malformed ones", || {
        let entity_url = entity_url.clone();
        async move { get_json(&entity_url).await.filter(|e| e["pm10"]["value"] == json!(42)) }
    })
    .await;
    assert_eq!(second["pm10"]["unitCode"], json!("GQ"));
    assert_eq!(
        second["name"]["value"],
        json!("Prato Roma"),
        "other attributes are kept: {second}"
    );
    let health = reqwest::get(server.url("/health")).await.expect("the server is alive");
    assert_eq!(health.status(), 200);

    // History holds both values.
    let temporal_url = server.url(&format!("/ngsi-ld/v1/temporal/entities/{id}"));
    let history = eventually("both values in history", || {
        let temporal_url = temporal_url.clone();
        async move {
            let history = get_json(&temporal_url).await?;
            let values: Vec<Value> = match &history["pm10"] {
                Value::Array(instances) => instances.iter().map(|i| i["value"].clone()).collect(),
                single => vec![single["value"].clone()],
            };
            (values.contains(&json!(31)) && values.contains(&json!(42))).then_some(history)
        }
    })
    .await;
    assert_eq!(history["type"], json!("AirQualityObserved"));
    assert!(
        server.terminate().success(),
        "graceful shutdown with the bridge running"
    );
}
