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
