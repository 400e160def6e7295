//! The seam where a model maps the raw labels that neither the pack nor the taxonomy's aliases
//! know. The engine never calls a model itself: [`super::Mapper::prepare`] hands back the batch's
//! distinct [`LabelQuery`]s, the runtime asks whatever model it has (all of them together, so an
//! engine with continuous batching sees one batch), and [`super::PreparedBatch::finish`] takes the
//! answers. Mapping stays pure and synchronous, and "no model" is just an empty answer list.

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
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ModelPolicy {
    /// Answers below this confidence fall back to the rules' answer (`OTHER.Unknown`).
    pub min_confidence: f64,
}

impl Default for ModelPolicy {
    fn default() -> Self {
        ModelPolicy { min_confidence: 0.6 }
    }
}
