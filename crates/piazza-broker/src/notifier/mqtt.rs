//! The MQTT binding of notifications: `mqtt://[user:pass@]host[:port]/topic`,
//! the notification published as `{"metadata": {headers}, "body": ...}`,
//! with the QoS of `notifierInfo` `MQTT-QoS` (default 0).
//!
//! One connection per broker and credentials, shared by every
//! subscription. A delivery with QoS 1 or 2 counts only once the broker
//! acknowledged it (PUBACK/PUBCOMP): publishes are matched to their packet
//! ids through the event loop's `Outgoing::Publish` events, which come in
//! the order of the publishes. Any connection error fails every waiting
//! delivery and drops the connection, so acknowledgements are never
//! matched across connections; the workers retry.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use piazza_store::Tenant;
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Outgoing as MqttOutgoing, Packet, QoS};
use serde_json::{Map, Value};
use tokio::sync::oneshot;

use super::Outgoing;
use crate::registry::Endpoint;

const ACK_TIMEOUT: Duration = Duration::from_secs(10);

type Ack = oneshot::Sender<Result<(), String>>;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Server {
    host: String,
    port: u16,
    user: String,
    password: Option<String>,
}

#[derive(Default)]
struct Waiters {
    /// Publishes handed to the client, not yet given a packet id.
    queued: VecDeque<(QoS, Ack)>,
    /// Publishes sent, waiting for their acknowledgement.
    inflight: HashMap<u16, Ack>,
    /// The event loop has stopped: the connection must be replaced.
    closed: bool,
}

impl Waiters {
    fn fail_all(&mut self, why: &str) {
        self.closed = true;
        for (_, ack) in self.queued.drain(..) {
            let _ = ack.send(Err(why.to_owned()));
        }
        for (_, ack) in self.inflight.drain() {
            let _ = ack.send(Err(why.to_owned()));
        }
    }
}

struct Connection {
    client: AsyncClient,
    waiters: Arc<Mutex<Waiters>>,
}

#[derive(Default)]
pub(crate) struct MqttSender {
    connections: tokio::sync::Mutex<HashMap<Server, Arc<Connection>>>,
}

impl MqttSender {
    pub async fn send(&self, _tenant: &Tenant, endpoint: &Endpoint, outgoing: Outgoing) -> Result<(), String> {
        let (server, topic) = parse(&endpoint.uri)?;
        let qos = qos(endpoint)?;
        let payload = payload(endpoint, outgoing)?;
        let connection = self.connection(&server).await;
        let (ack, acked) = oneshot::channel();
        if let Err(error) = publish(&connection, topic, qos, payload, ack) {
            self.drop_connection(&server, &connection).await;
            return Err(error);
        }
        let result = match tokio::time::timeout(ACK_TIMEOUT, acked).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err("mqtt connection closed".into()),
            Err(_) => Err("mqtt broker did not acknowledge in time".into()),
        };
        if result.is_err() {
            self.drop_connection(&server, &connection).await;
        }
        result
    }

    async fn connection(&self, server: &Server) -> Arc<Connection> {
        let mut connections = self.connections.lock().await;
        if let Some(existing) = connections.get(server) {
            let open = existing.waiters.lock().is_ok_and(|w| !w.closed);
            if open {
                return existing.clone();
            }
        }
        let mut options = MqttOptions::new(format!("piazza-{}", uuid::Uuid::new_v4()), &server.host, server.port);
        options.set_keep_alive(Duration::from_secs(30));
        options.set_max_packet_size(16 * 1024 * 1024, 16 * 1024 * 1024);
        if let Some(password) = &server.password {
            options.set_credentials(&server.user, password);
        }
        let (client, event_loop) = AsyncClient::new(options, 1024);
        let waiters = Arc::new(Mutex::new(Waiters::default()));
        tokio::spawn(drive(event_loop, waiters.clone()));
        let connection = Arc::new(Connection { client, waiters });
        connections.insert(server.clone(), connection.clone());
        connection
    }

    async fn drop_connection(&self, server: &Server, connection: &Arc<Connection>) {
        let mut connections = self.connections.lock().await;
        if connections.get(server).is_some_and(|c| Arc::ptr_eq(c, connection)) {
            connections.remove(server);
        }
        if let Ok(mut waiters) = connection.waiters.lock() {
            waiters.fail_all("mqtt connection dropped");
        }
        let _ = connection.client.try_disconnect();
    }
}

/// Queues the waiter and the publish under one lock, so waiters stay in
/// the order of the publishes.
fn publish(connection: &Connection, topic: String, qos: QoS, payload: Vec<u8>, ack: Ack) -> Result<(), String> {
    let mut waiters = connection
        .waiters
        .lock()
        .map_err(|_| "mqtt waiters poisoned".to_string())?;
    waiters.queued.push_back((qos, ack));
    connection
        .client
        .try_publish(topic, qos, false, payload)
        .map_err(|error| {
            waiters.queued.pop_back();
            format!("mqtt publish failed: {error}")
        })
}

/// Runs a connection's event loop until it fails or is disconnected.
async fn drive(mut event_loop: EventLoop, waiters: Arc<Mutex<Waiters>>) {
    loop {
        let event = event_loop.poll().await;
        let Ok(mut waiting) = waiters.lock() else { return };
        match event {
            Ok(Event::Outgoing(MqttOutgoing::Publish(pkid))) => {
                if let Some((qos, ack)) = waiting.queued.pop_front() {
                    if qos == QoS::AtMostOnce {
                        let _ = ack.send(Ok(()));
                    } else {
                        waiting.inflight.insert(pkid, ack);
                    }
                }
            }
            Ok(Event::Incoming(Packet::PubAck(ack))) => settle(&mut waiting, ack.pkid),
            Ok(Event::Incoming(Packet::PubComp(comp))) => settle(&mut waiting, comp.pkid),
            Ok(Event::Outgoing(MqttOutgoing::Disconnect)) => {
                waiting.fail_all("mqtt connection closed");
                return;
            }
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(%error, "mqtt connection failed");
                waiting.fail_all(&format!("mqtt connection failed: {error}"));
                return;
            }
        }
    }
}

fn settle(waiters: &mut Waiters, pkid: u16) {
    if let Some(ack) = waiters.inflight.remove(&pkid) {
        let _ = ack.send(Ok(()));
    }
}

fn parse(uri: &str) -> Result<(Server, String), String> {
    let url = reqwest::Url::parse(uri).map_err(|e| format!("invalid mqtt endpoint {uri}: {e}"))?;
    if url.scheme() != "mqtt" {
        return Err(format!(
            "{} endpoints are not supported yet (use mqtt://)",
            url.scheme()
        ));
    }
    let host = url
        .host_str()
        .ok_or_else(|| format!("mqtt endpoint {uri} has no host"))?;
    let topic = url.path().trim_start_matches('/').to_owned();
    if topic.is_empty() {
        return Err(format!("mqtt endpoint {uri} names no topic"));
    }
    let server = Server {
        host: host.to_owned(),
        port: url.port().unwrap_or(1883),
        user: url.username().to_owned(),
        password: url
            .password()
            .map(str::to_owned)
            .or_else(|| (!url.username().is_empty()).then(String::new)),
    };
    Ok((server, topic))
}

fn qos(endpoint: &Endpoint) -> Result<QoS, String> {
    let wanted = endpoint
        .notifier_info
        .iter()
        .find(|(key, _)| key == "MQTT-QoS")
        .map(|(_, value)| value.as_str());
    match wanted {
        None | Some("0") => Ok(QoS::AtMostOnce),
        Some("1") => Ok(QoS::AtLeastOnce),
        Some("2") => Ok(QoS::ExactlyOnce),
        Some(other) => Err(format!("invalid MQTT-QoS {other}")),
    }
}

/// The MQTT message: the HTTP headers as `metadata`, the notification as `body`.
fn payload(endpoint: &Endpoint, outgoing: Outgoing) -> Result<Vec<u8>, String> {
    let mut metadata = Map::new();
    metadata.insert("Content-Type".into(), Value::String(outgoing.content_type.into()));
    if let Some(link) = outgoing.link {
        metadata.insert("Link".into(), Value::String(link));
    }
    for (key, value) in &endpoint.receiver_info {
        metadata.insert(key.clone(), Value::String(value.clone()));
    }
    let mut message = Map::new();
    message.insert("metadata".into(), Value::Object(metadata));
    message.insert("body".into(), Value::Object(outgoing.body));
    serde_json::to_vec(&message).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_uri_gives_server_and_topic() {
        let (server, topic) = parse("mqtt://user:secret@broker.example:1884/city/notify").expect("valid");
        assert_eq!((server.host.as_str(), server.port), ("broker.example", 1884));
        assert_eq!(
            (server.user.as_str(), server.password.as_deref()),
            ("user", Some("secret"))
        );
        assert_eq!(topic, "city/notify");
        assert_eq!(parse("mqtt://localhost/t").expect("valid").0.port, 1883);
        assert!(parse("mqtt://localhost").is_err(), "a topic is required");
    }
}
