//! `mapper set-threshold` and `mapper show-thresholds`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use serde_yaml::{Mapping, Value};

use crate::catalog::Catalog;
use crate::config::{LoadedSettings, Settings, ThresholdSource, DEFAULT_CONFIG_FILE};

#[derive(Debug, Args, Default)]
pub struct ScopeArgs {
    /// Resolve for this tenant.
    #[arg(long)]
    pub tenant: Option<String>,
    /// Resolve for this environment (policy_context.environment of the events).
    #[arg(long)]
    pub environment: Option<String>,
}

#[derive(Debug, Args)]
pub struct SetThresholdArgs {
    #[arg(long)]
    pub detector: String,
    /// Hit threshold in [0, 1].
    #[arg(long)]
    pub threshold: f64,
    /// Only for this tenant.
    #[arg(long, conflicts_with = "environment")]
    pub tenant: Option<String>,
    /// Only for this environment.
    #[arg(long)]
    pub environment: Option<String>,
}

/// Writes the override into the settings file (created if needed). The file is rewritten
/// from its parsed form, so YAML comments in it are not kept.
pub fn set(loaded: &LoadedSettings, config_arg: &Option<PathBuf>, args: SetThresholdArgs) -> anyhow::Result<ExitCode> {
    if !(0.0..=1.0).contains(&args.threshold) || !args.threshold.is_finite() {
        anyhow::bail!("threshold must be within [0, 1], got {}", args.threshold);
    }
    let catalog =
        Catalog::load(&loaded.settings.catalog_dir).map_err(|e| anyhow::anyhow!("catalog is invalid:\n{e}"))?;
    if !catalog.packs.contains_key(&args.detector) {
        anyhow::bail!("no pack for detector '{}' in {}", args.detector, loaded.settings.catalog_dir.display());
    }
    let path: PathBuf =
        config_arg.clone().or_else(|| loaded.file.clone()).unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_FILE));
    let mut doc: Value = match std::fs::read_to_string(&path) {
        Ok(t) if !t.trim().is_empty() => {
            serde_yaml::from_str(&t).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
        }
        _ => Value::Mapping(Mapping::new()),
    };
    let keys: Vec<&str> = match (&args.tenant, &args.environment) {
        (Some(t), _) => vec!["tenants", t, "thresholds"],
        (None, Some(e)) => vec!["environments", e, "thresholds"],
        (None, None) => vec!["thresholds"],
    };
    let mut node = &mut doc;
    for k in keys {
        let map = node.as_mapping_mut().ok_or_else(|| anyhow::anyhow!("{}: '{k}' is not a mapping", path.display()))?;
        node = map.entry(Value::from(k)).or_insert_with(|| Value::Mapping(Mapping::new()));
    }
    node.as_mapping_mut()
        .ok_or_else(|| anyhow::anyhow!("{}: thresholds is not a mapping", path.display()))?
        .insert(Value::from(args.detector.as_str()), Value::from(args.threshold));
    // Refuse to write a file the loader would then reject.
    let text = serde_yaml::to_string(&doc)?;
    serde_yaml::from_str::<Settings>(&text).map_err(|e| anyhow::anyhow!("resulting settings would be invalid: {e}"))?;
    write_atomically(&path, &text)?;
    let scope = match (&args.tenant, &args.environment) {
        (Some(t), _) => format!("tenant {t}"),
        (None, Some(e)) => format!("environment {e}"),
        _ => "all tenants".into(),
    };
    println!("{}: threshold for {} set to {} ({scope})", path.display(), args.detector, args.threshold);
    Ok(ExitCode::SUCCESS)
}

fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("yaml.tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(tmp, path)
}

pub fn show(settings: &Settings, scope: &ScopeArgs) -> anyhow::Result<ExitCode> {
    print_thresholds(settings, scope)?;
    Ok(ExitCode::SUCCESS)
}

pub fn print_thresholds(settings: &Settings, scope: &ScopeArgs) -> anyhow::Result<()> {
    let catalog = Catalog::load(&settings.catalog_dir).map_err(|e| anyhow::anyhow!("catalog is invalid:\n{e}"))?;
    let policy = settings.threshold_policy();
    let tenant = scope.tenant.as_deref().unwrap_or("");
    println!(
        "# thresholds for tenant={} environment={}",
        scope.tenant.as_deref().unwrap_or("*"),
        scope.environment.as_deref().unwrap_or("*")
    );
    println!("{:<28} {:>9} {:>9}  SOURCE", "DETECTOR", "PACK", "EFFECTIVE");
    for p in catalog.packs.values() {
        let (effective, source) = policy
            .override_for(&p.detector, tenant, scope.environment.as_deref())
            .unwrap_or((p.threshold, ThresholdSource::Pack));
        println!("{:<28} {:>9} {:>9}  {source}", p.detector, p.threshold, effective);
    }
    Ok(())
}
