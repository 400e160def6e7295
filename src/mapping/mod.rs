//! Mapping: native detector output → canonical taxonomy, one batch at a time.
//!
//! The path of every raw label: extract (pack extractors) → pack map → taxonomy alias →
//! model (via [`model`]'s seam) → fallback `OTHER.Unknown`. Pure functions over a batch,
//! with no I/O, so the stream processor, the CLI and the benchmarks all run the same code.

mod engine;
pub mod extract;
pub mod model;

pub use engine::{Mapper, PreparedBatch, TooManyLabels, MAX_LABELS_PER_EVENT};
pub use model::{LabelQuery, ModelDecision, ModelPolicy};
