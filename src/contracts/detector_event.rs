//! The input envelope (`schemas/detector-event.schema.json`).

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Raw text a detector looked at. It exists in memory only: it deliberately implements neither
/// `Serialize` nor `Display`, and its `Debug` prints only the length, so no output, log line or
/// error message can carry it by accident — the compiler refuses the attempt.
#[derive(Clone, Deserialize, Default, PartialEq, Eq)]
#[serde(transparent)]
pub struct RawContent(String);

impl RawContent {
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// For the in-memory consumers that need the text itself (the model prompt, later).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for RawContent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RawContent(<{} bytes redacted>)", self.0.len())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
pub struct PolicyContext {
    #[serde(default)]
    pub expected_detectors: Option<Vec<String>>,
    #[serde(default)]
    pub environment: Option<String>,
}

/// A detector event after it passed the input schema.
#[derive(Debug, Clone, Deserialize)]
pub struct DetectorEvent {
    pub event_id: String,
    pub tenant_id: String,
    pub detector: String,
    #[serde(default)]
    pub detector_version: Option<String>,
    pub ts: String,
    pub output: Value,
    #[serde(default)]
    pub content: Option<RawContent>,
    #[serde(default)]
    pub request_id: Option<String>,
    #[serde(default)]
    pub raw_ref: Option<String>,
    #[serde(default)]
    pub policy_context: Option<PolicyContext>,
    #[serde(default)]
    pub metadata: Option<serde_json::Map<String, Value>>,
}

impl DetectorEvent {
    pub fn environment(&self) -> Option<&str> {
        self.policy_context.as_ref().and_then(|p| p.environment.as_deref())
    }
}
