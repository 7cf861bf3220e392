//! Request bodies: their media type, their size limit, and JSON.
//!
//! Handlers read bodies through here rather than through actix's `Json`
//! extractor, whose refusals are plain text: every refusal from here is a
//! problem document, as the OpenAPI document says.

use actix_web::HttpRequest;
use actix_web::http::header;
use actix_web::web::{self, Bytes};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;

use super::problem::ApiError;

/// The media type of a request body, without parameters.
pub(super) fn content_type(request: &HttpRequest) -> String {
    request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default()
}

/// Reads a body of at most `limit` bytes, refusing larger ones early.
pub(super) async fn read_body(
    request: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<Bytes, ApiError> {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(ApiError::TooLarge { limit });
    }
    let mut body = web::BytesMut::with_capacity(declared.unwrap_or(0));
    while let Some(chunk) = payload.next().await {
        let chunk =
            chunk.map_err(|e| ApiError::BadRequest(format!("could not read the body: {e}")))?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::TooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// Reads a JSON body of at most `limit` bytes. `shape` is shown in the
/// refusal of a body that does not parse, e.g. `{"to": "/path"}`.
pub(super) async fn read_json<T: DeserializeOwned>(
    request: &HttpRequest,
    payload: web::Payload,
    limit: usize,
    shape: &str,
) -> Result<T, ApiError> {
    let found = content_type(request);
    if found != "application/json" {
        return Err(ApiError::UnsupportedType {
            found,
            expected: "application/json",
        });
    }
    let body = read_body(request, payload, limit).await?;
    serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("expected {shape}: {e}")))
}
