//! Avro input in the Confluent wire format: byte 0 = magic 0, bytes 1..5 = schema id (big
//! endian), then one Avro datum. The writer schema comes from the local
//! `schemas/detector-event.avsc` when the id is the configured one, otherwise from the schema
//! registry (`avro.registry_url`, Confluent API `GET /schemas/ids/{id}`), fetched once per id.
//! A producer's newer writer schema is resolved against ours by Avro's resolution rules, so
//! detector teams can add optional fields without breaking the processor.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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

/// A registry's answer for one id: the schema, or why it cannot be used.
type SchemaAnswer = Result<Arc<Schema>, Rejected>;

/// Where writer schemas come from: the local file under one id, the registry for the rest.
#[derive(Debug, Clone)]
pub struct SchemaSource {
    local_id: u32,
    registry_url: Option<String>,
    /// Answers per id, failures included (an id the registry does not know stays unknown);
    /// transport failures are not cached.
    cache: Arc<Mutex<HashMap<u32, SchemaAnswer>>>,
    /// Ids the registry refused (401, 403, 500, …) while answering others: how often, and
    /// until when it is no longer asked after [`SCHEMA_TRIES`] refusals.
    refusals: Arc<Mutex<HashMap<u32, Refusals>>>,
}

/// How often the registry refused one id, and until when it is not asked again.
type Refusals = (u32, Option<Instant>);

/// Refusals of one id before its events are dead-lettered as `schema_unavailable`: a few
/// batch retries (about two seconds of backoff) ride out a registry deploy, and an id that
/// stays refused cannot stop its partition.
pub const SCHEMA_TRIES: u32 = 5;
/// How long an id given up on is not asked for again (its events go straight to the DLQ).
const SCHEMA_GIVE_UP_FOR: Duration = Duration::from_secs(60);

/// What the registry said about one id.
enum Fetched {
    Schema(Schema),
    /// The id is not servable as it stands (404, not Avro): cached, the event is undecodable.
    Final(Rejected),
    /// The registry is down for everyone (no connection, timeout, 429/502/503/504): the
    /// batch waits, never dead-lettered.
    Down(Rejected),
    /// The registry answers, but refuses this id: counted towards [`SCHEMA_TRIES`].
    Refused(Rejected),
}

impl SchemaSource {
    pub fn new(local_id: u32, registry_url: Option<String>) -> Self {
        SchemaSource { local_id, registry_url, cache: Default::default(), refusals: Default::default() }
    }

    fn writer_schema(&self, id: u32) -> Result<Arc<Schema>, Rejected> {
        if let Some(s) = self.cache.lock().expect("schema cache").get(&id) {
            return s.clone();
        }
        let Some(base) = &self.registry_url else {
            return Err(Rejected::new(
                RejectReason::Undecodable,
                format!(
                    "unknown Avro schema id {id} (no registry configured; id {} = schemas/detector-event.avsc)",
                    self.local_id
                ),
            ));
        };
        if let Some((n, Some(until))) = self.refusals.lock().expect("schema refusals").get(&id) {
            if Instant::now() < *until {
                return Err(given_up(id, *n));
            }
        }
        let answer = match fetch_schema(base, id) {
            Fetched::Schema(s) => Ok(Arc::new(s)),
            Fetched::Final(r) => Err(r),
            Fetched::Down(r) => return Err(r),
            Fetched::Refused(r) => {
                let mut refusals = self.refusals.lock().expect("schema refusals");
                let (n, until) = refusals.entry(id).or_insert((0, None));
                *n += 1;
                if *n < SCHEMA_TRIES {
                    return Err(Rejected::new(RejectReason::Unavailable, r.detail));
                }
                *until = Some(Instant::now() + SCHEMA_GIVE_UP_FOR);
                tracing::warn!(schema_id = id, refusals = *n, error = %r.detail, "registry keeps refusing a schema id; its events go to the dead-letter topic");
                return Err(given_up(id, *n));
            }
        };
        self.refusals.lock().expect("schema refusals").remove(&id);
        self.cache.lock().expect("schema cache").insert(id, answer.clone());
        answer
    }

    /// Decodes a framed detector event into its JSON form (`output` and `metadata` parsed from
    /// their JSON text), ready for schema validation.
    pub fn decode_detector_event(&self, bytes: &[u8]) -> Result<Value, Rejected> {
        let (id, mut datum) = unframe(bytes)?;
        let reader: &Schema = avro::schema(Contract::DetectorEvent);
        // With a registry, every id is the registry's; the local file is for registry-less setups.
        let v = if id == self.local_id && self.registry_url.is_none() {
            apache_avro::from_avro_datum(reader, &mut datum, None)
        } else {
            let writer = self.writer_schema(id)?;
            apache_avro::from_avro_datum(&writer, &mut datum, Some(reader))
        }
        // apache-avro's messages quote the decoded values (which may be raw content): only the
        // fact is reported.
        .map_err(|_| {
            Rejected::new(RejectReason::Undecodable, format!("Avro datum does not match writer schema id {id}"))
        })?;
        if !datum.is_empty() {
            return Err(Rejected::new(
                RejectReason::Undecodable,
                format!("{} trailing bytes after the Avro datum", datum.len()),
            ));
        }
        let mut json = Value::try_from(v)
            .map_err(|_| Rejected::new(RejectReason::Undecodable, "Avro value has no JSON form (e.g. a NaN double)"))?;
        for field in ["output", "metadata"] {
            if let Some(Value::String(text)) = json.get(field) {
                let parsed: Value = serde_json::from_str(text).map_err(|e| {
                    Rejected::new(
                        RejectReason::Undecodable,
                        format!("`{field}` is not JSON text (line {}, column {})", e.line(), e.column()),
                    )
                })?;
                json[field] = parsed;
            }
        }
        Ok(json)
    }
}

fn given_up(id: u32, refusals: u32) -> Rejected {
    Rejected::new(
        RejectReason::SchemaUnavailable,
        format!(
            "the schema registry refused schema id {id} {refusals} times; not asked again for {SCHEMA_GIVE_UP_FOR:?}"
        ),
    )
}

/// `GET {base}/schemas/ids/{id}` → `{"schema": "<avsc>"}`.
fn fetch_schema(base: &str, id: u32) -> Fetched {
    let url = format!("{}/schemas/ids/{id}", base.trim_end_matches('/'));
    let agent: ureq::Agent = ureq::Agent::config_builder().timeout_global(Some(Duration::from_secs(5))).build().into();
    let mut resp = match agent.get(&url).call() {
        Ok(r) => r,
        Err(ureq::Error::StatusCode(404)) => {
            return Fetched::Final(Rejected::new(
                RejectReason::Undecodable,
                format!("schema id {id} not found in the registry"),
            ))
        }
        Err(ureq::Error::StatusCode(code @ (429 | 502 | 503 | 504))) => {
            return Fetched::Down(Rejected::new(
                RejectReason::Unavailable,
                format!("schema registry unavailable (HTTP {code}) for id {id}"),
            ))
        }
        Err(ureq::Error::StatusCode(code)) => {
            return Fetched::Refused(Rejected::new(
                RejectReason::Unavailable,
                format!("schema registry answered HTTP {code} for id {id}"),
            ))
        }
        Err(e) => {
            return Fetched::Down(Rejected::new(
                RejectReason::Unavailable,
                format!("schema registry unreachable for id {id}: {e}"),
            ))
        }
    };
    match parse_answer(id, &mut resp) {
        Ok(s) => Fetched::Schema(s),
        Err(r) if r.reason == RejectReason::Unavailable => Fetched::Down(r),
        Err(r) => Fetched::Final(r),
    }
}

fn parse_answer(id: u32, resp: &mut ureq::http::Response<ureq::Body>) -> Result<Schema, Rejected> {
    let text = resp.body_mut().read_to_string().map_err(|e| {
        Rejected::new(RejectReason::Unavailable, format!("registry answer for id {id} unreadable: {e}"))
    })?;
    let body: Value = serde_json::from_str(&text)
        .map_err(|_| Rejected::new(RejectReason::Undecodable, format!("registry answer for id {id} is not JSON")))?;
    let text = body.get("schema").and_then(Value::as_str).ok_or_else(|| {
        Rejected::new(RejectReason::Undecodable, format!("registry answer for id {id} has no `schema`"))
    })?;
    Schema::parse_str(text).map_err(|e| {
        Rejected::new(RejectReason::Undecodable, format!("registry schema id {id} is not valid Avro: {e}"))
    })
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
        let back = SchemaSource::new(7, None).decode_detector_event(&bytes).unwrap();
        assert_eq!(back["output"], ev["output"]);
        assert_eq!(back["metadata"], ev["metadata"]);
        assert_eq!(back["event_id"], "a");
        let err = SchemaSource::new(8, None).decode_detector_event(&bytes).unwrap_err();
        assert!(err.detail.contains("unknown Avro schema id 7"), "{}", err.detail);
        assert!(SchemaSource::new(7, None).decode_detector_event(&bytes[..8]).is_err());
    }

    /// A writer schema from a registry (here a one-shot HTTP responder speaking the Confluent
    /// `GET /schemas/ids/{id}` format) with an extra field still decodes into our reader schema.
    #[test]
    fn registry_writer_schema_is_resolved_against_ours() {
        let mut writer: Value = serde_json::from_str(Contract::DetectorEvent.avro_source()).unwrap();
        writer["fields"].as_array_mut().unwrap().push(json!({"name": "team", "type": "string", "default": "x"}));
        let writer_schema = Schema::parse(&writer).unwrap();
        let ev = json!({"event_id": "r", "tenant_id": "t", "detector": "presidio", "ts": "2025-09-01T00:00:00Z",
            "output": "[]", "team": "pii-squad"});
        let datum = apache_avro::to_avro_datum(
            &writer_schema,
            apache_avro::types::Value::from(ev).resolve(&writer_schema).unwrap(),
        )
        .unwrap();
        let bytes = frame(42, &datum);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let body = json!({"schema": writer.to_string()}).to_string();
        let server = std::thread::spawn(move || {
            use std::io::{Read, Write};
            let (mut s, _) = listener.accept().unwrap();
            let mut req = [0u8; 1024];
            let n = s.read(&mut req).unwrap();
            assert!(String::from_utf8_lossy(&req[..n]).starts_with("GET /schemas/ids/42 "));
            write!(s, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).unwrap();
        });
        let src = SchemaSource::new(42, Some(format!("http://127.0.0.1:{port}")));
        let back = src.decode_detector_event(&bytes).unwrap();
        assert_eq!(back["event_id"], "r");
        assert_eq!(back["output"], json!([]));
        assert!(back.get("team").is_none(), "reader schema has no such field");
        server.join().unwrap();
        // Cached: a second decode needs no registry (the responder is gone).
        assert_eq!(src.decode_detector_event(&bytes).unwrap()["event_id"], "r");
        // An unreachable registry is not the event's fault: retry, never dead-letter.
        let down = SchemaSource::new(1, Some(format!("http://127.0.0.1:{port}")));
        assert_eq!(down.decode_detector_event(&bytes).unwrap_err().reason, RejectReason::Unavailable);
    }

    /// A registry that answers every request with `status`, counting requests.
    fn refusing_registry(status: u16) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = Arc::clone(&hits);
        std::thread::spawn(move || {
            for s in listener.incoming() {
                let mut s = s.unwrap();
                let _ = s.read(&mut [0u8; 1024]);
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let _ = write!(s, "HTTP/1.1 {status} Nope\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            }
        });
        (url, hits)
    }

    #[test]
    fn an_id_the_registry_keeps_refusing_is_dead_lettered_after_a_few_tries_not_retried_forever() {
        let bytes = frame(77, &[0u8]);
        let (url, hits) = refusing_registry(403);
        let src = SchemaSource::new(1, Some(url));
        for i in 1..SCHEMA_TRIES {
            assert_eq!(src.decode_detector_event(&bytes).unwrap_err().reason, RejectReason::Unavailable, "try {i}");
        }
        let r = src.decode_detector_event(&bytes).unwrap_err();
        assert_eq!(r.reason, RejectReason::SchemaUnavailable, "{r}");
        assert!(r.detail.contains("77"), "{r}");
        let asked = hits.load(std::sync::atomic::Ordering::SeqCst);
        assert_eq!(asked, SCHEMA_TRIES as usize);
        // Given up: the next events of that id go to the DLQ without asking again.
        assert_eq!(src.decode_detector_event(&bytes).unwrap_err().reason, RejectReason::SchemaUnavailable);
        assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), asked);
    }

    #[test]
    fn a_registry_that_is_down_for_everyone_pauses_the_batch_however_often_it_is_asked() {
        let bytes = frame(78, &[0u8]);
        let (url, hits) = refusing_registry(503);
        let src = SchemaSource::new(1, Some(url));
        for _ in 0..(SCHEMA_TRIES * 2) {
            assert_eq!(src.decode_detector_event(&bytes).unwrap_err().reason, RejectReason::Unavailable);
        }
        assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), SCHEMA_TRIES as usize * 2);
    }
}
