//! The `mapper` binary as users run it.

mod common;

use std::io::Write;
use std::process::{Output, Stdio};

use serde_json::{json, Value};

fn mapper(args: &[&str], stdin: &str, envs: &[(&str, &str)]) -> Output {
    let mut cmd = common::mapper_command();
    cmd.args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("mapper starts");
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

fn lines(b: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(b).lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect()
}

#[test]
fn validate_config_passes_on_the_shipped_catalog() {
    let out = mapper(&["validate-config"], "", &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("taxonomy 2025.09"));
}

#[test]
fn validate_config_names_file_and_line_of_every_error() {
    let dir = tempfile::tempdir().unwrap();
    for f in ["taxonomy.yaml", "frameworks.yaml", "presidio.yaml"] {
        std::fs::copy(common::catalog_dir().join(f), dir.path().join(f)).unwrap();
    }
    let pack = common::read(&dir.path().join("presidio.yaml"));
    // Break a label on a known line and add an invalid JSONPath.
    let broken = pack.replacen("PII.Identifier.SSN", "PII.Identifier.SSNN", 1);
    let line = broken.lines().position(|l| l.contains("PII.Identifier.SSNN")).unwrap() + 1;
    std::fs::write(dir.path().join("presidio.yaml"), broken).unwrap();
    std::fs::write(
        dir.path().join("bad-path.yaml"),
        "detector: bad-path\nversion: \"1\"\nextract:\n  - select: \"$[?(\"\nmaps: {}\n",
    )
    .unwrap();
    let out = mapper(&["validate-config", "--catalog-dir", dir.path().to_str().unwrap()], "", &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("presidio.yaml:{line}:")), "{err}");
    assert!(err.contains("PII.Identifier.SSNN"), "{err}");
    assert!(err.contains("bad-path.yaml:4:"), "{err}");
    assert!(err.contains("invalid JSONPath"), "{err}");
}

#[test]
fn map_keeps_input_order_and_reports_bad_lines_with_their_number() {
    let good = |id: &str, out: Value| common::event_json(id, "deberta-toxicity", out).to_string();
    let input = [
        good("e1", json!("toxic")),
        "{not json".to_string(),
        good("e2", json!([{"label": "insult", "score": 0.2}])),
        json!({"event_id": "e3", "tenant_id": "acme", "ts": "2025-09-01T12:00:00Z", "output": "x"}).to_string(),
        good("e4", json!([{"label": "threat", "score": 0.9}])),
    ]
    .join("\n");
    let out = mapper(&["map", "--batch-size", "2"], &input, &[]);
    assert_eq!(out.status.code(), Some(1), "some lines were rejected");
    let events = lines(&out.stdout);
    let ids: Vec<&str> = events.iter().map(|e| e["event_id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["e1", "e2", "e4"]);
    assert_eq!(events[0]["taxonomy"], json!(["HARM.SPEECH.Toxicity"]));
    assert_eq!(events[1]["taxonomy"], json!([]), "0.2 is below the threshold");
    assert_eq!(events[1]["scores"]["HARM.SPEECH.Insult"], json!(0.2), "but its score is kept");
    let errors = lines(&out.stderr);
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert_eq!(errors[0]["line"], 2);
    assert_eq!(errors[0]["reason"], "undecodable");
    assert_eq!(errors[1]["line"], 4);
    assert_eq!(errors[1]["reason"], "schema_invalid");
    assert!(errors[1]["error"].as_str().unwrap().contains("detector"), "{errors:?}");
}

#[test]
fn map_audit_prints_controls_per_label() {
    let input =
        common::event_json("a1", "presidio", json!([{"entity_type": "US_SSN", "start": 0, "end": 11, "score": 0.85}]));
    let out = mapper(&["map", "--audit"], &input.to_string(), &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let a = &lines(&out.stdout)[0];
    assert_eq!(a["event_id"], "a1");
    assert_eq!(a["labels"], json!(["PII.Identifier.SSN"]));
    let controls: Vec<&str> =
        a["mappings"][0]["controls"].as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect();
    assert!(controls.iter().any(|c| c.starts_with("SOC2:")), "{controls:?}");
    assert!(controls.iter().any(|c| c.starts_with("GDPR:")), "{controls:?}");
    assert!(a["controls"].as_array().unwrap().contains(&json!("EUAIACT:Art.12")));
    assert_eq!(a["lineage"][0]["raw_label"], "US_SSN");
}

#[test]
fn unknown_labels_and_unknown_detectors_are_mapped_never_dropped() {
    let input = [
        common::event_json("u1", "in-house-pii", json!([{"label": "ssn_number", "score": 0.97}])).to_string(),
        common::event_json("u2", "in-house-pii", json!({"racial_slur_v2": 0.8})).to_string(),
        common::event_json("u3", "deberta-toxicity", json!("brand_new_category")).to_string(),
    ]
    .join("\n");
    let out = mapper(&["map"], &input, &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let ev = lines(&out.stdout);
    assert_eq!(ev[0]["taxonomy"], json!(["PII.Identifier.SSN"]), "alias route");
    assert_eq!(ev[0]["lineage"][0]["route"], "alias");
    assert_eq!(ev[1]["taxonomy"], json!(["OTHER.Unknown"]));
    assert_eq!(ev[1]["confidence"], json!(0.0));
    assert_eq!(ev[1]["provenance"]["route"], "fallback");
    assert_eq!(ev[2]["taxonomy"], json!(["OTHER.Unknown"]));
    assert!(ev[2]["notes"].as_str().unwrap().contains("brand_new_category"));
}

#[test]
fn detectors_add_scaffolds_a_pack_that_lints() {
    let dir = tempfile::tempdir().unwrap();
    for f in ["taxonomy.yaml", "frameworks.yaml"] {
        std::fs::copy(common::catalog_dir().join(f), dir.path().join(f)).unwrap();
    }
    let d = dir.path().to_str().unwrap();
    let out = mapper(&["detectors", "add", "--name", "acme-guard", "--vendor", "Acme", "--catalog-dir", d], "", &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = common::read(&dir.path().join("acme-guard.yaml"));
    for field in ["detector: acme-guard", "version:", "vendor: Acme", "threshold:", "extract:", "maps:"] {
        assert!(text.contains(field), "scaffold lacks {field}");
    }
    let again = mapper(&["detectors", "add", "--name", "acme-guard", "--catalog-dir", d], "", &[]);
    assert!(!again.status.success(), "refuses to overwrite");
    assert!(String::from_utf8_lossy(&again.stderr).contains("acme-guard.yaml already exists"));
    assert_eq!(common::read(&dir.path().join("acme-guard.yaml")), text, "the pack is untouched");
    let list = mapper(&["detectors", "list", "--catalog-dir", d], "", &[]);
    assert!(String::from_utf8_lossy(&list.stdout).contains("acme-guard"));
    let lint = mapper(&["detectors", "lint", "--catalog-dir", d], "", &[]);
    assert!(lint.status.success());
    assert!(String::from_utf8_lossy(&lint.stdout).contains("`maps` is empty"), "lint points out the empty map");
}

#[test]
fn thresholds_set_and_resolve_global_tenant_environment() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("llama-mapper.yaml");
    let c = cfg.to_str().unwrap();
    for args in [
        vec!["set-threshold", "--detector", "presidio", "--threshold", "0.6"],
        vec!["set-threshold", "--detector", "presidio", "--threshold", "0.7", "--tenant", "acme"],
        vec!["set-threshold", "--detector", "presidio", "--threshold", "0.9", "--environment", "prod"],
    ] {
        let mut a = args.clone();
        a.extend(["--config", c]);
        let out = mapper(&a, "", &[]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let before = common::read(&cfg);
    let bad = mapper(&["set-threshold", "--detector", "presidio", "--threshold", "1.5", "--config", c], "", &[]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("threshold must be within [0, 1], got 1.5"));
    let unknown = mapper(&["set-threshold", "--detector", "nope", "--threshold", "0.5", "--config", c], "", &[]);
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no pack for detector 'nope'"));
    assert_eq!(common::read(&cfg), before, "a refused threshold leaves the settings file as it was");

    let row = |args: &[&str]| -> String {
        let mut a = vec!["show-thresholds", "--config", c];
        a.extend(args);
        let out = mapper(&a, "", &[]);
        String::from_utf8_lossy(&out.stdout).lines().find(|l| l.starts_with("presidio ")).unwrap().to_string()
    };
    assert!(row(&[]).contains("0.6") && row(&[]).ends_with("global"), "{}", row(&[]));
    assert!(row(&["--tenant", "acme"]).ends_with("tenant:acme"));
    assert!(row(&["--tenant", "acme", "--environment", "prod"]).ends_with("environment:prod"));
    assert!(row(&["--tenant", "other", "--environment", "dev"]).ends_with("global"));

    // The overrides act on mapping: presidio 0.85 is a hit for others, not for acme in prod.
    let ev = |env: &str, tenant: &str| {
        let mut e = common::event_json(
            "t",
            "presidio",
            json!([{"entity_type": "US_SSN", "start": 0, "end": 1, "score": 0.85}]),
        );
        e["tenant_id"] = json!(tenant);
        e["policy_context"] = json!({"environment": env});
        e.to_string()
    };
    let input = [ev("dev", "other"), ev("prod", "acme"), ev("dev", "acme")].join("\n");
    let out = mapper(&["map", "--config", c], &input, &[]);
    let got: Vec<Value> = lines(&out.stdout).iter().map(|e| e["taxonomy"].clone()).collect();
    assert_eq!(got, [json!(["PII.Identifier.SSN"]), json!([]), json!(["PII.Identifier.SSN"])]);
    let thr: Vec<Value> = lines(&out.stdout).iter().map(|e| e["lineage"][0]["threshold"].clone()).collect();
    assert_eq!(thr, [json!(0.6), json!(0.9), json!(0.7)]);

    // The environment variable beats the file.
    let out = mapper(&["show-thresholds", "--config", c], "", &[("LLAMA_MAPPER_THRESHOLDS__PRESIDIO", "0.55")]);
    assert!(String::from_utf8_lossy(&out.stdout).lines().any(|l| l.starts_with("presidio ") && l.contains("0.55")));
}

#[test]
fn show_config_prints_the_merged_settings() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("s.yaml");
    std::fs::write(&cfg, "log: {level: debug}\nthresholds: {detoxify: 0.8}\n").unwrap();
    let out = mapper(
        &["show-config", "--config", cfg.to_str().unwrap(), "--tenant", "acme"],
        "",
        &[("LLAMA_MAPPER_LOG__FORMAT", "json")],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(s.contains("level: debug"), "{s}");
    assert!(s.contains("format: json"), "{s}");
    assert!(s.contains("detoxify: 0.8"), "{s}");
    assert!(s.lines().any(|l| l.starts_with("detoxify ") && l.contains("0.8")), "{s}");
}

#[test]
fn dataset_build_is_reproducible_and_holds_out_whole_labels() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    for d in [&a, &b] {
        let out = mapper(&["dataset", "build", "--out", d.path().to_str().unwrap()], "", &[]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let read = |d: &tempfile::TempDir, f: &str| std::fs::read_to_string(d.path().join(f)).unwrap();
    assert_eq!(read(&a, "train.jsonl"), read(&b, "train.jsonl"), "same catalog and seed, same dataset");
    let train = lines(read(&a, "train.jsonl").as_bytes());
    let validation = lines(read(&a, "validation.jsonl").as_bytes());
    assert!(train.len() > 1000 && validation.len() > 100, "{} / {}", train.len(), validation.len());
    let pair = |e: &Value| -> (String, String) {
        let i = e["instruction"].as_str().unwrap();
        let (det, raw) = i.split_once("Detector: ").unwrap().1.split_once(", Output: ").unwrap();
        (det.to_string(), raw.to_string())
    };
    // No raw label is on both sides, not even in another spelling: normalised, every
    // validation label is unseen in training for its detector.
    let norm = |s: &str| s.chars().filter(|c| c.is_alphanumeric()).flat_map(char::to_lowercase).collect::<String>();
    let seen: std::collections::HashSet<(String, String)> =
        train.iter().map(pair).map(|(d, r)| (d, norm(&r))).collect();
    let leaked: Vec<_> = validation.iter().map(pair).filter(|(d, r)| seen.contains(&(d.clone(), norm(r)))).collect();
    assert!(leaked.is_empty(), "held-out labels leak into training: {:?}", &leaked[..leaked.len().min(5)]);
    // Every response is the bounded JSON the model is constrained to, naming a real label.
    let taxonomy = common::catalog();
    for e in train.iter().chain(&validation) {
        let r: Value = serde_json::from_str(e["response"].as_str().unwrap()).unwrap();
        assert_eq!(r.as_object().unwrap().len(), 1);
        assert!(taxonomy.taxonomy.contains(r["label"].as_str().unwrap()), "{r}");
    }
    let cov: Value = serde_json::from_str(&read(&a, "coverage.json")).unwrap();
    assert_eq!(cov["labels_without_training_examples"], json!([]), "{cov}");
    assert!(cov["validation_model_only"].as_u64().unwrap() > 0, "the split holds labels the rules cannot place");
}

#[test]
fn a_reader_that_stops_early_ends_mapper_quietly() {
    // `mapper map events.jsonl | head -1`: far more output than a pipe buffers.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("events.jsonl");
    let input: String = (0..20_000)
        .map(|i| common::event_json(&format!("e{i}"), "deberta-toxicity", json!("toxic")).to_string() + "\n")
        .collect();
    std::fs::write(&file, input).unwrap();
    let mut child = common::mapper_command()
        .args(["map", "--input", file.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut first).unwrap();
    assert!(first.contains("\"event_id\":\"e0\""), "{first}");
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(out.status.signal(), Some(libc::SIGPIPE), "ended by SIGPIPE like other Unix tools");
}

#[test]
fn the_shipped_example_settings_load() {
    let example = common::root().join("deploy/llama-mapper.example.yaml");
    let out = mapper(&["show-config", "--config", example.to_str().unwrap()], "", &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(s.contains("max_concurrent: 1"), "{s}");
    // A typo in the example is an error, not a silently ignored key.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, common::read(&example).replace("max_concurrent:", "max_concurent:")).unwrap();
    let out = mapper(&["show-config", "--config", bad.to_str().unwrap()], "", &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("max_concurent"), "{}", String::from_utf8_lossy(&out.stderr));
}

/// Where settings come from, as the README orders them: `--config`, else
/// `LLAMA_MAPPER_CONFIG`, else `./llama-mapper.yaml` when it exists, else the defaults; the
/// `LLAMA_MAPPER_*` variables over whichever file it was.
#[test]
fn settings_come_from_the_flag_the_variable_or_the_working_directory() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, group: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, format!("kafka:\n  group: {group}\n")).unwrap();
        p
    };
    let (env_file, flag_file) = (write("env.yaml", "from-env"), write("flag.yaml", "from-flag"));
    let group = |cwd: &std::path::Path, args: &[&str], envs: &[(&str, &std::ffi::OsStr)]| -> String {
        let mut cmd = common::mapper_command();
        cmd.env_remove("LLAMA_MAPPER_CONFIG").current_dir(cwd).arg("show-config").args(args);
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
        let kafka = text.split("\nkafka:\n").nth(1).unwrap_or_else(|| panic!("{text}"));
        let line = kafka.lines().find(|l| l.trim_start().starts_with("group:")).unwrap();
        line.trim().trim_start_matches("group:").trim().to_string()
    };
    let empty = tempfile::tempdir().unwrap();
    assert_eq!(group(empty.path(), &[], &[]), "llama-mapper", "the defaults without any file");
    write("llama-mapper.yaml", "from-cwd");
    assert_eq!(group(dir.path(), &[], &[]), "from-cwd");
    let var = [("LLAMA_MAPPER_CONFIG", env_file.as_os_str())];
    assert_eq!(group(dir.path(), &[], &var), "from-env");
    let flag = ["--config", flag_file.to_str().unwrap()];
    assert_eq!(group(dir.path(), &flag, &var), "from-flag");
    let over = [("LLAMA_MAPPER_CONFIG", env_file.as_os_str()), ("LLAMA_MAPPER_KAFKA__GROUP", "from-var".as_ref())];
    assert_eq!(group(dir.path(), &flag, &over), "from-var", "the environment over the file");
}

/// `show-config` shows that a secret is set, never its value: ClickHouse's password, the S3
/// secret key and librdkafka's SASL/SSL secrets, from the file or the environment.
#[test]
fn show_config_masks_every_secret() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("s.yaml");
    std::fs::write(
        &cfg,
        "kafka:\n  client:\n    sasl.password: kafka-pw-Zq1\n    ssl.key.password: ssl-pw-Zq2\n    sasl.username: alice\ns3:\n  secret_access_key: s3-secret-Zq3\n  access_key_id: AKIDEXAMPLE\n",
    )
    .unwrap();
    let out = mapper(
        &["show-config", "--config", cfg.to_str().unwrap()],
        "",
        &[("LLAMA_MAPPER_CLICKHOUSE__PASSWORD", "ch-pw-Zq4")],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for secret in ["kafka-pw-Zq1", "ssl-pw-Zq2", "s3-secret-Zq3", "ch-pw-Zq4"] {
        assert!(!text.contains(secret), "{secret} printed:\n{text}");
    }
    assert_eq!(text.matches("<set>").count(), 4, "{text}");
    assert!(text.contains("sasl.username: alice") && text.contains("AKIDEXAMPLE"), "names and ids stay: {text}");
}
