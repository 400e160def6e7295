//! Table rows built from the output-topic events: the columns auditors filter on, plus the
//! event itself (`event`) so nothing the event said is lost to the projection.

use serde::Serialize;

use crate::contracts::{AuditEvent, CanonicalEvent};
use crate::sinks::rfc3339_millis;

#[derive(Debug, Clone, PartialEq, clickhouse::Row, Serialize)]
pub struct AuditRow {
    pub tenant_id: String,
    /// DateTime64(3): milliseconds since the epoch.
    pub ts: i64,
    pub event_id: String,
    pub detector: String,
    pub environment: String,
    pub request_id: String,
    pub labels: Vec<String>,
    pub controls: Vec<String>,
    pub incident_controls: Vec<String>,
    pub routes: Vec<String>,
    pub taxonomy_version: String,
    pub frameworks_version: String,
    pub pack_version: String,
    pub model_version: String,
    pub mapper_version: String,
    pub event: String,
}

impl AuditRow {
    pub fn from_event(e: &AuditEvent) -> Result<AuditRow, String> {
        let mut incident: Vec<String> = e.mappings.iter().flat_map(|m| m.controls.iter().cloned()).collect();
        incident.sort();
        incident.dedup();
        let mut routes: Vec<String> = e.lineage.iter().map(|l| l.route.as_str().to_string()).collect();
        routes.sort();
        routes.dedup();
        Ok(AuditRow {
            tenant_id: e.tenant_id.clone(),
            ts: rfc3339_millis(&e.ts)?,
            event_id: e.event_id.clone(),
            detector: e.detector.clone(),
            environment: e.environment.clone().unwrap_or_default(),
            request_id: e.request_id.clone().unwrap_or_default(),
            labels: e.labels.clone(),
            controls: e.controls.clone(),
            incident_controls: incident,
            routes,
            taxonomy_version: e.versions.taxonomy.clone(),
            frameworks_version: e.versions.frameworks.clone(),
            pack_version: e.versions.pack.clone(),
            model_version: e.versions.model.clone().unwrap_or_default(),
            mapper_version: e.versions.mapper.clone(),
            event: serde_json::to_string(e).map_err(|e| e.to_string())?,
        })
    }
}

#[derive(Debug, Clone, PartialEq, clickhouse::Row, Serialize)]
pub struct CanonicalRow {
    pub tenant_id: String,
    pub ts: i64,
    pub event_id: String,
    pub detector: String,
    pub vendor: String,
    pub detector_version: String,
    pub environment: String,
    pub request_id: String,
    pub route: String,
    pub confidence: f64,
    pub labels: Vec<String>,
    pub score_labels: Vec<String>,
    pub score_values: Vec<f64>,
    pub taxonomy_version: String,
    pub pack_version: String,
    pub model_version: String,
    pub mapper_version: String,
    pub event: String,
}

impl CanonicalRow {
    pub fn from_event(e: &CanonicalEvent) -> Result<CanonicalRow, String> {
        let p = &e.provenance;
        Ok(CanonicalRow {
            tenant_id: p.tenant_id.clone(),
            ts: rfc3339_millis(&p.ts)?,
            event_id: e.event_id.clone(),
            detector: p.detector.clone(),
            vendor: p.vendor.clone().unwrap_or_default(),
            detector_version: p.detector_version.clone().unwrap_or_default(),
            environment: e.policy_context.as_ref().and_then(|c| c.environment.clone()).unwrap_or_default(),
            request_id: e.request_id.clone().unwrap_or_default(),
            route: p.route.as_str().to_string(),
            confidence: e.confidence,
            labels: e.taxonomy.clone(),
            score_labels: e.scores.keys().cloned().collect(),
            score_values: e.scores.values().copied().collect(),
            taxonomy_version: e.versions.taxonomy.clone(),
            pack_version: e.versions.pack.clone(),
            model_version: e.versions.model.clone().unwrap_or_default(),
            mapper_version: e.versions.mapper.clone(),
            event: serde_json::to_string(e).map_err(|e| e.to_string())?,
        })
    }
}
