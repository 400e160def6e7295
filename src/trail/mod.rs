//! The tamper-evident audit trail on S3 (event-sourced: the ClickHouse projection can be
//! rebuilt from it alone, `mapper replay`).
//!
//! One hash chain per tenant. A tenant's events all live on one partition of the audit topic
//! (records are keyed by tenant), so one sink instance at a time extends a tenant's chain; the
//! conditional PUT on deterministic keys settles the rest (a zombie and its successor cannot
//! both write segment N). Per-tenant chains also let a tenant's auditor verify and read the
//! tenant's trail without reading anyone else's events.

pub mod replay;
pub mod segment;
pub mod store;
pub mod verify;
mod walk;

use std::collections::BTreeMap;
use std::path::Path;

use ed25519_dalek::{SigningKey, VerifyingKey};

use crate::config::S3Settings;
pub use store::{PutOutcome, TrailStore};
pub use walk::{walk_tenant, CheckedSegment, Finding};

/// Where a chain ends, as a writer needs to know it.
#[derive(Debug, Clone, PartialEq)]
pub struct ChainHead {
    pub seq: u64,
    pub hash: String,
    pub events_total: u64,
    pub watermarks: BTreeMap<String, i64>,
}

impl ChainHead {
    pub fn genesis() -> ChainHead {
        ChainHead { seq: 0, hash: segment::GENESIS.to_string(), events_total: 0, watermarks: BTreeMap::new() }
    }

    pub fn of(h: &segment::Header) -> ChainHead {
        ChainHead {
            seq: h.body.seq,
            hash: h.segment_hash.clone(),
            events_total: h.body.events_total,
            watermarks: h.body.watermarks.clone(),
        }
    }
}

/// Reads the head of `tenant`'s chain from the bucket. A head that does not check out is an
/// error: a writer must never extend a chain it cannot vouch for.
pub async fn load_head(store: &TrailStore, tenant: &str, key: &VerifyingKey) -> anyhow::Result<ChainHead> {
    let keys = store.list(&store.segments_prefix(tenant)).await?;
    let Some(last) = keys.iter().rfind(|k| TrailStore::seq_of_key(k).is_some()) else {
        return Ok(ChainHead::genesis());
    };
    let raw = segment::decode(&store.get(last).await?).map_err(|e| anyhow::anyhow!("chain head {last}: {e}"))?;
    let h = &raw.header;
    anyhow::ensure!(h.body.hash() == h.segment_hash, "chain head {last}: header does not match its hash");
    anyhow::ensure!(segment::signature_ok(h, key), "chain head {last}: signature does not verify with the trail key");
    anyhow::ensure!(
        TrailStore::seq_of_key(last) == Some(h.body.seq),
        "chain head {last}: header says seq {}",
        h.body.seq
    );
    Ok(ChainHead::of(h))
}

/// Reads an ed25519 signing key: 64 hex characters (the 32-byte seed), owner-only.
pub fn read_signing_key(path: &Path) -> anyhow::Result<SigningKey> {
    Ok(SigningKey::from_bytes(&crate::config::secrets::read_key_file(path, "signing key")?))
}

/// A fresh signing key from the OS's randomness.
pub fn generate_signing_key() -> anyhow::Result<SigningKey> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    Ok(SigningKey::from_bytes(&seed))
}

pub fn parse_verifying_key(hex_key: &str) -> anyhow::Result<VerifyingKey> {
    let bytes: [u8; 32] = hex::decode(hex_key.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| anyhow::anyhow!("verify key: expected 64 hex characters"))?;
    VerifyingKey::from_bytes(&bytes).map_err(|e| anyhow::anyhow!("verify key: {e}"))
}

/// The key a verifier trusts: `s3.verify_key`, else the public half of `s3.signing_key_file`.
pub fn verifying_key(s: &S3Settings) -> anyhow::Result<VerifyingKey> {
    if let Some(k) = &s.verify_key {
        return parse_verifying_key(k);
    }
    match &s.signing_key_file {
        Some(f) => Ok(read_signing_key(f)?.verifying_key()),
        None => anyhow::bail!("no trail key: set s3.verify_key (public key, hex) or s3.signing_key_file"),
    }
}
