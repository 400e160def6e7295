//! Ingest: bytes from a detector team → a schema-valid [`DetectorEvent`], or a rejection that
//! says why (the reason the dead-letter topic records).

pub mod avro_wire;
pub mod dlq;

use std::collections::HashSet;

use serde_json::Value;

use crate::config::Settings;
use crate::contracts::{Contract, Contracts, DetectorEvent};

/// Largest accepted encoded event. Detector outputs are label lists, not documents; a larger
/// event is almost certainly a producer bug (a whole page pasted into `output`). Kept well under
/// Kafka's default 1 MB message limit so that whatever we emit for an input fits a record.
pub const DEFAULT_MAX_EVENT_BYTES: usize = 512 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectReason {
    /// Not JSON (or not Avro in the Confluent framing, for Avro input).
    Undecodable,
    /// Larger than the configured maximum.
    Oversized,
    /// Decoded, but does not satisfy schemas/detector-event.schema.json.
    SchemaInvalid,
    /// `tenant_id` is not one the deployment serves.
    UnknownTenant,
    /// The mapped output failed its own schema (a bug): the input is parked in the DLQ.
    OutputInvalid,
    /// Not the input's fault: something it needs is unreachable (the schema registry). The
    /// batch is retried, never dead-lettered for this.
    Unavailable,
    /// The registry is up but keeps refusing this one schema id (401/403/4xx/500): after a
    /// few tries the input is dead-lettered so it cannot stop its partition.
    SchemaUnavailable,
    /// The detector output holds more labels than one event may carry.
    TooManyLabels,
    /// A mapped output is larger than the producer may send (`message.max.bytes`).
    OutputTooLarge,
    /// The broker refused to store an output for a reason of the record itself (its size
    /// against the topic's `max.message.bytes`, a corrupt or invalid record).
    OutputRejected,
}

impl RejectReason {
    /// The stable name used in metrics labels and dead-letter headers.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::Undecodable => "undecodable",
            RejectReason::Oversized => "oversized",
            RejectReason::SchemaInvalid => "schema_invalid",
            RejectReason::UnknownTenant => "unknown_tenant",
            RejectReason::OutputInvalid => "output_invalid",
            RejectReason::Unavailable => "unavailable",
            RejectReason::SchemaUnavailable => "schema_unavailable",
            RejectReason::TooManyLabels => "too_many_labels",
            RejectReason::OutputTooLarge => "output_too_large",
            RejectReason::OutputRejected => "output_rejected",
        }
    }
}

/// A rejected input. `detail` never contains input values (only positions and rules), so it
/// is safe to log and to put in a dead-letter header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {detail}", reason.as_str())]
pub struct Rejected {
    pub reason: RejectReason,
    pub detail: String,
}

impl Rejected {
    pub fn new(reason: RejectReason, detail: impl Into<String>) -> Self {
        Rejected { reason, detail: detail.into() }
    }
}

/// Decodes and validates JSON detector events.
#[derive(Debug)]
pub struct JsonDecoder<'a> {
    contracts: &'a Contracts,
    max_bytes: usize,
}

impl<'a> JsonDecoder<'a> {
    pub fn new(contracts: &'a Contracts, max_bytes: usize) -> Self {
        JsonDecoder { contracts, max_bytes }
    }

    pub fn decode(&self, bytes: &[u8]) -> Result<DetectorEvent, Rejected> {
        self.check_size(bytes)?;
        // serde_json's syntax errors give a position, never the text around it.
        let value: Value = serde_json::from_slice(bytes)
            .map_err(|e| Rejected::new(RejectReason::Undecodable, format!("not valid JSON: {e}")))?;
        self.from_value(value)
    }

    fn check_size(&self, bytes: &[u8]) -> Result<(), Rejected> {
        if bytes.len() > self.max_bytes {
            return Err(Rejected::new(
                RejectReason::Oversized,
                format!("event is {} bytes, the limit is {}", bytes.len(), self.max_bytes),
            ));
        }
        Ok(())
    }

    /// Validates an already-parsed event (the Avro path converts to JSON first).
    pub fn from_value(&self, value: Value) -> Result<DetectorEvent, Rejected> {
        self.contracts
            .validate(Contract::DetectorEvent, &value)
            .map_err(|v| Rejected::new(RejectReason::SchemaInvalid, v.errors.join("; ")))?;
        // The schema already guarantees the shape; a failure here would be a schema/type drift,
        // and serde's message would quote the value, so it is replaced by a fixed one.
        serde_json::from_value(value).map_err(|_| {
            Rejected::new(
                RejectReason::SchemaInvalid,
                "event passed the schema but not the DetectorEvent type (schema drift)",
            )
        })
    }
}

/// The stream processor's front door: size limit, JSON or framed Avro, schema, tenant.
#[derive(Debug)]
pub struct Decoder<'a> {
    json: JsonDecoder<'a>,
    avro: avro_wire::SchemaSource,
    /// `Some` when only listed tenants are served.
    known_tenants: Option<HashSet<String>>,
}

impl<'a> Decoder<'a> {
    pub fn new(contracts: &'a Contracts, settings: &Settings) -> Self {
        Decoder {
            json: JsonDecoder::new(contracts, settings.ingest.max_event_bytes),
            avro: avro_wire::SchemaSource::new(
                settings.avro.detector_event_schema_id,
                settings.avro.registry_url.clone(),
            ),
            known_tenants: settings.ingest.known_tenants_only.then(|| settings.tenants.keys().cloned().collect()),
        }
    }

    pub fn decode(&self, bytes: &[u8]) -> Result<DetectorEvent, Rejected> {
        let event = if avro_wire::is_framed(bytes) {
            self.json.check_size(bytes)?;
            self.json.from_value(self.avro.decode_detector_event(bytes)?)?
        } else {
            self.json.decode(bytes)?
        };
        if let Some(known) = &self.known_tenants {
            if !known.contains(&event.tenant_id) {
                return Err(Rejected::new(
                    RejectReason::UnknownTenant,
                    format!("tenant '{}' is not configured under `tenants`", event.tenant_id),
                ));
            }
        }
        Ok(event)
    }
}
