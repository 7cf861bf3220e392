//! The harness every test and benchmark that runs real processes shares:
//! the `fogbank` binary started on free loopback ports and spoken to over
//! HTTP with an independent client (ureq), the real peers beside it
//! (Mosquitto, socat's pseudo-terminals, the example extended services),
//! several gateways as one local cloud, and the pieces the benchmarks
//! measure with.
//!
//! It knows the gateway only from the outside — flags, variables, HTTP,
//! the wire — and depends on no fogbank crate: a test written with it
//! passes or fails on what a user of the binary would see.

pub mod bench;
pub mod cluster;
pub mod coap;
pub mod controller;
pub mod gateway;
pub mod kamailio;
pub mod mqtt;
pub mod netns;
pub mod process;
pub mod radio;
pub mod services;
pub mod sipp;
pub mod sse;

use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub use cluster::{Member, acquainted, cluster_key, converged, mdns_lan, start_cloud};
pub use controller::{CONTROLLER_TOKEN, Controller};
pub use gateway::{Answer, Gateway, metric_sample};
pub use kamailio::Kamailio;
pub use mqtt::{
    Mosquitto, embedded_gateway, external_gateway, issue_certificates, mosquitto_pub, mqtt_connect,
    mqtt_publish, mqtt_session, mqtt_subscribe, mqtt_subscribe_with, mqtt5_publish,
};
pub use process::LinePeer;
pub use radio::PtyPair;
pub use services::{component, guests, keygen, manifest, publish, publish_example};
pub use sipp::{Sipp, SippRun};
pub use sse::{follow_events, read_events};

/// The `fogbank` binary under test: `FOGBANK_BIN` if set; else the one
/// cargo built for this very run of the node's tests or benches (it names
/// it in `CARGO_BIN_EXE_fogbank`); else — a test of another package, such
/// as the cluster tests — the one in the running test's target directory
/// and profile, brought up to date once per process.
///
/// That update is `cargo test --workspace --no-run`, the build that
/// `cargo test --workspace` does, rather than `cargo build -p fogbank`,
/// which resolves features for the node alone and rebuilt part of the
/// graph each time. Run from inside a test, cargo still finds part of it
/// stale (~30 s), so `scripts/test` names the binary it has built in
/// `FOGBANK_BIN` instead.
pub fn binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        if let Some(path) =
            std::env::var_os("FOGBANK_BIN").or_else(|| std::env::var_os("CARGO_BIN_EXE_fogbank"))
        {
            return PathBuf::from(path);
        }
        let exe = std::env::current_exe().expect("the test knows its own path");
        // target/<profile>/deps/<test>-<hash>
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("a test binary lives in target/<profile>/deps");
        let release = profile_dir
            .file_name()
            .is_some_and(|name| name == "release");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut build = Command::new(cargo);
        build
            .args(["test", "--workspace", "--no-run", "--quiet"])
            // The running test's package directory, read at run time: a path
            // baked in at compile time can name a checkout that is gone.
            .current_dir(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| ".".into()));
        if release {
            build.arg("--release");
        }
        let status = build.status().expect("cargo runs");
        assert!(status.success(), "cargo could not build fogbank");
        profile_dir.join("fogbank")
    })
}

/// Ports handed to tests come from below the kernel's ephemeral range
/// (32768–60999 on Linux), never from it: a port from `bind(:0)` is one
/// the kernel also gives to outgoing connections, so a gateway restarted
/// on "its" port found it taken by some client's connection in the
/// meantime. Each port is handed out once per test process.
const PORTS: std::ops::Range<u16> = 20_000..32_000;

/// The next port of [`PORTS`] that `free` accepts. The walk starts at an
/// offset from the process id, so that test binaries run one after
/// another do not retrace each other's steps.
fn next_port(free: impl Fn(u16) -> bool) -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let span = u32::from(PORTS.end - PORTS.start);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id().wrapping_mul(7919) % span,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    for _ in 0..span {
        let step = NEXT.fetch_add(1, Ordering::Relaxed) % span;
        let port = PORTS.start + step as u16;
        if free(port) {
            return port;
        }
    }
    panic!("no free port left in {PORTS:?}");
}

/// A TCP port nobody holds at the moment, on loopback.
pub fn free_port() -> u16 {
    next_port(|port| TcpListener::bind(("127.0.0.1", port)).is_ok())
}

/// A port free at the moment for both UDP and TCP on loopback (a SIP
/// endpoint listens on both).
pub fn free_udp_tcp_port() -> u16 {
    next_port(|port| {
        UdpSocket::bind(("127.0.0.1", port)).is_ok()
            && TcpListener::bind(("127.0.0.1", port)).is_ok()
    })
}

/// A UDP port nobody holds at the moment, on loopback.
pub fn free_udp_port() -> u16 {
    next_port(|port| UdpSocket::bind(("127.0.0.1", port)).is_ok())
}

/// Waits until something accepts TCP connections on `port` (10 s).
pub fn wait_port(port: u16) {
    wait(
        &format!("something listening on {port}"),
        Duration::from_secs(10),
        Duration::from_millis(20),
        || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
    );
}

/// Checks every `poll` until `check` holds; how long that took. Panics
/// with `what` after `limit`.
pub fn wait(
    what: &str,
    limit: Duration,
    poll: Duration,
    mut check: impl FnMut() -> bool,
) -> Duration {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < limit, "not within {limit:?}: {what}");
        std::thread::sleep(poll);
    }
    start.elapsed()
}

/// [`wait`], polling every 50 ms.
pub fn within(limit: Duration, what: &str, check: impl FnMut() -> bool) -> Duration {
    wait(what, limit, Duration::from_millis(50), check)
}

/// A file of the running test's (or bench's) package, `relative` to its
/// directory. The directory is read at run time: `env!` would bake in the
/// checkout the binary was built in, and a target dir shared between
/// checkouts (CI's cache) keeps binaries whose checkout is gone.
/// `program` as root: itself when the tests run as root, otherwise
/// through `sudo -n` (keeping the environment).
pub fn root_command(program: &str) -> Command {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0"));
    if root {
        Command::new(program)
    } else {
        let mut sudo = Command::new("sudo");
        sudo.args(["-n", "--preserve-env", program]);
        sudo
    }
}

/// Runs `args` as root (see [`root_command`]); whether it succeeded.
pub fn as_root(args: &[&str]) -> bool {
    root_command(args[0])
        .args(&args[1..])
        .status()
        .is_ok_and(|s| s.success())
}

pub fn package_file(relative: &str) -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from("."), PathBuf::from)
        .join(relative)
}

/// The Python with the test peers' packages (`scripts/test` sets it up).
pub fn python() -> String {
    std::env::var("FOGBANK_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Now, in Unix seconds.
pub fn now_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is past 1970")
        .as_secs_f64()
}
