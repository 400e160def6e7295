//! The audit event (`schemas/audit-event.schema.json`).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Route, Versions};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelControls {
    pub label: String,
    pub controls: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditLineage {
    pub raw_label: String,
    pub raw_score: Option<Value>,
    pub score: f64,
    pub threshold: f64,
    pub route: Route,
    pub label: String,
    pub controls: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    pub schema_version: String,
    pub event_id: String,
    pub tenant_id: String,
    pub ts: String,
    pub detector: String,
    pub request_id: Option<String>,
    pub environment: Option<String>,
    pub labels: Vec<String>,
    pub controls: Vec<String>,
    pub mappings: Vec<LabelControls>,
    pub lineage: Vec<AuditLineage>,
    pub versions: Versions,
}
