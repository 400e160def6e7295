//! `mapper detectors list|lint|add`.

use std::path::Path;
use std::process::ExitCode;

use clap::Subcommand;

use crate::catalog::pack::is_detector_name;
use crate::catalog::{Catalog, Pack, UNKNOWN_LABEL};
use crate::config::Settings;

#[derive(Debug, Subcommand)]
pub enum DetectorsCommand {
    /// List the detector packs.
    List,
    /// Validate every pack and point out what is legal but probably wrong.
    Lint {
        /// Treat warnings as errors.
        #[arg(long)]
        strict: bool,
    },
    /// Scaffold a new pack with every required field.
    Add {
        /// Detector name (lower-case letters, digits, '-'): the `detector` field of its events.
        #[arg(long)]
        name: String,
        #[arg(long)]
        vendor: Option<String>,
    },
}

pub fn run(settings: &Settings, cmd: DetectorsCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        DetectorsCommand::List => {
            let catalog = load(&settings.catalog_dir)?;
            println!("{:<28} {:<10} {:<22} {:>6} {:>9}", "DETECTOR", "VERSION", "VENDOR", "LABELS", "THRESHOLD");
            for p in catalog.packs.values() {
                println!(
                    "{:<28} {:<10} {:<22} {:>6} {:>9}",
                    p.detector,
                    p.version,
                    p.vendor.as_deref().unwrap_or("-"),
                    p.maps.len(),
                    p.threshold
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        DetectorsCommand::Lint { strict } => {
            let catalog = match Catalog::load(&settings.catalog_dir) {
                Ok(c) => c,
                Err(errors) => {
                    for e in &errors.0 {
                        println!("error: {e}");
                    }
                    return Ok(ExitCode::from(1));
                }
            };
            let warnings: Vec<String> = catalog.packs.values().flat_map(lint_pack).collect();
            for w in &warnings {
                println!("warning: {w}");
            }
            println!("{} packs checked, {} warnings", catalog.packs.len(), warnings.len());
            Ok(if strict && !warnings.is_empty() { ExitCode::from(1) } else { ExitCode::SUCCESS })
        }
        DetectorsCommand::Add { name, vendor } => {
            if !is_detector_name(&name) {
                anyhow::bail!("'{name}' is not a valid detector name (lower-case letters, digits and '-')");
            }
            let path = settings.catalog_dir.join(format!("{name}.yaml"));
            if path.exists() {
                anyhow::bail!("{} already exists", path.display());
            }
            std::fs::write(&path, scaffold(&name, vendor.as_deref().unwrap_or("TODO")))?;
            // The scaffold must load as is, so the next step is editing, not debugging.
            let catalog = load(&settings.catalog_dir)?;
            debug_assert!(catalog.packs.contains_key(&name));
            println!("created {}", path.display());
            println!("next: fill `extract` and `maps` from the vendor's documented output, add tests/packs/{name}.yaml, run `mapper detectors lint`");
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn load(dir: &Path) -> anyhow::Result<Catalog> {
    Catalog::load(dir).map_err(|e| anyhow::anyhow!("catalog is invalid:\n{e}"))
}

fn lint_pack(p: &Pack) -> Vec<String> {
    let at = p.path.display();
    let mut w = Vec::new();
    if p.docs.is_none() {
        w.push(format!("{at}: no `docs`: link the vendor's documentation of this output format"));
    }
    if p.vendor.is_none() {
        w.push(format!("{at}: no `vendor`"));
    }
    if p.maps.is_empty() {
        w.push(format!("{at}: `maps` is empty: every label will go through aliases, the model or the fallback"));
    }
    for (raw, labels) in &p.maps {
        if labels.iter().any(|l| l == UNKNOWN_LABEL) {
            w.push(format!(
                "{at}: '{raw}' maps to {UNKNOWN_LABEL} explicitly; leave it out to let aliases and the model try"
            ));
        }
    }
    w
}

fn scaffold(name: &str, vendor: &str) -> String {
    format!(
        r#"# Detector pack for {name}. Format: docs/pack-format.md
detector: {name}
version: "0.1.0"
vendor: {vendor}
description: TODO one line on what this detector finds
docs: TODO link to the vendor's documentation of the output format
threshold: 0.5
extract:
  # Hugging Face text-classification shape: [{{"label": "...", "score": 0.9}}]
  - select: "$[*]"
    label: "$.label"
    score: "$.score"
maps: {{}}
  # RAW_LABEL: TAXONOMY.Label
clean: []
"#
    )
}
