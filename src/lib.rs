//! llama-mapper: raw AI-safety detector outputs in, canonical taxonomy events and
//! compliance-ready audit evidence out.
//!
//! The crate reads like the data path:
//! [`catalog`] (taxonomy, frameworks, detector packs) feeds [`mapping`] (pack → alias → model
//! seam → fallback), whose canonical events [`audit`] turns into control evidence; [`contracts`]
//! holds the schemas every event is checked against before it leaves, [`ingest`] turns bytes
//! into detector events, and [`cli`] is the `mapper` binary.

pub mod audit;
pub mod catalog;
pub mod cli;
pub mod config;
pub mod contracts;
pub mod dataset;
pub mod ingest;
pub mod kafka;
pub mod labels;
pub mod mapping;
pub mod model;
pub mod ops;
pub mod pipeline;
pub mod publish;
pub mod sinks;
pub mod stream;
pub mod telemetry;
pub mod topics;
pub mod trail;
