//! Dead-letter records: what a rejected input becomes.
//!
//! The DLQ must not become a second, longer-lived copy of raw text. Raw text hides in more
//! places than `content`: detector outputs quote what they matched (DLP `quote`, Bedrock
//! `match`, Lakera payloads), and a malformed event may carry text under any key. So the value
//! of a dead letter is an **allow-list of the envelope** — ids, tenant, detector, timestamps,
//! policy context — parsed from the input when it is JSON; `output`, `content`, `metadata` and
//! any unknown key are dropped (`mapper.fields-dropped` names them). An input that cannot be
//! parsed (undecodable, oversized, Avro) gets no value at all. Every dead letter carries the
//! reason, the payload's size and SHA-256, and the source topic/partition/offset: the original stays in the
//! input topic for that topic's retention, which is where a corrected replay reads it from.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::{RejectReason, Rejected};

/// Where a rejected record came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceCoords {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(&'static str, String)>,
}

/// Envelope fields a dead letter may keep: none of them can hold raw text of any length.
const KEPT: [&str; 8] =
    ["event_id", "tenant_id", "detector", "detector_version", "ts", "request_id", "raw_ref", "policy_context"];
/// Longest kept string: an envelope field is an id, not a paragraph.
const MAX_KEPT_CHARS: usize = 256;

pub fn dead_letter(rejected: &Rejected, payload: &[u8], source: &SourceCoords) -> DeadLetter {
    let mut headers = vec![
        ("mapper.dlq.reason", rejected.reason.as_str().to_string()),
        ("mapper.dlq.error", rejected.detail.clone()),
        ("mapper.source.topic", source.topic.clone()),
        ("mapper.source.partition", source.partition.to_string()),
        ("mapper.source.offset", source.offset.to_string()),
        ("mapper.payload.bytes", payload.len().to_string()),
        // Which input this was, checkable against the original in the input topic without
        // copying it. The payload holds the event's own id and timestamps, so the digest
        // cannot be matched against guesses of its content alone.
        ("mapper.payload.sha256", hex::encode(Sha256::digest(payload))),
    ];
    let parseable = !matches!(rejected.reason, RejectReason::Oversized | RejectReason::Undecodable);
    let value = match parseable.then(|| serde_json::from_slice::<Value>(payload).ok()).flatten() {
        Some(Value::Object(obj)) => {
            let mut kept = Map::new();
            let mut dropped = Vec::new();
            for (k, v) in obj {
                if KEPT.contains(&k.as_str()) && is_short(&v) {
                    kept.insert(k, v);
                } else {
                    dropped.push(k);
                }
            }
            if !dropped.is_empty() {
                dropped.sort();
                headers.push(("mapper.fields-dropped", bounded_list(&dropped)));
            }
            Some(serde_json::to_vec(&Value::Object(kept)).expect("a JSON object serialises"))
        }
        _ => None,
    };
    if value.is_none() {
        headers.push(("mapper.value-omitted", "payload not copied: it may hold raw content".into()));
    }
    DeadLetter { value, headers }
}

/// True when every string inside `v` is short (a `policy_context` is lists of names).
fn is_short(v: &Value) -> bool {
    match v {
        Value::String(s) => s.chars().count() <= MAX_KEPT_CHARS,
        Value::Array(a) => a.len() <= 64 && a.iter().all(is_short),
        Value::Object(o) => o.len() <= 16 && o.iter().all(|(k, v)| k.len() <= 64 && is_short(v)),
        _ => true,
    }
}

/// Names of dropped keys, cut so a hostile key list cannot become a long header.
fn bounded_list(keys: &[String]) -> String {
    let mut out = String::new();
    for k in keys.iter().take(16) {
        if !out.is_empty() {
            out.push(',');
        }
        out.extend(k.chars().take(64));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src() -> SourceCoords {
        SourceCoords { topic: "in".into(), partition: 2, offset: 41 }
    }

    #[test]
    fn schema_invalid_json_keeps_only_the_envelope() {
        let payload = br#"{"event_id":"e","detector":"google-dlp","content":"SECRET TEXT","Content":"SECRET 2",
            "output":{"result":{"findings":[{"quote":"SECRET 3"}]}},"metadata":{"note":"SECRET 4"},"request_id":"r1"}"#;
        let dl = dead_letter(&Rejected::new(RejectReason::SchemaInvalid, "at /: missing tenant_id"), payload, &src());
        let v: Value = serde_json::from_slice(dl.value.as_ref().unwrap()).unwrap();
        assert_eq!(v, serde_json::json!({"event_id": "e", "detector": "google-dlp", "request_id": "r1"}));
        assert!(!String::from_utf8_lossy(dl.value.as_ref().unwrap()).contains("SECRET"));
        let h: std::collections::HashMap<_, _> = dl.headers.into_iter().collect();
        assert!(h.values().all(|v| !v.contains("SECRET")));
        assert_eq!(h["mapper.dlq.reason"], "schema_invalid");
        assert_eq!(h["mapper.source.offset"], "41");
        assert_eq!(h["mapper.fields-dropped"], "Content,content,metadata,output");
    }

    #[test]
    fn a_long_string_in_a_kept_field_is_dropped_too() {
        let payload = format!(r#"{{"event_id":"{}"}}"#, "x".repeat(300));
        let dl = dead_letter(&Rejected::new(RejectReason::SchemaInvalid, "too long"), payload.as_bytes(), &src());
        assert_eq!(dl.value.as_deref(), Some(&b"{}"[..]));
    }

    #[test]
    fn undecodable_bytes_are_not_copied() {
        let payload = b"{\"content\": \"SECRET TEXT\", broken";
        let dl = dead_letter(&Rejected::new(RejectReason::Undecodable, "not JSON"), payload, &src());
        assert!(dl.value.is_none());
        assert!(dl.headers.iter().all(|(_, v)| !v.contains("SECRET")));
        assert!(dl.headers.iter().any(|(k, _)| *k == "mapper.value-omitted"));
    }
}
