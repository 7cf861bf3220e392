//! The example extended services that `scripts/guests` builds, and
//! publishing one to a gateway.

use std::path::PathBuf;

use crate::{Answer, Gateway};

/// The example extended services that `./scripts/guests` built.
pub fn guests() -> PathBuf {
    let dir = std::env::var_os("FOGBANK_GUESTS_DIR")
        .map(PathBuf::from)
        .expect("FOGBANK_GUESTS_DIR names the built example services: run ./scripts/guests");
    assert!(
        dir.join("threshold-alarm.wasm").exists(),
        "no example services in {}: run ./scripts/guests",
        dir.display()
    );
    dir
}

/// An example service's manifest text.
pub fn manifest(name: &str) -> String {
    std::fs::read_to_string(guests().join(format!("{name}.toml"))).unwrap()
}

/// An example service's component.
pub fn component(name: &str) -> Vec<u8> {
    std::fs::read(guests().join(format!("{name}.wasm"))).unwrap()
}

/// Publishes a service with the admin token. The answer may take long: the
/// gateway compiles the component first, and a Python one (CPython inside)
/// takes tens of seconds on a busy test machine; as long as the CLI waits.
pub fn publish(gw: &Gateway, manifest: &str, component: &[u8]) -> Answer {
    let body = serde_json::json!({
        "manifest": manifest,
        "component": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, component),
    });
    gw.write_within(
        std::time::Duration::from_secs(600),
        "POST",
        "/api/v1/services",
        "application/json",
        body.to_string().as_bytes(),
    )
}

/// Publishes the example service `name` as it is built; it must be taken.
pub fn publish_example(gw: &Gateway, name: &str) {
    let answer = publish(gw, &manifest(name), &component(name));
    assert_eq!(
        answer.status,
        201,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
}

/// A publisher key made by `fogbank service keygen`: its file in `dir`
/// and the public key the command printed.
pub fn keygen(dir: &std::path::Path, name: &str) -> (PathBuf, String) {
    let file = dir.join(name);
    let made = std::process::Command::new(crate::binary())
        .args(["service", "keygen", "--to"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
    let public = String::from_utf8(made.stdout).unwrap();
    let public = public.lines().last().unwrap_or_default().trim().to_owned();
    assert!(public.starts_with("ed25519:"), "{public}");
    (file, public)
}
