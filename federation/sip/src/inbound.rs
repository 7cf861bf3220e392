//! The first layer every incoming request meets. Only the registrar /
//! proxy may ask the gateway anything: the core authenticated the caller
//! (that is where digest credentials live), so a request from any other
//! address gets 403. Requests inside a dialog go on to ezk's dialog layer;
//! the others are served here by method.

use std::net::SocketAddr;
use std::sync::Arc;

use sip_core::{Endpoint, IncomingRequest, Layer, MayTake};
use sip_types::{Headers, Method, Name, StatusCode};
use tracing::Instrument;

use crate::agent::{Counters, Shared, Transport};
use crate::content::{PIDF_XML, SENML_JSON, TEXT_PLAIN};
use crate::{event, messages, notifier};

pub(crate) struct Inbound {
    shared: Arc<Shared>,
}

impl Inbound {
    pub fn new(shared: Arc<Shared>) -> Self {
        Inbound { shared }
    }

    /// Whether `source` is the registrar: its address exactly over UDP;
    /// over TCP the proxy connects from a port of its choosing, so its
    /// host.
    fn came_through_registrar(&self, source: SocketAddr) -> bool {
        match *self.shared.registrar_addr.read() {
            None => false,
            Some(registrar) => match self.shared.config.transport {
                Transport::Udp => registrar == source,
                Transport::Tcp => registrar.ip() == source.ip(),
            },
        }
    }
}

#[async_trait::async_trait]
impl Layer for Inbound {
    fn name(&self) -> &'static str {
        "fogbank"
    }

    async fn receive(&self, endpoint: &Endpoint, request: MayTake<'_, IncomingRequest>) {
        if request.line.method == Method::ACK {
            return;
        }
        let source = request.tp_info.source;
        let method = request.line.method.clone();
        let span = tracing::info_span!("sip_request", %method, %source);
        if !self.came_through_registrar(source) {
            Counters::add(&self.shared.counters.forbidden);
            tracing::info!(parent: &span, "refused: not from the registrar");
            let request = request.take();
            respond(endpoint, request, StatusCode::FORBIDDEN, |_| {})
                .instrument(span)
                .await;
            return;
        }
        if request.base_headers.to.tag.is_some() {
            // A refresh or an unsubscribe: the dialog layer's.
            return;
        }
        let request = request.take();
        let shared = &self.shared;
        async {
            match method {
                Method::SUBSCRIBE => notifier::subscribe(endpoint, shared, request).await,
                Method::MESSAGE => messages::receive(endpoint, shared, request).await,
                Method::OPTIONS => {
                    respond(endpoint, request, StatusCode::OK, |headers| {
                        headers.insert_named(endpoint.allowed());
                        headers.insert(
                            Name::ACCEPT,
                            format!("{SENML_JSON}, {PIDF_XML}, {TEXT_PLAIN}"),
                        );
                        headers.insert(Name::ALLOW_EVENTS, event::PACKAGE);
                    })
                    .await
                }
                _ => {
                    respond(endpoint, request, StatusCode::METHOD_NOT_ALLOWED, |h| {
                        h.insert_named(endpoint.allowed())
                    })
                    .await
                }
            }
        }
        .instrument(span)
        .await
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
