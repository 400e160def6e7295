//! Shared helpers for the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use llama_mapper::catalog::Catalog;
use llama_mapper::config::Settings;
use llama_mapper::contracts::DetectorEvent;
use llama_mapper::pipeline::Pipeline;
use serde_json::{json, Value};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn catalog_dir() -> PathBuf {
    root().join("pillars-detectors")
}

pub fn settings() -> Settings {
    Settings { catalog_dir: catalog_dir(), ..Settings::default() }
}

pub fn pipeline() -> Pipeline {
    Pipeline::load(&settings()).expect("the shipped catalog loads")
}

pub fn catalog() -> Arc<Catalog> {
    Arc::new(Catalog::load(&catalog_dir()).expect("the shipped catalog loads"))
}

/// A detector event as a detector team would publish it.
pub fn event_json(id: &str, detector: &str, output: Value) -> Value {
    json!({
        "event_id": id,
        "tenant_id": "acme",
        "detector": detector,
        "detector_version": "test",
        "ts": "2025-09-01T12:00:00Z",
        "output": output,
    })
}

pub fn event(id: &str, detector: &str, output: Value) -> DetectorEvent {
    serde_json::from_value(event_json(id, detector, output)).expect("test event deserialises")
}

pub mod kafka;
pub mod stores;

/// The `mapper` binary this build made, or `MAPPER_BIN` when set: the benches run another
/// build's binary with it to measure before and after in one session.
pub fn mapper_bin() -> String {
    std::env::var("MAPPER_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_mapper").to_string())
}

/// `mapper`, run from the repository root (the settings' relative defaults point there), with
/// nothing of the developer's environment: no `LLAMA_MAPPER_*` or `RUST_LOG` variable, and an
/// explicit empty settings file instead of a `./llama-mapper.yaml` that may lie around. A test
/// that needs settings sets `LLAMA_MAPPER_CONFIG` or `LLAMA_MAPPER_*` on the command.
pub fn mapper_command() -> std::process::Command {
    let mut cmd = std::process::Command::new(mapper_bin());
    cmd.current_dir(root());
    for (k, _) in std::env::vars_os() {
        let name = k.to_string_lossy();
        if name.starts_with("LLAMA_MAPPER_") || name == "RUST_LOG" {
            cmd.env_remove(&k);
        }
    }
    cmd.env("LLAMA_MAPPER_CONFIG", root().join("tests/common/no-settings.yaml"));
    cmd
}

pub fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Every real-format example of every pack: (detector, native output), in file order. The
/// realistic mix used by the stream tests and the benchmarks.
pub fn pack_cases() -> Vec<(String, Value)> {
    let mut files: Vec<_> = std::fs::read_dir(root().join("tests/packs")).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let doc: Value = serde_yaml::from_str(&read(&f)).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        let det = doc["detector"].as_str().unwrap().to_string();
        for c in doc["cases"].as_array().unwrap() {
            out.push((det.clone(), c["output"].clone()));
        }
    }
    out
}

/// A bench's `--events N` argument, or `default`.
pub fn events_arg(default: usize) -> usize {
    usize_arg("--events", default)
}

/// `FLAG N` from a bench's command line (`cargo bench --bench X -- FLAG N`), or `default`.
pub fn usize_arg(flag: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1)).and_then(|s| s.parse().ok()).unwrap_or(default)
}
