//! The three contracts of the product, with `schemas/` as their source of truth.
//!
//! The Rust types here mirror the JSON Schemas; [`Contracts`] compiles those schemas (embedded
//! at build time from `schemas/`) and checks every event before it leaves the process, so a
//! drift between the types and the schemas is a failed check, never an invalid event emitted.

mod audit;
pub mod avro;
mod canonical;
mod detector_event;
mod validate;

pub use audit::{AuditEvent, AuditLineage, LabelControls};
pub use canonical::{CanonicalEvent, Lineage, Provenance, Route, Versions, SCHEMA_VERSION};
pub use detector_event::{DetectorEvent, PolicyContext, RawContent};
pub use validate::{Contract, Contracts, Violation};
