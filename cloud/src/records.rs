//! Replicated records (`fogbank_taas::replicated`) across the local cloud.
//!
//! Each beacon carries the fingerprint of its sender's records. A gateway
//! whose own fingerprint differs *pulls* from that member: its index, then
//! the records it holds a newer version of, then any blob they name that
//! is not here, in chunks. The member pulls from us in turn when our
//! beacon shows it a difference, so two gateways converge whichever of
//! them wrote last; a pull that fails is simply tried at a later beacon.
//! Nothing is pushed, so a gateway is never sent more than it asked for.

use std::sync::Arc;

use base64::Engine as _;
use fogbank_taas::Hub;
use fogbank_taas::remote::RemoteError;
use fogbank_taas::replicated::Record;

use crate::wire::{Request, Response};
use crate::{Handle, READ_TIMEOUT, unexpected};

/// Bytes of a blob per call (base64 makes the answer a third larger).
pub(crate) const BLOB_CHUNK: usize = 4 << 20;
/// Records asked for per call.
const RECORDS_PER_CALL: usize = 64;
/// The largest blob taken: a component or a checkpoint is far smaller.
const MAX_BLOB: u64 = 64 << 20;

/// Pulls the records `gateway` holds newer than ours; answers how many
/// were taken.
pub(crate) async fn pull(
    hub: Arc<Hub>,
    handle: Handle,
    gateway: String,
) -> Result<usize, RemoteError> {
    let index = match handle
        .call(&gateway, Request::RecordIndex, READ_TIMEOUT)
        .await?
    {
        Response::RecordIndex(index) => index,
        other => return Err(unexpected(&gateway, other)),
    };
    let wanted = hub.records().newer_in(&index);
    let mut taken = 0;
    for keys in wanted.chunks(RECORDS_PER_CALL) {
        let records = match handle
            .call(&gateway, Request::Records(keys.to_vec()), READ_TIMEOUT)
            .await?
        {
            Response::Records(records) => records,
            other => return Err(unexpected(&gateway, other)),
        };
        for record in records {
            if take(&hub, &handle, &gateway, record).await? {
                taken += 1;
            }
        }
    }
    if taken > 0 {
        tracing::debug!(%gateway, taken, "replicated records pulled");
    }
    Ok(taken)
}

async fn take(
    hub: &Hub,
    handle: &Handle,
    gateway: &str,
    record: Record,
) -> Result<bool, RemoteError> {
    let refused = |reason: String| RemoteError::Refused {
        gateway: gateway.to_owned(),
        reason,
    };
    let blob = match &record.blob {
        Some(digest)
            if !hub
                .records()
                .holds_blob(hub.store(), digest)
                .map_err(|e| refused(format!("this gateway's store: {e}")))? =>
        {
            Some(fetch_blob(handle, gateway, digest).await?)
        }
        _ => None,
    };
    let key = record.key.clone();
    hub.merge_record(record, blob).map_err(|e| {
        tracing::warn!(%gateway, %key, error = %e, "a replicated record was not taken");
        refused(e.to_string())
    })
}

async fn fetch_blob(handle: &Handle, gateway: &str, digest: &str) -> Result<Vec<u8>, RemoteError> {
    let mut blob = Vec::new();
    loop {
        let request = Request::Blob {
            digest: digest.to_owned(),
            offset: blob.len() as u64,
        };
        let (data, total) = match handle.call(gateway, request, READ_TIMEOUT).await? {
            Response::Blob { data, total } => (data, total),
            other => return Err(unexpected(gateway, other)),
        };
        let refused = |reason: String| RemoteError::Refused {
            gateway: gateway.to_owned(),
            reason,
        };
        if total > MAX_BLOB {
            return Err(refused(format!(
                "blob {digest} is {total} bytes, more than we take"
            )));
        }
        let chunk = base64::engine::general_purpose::STANDARD
            .decode(data)
            .map_err(|e| refused(format!("blob chunk is not base64: {e}")))?;
        if chunk.is_empty() && (blob.len() as u64) < total {
            return Err(refused(format!("blob {digest} ended early")));
        }
        blob.extend_from_slice(&chunk);
        if blob.len() as u64 >= total {
            return Ok(blob);
        }
    }
}

/// What the callee answers to the calls of [`pull`].
pub(crate) fn serve(hub: &Hub, request: Request) -> Response {
    match request {
        Request::RecordIndex => Response::RecordIndex(hub.records().index()),
        Request::Records(keys) => Response::Records(
            keys.iter()
                .take(RECORDS_PER_CALL)
                .filter_map(|key| hub.records().get(key))
                .collect(),
        ),
        Request::Blob { digest, offset } => match hub.blob(&digest) {
            Ok(Some(bytes)) => {
                let start = usize::try_from(offset)
                    .unwrap_or(usize::MAX)
                    .min(bytes.len());
                let end = start.saturating_add(BLOB_CHUNK).min(bytes.len());
                Response::Blob {
                    data: base64::engine::general_purpose::STANDARD.encode(&bytes[start..end]),
                    total: bytes.len() as u64,
                }
            }
            Ok(None) => Response::Refused(format!("no blob {digest} here")),
            Err(error) => Response::Refused(format!("this gateway's store: {error}")),
        },
        _ => Response::Refused("not a records call".into()),
    }
}
