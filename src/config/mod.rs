//! Runtime settings: built-in defaults → YAML file → `LLAMA_MAPPER_*` environment, with `__`
//! for nesting (`LLAMA_MAPPER_KAFKA__BROKERS`), merged by figment.
//!
//! The catalog (taxonomy, packs, frameworks) is *not* here: it is versioned data with its own
//! loader. Settings are how one deployment runs: where the catalog lives, logging, and the
//! threshold overrides operators tune per tenant and environment without editing packs.

pub mod model;
pub mod secrets;
pub mod sinks;
pub mod thresholds;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Yaml};
use figment::Figment;
use serde::{Deserialize, Serialize};

pub use model::ModelSettings;
pub use sinks::{ClickHouseSettings, RetentionMode, S3Settings, SinkSettings};
pub use thresholds::{ThresholdPolicy, ThresholdSource};

/// Environment variable prefix for every setting.
pub const ENV_PREFIX: &str = "LLAMA_MAPPER_";
/// Config file used when neither `--config` nor `LLAMA_MAPPER_CONFIG` names one and it exists.
pub const DEFAULT_CONFIG_FILE: &str = "llama-mapper.yaml";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Directory holding taxonomy.yaml, frameworks.yaml and the detector packs.
    pub catalog_dir: PathBuf,
    pub log: LogSettings,
    /// Per-detector threshold overrides for every tenant and environment.
    pub thresholds: BTreeMap<String, f64>,
    pub tenants: BTreeMap<String, ScopeSettings>,
    pub environments: BTreeMap<String, ScopeSettings>,
    pub ingest: IngestSettings,
    pub kafka: KafkaSettings,
    pub avro: AvroSettings,
    pub sink: SinkSettings,
    pub clickhouse: ClickHouseSettings,
    pub s3: S3Settings,
    pub model: ModelSettings,
    pub privacy: PrivacySettings,
    /// Where `/metrics`, `/healthz` and `/readyz` listen during `mapper run`.
    pub metrics_addr: String,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            catalog_dir: PathBuf::from("pillars-detectors"),
            log: LogSettings::default(),
            thresholds: BTreeMap::new(),
            tenants: BTreeMap::new(),
            environments: BTreeMap::new(),
            ingest: IngestSettings::default(),
            kafka: KafkaSettings::default(),
            avro: AvroSettings::default(),
            sink: SinkSettings::default(),
            clickhouse: ClickHouseSettings::default(),
            s3: S3Settings::default(),
            model: ModelSettings::default(),
            privacy: PrivacySettings::default(),
            metrics_addr: "127.0.0.1:9464".into(),
        }
    }
}

/// What of a raw label may leave memory (see `crate::labels::LabelShield`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PrivacySettings {
    /// 32 bytes as 64 hex characters, readable by its owner only (`mapper audit keygen --out
    /// FILE` writes one), shared by every instance. With it, a raw label that is not shaped like
    /// a label is recorded as `h:` + its keyed hash (the same text gives the same hash, so
    /// recurring free text can still be counted); without it, as `redacted:<chars>`.
    pub label_key_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct IngestSettings {
    /// Larger encoded events go to the dead-letter topic as `oversized`.
    pub max_event_bytes: usize,
    /// Only tenants listed under `tenants` are served; others go to the DLQ as `unknown_tenant`.
    /// Off by default so a first deployment does not bounce everything.
    pub known_tenants_only: bool,
}

impl Default for IngestSettings {
    fn default() -> Self {
        IngestSettings { max_event_bytes: crate::ingest::DEFAULT_MAX_EVENT_BYTES, known_tenants_only: false }
    }
}

/// Delivery guarantee of `mapper run`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Guarantee {
    /// Outputs and input offsets commit in one Kafka transaction.
    ExactlyOnce,
    /// Idempotent producer; offsets committed after every output is acknowledged.
    AtLeastOnce,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum WireFormat {
    Json,
    Avro,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaSettings {
    pub brokers: String,
    pub group: String,
    pub input_topic: String,
    pub canonical_topic: String,
    pub audit_topic: String,
    pub dlq_topic: String,
    pub guarantee: Guarantee,
    /// Stable identity of this instance: its transactional.id is `<group>-<instance_id>`, which
    /// is what fences a zombie of the same instance after a restart. Default: the host name.
    pub instance_id: Option<String>,
    /// Most input records mapped (and committed) together. A transaction costs a few broker
    /// round trips whatever its size, so large batches carry throughput (see README figures).
    pub batch_size: usize,
    /// Longest wait to fill a batch before mapping what arrived.
    pub batch_timeout_ms: u64,
    /// A batch closes early once no record followed the last one for this long, so at low
    /// rates latency is a few ms rather than `batch_timeout_ms`, while under load (the next
    /// record is always already fetched) batches still fill to `batch_size`. 0: always wait
    /// `batch_timeout_ms`.
    pub batch_idle_ms: u64,
    pub output_format: WireFormat,
    /// About 6 s: long enough for a loaded host, short enough that a killed instance's
    /// partitions move quickly.
    pub session_timeout_ms: u32,
    pub transaction_timeout_ms: u32,
    /// `/healthz` turns 503 when one batch has been in progress (read but not committed,
    /// retries included) for longer than this: a stuck loop gets restarted by its probe.
    /// Longer than a broker failover or a slow model batch; 0 disables the check.
    pub stall_timeout_ms: u64,
    /// Extra librdkafka properties (security, tuning), passed through unchanged.
    pub client: BTreeMap<String, String>,
}

impl KafkaSettings {
    /// These settings with a command's `--brokers` applied, when it was given.
    pub fn with_brokers(&self, brokers: Option<&str>) -> KafkaSettings {
        let mut k = self.clone();
        if let Some(b) = brokers {
            k.brokers = b.to_string();
        }
        k
    }
}

impl Default for KafkaSettings {
    fn default() -> Self {
        KafkaSettings {
            brokers: "127.0.0.1:9092".into(),
            group: "llama-mapper".into(),
            input_topic: "detector.events.v1".into(),
            canonical_topic: "mapper.canonical.v1".into(),
            audit_topic: "mapper.audit.v1".into(),
            dlq_topic: "mapper.dlq.v1".into(),
            guarantee: Guarantee::ExactlyOnce,
            instance_id: None,
            batch_size: 2000,
            batch_timeout_ms: 100,
            batch_idle_ms: 5,
            output_format: WireFormat::Json,
            session_timeout_ms: 6000,
            transaction_timeout_ms: 60_000,
            stall_timeout_ms: 120_000,
            client: BTreeMap::new(),
        }
    }
}

/// Avro in the Confluent wire format (magic byte 0, 4-byte schema id, datum).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AvroSettings {
    /// Schema registry base URL; input schemas with other ids are fetched from it.
    pub registry_url: Option<String>,
    /// Id under which `schemas/detector-event.avsc` is known (used without a registry).
    pub detector_event_schema_id: u32,
    pub canonical_schema_id: u32,
    pub audit_schema_id: u32,
}

impl Default for AvroSettings {
    fn default() -> Self {
        AvroSettings { registry_url: None, detector_event_schema_id: 1, canonical_schema_id: 2, audit_schema_id: 3 }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    /// `text` for people, `json` for log pipelines.
    pub format: LogFormat,
    /// An `EnvFilter` directive; `RUST_LOG` wins when set.
    pub level: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings { format: LogFormat::Text, level: "info".into() }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// Overrides scoped to one tenant or one environment.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ScopeSettings {
    pub thresholds: BTreeMap<String, f64>,
}

/// Where the settings came from, for `show-config` and error messages.
#[derive(Debug, Clone)]
pub struct LoadedSettings {
    pub settings: Settings,
    pub file: Option<PathBuf>,
}

impl Settings {
    /// Loads defaults, then `file` (or `llama-mapper.yaml` when present), then the environment.
    pub fn load(file: Option<&Path>) -> Result<LoadedSettings, Box<figment::Error>> {
        Self::load_with_env(file, Env::prefixed(ENV_PREFIX).split("__").ignore(&["config"]))
    }

    fn load_with_env(file: Option<&Path>, env: Env) -> Result<LoadedSettings, Box<figment::Error>> {
        let file = file.map(Path::to_path_buf).or_else(|| {
            let p = PathBuf::from(DEFAULT_CONFIG_FILE);
            p.exists().then_some(p)
        });
        let mut fig = Figment::from(Serialized::defaults(Settings::default()));
        if let Some(f) = &file {
            if !f.exists() {
                return Err(Box::new(figment::Error::from(format!("config file {} does not exist", f.display()))));
            }
            fig = fig.merge(Yaml::file_exact(f));
        }
        let settings: Settings = fig.merge(env).extract().map_err(Box::new)?;
        Ok(LoadedSettings { settings, file })
    }

    pub fn threshold_policy(&self) -> ThresholdPolicy {
        ThresholdPolicy::from_settings(self)
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail's closure signature
mod tests {
    use super::*;

    #[test]
    fn env_overrides_file_overrides_defaults() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("c.yaml", "catalog_dir: from-file\nthresholds: {presidio: 0.7}\nlog: {level: debug}\n")?;
            jail.set_env("LLAMA_MAPPER_LOG__LEVEL", "warn");
            jail.set_env("LLAMA_MAPPER_TENANTS__ACME__THRESHOLDS__PRESIDIO", "0.9");
            let s = Settings::load(Some(Path::new("c.yaml"))).unwrap().settings;
            assert_eq!(s.catalog_dir, PathBuf::from("from-file"));
            assert_eq!(s.log.level, "warn", "environment wins over the file");
            assert_eq!(s.log.format, LogFormat::Text, "default kept");
            assert_eq!(s.thresholds["presidio"], 0.7);
            assert_eq!(s.tenants["acme"].thresholds["presidio"], 0.9);
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_are_refused_with_the_key_named() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("c.yaml", "catalog_dri: x\n")?;
            let err = Settings::load(Some(Path::new("c.yaml"))).unwrap_err().to_string();
            assert!(err.contains("catalog_dri"), "{err}");
            Ok(())
        });
    }
}
