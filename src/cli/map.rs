//! `mapper map`: the mapping core on JSON lines, for trying packs and for batch jobs.

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use serde_json::json;

use crate::config::Settings;
use crate::contracts::DetectorEvent;
use crate::ingest::JsonDecoder;
use crate::pipeline::Pipeline;

#[derive(Debug, Args)]
pub struct MapArgs {
    /// Input file of detector events, one JSON object per line ("-" or absent: stdin).
    #[arg(long, short)]
    pub input: Option<PathBuf>,
    /// Print audit events instead of canonical events.
    #[arg(long)]
    pub audit: bool,
    /// Events mapped together (the engine is batch-shaped; output order is input order).
    #[arg(long, default_value_t = 256)]
    pub batch_size: usize,
}

/// Exit status: 0 when every line mapped, 1 when some line was rejected (each reported on
/// stderr as `{"line": N, "reason": .., "error": ..}` while the run went on), 2 on a usage or
/// configuration error.
pub fn run(settings: &Settings, args: MapArgs) -> anyhow::Result<ExitCode> {
    let pipeline = Pipeline::load(settings)?;
    // With `model.enabled`, unknown labels of each batch go to the model (rules-only if it
    // fails to load, as in `mapper run`).
    let labels: Vec<String> = pipeline.catalog().taxonomy.labels().map(|l| l.name.clone()).collect();
    let model = crate::model::ModelRuntime::load(&settings.model, labels);
    let rt = match model.is_loaded() {
        true => Some(tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?),
        false => None,
    };
    let reader: Box<dyn BufRead> = match args.input.as_deref() {
        None => Box::new(BufReader::new(io::stdin().lock())),
        Some(p) if p.as_os_str() == "-" => Box::new(BufReader::new(io::stdin().lock())),
        Some(p) => Box::new(BufReader::new(File::open(p).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?)),
    };
    let mut out = BufWriter::new(io::stdout().lock());
    let decoder = JsonDecoder::new(&pipeline.contracts, settings.ingest.max_event_bytes);
    let mut failed = 0usize;
    let mut batch: Vec<(usize, DetectorEvent)> = Vec::with_capacity(args.batch_size.max(1));

    let flush = |batch: &mut Vec<(usize, DetectorEvent)>, out: &mut dyn Write, failed: &mut usize| -> io::Result<()> {
        let (lines, events): (Vec<usize>, Vec<DetectorEvent>) = batch.drain(..).unzip();
        let mapped = match &rt {
            Some(rt) => pipeline.map_batch_with(&events, |queries| rt.block_on(model.decide(queries))),
            None => pipeline.map_batch(&events),
        };
        for (line, result) in lines.into_iter().zip(mapped) {
            match result {
                Ok(m) => {
                    let v = if args.audit { &m.audit_json } else { &m.canonical_json };
                    serde_json::to_writer(&mut *out, v)?;
                    out.write_all(b"\n")?;
                }
                Err(crate::pipeline::Unmapped::TooManyLabels(e)) => {
                    *failed += 1;
                    report(line, "too_many_labels", &e.to_string());
                }
                Err(crate::pipeline::Unmapped::Invalid(violation)) => {
                    *failed += 1;
                    report(line, "internal_schema_violation", &violation.to_string());
                }
            }
        }
        Ok(())
    };

    for (i, line) in reader.split(b'\n').enumerate() {
        let line_no = i + 1;
        let bytes = line?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match decoder.decode(&bytes) {
            Ok(ev) => batch.push((line_no, ev)),
            Err(rej) => {
                // Keep stdout in input order relative to the rejected line's neighbours.
                flush(&mut batch, &mut out, &mut failed)?;
                out.flush()?;
                failed += 1;
                report(line_no, rej.reason.as_str(), &rej.detail);
            }
        }
        if batch.len() >= args.batch_size.max(1) {
            flush(&mut batch, &mut out, &mut failed)?;
        }
    }
    flush(&mut batch, &mut out, &mut failed)?;
    out.flush()?;
    tracing::debug!(failed, "map finished");
    Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn report(line: usize, reason: &str, detail: &str) {
    eprintln!("{}", json!({"line": line, "reason": reason, "error": detail}));
}
