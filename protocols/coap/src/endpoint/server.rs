//! The server side: a request is deduplicated, reassembled if it comes in
//! Block1 pieces, routed to its handler by the first path segment, and
//! answered piggybacked, or separately when the handler takes its time;
//! large answers go out in Block2 pieces.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType, ResponseType};
use fogbank_taas::untrusted;

use crate::message::{self, Block, Request, Response};
use crate::uploads::Refused;

use super::{
    Endpoint, Handler, KNOWN_OPTIONS, MAX_SZX, Observer, PIGGYBACK_WAIT, Reply, empty, encode,
};

impl Endpoint {
    pub(super) fn on_request(&self, packet: Packet, method: RequestType, peer: SocketAddr) {
        let kind = packet.header.get_type();
        if !matches!(kind, MessageType::Confirmable | MessageType::NonConfirmable) {
            return;
        }
        let key = (peer, packet.header.message_id);
        {
            let mut state = self.inner.state.lock();
            if let Some(reply) = state.answered.get(&key) {
                self.inner.stats.duplicates.fetch_add(1, Ordering::Relaxed);
                if let Some(bytes) = reply.clone() {
                    drop(state);
                    self.send_bytes(peer, &bytes);
                }
                return;
            }
            state.answered.insert(key, None, Instant::now());
        }
        self.inner.stats.requests.fetch_add(1, Ordering::Relaxed);
        let span = tracing::debug_span!("coap", %peer, ?method, path = %message::uri_path(&packet).join("/"));
        let _entered = span.enter();

        if let Some(option) = packet
            .options()
            .map(|(number, _)| *number)
            .find(|n| n % 2 == 1 && !KNOWN_OPTIONS.contains(n))
        {
            let response = Response::error(
                ResponseType::BadOption,
                format!("unknown critical option {option}"),
            );
            self.answer(&packet, peer, response, None);
            return;
        }
        let request = Request {
            peer,
            method,
            path: message::uri_path(&packet),
            queries: message::string_options(&packet, CoapOption::UriQuery),
            content_format: message::uint_option(&packet, CoapOption::ContentFormat)
                .and_then(|f| u16::try_from(f).ok()),
            accept: message::uint_option(&packet, CoapOption::Accept)
                .and_then(|f| u16::try_from(f).ok()),
            payload: packet.payload.clone(),
        };
        let request = match self.reassemble(&packet, request) {
            Ok(Some(request)) => request,
            Ok(None) => return,
            Err(response) => {
                self.answer(&packet, peer, response, None);
                return;
            }
        };
        let handler = self.handler_for(&request.path);
        let Some(handler) = handler else {
            self.answer(&packet, peer, Response::new(ResponseType::NotFound), None);
            return;
        };
        match handler.handle(request.clone()) {
            Reply::Now(response) => self.answer(&packet, peer, response, Some(&request)),
            Reply::Later(future) => {
                let endpoint = self.clone();
                self.spawn(async move {
                    let mut future = future;
                    let response = match tokio::time::timeout(PIGGYBACK_WAIT, &mut future).await {
                        Ok(response) => response,
                        Err(_) => {
                            // Empty ACK now; the answer follows on its own.
                            if packet.header.get_type() == MessageType::Confirmable {
                                let ack =
                                    empty(MessageType::Acknowledgement, packet.header.message_id);
                                endpoint.send_packet(peer, &ack);
                                let mut separate = packet.clone();
                                separate.header.set_type(MessageType::NonConfirmable);
                                separate.header.message_id = endpoint.next_mid();
                                let response = future.await;
                                endpoint.answer_separately(separate, peer, response);
                                return;
                            }
                            future.await
                        }
                    };
                    endpoint.answer(&packet, peer, response, Some(&request));
                });
            }
        }
    }

    pub(super) fn handler_for(&self, path: &[String]) -> Option<Arc<dyn Handler>> {
        let first = path.first().map(String::as_str).unwrap_or("");
        if let Some(handler) = self.inner.routes.read().get(first) {
            return Some(handler.clone());
        }
        self.inner.fallback.read().clone()
    }

    /// Block1: collects a request body sent in blocks; `Ok(None)` once a
    /// middle block is acknowledged with 2.31 Continue.
    pub(super) fn reassemble(
        &self,
        packet: &Packet,
        mut request: Request,
    ) -> Result<Option<Request>, Response> {
        let Some(block) = Block::of(packet, CoapOption::Block1) else {
            return Ok(Some(request));
        };
        let block = block.map_err(|()| Response::error(ResponseType::BadOption, "bad Block1"))?;
        let received = self.inner.state.lock().uploads.block(
            request.peer,
            request.path_string(),
            block,
            &request.payload,
            Instant::now(),
        );
        match received {
            Ok(Some(body)) => {
                request.payload = body;
                Ok(Some(request))
            }
            Ok(None) => {
                let mut reply = reply_to(packet, self.next_mid());
                reply.header.code = MessageClass::Response(ResponseType::Continue);
                reply.add_option(CoapOption::Block1, block.encode());
                self.remember_and_send(packet, request.peer, &reply);
                Ok(None)
            }
            Err(refused) => {
                self.inner.stats.uploads_refused[refused.index()].fetch_add(1, Ordering::Relaxed);
                if let Some(held_back) = untrusted::may_warn(&request.peer.ip().to_string()) {
                    tracing::warn!(peer = %request.peer, held_back, %refused, "refused a CoAP block-wise upload");
                }
                let code = match refused {
                    Refused::OutOfOrder { .. } => ResponseType::RequestEntityIncomplete,
                    Refused::BlockSize { .. } => ResponseType::BadRequest,
                    Refused::TooLarge => ResponseType::RequestEntityTooLarge,
                    Refused::HostBusy | Refused::Full => ResponseType::TooManyRequests,
                };
                Err(Response::error(code, refused.to_string()))
            }
        }
    }

    /// Sends `response` to `packet`: piggybacked on the ACK of a
    /// confirmable request, as a non-confirmable message otherwise. Handles
    /// Observe registration and Block2.
    pub(super) fn answer(
        &self,
        packet: &Packet,
        peer: SocketAddr,
        response: Response,
        request: Option<&Request>,
    ) {
        let mut reply = reply_to(packet, self.next_mid());
        if let Some(Ok(block1)) = Block::of(packet, CoapOption::Block1) {
            reply.add_option(CoapOption::Block1, block1.encode());
        }
        let observe = message::uint_option(packet, CoapOption::Observe);
        if let Some(request) = request
            && request.method == RequestType::Get
        {
            let path = request.path_string();
            let token = packet.get_token().to_vec();
            let registering = observe == Some(0) && response.observable && response.is_success();
            let mut state = self.inner.state.lock();
            if !registering && !state.observers.contains_key(&path) {
                drop(state);
                return self.answer_plain(packet, peer, reply, response);
            }
            // A new GET on the same token replaces (or ends) the old interest.
            state.remove_observer(&path, peer, &token);
            if registering {
                if state.may_observe(peer) {
                    state.observers.entry(path).or_default().push(Observer {
                        peer,
                        token,
                        request: request.clone(),
                        sequence: 1,
                    });
                    state.observer_total += 1;
                    reply.set_observe_value(0);
                } else {
                    self.inner
                        .stats
                        .observers_refused
                        .fetch_add(1, Ordering::Relaxed);
                    if let Some(held_back) = untrusted::may_warn(&peer.ip().to_string()) {
                        tracing::warn!(%peer, held_back, "refused a CoAP observation: too many observers");
                    }
                }
            }
            self.inner
                .any_observers
                .store(!state.observers.is_empty(), Ordering::Relaxed);
        }
        self.answer_plain(packet, peer, reply, response);
    }

    pub(super) fn answer_plain(
        &self,
        packet: &Packet,
        peer: SocketAddr,
        mut reply: Packet,
        response: Response,
    ) {
        let requested_block = match Block::of(packet, CoapOption::Block2) {
            Some(Ok(block)) => Some(block),
            Some(Err(())) => {
                let response = Response::error(ResponseType::BadOption, "bad Block2");
                fill(&mut reply, response, None);
                self.remember_and_send(packet, peer, &reply);
                return;
            }
            None => None,
        };
        fill(&mut reply, response, requested_block);
        self.remember_and_send(packet, peer, &reply);
    }

    pub(super) fn answer_separately(
        &self,
        mut separate: Packet,
        peer: SocketAddr,
        response: Response,
    ) {
        fill(&mut separate, response, None);
        self.send_packet(peer, &separate);
    }

    pub(super) fn remember_and_send(&self, request: &Packet, peer: SocketAddr, reply: &Packet) {
        let Some(bytes) = encode(reply) else { return };
        self.inner.state.lock().answered.insert(
            (peer, request.header.message_id),
            Some(bytes.clone()),
            Instant::now(),
        );
        self.send_bytes(peer, &bytes);
    }

    /// Unfinished Block1 uploads and their bytes, for `/metrics`.
    pub fn uploads_held(&self) -> (usize, usize) {
        let state = self.inner.state.lock();
        (state.uploads.len(), state.uploads.bytes())
    }
}

/// The frame of an answer to `request`: ACK with its id for a confirmable
/// request, NON with a new id otherwise; the same token.
pub(super) fn reply_to(request: &Packet, mid: u16) -> Packet {
    let mut reply = Packet::new();
    if request.header.get_type() == MessageType::Confirmable {
        reply.header.set_type(MessageType::Acknowledgement);
        reply.header.message_id = request.header.message_id;
    } else {
        reply.header.set_type(MessageType::NonConfirmable);
        reply.header.message_id = mid;
    }
    reply.set_token(request.get_token().to_vec());
    reply
}

/// Puts a handler's response into `packet`, one block of it if the payload
/// does not fit a datagram or the client asked for a block.
pub(super) fn fill(packet: &mut Packet, response: Response, requested: Option<Block>) {
    packet.header.code = MessageClass::Response(response.code);
    for segment in &response.location_path {
        packet.add_option(CoapOption::LocationPath, segment.as_bytes().to_vec());
    }
    if let Some(format) = response.content_format {
        packet.add_option(
            CoapOption::ContentFormat,
            message::encode_uint(u32::from(format)),
        );
    }
    let payload = response.payload;
    let szx = requested.map_or(MAX_SZX, |b| b.szx.min(MAX_SZX));
    let size = 1usize << (szx + 4);
    if requested.is_none() && payload.len() <= size {
        packet.payload = payload;
        return;
    }
    let num = requested.map_or(0, |b| b.num);
    let start = (num as usize).saturating_mul(size);
    if start > payload.len() || (start == payload.len() && start > 0) {
        packet.header.code = MessageClass::Response(ResponseType::BadOption);
        packet.clear_option(CoapOption::ContentFormat);
        packet.payload = b"no such block".to_vec();
        return;
    }
    let end = (start + size).min(payload.len());
    let block = Block {
        num,
        more: end < payload.len(),
        szx,
    };
    packet.add_option(CoapOption::Block2, block.encode());
    if num == 0 {
        packet.add_option(
            CoapOption::Size2,
            message::encode_uint(payload.len() as u32),
        );
    }
    packet.payload = payload[start..end].to_vec();
}
