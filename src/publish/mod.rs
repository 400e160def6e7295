//! Publish: mapped events → Kafka records (topic, key, payload, headers). Pure; the stream
//! loop sends what this builds.
//!
//! **Key = `tenant_id`.** Kafka keeps order per partition and a key always hashes to the same
//! partition, so one tenant's canonical and audit events keep their input order (provided the
//! detector teams also key their input by tenant, as `topics/detector.events.v1.yaml` asks).

use crate::config::{Settings, WireFormat};
use crate::contracts::avro::{self, AvroError};
use crate::contracts::Contract;
use crate::ingest::avro_wire::frame;
use crate::ingest::dlq::SourceCoords;
use crate::pipeline::Mapped;

#[derive(Debug, Clone, PartialEq)]
pub struct OutputRecord {
    pub topic: String,
    pub key: String,
    pub payload: Option<Vec<u8>>,
    pub headers: Vec<(&'static str, String)>,
}

/// The header naming the payload's encoding.
pub const CONTENT_TYPE: &str = "content-type";
/// The header naming the contract and its version, e.g. `canonical-event/1.0`.
pub const SCHEMA_HEADER: &str = "mapper.schema";

#[derive(Debug, Clone)]
pub struct Publisher {
    format: WireFormat,
    canonical_topic: String,
    audit_topic: String,
    canonical_schema_id: u32,
    audit_schema_id: u32,
}

impl Publisher {
    pub fn new(settings: &Settings) -> Self {
        Publisher {
            format: settings.kafka.output_format,
            canonical_topic: settings.kafka.canonical_topic.clone(),
            audit_topic: settings.kafka.audit_topic.clone(),
            canonical_schema_id: settings.avro.canonical_schema_id,
            audit_schema_id: settings.avro.audit_schema_id,
        }
    }

    /// The canonical and the audit record of one input event.
    pub fn records(&self, m: &Mapped, source: &SourceCoords) -> Result<[OutputRecord; 2], AvroError> {
        let key = m.canonical.provenance.tenant_id.clone();
        let make = |topic: &str, contract: Contract, json: &serde_json::Value, schema_id: u32, name: &str| {
            let (payload, content_type) = match self.format {
                WireFormat::Json => (serde_json::to_vec(json).expect("JSON value serialises"), "application/json"),
                WireFormat::Avro => {
                    (frame(schema_id, &avro::encode(contract, json)?), "application/vnd.confluent.avro")
                }
            };
            Ok::<_, AvroError>(OutputRecord {
                topic: topic.to_string(),
                key: key.clone(),
                payload: Some(payload),
                headers: vec![
                    (CONTENT_TYPE, content_type.to_string()),
                    (SCHEMA_HEADER, format!("{name}/{}", crate::contracts::SCHEMA_VERSION)),
                    ("mapper.event-id", m.canonical.event_id.clone()),
                    ("mapper.source.topic", source.topic.clone()),
                    ("mapper.source.partition", source.partition.to_string()),
                    ("mapper.source.offset", source.offset.to_string()),
                ],
            })
        };
        Ok([
            make(
                &self.canonical_topic,
                Contract::CanonicalEvent,
                &m.canonical_json,
                self.canonical_schema_id,
                "canonical-event",
            )?,
            make(&self.audit_topic, Contract::AuditEvent, &m.audit_json, self.audit_schema_id, "audit-event")?,
        ])
    }
}
