//! Avro input in the Confluent wire format: byte 0 = magic 0, bytes 1..5 = schema id (big
//! endian), then one Avro datum. The writer schema comes from the local `schemas/` file when
//! the id is the configured one, otherwise from the registry (not wired in this build: such
//! ids are rejected as undecodable, with the id named).

use apache_avro::Schema;
use serde_json::Value;

use super::{RejectReason, Rejected};
use crate::contracts::{avro, Contract};

pub const MAGIC: u8 = 0;

/// True when `bytes` looks like Confluent-framed Avro. JSON text never starts with a 0 byte.
pub fn is_framed(bytes: &[u8]) -> bool {
    bytes.first() == Some(&MAGIC)
}

/// Frames a datum: what a producer (or our Avro output) writes.
pub fn frame(schema_id: u32, datum: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + datum.len());
    out.push(MAGIC);
    out.extend_from_slice(&schema_id.to_be_bytes());
    out.extend_from_slice(datum);
    out
}

/// Splits a framed message into (schema id, datum).
pub fn unframe(bytes: &[u8]) -> Result<(u32, &[u8]), Rejected> {
    if bytes.len() < 5 || bytes[0] != MAGIC {
        return Err(Rejected::new(RejectReason::Undecodable, "not in the Confluent Avro wire format"));
    }
    let id = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
    Ok((id, &bytes[5..]))
}

/// Decodes a framed detector event into its JSON form (`output` and `metadata` parsed from
/// their JSON text), ready for schema validation.
pub fn decode_detector_event(bytes: &[u8], local_id: u32) -> Result<Value, Rejected> {
    let (id, mut datum) = unframe(bytes)?;
    if id != local_id {
        return Err(Rejected::new(
            RejectReason::Undecodable,
            format!("unknown Avro schema id {id} (this instance knows id {local_id} = schemas/detector-event.avsc)"),
        ));
    }
    let schema: &Schema = avro::schema(Contract::DetectorEvent);
    let v = apache_avro::from_avro_datum(schema, &mut datum, None).map_err(|e| {
        Rejected::new(RejectReason::Undecodable, format!("Avro datum does not match schema id {id}: {e}"))
    })?;
    if !datum.is_empty() {
        return Err(Rejected::new(
            RejectReason::Undecodable,
            format!("{} trailing bytes after the Avro datum", datum.len()),
        ));
    }
    let mut json = Value::try_from(v).map_err(|e| Rejected::new(RejectReason::Undecodable, e.to_string()))?;
    for field in ["output", "metadata"] {
        if let Some(Value::String(text)) = json.get(field) {
            let parsed: Value = serde_json::from_str(text)
                .map_err(|e| Rejected::new(RejectReason::Undecodable, format!("`{field}` is not JSON text: {e}")))?;
            json[field] = parsed;
        }
    }
    Ok(json)
}

/// Encodes a detector event (JSON form) as framed Avro: what an Avro-speaking detector sends.
pub fn encode_detector_event(event: &Value, schema_id: u32) -> Result<Vec<u8>, avro::AvroError> {
    let mut e = event.clone();
    for field in ["output", "metadata"] {
        if let Some(v) = e.get(field).filter(|v| !v.is_null()) {
            e[field] = Value::String(v.to_string());
        }
    }
    Ok(frame(schema_id, &avro::encode(Contract::DetectorEvent, &e)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn avro_detector_event_round_trips_with_native_output() {
        let ev = json!({"event_id": "a", "tenant_id": "t", "detector": "presidio", "ts": "2025-09-01T00:00:00Z",
            "output": [{"entity_type": "US_SSN", "score": 0.85}], "content": "x", "metadata": {"k": 1}});
        let bytes = encode_detector_event(&ev, 7).unwrap();
        assert!(is_framed(&bytes));
        let back = decode_detector_event(&bytes, 7).unwrap();
        assert_eq!(back["output"], ev["output"]);
        assert_eq!(back["metadata"], ev["metadata"]);
        assert_eq!(back["event_id"], "a");
        let err = decode_detector_event(&bytes, 8).unwrap_err();
        assert!(err.detail.contains("unknown Avro schema id 7"), "{}", err.detail);
        assert!(decode_detector_event(&bytes[..8], 7).is_err());
    }
}
