//! `mapper dataset build`: the fine-tuning dataset for the model path (see `crate::dataset`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use crate::catalog::Catalog;
use crate::config::Settings;
use crate::dataset::{self, Options};

#[derive(Debug, Subcommand)]
pub enum DatasetCommand {
    /// Write train.jsonl, validation.jsonl and coverage.json from the packs, the taxonomy
    /// aliases and synthetic spellings of them.
    Build(BuildArgs),
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    #[arg(long, default_value = "training/data")]
    pub out: PathBuf,
    #[command(flatten)]
    pub split: SplitArgs,
}

/// How the dataset is split; `dataset build` and `model eval` share these, so the same flags
/// give the same validation labels.
#[derive(Debug, Args)]
pub struct SplitArgs {
    /// Changes which base labels are held out for validation.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    #[arg(long, default_value_t = 0.2)]
    pub validation_fraction: f64,
}

impl SplitArgs {
    pub fn options(&self) -> anyhow::Result<Options> {
        anyhow::ensure!((0.0..1.0).contains(&self.validation_fraction), "--validation-fraction must be in [0, 1)");
        Ok(Options { seed: self.seed, validation_fraction: self.validation_fraction, ..Options::default() })
    }
}

pub fn run(settings: &Settings, cmd: DatasetCommand) -> anyhow::Result<ExitCode> {
    let DatasetCommand::Build(a) = cmd;
    let opts = a.split.options()?;
    let catalog = Catalog::load(&settings.catalog_dir).map_err(|e| anyhow::anyhow!("invalid catalog:\n{e}"))?;
    let ds = dataset::build(&catalog, &opts);
    let cov = dataset::coverage(&catalog, &ds);
    dataset::write(&a.out, &ds, &cov)?;
    println!(
        "{} training and {} validation examples in {} ({} validation examples only the model can place)",
        cov.train,
        cov.validation,
        a.out.display(),
        cov.validation_model_only
    );
    println!("labels with training examples: {} of {}", cov.labels_covered_in_train, cov.labels_in_taxonomy);
    if !cov.labels_without_training_examples.is_empty() {
        println!("  none for: {}", cov.labels_without_training_examples.join(", "));
    }
    println!("by source (train / validation):");
    for (s, [t, v]) in &cov.per_source {
        println!("  {s:<13} {t:>6} / {v}");
    }
    println!("by detector (train / validation):");
    for (d, [t, v]) in &cov.per_detector {
        println!("  {d:<28} {t:>6} / {v}");
    }
    Ok(ExitCode::SUCCESS)
}
