//! The segment: one object of a tenant's trail, holding a run of that tenant's audit events.
//!
//! Format (`llama-mapper-trail/1`): gzip-compressed NDJSON, readable with `zcat`. Line 1 is
//! the header, every further line one audit event as published. The header binds the events
//! (a Merkle root over them, plus a short digest of each so a verifier can name the altered
//! event) and the chain (its sequence number and the previous segment's hash). Its own hash is
//! signed with the trail's ed25519 key, so every segment is a signed checkpoint of its chain
//! head: a verifier holding only the public key can trust a head without trusting the bucket.

use std::collections::BTreeMap;
use std::io::{BufRead, Read, Write};

use base64::Engine as _;
use ed25519_dalek::{Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub const FORMAT: &str = "llama-mapper-trail/1";
/// `prev_hash` of a chain's first segment.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
const SIGNING_DOMAIN: &[u8] = b"llama-mapper-trail/1 segment ";

/// What the segment hash covers: everything in the header but the hash and the signature.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderBody {
    pub format: String,
    pub tenant_id: String,
    /// 1 for a chain's first segment, then +1 per segment.
    pub seq: u64,
    pub prev_hash: String,
    pub events: u64,
    /// Events in the chain up to and including this segment.
    pub events_total: u64,
    pub merkle_root: String,
    /// First 8 bytes (hex) of each event's leaf hash, in order: names an altered event.
    pub event_digests: Vec<String>,
    pub first_ts: String,
    pub last_ts: String,
    /// Highest source offset in the chain so far per `topic/partition`: how a sink that
    /// restarts after a crash knows which re-delivered events the trail already holds.
    pub watermarks: BTreeMap<String, i64>,
    pub created_at: String,
    /// First 8 bytes (hex) of the public key that signed.
    pub key_id: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    #[serde(flatten)]
    pub body: HeaderBody,
    pub segment_hash: String,
    /// Base64 ed25519 signature of `segment_hash`.
    pub signature: String,
}

pub fn leaf_hash(event_line: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(event_line);
    h.finalize().into()
}

/// RFC 6962-style Merkle root (0x00 leaf / 0x01 node prefixes; an odd node is promoted).
pub fn merkle_root(leaves: &[[u8; 32]]) -> [u8; 32] {
    if leaves.is_empty() {
        return Sha256::digest([]).into();
    }
    let mut level = leaves.to_vec();
    while level.len() > 1 {
        level = level
            .chunks(2)
            .map(|pair| match pair {
                [l, r] => {
                    let mut h = Sha256::new();
                    h.update([1u8]);
                    h.update(l);
                    h.update(r);
                    h.finalize().into()
                }
                [one] => *one,
                _ => unreachable!(),
            })
            .collect();
    }
    level[0]
}

pub fn digest_of(leaf: &[u8; 32]) -> String {
    hex::encode(&leaf[..8])
}

impl HeaderBody {
    pub fn hash(&self) -> String {
        let bytes = serde_json::to_vec(self).expect("header serializes");
        hex::encode(Sha256::digest(bytes))
    }
}

pub fn key_id(key: &VerifyingKey) -> String {
    hex::encode(&key.as_bytes()[..8])
}

fn signed_message(segment_hash: &str) -> Vec<u8> {
    [SIGNING_DOMAIN, segment_hash.as_bytes()].concat()
}

pub fn seal(body: HeaderBody, key: &SigningKey) -> Header {
    let segment_hash = body.hash();
    let sig = key.sign(&signed_message(&segment_hash));
    Header { body, segment_hash, signature: base64::engine::general_purpose::STANDARD.encode(sig.to_bytes()) }
}

/// Checks the signature over `segment_hash` (not whether the hash matches the body).
pub fn signature_ok(header: &Header, key: &VerifyingKey) -> bool {
    let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(&header.signature) else { return false };
    let Ok(sig) = ed25519_dalek::Signature::from_slice(&bytes) else { return false };
    key.verify(&signed_message(&header.segment_hash), &sig).is_ok()
}

/// The object body: gzip(header line + event lines).
pub fn encode(header: &Header, event_lines: &[String]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
    let write = |gz: &mut flate2::write::GzEncoder<Vec<u8>>| -> std::io::Result<()> {
        serde_json::to_writer(&mut *gz, header)?;
        gz.write_all(b"\n")?;
        for l in event_lines {
            gz.write_all(l.as_bytes())?;
            gz.write_all(b"\n")?;
        }
        Ok(())
    };
    write(&mut gz).expect("writing to memory");
    gz.finish().expect("writing to memory")
}

/// A segment as read back: the header as written and the event lines, unverified.
#[derive(Debug, Clone)]
pub struct RawSegment {
    pub header: Header,
    pub lines: Vec<String>,
}

/// Parses an object body. Errors say what is wrong with the object as a whole.
pub fn decode(body: &[u8]) -> Result<RawSegment, String> {
    let mut text = Vec::new();
    flate2::read::GzDecoder::new(body).read_to_end(&mut text).map_err(|e| format!("not a valid gzip stream: {e}"))?;
    let mut lines = text.lines();
    let first = lines.next().ok_or("empty segment")?.map_err(|e| format!("not UTF-8: {e}"))?;
    let header: Header = serde_json::from_str(&first).map_err(|e| format!("unreadable header: {e}"))?;
    let lines = lines.collect::<Result<Vec<String>, _>>().map_err(|e| format!("not UTF-8: {e}"))?;
    Ok(RawSegment { header, lines })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SigningKey {
        SigningKey::from_bytes(&[7u8; 32])
    }

    fn body(lines: &[String]) -> HeaderBody {
        let leaves: Vec<[u8; 32]> = lines.iter().map(|l| leaf_hash(l.as_bytes())).collect();
        HeaderBody {
            format: FORMAT.into(),
            tenant_id: "t".into(),
            seq: 1,
            prev_hash: GENESIS.into(),
            events: lines.len() as u64,
            events_total: lines.len() as u64,
            merkle_root: hex::encode(merkle_root(&leaves)),
            event_digests: leaves.iter().map(digest_of).collect(),
            first_ts: "a".into(),
            last_ts: "b".into(),
            watermarks: BTreeMap::from([("audit/0".into(), 9)]),
            created_at: "c".into(),
            key_id: key_id(&key().verifying_key()),
        }
    }

    #[test]
    fn round_trip_keeps_hash_and_signature_valid() {
        let lines = vec!["{\"a\":1}".to_string(), "{\"a\":2}".to_string(), "{\"a\":3}".to_string()];
        let h = seal(body(&lines), &key());
        let raw = decode(&encode(&h, &lines)).unwrap();
        assert_eq!(raw.lines, lines);
        assert_eq!(raw.header.body.hash(), raw.header.segment_hash);
        assert!(signature_ok(&raw.header, &key().verifying_key()));
        assert!(!signature_ok(&raw.header, &SigningKey::from_bytes(&[8u8; 32]).verifying_key()));
    }

    #[test]
    fn merkle_root_sees_order_and_content() {
        let l = |s: &str| leaf_hash(s.as_bytes());
        let abc = merkle_root(&[l("a"), l("b"), l("c")]);
        assert_ne!(abc, merkle_root(&[l("b"), l("a"), l("c")]), "reordering");
        assert_ne!(abc, merkle_root(&[l("a"), l("b")]), "removal");
        assert_ne!(abc, merkle_root(&[l("a"), l("b"), l("d")]), "edit");
        assert_eq!(abc, merkle_root(&[l("a"), l("b"), l("c")]));
    }

    #[test]
    fn any_header_change_changes_the_hash() {
        let lines = vec!["x".to_string()];
        let b = body(&lines);
        let mut c = b.clone();
        c.seq = 2;
        assert_ne!(b.hash(), c.hash());
        let mut c = b.clone();
        c.watermarks.insert("audit/0".into(), 10);
        assert_ne!(b.hash(), c.hash());
    }
}
