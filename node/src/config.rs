//! The node's configuration: embedded defaults, overridden by a TOML file,
//! overridden by `FOGBANK_*` environment variables and command-line flags
//! (clap resolves those two; see `cli.rs`).
//!
//! `deploy/fogbank.example.toml` documents every key; a test keeps it in
//! step with [`Config::default`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use fogbank_taas::id::sanitize_segment;
use serde::{Deserialize, Serialize};

pub use crate::config_check::Validate;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is invalid: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("invalid setting {key}: {reason}")]
    Invalid { key: &'static str, reason: String },
    #[error("invalid settings:{}", .0.iter().map(|(key, reason)| format!("\n  {key}: {reason}")).collect::<String>())]
    Problems(Vec<(String, String)>),
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// This gateway's id: the first segment of its thing-service ids.
    pub gateway_id: String,
    pub data_dir: PathBuf,
    pub http: HttpConfig,
    pub auth: AuthConfig,
    pub store: StoreConfig,
    pub sim: SimSection,
    pub mqtt: fogbank_mqtt::MqttConfig,
    pub coap: fogbank_coap::CoapConfig,
    pub serial154: fogbank_serial154::Serial154Config,
    pub cloud: CloudSection,
    pub smanage: SmanageSection,
    pub sip: SipSection,
    pub services: ServicesSection,
    pub log: LogConfig,
}

/// `[services]`: what this gateway takes from service publishers.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ServicesSection {
    /// Publisher keys (`ed25519:<hex>`, from `fogbank service keygen`).
    /// Empty: every service is taken; else only services signed by one of
    /// them, at publish and when the local cloud hands one over. A reload
    /// (SIGHUP) applies a change. Give every gateway of a local cloud the
    /// same keys: the placement does not know them, and a gateway that
    /// refuses a service placed on it leaves it running nowhere.
    pub trusted_keys: Vec<String>,
}

impl ServicesSection {
    /// `FOGBANK_TRUSTED_KEYS` (keys separated by commas) over the file.
    pub fn apply_env(&mut self) {
        if let Some(keys) = std::env::var("FOGBANK_TRUSTED_KEYS")
            .ok()
            .filter(|v| !v.trim().is_empty())
        {
            self.trusted_keys = keys.split(',').map(|k| k.trim().to_owned()).collect();
        }
    }

    pub fn trusted_keys(&self) -> Result<fogbank_services::TrustedKeys, ConfigError> {
        fogbank_services::TrustedKeys::parse(&self.trusted_keys).map_err(|e| ConfigError::Invalid {
            key: "services.trusted_keys",
            reason: e.to_string(),
        })
    }
}

/// The gateway as a SIP user agent of an IMS core. Off until a registrar
/// is named.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SipSection {
    /// The registrar (`sip:host[:port]`), or `off`.
    pub registrar: String,
    /// The domain of the addresses of record, `sip:{user}@{domain}`.
    pub domain: String,
    /// The digest username [default: the gateway id].
    pub username: Option<String>,
    pub password: Option<String>,
    /// A file holding the password (its first line).
    pub password_file: Option<PathBuf>,
    /// The UDP socket of the gateway's SIP endpoint.
    pub listen: SocketAddr,
    /// Seconds a binding is asked for.
    pub expires: u64,
    /// `own`: every thing service this gateway owns gets its address of
    /// record; `none`: only the gateway's.
    pub register_things: String,
    /// `udp` or `tcp`, towards the registrar and for the endpoint.
    pub transport: String,
    /// Notifications, publications and forwarded MESSAGEs of one thing
    /// are at least this far apart.
    pub min_interval_ms: u64,
    /// Where each thing's state is PUBLISHed (`sip:host[:port]`), or `off`.
    pub presence_server: String,
    /// IMS identities (`user@domain`) whose MESSAGEs may actuate things.
    pub allow_actuate: Vec<String>,
    /// Readings sent as MESSAGEs to IMS identities.
    pub forward: Vec<SipForward>,
}

/// `[[sip.forward]]`: the readings of the thing services that match
/// (every key given must) go as SenML JSON MESSAGEs to `to`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SipForward {
    /// A semantic type: `temperature`, `alarm`, …
    #[serde(rename = "type")]
    pub semantic_type: Option<String>,
    /// A location prefix: `campus/building-a`.
    pub location: Option<String>,
    /// Thing-service ids; empty for any.
    pub ids: Vec<String>,
    /// IMS identities, `sip:alice@iot.local`.
    pub to: Vec<String>,
}

impl Default for SipSection {
    fn default() -> Self {
        SipSection {
            registrar: "off".into(),
            domain: String::new(),
            username: None,
            password: None,
            password_file: None,
            listen: SocketAddr::from(([0, 0, 0, 0], 5070)),
            expires: 600,
            register_things: "own".into(),
            transport: "udp".into(),
            min_interval_ms: 1000,
            presence_server: "off".into(),
            allow_actuate: Vec::new(),
            forward: Vec::new(),
        }
    }
}

impl SipSection {
    /// The `FOGBANK_SIP_{KEY}` variables over the file.
    pub fn apply_env(&mut self) -> Result<(), ConfigError> {
        let var = |key: &str| {
            std::env::var(format!("FOGBANK_SIP_{key}"))
                .ok()
                .filter(|v| !v.is_empty())
        };
        if let Some(v) = var("REGISTRAR") {
            self.registrar = v;
        }
        if let Some(v) = var("DOMAIN") {
            self.domain = v;
        }
        if let Some(v) = var("USERNAME") {
            self.username = Some(v);
        }
        if let Some(v) = var("PASSWORD") {
            self.password = Some(v);
        }
        if let Some(v) = var("PASSWORD_FILE") {
            self.password_file = Some(v.into());
        }
        if let Some(v) = var("LISTEN") {
            self.listen = v.parse().map_err(|_| ConfigError::Invalid {
                key: "FOGBANK_SIP_LISTEN",
                reason: format!("{v:?} is not an address such as 0.0.0.0:5070"),
            })?;
        }
        if let Some(v) = var("EXPIRES") {
            self.expires = v.parse().map_err(|_| ConfigError::Invalid {
                key: "FOGBANK_SIP_EXPIRES",
                reason: format!("{v:?} is not a number of seconds"),
            })?;
        }
        if let Some(v) = var("REGISTER_THINGS") {
            self.register_things = v;
        }
        if let Some(v) = var("TRANSPORT") {
            self.transport = v;
        }
        if let Some(v) = var("MIN_INTERVAL_MS") {
            self.min_interval_ms = v.parse().map_err(|_| ConfigError::Invalid {
                key: "FOGBANK_SIP_MIN_INTERVAL_MS",
                reason: format!("{v:?} is not a number of milliseconds"),
            })?;
        }
        if let Some(v) = var("PRESENCE_SERVER") {
            self.presence_server = v;
        }
        if let Some(v) = var("ALLOW_ACTUATE") {
            self.allow_actuate = v
                .split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect();
        }
        Ok(())
    }

    /// The agent's settings, or `None` when SIP is off.
    pub fn agent(&self, gateway: &str) -> Result<Option<fogbank_sip::SipConfig>, ConfigError> {
        if self.registrar == "off" || self.registrar.is_empty() {
            return Ok(None);
        }
        let invalid = |key, reason: &str| ConfigError::Invalid {
            key,
            reason: reason.into(),
        };
        if self.domain.is_empty() {
            return Err(invalid(
                "sip.domain",
                "is needed with a registrar (e.g. iot.local)",
            ));
        }
        let register_things = match self.register_things.as_str() {
            "own" => true,
            "none" => false,
            _ => return Err(invalid("sip.register_things", "is own or none")),
        };
        let password = match (&self.password, &self.password_file) {
            (Some(password), _) => password.clone(),
            (None, Some(file)) => std::fs::read_to_string(file)
                .map_err(|source| ConfigError::Read {
                    path: file.clone(),
                    source,
                })?
                .lines()
                .next()
                .unwrap_or_default()
                .to_owned(),
            (None, None) => {
                return Err(invalid(
                    "sip.password",
                    "or sip.password_file is needed with a registrar",
                ));
            }
        };
        if self.expires < 60 {
            return Err(invalid("sip.expires", "must be at least 60 seconds"));
        }
        let transport = match self.transport.as_str() {
            "udp" => fogbank_sip::Transport::Udp,
            "tcp" => fogbank_sip::Transport::Tcp,
            _ => return Err(invalid("sip.transport", "is udp or tcp")),
        };
        let presence_server = match self.presence_server.as_str() {
            "off" | "" => None,
            uri => Some(uri.to_owned()),
        };
        let mut forward = Vec::new();
        for rule in &self.forward {
            if rule.to.is_empty() {
                return Err(invalid("sip.forward.to", "names at least one IMS identity"));
            }
            let ids = rule
                .ids
                .iter()
                .map(|id| {
                    fogbank_taas::ThingId::parse(id)
                        .map_err(|_| invalid("sip.forward.ids", "are thing-service ids"))
                })
                .collect::<Result<_, _>>()?;
            forward.push(fogbank_sip::ForwardRule {
                select: fogbank_taas::Query {
                    semantic_type: rule.semantic_type.clone(),
                    location: rule.location.as_deref().map(fogbank_taas::Location::new),
                    ..Default::default()
                },
                ids,
                to: rule.to.clone(),
            });
        }
        Ok(Some(fogbank_sip::SipConfig {
            registrar: self.registrar.clone(),
            domain: self.domain.clone(),
            username: self.username.clone().unwrap_or_else(|| gateway.to_owned()),
            password,
            listen: self.listen,
            expires: Duration::from_secs(self.expires),
            register_things,
            transport,
            min_interval: Duration::from_millis(self.min_interval_ms),
            presence_server,
            forward,
            actuate: self.allow_actuate.clone(),
        }))
    }
}

/// Federation to an SD-IoT controller over S-MANAGE: one SDVS per device.
/// Off until a controller is named.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SmanageSection {
    /// The controller, `host[:port]` (port 7601 by default), or `off`.
    pub controller: String,
    /// The UDP socket every SDVS of this gateway shares.
    pub listen: SocketAddr,
    /// This gateway's address block, `0x0100-0x01ff`.
    pub addresses: String,
    pub hello_interval_secs: u64,
    pub low_battery_percent: u8,
    /// Configuring instructions one SDVS holds at most.
    pub max_instructions: usize,
}

/// The controller's S-MANAGE port, when `controller` names none.
pub const SMANAGE_CONTROLLER_PORT: u16 = 7601;

impl Default for SmanageSection {
    fn default() -> Self {
        SmanageSection {
            controller: "off".into(),
            listen: SocketAddr::from(([0, 0, 0, 0], 7602)),
            addresses: "0x0100-0x01ff".into(),
            hello_interval_secs: 10,
            low_battery_percent: 20,
            max_instructions: 32,
        }
    }
}

impl SmanageSection {
    /// The agent's settings, or `None` when federation is off.
    pub fn agent(&self) -> Result<Option<fogbank_sdvs::AgentConfig>, ConfigError> {
        if self.controller == "off" || self.controller.is_empty() {
            return Ok(None);
        }
        let invalid = |key, reason: String| ConfigError::Invalid { key, reason };
        let addresses = self
            .addresses
            .parse()
            .map_err(|reason| invalid("smanage.addresses", reason))?;
        // `host:port`, `[v6]:port`, or a bare host that gets the default port.
        let has_port = self
            .controller
            .rsplit_once(':')
            .is_some_and(|(host, port)| {
                port.parse::<u16>().is_ok() && (!host.contains(':') || host.ends_with(']'))
            });
        let controller = if has_port {
            self.controller.clone()
        } else {
            format!("{}:{SMANAGE_CONTROLLER_PORT}", self.controller)
        };
        if self.hello_interval_secs == 0 {
            return Err(invalid(
                "smanage.hello_interval_secs",
                "must be at least 1".into(),
            ));
        }
        if self.low_battery_percent > 100 {
            return Err(invalid(
                "smanage.low_battery_percent",
                "is a percentage, 0-100".into(),
            ));
        }
        if !(1..=255).contains(&self.max_instructions) {
            return Err(invalid("smanage.max_instructions", "must be 1-255".into()));
        }
        Ok(Some(fogbank_sdvs::AgentConfig {
            controller,
            listen: self.listen,
            addresses,
            hello_interval: Duration::from_secs(self.hello_interval_secs),
            low_battery_percent: self.low_battery_percent,
            max_instructions: self.max_instructions,
        }))
    }
}

/// The local cloud (libp2p). It runs only with a cluster key: without one
/// the gateway stands alone.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct CloudSection {
    /// A libp2p multiaddr, or `off`.
    pub listen: String,
    /// Bootstrap peers (multiaddrs, with or without `/p2p/PEER_ID`).
    pub peers: Vec<String>,
    /// Find peers on the LAN by mDNS.
    pub mdns: bool,
    /// A key file in the libp2p `/key/swarm/psk/1.0.0/` format.
    pub cluster_key_file: Option<PathBuf>,
}

impl Default for CloudSection {
    fn default() -> Self {
        CloudSection {
            listen: "/ip4/0.0.0.0/tcp/4001".into(),
            peers: Vec::new(),
            mdns: true,
            cluster_key_file: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    /// Largest request body accepted (SenML ingest), in bytes.
    pub max_body_bytes: usize,
    /// HTTP worker threads; 0 = one per core, at most 4.
    pub workers: usize,
    /// How long `PUT .../actuation` waits for the outcome before answering
    /// 202 with a command id, unless the request says `?wait=`.
    pub actuation_wait_ms: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// A label for logs; never the secret itself.
    pub name: String,
    pub token: String,
    /// `read`, `write` and/or `admin` (admin implies the others).
    pub scopes: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    pub tokens: Vec<TokenConfig>,
    /// An admin token (also `FOGBANK_ADMIN_TOKEN`).
    pub admin_token: Option<String>,
    /// Require a `read` token for GET requests too.
    pub read_requires_token: bool,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// fsync every write: survives power cuts, costs throughput.
    pub sync_writes: bool,
    pub cache_mb: usize,
    /// Delete readings older than this many seconds; 0 keeps them forever.
    pub max_age_secs: u64,
    /// Keep the history under this many megabytes; 0 means no limit.
    pub max_mb: u64,
    /// How often retention runs.
    pub retention_interval_secs: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SimSection {
    /// Run the campus simulator (also `--demo`).
    pub enabled: bool,
    pub interval_ms: u64,
    pub buildings: u8,
    pub floors: u8,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// A tracing filter such as `info` or `info,fogbank_taas=debug`
    /// (`FOGBANK_LOG` overrides it).
    pub filter: String,
    /// `text` or `json`.
    pub format: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            gateway_id: default_gateway_id(),
            data_dir: PathBuf::from("./fogbank-data"),
            http: HttpConfig::default(),
            auth: AuthConfig::default(),
            store: StoreConfig::default(),
            sim: SimSection::default(),
            mqtt: fogbank_mqtt::MqttConfig::default(),
            coap: fogbank_coap::CoapConfig::default(),
            serial154: fogbank_serial154::Serial154Config::default(),
            cloud: CloudSection::default(),
            smanage: SmanageSection::default(),
            sip: SipSection::default(),
            services: ServicesSection::default(),
            log: LogConfig::default(),
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_body_bytes: 1 << 20,
            workers: 0,
            actuation_wait_ms: 2000,
        }
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            sync_writes: false,
            cache_mb: 8,
            max_age_secs: 30 * 24 * 3600,
            max_mb: 0,
            retention_interval_secs: 300,
        }
    }
}

impl Default for SimSection {
    fn default() -> Self {
        let sim = fogbank_sim::SimConfig::default();
        SimSection {
            enabled: false,
            interval_ms: sim.interval_ms,
            buildings: sim.buildings,
            floors: sim.floors,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            // The embedded broker logs every connection at info.
            filter: "info,rumqttd=warn".into(),
            format: "text".into(),
        }
    }
}

/// A TOML file over the defaults, or the defaults without a file.
pub fn load_toml<T: serde::de::DeserializeOwned + Default>(
    path: Option<&Path>,
) -> Result<T, ConfigError> {
    let Some(path) = path else {
        return Ok(T::default());
    };
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    toml::from_str(&text).map_err(|source| ConfigError::Parse {
        path: path.to_owned(),
        source: Box::new(source),
    })
}

/// The host name in id form, or `gateway` if there is none.
pub fn default_gateway_id() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .unwrap_or_default();
    let id = sanitize_segment(raw.trim());
    if id.is_empty() { "gateway".into() } else { id }
}

impl Config {
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        load_toml(path)
    }

    /// Checks what serde cannot, naming every problem; normalises the
    /// gateway id.
    pub fn validate(&mut self) -> Result<(), ConfigError> {
        let sanitized = sanitize_segment(&self.gateway_id);
        if !sanitized.is_empty() && sanitized != self.gateway_id {
            tracing::warn!(given = %self.gateway_id, used = %sanitized, "gateway id sanitised");
            self.gateway_id = sanitized;
        }
        problems_to_result(self.problems())
    }
    pub fn retention(&self) -> fogbank_taas::Retention {
        fogbank_taas::Retention {
            max_age: (self.store.max_age_secs > 0)
                .then(|| Duration::from_secs(self.store.max_age_secs)),
            max_bytes: (self.store.max_mb > 0).then_some(self.store.max_mb << 20),
        }
    }

    pub fn http_workers(&self) -> usize {
        match self.http.workers {
            0 => std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
                .min(4),
            n => n,
        }
    }
}

/// `Err` naming every problem, if there is one.
pub fn problems_to_result(problems: Vec<(String, String)>) -> Result<(), ConfigError> {
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ConfigError::Problems(problems))
    }
}

/// A problem that a section's own check reported as a [`ConfigError`].
fn problem_of(error: ConfigError) -> (String, String) {
    match error {
        ConfigError::Invalid { key, reason } => (key.to_owned(), reason),
        other => (String::new(), other.to_string()),
    }
}

impl Validate for Config {
    fn problems(&self) -> Vec<(String, String)> {
        let mut problems = self.auth.problems();
        let mut problem = |key: &str, reason: String| problems.push((key.to_owned(), reason));
        if sanitize_segment(&self.gateway_id).is_empty() {
            problem("gateway_id", "must not be empty".into());
        }
        if let Some(reason) = log_format_problem(&self.log.format) {
            problem("log.format", reason);
        }
        if let Err(e) = self.mqtt.validate() {
            problem("mqtt", e.to_string());
        }
        if let Err(e) = self.coap.validate() {
            problem("coap", e.to_string());
        }
        if self.cloud.listen != "off"
            && let Err(e) = self.cloud.listen.parse::<fogbank_cloud::Multiaddr>()
        {
            problem(
                "cloud.listen",
                format!("{:?} is not a multiaddr or off: {e}", self.cloud.listen),
            );
        }
        for (index, peer) in self.cloud.peers.iter().enumerate() {
            if let Err(e) = peer.parse::<fogbank_cloud::Multiaddr>() {
                problem(
                    &format!("cloud.peers.{index}"),
                    format!("{peer:?} is not a multiaddr such as /dns4/gw-b.local/tcp/4001: {e}"),
                );
            }
        }
        if self.http.max_body_bytes == 0 {
            problem("http.max_body_bytes", "must be positive".into());
        }
        if let Err(e) = self.smanage.agent() {
            problems.push(problem_of(e));
        }
        if let Err(e) = self.sip.agent(&self.gateway_id) {
            problems.push(problem_of(e));
        }
        if let Err(e) = self.services.trusted_keys() {
            problems.push(problem_of(e));
        }
        problems
    }
}

impl Validate for AuthConfig {
    fn problems(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        let mut problem = |key: &str, reason: String| problems.push((key.to_owned(), reason));
        for (index, token) in self.tokens.iter().enumerate() {
            if token.token.len() < 16 {
                problem(
                    &format!("auth.tokens.{index}.token"),
                    format!("token {:?} is shorter than 16 characters", token.name),
                );
            }
            if let Some(bad) = token
                .scopes
                .iter()
                .find(|s| !matches!(s.as_str(), "read" | "write" | "admin"))
            {
                problem(
                    &format!("auth.tokens.{index}.scopes"),
                    format!(
                        "token {:?} has unknown scope {bad:?} (read, write, admin)",
                        token.name
                    ),
                );
            }
        }
        problems
    }
}

/// Why a `log.format` is not one the node writes, if it is not.
pub fn log_format_problem(format: &str) -> Option<String> {
    (!matches!(format, "text" | "json")).then(|| format!("{format:?} is not text or json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_documents_the_defaults() {
        let example = include_str!("../../deploy/fogbank.example.toml");
        let mut parsed: Config = toml::from_str(example).expect("the example config parses");
        let mut defaults = Config::default();
        // The example shows a literal gateway id instead of the host name.
        parsed.gateway_id = defaults.gateway_id.clone();
        defaults.auth.tokens = parsed.auth.tokens.clone();
        assert_eq!(
            parsed, defaults,
            "deploy/fogbank.example.toml must show every default"
        );
    }

    #[test]
    fn smanage_is_off_by_default_and_checks_its_settings() {
        let mut section = SmanageSection::default();
        assert!(section.agent().unwrap().is_none());
        section.controller = "controller.local".into();
        let agent = section.agent().unwrap().unwrap();
        assert_eq!(agent.controller, "controller.local:7601");
        assert_eq!(agent.addresses.to_string(), "0x0100-0x01ff");
        section.controller = "[::1]:9000".into();
        assert_eq!(section.agent().unwrap().unwrap().controller, "[::1]:9000");
        section.addresses = "0x0000-0x00ff".into();
        assert!(section.agent().is_err());
        section.addresses = "0x0200-0x02ff".into();
        section.max_instructions = 0;
        assert!(section.agent().is_err());
    }

    #[test]
    fn unknown_keys_are_rejected() {
        assert!(toml::from_str::<Config>("[http]\nlisten = \"127.0.0.1:1\"\nlisen = 1\n").is_err());
    }

    #[test]
    fn validation_catches_weak_tokens_and_bad_scopes() {
        let mut c = Config::default();
        c.auth.tokens.push(TokenConfig {
            name: "x".into(),
            token: "short".into(),
            scopes: vec!["write".into()],
        });
        assert!(c.validate().is_err());
        c.auth.tokens[0].token = "0123456789abcdef0123".into();
        c.auth.tokens[0].scopes = vec!["root".into()];
        assert!(c.validate().is_err());
        c.auth.tokens[0].scopes = vec!["write".into()];
        assert!(c.validate().is_ok());
    }

    #[test]
    fn gateway_id_is_sanitised() {
        let mut c = Config {
            gateway_id: "My Gateway".into(),
            ..Config::default()
        };
        c.validate().unwrap();
        assert_eq!(c.gateway_id, "my-gateway");
    }
}
