//! The broker-to-device half of one connection.

use std::collections::HashSet;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, watch};

use crate::packet;
use crate::receive::Receiver;

use super::{READ_CHUNK, invalid};

/// The broker-to-device half of one connection: passes whole packets on
/// as they come and the front door's own acknowledgements between them,
/// and releases the receipt of each stored publish once its
/// acknowledgement has passed.
///
/// Order: the front door acknowledges a publish only when every
/// acknowledgement the broker owed before it has been written, so its own
/// waiting ones always go before whatever the broker sends next.
pub(super) struct Outbound<'a> {
    pub(super) session: &'a str,
    pub(super) intake: watch::Receiver<Option<Arc<Mutex<Receiver>>>>,
    pub(super) held: &'a Mutex<HashSet<u16>>,
    pub(super) accepted: &'a AtomicBool,
}

impl Outbound<'_> {
    pub(super) async fn run(
        self,
        mut broker: OwnedReadHalf,
        mut device: OwnedWriteHalf,
        mut own_acks: mpsc::Receiver<Vec<u16>>,
    ) -> io::Result<()> {
        let mut pending = Vec::with_capacity(4096);
        let mut chunk = vec![0u8; READ_CHUNK];
        loop {
            tokio::select! {
                read = broker.read(&mut chunk) => {
                    let read = read?;
                    if read == 0 {
                        return Ok(());
                    }
                    pending.extend_from_slice(&chunk[..read]);
                    let packets = packet::complete(&pending).map_err(invalid)?;
                    let complete: usize = packets.iter().map(|p| p.len()).sum();
                    if packets.first().is_some_and(|p| packet::connack_accepts(p)) {
                        self.accepted.store(true, Ordering::Release);
                    }
                    let acknowledged: Vec<u16> =
                        packets.into_iter().filter_map(packet::acknowledged).collect();
                    self.write_own_acks(&mut device, Vec::new(), &mut own_acks).await?;
                    // Only whole packets: the device's stream is always
                    // between two, where the front door's own may go.
                    device.write_all(&pending[..complete]).await?;
                    pending.drain(..complete);
                    // Out of `held` only now that they are written: until
                    // then the front door acknowledges nothing itself.
                    let ours: Vec<u16> = acknowledged
                        .into_iter()
                        .filter(|pkid| self.held.lock().remove(pkid))
                        .collect();
                    self.release(&ours);
                }
                Some(first) = own_acks.recv() => {
                    self.write_own_acks(&mut device, first, &mut own_acks).await?;
                }
            }
        }
    }

    /// Writes `pkids` and every acknowledgement of the front door's
    /// waiting behind them.
    pub(super) async fn write_own_acks(
        &self,
        device: &mut OwnedWriteHalf,
        mut pkids: Vec<u16>,
        own_acks: &mut mpsc::Receiver<Vec<u16>>,
    ) -> io::Result<()> {
        while let Ok(more) = own_acks.try_recv() {
            pkids.extend(more);
        }
        if pkids.is_empty() {
            return Ok(());
        }
        let acks: Vec<u8> = pkids.iter().flat_map(|&p| packet::puback(p)).collect();
        device.write_all(&acks).await?;
        self.release(&pkids);
        Ok(())
    }

    /// The device has the acknowledgements of `pkids`: their receipts go.
    pub(super) fn release(&self, pkids: &[u16]) {
        if pkids.is_empty() {
            return;
        }
        let receiver = self.intake.borrow().clone();
        if let Some(receiver) = receiver {
            receiver.lock().release(self.session, pkids);
        }
    }
}
