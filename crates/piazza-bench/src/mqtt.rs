//! MQTT ingestion: sensor messages published to the real Mosquitto and
//! applied by `piazza serve --mqtt` (messages/s, publish to last applied).

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use rumqttc::{AsyncClient, MqttOptions, QoS};

use crate::broker::Broker;
use crate::load::{self, Req};
use crate::report::Row;
use crate::{Bench, API};

/// Sensors the messages are spread over.
const SENSORS: u64 = 100;
/// Messages published before waiting for the last of them.
const WINDOW: u64 = 500;

impl Bench {
    pub(crate) async fn ingest_mqtt(&mut self) -> anyhow::Result<()> {
        let url = self.cli.mqtt_url.clone();
        let parsed = url::Url::parse(&url).with_context(|| format!("--mqtt-url {url}"))?;
        let (host, port) = (
            parsed.host_str().unwrap_or("127.0.0.1").to_owned(),
            parsed.port().unwrap_or(1883),
        );
        if tokio::net::TcpStream::connect((host.as_str(), port)).await.is_err() {
            self.rows
                .push(Row::unavailable("ingest-mqtt", &format!("no MQTT broker at {url}")));
            return Ok(());
        }
        let prefix = format!("piazza-bench-{}", std::process::id());
        let data_dir = self.data_dir.with_file_name("mqtt-data");
        let log = self.log.with_file_name("mqtt-broker.log");
        let env = [
            ("PIAZZA_MQTT_URL", url.as_str()),
            ("PIAZZA_MQTT_PREFIX", prefix.as_str()),
        ];
        let (broker, _) = Broker::start(&self.bin, &data_dir, &log, &env).await?;
        let result = self.publish_and_wait(&broker, &host, port, &prefix).await;
        broker.stop()?;
        let (messages, elapsed) = result?;
        let mut row = Row::unmeasured("ingest-mqtt");
        row.note = format!(
            "{} messages/s applied ({messages} keyValues messages over {SENSORS} sensors, QoS 1, windows of {WINDOW}, in {:.1} s)",
            (messages as f64 / elapsed.as_secs_f64()).round(),
            elapsed.as_secs_f64()
        );
        self.rows.push(row);
        Ok(())
    }

    /// Publishes the messages and waits until the last one is applied (the
    /// bridge applies messages in arrival order).
    async fn publish_and_wait(
        &self,
        broker: &Broker,
        host: &str,
        port: u16,
        prefix: &str,
    ) -> anyhow::Result<(u64, Duration)> {
        let mut options = MqttOptions::new(format!("{prefix}-publisher"), host, port);
        options.set_keep_alive(Duration::from_secs(30));
        let (client, mut event_loop) = AsyncClient::new(options, 1024);
        tokio::spawn(async move { while event_loop.poll().await.is_ok() {} });
        let topic = |k: u64| format!("{prefix}/-/Sensor/urn:ngsi-ld:Sensor:{k}/attrs");
        // The bridge subscribes when its broker starts; wait until a probe lands.
        let probe = format!("{API}/entities/urn:ngsi-ld:Sensor:probe");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let body = serde_json::to_vec(&serde_json::json!({"seq": 0}))?;
            client
                .publish(
                    format!("{prefix}/-/Sensor/urn:ngsi-ld:Sensor:probe/attrs"),
                    QoS::AtLeastOnce,
                    false,
                    body,
                )
                .await?;
            tokio::time::sleep(Duration::from_millis(200)).await;
            if load::once(broker.addr, Req::get(probe.clone())).await?.0.is_success() {
                break;
            }
            if Instant::now() > deadline {
                bail!("the MQTT bridge applied no message in 20 s");
            }
        }
        // Mosquitto queues at most 1,000 QoS 1 messages for a lagging
        // subscriber (max_queued_messages) and drops the rest, so messages
        // go in windows of 500, each waited for before the next.
        let messages = self.cli.mqtt_messages.max(1);
        let started = Instant::now();
        let mut sent = 0;
        while sent < messages {
            let end = (sent + WINDOW).min(messages);
            for i in sent..end {
                let body = serde_json::to_vec(&serde_json::json!({"seq": i, "pm10": (i % 97) as f64}))?;
                client
                    .publish(topic(i % SENSORS), QoS::AtLeastOnce, false, body)
                    .await?;
            }
            self.wait_applied(broker, end - 1, started).await?;
            sent = end;
        }
        Ok((messages, started.elapsed()))
    }

    /// Waits until message `last` is applied (the bridge applies messages in order).
    async fn wait_applied(&self, broker: &Broker, last: u64, started: Instant) -> anyhow::Result<()> {
        let entity = format!("{API}/entities/urn:ngsi-ld:Sensor:{}?options=keyValues", last % SENSORS);
        loop {
            let (status, _, body) = load::once(broker.addr, Req::get(entity.clone())).await?;
            let seq = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["seq"].as_u64());
            if status.is_success() && seq == Some(last) {
                return Ok(());
            }
            if started.elapsed() > Duration::from_secs(self.cli.timeout_secs) {
                bail!("MQTT message {last} was not applied in {} s", self.cli.timeout_secs);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}
