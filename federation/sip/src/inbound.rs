//! The first layer every incoming request meets. Only the registrar /
//! proxy may ask the gateway anything: the core authenticated the caller
//! (that is where digest credentials live), so a request from any other
//! address gets 403. Requests inside a dialog go on to ezk's dialog layer;
//! the others are served here by method.

use std::net::SocketAddr;
use std::sync::Arc;

use sip_core::{Endpoint, IncomingRequest, Layer, MayTake};
use sip_types::{Method, Name, StatusCode};
use tracing::Instrument;

use crate::config::Transport;
use crate::content::{PIDF_XML, SENML_JSON, TEXT_PLAIN};
use crate::request::respond;
use crate::shared::{Counters, Shared};
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
