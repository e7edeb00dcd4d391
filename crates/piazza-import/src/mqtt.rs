//! The live MQTT bridge: sensors publish attribute values, the broker
//! updates the entity (and so its history and subscriptions).
//!
//! Topics are `<prefix>/<tenant>/<type>/<entity-id>/attrs`; the tenant
//! segment `-` is the default tenant. The entity id is a URI and may itself
//! contain `/`: everything between the type and the final `attrs` is the id.
//! A payload is a JSON object of attribute values, keyValues
//! (`{"temperature": 21.5}`) or NGSI-LD attributes (normalized or concise),
//! converted by [`crate::values`]; an optional `@context` member is resolved
//! like a request's. Attributes without `observedAt` get the time the message
//! was received, so every reading is a history instance.
//!
//! Each message is one [`Broker::import_upsert`] in [`ImportMode::Update`]:
//! the entity is created if missing, the attributes of the message are added
//! or overwritten and the others are kept. A bad topic or payload is counted
//! and logged (warn) and nothing else happens. The bridge survives restarts
//! of the MQTT broker: it keeps polling the event loop after an error (with
//! a short pause), and subscribes again on every new connection.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use piazza_broker::ingest::ImportMode;
use piazza_broker::piazza_store::Tenant;
use piazza_broker::{Broker, Payload};
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};
use serde_json::{Map, Value};
use tokio::sync::mpsc;

use crate::values;

/// The tenant segment that names the default tenant.
pub const DEFAULT_TENANT_SEGMENT: &str = "-";
/// The default topic prefix.
pub const DEFAULT_PREFIX: &str = "piazza";

const RECONNECT_PAUSE: Duration = Duration::from_secs(1);

/// Where the bridge connects and what it listens to.
#[derive(Clone, Debug)]
pub struct MqttBridgeConfig {
    /// `mqtt://[user:password@]host[:port]` (port 1883 by default).
    pub url: String,
    /// The first topic level(s); may contain `/`, not wildcards.
    pub prefix: String,
}

/// Messages seen by the bridge since it started.
#[derive(Debug, Default)]
pub struct BridgeStats {
    pub received: AtomicU64,
    pub applied: AtomicU64,
    pub rejected: AtomicU64,
}

/// A bad topic or payload.
#[derive(Debug, PartialEq, Eq)]
pub struct Rejected(pub String);

/// Where a message goes, from its topic.
#[derive(Debug, PartialEq, Eq)]
pub struct Target {
    pub tenant: Tenant,
    pub entity_type: String,
    pub entity_id: String,
}

/// A running bridge; dropping it does not stop it, [`MqttBridge::stop`] does.
pub struct MqttBridge {
    pub stats: Arc<BridgeStats>,
    client: AsyncClient,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl MqttBridge {
    /// Validates the configuration and starts the bridge's tasks; the
    /// connection itself is made (and remade) in the background.
    pub fn start(broker: Arc<Broker>, config: MqttBridgeConfig) -> Result<MqttBridge, String> {
        let server = parse_url(&config.url)?;
        let prefix = config.prefix.trim_matches('/').to_owned();
        if prefix.is_empty() || prefix.contains(['+', '#']) {
            return Err(format!("invalid MQTT topic prefix '{}'", config.prefix));
        }
        let client_id = format!(
            "piazza-bridge-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default()
        );
        let mut options = MqttOptions::new(client_id, &server.host, server.port);
        options.set_keep_alive(Duration::from_secs(30));
        options.set_max_packet_size(1024 * 1024, 1024 * 1024);
        if let Some((user, password)) = &server.credentials {
            options.set_credentials(user, password);
        }
        let (client, event_loop) = AsyncClient::new(options, 64);
        let stats = Arc::new(BridgeStats::default());
        let (sender, receiver) = mpsc::channel(1024);
        let filter = format!("{prefix}/#");
        tracing::info!(url = %redacted(&config.url), topics = %filter, "MQTT bridge starting");
        let poll = tokio::spawn(poll(event_loop, client.clone(), filter, sender));
        let apply = tokio::spawn(apply(broker, prefix, receiver, stats.clone()));
        Ok(MqttBridge {
            stats,
            client,
            tasks: vec![poll, apply],
        })
    }

    /// Disconnects and stops the bridge's tasks.
    pub async fn stop(self) {
        let _ = self.client.try_disconnect();
        for task in self.tasks {
            task.abort();
        }
    }
}

/// Drives the connection: subscribes on every CONNACK, hands publishes to
/// the applier in arrival order, and keeps going after errors.
async fn poll(mut event_loop: EventLoop, client: AsyncClient, filter: String, sender: mpsc::Sender<(String, Vec<u8>)>) {
    let mut connected = false;
    loop {
        match event_loop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                connected = true;
                tracing::info!(topics = %filter, "MQTT bridge connected");
                if let Err(error) = client.try_subscribe(filter.clone(), QoS::AtLeastOnce) {
                    tracing::warn!(%error, "MQTT bridge cannot subscribe");
                }
            }
            Ok(Event::Incoming(Packet::SubAck(_))) => {
                tracing::info!(topics = %filter, "MQTT bridge subscribed");
            }
            Ok(Event::Incoming(Packet::Publish(message))) => {
                if sender.send((message.topic, message.payload.to_vec())).await.is_err() {
                    return;
                }
            }
            Ok(_) => {}
            Err(error) => {
                if connected {
                    tracing::warn!(%error, "MQTT bridge lost its connection; reconnecting");
                } else {
                    tracing::debug!(%error, "MQTT bridge cannot connect; retrying");
                }
                connected = false;
                tokio::time::sleep(RECONNECT_PAUSE).await;
            }
        }
    }
}

/// Applies messages one at a time, in order.
async fn apply(
    broker: Arc<Broker>,
    prefix: String,
    mut receiver: mpsc::Receiver<(String, Vec<u8>)>,
    stats: Arc<BridgeStats>,
) {
    while let Some((topic, payload)) = receiver.recv().await {
        stats.received.fetch_add(1, Ordering::Relaxed);
        match handle(&broker, &prefix, &topic, &payload).await {
            Ok(()) => {
                stats.applied.fetch_add(1, Ordering::Relaxed);
            }
            Err(Rejected(reason)) => {
                let rejected = stats.rejected.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::warn!(%topic, %reason, rejected, "MQTT message rejected");
            }
        }
    }
}

/// One message: topic → target, payload → fragment, fragment → broker.
pub async fn handle(broker: &Broker, prefix: &str, topic: &str, payload: &[u8]) -> Result<(), Rejected> {
    let target = parse_topic(prefix, topic)?;
    let values = parse_payload(payload)?;
    let context = broker
        .context(&target.tenant, values.get("@context"))
        .await
        .map_err(|e| Rejected(format!("@context: {e}")))?;
    let received = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let body = values::fragment(
        &values,
        Some(&target.entity_id),
        Some(&target.entity_type),
        Some(&received),
    );
    let items = broker
        .import_upsert(
            &target.tenant,
            vec![Payload {
                body: Value::Object(body),
                context,
            }],
            ImportMode::Update,
        )
        .await
        .map_err(|e| Rejected(e.to_string()))?;
    match items.into_iter().next().map(|item| item.result) {
        Some(Ok(_)) => Ok(()),
        Some(Err(error)) => Err(Rejected(error.detail)),
        None => Err(Rejected("the broker returned no result".into())),
    }
}

/// `<prefix>/<tenant>/<type>/<entity-id>/attrs` → where the message goes.
pub fn parse_topic(prefix: &str, topic: &str) -> Result<Target, Rejected> {
    let rest = topic
        .strip_prefix(prefix)
        .and_then(|r| r.strip_prefix('/'))
        .ok_or_else(|| Rejected(format!("topic is not under '{prefix}/'")))?;
    let rest = rest
        .strip_suffix("/attrs")
        .ok_or_else(|| Rejected("topic does not end with '/attrs'".into()))?;
    let mut parts = rest.splitn(3, '/');
    let (Some(tenant), Some(entity_type), Some(entity_id)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(Rejected("expected <prefix>/<tenant>/<type>/<entity-id>/attrs".into()));
    };
    let tenant = if tenant == DEFAULT_TENANT_SEGMENT {
        Tenant::default()
    } else if tenant.is_empty() {
        return Err(Rejected(format!(
            "empty tenant (use '{DEFAULT_TENANT_SEGMENT}' for the default tenant)"
        )));
    } else {
        Tenant::parse(tenant).map_err(|e| Rejected(e.detail))?
    };
    if !is_name(entity_type) {
        return Err(Rejected(format!("invalid entity type '{entity_type}'")));
    }
    if !is_uri(entity_id) {
        return Err(Rejected(format!("entity id '{entity_id}' is not a URI")));
    }
    Ok(Target {
        tenant,
        entity_type: entity_type.to_owned(),
        entity_id: entity_id.to_owned(),
    })
}

/// A JSON object, or why not.
pub fn parse_payload(payload: &[u8]) -> Result<Map<String, Value>, Rejected> {
    match serde_json::from_slice::<Value>(payload) {
        Ok(Value::Object(values)) if values.keys().any(|k| k != "@context") => Ok(values),
        Ok(Value::Object(_)) => Err(Rejected("the payload has no attribute".into())),
        Ok(_) => Err(Rejected("the payload is not a JSON object".into())),
        Err(error) => Err(Rejected(format!("the payload is not JSON: {error}"))),
    }
}

/// A term or an IRI: no spaces, no control or JSON-LD-reserved characters.
fn is_name(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 256
        && !text.starts_with('@')
        && text.chars().all(|c| {
            !c.is_whitespace() && !c.is_control() && !matches!(c, '"' | '<' | '>' | '\\' | '{' | '}' | '+' | '#')
        })
}

/// An absolute URI: a scheme (`urn`, `http`, ...), `:`, and a non-empty rest
/// without spaces.
fn is_uri(text: &str) -> bool {
    let Some((scheme, rest)) = text.split_once(':') else {
        return false;
    };
    let mut chars = scheme.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        && !rest.is_empty()
        && text.len() <= 1024
        && !text
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '"' | '<' | '>' | '\\' | '{' | '}' | '+' | '#'))
}

#[derive(Debug, PartialEq, Eq)]
struct Server {
    host: String,
    port: u16,
    credentials: Option<(String, String)>,
}

/// `mqtt://[user:password@]host[:port][/]`.
fn parse_url(url: &str) -> Result<Server, String> {
    let invalid = || format!("invalid MQTT URL '{}' (expected mqtt://host[:port])", redacted(url));
    let rest = url.strip_prefix("mqtt://").ok_or_else(invalid)?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains('/') {
        return Err(invalid());
    }
    let (credentials, address) = match rest.rsplit_once('@') {
        Some((userinfo, address)) => {
            let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
            (Some((user.to_owned(), password.to_owned())), address)
        }
        None => (None, rest),
    };
    let (host, port) = if let Some(bracketed) = address.strip_prefix('[') {
        let (host, after) = bracketed.split_once(']').ok_or_else(invalid)?;
        let port = match after.strip_prefix(':') {
            Some(port) => Some(port),
            None if after.is_empty() => None,
            None => return Err(invalid()),
        };
        (host, port)
    } else {
        match address.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (address, None),
        }
    };
    let port = match port {
        Some(port) => port.parse().map_err(|_| invalid())?,
        None => 1883,
    };
    if host.is_empty() {
        return Err(invalid());
    }
    Ok(Server {
        host: host.to_owned(),
        port,
        credentials,
    })
}

/// The URL without its password, for logs and errors.
fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_name_tenant_type_and_id() {
        let target = parse_topic("piazza", "piazza/-/AirQualityObserved/urn:ngsi-ld:AQ:1/attrs").unwrap();
        assert!(target.tenant.is_default());
        assert_eq!(target.entity_type, "AirQualityObserved");
        assert_eq!(target.entity_id, "urn:ngsi-ld:AQ:1");
        let target = parse_topic("a/b", "a/b/prato/Sensor/https://example.org/s/1/attrs").unwrap();
        assert_eq!(target.tenant.name(), "prato");
        assert_eq!(target.entity_id, "https://example.org/s/1");
    }

    #[test]
    fn bad_topics_are_rejected() {
        for topic in [
            "other/-/T/urn:x:1/attrs",
            "piazza/-/T/urn:x:1",
            "piazza/-/T/attrs",
            "piazza//T/urn:x:1/attrs",
            "piazza/bad tenant/T/urn:x:1/attrs",
            "piazza/../T/urn:x:1/attrs",
            "piazza/-/T/not-a-uri/attrs",
            "piazza/-/@id/urn:x:1/attrs",
            "piazza/-/T/urn:x:1/more/stuff",
            "piazzax/-/T/urn:x:1/attrs",
        ] {
            assert!(parse_topic("piazza", topic).is_err(), "{topic}");
        }
    }

    #[test]
    fn payloads_are_json_objects_with_attributes() {
        assert!(parse_payload(br#"{"temperature": 21.5}"#).is_ok());
        assert!(parse_payload(b"{not json").is_err());
        assert!(parse_payload(b"[1, 2]").is_err());
        assert!(parse_payload(b"{}").is_err());
        assert!(parse_payload(br#"{"@context": []}"#).is_err());
    }

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("mqtt://127.0.0.1:1883").unwrap(),
            Server {
                host: "127.0.0.1".into(),
                port: 1883,
                credentials: None
            }
        );
        let server = parse_url("mqtt://u:p@broker/").unwrap();
        assert_eq!((server.host.as_str(), server.port), ("broker", 1883));
        assert_eq!(server.credentials, Some(("u".into(), "p".into())));
        assert_eq!(parse_url("mqtt://[::1]:1884").unwrap().port, 1884);
        assert!(parse_url("http://x").is_err());
        assert!(parse_url("mqtt://x:notaport").is_err());
        assert!(parse_url("mqtt://x/topic").is_err());
        assert_eq!(redacted("mqtt://u:secret@h:1"), "mqtt://u:***@h:1");
    }
}
