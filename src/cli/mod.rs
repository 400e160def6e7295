//! The `mapper` command line.

mod config_cmd;
mod dataset;
mod detectors;
mod map;
mod model;
mod run;
mod sinks;
mod thresholds;
mod tools;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{LoadedSettings, Settings};

#[derive(Debug, Parser)]
#[command(
    name = "mapper",
    version,
    about = "Maps raw AI-safety detector outputs to a canonical taxonomy and compliance evidence"
)]
pub struct Cli {
    /// Settings file (YAML). Default: ./llama-mapper.yaml when it exists.
    #[arg(long, global = true, env = "LLAMA_MAPPER_CONFIG")]
    pub config: Option<PathBuf>,
    /// Catalog directory (taxonomy, frameworks, packs); overrides `catalog_dir` from settings.
    #[arg(long, global = true)]
    pub catalog_dir: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check taxonomy, frameworks, packs, schemas and settings; every error names file and line.
    ValidateConfig,
    /// Work with detector packs.
    Detectors {
        #[command(subcommand)]
        command: detectors::DetectorsCommand,
    },
    /// Map detector events (JSON lines, file or stdin) to canonical events on stdout, in input order.
    Map(map::MapArgs),
    /// Print the effective settings (defaults → file → LLAMA_MAPPER_* environment).
    ShowConfig(thresholds::ScopeArgs),
    /// Override a detector's hit threshold, globally or for one tenant or environment.
    SetThreshold(thresholds::SetThresholdArgs),
    /// Print the hit threshold in force for each detector.
    ShowThresholds(thresholds::ScopeArgs),
    /// The stream processor: consume detector events from Kafka, publish canonical and audit events.
    Run(run::RunArgs),
    /// Send JSON lines to a topic (default: the input topic), keyed by tenant_id.
    Produce(tools::ProduceArgs),
    /// Print a topic's committed records from the beginning.
    Tail(tools::TailArgs),
    /// Create or verify the Kafka topics defined in topics/*.yaml.
    Topics {
        #[command(subcommand)]
        command: run::TopicsCommand,
    },
    /// Sink workers: project the output topics into ClickHouse or the S3 WORM trail.
    Sink {
        #[command(subcommand)]
        command: sinks::SinkCommand,
    },
    /// ClickHouse schema and tenant users.
    Clickhouse {
        #[command(subcommand)]
        command: sinks::ClickHouseCommand,
    },
    /// The WORM audit trail: signing keys, bucket, verification.
    Audit {
        #[command(subcommand)]
        command: sinks::AuditCommand,
    },
    /// Rebuild the ClickHouse audit projection from the S3 trail alone.
    Replay(sinks::ReplayArgs),
    /// Fine-tuning data for the model path.
    Dataset {
        #[command(subcommand)]
        command: dataset::DatasetCommand,
    },
    /// The model path: evaluate the configured model and adapter.
    Model {
        #[command(subcommand)]
        command: model::ModelCommand,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let mut loaded = load_settings(&cli)?;
    if let Some(dir) = &cli.catalog_dir {
        loaded.settings.catalog_dir = dir.clone();
    }
    crate::telemetry::init(&loaded.settings.log);
    match cli.command {
        Command::ValidateConfig => config_cmd::validate(&loaded),
        Command::Detectors { command } => detectors::run(&loaded.settings, command),
        Command::Map(args) => map::run(&loaded.settings, args),
        Command::ShowConfig(scope) => config_cmd::show(&loaded, &scope),
        Command::SetThreshold(args) => thresholds::set(&loaded, &cli.config, args),
        Command::ShowThresholds(scope) => thresholds::show(&loaded.settings, &scope),
        Command::Run(args) => run::run(loaded.settings, args),
        Command::Topics { command } => run::topics(&loaded.settings, command),
        Command::Produce(args) => tools::produce(&loaded.settings, args),
        Command::Tail(args) => tools::tail(&loaded.settings, args),
        Command::Sink { command } => sinks::sink(loaded.settings, command),
        Command::Clickhouse { command } => sinks::clickhouse(&loaded.settings, command),
        Command::Audit { command } => sinks::audit(&loaded.settings, command),
        Command::Replay(args) => sinks::replay(&loaded.settings, args),
        Command::Dataset { command } => dataset::run(&loaded.settings, command),
        Command::Model { command } => model::run(&loaded.settings, command),
    }
}

fn load_settings(cli: &Cli) -> anyhow::Result<LoadedSettings> {
    // `set-threshold` may be the command that creates the settings file.
    let file = cli.config.as_deref().filter(|f| f.exists() || !matches!(cli.command, Command::SetThreshold(_)));
    Settings::load(file).map_err(|e| anyhow::anyhow!("invalid settings: {e}"))
}
