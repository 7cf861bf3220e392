//! `POST /api/v1/backup`: a consistent copy of the gateway's store, taken
//! while it runs (`fogbank backup --to DIR` calls it). The copy is a
//! RocksDB checkpoint on the gateway's own file system; `fogbank restore`
//! turns it into a data directory.

use std::path::PathBuf;
use std::time::Instant;

use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use super::body::read_json;
use super::problem::{ApiError, Problem};
use crate::auth::Scope;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BackupRequest {
    /// An absolute path on the gateway's machine that does not exist yet.
    to: String,
}

#[derive(Serialize, ToSchema)]
pub struct BackupDone {
    /// Where the copy is.
    path: String,
    /// Its size on disk.
    bytes: u64,
    took_ms: f64,
}

#[utoipa::path(post, path = "/api/v1/backup", tag = "operations", request_body = BackupRequest,
    responses((status = 201, description = "The copy is complete: every reading acknowledged before the request is in it", body = BackupDone),
              (status = 400, description = "The body is not `{\"to\": ...}` or the path is not absolute", body = Problem, content_type = "application/problem+json"),
              (status = 401, body = Problem, content_type = "application/problem+json"),
              (status = 403, body = Problem, content_type = "application/problem+json"),
              (status = 413, body = Problem, content_type = "application/problem+json"),
              (status = 415, body = Problem, content_type = "application/problem+json"),
              (status = 409, description = "Something is at that path already", body = Problem, content_type = "application/problem+json"),
              (status = 503, description = "The copy failed (the problem says why; a partial copy is removed)", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn backup(
    request: HttpRequest,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    state.authorize(&request, Scope::Admin)?;
    let body: BackupRequest = read_json(
        &request,
        payload,
        state.max_body_bytes,
        r#"{"to": "/absolute/new/directory"}"#,
    )
    .await?;
    let to = PathBuf::from(&body.to);
    if !to.is_absolute() {
        return Err(ApiError::BadRequest(format!(
            "{:?} is not an absolute path on the gateway's machine",
            body.to
        )));
    }
    if to.symlink_metadata().is_ok() {
        return Err(ApiError::Conflict(format!(
            "{} exists: a backup goes to a new directory",
            to.display()
        )));
    }
    let started = Instant::now();
    let hub = state.hub.clone();
    let target = to.clone();
    let copied = web::block(move || hub.store().checkpoint(&target))
        .await
        .map_err(|e| ApiError::Storage(e.to_string()))?;
    if let Err(error) = copied {
        let _ = std::fs::remove_dir_all(&to);
        return Err(ApiError::Storage(format!(
            "cannot back up to {}: {error}",
            to.display()
        )));
    }
    tracing::info!(path = %to.display(), "store backed up");
    Ok(HttpResponse::Created().json(BackupDone {
        bytes: directory_bytes(&to),
        path: to.display().to_string(),
        took_ms: started.elapsed().as_secs_f64() * 1e3,
    }))
}

fn directory_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|entry| entry.metadata().ok())
        .map(|m| m.len())
        .sum()
}
