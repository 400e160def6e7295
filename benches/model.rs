//! The model path's throughput on this machine's CPU with the real small model
//! (SmolLM2-135M-Instruct with the committed adapter, merged at load time): distinct unknown
//! labels per second one at a time, and as one batch with 1, 8 and 32 requests in the engine
//! (with how many answers stay equal to the one-at-a-time ones: mistral.rs 0.8.1 changes them
//! when it batches on the CPU), and the decision cache's hit throughput, which is what steady
//! state runs on.
//!
//! Run: `cargo bench --bench model` (after `scripts/install-small-model.sh`); `-- --labels N`.
//! Quality figures come from `mapper model eval`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Instant;

use llama_mapper::config::ModelSettings;
use llama_mapper::dataset::Options;
use llama_mapper::mapping::LabelQuery;
use llama_mapper::model::eval::validation_cases;
use llama_mapper::model::ModelRuntime;

fn main() {
    let n = common::usize_arg("--labels", 64);
    let catalog = common::catalog();
    let queries: Vec<LabelQuery> =
        validation_cases(&catalog, &Options::default(), false, n).into_iter().map(|c| c.query).collect();
    let labels: Vec<String> = catalog.taxonomy.labels().map(|l| l.name.clone()).collect();
    let settings = ModelSettings {
        enabled: true,
        path: Some(common::root().join(".stack/models/smollm2-135m-instruct")),
        adapter: Some(common::root().join("training/adapters/smollm2-135m-mapper-lora")),
        adapter_version: Some("mapper-lora@v0.1.0".into()),
        name: "smollm2-135m-instruct".into(),
        timeout_ms: 3_600_000,
        force_cpu: true,
        ..ModelSettings::default()
    };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    println!(
        "{} distinct unknown labels, {} on CPU ({} cores)",
        queries.len(),
        settings.identity(),
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );

    // Every measurement starts from a fresh runtime, so its cache is empty.
    let load = |in_flight: usize| {
        let m = ModelRuntime::load(&ModelSettings { max_concurrent: in_flight, ..settings.clone() }, labels.clone());
        assert!(m.is_loaded(), "model did not load: run scripts/install-small-model.sh");
        m
    };

    // One at a time: each label waits for the previous answer.
    let m = load(1);
    let t = Instant::now();
    let mut lat = Vec::with_capacity(queries.len());
    let mut alone = Vec::with_capacity(queries.len());
    for q in &queries {
        let t1 = Instant::now();
        let a = rt.block_on(m.decide(std::slice::from_ref(q)));
        alone.push(a[0].as_ref().expect("an answer").label.clone());
        lat.push(t1.elapsed().as_secs_f64());
    }
    let single = queries.len() as f64 / t.elapsed().as_secs_f64();
    lat.sort_by(f64::total_cmp);
    println!(
        "one at a time:            {single:>8.2} labels/s  (latency p50 {:.0} ms, p99 {:.0} ms)",
        lat[lat.len() / 2] * 1e3,
        lat[(lat.len() * 99 / 100).min(lat.len() - 1)] * 1e3
    );

    // Together, as a Kafka batch's unknown labels go: the default (model.max_concurrent 1)
    // queues them for the engine; raising it lets mistral.rs batch them, and the bench
    // counts how many answers then differ from the model's one-at-a-time answers.
    for in_flight in [1usize, 8, 32] {
        let m = load(in_flight);
        let t = Instant::now();
        let (mut answered, mut same) = (0, 0);
        for (part, want) in queries.chunks(32).zip(alone.chunks(32)) {
            for (a, w) in rt.block_on(m.decide(part)).iter().zip(want) {
                // No answer: the engine failed (mistral.rs 0.8.1 can panic in its KV cache
                // with several sequences in flight on the CPU).
                let Some(a) = a else { continue };
                answered += 1;
                same += usize::from(a.label == *w);
            }
        }
        let rate = answered as f64 / t.elapsed().as_secs_f64();
        println!(
            "batch of 32, {in_flight:>2} in flight: {rate:>8.2} labels/s  ({:.1}x one at a time; answered {answered}/{n}, {same} as one at a time)",
            rate / single,
            n = queries.len()
        );
    }

    // Steady state: every label already decided once.
    let rounds = 2_000;
    let t = Instant::now();
    for _ in 0..rounds {
        let a = rt.block_on(m.decide(&queries));
        assert!(a.iter().all(Option::is_some));
    }
    let hits = (rounds * queries.len()) as f64 / t.elapsed().as_secs_f64();
    println!("cache hits:               {hits:>8.0} labels/s");
}
