//! Raw content is processed in memory only: it must reach no output, error or log line.

mod common;

use std::io::Write;
use std::process::Stdio;

use serde_json::json;

const CANARY: &str = "CANARY-7f3a9c-do-not-persist";

fn events_with_canaries() -> Vec<String> {
    let mut lines = Vec::new();
    // Valid events of several detectors with the canary in `content`.
    for (i, (det, out)) in [
        ("deberta-toxicity", json!([{"label": "toxic", "score": 0.93}])),
        ("presidio", json!([{"entity_type": "US_SSN", "start": 0, "end": 11, "score": 0.85}])),
        ("llama-guard-3", json!("unsafe\nS1,S10")),
        ("in-house", json!({"secret_leak": 0.9})),
    ]
    .into_iter()
    .enumerate()
    {
        let mut e = common::event_json(&format!("p{i}"), det, out);
        e["content"] = json!(format!("my SSN is 078-05-1120 {CANARY}"));
        lines.push(e.to_string());
    }
    // Detector outputs that quote the text they matched (DLP `quote`): also never copied.
    let mut dlp = common::event_json(
        "p-dlp",
        "google-dlp",
        json!({"result": {"findings": [{"quote": CANARY, "infoType": {"name": "US_SOCIAL_SECURITY_NUMBER"}, "likelihood": "VERY_LIKELY"}]}}),
    );
    dlp["content"] = json!(CANARY);
    lines.push(dlp.to_string());
    // Invalid events whose invalid values are the canary: errors must not quote them.
    let mut bad_content = common::event_json("b1", "presidio", json!([]));
    bad_content["content"] = json!({"nested": CANARY});
    lines.push(bad_content.to_string());
    let mut bad_ts = common::event_json("b2", "presidio", json!([]));
    bad_ts["ts"] = json!(CANARY);
    lines.push(bad_ts.to_string());
    let mut bad_detector = common::event_json("b3", "presidio", json!([]));
    bad_detector["detector"] = json!(CANARY);
    bad_detector["content"] = json!(CANARY);
    lines.push(bad_detector.to_string());
    lines.push(format!("{{\"content\": \"{CANARY}\", broken"));
    lines
}

#[test]
fn canaries_in_content_appear_in_no_output_error_or_log() {
    let input = events_with_canaries().join("\n");
    for args in [vec!["map"], vec!["map", "--audit"]] {
        let mut child = common::mapper_command()
            .args(&args)
            .env("RUST_LOG", "trace")
            .env("LLAMA_MAPPER_LOG__FORMAT", "json")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stdout.lines().count(), 5, "the five valid events are mapped: {stderr}");
        assert_eq!(stderr.lines().filter(|l| l.contains("\"line\"")).count(), 4, "four rejections: {stderr}");
        assert!(!stdout.contains("CANARY"), "canary in stdout of {args:?}");
        assert!(!stderr.contains("CANARY"), "canary in stderr of {args:?}:\n{stderr}");
        assert!(!stdout.contains("078-05-1120"), "raw text in stdout of {args:?}");
    }
}

#[test]
fn debug_formatting_of_an_event_redacts_content() {
    let mut e = common::event_json("d", "presidio", json!([]));
    e["content"] = json!(CANARY);
    let ev: llama_mapper::contracts::DetectorEvent = serde_json::from_value(e).unwrap();
    let dbg = format!("{ev:?}");
    assert!(!dbg.contains("CANARY"), "{dbg}");
    assert!(dbg.contains("redacted"));
    assert_eq!(ev.content.unwrap().expose(), CANARY, "still available in memory");
}

/// A detector without a pack puts free text where a label belongs (the two
/// reproductions, plus PII as a dict key): none of it reaches the canonical or audit event
/// (lineage, notes), which ClickHouse and the seven-year trail record. A label-shaped unknown
/// label is kept as it is; with `privacy.label_key_file` the text becomes a keyed hash (the
/// same text, the same hash); a key file others can read is refused.
#[test]
fn free_text_where_a_label_belongs_is_never_recorded() {
    let pii = ["078-05-1120", "555-0100", "John Smith", "4111", "jane@example.com"];
    let events = [
        json!("User said my SSN is 078-05-1120 please"),
        json!({"verdict": "unsafe", "reason": "quoted: call me at 555-0100 John Smith"}),
        json!({"card 4111 1111 1111 1111 of jane@example.com": 0.9, "weird_thing_42": 0.8}),
        json!("User said my SSN is 078-05-1120 please"),
    ]
    .iter()
    .enumerate()
    .map(|(i, out)| common::event_json(&format!("ft{i}"), "inhouse-judge", out.clone()).to_string())
    .collect::<Vec<_>>()
    .join("\n");
    let run = |args: &[&str], cfg: Option<&std::path::Path>| {
        let mut cmd = common::mapper_command();
        if let Some(c) = cfg {
            cmd.env("LLAMA_MAPPER_CONFIG", c);
        }
        let mut child =
            cmd.args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        child.stdin.take().unwrap().write_all(events.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    };
    let raw_labels = |stdout: &[u8]| -> Vec<Vec<String>> {
        String::from_utf8_lossy(stdout)
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                v["lineage"].as_array().unwrap().iter().map(|x| x["raw_label"].as_str().unwrap().to_string()).collect()
            })
            .collect()
    };
    for args in [vec!["map"], vec!["map", "--audit"]] {
        let out = run(&args, None);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(stdout.lines().count(), 4, "{stdout}");
        for p in pii {
            assert!(!stdout.contains(p), "{p} recorded by {args:?}:\n{stdout}");
        }
        let labels = raw_labels(&out.stdout);
        assert_eq!(labels[0], ["redacted:38"], "{labels:?}");
        assert!(labels[2].contains(&"weird_thing_42".to_string()), "a label-like label stays: {labels:?}");
    }

    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("label.key");
    std::fs::write(&key, "5a".repeat(32)).unwrap();
    let cfg = dir.path().join("settings.yaml");
    std::fs::write(&cfg, format!("privacy:\n  label_key_file: {}\n", key.display())).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let refused = run(&["map"], Some(&cfg));
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("chmod 600"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = run(&["map", "--audit"], Some(&cfg));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let labels = raw_labels(&out.stdout);
    assert!(labels[0][0].starts_with("h:") && labels[0][0].len() == 18, "{labels:?}");
    assert_eq!(labels[3], labels[0], "the same text, the same hash");
    for p in pii {
        assert!(!String::from_utf8_lossy(&out.stdout).contains(p));
    }
}
