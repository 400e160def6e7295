//! Avro encoding of the contracts (`schemas/*.avsc`), for users who want Avro on the wire.
//!
//! The JSON form stays the reference: an event is built and schema-checked as JSON, then
//! converted, so the two encodings cannot disagree about content.

use std::sync::OnceLock;

use apache_avro::types::Value as AvroValue;
use apache_avro::Schema;
use serde_json::Value;

use super::Contract;

#[derive(Debug, thiserror::Error)]
pub enum AvroError {
    #[error("{0} does not fit the Avro schema: {1}")]
    Encode(&'static str, String),
    #[error("undecodable Avro datum for {0}: {1}")]
    Decode(&'static str, String),
}

/// Parsed `.avsc` of a contract (parsed once; the sources are compiled in).
pub fn schema(contract: Contract) -> &'static Schema {
    static SCHEMAS: OnceLock<Vec<Schema>> = OnceLock::new();
    let all = SCHEMAS.get_or_init(|| {
        Contract::ALL
            .iter()
            .map(|c| Schema::parse_str(c.avro_source()).expect("Contracts::load validated the .avsc files"))
            .collect()
    });
    let i = Contract::ALL.iter().position(|c| *c == contract).expect("contract listed in ALL");
    &all[i]
}

/// Encodes a JSON instance of `contract` as a single Avro datum (no container header).
pub fn encode(contract: Contract, json: &Value) -> Result<Vec<u8>, AvroError> {
    let s = schema(contract);
    let value =
        AvroValue::from(json.clone()).resolve(s).map_err(|e| AvroError::Encode(contract.avro_file(), e.to_string()))?;
    apache_avro::to_avro_datum(s, value).map_err(|e| AvroError::Encode(contract.avro_file(), e.to_string()))
}

/// Decodes one Avro datum of `contract` back to its JSON form.
pub fn decode(contract: Contract, mut bytes: &[u8]) -> Result<Value, AvroError> {
    let s = schema(contract);
    let v = apache_avro::from_avro_datum(s, &mut bytes, None)
        .map_err(|e| AvroError::Decode(contract.avro_file(), e.to_string()))?;
    Value::try_from(v).map_err(|e| AvroError::Decode(contract.avro_file(), e.to_string()))
}
