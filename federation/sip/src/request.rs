//! Reading a request's few fields we need and answering it.

use sip_core::{Endpoint, IncomingRequest};
use sip_types::uri::{SipUri, SipUriUserPart};
use sip_types::{Headers, Name, StatusCode};

/// The user part of a request URI: the thing's id.
pub(crate) fn user_of(uri: &SipUri) -> Option<&str> {
    match &uri.user_part {
        SipUriUserPart::User(user) => Some(user.as_str()),
        _ => None,
    }
}

/// The URI in a request's From header, as text.
pub(crate) fn sender(request: &IncomingRequest) -> String {
    use sip_types::print::AppendCtx;
    request
        .base_headers
        .from
        .uri
        .uri
        .default_print_ctx()
        .to_string()
}

/// The first value of header `name`, as text.
pub(crate) fn header<'a>(request: &'a IncomingRequest, name: &Name) -> Option<&'a str> {
    request.headers.get_raw(name).next().map(|v| v.as_str())
}

/// Answers `request` with `code` and the headers `edit` adds.
pub(crate) async fn respond(
    endpoint: &Endpoint,
    mut request: IncomingRequest,
    code: StatusCode,
    edit: impl FnOnce(&mut Headers),
) {
    // ezk names the common codes only; 202 goes out with its name too.
    let reason = match code.into_u16() {
        202 => Some("Accepted".into()),
        _ => None,
    };
    let mut response = endpoint.create_response(&request, code, reason);
    edit(&mut response.msg.headers);
    if code.into_u16() >= 400 {
        tracing::info!(code = code.into_u16(), "SIP request refused");
    }
    let transaction = endpoint.create_server_tsx(&mut request);
    if let Err(error) = transaction.respond(response).await {
        tracing::warn!(%error, "cannot answer a SIP request");
    }
}
