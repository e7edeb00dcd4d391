//! The HTTP binding of notifications: a POST to the endpoint, acknowledged
//! by any 2xx answer.

use std::time::Duration;

use piazza_store::Tenant;

use super::Outgoing;
use crate::registry::Endpoint;

pub(crate) struct HttpSender {
    client: reqwest::Client,
}

impl HttpSender {
    pub fn new(timeout: Duration) -> Self {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            // A dead host must fail fast: the worker retries anyway.
            .connect_timeout(Duration::from_secs(2))
            .pool_max_idle_per_host(4)
            // Receivers that look headers up case-sensitively expect the
            // spelling of the spec (`Link`, `NGSILD-Tenant`) and of receiverInfo.
            .http1_title_case_headers()
            .build()
            .unwrap_or_default();
        Self { client }
    }

    pub async fn send(&self, tenant: &Tenant, endpoint: &Endpoint, outgoing: Outgoing) -> Result<(), String> {
        let body = serde_json::to_vec(&outgoing.body).map_err(|e| e.to_string())?;
        let mut request = self
            .client
            .post(&endpoint.uri)
            .header("Content-Type", outgoing.content_type)
            .body(body);
        if let Some(link) = outgoing.link {
            request = request.header("Link", link);
        }
        if !tenant.is_default() {
            request = request.header("NGSILD-Tenant", tenant.name());
        }
        for (key, value) in &endpoint.receiver_info {
            request = request.header(key.as_str(), value.as_str());
        }
        let response = request.send().await.map_err(|e| e.to_string())?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("the endpoint answered {status}"))
        }
    }
}
