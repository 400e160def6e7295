//! `mapper model eval`: how the configured model (base + adapter) would do on labels the rules
//! cannot place, before it goes anywhere near the stream.

use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::dataset::SplitArgs;
use crate::catalog::Catalog;
use crate::config::Settings;
use crate::model::{eval, ModelRuntime};

#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// Score the configured model on the validation split of `mapper dataset build` (same
    /// --seed and --validation-fraction give the same split): accuracy, how much it maps at
    /// model.min_confidence and how precisely, and distinct labels per second.
    Eval(EvalArgs),
}

#[derive(Debug, Args)]
pub struct EvalArgs {
    #[command(flatten)]
    pub split: SplitArgs,
    /// Also score validation labels the rules already place (by default only the ones the
    /// model exists for).
    #[arg(long)]
    pub all: bool,
    /// Score this many cases, spread evenly over the split (0 = all).
    #[arg(long, default_value_t = 0)]
    pub limit: usize,
    /// Labels handed to the model path together, as a Kafka batch's unknown labels are
    /// (model.max_concurrent of them are in the engine at once).
    #[arg(long, default_value_t = 32)]
    pub chunk: usize,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Also print every case: detector, raw label, held-out label, answer, confidence.
    #[arg(long)]
    pub show: bool,
}

pub fn run(settings: &Settings, cmd: ModelCommand) -> anyhow::Result<ExitCode> {
    let ModelCommand::Eval(a) = cmd;
    let opts = a.split.options()?;
    let catalog = Catalog::load(&settings.catalog_dir).map_err(|e| anyhow::anyhow!("invalid catalog:\n{e}"))?;
    let cases = eval::validation_cases(&catalog, &opts, a.all, a.limit);

    // An evaluation is an explicit request for the model: the kill-switch does not apply, and
    // the stream's per-batch timeout would only turn slow answers into missing ones.
    let mut model = settings.model.clone();
    model.enabled = true;
    model.timeout_ms = 24 * 3_600_000;
    let labels: Vec<String> = catalog.taxonomy.labels().map(|l| l.name.clone()).collect();
    let runtime = ModelRuntime::load(&model, labels);
    anyhow::ensure!(runtime.is_loaded(), "the model did not load (see the error above)");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let report = rt.block_on(eval::evaluate(&runtime, &cases, a.chunk, model.min_confidence));
    if a.json {
        let mut value = serde_json::to_value(&report)?;
        if !a.show {
            value.as_object_mut().map(|o| o.remove("answers"));
        }
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(ExitCode::SUCCESS);
    }
    if a.show {
        for c in &report.answers {
            let answer = match (&c.label, c.confidence) {
                (Some(l), Some(p)) => format!("{l} ({p:.2})"),
                _ => "no answer".into(),
            };
            let mark = if c.is_correct() { "ok " } else { "-- " };
            println!("{mark}{} {:?}: want {}, got {answer}", c.detector, c.raw_label, c.gold);
        }
        println!();
    }
    println!("{report}");
    Ok(ExitCode::SUCCESS)
}
