//! The process's log: text for a terminal or the journal (the default),
//! or one JSON object per line (`log.format = "json"`), on stderr; its
//! filter can change while the process runs (SIGHUP, see `reload.rs`).
//!
//! `FOGBANK_LOG`, when set, beats `log.filter` at the start and at every
//! reload: the environment is the operator's override.

use std::sync::OnceLock;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, fmt, reload};

use crate::config::LogConfig;

static FILTER: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();

/// What the filter could not be set to.
#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    #[error("{filter:?} is not a log filter: {reason}")]
    Invalid { filter: String, reason: String },
    #[error("the log is not set up")]
    NotSetUp,
}

/// Sets up the log once per process; an unusable filter falls back to
/// `info`, said on stderr.
pub fn init(config: &LogConfig) {
    let filter = parse(&effective(&config.filter)).unwrap_or_else(|error| {
        eprintln!("ignoring the log filter: {error}");
        EnvFilter::new("info")
    });
    let (filter, handle) = reload::Layer::new(filter);
    let json = config.format == "json";
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let text_layer = (!json).then(|| fmt::layer().with_writer(std::io::stderr).with_ansi(ansi));
    let json_layer = json.then(|| fmt::layer().json().with_writer(std::io::stderr));
    if tracing_subscriber::registry()
        .with(filter)
        .with(text_layer)
        .with(json_layer)
        .try_init()
        .is_ok()
    {
        let _ = FILTER.set(handle);
    }
}

/// Replaces the filter with `filter` (or `FOGBANK_LOG`); returns the one
/// in force.
pub fn set_filter(filter: &str) -> Result<String, FilterError> {
    let effective = effective(filter);
    let parsed = parse(&effective)?;
    FILTER
        .get()
        .ok_or(FilterError::NotSetUp)?
        .reload(parsed)
        .map_err(|_| FilterError::NotSetUp)?;
    Ok(effective)
}

fn effective(configured: &str) -> String {
    std::env::var("FOGBANK_LOG")
        .ok()
        .filter(|filter| !filter.is_empty())
        .unwrap_or_else(|| configured.to_owned())
}

fn parse(filter: &str) -> Result<EnvFilter, FilterError> {
    EnvFilter::try_new(filter).map_err(|error| FilterError::Invalid {
        filter: filter.to_owned(),
        reason: error.to_string(),
    })
}
