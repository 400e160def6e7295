//! Settings of the sink workers (`mapper sink clickhouse`, `mapper sink s3`) and of the tools
//! that read what they wrote (`mapper audit verify`, `mapper replay`).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// How the sink workers consume the output topics. Each sink is its own consumer group, so
/// each scales (and lags) on its own.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SinkSettings {
    /// Consumer group of `mapper sink clickhouse`.
    pub clickhouse_group: String,
    /// Consumer group of `mapper sink s3`.
    pub s3_group: String,
    /// Most records written (and committed) together.
    pub batch_size: usize,
    /// Longest wait to fill a batch. For the S3 sink this is also the longest a segment stays
    /// open: each batch closes one segment per tenant it holds.
    pub batch_timeout_ms: u64,
    /// Rows the sinks cannot write (ClickHouse refused them, or they do not decode) go here
    /// with the reason, never silently dropped.
    pub dlq_topic: String,
}

impl Default for SinkSettings {
    fn default() -> Self {
        SinkSettings {
            clickhouse_group: "llama-mapper-sink-clickhouse".into(),
            s3_group: "llama-mapper-sink-s3".into(),
            batch_size: 5000,
            batch_timeout_ms: 2000,
            dlq_topic: "mapper.sink.dlq.v1".into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ClickHouseSettings {
    /// HTTP(S) interface of the server, e.g. `http://127.0.0.1:8123`.
    pub url: String,
    pub database: String,
    pub user: String,
    pub password: String,
    /// Hot retention of the projections (TTL), in days. The S3 trail keeps everything.
    pub ttl_days: u32,
}

impl Default for ClickHouseSettings {
    fn default() -> Self {
        ClickHouseSettings {
            url: "http://127.0.0.1:8123".into(),
            database: "default".into(),
            user: "default".into(),
            password: String::new(),
            ttl_days: 90,
        }
    }
}

/// Object Lock retention mode of every trail object.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "UPPERCASE")]
pub enum RetentionMode {
    /// Nobody, root included, can delete or shorten before the date: audit evidence.
    Compliance,
    /// Deletable with `s3:BypassGovernanceRetention`: for test and staging buckets only.
    Governance,
}

impl RetentionMode {
    pub fn as_str(self) -> &'static str {
        match self {
            RetentionMode::Compliance => "COMPLIANCE",
            RetentionMode::Governance => "GOVERNANCE",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct S3Settings {
    /// Endpoint URL for S3-compatible stores (MinIO, SeaweedFS); unset means AWS.
    pub endpoint: Option<String>,
    pub region: String,
    /// Must have Object Lock enabled (`mapper audit init-bucket` creates one that has).
    pub bucket: String,
    /// Key prefix of the trail inside the bucket.
    pub prefix: String,
    /// Path-style addressing (`endpoint/bucket/key`), which local S3 servers need.
    pub force_path_style: bool,
    /// Static credentials; when unset, `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`.
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub retention_mode: RetentionMode,
    /// Object Lock retention of every object, in days: 7 years by default, as audit evidence
    /// usually must be kept (SOC 2 / HIPAA practice).
    pub retention_days: u32,
    /// Ed25519 signing key (32-byte seed, hex) that signs every segment's chain head. Create
    /// one with `mapper audit keygen`. Required by `mapper sink s3`.
    pub signing_key_file: Option<PathBuf>,
    /// Ed25519 public key (hex) that `mapper audit verify` trusts; derived from the signing key
    /// file when unset.
    pub verify_key: Option<String>,
}

impl Default for S3Settings {
    fn default() -> Self {
        S3Settings {
            endpoint: None,
            region: "us-east-1".into(),
            bucket: "llama-mapper-audit".into(),
            prefix: "trail".into(),
            force_path_style: true,
            access_key_id: None,
            secret_access_key: None,
            retention_mode: RetentionMode::Compliance,
            retention_days: 7 * 365 + 2,
            signing_key_file: None,
            verify_key: None,
        }
    }
}
