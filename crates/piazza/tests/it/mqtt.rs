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

/// The Mosquitto binary for a private broker, or `None` (loudly).
fn mosquitto_binary() -> Option<std::path::PathBuf> {
    let candidates = std::env::var_os("PIAZZA_TEST_MOSQUITTO")
        .map(std::path::PathBuf::from)
        .into_iter()
        .chain(std::env::var_os("PATH").into_iter().flat_map(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join("mosquitto"))
                .collect::<Vec<_>>()
        }))
        .chain(["/usr/sbin/mosquitto".into(), "/usr/local/sbin/mosquitto".into()]);
    let found = candidates.into_iter().find(|p| p.is_file());
    if found.is_none() {
        eprintln!("\n*** SKIPPED: no mosquitto binary (PIAZZA_TEST_MOSQUITTO); MQTT reconnection test not run ***\n");
    }
    found
}

/// A private Mosquitto on `port`, killed when dropped.
struct Mosquitto(std::process::Child);

impl Mosquitto {
    async fn start(binary: &std::path::Path, port: u16) -> Mosquitto {
        let child = std::process::Command::new(binary)
            .args(["-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start mosquitto");
        let mosquitto = Mosquitto(child);
        eventually("mosquitto to listen", || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()
                .map(|_| ())
        })
        .await;
        mosquitto
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Publishes once with a fresh connection (QoS 1, until PUBACK or 2 s).
async fn publish_once(port: u16, topic: &str, payload: &[u8]) {
    let options = MqttOptions::new(format!("piazza-test-{}", unique()), "127.0.0.1", port);
    let (client, mut events) = AsyncClient::new(options, 16);
    client
        .publish(topic, QoS::AtLeastOnce, false, payload.to_vec())
        .await
        .expect("publish");
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while let Ok(event) = events.poll().await {
            if let rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_)) = event {
                break;
            }
        }
    })
    .await;
    let _ = client.try_disconnect();
}

#[tokio::test]
async fn the_bridge_reconnects_when_the_mqtt_broker_restarts() {
    let Some(binary) = mosquitto_binary() else {
        return;
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("free port")
        .local_addr()
        .expect("port")
        .port();
    let mosquitto = Mosquitto::start(&binary, port).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("mqtt://127.0.0.1:{port}");
    let server = Server::start_with(dir.path(), &["--mqtt", &url, "--mqtt-prefix", "restart"]);
    let id = "urn:ngsi-ld:Sensor:restart";
    let topic = format!("restart/city/Sensor/{id}/attrs");
    let entity_url = server.url(&format!("/ngsi-ld/v1/entities/{id}"));
    let value_becomes = |value: i64| {
        let topic = topic.clone();
        let entity_url = entity_url.clone();
        let client = reqwest::Client::new();
        async move {
            eventually(&format!("t = {value}"), || {
                let (topic, entity_url, client) = (topic.clone(), entity_url.clone(), client.clone());
                async move {
                    publish_once(port, &topic, format!("{{\"t\": {value}}}").as_bytes()).await;
                    let reply = client
                        .get(&entity_url)
                        .header("NGSILD-Tenant", "city")
                        .send()
                        .await
                        .ok()?;
                    let entity: Value = reply.json().await.ok()?;
                    (entity["t"]["value"] == json!(value)).then_some(())
                }
            })
            .await
        }
    };
    value_becomes(1).await;
    drop(mosquitto);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _mosquitto = Mosquitto::start(&binary, port).await;
    value_becomes(2).await;
    assert!(server.terminate().success());
}
