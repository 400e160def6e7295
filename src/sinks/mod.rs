//! Sink workers: Kafka consumers that project the output topics into ClickHouse
//! (`clickhouse`) and into the WORM audit trail on S3 (`s3_worm`).
//!
//! The topics are the source of truth; a sink is a projection of them. Every sink follows the
//! same contract, which is what makes it safe to kill at any point:
//! 1. read a batch,
//! 2. write it, retrying transient failures with backoff until it is acknowledged (or the
//!    process is asked to stop),
//! 3. route what the store refused for good to the sink dead-letter topic, and wait for that
//!    to be acknowledged too,
//! 4. only then commit the batch's offsets.
//!
//! A crash anywhere before 4 re-delivers the batch, so each sink's writes are idempotent
//! (ReplacingMergeTree on `event_id`; deterministic object keys with conditional PUTs).

pub mod clickhouse;
mod dlq;
pub mod s3_worm;
mod source;

use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::contracts::avro;
use crate::contracts::Contract;
use crate::ingest::avro_wire;

pub use dlq::SinkDlq;
pub use source::SinkSource;

/// Decodes an output-topic payload, JSON or Confluent-framed Avro (`kafka.output_format`).
pub fn decode<T: DeserializeOwned>(contract: Contract, payload: Option<&[u8]>) -> Result<T, String> {
    let bytes = payload.ok_or("record has no payload")?;
    let value = if avro_wire::is_framed(bytes) {
        let (_, datum) = avro_wire::unframe(bytes).map_err(|r| r.to_string())?;
        avro::decode(contract, datum).map_err(|e| e.to_string())?
    } else {
        serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?
    };
    serde_json::from_value(value).map_err(|e| format!("not a {}: {e}", contract.file()))
}

/// The shared backoff from 200 ms, never giving up: a sink waits out an outage of its store
/// and catches up afterwards.
pub(crate) fn backoff() -> backon::ExponentialBuilder {
    crate::kafka::backoff(Duration::from_millis(200))
}

/// Milliseconds since the epoch of an RFC 3339 timestamp.
pub fn rfc3339_millis(ts: &str) -> Result<i64, String> {
    let t = time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339)
        .map_err(|e| format!("ts {ts:?} is not RFC 3339: {e}"))?;
    Ok((t.unix_timestamp_nanos() / 1_000_000) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_keep_their_offset() {
        assert_eq!(rfc3339_millis("1970-01-01T00:00:01.5Z").unwrap(), 1500);
        assert_eq!(rfc3339_millis("1970-01-01T01:00:01+01:00").unwrap(), 1000);
        assert!(rfc3339_millis("yesterday").is_err());
    }
}
