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
    let mut value = serde_yaml::to_value(&loaded.settings)?;
    mask_secrets(&mut value);
    print!("{}", serde_yaml::to_string(&value)?);
    if scope.tenant.is_some() || scope.environment.is_some() {
        println!();
        print_thresholds(&loaded.settings, scope)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Whether a setting's name says its value is a secret: the settings' own (`clickhouse.password`,
/// `s3.secret_access_key`) and librdkafka's (`sasl.password`, `ssl.key.password`,
/// `sasl.oauthbearer.client.secret`, `ssl.key.pem`, `sasl.jaas.config`, …).
fn is_secret(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    n.ends_with(".pem")
        || n.split(['.', '_', '-'])
            .any(|w| matches!(w, "password" | "passwd" | "secret" | "token" | "credentials" | "jaas"))
}

/// Replaces every secret's value by `<set>` (or leaves it empty when unset): the output of
/// `show-config` lands in tickets and chat logs.
fn mask_secrets(v: &mut serde_yaml::Value) {
    match v {
        serde_yaml::Value::Mapping(m) => {
            for (k, val) in m.iter_mut() {
                let secret = k.as_str().is_some_and(is_secret);
                let empty = matches!(val, serde_yaml::Value::Null) || val.as_str() == Some("");
                if secret && !empty {
                    *val = serde_yaml::Value::String("<set>".into());
                } else {
                    mask_secrets(val);
                }
            }
        }
        serde_yaml::Value::Sequence(s) => s.iter_mut().for_each(mask_secrets),
        _ => {}
    }
}
