//! `GET /info/sourceIdentity`: who this Context Source is (clause 5.2.40,
//! 6.31). Peers use the alias to recognise a tenant of this broker in `Via`
//! chains, so each tenant gets its own, stable for the life of the process.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Extension, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Map, Value};

use crate::error::ApiResult;
use crate::extract::Meta;
use crate::respond::Responder;
use crate::AppState;

/// This broker instance.
pub struct SourceIdentity {
    instance: uuid::Uuid,
    started: Instant,
}

impl SourceIdentity {
    pub fn new() -> Self {
        Self {
            instance: uuid::Uuid::new_v4(),
            started: Instant::now(),
        }
    }

    fn alias(&self, tenant: &piazza_store::Tenant) -> String {
        if tenant.is_default() {
            format!("piazza-{}", self.instance)
        } else {
            format!("piazza-{}/{}", self.instance, tenant.name())
        }
    }

    fn body(&self, tenant: &piazza_store::Tenant) -> Map<String, Value> {
        let body = json!({
            "id": format!("urn:ngsi-ld:ContextSourceIdentity:{}", self.instance),
            "type": "ContextSourceIdentity",
            "contextSourceAlias": self.alias(tenant),
            "contextSourceUptime": iso_duration(self.started.elapsed().as_secs()),
            "contextSourceTimeAt": piazza_ngsild::time::format(&piazza_ngsild::time::now()),
        });
        match body {
            Value::Object(map) => map,
            _ => Map::new(),
        }
    }
}

impl Default for SourceIdentity {
    fn default() -> Self {
        Self::new()
    }
}

/// An ISO 8601 duration of whole seconds (`PT0S`, `PT3725S`).
fn iso_duration(seconds: u64) -> String {
    format!("PT{seconds}S")
}

/// Answers for any tenant, known or not: identifying the source is not a
/// read of tenant data.
pub async fn source_identity(
    State(_state): State<Arc<AppState>>,
    Extension(identity): Extension<Arc<SourceIdentity>>,
    meta: Meta,
) -> ApiResult<Response> {
    let responder = Responder::new(meta.accept(false)?, meta.link.as_deref());
    Ok(responder.object(StatusCode::OK, identity.body(&meta.tenant)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_tell_tenants_apart_and_stay_stable() {
        let identity = SourceIdentity::new();
        let default = piazza_store::Tenant::default();
        let a = piazza_store::Tenant::parse("a").expect("valid tenant");
        let b = piazza_store::Tenant::parse("b").expect("valid tenant");
        assert_ne!(identity.alias(&default), identity.alias(&a));
        assert_ne!(identity.alias(&a), identity.alias(&b));
        assert_eq!(identity.alias(&a), identity.alias(&a));
    }

    #[test]
    fn body_has_the_mandatory_members() {
        let body = SourceIdentity::new().body(&piazza_store::Tenant::default());
        assert_eq!(body["type"], "ContextSourceIdentity");
        assert!(body["id"].as_str().is_some_and(|id| id.starts_with("urn:")));
        assert_eq!(body["contextSourceUptime"], "PT0S");
        assert!(body["contextSourceTimeAt"].as_str().is_some_and(|t| t.ends_with('Z')));
    }
}
