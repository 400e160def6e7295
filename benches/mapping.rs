//! Mapping throughput on one core for a realistic mix of the 16 detectors.
//!
//! The mix is every real-format example in `tests/packs/*.yaml` (vendor-documented outputs of
//! all packs), cycled. Run: `cargo bench --bench mapping` (add `-- --events N` to change size).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

#[path = "../tests/common/mod.rs"]
mod common;

use llama_mapper::audit::audit_event;
use llama_mapper::catalog::Catalog;
use llama_mapper::config::Settings;
use llama_mapper::contracts::DetectorEvent;
use llama_mapper::mapping::Mapper;
use llama_mapper::pipeline::Pipeline;
use serde_json::json;

fn main() {
    let n = common::events_arg(200_000);
    let batch = 512;
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mix = common::pack_cases();
    let events: Vec<DetectorEvent> = (0..n)
        .map(|i| {
            let (det, out) = &mix[i % mix.len()];
            serde_json::from_value(json!({
                "event_id": format!("bench-{i}"), "tenant_id": format!("tenant-{}", i % 7),
                "detector": det, "ts": "2025-09-01T12:00:00Z", "output": out,
                "content": "raw text the detector looked at, held in memory only",
            }))
            .unwrap()
        })
        .collect();
    let settings = Settings { catalog_dir: root.join("pillars-detectors"), ..Settings::default() };
    let catalog = Arc::new(Catalog::load(&settings.catalog_dir).expect("catalog"));
    let mapper = Mapper::new(catalog.clone(), settings.threshold_policy());
    let pipeline = Pipeline::load(&settings).expect("pipeline");
    println!(
        "mix: {} real-format examples from {} detectors, {n} events, batches of {batch}",
        mix.len(),
        catalog.packs.len()
    );

    // 1. Rules only: extraction + pack/alias + canonical + audit event, no serialisation.
    let t = Instant::now();
    let mut labels = 0usize;
    for chunk in events.chunks(batch) {
        for c in mapper.map_rules_only(chunk) {
            let c = c.expect("a realistic event has few labels");
            labels += c.taxonomy.len();
            std::hint::black_box(audit_event(&catalog.frameworks, &c));
        }
    }
    report("mapping core (extract, rules, audit)", n, t.elapsed().as_secs_f64());

    // 2. What the product emits: plus JSON-Schema validation of both outputs and serialisation.
    let t = Instant::now();
    let mut bytes = 0usize;
    for chunk in events.chunks(batch) {
        for m in pipeline.map_batch(chunk) {
            let m = m.expect("valid output");
            bytes +=
                serde_json::to_vec(&m.canonical_json).unwrap().len() + serde_json::to_vec(&m.audit_json).unwrap().len();
        }
    }
    report("emitted (+ schema validation, JSON encoding)", n, t.elapsed().as_secs_f64());
    println!("({labels} hit labels, {:.1} MB of output)", bytes as f64 / 1e6);
}

fn report(what: &str, n: usize, secs: f64) {
    println!("{what:<48} {:>10.0} events/s  ({:.2} µs/event)", n as f64 / secs, secs * 1e6 / n as f64);
}
