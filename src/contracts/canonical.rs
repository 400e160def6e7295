//! The canonical event (`schemas/canonical-event.schema.json`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::PolicyContext;

pub const SCHEMA_VERSION: &str = "1.0";

/// Which step decided a label. Ordered from most to least certain: an event's overall route
/// is the maximum over its lineage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Route {
    Pack,
    Alias,
    Model,
    Fallback,
}

impl Route {
    pub fn as_str(self) -> &'static str {
        match self {
            Route::Pack => "pack",
            Route::Alias => "alias",
            Route::Model => "model",
            Route::Fallback => "fallback",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    pub vendor: Option<String>,
    pub detector: String,
    pub detector_version: Option<String>,
    pub raw_ref: Option<String>,
    pub route: Route,
    pub model: Option<String>,
    pub tenant_id: String,
    pub ts: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lineage {
    pub raw_label: String,
    /// As the detector emitted it: a pass stays visible as, say, 0.03 rather than 0.
    pub raw_score: Option<Value>,
    pub score: f64,
    pub threshold: f64,
    pub hit: bool,
    pub flagged: Option<bool>,
    /// `None` for a raw label the pack lists as clean.
    pub label: Option<String>,
    pub route: Route,
    pub confidence: f64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Versions {
    pub taxonomy: String,
    pub frameworks: String,
    pub pack: String,
    pub model: Option<String>,
    pub mapper: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CanonicalEvent {
    pub schema_version: String,
    pub event_id: String,
    pub request_id: Option<String>,
    pub taxonomy: Vec<String>,
    pub scores: BTreeMap<String, f64>,
    pub confidence: f64,
    pub notes: Option<String>,
    pub provenance: Provenance,
    pub policy_context: Option<PolicyContext>,
    pub lineage: Vec<Lineage>,
    pub versions: Versions,
}
