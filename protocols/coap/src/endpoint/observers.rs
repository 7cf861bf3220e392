//! Applications observing a resource here (RFC 7641, server side): who
//! observes what, bounded per host and in all, and the notifications sent
//! when a reading arrives — every few confirmable, so that a gone observer
//! is noticed and dropped.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use coap_lite::{MessageType, Packet};

use super::server::fill;

use super::{CONFIRMABLE_EVERY, Endpoint, Observer, Reply};

impl Endpoint {
    /// Whether anyone observes anything: one atomic load.
    pub fn has_observers(&self) -> bool {
        self.inner.any_observers.load(Ordering::Relaxed)
    }

    /// Whether anyone observes `path` (as `things/x`).
    pub fn is_observed(&self, path: &str) -> bool {
        self.inner.state.lock().observers.contains_key(path)
    }

    /// Every path someone observes (as `things/x`).
    pub fn observed_paths(&self) -> Vec<String> {
        self.inner.state.lock().observers.keys().cloned().collect()
    }

    /// Sends every observer of `path` the resource's current state, asking
    /// its handler again with the observer's request.
    pub fn notify(&self, path: &str) {
        let observers: Vec<Observer> = {
            let mut state = self.inner.state.lock();
            let Some(observers) = state.observers.get_mut(path) else {
                return;
            };
            for observer in observers.iter_mut() {
                observer.sequence = (observer.sequence + 1) & 0xff_ffff;
            }
            observers.clone()
        };
        let Some(handler) = self.handler_for(&observers[0].request.path) else {
            return;
        };
        for observer in observers {
            let Reply::Now(response) = handler.handle(observer.request.clone()) else {
                continue;
            };
            let ended = !response.is_success();
            let confirmable = observer.sequence % CONFIRMABLE_EVERY == 0 || ended;
            let mut packet = Packet::new();
            packet.header.set_type(if confirmable {
                MessageType::Confirmable
            } else {
                MessageType::NonConfirmable
            });
            packet.header.message_id = self.next_mid();
            packet.set_token(observer.token.clone());
            if !ended {
                packet.set_observe_value(observer.sequence);
            }
            fill(&mut packet, response, None);
            self.inner
                .stats
                .notifications_sent
                .fetch_add(1, Ordering::Relaxed);
            if ended {
                self.forget_observer(path, observer.peer, &observer.token);
            }
            if confirmable {
                let endpoint = self.clone();
                let path = path.to_owned();
                self.spawn(async move {
                    match endpoint.send_confirmable(observer.peer, &packet).await {
                        Ok(ack) if ack.header.get_type() == MessageType::Acknowledgement => {}
                        _ => endpoint.forget_observer(&path, observer.peer, &observer.token),
                    }
                });
            } else {
                let mut state = self.inner.state.lock();
                state.notified.insert(
                    packet.header.message_id,
                    (path.to_owned(), observer.peer, observer.token.clone()),
                );
                state.notified_order.push_back(packet.header.message_id);
                if state.notified_order.len() > 4096
                    && let Some(old) = state.notified_order.pop_front()
                {
                    state.notified.remove(&old);
                }
                drop(state);
                self.send_packet(observer.peer, &packet);
            }
        }
    }

    pub(super) fn forget_observer(&self, path: &str, peer: SocketAddr, token: &[u8]) {
        let mut state = self.inner.state.lock();
        state.remove_observer(path, peer, token);
        self.inner
            .any_observers
            .store(!state.observers.is_empty(), Ordering::Relaxed);
        tracing::debug!(%peer, path, "observer removed");
    }

    /// Observers of all paths, for tests and `/metrics`.
    pub fn observer_count(&self) -> usize {
        self.inner.state.lock().observer_total
    }
}
