//! Dead-letter records: what a rejected input becomes.
//!
//! The DLQ must not become a second, longer-lived copy of raw text. So:
//! - an input that parses as JSON keeps everything **but** `content`, which is removed
//!   (`mapper.content-stripped: true`, with its SHA-256 so a team can match it to the original);
//! - an input that cannot be parsed (undecodable, oversized) cannot be cleaned, so its bytes
//!   are not copied: the record carries no value, only the reason, the payload's SHA-256 and
//!   size, and the source topic/partition/offset. The original stays in the input topic for
//!   that topic's retention, which is where a fixed replay reads it from.

use serde_json::Value;
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

pub fn dead_letter(rejected: &Rejected, payload: &[u8], source: &SourceCoords) -> DeadLetter {
    let mut headers = vec![
        ("mapper.dlq.reason", rejected.reason.as_str().to_string()),
        ("mapper.dlq.error", rejected.detail.clone()),
        ("mapper.source.topic", source.topic.clone()),
        ("mapper.source.partition", source.partition.to_string()),
        ("mapper.source.offset", source.offset.to_string()),
        ("mapper.payload.sha256", hex(&Sha256::digest(payload))),
        ("mapper.payload.bytes", payload.len().to_string()),
    ];
    let parseable = !matches!(rejected.reason, RejectReason::Oversized | RejectReason::Undecodable);
    let value = if parseable {
        match serde_json::from_slice::<Value>(payload) {
            Ok(Value::Object(mut obj)) => {
                if let Some(content) = obj.remove("content") {
                    headers.push(("mapper.content-stripped", "true".into()));
                    headers.push(("mapper.content.sha256", hex(&Sha256::digest(content.to_string().as_bytes()))));
                }
                Some(serde_json::to_vec(&Value::Object(obj)).expect("a JSON object serialises"))
            }
            // Avro input: the JSON it decoded to is not at hand here, and the bytes may hold content.
            _ => None,
        }
    } else {
        None
    };
    if value.is_none() {
        headers.push(("mapper.value-omitted", "raw payload not copied: it may hold content".into()));
    }
    DeadLetter { value, headers }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src() -> SourceCoords {
        SourceCoords { topic: "in".into(), partition: 2, offset: 41 }
    }

    #[test]
    fn schema_invalid_json_keeps_everything_but_content() {
        let payload = br#"{"event_id":"e","content":"SECRET TEXT","output":[]}"#;
        let dl = dead_letter(&Rejected::new(RejectReason::SchemaInvalid, "at /: missing tenant_id"), payload, &src());
        let v: Value = serde_json::from_slice(dl.value.as_ref().unwrap()).unwrap();
        assert_eq!(v["event_id"], "e");
        assert!(v.get("content").is_none());
        assert!(!String::from_utf8_lossy(dl.value.as_ref().unwrap()).contains("SECRET"));
        let h: std::collections::HashMap<_, _> = dl.headers.into_iter().collect();
        assert_eq!(h["mapper.dlq.reason"], "schema_invalid");
        assert_eq!(h["mapper.source.offset"], "41");
        assert_eq!(h["mapper.content-stripped"], "true");
    }

    #[test]
    fn undecodable_bytes_are_not_copied() {
        let payload = b"{\"content\": \"SECRET TEXT\", broken";
        let dl = dead_letter(&Rejected::new(RejectReason::Undecodable, "not JSON"), payload, &src());
        assert!(dl.value.is_none());
        assert!(dl.headers.iter().all(|(_, v)| !v.contains("SECRET")));
        assert!(dl.headers.iter().any(|(k, _)| *k == "mapper.payload.sha256"));
    }
}
