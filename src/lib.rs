//! llama-mapper: raw AI-safety detector outputs in, canonical taxonomy events and
//! compliance-ready audit evidence out.
//!
//! The crate reads like the data path:
//! [`catalog`] (taxonomy, frameworks, detector packs) feeds [`mapping`] (pack → alias → model
//! seam → fallback), whose canonical events [`audit`] turns into control evidence; [`contracts`]
//! holds the schemas every event is checked against before it leaves, [`ingest`] turns bytes
//! into detector events, [`kafka`] is every Kafka mechanism once, [`stream`] is `mapper run`,
//! [`sinks`] project the output topics into ClickHouse and the WORM [`trail`], and [`cli`] is
//! the `mapper` binary.
//!
//! The life of one detector event through `mapper run`:
//! 1. `kafka/batch.rs::collect` reads it in a batch (never across a rebalance; closed when the
//!    stream goes idle), or `stream/mod.rs::Processor::read_ahead` does while the batch before
//!    it is delivered;
//! 2. `stream/mod.rs::Processor::stage` → `Processor::process`, on every core →
//!    `ingest/mod.rs::Decoder::decode` (JSON or
//!    Confluent Avro, checked against `schemas/detector-event.schema.json`; a reject becomes
//!    `ingest/dlq.rs::dead_letter`);
//! 3. `pipeline.rs::Pipeline::map_batch` → `mapping/engine.rs::Mapper::prepare` (extraction,
//!    pack and alias rules) → the model for what is left → `PreparedBatch::finish` →
//!    `audit/mod.rs::audit_event` → both outputs validated (`contracts`);
//! 4. `stream/mod.rs::encode` → `publish/mod.rs::Publisher::records` (key = tenant, headers
//!    with the source offsets);
//! 5. `stream/mod.rs::Processor::transact` → `Processor::produce` → `kafka/deliver.rs::enqueue`
//!    and `await_all` →
//!    `send_offsets_to_transaction` → `commit_transaction`: outputs and input offset together;
//! 6. downstream, `sinks/source.rs::SinkSource::next_batch` feeds `sinks/clickhouse` (the
//!    auditors' projection) and `sinks/s3_worm` (the hash-chained, Object-Locked trail).

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
