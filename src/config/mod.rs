//! Runtime settings: built-in defaults → YAML file → `LLAMA_MAPPER_*` environment, with `__`
//! for nesting (`LLAMA_MAPPER_KAFKA__BROKERS`), merged by figment.
//!
//! The catalog (taxonomy, packs, frameworks) is *not* here: it is versioned data with its own
//! loader. Settings are how one deployment runs: where the catalog lives, logging, and the
//! threshold overrides operators tune per tenant and environment without editing packs.

pub mod thresholds;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Yaml};
use figment::Figment;
use serde::{Deserialize, Serialize};

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
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            catalog_dir: PathBuf::from("pillars-detectors"),
            log: LogSettings::default(),
            thresholds: BTreeMap::new(),
            tenants: BTreeMap::new(),
            environments: BTreeMap::new(),
        }
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
