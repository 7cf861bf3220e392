//! Hosts of their own on one machine: a network namespace each, joined by
//! a bridge, so that a test can cut the link between two gateways while
//! both go on serving their own clients (`ip netns`, veth pairs and
//! blackhole routes, from Debian's iproute2; needs root or sudo).
//!
//! The bridge carries 10.77.N.0/24 (N from the test process's id); the
//! test itself, in the root namespace, is 10.77.N.1 and reaches every host.

use std::process::Command;

use crate::{as_root, root_command};

fn ip(args: &[&str]) -> bool {
    as_root(&[&["ip"][..], args].concat())
}

/// `ip` for cleaning up what may not be there: quietly.
fn ip_quiet(args: &[&str]) {
    let _ = root_command("ip")
        .args(args)
        .stderr(std::process::Stdio::null())
        .status();
}

fn ip_ok(args: &[&str]) {
    assert!(
        ip(args),
        "ip {} failed (it needs root or sudo)",
        args.join(" ")
    );
}

/// One host of a [`Lan`]: its namespace and address.
#[derive(Debug, Clone)]
pub struct Host {
    pub namespace: String,
    pub ip: String,
}

impl Host {
    /// `program` run inside this host's namespace.
    pub fn command(&self, program: &std::path::Path) -> Command {
        let mut command = root_command("ip");
        command
            .args(["netns", "exec", &self.namespace])
            .arg(program);
        command
    }
}

/// Hosts on one bridge, removed when dropped.
pub struct Lan {
    bridge: String,
    pub hosts: Vec<Host>,
}

impl Lan {
    /// `count` hosts, each its own namespace with loopback up.
    pub fn new(count: usize) -> Lan {
        let tag = std::process::id() % 200 + 20;
        let bridge = format!("fogbr{tag}");
        // Left over by a run that was killed: start clean.
        ip_quiet(&["link", "del", &bridge]);
        ip_ok(&["link", "add", &bridge, "type", "bridge"]);
        ip_ok(&["addr", "add", &format!("10.77.{tag}.1/24"), "dev", &bridge]);
        ip_ok(&["link", "set", &bridge, "up"]);
        let mut lan = Lan {
            bridge,
            hosts: Vec::new(),
        };
        for i in 0..count {
            let namespace = format!("fog{tag}h{i}");
            let (outside, inside) = (format!("fog{tag}o{i}"), format!("fog{tag}i{i}"));
            let address = format!("10.77.{tag}.{}", i + 2);
            ip_quiet(&["netns", "del", &namespace]);
            ip_ok(&["netns", "add", &namespace]);
            ip_ok(&[
                "link", "add", &outside, "type", "veth", "peer", "name", &inside,
            ]);
            ip_ok(&["link", "set", &outside, "master", &lan.bridge, "up"]);
            ip_ok(&["link", "set", &inside, "netns", &namespace]);
            let inside_ns = ["netns", "exec", &namespace, "ip"];
            let run = |args: &[&str]| ip_ok(&[&inside_ns[..], args].concat());
            run(&["addr", "add", &format!("{address}/24"), "dev", &inside]);
            run(&["link", "set", &inside, "up"]);
            run(&["link", "set", "lo", "up"]);
            lan.hosts.push(Host {
                namespace,
                ip: address,
            });
        }
        lan
    }

    /// Drops everything between hosts `a` and `b`, both ways.
    pub fn cut(&self, a: usize, b: usize) {
        self.blackholes("add", a, b);
    }

    /// Undoes [`Lan::cut`].
    pub fn heal(&self, a: usize, b: usize) {
        self.blackholes("del", a, b);
    }

    /// Adds or deletes (`verb`) a blackhole route to each host in the
    /// other's namespace.
    fn blackholes(&self, verb: &str, a: usize, b: usize) {
        for (from, to) in [(a, b), (b, a)] {
            let target = format!("{}/32", self.hosts[to].ip);
            let namespace = &self.hosts[from].namespace;
            ip_ok(&[
                "netns",
                "exec",
                namespace,
                "ip",
                "route",
                verb,
                "blackhole",
                &target,
            ]);
        }
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        for host in &self.hosts {
            ip(&["netns", "del", &host.namespace]);
        }
        ip(&["link", "del", &self.bridge]);
    }
}
