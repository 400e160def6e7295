use std::fmt;

use jsonschema::Validator;
use serde_json::Value;

use crate::catalog::{ConfigError, ConfigErrors};

/// A schema in `schemas/`, compiled into the binary so a deployment cannot run with
/// contracts that differ from the code that fills them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Contract {
    DetectorEvent,
    CanonicalEvent,
    AuditEvent,
}

impl Contract {
    pub const ALL: [Contract; 3] = [Contract::DetectorEvent, Contract::CanonicalEvent, Contract::AuditEvent];

    pub fn file(self) -> &'static str {
        match self {
            Contract::DetectorEvent => "schemas/detector-event.schema.json",
            Contract::CanonicalEvent => "schemas/canonical-event.schema.json",
            Contract::AuditEvent => "schemas/audit-event.schema.json",
        }
    }

    pub fn source(self) -> &'static str {
        match self {
            Contract::DetectorEvent => include_str!("../../schemas/detector-event.schema.json"),
            Contract::CanonicalEvent => include_str!("../../schemas/canonical-event.schema.json"),
            Contract::AuditEvent => include_str!("../../schemas/audit-event.schema.json"),
        }
    }

    pub fn avro_file(self) -> &'static str {
        match self {
            Contract::DetectorEvent => "schemas/detector-event.avsc",
            Contract::CanonicalEvent => "schemas/canonical-event.avsc",
            Contract::AuditEvent => "schemas/audit-event.avsc",
        }
    }

    pub fn avro_source(self) -> &'static str {
        match self {
            Contract::DetectorEvent => include_str!("../../schemas/detector-event.avsc"),
            Contract::CanonicalEvent => include_str!("../../schemas/canonical-event.avsc"),
            Contract::AuditEvent => include_str!("../../schemas/audit-event.avsc"),
        }
    }
}

/// Why an instance failed its schema. The message names the place and the rule, never the
/// offending value: a schema error on a detector event must not echo raw content into a
/// log line or a dead-letter header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub contract: &'static str,
    pub errors: Vec<String>,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} violated: {}", self.contract, self.errors.join("; "))
    }
}

impl std::error::Error for Violation {}

/// The compiled schemas.
pub struct Contracts {
    detector: Validator,
    canonical: Validator,
    audit: Validator,
}

impl fmt::Debug for Contracts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Contracts { .. }")
    }
}

/// At most this many schema errors are reported per instance; the first few say enough.
const MAX_ERRORS: usize = 5;

impl Contracts {
    pub fn load() -> Result<Contracts, ConfigErrors> {
        let mut errors = ConfigErrors::default();
        let parse = |c: Contract, errors: &mut ConfigErrors| -> Option<Value> {
            serde_json::from_str(c.source())
                .map_err(|e| errors.push(ConfigError::at_line(c.file().as_ref(), Some(e.line()), e.to_string())))
                .ok()
        };
        let docs: Vec<Option<Value>> = Contract::ALL.iter().map(|c| parse(*c, &mut errors)).collect();
        let [Some(det), Some(can), Some(aud)] = <[Option<Value>; 3]>::try_from(docs).expect("three contracts") else {
            return Err(errors.sorted());
        };
        let id = |v: &Value| v.get("$id").and_then(Value::as_str).unwrap_or_default().to_string();
        let registry = match jsonschema::Registry::new().extend([(id(&can), can.clone())]).and_then(|b| b.prepare()) {
            Ok(r) => r,
            Err(e) => return Err(ConfigError::new(Contract::CanonicalEvent.file(), e.to_string()).into()),
        };
        let build = |c: Contract, doc: &Value, errors: &mut ConfigErrors| {
            jsonschema::options()
                .should_validate_formats(true)
                .with_registry(&registry)
                .build(doc)
                .map_err(|e| {
                    errors.push(ConfigError::new(c.file(), format!("schema does not compile: {}", e.masked())))
                })
                .ok()
        };
        let detector = build(Contract::DetectorEvent, &det, &mut errors);
        let canonical = build(Contract::CanonicalEvent, &can, &mut errors);
        let audit = build(Contract::AuditEvent, &aud, &mut errors);
        for c in Contract::ALL {
            if let Err(e) = apache_avro::Schema::parse_str(c.avro_source()) {
                errors.push(ConfigError::new(c.avro_file(), format!("invalid Avro schema: {e}")));
            }
        }
        match (detector, canonical, audit) {
            (Some(detector), Some(canonical), Some(audit)) if errors.is_empty() => {
                Ok(Contracts { detector, canonical, audit })
            }
            _ => Err(errors.sorted()),
        }
    }

    pub fn validate(&self, contract: Contract, instance: &Value) -> Result<(), Violation> {
        let v = match contract {
            Contract::DetectorEvent => &self.detector,
            Contract::CanonicalEvent => &self.canonical,
            Contract::AuditEvent => &self.audit,
        };
        if v.is_valid(instance) {
            return Ok(());
        }
        let errors = v
            .iter_errors(instance)
            .take(MAX_ERRORS)
            .map(|e| {
                let at = e.instance_path().to_string();
                let at = if at.is_empty() { "/".to_string() } else { at };
                format!("at {at}: {}", e.masked_with("<value>"))
            })
            .collect();
        Err(Violation { contract: contract.file(), errors })
    }
}
