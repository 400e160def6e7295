//! Audit evidence: which compliance controls a canonical event evidences.
//!
//! One audit event per canonical event, including events with no hits: "the detector ran and
//! found nothing" is itself evidence (EU AI Act Art. 12 record-keeping, frameworks.yaml
//! `always`). Only hits carry label controls: a below-threshold score evidences no incident.

use std::collections::BTreeSet;

use crate::catalog::Frameworks;
use crate::contracts::{AuditEvent, AuditLineage, CanonicalEvent, LabelControls, SCHEMA_VERSION};

pub fn audit_event(frameworks: &Frameworks, event: &CanonicalEvent) -> AuditEvent {
    let mut all: BTreeSet<String> = frameworks.always.iter().cloned().collect();
    let mappings: Vec<LabelControls> = event
        .taxonomy
        .iter()
        .map(|label| {
            let controls = frameworks.controls_for(label).to_vec();
            all.extend(controls.iter().cloned());
            LabelControls { label: label.clone(), controls }
        })
        .collect();
    let lineage = event
        .lineage
        .iter()
        .filter(|l| l.hit)
        .filter_map(|l| {
            let label = l.label.clone()?;
            Some(AuditLineage {
                raw_label: l.raw_label.clone(),
                raw_score: l.raw_score.clone(),
                score: l.score,
                threshold: l.threshold,
                route: l.route,
                controls: frameworks.controls_for(&label).to_vec(),
                label,
            })
        })
        .collect();
    AuditEvent {
        schema_version: SCHEMA_VERSION.to_string(),
        event_id: event.event_id.clone(),
        tenant_id: event.provenance.tenant_id.clone(),
        ts: event.provenance.ts.clone(),
        detector: event.provenance.detector.clone(),
        request_id: event.request_id.clone(),
        environment: event.policy_context.as_ref().and_then(|p| p.environment.clone()),
        labels: event.taxonomy.clone(),
        controls: all.into_iter().collect(),
        mappings,
        lineage,
        versions: event.versions.clone(),
    }
}
