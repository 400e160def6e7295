//! The seam where a model maps the raw labels that neither the pack nor the taxonomy's aliases
//! know. The engine never calls a model itself: [`super::Mapper::prepare`] hands back the batch's
//! distinct [`LabelQuery`]s, the runtime asks whatever model it has (all of them together, so an
//! engine with continuous batching sees one batch), and [`super::PreparedBatch::finish`] takes the
//! answers. Mapping stays pure and synchronous, and "no model" is just an empty answer list.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One raw label the rules could not place, deduplicated per batch.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LabelQuery {
    pub detector: String,
    /// As the detector spelt it (bounded length).
    pub raw_label: String,
    /// `detector@version` of the pack in force, part of any cache key.
    pub pack_version: String,
}

/// A model's answer for one query.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelDecision {
    /// A taxonomy label (answers naming anything else are discarded).
    pub label: String,
    /// The model's own confidence in [0,1].
    pub confidence: f64,
    /// Model identity for provenance, e.g. `llama-3-8b-instruct+mapper-lora@v1.2.0`.
    pub model: String,
}

/// Whether a model answer is good enough to use.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelPolicy {
    /// Answers below this confidence fall back to the rules' answer (`OTHER.Unknown`).
    pub min_confidence: f64,
    /// Per-detector overrides.
    pub detector: BTreeMap<String, f64>,
    /// Per-tenant overrides (win over per-detector ones).
    pub tenant: BTreeMap<String, f64>,
}

impl ModelPolicy {
    pub fn new(min_confidence: f64) -> ModelPolicy {
        ModelPolicy { min_confidence, detector: BTreeMap::new(), tenant: BTreeMap::new() }
    }

    pub fn from_settings(s: &crate::config::ModelSettings) -> ModelPolicy {
        ModelPolicy {
            min_confidence: s.min_confidence,
            detector: s.detector_min_confidence.clone(),
            tenant: s.tenant_min_confidence.clone(),
        }
    }

    /// The least confidence a model answer needs for this tenant's event from this detector.
    pub fn min_for(&self, tenant: &str, detector: &str) -> f64 {
        self.tenant.get(tenant).or_else(|| self.detector.get(detector)).copied().unwrap_or(self.min_confidence)
    }
}

impl Default for ModelPolicy {
    /// The seeds' threshold: below 0.6 a model answer is not trusted.
    fn default() -> Self {
        ModelPolicy::new(0.6)
    }
}
