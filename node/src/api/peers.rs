//! `GET /api/v1/peers`: the gateways of the local cloud.

use actix_web::{HttpRequest, HttpResponse, web};
use fogbank_cloud::{ForgetError, PeerInfo};

use super::AppState;
use super::problem::{ApiError, Problem};
use super::schema::*;
use crate::auth::Scope;

#[utoipa::path(get, path = "/api/v1/peers", tag = "local cloud",
    responses((status = 200, description = "This gateway (state `local`) and every other gateway of its local cloud (`up` or `down`); only this gateway when it stands alone", body = [PeerInfoSchema])))]
pub async fn list(
    request: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    state.authorize(&request, Scope::Read)?;
    let peers = match &state.cloud {
        Some(cloud) => cloud.peers().await,
        None => vec![PeerInfo {
            gateway: state.hub.gateway().to_owned(),
            peer_id: String::new(),
            state: "local",
            addresses: Vec::new(),
            things: state.hub.own_thing_count(),
            readings_ingested: state.hub.stats().readings_ingested,
            last_seen_ms: 0,
        }],
    };
    Ok(HttpResponse::Ok().json(peers))
}

#[utoipa::path(delete, path = "/api/v1/peers/{gateway}", tag = "local cloud",
    params(("gateway" = String, Path, description = "The id of a gateway that is down")),
    responses((status = 204, description = "Forgotten: it left the peer list, its thing services left the catalog"),
              (status = 401, body = Problem, content_type = "application/problem+json"),
              (status = 403, body = Problem, content_type = "application/problem+json"),
              (status = 404, description = "No such gateway, or no local cloud", body = Problem, content_type = "application/problem+json"),
              (status = 409, description = "The gateway is up", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn forget(
    request: HttpRequest,
    state: web::Data<AppState>,
    gateway: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    state.authorize(&request, Scope::Admin)?;
    let Some(cloud) = &state.cloud else {
        return Err(ApiError::NotFound(
            "this gateway stands alone: it has no local cloud".into(),
        ));
    };
    match cloud.forget(&gateway).await {
        Ok(()) => Ok(HttpResponse::NoContent().finish()),
        Err(error @ ForgetError::Unknown(_)) => Err(ApiError::NotFound(error.to_string())),
        Err(error @ ForgetError::StillUp(_)) => Err(ApiError::Conflict(error.to_string())),
    }
}
