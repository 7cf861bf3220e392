//! systemd's service notifications (sd_notify(3)) without libsystemd: one
//! datagram to `$NOTIFY_SOCKET` per change of state. With `Type=notify`
//! systemd counts the gateway as started only once it serves (READY=1),
//! shows the reload and the stop (RELOADING=1, STOPPING=1), and with
//! `WatchdogSec=` restarts a process whose runtime stopped pinging.
//!
//! Outside systemd there is no socket and every call does nothing.

use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// Where the notifications go, if anywhere.
pub struct Notifier {
    socket: Option<(UnixDatagram, SocketAddr)>,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// From `NOTIFY_SOCKET` (a path, or `@name` in the abstract namespace)
    /// and `WATCHDOG_USEC` (meant for this process if `WATCHDOG_PID` is
    /// unset or names it).
    pub fn from_env() -> Self {
        let socket = std::env::var_os("NOTIFY_SOCKET").and_then(|name| {
            let name = name.to_string_lossy().into_owned();
            let address = match name.strip_prefix('@') {
                Some(abstract_name) => {
                    use std::os::linux::net::SocketAddrExt;
                    SocketAddr::from_abstract_name(abstract_name.as_bytes())
                }
                None => SocketAddr::from_pathname(&name),
            };
            let socket = UnixDatagram::unbound();
            match (address, socket) {
                (Ok(address), Ok(socket)) => Some((socket, address)),
                (Err(error), _) | (_, Err(error)) => {
                    tracing::warn!(%error, socket = %name, "cannot notify systemd");
                    None
                }
            }
        });
        let for_us = std::env::var("WATCHDOG_PID")
            .ok()
            .and_then(|pid| pid.parse::<u32>().ok())
            .is_none_or(|pid| pid == std::process::id());
        let watchdog = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|usec| usec.parse::<u64>().ok())
            .filter(|&usec| usec > 0 && for_us)
            .map(Duration::from_micros);
        Notifier { socket, watchdog }
    }

    /// Sends `state` (`READY=1`, `STATUS=…`, newline-separated).
    pub fn notify(&self, state: &str) {
        if let Some((socket, address)) = &self.socket
            && let Err(error) = socket.send_to_addr(state.as_bytes(), address)
        {
            tracing::warn!(%error, state, "cannot notify systemd");
        }
    }

    /// Pings the watchdog at half its period, for as long as the runtime
    /// that runs this future turns: a runtime stuck long enough is
    /// restarted by systemd. Returns at once without a watchdog.
    pub async fn keep_watchdog_fed(&self) {
        let Some(period) = self.watchdog.filter(|_| self.socket.is_some()) else {
            return;
        };
        let mut tick = actix_rt::time::interval(period / 2);
        loop {
            tick.tick().await;
            self.notify("WATCHDOG=1");
        }
    }
}
