//! The REST API under `/api/v1`, plus `/health`, `/metrics` and
//! `/openapi.json` (served at the root and under `/api/v1`), and the
//! dashboard's files at `/` (`crate::dashboard`).
//!
//! This module owns the JSON shapes and HTTP rules; it translates between
//! them and the TaaS [`Hub`], and holds no logic of its own about things.

mod backup;
mod body;
mod devices;
mod federation;
pub(crate) mod ops;
mod peers;
pub mod problem;
mod schema;
mod services;
mod stream;
mod things;
mod time;

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::Addr;
use actix_web::dev::{Service, ServiceResponse};
use actix_web::{HttpRequest, HttpResponse, web};
use fogbank_adapter::AdapterSupervisor;
use fogbank_taas::{Hub, ThingId};
use tracing::Instrument;

use crate::auth::{Denied, Scope, Tokens};
use crate::metrics::HttpMetrics;
use problem::ApiError;

/// What every handler can reach.
pub struct AppState {
    pub hub: Arc<Hub>,
    pub tokens: Tokens,
    pub http: HttpMetrics,
    pub started: Instant,
    pub max_body_bytes: usize,
    pub actuation_wait: Duration,
    pub adapters: Vec<Addr<AdapterSupervisor>>,
    /// The CoAP endpoint, for its counters; `None` with CoAP off.
    pub coap: Option<fogbank_coap_protocol::endpoint::Endpoint>,
    /// The local cloud; `None` when this gateway stands alone.
    pub cloud: Option<Arc<fogbank_cloud::Cloud>>,
    /// The extended services.
    pub services: Arc<fogbank_services::Services>,
    /// The S-MANAGE agent; `None` when federation is off.
    pub smanage: Option<Arc<fogbank_sdvs::Agent>>,
    /// The SIP registrations; `None` when SIP is off.
    pub sip: Option<Arc<fogbank_sip::Agent>>,
    /// How much history the store keeps (`/health` says, for clients that
    /// ask for a range).
    pub retention: fogbank_taas::Retention,
}

impl AppState {
    fn authorize(&self, request: &HttpRequest, scope: Scope) -> Result<(), ApiError> {
        authorize(&self.tokens, request, scope)
    }
}

/// The bearer-token check every REST server of the binary shares.
pub fn authorize(tokens: &Tokens, request: &HttpRequest, scope: Scope) -> Result<(), ApiError> {
    let header = request
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    tokens.check(header, scope).map_err(|denied| match denied {
        Denied::Unauthenticated => ApiError::Unauthenticated,
        Denied::Forbidden { token, needed } => ApiError::Forbidden {
            token,
            scope: match needed {
                Scope::Read => "read",
                Scope::Write => "write",
                Scope::Admin => "admin",
            },
        },
    })
}

/// Parses a thing id from a URL; a malformed id names no thing: 404.
fn thing_id(raw: &str) -> Result<ThingId, ApiError> {
    ThingId::parse(raw)
        .map_err(|e| ApiError::UnknownThing(format!("{raw:?} is not a thing-service id: {e}")))
}

/// 405 with the `Allow` header RFC 9110 asks for.
pub(crate) fn method_not_allowed(allow: &'static str) -> actix_web::Route {
    web::route()
        .to(move || async move { Err::<HttpResponse, _>(ApiError::MethodNotAllowed { allow }) })
}

/// A resource answering GET only (and 405 to anything else).
pub(crate) fn get<F, Args>(path: &str, handler: F) -> actix_web::Resource
where
    F: actix_web::Handler<Args>,
    Args: actix_web::FromRequest + 'static,
    F::Output: actix_web::Responder + 'static,
{
    web::resource(path)
        .route(web::get().to(handler))
        .default_service(method_not_allowed("GET"))
}

/// Registers every route; shared by the server and the tests.
pub fn configure(config: &mut web::ServiceConfig) {
    let ops = |scope: actix_web::Scope| {
        scope
            .service(get("/health", ops::health))
            .service(get("/metrics", ops::metrics))
            .service(get("/openapi.json", ops::openapi))
    };
    config
        .app_data(
            web::QueryConfig::default()
                .error_handler(|error, _| ApiError::BadRequest(error.to_string()).into()),
        )
        .app_data(
            web::PathConfig::default()
                .error_handler(|error, _| ApiError::NotFound(error.to_string()).into()),
        )
        .service(
            ops(web::scope("/api/v1"))
                // The router tries the paths in this order, a regex each:
                // the hottest read first.
                .service(get("/things/{id}/reading", things::latest))
                .service(get("/things", things::list))
                .service(get("/things/{id}", things::get))
                .service(get("/things/{id}/td", things::description))
                .service(
                    web::resource("/things/{id}/readings")
                        .route(web::get().to(things::history))
                        .route(web::post().to(things::ingest))
                        .default_service(method_not_allowed("GET, POST")),
                )
                .service(
                    web::resource("/things/{id}/actuation")
                        .route(web::put().to(things::actuate))
                        .default_service(method_not_allowed("PUT")),
                )
                .service(get("/things/{id}/stream", stream::sse))
                .service(get("/stream", stream::sse_many))
                .service(get("/commands/{id}", things::command))
                .service(
                    web::resource("/devices/{device}/transport")
                        .route(web::post().to(devices::transport))
                        .default_service(method_not_allowed("POST")),
                )
                .service(get("/moves/{id}", devices::status))
                .service(
                    web::resource("/drain")
                        .route(web::get().to(devices::drain_status))
                        .route(web::post().to(devices::drain))
                        .default_service(method_not_allowed("GET, POST")),
                )
                .service(
                    web::resource("/undrain")
                        .route(web::post().to(devices::undrain))
                        .default_service(method_not_allowed("POST")),
                )
                .service(
                    web::resource("/backup")
                        .route(web::post().to(backup::backup))
                        .default_service(method_not_allowed("POST")),
                )
                .service(get("/peers", peers::list))
                .service(get("/federation/smanage", federation::smanage))
                .service(get("/federation/sip", federation::sip))
                .service(
                    web::resource("/peers/{gateway}")
                        .route(web::delete().to(peers::forget))
                        .default_service(method_not_allowed("DELETE")),
                )
                .service(
                    web::resource("/services")
                        .app_data(web::PayloadConfig::new(services::MAX_PUBLISH_BYTES))
                        .route(web::get().to(services::list))
                        .route(web::post().to(services::publish))
                        .default_service(method_not_allowed("GET, POST")),
                )
                .service(get("/publications", services::publications))
                .service(
                    web::resource("/services/{name}")
                        .route(web::get().to(services::get))
                        .route(web::delete().to(services::remove))
                        .default_service(method_not_allowed("GET, DELETE")),
                )
                .service(
                    web::resource("/services/{name}/start")
                        .route(web::post().to(services::start))
                        .default_service(method_not_allowed("POST")),
                )
                .service(
                    web::resource("/services/{name}/stop")
                        .route(web::post().to(services::stop))
                        .default_service(method_not_allowed("POST")),
                )
                .service(get("/services/{name}/logs", services::logs))
                .service(web::resource("/services/{name}/call/{path:.*}").to(services::call)),
        )
        .configure(crate::dashboard::configure)
        .service(ops(web::scope("")))
        .default_service(web::to(|request: HttpRequest| async move {
            Err::<HttpResponse, _>(ApiError::NoRoute(format!(
                "no resource at {}",
                request.path()
            )))
        }));
}

/// Opens a tracing span per request and counts responses for `/metrics`.
pub fn app(
    state: web::Data<AppState>,
) -> actix_web::App<
    impl actix_web::dev::ServiceFactory<
        actix_web::dev::ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl actix_web::body::MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    actix_web::App::new().app_data(state).configure(configure).wrap_fn(|request, service| {
        let span = tracing::debug_span!("http", method = %request.method(), path = %request.path(), status = tracing::field::Empty);
        let state = request.app_data::<web::Data<AppState>>().cloned();
        let started = Instant::now();
        let response = {
            let _entered = span.enter();
            service.call(request)
        };
        async move {
            let response = response.await;
            let status = match &response {
                Ok(r) => r.status(),
                Err(e) => e.as_response_error().status_code(),
            };
            tracing::Span::current().record("status", status.as_u16());
            tracing::debug!(elapsed_us = started.elapsed().as_micros() as u64, "request served");
            if let Some(state) = state {
                state.http.record(status.as_u16(), started.elapsed());
            }
            response
        }
        .instrument(span)
    })
}
