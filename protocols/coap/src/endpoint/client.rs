//! The client side: requests to devices (confirmable, retransmitted with
//! exponential backoff, separate responses awaited, Block2 answers
//! fetched whole) and observations of devices (RFC 7641, client side).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Instant;

use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType};
use tokio::sync::oneshot;

use crate::message::{self, Block};

use super::{
    ACK_TIMEOUT, Endpoint, MAX_RETRANSMIT, NotificationSink, RequestError, SEPARATE_RESPONSE_WAIT,
    Taken, empty, encode, is_error, random_u64,
};

impl Endpoint {
    pub(super) fn on_empty(&self, packet: Packet, peer: SocketAddr) {
        let mid = packet.header.message_id;
        match packet.header.get_type() {
            MessageType::Acknowledgement | MessageType::Reset => {
                let mut state = self.inner.state.lock();
                if let Some(waiter) = state.unacked.remove(&mid) {
                    drop(state);
                    let _ = waiter.send(packet);
                } else if packet.header.get_type() == MessageType::Reset
                    && let Some((path, observer, token)) = state.notified.remove(&mid)
                {
                    drop(state);
                    self.forget_observer(&path, observer, &token);
                }
            }
            // A CoAP ping (empty CON) is answered with RST (§4.3).
            MessageType::Confirmable => self.send_packet(peer, &empty(MessageType::Reset, mid)),
            MessageType::NonConfirmable => {}
        }
    }

    pub(super) fn on_response(&self, packet: Packet, peer: SocketAddr) {
        let kind = packet.header.get_type();
        let token = packet.get_token().to_vec();
        if kind == MessageType::Acknowledgement {
            // Piggybacked: the request's sender waits for this ACK. Its
            // exchange is over at once, in the same lock: a notification
            // of the same token right behind it must reach the
            // observation's sink, not a separate-response channel nobody
            // reads any more (it was acknowledged and lost that way).
            let mut state = self.inner.state.lock();
            state.exchanges.remove(&token);
            if let Some(waiter) = state.unacked.remove(&packet.header.message_id) {
                drop(state);
                let _ = waiter.send(packet);
            }
            return;
        }
        let mid = packet.header.message_id;
        let (exchange, sink) = {
            let mut state = self.inner.state.lock();
            // A repeated notification (our ACK was lost) is acknowledged
            // again, not stored again.
            if state.answered.get(&(peer, mid)).is_some() {
                drop(state);
                self.inner.stats.duplicates.fetch_add(1, Ordering::Relaxed);
                if kind == MessageType::Confirmable {
                    self.send_packet(peer, &empty(MessageType::Acknowledgement, mid));
                }
                return;
            }
            state.answered.insert((peer, mid), None, Instant::now());
            let exchange = state.exchanges.remove(&token);
            let sink = match exchange {
                Some(_) => None,
                None => state.observations.get(&token).cloned(),
            };
            (exchange, sink)
        };
        let taken = if let Some(exchange) = exchange {
            let _ = exchange.send(packet);
            Taken::Yes
        } else if let Some(sink) = sink {
            self.inner
                .stats
                .notifications_received
                .fetch_add(1, Ordering::Relaxed);
            sink(&packet)
        } else {
            Taken::Never
        };
        match (kind, taken) {
            (MessageType::Confirmable, Taken::Yes) => {
                self.send_packet(peer, &empty(MessageType::Acknowledgement, mid))
            }
            (_, Taken::Yes) => {}
            (_, Taken::NotNow) => {
                // Its repeat must be taken afresh, not as a duplicate.
                self.inner.state.lock().answered.forget(&(peer, mid));
            }
            // Nobody wants it: tell the sender to stop (RFC 7641 §3.6).
            (_, Taken::Never) => {
                self.inner.state.lock().observations.remove(&token);
                self.send_packet(peer, &empty(MessageType::Reset, mid));
            }
        }
    }

    /// Sends a confirmable request and waits for its response, fetching
    /// further blocks of a block-wise answer.
    pub async fn request(
        &self,
        peer: SocketAddr,
        mut packet: Packet,
    ) -> Result<Packet, RequestError> {
        let mut response = self.request_once(peer, packet.clone()).await?;
        let mut num = 0;
        while let Some(Ok(block)) = Block::of(&response, CoapOption::Block2) {
            if block.num != num {
                return Err(RequestError::Blocks {
                    peer,
                    expected: num,
                    got: block.num,
                });
            }
            if !block.more {
                break;
            }
            num += 1;
            packet.clear_option(CoapOption::Block2);
            packet.clear_option(CoapOption::Observe);
            packet.add_option(
                CoapOption::Block2,
                Block {
                    num,
                    more: false,
                    szx: block.szx,
                }
                .encode(),
            );
            packet.set_token(self.new_token());
            let next = self.request_once(peer, packet.clone()).await?;
            let mut payload = std::mem::take(&mut response.payload);
            payload.extend_from_slice(&next.payload);
            response = next;
            response.payload = payload;
        }
        Ok(response)
    }

    pub(super) async fn request_once(
        &self,
        peer: SocketAddr,
        mut packet: Packet,
    ) -> Result<Packet, RequestError> {
        if packet.get_token().is_empty() {
            packet.set_token(self.new_token());
        }
        packet.header.set_type(MessageType::Confirmable);
        packet.header.message_id = self.next_mid();
        let token = packet.get_token().to_vec();
        let (separate_tx, separate_rx) = oneshot::channel();
        self.inner
            .state
            .lock()
            .exchanges
            .insert(token.clone(), separate_tx);
        let outcome = self.send_confirmable(peer, &packet).await;
        let result = match outcome {
            Ok(ack) if ack.header.get_type() == MessageType::Reset => {
                Err(RequestError::Reset(peer))
            }
            Ok(ack) if ack.header.code != MessageClass::Empty => Ok(ack),
            Ok(_) => match tokio::time::timeout(SEPARATE_RESPONSE_WAIT, separate_rx).await {
                Ok(Ok(response)) => Ok(response),
                _ => Err(RequestError::Timeout(peer)),
            },
            Err(error) => Err(error),
        };
        self.inner.state.lock().exchanges.remove(&token);
        result
    }

    /// Sends a confirmable message until it is acknowledged or reset, with
    /// RFC 7252's randomised exponential backoff; the ACK or RST.
    pub(super) async fn send_confirmable(
        &self,
        peer: SocketAddr,
        packet: &Packet,
    ) -> Result<Packet, RequestError> {
        let bytes = encode(packet).ok_or_else(|| RequestError::Encode("too large".into()))?;
        let mid = packet.header.message_id;
        let (tx, mut rx) = oneshot::channel();
        self.inner.state.lock().unacked.insert(mid, tx);
        // ACK_TIMEOUT × a random factor in [1, 1.5).
        let mut timeout = ACK_TIMEOUT.mul_f64(1.0 + (random_u64() % 500) as f64 / 1000.0);
        let mut outcome = Err(RequestError::Timeout(peer));
        for attempt in 0..=MAX_RETRANSMIT {
            if attempt > 0 {
                self.inner
                    .stats
                    .retransmissions
                    .fetch_add(1, Ordering::Relaxed);
            }
            if let Err(source) = self.inner.socket.send_to(&bytes, peer).await {
                outcome = Err(RequestError::Send { peer, source });
                break;
            }
            match tokio::time::timeout(timeout, &mut rx).await {
                Ok(Ok(reply)) => {
                    outcome = Ok(reply);
                    break;
                }
                Ok(Err(_)) => break,
                Err(_) => timeout *= 2,
            }
        }
        self.inner.state.lock().unacked.remove(&mid);
        outcome
    }

    /// Starts observing `packet`'s resource (a GET; Observe 0 is added):
    /// returns the observation and the first response; notifications go
    /// to `sink` until the observation is dropped or `sink` says no. A
    /// first response without Observe means the device does not offer
    /// it; the observation has then already ended.
    pub async fn observe(
        &self,
        peer: SocketAddr,
        mut packet: Packet,
        sink: NotificationSink,
    ) -> Result<(Observation, Packet), RequestError> {
        let token = self.new_token();
        packet.set_token(token.clone());
        packet.set_observe_value(0);
        self.inner
            .state
            .lock()
            .observations
            .insert(token.clone(), sink);
        // Made before the request: a caller dropped while it waits ends
        // the observation too.
        let observation = Observation {
            endpoint: self.clone(),
            token,
        };
        let response = self.request_once(peer, packet).await?;
        if response.get_observe_value().is_none() || is_error(&response) {
            observation.end();
        }
        Ok((observation, response))
    }

    pub fn new_token(&self) -> Vec<u8> {
        // Unpredictable enough against off-path spoofing (RFC 7252 §5.3.1):
        // a random start, then a counter scrambled by a fixed odd multiplier.
        let n = self.inner.next_token.fetch_add(1, Ordering::Relaxed);
        n.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_be_bytes().to_vec()
    }
}

/// An observation [`Endpoint::observe`] started, ended when dropped —
/// also when the task holding it is aborted, as a deregistered device's
/// watcher is: the device's next notification is answered with RST,
/// which ends it there (RFC 7641 §3.6).
pub struct Observation {
    endpoint: Endpoint,
    token: Vec<u8>,
}

impl Observation {
    fn end(&self) {
        self.endpoint
            .inner
            .state
            .lock()
            .observations
            .remove(&self.token);
    }
}

impl Drop for Observation {
    fn drop(&mut self) {
        self.end();
    }
}

/// A GET for `path` (with `queries`), ready for [`Endpoint::request`].
pub fn get(path: &str, accept: Option<u16>) -> Packet {
    request_packet(RequestType::Get, path, &[], None, Vec::new(), accept)
}

pub fn request_packet(
    method: RequestType,
    path: &str,
    queries: &[String],
    content_format: Option<u16>,
    payload: Vec<u8>,
    accept: Option<u16>,
) -> Packet {
    let mut packet = Packet::new();
    packet.header.code = MessageClass::Request(method);
    message::set_uri(&mut packet, path, queries);
    if let Some(format) = content_format {
        packet.add_option(
            CoapOption::ContentFormat,
            message::encode_uint(u32::from(format)),
        );
    }
    if let Some(format) = accept {
        packet.add_option(CoapOption::Accept, message::encode_uint(u32::from(format)));
    }
    packet.payload = payload;
    packet
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use coap_lite::ResponseType;

    use super::*;

    /// A device answers an Observe GET (piggybacked) and sends its next
    /// notification right behind the answer, before the request's task
    /// has run again: the notification reaches the observation's sink. It
    /// was once acknowledged and dropped, taken for a separate response to
    /// the request already answered.
    #[test]
    fn a_notification_right_behind_the_first_response_is_stored() {
        let endpoint = Endpoint::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let device = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let peer = device.local_addr().unwrap();
        let stored = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let sink_stored = stored.clone();
        let sink: NotificationSink = Arc::new(move |packet: &Packet| {
            sink_stored.lock().push(packet.payload.clone());
            Taken::Yes
        });
        // The state request_once and observe leave while they wait.
        let (token, mid) = (endpoint.new_token(), 7);
        let (separate, _separate_rx) = oneshot::channel();
        let (acked, mut acked_rx) = oneshot::channel();
        {
            let mut state = endpoint.inner.state.lock();
            state.observations.insert(token.clone(), sink);
            state.exchanges.insert(token.clone(), separate);
            state.unacked.insert(mid, acked);
        }

        let mut first = Packet::new();
        first.header.set_type(MessageType::Acknowledgement);
        first.header.message_id = mid;
        first.header.code = MessageClass::Response(ResponseType::Content);
        first.set_token(token);
        first.set_observe_value(1);
        first.payload = b"1".to_vec();
        let mut next = first.clone();
        next.header.set_type(MessageType::Confirmable);
        next.header.message_id = mid + 1;
        next.set_observe_value(2);
        next.payload = b"2".to_vec();
        endpoint.on_response(first, peer);
        endpoint.on_response(next, peer);

        assert!(acked_rx.try_recv().is_ok(), "the request has its answer");
        assert_eq!(
            *stored.lock(),
            vec![b"2".to_vec()],
            "the notification is stored"
        );
    }
}
