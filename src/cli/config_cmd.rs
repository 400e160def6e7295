//! `mapper validate-config` and `mapper show-config`.

use std::path::Path;
use std::process::ExitCode;

use crate::catalog::{Catalog, ConfigError, ConfigErrors};
use crate::config::LoadedSettings;
use crate::contracts::Contracts;

use super::thresholds::{print_thresholds, ScopeArgs};

pub fn validate(loaded: &LoadedSettings) -> anyhow::Result<ExitCode> {
    let mut errors = ConfigErrors::default();
    let catalog = Catalog::load(&loaded.settings.catalog_dir).map_err(|e| errors.0.extend(e.0)).ok();
    if let Err(e) = Contracts::load() {
        errors.0.extend(e.0);
    }
    if let Some(catalog) = &catalog {
        errors.0.extend(check_settings(loaded, catalog).0);
    }
    if errors.is_empty() {
        let c = catalog.expect("no errors means the catalog loaded");
        println!(
            "ok: taxonomy {} ({} labels), frameworks {}, {} detector packs, 3 schemas",
            c.taxonomy.version,
            c.taxonomy.labels().count(),
            c.frameworks.version,
            c.packs.len()
        );
        Ok(ExitCode::SUCCESS)
    } else {
        for e in &errors.sorted().0 {
            eprintln!("error: {e}");
        }
        Ok(ExitCode::from(1))
    }
}

/// Threshold overrides must name real detectors and lie in [0,1].
pub fn check_settings(loaded: &LoadedSettings, catalog: &Catalog) -> ConfigErrors {
    let mut errors = ConfigErrors::default();
    let file = loaded.file.as_deref().unwrap_or(Path::new("<environment>"));
    let text = loaded.file.as_ref().and_then(|f| std::fs::read_to_string(f).ok()).unwrap_or_default();
    for (scope, detector, t) in loaded.settings.threshold_policy().entries() {
        let line = find_line(&text, detector);
        if !catalog.packs.contains_key(detector) {
            errors.push(ConfigError::at_line(
                file,
                line,
                format!("{scope} threshold for unknown detector '{detector}'"),
            ));
        }
        if !(0.0..=1.0).contains(&t) {
            errors.push(ConfigError::at_line(
                file,
                line,
                format!("{scope} threshold {t} for '{detector}' is outside [0, 1]"),
            ));
        }
    }
    errors
}

/// Settings come through figment, which keeps the file but not positions; the first line
/// naming the key is where a person will look anyway.
fn find_line(text: &str, key: &str) -> Option<usize> {
    text.lines().position(|l| l.contains(key)).map(|i| i + 1)
}

pub fn show(loaded: &LoadedSettings, scope: &ScopeArgs) -> anyhow::Result<ExitCode> {
    println!(
        "# effective settings: defaults -> {} -> LLAMA_MAPPER_* environment",
        loaded.file.as_ref().map_or("(no settings file)".to_string(), |f| f.display().to_string())
    );
    print!("{}", serde_yaml::to_string(&loaded.settings)?);
    if scope.tenant.is_some() || scope.environment.is_some() {
        println!();
        print_thresholds(&loaded.settings, scope)?;
    }
    Ok(ExitCode::SUCCESS)
}
