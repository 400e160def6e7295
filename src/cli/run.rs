//! `mapper run` and `mapper topics`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use crate::config::{Guarantee, Settings, WireFormat};

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Kafka bootstrap servers (also `kafka.brokers`, LLAMA_MAPPER_KAFKA__BROKERS).
    #[arg(long)]
    pub brokers: Option<String>,
    /// Consumer group (also `kafka.group`).
    #[arg(long)]
    pub group: Option<String>,
    /// Address of /metrics, /healthz, /readyz (also `metrics_addr`).
    #[arg(long)]
    pub metrics_addr: Option<String>,
    /// Stable instance identity; the transactional id is `<group>-<instance-id>`.
    #[arg(long)]
    pub instance_id: Option<String>,
    #[arg(long, value_parser = parse_guarantee)]
    pub guarantee: Option<Guarantee>,
    /// Output encoding: json (default) or avro.
    #[arg(long, value_parser = parse_format)]
    pub output_format: Option<WireFormat>,
}

fn parse_guarantee(s: &str) -> Result<Guarantee, String> {
    match s {
        "exactly-once" => Ok(Guarantee::ExactlyOnce),
        "at-least-once" => Ok(Guarantee::AtLeastOnce),
        _ => Err("exactly-once or at-least-once".into()),
    }
}

fn parse_format(s: &str) -> Result<WireFormat, String> {
    match s {
        "json" => Ok(WireFormat::Json),
        "avro" => Ok(WireFormat::Avro),
        _ => Err("json or avro".into()),
    }
}

pub fn run(mut settings: Settings, args: RunArgs) -> anyhow::Result<ExitCode> {
    let k = &mut settings.kafka;
    if let Some(b) = args.brokers {
        k.brokers = b;
    }
    if let Some(g) = args.group {
        k.group = g;
    }
    if let Some(i) = args.instance_id {
        k.instance_id = Some(i);
    }
    if let Some(g) = args.guarantee {
        k.guarantee = g;
    }
    if let Some(f) = args.output_format {
        k.output_format = f;
    }
    if let Some(a) = args.metrics_addr {
        settings.metrics_addr = a;
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let result = rt.block_on(async {
        let shutdown = crate::kafka::shutdown_signal();
        crate::stream::run(settings, shutdown).await
    });
    // A transactional call left running on a blocking thread at shutdown (its outcome open,
    // for the next start to fence) must not hold the exit.
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    result?;
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Subcommand)]
pub enum TopicsCommand {
    /// Create the topics of topics/*.yaml that do not exist yet.
    Apply(TopicsArgs),
    /// Verify the topics exist with the defined partition counts (exit 1 otherwise).
    Check(TopicsArgs),
}

#[derive(Debug, Args)]
pub struct TopicsArgs {
    #[arg(long)]
    pub brokers: Option<String>,
    #[arg(long, default_value = "topics")]
    pub dir: PathBuf,
    /// Replication factor for every topic (a one-broker dev stack needs 1); min.insync.replicas
    /// is capped to it, by `apply` and in what `check` expects.
    #[arg(long)]
    pub replication_factor: Option<i32>,
}

pub fn topics(settings: &Settings, cmd: TopicsCommand) -> anyhow::Result<ExitCode> {
    let (TopicsCommand::Apply(a) | TopicsCommand::Check(a)) = &cmd;
    let k = settings.kafka.with_brokers(a.brokers.as_deref());
    let specs = crate::topics::load(&a.dir).map_err(|e| anyhow::anyhow!("invalid topic definitions:\n{e}"))?;
    match cmd {
        TopicsCommand::Apply(a) => {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let created = rt.block_on(crate::topics::apply(&specs, &k, a.replication_factor))?;
            for t in &created {
                println!("created {t}");
            }
            println!("{} topics defined, {} created", specs.len(), created.len());
            Ok(ExitCode::SUCCESS)
        }
        TopicsCommand::Check(a) => {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let (problems, warnings) = rt.block_on(crate::topics::check(&specs, &k, a.replication_factor))?;
            for w in &warnings {
                println!("warning: {w}");
            }
            for p in &problems {
                println!("{p}");
            }
            if problems.is_empty() {
                println!("{} topics match their definitions", specs.len());
                Ok(ExitCode::SUCCESS)
            } else {
                Ok(ExitCode::from(1))
            }
        }
    }
}
