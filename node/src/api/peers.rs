//! `GET /api/v1/peers`: the gateways of the local cloud.

use actix_web::{HttpRequest, HttpResponse, web};
use fogbank_taas::cloud::PeerInfo;

use super::AppState;
use super::problem::ApiError;
use crate::auth::Scope;

#[utoipa::path(get, path = "/api/v1/peers", tag = "local cloud",
    responses((status = 200, description = "This gateway (state `local`) and every other gateway of its local cloud (`up` or `down`); only this gateway when it stands alone", body = [PeerInfo])))]
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
            last_seen_ms: 0,
        }],
    };
    Ok(HttpResponse::Ok().json(peers))
}
