//! A service developer's commands: `fogbank service new` writes a ready
//! project from the templates of `extended-services/templates` (the
//! world, the language's SDK and a manifest included, so it builds on its
//! own), and `fogbank service build` builds one with its language's
//! toolchain, naming exactly what is missing when a piece is not there.
//!
//! The toolchains are those `scripts/guests` uses for the examples
//! (extended-services/README.md): componentize-py for Python; clang 19,
//! WASI libc, wit-bindgen and wasm-component-ld for C; Debian's Rust with
//! its standard library's source for Rust.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

use crate::cli::Language;

const WIT: &str = include_str!("../../extended-services/wit/service.wit");
const PYTHON_SDK: &str = include_str!("../../extended-services/guest/python/fogbank.py");
const RUST_SDK: &str = include_str!("../../extended-services/guest/sdk/src/lib.rs");
const C_SDK: &str = include_str!("../../extended-services/guest/c/fogbank.h");

/// A project's files: path and text, `{{name}}` standing for its name.
fn template(language: Language) -> Vec<(&'static str, String)> {
    let t = |text: &str| text.to_owned();
    // Every template's service does the same; so does its test.
    let test = [
        (
            "test/readings.json",
            t(include_str!(
                "../../extended-services/templates/test/readings.json"
            )),
        ),
        (
            "test/expected-outputs.json",
            t(include_str!(
                "../../extended-services/templates/test/expected-outputs.json"
            )),
        ),
    ];
    let files = match language {
        Language::Python => vec![
            (
                "service.toml",
                t(include_str!(
                    "../../extended-services/templates/python/service.toml"
                )),
            ),
            (
                "app.py",
                t(include_str!(
                    "../../extended-services/templates/python/app.py"
                )),
            ),
            ("fogbank.py", t(PYTHON_SDK)),
            ("wit/service.wit", t(WIT)),
        ],
        Language::C => vec![
            (
                "service.toml",
                t(include_str!(
                    "../../extended-services/templates/c/service.toml"
                )),
            ),
            (
                "service.c",
                t(include_str!(
                    "../../extended-services/templates/c/service.c"
                )),
            ),
            ("fogbank.h", t(C_SDK)),
            ("wit/service.wit", t(WIT)),
        ],
        Language::Rust => vec![
            (
                "service.toml",
                t(include_str!(
                    "../../extended-services/templates/rust/service.toml"
                )),
            ),
            (
                "Cargo.toml",
                t(include_str!(
                    "../../extended-services/templates/rust/Cargo.toml"
                )),
            ),
            (
                "src/lib.rs",
                t(include_str!(
                    "../../extended-services/templates/rust/src/lib.rs"
                )),
            ),
            (
                "sdk/Cargo.toml",
                t(include_str!(
                    "../../extended-services/templates/rust/sdk.Cargo.toml"
                )),
            ),
            // In the project the world is beside the SDK's manifest.
            (
                "sdk/src/lib.rs",
                RUST_SDK.replace("path: \"../../wit\"", "path: \"wit\""),
            ),
            ("sdk/wit/service.wit", t(WIT)),
        ],
    };
    files.into_iter().chain(test).collect()
}

/// `fogbank service new NAME --lang L [--to DIR]`: writes DIR/NAME.
pub fn new(name: &str, language: Language, to: &Path) -> anyhow::Result<PathBuf> {
    // The manifest's own rule for names: they are part of output ids.
    let manifest = template(language)
        .into_iter()
        .find(|(path, _)| *path == "service.toml")
        .map(|(_, text)| text.replace("{{name}}", name))
        .unwrap_or_default();
    fogbank_services::Manifest::parse(&manifest)
        .with_context(|| format!("{name:?} cannot name a service"))?;
    let project = to.join(name);
    if project.exists() {
        bail!("{} exists already", project.display());
    }
    for (path, text) in template(language) {
        let file = project.join(path);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&file, text.replace("{{name}}", name))
            .with_context(|| format!("cannot write {}", file.display()))?;
    }
    Ok(project)
}

/// The project's language, from its files.
fn language_of(project: &Path) -> anyhow::Result<Language> {
    if project.join("Cargo.toml").exists() {
        Ok(Language::Rust)
    } else if project.join("app.py").exists() {
        Ok(Language::Python)
    } else if project.join("service.c").exists() {
        Ok(Language::C)
    } else {
        bail!(
            "{} is not a service project: no Cargo.toml, app.py or service.c (fogbank service new makes one)",
            project.display()
        )
    }
}

/// The service's name, from its manifest.
fn name_of(project: &Path) -> anyhow::Result<String> {
    let path = project.join("service.toml");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    Ok(fogbank_services::Manifest::parse(&text)
        .with_context(|| path.display().to_string())?
        .name)
}

/// A program on the PATH or among the tools `scripts/guests` installs.
fn tool(program: &str) -> Option<PathBuf> {
    let tools = std::env::var_os("FOGBANK_TOOLS")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|home| Path::new(&home).join(".cache/fogbank-tools"))
        })
        .map(|dir| dir.join("bin"));
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .chain(tools)
        .map(|dir| dir.join(program))
        .find(|path| path.is_file())
}

/// Every piece of a toolchain that is missing, each with how to get it.
fn missing(pieces: &[(bool, &str)]) -> anyhow::Result<()> {
    let absent: Vec<&str> = pieces
        .iter()
        .filter(|(there, _)| !there)
        .map(|(_, how)| *how)
        .collect();
    if absent.is_empty() {
        return Ok(());
    }
    bail!(
        "the toolchain is not complete:\n  - {}",
        absent.join("\n  - ")
    )
}

fn run(command: &mut Command, what: &str) -> anyhow::Result<()> {
    let status = command
        .status()
        .with_context(|| format!("cannot run {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

/// `fogbank service build [DIR]`: the component as DIR/NAME.wasm.
pub fn build(project: &Path) -> anyhow::Result<PathBuf> {
    let language = language_of(project)?;
    let name = name_of(project)?;
    let out = project.join(format!("{name}.wasm"));
    match language {
        Language::Python => {
            let componentize = tool("componentize-py");
            missing(&[(
                componentize.is_some(),
                "componentize-py (Python 3.10+): pip install componentize-py==0.25.0",
            )])?;
            run(
                Command::new(componentize.unwrap_or_default())
                    .current_dir(project)
                    .args([
                        "-d",
                        "wit",
                        "-w",
                        "service",
                        "componentize",
                        "app",
                        "-p",
                        ".",
                        "-o",
                    ])
                    .arg(&out),
                "componentize-py",
            )?;
        }
        Language::C => {
            let clang = Path::new("/usr/lib/llvm-19/bin/clang");
            let (bindgen, linker) = (tool("wit-bindgen"), tool("wasm-component-ld"));
            missing(&[
                (
                    clang.is_file(),
                    "clang 19 for wasm32: apt-get install clang-19 lld-19 libclang-rt-19-dev-wasm32",
                ),
                (
                    Path::new("/usr/lib/wasm32-wasi/libc.a").is_file(),
                    "WASI libc: apt-get install wasi-libc",
                ),
                (
                    bindgen.is_some(),
                    "wit-bindgen: cargo install --locked wit-bindgen-cli@0.57.1",
                ),
                (
                    linker.is_some(),
                    "wasm-component-ld: cargo install --locked wasm-component-ld@0.5.31",
                ),
            ])?;
            let generated = project.join("target/bindings");
            run(
                Command::new(bindgen.unwrap_or_default())
                    .current_dir(project)
                    .args(["c", "wit", "--world", "service", "--out-dir"])
                    .arg(&generated),
                "wit-bindgen c",
            )?;
            let linker = linker.unwrap_or_default();
            run(
                Command::new(clang)
                    .current_dir(project)
                    .args([
                        "--target=wasm32-wasi",
                        "-mexec-model=reactor",
                        "-O2",
                        "-Wall",
                        "-Werror",
                    ])
                    .arg(format!("-I{}", generated.display()))
                    .arg("-I.")
                    .arg("-L/usr/lib/wasm32-wasi")
                    .arg(format!("-fuse-ld={}", linker.display()))
                    .arg("service.c")
                    .arg(generated.join("service.c"))
                    .arg(generated.join("service_component_type.o"))
                    .arg("-o")
                    .arg(&out),
                "clang",
            )?;
        }
        Language::Rust => {
            let version = Command::new("/usr/bin/rustc")
                .arg("--version")
                .output()
                .ok()
                .and_then(|out| String::from_utf8(out.stdout).ok())
                .and_then(|v| v.split_whitespace().nth(1).map(str::to_owned));
            let std_source = version
                .as_ref()
                .is_some_and(|v| Path::new(&format!("/usr/src/rustc-{v}/library/std")).is_dir());
            let linker = tool("wasm-component-ld");
            missing(&[
                (
                    version.is_some() && Path::new("/usr/bin/cargo").is_file(),
                    "Debian's Rust 1.96 or newer: apt-get install rustc-web cargo-web",
                ),
                (
                    std_source,
                    "the standard library's source, to build it for wasm32: apt-get install rust-web-src",
                ),
                (
                    Path::new("/usr/lib/wasm32-wasi/libc.a").is_file(),
                    "WASI libc: apt-get install wasi-libc",
                ),
                (
                    linker.is_some(),
                    "wasm-component-ld: cargo install --locked wasm-component-ld@0.5.31",
                ),
            ])?;
            // The linker for wasm32-wasip2 is found on the PATH.
            let linker_dir = linker
                .as_deref()
                .and_then(Path::parent)
                .map(Path::to_owned)
                .unwrap_or_default();
            let path = std::env::join_paths(
                std::iter::once(linker_dir).chain(
                    std::env::var_os("PATH")
                        .iter()
                        .flat_map(std::env::split_paths),
                ),
            )?;
            let target_dir = std::env::var_os("CARGO_TARGET_DIR")
                .map_or_else(|| project.join("target"), PathBuf::from);
            run(
                Command::new("/usr/bin/cargo")
                    .current_dir(project)
                    .env("PATH", path)
                    .env("RUSTC", "/usr/bin/rustc")
                    .env("RUSTC_BOOTSTRAP", "1")
                    .env(
                        "RUSTFLAGS",
                        "-C link-self-contained=no -L native=/usr/lib/wasm32-wasi",
                    )
                    .env("CARGO_TARGET_DIR", &target_dir)
                    .args([
                        "build",
                        "--release",
                        "-Zbuild-std=std,panic_abort",
                        "--target",
                        "wasm32-wasip2",
                    ]),
                "cargo build",
            )?;
            let built = target_dir
                .join("wasm32-wasip2/release")
                .join(format!("{}.wasm", name.replace('-', "_")));
            std::fs::copy(&built, &out)
                .with_context(|| format!("cannot copy {} to {}", built.display(), out.display()))?;
        }
    }
    Ok(out)
}

/// `fogbank service test [DIR]`: the harness's report, and whether the
/// outputs are those expected.
pub fn test(
    project: &Path,
    readings: Option<PathBuf>,
    expect: Option<PathBuf>,
    json: bool,
) -> anyhow::Result<()> {
    let name = name_of(project)?;
    let manifest_path = project.join("service.toml");
    let manifest = std::fs::read_to_string(&manifest_path)
        .with_context(|| format!("cannot read {}", manifest_path.display()))?;
    let component_path = project.join(format!("{name}.wasm"));
    let component = std::fs::read(&component_path).with_context(|| {
        format!(
            "cannot read {} (fogbank service build makes it)",
            component_path.display()
        )
    })?;
    let readings = readings.unwrap_or_else(|| project.join("test/readings.json"));
    let script = std::fs::read_to_string(&readings)
        .with_context(|| format!("cannot read {}", readings.display()))?;
    let script = fogbank_services::rehearsal::Script::from_senml(&script)
        .with_context(|| readings.display().to_string())?;
    let report = fogbank_services::rehearsal::rehearse(&manifest, &component, &script)?;

    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", describe(&report));
    }
    if let Some(failure) = &report.failure {
        bail!("{name} failed: {failure}");
    }
    let expect = expect.or_else(|| {
        let default = project.join("test/expected-outputs.json");
        default.exists().then_some(default)
    });
    if let Some(expected_path) = expect {
        let expected: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(&expected_path)
                .with_context(|| format!("cannot read {}", expected_path.display()))?,
        )
        .with_context(|| format!("{} is not JSON", expected_path.display()))?;
        let got = serde_json::to_value(&report.outputs)?;
        if numbers_as_floats(&got) != numbers_as_floats(&expected) {
            bail!(
                "the outputs differ from {}:\nexpected {}\ngot      {}",
                expected_path.display(),
                serde_json::to_string(&expected)?,
                serde_json::to_string(&got)?
            );
        }
        if !json {
            println!("outputs as expected ({})", expected_path.display());
        }
    }
    Ok(())
}

/// The report for a person: times as seconds since the epoch.
fn describe(report: &fogbank_services::rehearsal::Report) -> String {
    use std::fmt::Write;
    let time = |micros: u64| format!("{}.{:06}", micros / 1_000_000, micros % 1_000_000);
    let plain = |value: &serde_json::Value| value.to_string();
    let mut out = format!(
        "{} readings delivered, {} timer ticks\noutputs:\n",
        report.readings, report.ticks
    );
    let json = serde_json::to_value(report).unwrap_or_default();
    for output in json["outputs"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "  {} {} = {}",
            time(output["time"].as_u64().unwrap_or(0)),
            output["output"].as_str().unwrap_or(""),
            plain(&output["value"])
        );
    }
    out += "commands:\n";
    for command in json["commands"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "  {} {} <- {}",
            time(command["time"].as_u64().unwrap_or(0)),
            command["thing"].as_str().unwrap_or(""),
            plain(&command["value"])
        );
    }
    out += "grants tried:\n";
    for attempt in &report.grants_tried {
        let _ = writeln!(
            out,
            "  {} {} {}: {}",
            time(attempt.time),
            attempt.grant,
            attempt.thing,
            if attempt.allowed { "granted" } else { "denied" }
        );
    }
    out += "logs:\n";
    for line in &report.logs {
        let level = serde_json::to_value(line.level).unwrap_or_default();
        let _ = writeln!(
            out,
            "  {} {:<5} {}",
            time(line.time),
            level.as_str().unwrap_or(""),
            line.message
        );
    }
    out
}

/// 22 and 22.0 are the same reading.
fn numbers_as_floats(value: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::Number(n) => n.as_f64().map_or(Value::Null, |f| f.into()),
        Value::Array(items) => Value::Array(items.iter().map(numbers_as_floats).collect()),
        Value::Object(fields) => Value::Object(
            fields
                .iter()
                .map(|(k, v)| (k.clone(), numbers_as_floats(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}
