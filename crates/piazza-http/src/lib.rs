//! The NGSI-LD HTTP API: the only crate that knows HTTP.
//!
//! Handlers stay thin: extract ([`extract`]) → call the broker → render
//! ([`respond`]). Every error leaves as ProblemDetails ([`error`]), including
//! extractor rejections and unknown routes.

use std::future::Future;
use std::sync::Arc;

use axum::extract::{Extension, Request, State};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use axum::ServiceExt;
use piazza_broker::Broker;
use piazza_ngsild::ErrorKind;
use tokio::net::TcpListener;
use tower::Layer;
use tower_http::normalize_path::NormalizePathLayer;

mod batch;
mod contexts;
mod discovery;
mod entities;
pub mod error;
mod extract;
mod identity;
mod linked;
mod params;
mod precheck;
mod respond;
mod subscriptions;
mod temporal;

use error::ApiError;
use extract::TENANT_HEADER;

/// Default request body limit (1 MiB); configurable.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;

/// Shared state of all handlers.
pub struct AppState {
    pub broker: Arc<Broker>,
    pub max_body_bytes: usize,
}

/// The whole API as an axum router.
pub fn router(state: Arc<AppState>) -> Router {
    let api = Router::new()
        .route(
            "/entities",
            get(entities::query)
                .post(entities::create)
                .delete(entities::purge)
                .put(entities::missing_id)
                .patch(entities::missing_id),
        )
        .route(
            "/entities/{id}",
            get(entities::retrieve)
                .delete(entities::delete)
                .put(entities::replace)
                .patch(entities::merge),
        )
        .route(
            "/entities/{id}/attrs",
            post(entities::append_attributes).patch(entities::update_attributes),
        )
        .route(
            "/entities/{id}/attrs/{attr}",
            axum::routing::patch(entities::partial_update_attribute)
                .put(entities::replace_attribute)
                .delete(entities::delete_attribute),
        )
        .route("/entityOperations/create", post(batch::create))
        .route("/entityOperations/upsert", post(batch::upsert))
        .route("/entityOperations/update", post(batch::update))
        .route("/entityOperations/delete", post(batch::delete))
        .route("/entityOperations/merge", post(batch::merge))
        .route("/entityOperations/query", post(batch::query))
        .route("/subscriptions", get(subscriptions::query).post(subscriptions::create))
        .route(
            "/subscriptions/{id}",
            get(subscriptions::retrieve)
                .patch(subscriptions::update)
                .delete(subscriptions::delete),
        )
        .route("/types", get(discovery::types))
        .route("/types/{type}", get(discovery::type_info))
        .route("/attributes", get(discovery::attributes))
        .route("/attributes/{attr}", get(discovery::attribute_info))
        .route("/temporal/entities", get(temporal::query).post(temporal::upsert))
        .route(
            "/temporal/entities/{id}",
            get(temporal::retrieve).delete(temporal::delete),
        )
        .route("/temporal/entities/{id}/attrs", post(temporal::append))
        .route("/temporal/entityOperations/query", post(temporal::query_post))
        .route(
            "/temporal/entities/{id}/attrs/{attr}",
            axum::routing::delete(temporal::delete_attribute),
        )
        .route(
            "/temporal/entities/{id}/attrs/{attr}/{instance}",
            axum::routing::patch(temporal::modify_instance).delete(temporal::delete_instance),
        )
        .route("/jsonldContexts", get(contexts::list).post(contexts::add))
        .route("/jsonldContexts/{id}", get(contexts::serve).delete(contexts::delete))
        .route("/info/sourceIdentity", get(identity::source_identity))
        .method_not_allowed_fallback(method_not_allowed);
    Router::new()
        .nest("/ngsi-ld/v1", api)
        .route("/health", get(health))
        .fallback(not_found)
        .layer(Extension(Arc::new(identity::SourceIdentity::new())))
        // Outermost last: the tenant is echoed even on precheck refusals.
        .layer(middleware::from_fn(precheck::precheck))
        .layer(middleware::from_fn(echo_tenant))
        .with_state(state)
}

async fn health(State(_state): State<Arc<AppState>>) -> &'static str {
    "ok"
}

async fn not_found() -> ApiError {
    ApiError::new(ErrorKind::ResourceNotFound, "no such resource")
}

async fn method_not_allowed(method: Method) -> Response {
    let error = ApiError::new(
        ErrorKind::InvalidRequest,
        format!("method {method} is not allowed on this resource"),
    );
    let mut response = error.into_response();
    *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    response
}

/// Every response names the tenant it applied to (clause 6.3.14).
async fn echo_tenant(request: Request, next: Next) -> Response {
    let tenant: Option<HeaderValue> = request.headers().get(TENANT_HEADER).cloned();
    let mut response = next.run(request).await;
    if let Some(tenant) = tenant {
        response.headers_mut().insert(TENANT_HEADER, tenant);
    }
    response
}

/// Serves the API on an already-bound listener until `shutdown` completes,
/// then drains open connections.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // Clients (the ETSI suite among them) write `/entities/`: trailing
    // slashes are trimmed before routing.
    let service = NormalizePathLayer::trim_trailing_slash().layer(router(state));
    axum::serve(listener, ServiceExt::<Request>::into_make_service(service))
        .with_graceful_shutdown(shutdown)
        .await
}
