//! The client commands: `fogbank things`, `reading`, `actuate` talk to a
//! running gateway over its REST API, like any other application.

use std::io::Read;

use anyhow::{Context, bail};
use serde_json::Value as Json;

use crate::auth::ADMIN_TOKEN_FILE;
use crate::cli::{
    ActuateArgs, BackupArgs, ClientArgs, DevicesArgs, DevicesCommand, PeersArgs, ReadingArgs,
    SdArgs, SdCommand, ServiceArgs, ServiceCommand, ThingsArgs, ThingsCommand,
};

struct Client {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
}

impl Client {
    fn new(args: &ClientArgs) -> Self {
        // --token (FOGBANK_TOKEN), else the admin token the server was
        // given (FOGBANK_ADMIN_TOKEN), else the one it created.
        let token = args
            .token
            .clone()
            .or_else(|| {
                std::env::var("FOGBANK_ADMIN_TOKEN")
                    .ok()
                    .filter(|t| !t.is_empty())
            })
            .or_else(|| {
                std::fs::read_to_string(args.data_dir.join(ADMIN_TOKEN_FILE))
                    .ok()
                    .map(|t| t.trim().to_owned())
            });
        Client {
            base: args.url.trim_end_matches('/').to_owned(),
            token,
            agent: ureq::AgentBuilder::new()
                .timeout(std::time::Duration::from_secs(35))
                .build(),
        }
    }

    fn request(&self, method: &str, path: &str) -> ureq::Request {
        let request = self.agent.request(method, &format!("{}{path}", self.base));
        match &self.token {
            Some(token) => request.set("Authorization", &format!("Bearer {token}")),
            None => request,
        }
    }

    /// Sends and turns problem+json answers into readable errors.
    fn call(&self, request: ureq::Request, body: Option<&Json>) -> anyhow::Result<(u16, Json)> {
        let url = request.url().to_owned();
        let result = match body {
            Some(body) => request.send_json(body),
            None => request.call(),
        };
        let response = match result {
            Ok(response) => response,
            Err(ureq::Error::Status(_, response)) => {
                let status = response.status();
                let problem: Json = response.into_json().unwrap_or(Json::Null);
                let detail = problem["detail"].as_str().unwrap_or("no detail");
                bail!(
                    "{status} {}: {detail}",
                    problem["title"].as_str().unwrap_or("error")
                );
            }
            Err(error) => {
                return Err(error).with_context(|| format!("cannot reach the gateway at {url}"));
            }
        };
        let status = response.status();
        let mut text = String::new();
        response
            .into_reader()
            .take(64 << 20)
            .read_to_string(&mut text)?;
        if text.is_empty() {
            return Ok((status, Json::Null));
        }
        Ok((
            status,
            serde_json::from_str(&text)
                .context("the gateway answered something that is not JSON")?,
        ))
    }
}

/// How long a publish may take: compiling CPython on a small board.
const PUBLISH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);

/// Prints a publish's phase on stderr while it lasts: when it changes, and
/// every few seconds.
fn show_progress(client: &Client, name: &str, done: &std::sync::atomic::AtomicBool) {
    use std::sync::atomic::Ordering;
    use std::time::{Duration, Instant};
    let mut said: Option<(String, Instant)> = None;
    let mut next_look = Instant::now() + Duration::from_millis(500);
    while !done.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(50));
        if Instant::now() < next_look {
            continue;
        }
        next_look = Instant::now() + Duration::from_millis(500);
        let Ok((_, publications)) =
            client.call(client.request("GET", "/api/v1/publications"), None)
        else {
            continue;
        };
        let Some(publication) = publications
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["name"] == name)
        else {
            continue;
        };
        let phase = publication["phase"].as_str().unwrap_or("").to_owned();
        let due = said
            .as_ref()
            .is_none_or(|(last, at)| *last != phase || at.elapsed() >= Duration::from_secs(3));
        if due && !done.load(Ordering::Relaxed) {
            eprintln!(
                "{name}: {phase} {:.1} MB, {:.0} s",
                publication["component_bytes"].as_f64().unwrap_or(0.0) / 1e6,
                publication["elapsed_ms"].as_f64().unwrap_or(0.0) / 1e3
            );
            said = Some((phase, Instant::now()));
        }
    }
}

fn encode(value: &str) -> String {
    value.bytes().fold(String::new(), |mut out, b| {
        if b.is_ascii_alphanumeric() || b"-_.~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
        out
    })
}

/// The strings of a JSON array (none if it is not one).
fn strings(value: &Json) -> Vec<&str> {
    value
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Json::as_str)
        .collect()
}

fn print(json: bool, value: &Json, human: impl FnOnce(&Json) -> String) {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(value).unwrap_or_default()
        );
    } else {
        print!("{}", human(value));
    }
}

pub fn things(args: ThingsArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.client);
    match args.show {
        Some(ThingsCommand::Show { id }) => {
            let (_, thing) = client.call(
                client.request("GET", &format!("/api/v1/things/{}", encode(&id))),
                None,
            )?;
            println!("{}", serde_json::to_string_pretty(&thing)?);
        }
        Some(ThingsCommand::Td { id }) => {
            let (_, td) = client.call(
                client.request("GET", &format!("/api/v1/things/{}/td", encode(&id))),
                None,
            )?;
            println!("{}", serde_json::to_string_pretty(&td)?);
        }
        None => {
            let mut request = client.request("GET", "/api/v1/things");
            let filters = [
                ("type", args.semantic_type),
                ("location", args.location),
                ("gateway", args.gateway),
                ("kind", args.kind),
                ("available", args.available.map(|a| a.to_string())),
            ];
            for (name, value) in filters {
                if let Some(value) = value {
                    request = request.query(name, &value);
                }
            }
            let (_, things) = client.call(request, None)?;
            print(args.client.json, &things, |things| {
                let mut out = format!(
                    "{:<48} {:<8} {:<12} {:<5} {:<5} {}\n",
                    "ID", "KIND", "TYPE", "UNIT", "UP", "LOCATION"
                );
                for t in things.as_array().into_iter().flatten() {
                    out += &format!(
                        "{:<48} {:<8} {:<12} {:<5} {:<5} {}\n",
                        t["id"].as_str().unwrap_or(""),
                        t["kind"].as_str().unwrap_or(""),
                        t["type"].as_str().unwrap_or(""),
                        t["unit"].as_str().unwrap_or("-"),
                        if t["available"].as_bool() == Some(true) {
                            "yes"
                        } else {
                            "no"
                        },
                        t["location"].as_str().unwrap_or(""),
                    );
                }
                out
            });
        }
    }
    Ok(())
}

pub fn peers(args: PeersArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.client);
    let (_, peers) = client.call(client.request("GET", "/api/v1/peers"), None)?;
    print(args.client.json, &peers, |peers| {
        let mut out = format!(
            "{:<20} {:<6} {:>7} {:>9}  {}\n",
            "GATEWAY", "STATE", "THINGS", "SEEN(ms)", "ADDRESSES"
        );
        for p in peers.as_array().into_iter().flatten() {
            let addresses = strings(&p["addresses"]);
            out += &format!(
                "{:<20} {:<6} {:>7} {:>9}  {}\n",
                p["gateway"].as_str().unwrap_or(""),
                p["state"].as_str().unwrap_or(""),
                p["things"].as_u64().unwrap_or(0),
                p["last_seen_ms"].as_u64().unwrap_or(0),
                addresses.join(" "),
            );
        }
        out
    });
    Ok(())
}

pub fn service(args: ServiceArgs) -> anyhow::Result<()> {
    use base64::Engine as _;
    let client = Client::new(&args.client);
    let json = args.client.json;
    let path = |name: &str, tail: &str| format!("/api/v1/services/{}{tail}", encode(name));
    let show = |service: &Json| {
        print(json, service, |s| {
            format!(
                "{} {} {}{}\n",
                s["name"].as_str().unwrap_or(""),
                s["version"].as_str().unwrap_or(""),
                s["state"].as_str().unwrap_or(""),
                s["reason"]
                    .as_str()
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default()
            )
        })
    };
    match args.command {
        ServiceCommand::Publish {
            manifest,
            component,
            sign,
        } => {
            let manifest_text = std::fs::read_to_string(&manifest)
                .with_context(|| format!("cannot read {}", manifest.display()))?;
            let bytes = std::fs::read(&component)
                .with_context(|| format!("cannot read {}", component.display()))?;
            let mut body = serde_json::json!({
                "manifest": manifest_text,
                "component": base64::engine::general_purpose::STANDARD.encode(&bytes),
            });
            if let Some(key_file) = sign {
                let key = std::fs::read_to_string(&key_file)
                    .with_context(|| format!("cannot read {}", key_file.display()))?;
                let key = fogbank_services::PublisherKey::from_file_text(&key)
                    .with_context(|| key_file.display().to_string())?;
                let signature = fogbank_services::sign(&key, &manifest_text, &bytes)
                    .with_context(|| manifest.display().to_string())?;
                body["signature"] =
                    serde_json::json!({ "key": signature.key, "value": signature.value });
            }
            // A component with a runtime inside compiles for seconds (a
            // minute on a small board): say how it goes meanwhile.
            let name = fogbank_services::Manifest::parse(&manifest_text)
                .map(|m| m.name)
                .ok();
            let done = std::sync::atomic::AtomicBool::new(false);
            let (status, service) = std::thread::scope(|scope| {
                if let Some(name) = &name {
                    scope.spawn(|| show_progress(&client, name, &done));
                }
                let answer = client.call(
                    client
                        .request("POST", "/api/v1/services")
                        .timeout(PUBLISH_TIMEOUT),
                    Some(&body),
                );
                done.store(true, std::sync::atomic::Ordering::Relaxed);
                answer
            })?;
            if !json {
                print!(
                    "{} ",
                    if status == 201 {
                        "installed"
                    } else {
                        "upgraded"
                    }
                );
            }
            show(&service);
        }
        ServiceCommand::New { name, language, to } => {
            let project = crate::service_dev::new(&name, language, &to)?;
            let project = project.display();
            println!("made {project}");
            println!("build it:   fogbank service build {project}");
            println!(
                "publish it: fogbank service publish {project}/service.toml {project}/{name}.wasm"
            );
        }
        ServiceCommand::Test {
            project,
            readings,
            expect,
        } => crate::service_dev::test(&project, readings, expect, json)?,
        ServiceCommand::Build { project } => {
            let component = crate::service_dev::build(&project)?;
            println!("{}", component.display());
        }
        ServiceCommand::Keygen { to } => {
            let key = fogbank_services::PublisherKey::generate()?;
            crate::auth::write_private(&to, key.to_file_text().trim_end()).with_context(|| {
                format!(
                    "cannot create {} (an existing key is not overwritten)",
                    to.display()
                )
            })?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "key_file": to, "public_key": key.public() })
                );
            } else {
                println!("secret key in {}; keep it to yourself.", to.display());
                println!("public key, for the gateways' [services] trusted_keys:");
                println!("{}", key.public());
            }
        }
        ServiceCommand::List => {
            let (_, services) = client.call(client.request("GET", "/api/v1/services"), None)?;
            print(json, &services, |services| {
                let mut out = format!(
                    "{:<24} {:<10} {:<10} {:<12} {:>8} {:>7} {:>9}  {}\n",
                    "NAME",
                    "VERSION",
                    "STATE",
                    "GATEWAY",
                    "CALLS",
                    "ERRORS",
                    "CPU(ms)",
                    "PLACEMENT"
                );
                for s in services.as_array().into_iter().flatten() {
                    out += &format!(
                        "{:<24} {:<10} {:<10} {:<12} {:>8} {:>7} {:>9.1}  {}\n",
                        s["name"].as_str().unwrap_or(""),
                        s["version"].as_str().unwrap_or(""),
                        s["state"].as_str().unwrap_or(""),
                        s["gateway"].as_str().unwrap_or("-"),
                        s["calls"].as_u64().unwrap_or(0),
                        s["errors"].as_u64().unwrap_or(0),
                        s["cpu_time_ms"].as_f64().unwrap_or(0.0),
                        s["placement"].as_str().unwrap_or(""),
                    );
                }
                out
            });
        }
        ServiceCommand::Show { name } => {
            let (_, service) = client.call(client.request("GET", &path(&name, "")), None)?;
            println!("{}", serde_json::to_string_pretty(&service)?);
        }
        ServiceCommand::Logs { name } => {
            let (_, lines) = client.call(client.request("GET", &path(&name, "/logs")), None)?;
            print(json, &lines, |lines| {
                lines
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|l| {
                        let seconds = l["time"].as_u64().unwrap_or(0) as f64 / 1e6;
                        format!(
                            "{seconds:.3} {:<5} {}\n",
                            l["level"].as_str().unwrap_or(""),
                            l["message"].as_str().unwrap_or("")
                        )
                    })
                    .collect()
            });
        }
        ServiceCommand::Stop { name } => {
            let (_, service) = client.call(client.request("POST", &path(&name, "/stop")), None)?;
            show(&service);
        }
        ServiceCommand::Start { name } => {
            let (_, service) = client.call(client.request("POST", &path(&name, "/start")), None)?;
            show(&service);
        }
        ServiceCommand::Remove { name } => {
            client.call(client.request("DELETE", &path(&name, "")), None)?;
            if !json {
                println!("removed {name}");
            }
        }
    }
    Ok(())
}

fn senml_lines(pack: &Json) -> String {
    let records = pack.as_array().cloned().unwrap_or_default();
    let unit = records
        .first()
        .and_then(|r| r["bu"].as_str())
        .unwrap_or("")
        .to_owned();
    records
        .iter()
        .map(|r| {
            let value = ["v", "vb", "vs", "vd"]
                .iter()
                .find_map(|k| r.get(*k))
                .cloned()
                .unwrap_or(Json::Null);
            format!("{:.6}  {value} {unit}\n", r["t"].as_f64().unwrap_or(0.0))
        })
        .collect()
}

pub fn reading(args: ReadingArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.client);
    let id = encode(&args.id);
    let request = if args.history {
        let mut request = client.request("GET", &format!("/api/v1/things/{id}/readings"));
        for (name, value) in [
            ("from", args.from),
            ("to", args.to),
            ("limit", args.limit.map(|l| l.to_string())),
        ] {
            if let Some(value) = value {
                request = request.query(name, &value);
            }
        }
        request
    } else {
        client.request("GET", &format!("/api/v1/things/{id}/reading"))
    };
    let (_, pack) = client.call(request, None)?;
    print(args.client.json, &pack, senml_lines);
    Ok(())
}

pub fn actuate(args: ActuateArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.client);
    let value: Json =
        serde_json::from_str(&args.value).unwrap_or_else(|_| Json::String(args.value.clone()));
    let mut request = client.request(
        "PUT",
        &format!("/api/v1/things/{}/actuation", encode(&args.id)),
    );
    if let Some(wait) = args.wait {
        request = request.query("wait", &wait.to_string());
    }
    let (status, outcome) = client.call(request, Some(&serde_json::json!({ "value": value })))?;
    print(args.client.json, &outcome, |o| match status {
        202 => format!(
            "command {} is pending; poll /api/v1/commands/{}\n",
            o["id"], o["id"]
        ),
        _ => format!(
            "command {} {}\n",
            o["id"],
            o["state"].as_str().unwrap_or("?")
        ),
    });
    Ok(())
}

/// `fogbank devices move`: starts the move, then follows it to its end.
pub fn devices(args: DevicesArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.client);
    let DevicesCommand::Move {
        device,
        to,
        address,
        port,
        deadline,
    } = args.command;
    let body = match (to, address, port) {
        (Some(gateway), _, _) => {
            serde_json::json!({ "gateway": gateway, "deadline_secs": deadline })
        }
        (None, Some(address), Some(port)) => {
            serde_json::json!({ "address": address, "port": port })
        }
        _ => bail!("give --to GATEWAY, or --address HOST --port PORT"),
    };
    let request = client.request(
        "POST",
        &format!("/api/v1/devices/{}/transport", encode(&device)),
    );
    let (_, mut status) = client.call(request, Some(&body))?;
    let started = std::time::Instant::now();
    while status["state"] == "pending" {
        if started.elapsed() > std::time::Duration::from_secs(deadline + 30) {
            bail!(
                "move {} is still pending; poll /api/v1/moves/{}",
                status["id"],
                status["id"]
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
        let poll = client.request(
            "GET",
            &format!(
                "/api/v1/moves/{}?at={}",
                status["id"],
                status["at"].as_str().unwrap_or_default()
            ),
        );
        status = client.call(poll, None)?.1;
    }
    print(args.client.json, &status, |s| match s["state"].as_str() {
        Some("arrived") => format!(
            "{} moved to {}: {} thing services, {} readings of history handed over\n",
            s["device"].as_str().unwrap_or("?"),
            s["to"].as_str().unwrap_or("?"),
            s["things"].as_array().map_or(0, Vec::len),
            s["readings_handed"],
        ),
        Some("repointed") => format!(
            "{} was told to register at {}\n",
            s["device"].as_str().unwrap_or("?"),
            s["to"].as_str().unwrap_or("?"),
        ),
        _ => format!(
            "{} did not move: {}\n",
            s["device"].as_str().unwrap_or("?"),
            s["reason"].as_str().unwrap_or("?"),
        ),
    });
    if status["state"] == "failed" {
        bail!("the move failed");
    }
    Ok(())
}

/// `fogbank drain` (with where to) and `fogbank undrain` (without): starts
/// it, follows it to its end, and prints what moved and what did not.
pub fn backup(args: BackupArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.client);
    let to = std::path::absolute(&args.to)?;
    let body = serde_json::json!({ "to": to });
    let (_, done) = client.call(client.request("POST", "/api/v1/backup"), Some(&body))?;
    print(args.client.json, &done, |done| {
        format!(
            "backed up to {} ({} bytes, {:.0} ms)\n",
            done["path"].as_str().unwrap_or(""),
            done["bytes"],
            done["took_ms"].as_f64().unwrap_or(0.0)
        )
    });
    Ok(())
}

pub fn drain(args: &ClientArgs, drain: Option<(Option<String>, u64)>) -> anyhow::Result<()> {
    let client = Client::new(args);
    let (path, body, deadline) = match drain {
        Some((to, deadline)) => (
            "/api/v1/drain",
            serde_json::json!({ "to": to, "deadline_secs": deadline }),
            deadline,
        ),
        None => ("/api/v1/undrain", serde_json::json!({}), 30),
    };
    let (_, mut status) = client.call(client.request("POST", path), Some(&body))?;
    let started = std::time::Instant::now();
    while status["state"] == "running" {
        if started.elapsed() > std::time::Duration::from_secs(deadline * 4 + 600) {
            bail!("still running; follow GET /api/v1/drain");
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
        status = client.call(client.request("GET", "/api/v1/drain"), None)?.1;
    }
    print(args.json, &status, |s| {
        // Extended services are listed by their outputs' id prefix.
        let (services, devices): (Vec<&String>, Vec<&String>) = s["moved"]
            .as_object()
            .into_iter()
            .flat_map(|m| m.keys())
            .partition(|name| name.split('.').nth(1) == Some("service"));
        let mut out = format!(
            "{} {}: {} devices moved\n",
            s["kind"].as_str().unwrap_or("drain"),
            s["state"].as_str().unwrap_or("?"),
            devices.len()
        );
        if !services.is_empty() {
            out += &format!("  {} extended services moved\n", services.len());
        }
        for (title, key) in [("did not move", "failed"), ("cannot move", "unmovable")] {
            for (device, why) in s[key].as_object().into_iter().flatten() {
                out += &format!("  {title}: {device}: {}\n", why.as_str().unwrap_or("?"));
            }
        }
        out
    });
    if status["state"] != "done" {
        bail!("not every device moved");
    }
    Ok(())
}

fn requests_table(requests: &Json) -> String {
    let mut out = format!(
        "{:>5} {:<10} {:<8} {:<14} {:<28} {:<5} {:>8} {:>5}\n",
        "ID", "STATE", "OUTCOME", "TYPE", "LOCATION", "ACT", "READINGS", "SVCS"
    );
    let one = [requests.clone()];
    let all = match requests.as_array() {
        Some(all) => all.as_slice(),
        None => &one,
    };
    for r in all {
        out += &format!(
            "{:>5} {:<10} {:<8} {:<14} {:<28} {:<5} {:>8} {:>5}\n",
            r["id"].as_u64().unwrap_or(0),
            r["state"].as_str().unwrap_or(""),
            r["outcome"].as_str().unwrap_or(""),
            r["type"].as_str().unwrap_or(""),
            r["location"].as_str().unwrap_or(""),
            r["action"].as_str().unwrap_or(""),
            r["readings"].as_u64().unwrap_or(0),
            r["assignments"].as_array().map_or(0, Vec::len),
        );
    }
    out
}

/// `fogbank sd ...`: a client of the SD-IoT controller.
pub fn sd(args: SdArgs) -> anyhow::Result<()> {
    let client_args = args.client();
    let client = Client::new(&client_args);
    let json = client_args.json;
    match args.command {
        SdCommand::Request {
            semantic_type,
            location,
            frequency,
            period,
            action,
            value,
            count,
            destination,
            no_partial,
        } => {
            let body = serde_json::json!({
                "type": semantic_type, "location": location, "frequency_s": frequency,
                "period_s": period, "action": action, "value": value, "count": count,
                "destination": destination, "accept_partial": !no_partial,
            });
            let (_, placed) =
                client.call(client.request("POST", "/api/v1/requests"), Some(&body))?;
            print(json, &placed, |p| {
                let waiting = p["waiting_s"]
                    .as_u64()
                    .map_or(String::new(), |w| format!(", the rest in about {w} s"));
                format!(
                    "request {}: {} ({}), {} assigned, {} pending{waiting}\n",
                    p["id"],
                    p["outcome"].as_str().unwrap_or(""),
                    p["state"].as_str().unwrap_or(""),
                    p["assigned"].as_array().map_or(0, Vec::len),
                    p["pending"].as_array().map_or(0, Vec::len),
                )
            });
        }
        SdCommand::Requests { id } => {
            let path = match id {
                Some(id) => format!("/api/v1/requests/{id}"),
                None => "/api/v1/requests".into(),
            };
            let (_, requests) = client.call(client.request("GET", &path), None)?;
            print(json, &requests, requests_table);
        }
        SdCommand::Cancel { id } => {
            let path = format!("/api/v1/requests/{id}");
            let (_, request) = client.call(client.request("DELETE", &path), None)?;
            print(json, &request, requests_table);
        }
        SdCommand::Sdvs { address } => {
            let path = match &address {
                Some(address) => format!("/api/v1/sdvs/{}", encode(address)),
                None => "/api/v1/sdvs".into(),
            };
            let (_, sdvs) = client.call(client.request("GET", &path), None)?;
            print(json, &sdvs, |sdvs| {
                let mut out = format!(
                    "{:<7} {:<5} {:<22} {:<28} {:>4} {:>7} {:>5}\n",
                    "SDVS", "UP", "GATEWAY", "LOCATION", "BUSY", "BATTERY", "SVCS"
                );
                let one = [sdvs.clone()];
                let all = match sdvs.as_array() {
                    Some(all) => all.as_slice(),
                    None => &one,
                };
                for s in all {
                    out += &format!(
                        "{:<7} {:<5} {:<22} {:<28} {:>4} {:>7} {:>5}\n",
                        s["address"].as_str().unwrap_or(""),
                        s["up"].as_bool().unwrap_or(false),
                        s["gateway"].as_str().unwrap_or(""),
                        s["location"].as_str().unwrap_or(""),
                        s["busy"].as_u64().unwrap_or(0),
                        s["battery_percent"]
                            .as_u64()
                            .map_or("mains".to_owned(), |b| format!("{b}%")),
                        s["services"].as_array().map_or(0, Vec::len),
                    );
                }
                out
            });
        }
    }
    Ok(())
}
