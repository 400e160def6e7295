//! Mapping throughput for a realistic mix of the 16 detectors: the rules core on one core,
//! then the mapping core as `mapper run` emits (input bytes decoded and schema-checked, mapped,
//! both outputs validated and encoded into their Kafka records) on 1 and 2 threads, split
//! into chunks the way the stream processor splits a batch.
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
use llama_mapper::ingest::dlq::SourceCoords;
use llama_mapper::ingest::Decoder;
use llama_mapper::mapping::Mapper;
use llama_mapper::pipeline::Pipeline;
use llama_mapper::publish::Publisher;
use serde_json::json;

fn main() {
    let n = common::events_arg(200_000);
    let batch = 512;
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mix = common::pack_cases();
    let raw: Vec<serde_json::Value> = (0..n)
        .map(|i| {
            let (det, out) = &mix[i % mix.len()];
            json!({
                "event_id": format!("bench-{i}"), "tenant_id": format!("tenant-{}", i % 7),
                "detector": det, "ts": "2025-09-01T12:00:00Z", "output": out,
                "content": "raw text the detector looked at, held in memory only",
            })
        })
        .collect();
    let events: Vec<DetectorEvent> = raw.iter().map(|v| serde_json::from_value(v.clone()).unwrap()).collect();
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

    // 3. As `mapper run` does it, from the input's bytes to the output records.
    let inputs: Vec<Vec<u8>> = raw.iter().map(|v| serde_json::to_vec(v).unwrap()).collect();
    let decoder = Decoder::new(&pipeline.contracts, &settings);
    let publisher = Publisher::new(&settings);
    let src = SourceCoords { topic: "detector.events.v1".into(), partition: 0, offset: 0 };
    let as_emitted = |chunk: &[Vec<u8>]| -> usize {
        let decoded: Vec<DetectorEvent> = chunk.iter().map(|b| decoder.decode(b).expect("valid input")).collect();
        pipeline
            .map_batch(&decoded)
            .into_iter()
            .map(|m| {
                publisher
                    .records(&m.expect("valid output"), &src)
                    .unwrap()
                    .iter()
                    .map(|r| r.payload.as_ref().unwrap().len())
                    .sum::<usize>()
            })
            .sum()
    };
    for threads in [1, 2] {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        let t = Instant::now();
        let out: usize = pool.install(|| {
            use rayon::prelude::*;
            inputs.par_chunks(2000).map(|batch| batch.par_chunks(128).map(as_emitted).sum::<usize>()).sum()
        });
        std::hint::black_box(out);
        report(&format!("as emitted (bytes in → records), {threads} thread(s)"), n, t.elapsed().as_secs_f64());
    }
}

fn report(what: &str, n: usize, secs: f64) {
    println!("{what:<48} {:>10.0} events/s  ({:.2} µs/event)", n as f64 / secs, secs * 1e6 / n as f64);
}
