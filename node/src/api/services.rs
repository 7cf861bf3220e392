//! `/api/v1/services`: extended services — publish (install or upgrade),
//! list, inspect, start, stop, remove, read their logs, and call them.
//!
//! Managing services needs the admin scope; reading their state needs the
//! read scope; a call needs read for GET and HEAD, write for the rest.
//! Changes can wait on a service's thread or on Cranelift, so they run on
//! the blocking pool, never on the HTTP workers.

use std::sync::Arc;

use actix_web::http::{Method, StatusCode};
use actix_web::{HttpRequest, HttpResponse, web};
use base64::Engine as _;
use fogbank_services::{CallError, ServiceError, ServiceInfo, Services};
use serde::Deserialize;

use super::AppState;
use super::problem::{ApiError, Problem};
use super::schema::*;
use crate::auth::Scope;

/// The largest publish request: a component of
/// [`fogbank_services::MAX_COMPONENT_BYTES`] in base64, plus its manifest.
pub const MAX_PUBLISH_BYTES: usize = fogbank_services::MAX_COMPONENT_BYTES / 3 * 4 + (1 << 20);

/// `POST /api/v1/services`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PublishRequest {
    /// The `service.toml` text.
    pub manifest: String,
    /// The WebAssembly component, base64.
    pub component: String,
    /// The publisher's signature (`fogbank service publish --sign`); a
    /// gateway with `[services] trusted_keys` takes only signed services.
    pub signature: Option<SignatureSchema>,
}

/// A publisher's ed25519 signature over the component's and the
/// manifest's SHA-256.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignatureSchema {
    /// The publisher's public key, `ed25519:<64 hex digits>`.
    pub key: String,
    /// The signature, 128 hex digits.
    pub value: String,
}

impl From<ServiceError> for ApiError {
    fn from(error: ServiceError) -> Self {
        match error {
            ServiceError::Invalid(_) | ServiceError::Manifest(_) => {
                ApiError::BadRequest(error.to_string())
            }
            ServiceError::Unknown(_) => ApiError::NotFound(error.to_string()),
            ServiceError::Signature(fogbank_services::SignatureError::Malformed(_)) => {
                ApiError::BadRequest(error.to_string())
            }
            ServiceError::Signature(_) => ApiError::Untrusted(error.to_string()),
            ServiceError::Call(CallError::Failed { .. }) => {
                ApiError::ServiceFailed(error.to_string())
            }
            ServiceError::Call(_) => ApiError::ServiceUnavailable(error.to_string()),
            ServiceError::Store(e) => e.into(),
            ServiceError::Engine(_) | ServiceError::Thread { .. } => {
                ApiError::ServiceUnavailable(error.to_string())
            }
            // The problem names the gateway to ask.
            ServiceError::Elsewhere { .. } => ApiError::Conflict(error.to_string()),
        }
    }
}

/// Runs a change to the services on the blocking pool.
async fn change<T: Send + 'static>(
    state: &web::Data<AppState>,
    f: impl FnOnce(&Services) -> Result<T, ServiceError> + Send + 'static,
) -> Result<T, ApiError> {
    let services: Arc<Services> = state.services.clone();
    web::block(move || f(&services))
        .await
        .map_err(|e| ApiError::ServiceUnavailable(format!("the change was interrupted: {e}")))?
        .map_err(ApiError::from)
}

#[utoipa::path(post, path = "/api/v1/services", tag = "services",
    request_body(content = PublishRequest, description = "A manifest and a component of the fogbank:service@0.1.0 world. A service of the same name is upgraded in place: the new version replaces it only if it is valid, and its key-value state is kept."),
    responses((status = 201, description = "Installed and started", body = ServiceInfoSchema),
              (status = 200, description = "Upgraded", body = ServiceInfoSchema),
              (status = 400, description = "The manifest or the component is invalid; nothing changed", body = Problem, content_type = "application/problem+json"),
              (status = 401, body = Problem, content_type = "application/problem+json"),
              (status = 403, description = "The token lacks the admin scope, or the gateway trusts only signed services and this one is unsigned, signed by an untrusted key, or changed since it was signed", body = Problem, content_type = "application/problem+json"),
              (status = 413, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn publish(
    request: HttpRequest,
    state: web::Data<AppState>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    state.authorize(&request, Scope::Admin)?;
    let publish: PublishRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::BadRequest(format!(
            "expected {{\"manifest\": \"<service.toml>\", \"component\": \"<base64>\"}}: {e}"
        ))
    })?;
    let component = base64::engine::general_purpose::STANDARD
        .decode(publish.component.trim())
        .map_err(|e| ApiError::BadRequest(format!("component is not base64: {e}")))?;
    let signature = publish.signature.map(|s| fogbank_services::Signature {
        key: s.key,
        value: s.value,
    });
    let published = change(&state, move |services| {
        services.publish_signed(&publish.manifest, &component, signature.as_ref())
    })
    .await?;
    let status = if published.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(HttpResponse::build(status).json(published.info))
}

/// `GET /api/v1/publications`.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct PublicationSchema {
    name: String,
    /// `checking`, `compiling` or `starting`.
    phase: String,
    elapsed_ms: u64,
    component_bytes: u64,
}

#[utoipa::path(get, path = "/api/v1/publications", tag = "services",
    responses((status = 200, description = "The publishes under way on this gateway, each with its phase: a component of a language with a runtime inside (Python) compiles for seconds", body = [PublicationSchema])))]
pub async fn publications(
    request: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    state.authorize(&request, Scope::Read)?;
    Ok(HttpResponse::Ok().json(state.services.publications()))
}

#[utoipa::path(get, path = "/api/v1/services", tag = "services",
    responses((status = 200, description = "Every service of the local cloud: where it runs (`gateway`) and why (`placement`)", body = [ServiceInfoSchema])))]
pub async fn list(
    request: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    state.authorize(&request, Scope::Read)?;
    Ok(HttpResponse::Ok().json(state.services.list()))
}

#[utoipa::path(get, path = "/api/v1/services/{name}", tag = "services",
    params(("name" = String, Path, description = "The service's name")),
    responses((status = 200, body = ServiceInfoSchema),
              (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn get(
    request: HttpRequest,
    state: web::Data<AppState>,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    state.authorize(&request, Scope::Read)?;
    Ok(HttpResponse::Ok().json(state.services.info(&name)?))
}

#[utoipa::path(delete, path = "/api/v1/services/{name}", tag = "services",
    params(("name" = String, Path, description = "The service's name")),
    responses((status = 204, description = "Stopped and removed with its outputs and its state"),
              (status = 401, body = Problem, content_type = "application/problem+json"),
              (status = 403, body = Problem, content_type = "application/problem+json"),
              (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn remove(
    request: HttpRequest,
    state: web::Data<AppState>,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    state.authorize(&request, Scope::Admin)?;
    let name = name.into_inner();
    change(&state, move |services| services.remove(&name)).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(post, path = "/api/v1/services/{name}/start", tag = "services",
    params(("name" = String, Path, description = "The service's name")),
    responses((status = 200, description = "Started (again, if it had failed); it also runs when the gateway starts", body = ServiceInfoSchema),
              (status = 401, body = Problem, content_type = "application/problem+json"),
              (status = 403, body = Problem, content_type = "application/problem+json"),
              (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn start(
    request: HttpRequest,
    state: web::Data<AppState>,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    switch(request, state, name, Services::start).await
}

#[utoipa::path(post, path = "/api/v1/services/{name}/stop", tag = "services",
    params(("name" = String, Path, description = "The service's name")),
    responses((status = 200, description = "Stopped until started again, across gateway restarts too", body = ServiceInfoSchema),
              (status = 401, body = Problem, content_type = "application/problem+json"),
              (status = 403, body = Problem, content_type = "application/problem+json"),
              (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn stop(
    request: HttpRequest,
    state: web::Data<AppState>,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    switch(request, state, name, Services::stop).await
}

/// Starts or stops a service, answering with its state.
async fn switch(
    request: HttpRequest,
    state: web::Data<AppState>,
    name: web::Path<String>,
    action: fn(&Services, &str) -> Result<ServiceInfo, ServiceError>,
) -> Result<HttpResponse, ApiError> {
    state.authorize(&request, Scope::Admin)?;
    let name = name.into_inner();
    Ok(HttpResponse::Ok().json(change(&state, move |services| action(services, &name)).await?))
}

#[utoipa::path(get, path = "/api/v1/services/{name}/logs", tag = "services",
    params(("name" = String, Path, description = "The service's name")),
    responses((status = 200, description = "The service's recent log lines, oldest first", body = [LogLineSchema]),
              (status = 404, body = Problem, content_type = "application/problem+json"),
              (status = 409, description = "It runs on another gateway of the local cloud, which the problem names: ask that one", body = Problem, content_type = "application/problem+json")))]
pub async fn logs(
    request: HttpRequest,
    state: web::Data<AppState>,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    state.authorize(&request, Scope::Read)?;
    Ok(HttpResponse::Ok().json(state.services.logs(&name)?))
}

/// `/api/v1/services/{name}/call/{path}`, any method: the service's
/// `on-request` answers.
pub async fn call(
    request: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let scope = match *request.method() {
        Method::GET | Method::HEAD => Scope::Read,
        _ => Scope::Write,
    };
    state.authorize(&request, scope)?;
    if body.len() > state.max_body_bytes {
        return Err(ApiError::TooLarge {
            limit: state.max_body_bytes,
        });
    }
    let (name, tail) = path.into_inner();
    let mut inner_path = format!("/{tail}");
    if let Some(query) = request.uri().query() {
        inner_path.push('?');
        inner_path.push_str(query);
    }
    let response = state
        .services
        .call(&name, request.method().as_str(), &inner_path, body.to_vec())
        .await?;
    let status = StatusCode::from_u16(response.status)
        .ok()
        .filter(|s| !s.is_informational())
        .ok_or_else(|| {
            ApiError::ServiceFailed(format!(
                "service {name} answered with status {}, which is not an HTTP status",
                response.status
            ))
        })?;
    let mut answer = HttpResponse::build(status);
    if !response.content_type.is_empty() {
        let content_type = actix_web::http::header::HeaderValue::from_str(&response.content_type)
            .map_err(|_| {
            ApiError::ServiceFailed(format!(
                "service {name} answered with a content type that is not a header value"
            ))
        })?;
        answer.insert_header((actix_web::http::header::CONTENT_TYPE, content_type));
    }
    Ok(answer.body(response.body))
}
