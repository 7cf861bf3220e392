//! Command-line interface. Every listen address and the data dir has a
//! flag and a `FOGBANK_*` variable; flags win over variables, which win
//! over the config file.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "fogbank",
    version,
    about = "A gateway of a fogbank local cloud of IoT gateways"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway.
    Run(RunArgs),
    /// List thing services of a running gateway (or show one).
    Things(ThingsArgs),
    /// Show the latest reading of a thing service, or its history.
    Reading(ReadingArgs),
    /// Send an actuation command to a thing service.
    Actuate(ActuateArgs),
    /// Print a new random token for the [auth] section of the config.
    NewToken,
    /// Print a new cluster key file for the local cloud:
    /// `fogbank cluster-key > cluster.key`, then give every gateway the file.
    ClusterKey,
    /// List the gateways of the local cloud a running gateway belongs to.
    Peers(PeersArgs),
    /// Manage the extended services (WebAssembly) of a running gateway.
    Service(ServiceArgs),
    /// Move devices between the gateways of the local cloud.
    Devices(DevicesArgs),
    /// Move every device of a running gateway that can move to the other
    /// gateways of its local cloud (before maintenance), and wait until
    /// they arrived; report what could not move.
    Drain(DrainArgs),
    /// Bring back the devices whose home a running gateway is.
    Undrain(UndrainArgs),
    /// Back up a running gateway's store, consistently and without a stop:
    /// every reading acknowledged before the command is in the copy.
    Backup(BackupArgs),
    /// Make a data directory from a backup, for a gateway that is not
    /// running (on this machine or another).
    Restore(RestoreArgs),
    /// Check a config file, or print the config `run` would use.
    Config(ConfigArgs),
    /// Write the man pages and the bash, zsh and fish completions to a
    /// directory (`man/`, `completions/`).
    Manual {
        #[arg(long)]
        to: PathBuf,
    },
    /// Run the SD-IoT controller (S-MANAGE): the gateways' SDVSs, and a
    /// REST interface for applications' requests.
    Controller(ControllerArgs),
    /// Talk to a running SD-IoT controller: place requests, list them and
    /// the SDVSs.
    Sd(SdArgs),
}

#[derive(Debug, Args)]
pub struct ConfigArgs {
    #[command(subcommand)]
    pub command: ConfigCommand,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Check a config file: every problem, each with its line and key.
    /// Exits 1 if there is one.
    Check {
        /// The file (fogbank.toml, or controller.toml with --controller).
        file: PathBuf,
        /// The file is the SD-IoT controller's.
        #[arg(long)]
        controller: bool,
    },
    /// Print the config `fogbank run` would use with the same flags and
    /// FOGBANK_* variables (the file, then the environment and flags over
    /// it) as TOML, tokens and passwords masked; exits 1, naming them, if
    /// it has problems.
    Show(Box<RunArgs>),
}

#[derive(Debug, Args)]
pub struct ControllerArgs {
    /// TOML configuration file (see deploy/controller.example.toml).
    #[arg(long, env = "FOGBANK_CONTROLLER_CONFIG")]
    pub config: Option<PathBuf>,
    /// Data directory [default: ./fogbank-controller-data].
    #[arg(long, env = "FOGBANK_CONTROLLER_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// S-MANAGE (UDP) listen address [default: 0.0.0.0:7601].
    #[arg(long, env = "FOGBANK_CONTROLLER_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// REST listen address [default: 127.0.0.1:8090].
    #[arg(long, env = "FOGBANK_CONTROLLER_HTTP")]
    pub http: Option<SocketAddr>,
}

#[derive(Debug, Args)]
pub struct SdArgs {
    #[command(subcommand)]
    pub command: SdCommand,
    /// Base URL of the controller's REST API.
    #[arg(
        long,
        env = "FOGBANK_CONTROLLER_URL",
        default_value = "http://127.0.0.1:8090",
        global = true
    )]
    pub url: String,
    /// Bearer token [default: FOGBANK_ADMIN_TOKEN, else DATA_DIR/admin.token
    /// when readable].
    #[arg(long, env = "FOGBANK_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,
    /// The controller's data directory, to find admin.token in.
    #[arg(
        long,
        env = "FOGBANK_CONTROLLER_DATA_DIR",
        default_value = "./fogbank-controller-data",
        global = true
    )]
    pub data_dir: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

impl SdArgs {
    pub fn client(&self) -> ClientArgs {
        ClientArgs {
            url: self.url.clone(),
            token: self.token.clone(),
            data_dir: self.data_dir.clone(),
            json: self.json,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum SdCommand {
    /// Place a request on the sensor services of a type under a location.
    Request {
        /// The sensor services' type (temperature, switch, ...).
        #[arg(long = "type")]
        semantic_type: String,
        /// A location prefix (campus/building-a).
        #[arg(long)]
        location: String,
        /// Seconds between two samples (0 = once).
        #[arg(long, default_value_t = 0)]
        frequency: u16,
        /// Seconds the request runs.
        #[arg(long)]
        period: u16,
        /// read, on, off or set.
        #[arg(long, default_value = "read")]
        action: String,
        /// The value of a set.
        #[arg(long)]
        value: Option<i16>,
        /// How many sensor services [default: all that match].
        #[arg(long)]
        count: Option<usize>,
        /// An SDVS address for the data [default: the controller].
        #[arg(long)]
        destination: Option<String>,
        /// Do not take a partial offer: leave it offered.
        #[arg(long)]
        no_partial: bool,
    },
    /// List the requests (or show one).
    Requests {
        /// One request's id.
        id: Option<u16>,
    },
    /// List the SDVSs the controller knows (or show one).
    Sdvs {
        /// One SDVS's address (0x0100).
        address: Option<String>,
    },
    /// Cancel a request.
    Cancel { id: u16 },
}

#[derive(Debug, Args)]
pub struct ServiceArgs {
    #[command(subcommand)]
    pub command: ServiceCommand,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Subcommand)]
pub enum ServiceCommand {
    /// Install a service, or upgrade the one of the same name in place.
    Publish {
        /// The service.toml manifest.
        manifest: PathBuf,
        /// The WebAssembly component (.wasm).
        component: PathBuf,
        /// Sign it with this publisher key (`fogbank service keygen`); a
        /// gateway with `[services] trusted_keys` takes only signed services.
        #[arg(long, value_name = "KEY_FILE")]
        sign: Option<PathBuf>,
    },
    /// Start a service project from a template: a manifest, the source of
    /// a service that publishes the highest temperature it hears, the
    /// world and the language's SDK.
    New {
        /// The service's name (lower case, digits, `-` and `_`).
        name: String,
        #[arg(long = "lang", value_enum)]
        language: Language,
        /// The directory the project's directory is made in.
        #[arg(long, value_name = "DIR", default_value = ".")]
        to: PathBuf,
    },
    /// Build a service project into NAME.wasm beside its manifest, with
    /// its language's toolchain (what is missing is named).
    Build {
        #[arg(default_value = ".")]
        project: PathBuf,
    },
    /// Run a built service against a script of readings, without a
    /// gateway: its outputs, commands, grants tried and logs, the same
    /// every run (the clock is the readings' clock).
    Test {
        #[arg(default_value = ".")]
        project: PathBuf,
        /// A SenML pack of readings [default: PROJECT/test/readings.json].
        #[arg(long, value_name = "FILE")]
        readings: Option<PathBuf>,
        /// The outputs expected, as `--json` prints them under "outputs";
        /// a difference fails the run [default: PROJECT/test/expected-outputs.json
        /// if it exists].
        #[arg(long, value_name = "FILE")]
        expect: Option<PathBuf>,
    },
    /// Make a publisher key pair: the secret key into a new file (0600),
    /// the public key printed, for the gateways' `[services] trusted_keys`.
    Keygen {
        /// Where the secret key goes; an existing file is not overwritten.
        #[arg(long, value_name = "FILE", default_value = "publisher.key")]
        to: PathBuf,
    },
    /// List the services of the local cloud: where each runs, and why.
    List,
    /// Show one service: state, counters, grants, limits.
    Show { name: String },
    /// Print a service's recent log lines.
    Logs { name: String },
    /// Stop a service (it stays stopped across restarts).
    Stop { name: String },
    /// Start a stopped or failed service.
    Start { name: String },
    /// Remove a service with its outputs and its stored state.
    Remove { name: String },
}

/// The languages a service project can be written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Language {
    Rust,
    C,
    Python,
}

#[derive(Debug, Args)]
pub struct DevicesArgs {
    #[command(subcommand)]
    pub command: DevicesCommand,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Subcommand)]
pub enum DevicesCommand {
    /// Tell a device to register at another gateway (its thing services
    /// keep their ids, their history follows) or at any endpoint, and wait
    /// until it did. Any gateway of the local cloud passes it to the owner.
    Move {
        /// `{gateway}.{adapter}.{device}`, or one of its thing-service ids.
        device: String,
        /// The gateway of the local cloud to move it to.
        #[arg(long, conflicts_with_all = ["address", "port"], required_unless_present = "address")]
        to: Option<String>,
        /// Any endpoint's host name or IP address (with --port).
        #[arg(long, requires = "port")]
        address: Option<String>,
        #[arg(long, requires = "address")]
        port: Option<u16>,
        /// Seconds the device may take to register at the gateway.
        #[arg(long, default_value_t = 30)]
        deadline: u64,
    },
}

#[derive(Debug, Args)]
pub struct DrainArgs {
    /// One gateway to take every device [default: all others, by load].
    #[arg(long)]
    pub to: Option<String>,
    /// Seconds each device may take to register at its target.
    #[arg(long, default_value_t = 30)]
    pub deadline: u64,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// A new directory on the gateway's machine for the copy (relative
    /// paths are taken from here).
    #[arg(long)]
    pub to: PathBuf,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The directory `fogbank backup` wrote.
    #[arg(long)]
    pub from: PathBuf,
    /// The data directory to restore into; it must hold no store yet.
    #[arg(long, env = "FOGBANK_DATA_DIR", default_value = "fogbank-data")]
    pub data_dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct UndrainArgs {
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct PeersArgs {
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// TOML configuration file (see deploy/fogbank.example.toml).
    #[arg(long, env = "FOGBANK_CONFIG")]
    pub config: Option<PathBuf>,
    /// This gateway's id [default: the host name].
    #[arg(long, env = "FOGBANK_GATEWAY_ID")]
    pub gateway_id: Option<String>,
    /// Data directory [default: ./fogbank-data].
    #[arg(long, env = "FOGBANK_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// REST listen address [default: 127.0.0.1:8080].
    #[arg(long, env = "FOGBANK_HTTP")]
    pub http: Option<SocketAddr>,
    /// Embedded MQTT broker listen address, or `off` for no MQTT
    /// [default: 0.0.0.0:1883, or what the config file says].
    #[arg(long, env = "FOGBANK_MQTT", value_parser = parse_listen)]
    pub mqtt: Option<Listen>,
    /// CoAP endpoint (UDP) listen address, or `off` for no CoAP
    /// [default: 0.0.0.0:5683, or what the config file says].
    #[arg(long, env = "FOGBANK_COAP", value_parser = parse_listen)]
    pub coap: Option<Listen>,
    /// An IEEE 802.15.4 radio (slip-radio) on a serial port: `PATH[@BAUD]`
    /// [default baud 115200; replaces the first configured radio's port].
    #[arg(long, env = "FOGBANK_SERIAL154", value_name = "PATH[@BAUD]")]
    pub serial154: Option<String>,
    /// Run the campus simulator.
    #[arg(long, env = "FOGBANK_DEMO")]
    pub demo: bool,
    /// Local cloud (libp2p) listen multiaddr, or `off`
    /// [default: /ip4/0.0.0.0/tcp/4001]. The local cloud runs only with a
    /// cluster key.
    #[arg(long, env = "FOGBANK_P2P", value_name = "MULTIADDR|off")]
    pub p2p: Option<String>,
    /// A bootstrap peer of the local cloud, e.g. /dns4/gw-b.local/tcp/4001
    /// (repeatable; FOGBANK_PEERS takes a comma-separated list).
    #[arg(
        long = "peer",
        env = "FOGBANK_PEERS",
        value_delimiter = ',',
        value_name = "MULTIADDR"
    )]
    pub peers: Vec<String>,
    /// The cluster key file (libp2p /key/swarm/psk/1.0.0/ format; make one
    /// with `fogbank cluster-key`). FOGBANK_CLUSTER_KEY may instead hold
    /// the key as 64 hex digits.
    #[arg(long, env = "FOGBANK_CLUSTER_KEY_FILE", value_name = "PATH")]
    pub cluster_key_file: Option<PathBuf>,
    /// Do not look for peers on the LAN by mDNS.
    #[arg(long, env = "FOGBANK_NO_MDNS")]
    pub no_mdns: bool,
    /// The S-MANAGE SD-IoT controller, `host[:port]` (port 7601), or `off`
    /// [default: off].
    #[arg(long, env = "FOGBANK_SMANAGE_CONTROLLER", value_name = "HOST:PORT|off")]
    pub smanage_controller: Option<String>,
    /// The UDP socket this gateway's SDVSs share [default: 0.0.0.0:7602].
    #[arg(long, env = "FOGBANK_SMANAGE_LISTEN")]
    pub smanage_listen: Option<SocketAddr>,
    /// This gateway's S-MANAGE address block [default: 0x0100-0x01ff].
    #[arg(long, env = "FOGBANK_SMANAGE_ADDRESSES", value_name = "FIRST-LAST")]
    pub smanage_addresses: Option<String>,
}

/// The `--mqtt` and `--coap` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listen {
    Off,
    At(SocketAddr),
}

fn parse_listen(raw: &str) -> Result<Listen, String> {
    match raw {
        "off" => Ok(Listen::Off),
        _ => raw
            .parse()
            .map(Listen::At)
            .map_err(|_| format!("{raw:?} is neither an address like 0.0.0.0:1883 nor off")),
    }
}

/// Where a running gateway is, for the client commands.
#[derive(Debug, Args)]
pub struct ClientArgs {
    /// Base URL of the gateway's REST API.
    #[arg(
        long,
        env = "FOGBANK_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub url: String,
    /// Bearer token [default: FOGBANK_ADMIN_TOKEN, else DATA_DIR/admin.token
    /// when readable].
    #[arg(long, env = "FOGBANK_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,
    /// Data directory to find admin.token in.
    #[arg(
        long,
        env = "FOGBANK_DATA_DIR",
        default_value = "./fogbank-data",
        global = true
    )]
    pub data_dir: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ThingsArgs {
    #[command(subcommand)]
    pub show: Option<ThingsCommand>,
    /// Only this semantic type (temperature, switch, …).
    #[arg(long = "type")]
    pub semantic_type: Option<String>,
    /// Only under this location path.
    #[arg(long)]
    pub location: Option<String>,
    /// Only of this gateway.
    #[arg(long)]
    pub gateway: Option<String>,
    /// sensor or actuator.
    #[arg(long)]
    pub kind: Option<String>,
    /// true or false.
    #[arg(long)]
    pub available: Option<bool>,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Subcommand)]
pub enum ThingsCommand {
    /// Show one thing service.
    Show { id: String },
    /// Print a thing service's WoT Thing Description.
    Td { id: String },
}

#[derive(Debug, Args)]
pub struct ReadingArgs {
    pub id: String,
    /// Show history instead of the latest reading.
    #[arg(long)]
    pub history: bool,
    /// History start (Unix seconds or RFC 3339).
    #[arg(long, requires = "history")]
    pub from: Option<String>,
    /// History end (Unix seconds or RFC 3339).
    #[arg(long, requires = "history")]
    pub to: Option<String>,
    /// At most this many readings.
    #[arg(long, requires = "history")]
    pub limit: Option<usize>,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct ActuateArgs {
    pub id: String,
    /// JSON value: true, false, a number or a "string" (bare words are strings).
    pub value: String,
    /// Milliseconds to wait for the outcome.
    #[arg(long)]
    pub wait: Option<u64>,
    #[command(flatten)]
    pub client: ClientArgs,
}
