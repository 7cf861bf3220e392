//! Starts a local cloud of real `fogbank` processes on 127.0.0.1: each with
//! its own data dir, HTTP port and libp2p port, mDNS off, every member but
//! the first bootstrapping from the first (the others find each other
//! through its beacons); or, to test discovery itself, with mDNS on and
//! no bootstrap peer. A member can also run on a host of its own, a
//! network namespace of a [`crate::netns::Lan`], for tests that cut links.
//! Built on [`Gateway`].

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::Value as Json;

use crate::netns::Host;
use crate::{Gateway, free_port, within};

/// One gateway of a test cloud.
pub struct Member {
    pub id: String,
    host: Option<Host>,
    pub gateway: Gateway,
    pub p2p_port: u16,
    pub data_dir: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    /// ERROR lines of the runs before the last restart.
    earlier_errors: Vec<String>,
}

impl Member {
    /// Starts a gateway `id` of the cloud that `key_hex` opens, bootstrapping
    /// from `peers` (multiaddrs given with `--peer`).
    pub fn start(
        dir: &std::path::Path,
        id: &str,
        key_hex: &str,
        peers: &[String],
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Member {
        Member::start_on(None, dir, id, key_hex, peers, args, env)
    }

    /// [`Member::start`] on `host`, a network namespace of a
    /// [`crate::netns::Lan`] (or this host's loopback).
    pub fn start_on(
        host: Option<&Host>,
        dir: &std::path::Path,
        id: &str,
        key_hex: &str,
        peers: &[String],
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Member {
        let p2p_port = free_port();
        let ip = host.map_or("127.0.0.1", |h| h.ip.as_str());
        let mut member_args: Vec<String> = vec![
            "--no-mdns".into(),
            "--p2p".into(),
            format!("/ip4/{ip}/tcp/{p2p_port}"),
        ];
        for peer in peers {
            member_args.push("--peer".into());
            member_args.push(peer.clone());
        }
        member_args.extend(args.iter().map(|a| a.to_string()));
        Member::launch_member(host, dir, id, key_hex, p2p_port, member_args, env)
    }

    /// Starts a gateway `id` as the README's LAN instructions do: mDNS on,
    /// no bootstrap peer, listening on every interface (on a port of its
    /// own, so that several share one host). Hold [`mdns_lan`] meanwhile.
    pub fn start_discovering(dir: &std::path::Path, id: &str, key_hex: &str) -> Member {
        let p2p_port = free_port();
        let args = vec!["--p2p".into(), format!("/ip4/0.0.0.0/tcp/{p2p_port}")];
        Member::launch_member(None, dir, id, key_hex, p2p_port, args, &[])
    }

    fn launch_member(
        host: Option<&Host>,
        dir: &std::path::Path,
        id: &str,
        key_hex: &str,
        p2p_port: u16,
        member_args: Vec<String>,
        env: &[(&str, &str)],
    ) -> Member {
        let mut member_env = vec![
            ("FOGBANK_GATEWAY_ID".to_owned(), id.to_owned()),
            ("FOGBANK_CLUSTER_KEY".to_owned(), key_hex.to_owned()),
        ];
        member_env.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let data_dir = dir.join(id);
        let gateway = launch(host, &data_dir, &member_args, &member_env);
        Member {
            id: id.to_owned(),
            host: host.cloned(),
            gateway,
            p2p_port,
            data_dir,
            args: member_args,
            env: member_env,
            earlier_errors: Vec::new(),
        }
    }

    /// This member's libp2p address.
    pub fn address(&self) -> String {
        format!("/ip4/{}/tcp/{}", self.gateway.host, self.p2p_port)
    }

    /// `kill -9`.
    pub fn kill(&mut self) {
        self.gateway.kill9();
    }

    /// Starts again on the same data dir and libp2p port.
    pub fn restart(&mut self) {
        self.earlier_errors.extend(self.gateway.logged_errors());
        self.gateway = launch(self.host.as_ref(), &self.data_dir, &self.args, &self.env);
    }

    /// Every line this member logged at ERROR, over all its restarts.
    pub fn logged_errors(&self) -> Vec<String> {
        let mut errors = self.earlier_errors.clone();
        errors.extend(self.gateway.logged_errors());
        errors
    }

    /// Starts again on the same data dir and libp2p port, with the cluster
    /// key `key_hex` and `args` added to its flags.
    pub fn restart_with(&mut self, key_hex: &str, args: &[&str]) {
        for (name, value) in &mut self.env {
            if name == "FOGBANK_CLUSTER_KEY" {
                *value = key_hex.to_owned();
            }
        }
        self.args.extend(args.iter().map(|a| a.to_string()));
        self.restart();
    }

    /// SIGSTOP (`true`) or SIGCONT (`false`): a partition as the others see it.
    pub fn freeze(&self, frozen: bool) {
        let signal = if frozen { "-STOP" } else { "-CONT" };
        let status = Command::new("kill")
            .args([signal, &self.gateway.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    pub fn get_json(&self, path: &str) -> Json {
        let answer = self.gateway.get(path);
        assert_eq!(
            answer.status,
            200,
            "GET {path} on {}: {}",
            self.id,
            String::from_utf8_lossy(&answer.body)
        );
        answer.json()
    }

    /// The whole catalog this member sees, ordered by id.
    pub fn catalog(&self) -> Vec<Json> {
        self.get_json("/api/v1/things")
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Thing ids this member sees, with `available`.
    pub fn things(&self) -> Vec<(String, bool)> {
        self.catalog()
            .iter()
            .map(|t| {
                (
                    t["id"].as_str().unwrap_or_default().to_owned(),
                    t["available"].as_bool().unwrap_or(false),
                )
            })
            .collect()
    }

    /// `(gateway, state)` of every entry of `/api/v1/peers`.
    pub fn peers(&self) -> Vec<(String, String)> {
        self.get_json("/api/v1/peers")
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| {
                (
                    p["gateway"].as_str().unwrap_or_default().to_owned(),
                    p["state"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    }

    /// One value of this member's `/metrics`.
    pub fn metric(&self, name: &str) -> f64 {
        let text = String::from_utf8(self.gateway.get("/metrics").body).unwrap();
        crate::metric_sample(&text, name)
            .unwrap_or_else(|| panic!("no metric {name} on {}", self.id))
    }

    /// Creates an HTTP device's thing service on this member with one reading.
    pub fn create_thing(&self, device: &str, value: f64) -> String {
        let id = format!("{}.http.{device}.temperature", self.id);
        let answer = self.gateway.post_senml(
            &format!("/api/v1/things/{id}/readings"),
            &serde_json::json!([{ "u": "Cel", "v": value }]),
        );
        assert_eq!(
            answer.status,
            200,
            "{}",
            String::from_utf8_lossy(&answer.body)
        );
        id
    }
}

fn launch(
    host: Option<&Host>,
    data_dir: &std::path::Path,
    args: &[String],
    env: &[(String, String)],
) -> Gateway {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Gateway::start_on(host, data_dir, &args, &env)
}

/// A fresh cluster key as 64 hex digits, from `fogbank cluster-key`.
pub fn cluster_key() -> String {
    let output = Command::new(crate::binary())
        .arg("cluster-key")
        .output()
        .unwrap();
    assert!(output.status.success());
    let file = String::from_utf8(output.stdout).unwrap();
    file.lines().nth(2).expect("a key-file line").to_owned()
}

/// The host's LAN, for tests whose gateways use mDNS: they would find each
/// other's gateways too, so they take turns.
pub fn mdns_lan() -> std::sync::MutexGuard<'static, ()> {
    static LAN: std::sync::Mutex<()> = std::sync::Mutex::new(());
    // A test that failed while holding it leaves nothing behind to guard.
    LAN.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Starts `ids` as one local cloud (the first is everyone's bootstrap
/// peer); `extra` gives each member's own flags and variables.
pub fn start_cloud(
    dir: &std::path::Path,
    key_hex: &str,
    ids: &[&str],
    extra: impl Fn(&str) -> (Vec<String>, Vec<(String, String)>),
) -> Vec<Member> {
    let mut members: Vec<Member> = Vec::new();
    for id in ids {
        let peers: Vec<String> = members.first().map(Member::address).into_iter().collect();
        let (args, env) = extra(id);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        members.push(Member::start(dir, id, key_hex, &peers, &args, &env));
    }
    members
}

/// Waits until every member lists every other as up.
pub fn acquainted(members: &[Member], limit: Duration) -> Duration {
    within(limit, "every member sees every other up", || {
        members.iter().all(|m| {
            let peers = m.peers();
            peers.len() == members.len() && peers[1..].iter().all(|(_, state)| state == "up")
        })
    })
}

/// Waits until every member sees the same catalog with `count` entries.
pub fn converged(members: &[Member], count: usize, limit: Duration) -> Duration {
    within(limit, "every member sees the same catalog", || {
        let first = members[0].catalog();
        first.len() == count && members[1..].iter().all(|m| m.catalog() == first)
    })
}
