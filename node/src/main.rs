//! The `fogbank` binary: one gateway of a fogbank local cloud.
//!
//! This crate wires the layers together and owns everything an operator or
//! application touches directly: the CLI, the config file, the REST API.
//! It contains no protocol or storage logic of its own.

mod api;
mod auth;
mod cli;
mod client;
mod coap;
mod config;
mod config_check;
mod controller;
mod dashboard;
mod halt;
mod heap;
mod logging;
mod manual;
mod metrics;
mod notify;
mod reload;
mod restore;
mod server;
mod service_dev;

use clap::Parser;

use cli::{Cli, Command, ControllerArgs, RunArgs};
use config::Config;

fn run(args: RunArgs) -> anyhow::Result<()> {
    let (mut config, key_file_given) = effective_config(args.clone())?;
    logging::init(&config.log);
    config.validate()?;
    let admin_token = env_admin_token()?;
    let cluster_key = cluster_key(&config, key_file_given)?;
    let read_config: reload::ReadConfig = Box::new(move || {
        let (mut config, _) = effective_config(args.clone())?;
        config.validate()?;
        let sip_forward = config.sip.agent(&config.gateway_id)?.map(|sip| sip.forward);
        Ok(reload::Reloaded {
            trusted_keys: Some(config.services.trusted_keys()?),
            auth: config.auth,
            log: config.log,
            sip_forward,
        })
    });
    server::run(config, admin_token, cluster_key, read_config)
}

/// The config file with the environment and flags over it, and whether the
/// cluster key file was named by flag or environment.
fn effective_config(args: RunArgs) -> anyhow::Result<(Config, bool)> {
    let mut config = Config::load(args.config.as_deref())?;
    if let Some(id) = args.gateway_id {
        config.gateway_id = id;
    }
    if let Some(dir) = args.data_dir {
        config.data_dir = dir;
    }
    if let Some(http) = args.http {
        config.http.listen = http;
    }
    match args.mqtt {
        Some(cli::Listen::Off) => config.mqtt.mode = "off".into(),
        Some(cli::Listen::At(listen)) => {
            config.mqtt.mode = "embedded".into();
            config.mqtt.listen = listen;
        }
        None => {}
    }
    match args.coap {
        Some(cli::Listen::Off) => config.coap.enabled = false,
        Some(cli::Listen::At(listen)) => {
            config.coap.enabled = true;
            config.coap.listen = listen;
        }
        None => {}
    }
    if let Some(spec) = &args.serial154 {
        let radio = fogbank_serial154::RadioConfig::parse(spec)
            .map_err(|reason| anyhow::anyhow!("--serial154 {spec:?}: {reason}"))?;
        match config.serial154.radios.first_mut() {
            Some(first) => {
                first.path = radio.path;
                first.baud = radio.baud;
            }
            None => config.serial154.radios.push(radio),
        }
    }
    if args.demo {
        config.sim.enabled = true;
    }
    if let Some(listen) = args.p2p {
        config.cloud.listen = listen;
    }
    if !args.peers.is_empty() {
        config.cloud.peers = args.peers.into_iter().filter(|p| !p.is_empty()).collect();
    }
    // A key file named by flag (or FOGBANK_CLUSTER_KEY_FILE) beats
    // FOGBANK_CLUSTER_KEY, which beats a key file named in the config file.
    let key_file_given = args.cluster_key_file.is_some();
    if let Some(file) = args.cluster_key_file {
        config.cloud.cluster_key_file = Some(file);
    }
    if args.no_mdns {
        config.cloud.mdns = false;
    }
    if let Some(controller) = args.smanage_controller {
        config.smanage.controller = controller;
    }
    if let Some(listen) = args.smanage_listen {
        config.smanage.listen = listen;
    }
    if let Some(addresses) = args.smanage_addresses {
        config.smanage.addresses = addresses;
    }
    config.sip.apply_env()?;
    config.services.apply_env();
    Ok((config, key_file_given))
}

fn config_command(command: cli::ConfigCommand) -> anyhow::Result<()> {
    match command {
        cli::ConfigCommand::Check { file, controller } => {
            let text = std::fs::read_to_string(&file)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
            let problems = if controller {
                config_check::check::<controller::ControllerFile>(&text)
            } else {
                config_check::check::<Config>(&text)
            };
            if problems.is_empty() {
                println!("{}: good", file.display());
                return Ok(());
            }
            for problem in &problems {
                eprintln!("{}: {problem}", file.display());
            }
            anyhow::bail!("{}: {} problem(s)", file.display(), problems.len())
        }
        cli::ConfigCommand::Show(args) => {
            let (mut config, _) = effective_config(*args)?;
            print!("{}", config_check::show(&config)?);
            config.validate()?;
            Ok(())
        }
    }
}

/// `FOGBANK_ADMIN_TOKEN`, for the gateway and the controller alike.
fn env_admin_token() -> anyhow::Result<Option<String>> {
    let token = std::env::var("FOGBANK_ADMIN_TOKEN")
        .ok()
        .filter(|t| !t.is_empty());
    if token.as_ref().is_some_and(|t| t.len() < 16) {
        anyhow::bail!("FOGBANK_ADMIN_TOKEN is shorter than 16 characters");
    }
    Ok(token)
}

fn controller(args: ControllerArgs) -> anyhow::Result<()> {
    let config = controller_config(&args)?;
    logging::init(&config.log);
    config.validate()?;
    let admin_token = env_admin_token()?;
    let read_config: reload::ReadConfig = Box::new(move || {
        let config = controller_config(&args)?;
        config.validate()?;
        Ok(reload::Reloaded {
            auth: config.auth,
            log: config.log,
            sip_forward: None,
            trusted_keys: None,
        })
    });
    controller::run(config, admin_token, read_config)
}

/// The controller's config file with the environment and flags over it.
fn controller_config(args: &ControllerArgs) -> anyhow::Result<controller::ControllerFile> {
    let mut config = controller::ControllerFile::load(args.config.as_deref())?;
    if let Some(dir) = &args.data_dir {
        config.data_dir = dir.clone();
    }
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Some(http) = args.http {
        config.http = http;
    }
    Ok(config)
}

/// The cluster key from the key file or FOGBANK_CLUSTER_KEY (hex).
fn cluster_key(
    config: &Config,
    key_file_given: bool,
) -> anyhow::Result<Option<fogbank_cloud::ClusterKey>> {
    use fogbank_cloud as cloud;
    if !key_file_given
        && let Some(hex) = std::env::var("FOGBANK_CLUSTER_KEY")
            .ok()
            .filter(|k| !k.is_empty())
    {
        return Ok(Some(
            cloud::cluster_key_from_hex(&hex)
                .map_err(|e| anyhow::anyhow!("FOGBANK_CLUSTER_KEY: {e}"))?,
        ));
    }
    let Some(path) = &config.cloud.cluster_key_file else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read the cluster key file {}: {e}", path.display()))?;
    Ok(Some(cloud::cluster_key_from_file(&text).map_err(|e| {
        anyhow::anyhow!("cluster key file {}: {e}", path.display())
    })?))
}

fn main() {
    heap::configure();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run(args),
        Command::Things(args) => client::things(args),
        Command::Reading(args) => client::reading(args),
        Command::Actuate(args) => client::actuate(args),
        Command::NewToken => auth::new_secret()
            .map(|t| println!("{t}"))
            .map_err(Into::into),
        Command::ClusterKey => fogbank_cloud::new_cluster_key()
            .map(|key| print!("{key}"))
            .map_err(|e| anyhow::anyhow!("no randomness for a key: {e}")),
        Command::Peers(args) => client::peers(args),
        Command::Service(args) => client::service(args),
        Command::Devices(args) => client::devices(args),
        Command::Drain(args) => client::drain(&args.client, Some((args.to, args.deadline))),
        Command::Undrain(args) => client::drain(&args.client, None),
        Command::Backup(args) => client::backup(args),
        Command::Restore(args) => restore::restore(&args.from, &args.data_dir),
        Command::Config(args) => config_command(args.command),
        Command::Manual { to } => manual::write(&to)
            .map_err(|e| anyhow::anyhow!("cannot write the manual to {}: {e}", to.display()))
            .map(|()| println!("{}", to.display())),
        Command::Controller(args) => controller(args),
        Command::Sd(args) => client::sd(args),
    };
    if let Err(error) = result {
        eprintln!("fogbank: {error:#}");
        std::process::exit(1);
    }
}
