//! `mapper produce` and `mapper tail`: operator tools to feed and watch topics without a
//! separate Kafka client (Debian's kcat is too old for some brokers).

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{json, Value};

use crate::config::Settings;
use crate::kafka::{self, Delivery};

#[derive(Debug, Args)]
pub struct ProduceArgs {
    #[arg(long)]
    pub brokers: Option<String>,
    /// Default: the input topic.
    #[arg(long)]
    pub topic: Option<String>,
    /// JSON lines (default: stdin). Each line is sent as is, keyed by its `tenant_id`.
    #[arg(long, short)]
    pub input: Option<PathBuf>,
}

pub fn produce(settings: &Settings, args: ProduceArgs) -> anyhow::Result<ExitCode> {
    let k = settings.kafka.with_brokers(args.brokers.as_deref());
    let topic = args.topic.unwrap_or_else(|| settings.kafka.input_topic.clone());
    let reader: Box<dyn BufRead> = match &args.input {
        Some(p) => Box::new(BufReader::new(std::fs::File::open(p)?)),
        None => Box::new(BufReader::new(io::stdin().lock())),
    };
    let producer: FutureProducer = kafka::producer(&k, "llama-mapper-produce", &[])?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let n = rt.block_on(async {
        let mut pending = Vec::new();
        let mut n = 0usize;
        for line in reader.lines() {
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            let key = serde_json::from_str::<Value>(&line)
                .ok()
                .and_then(|v| v.get("tenant_id").and_then(Value::as_str).map(str::to_string))
                .unwrap_or_default();
            pending.push(kafka::enqueue(&producer, FutureRecord::to(&topic).key(&key).payload(&line))?);
            n += 1;
            if pending.len() >= 10_000 {
                delivered(std::mem::take(&mut pending)).await?;
            }
        }
        delivered(pending).await?;
        anyhow::Ok(n)
    })?;
    eprintln!("produced {n} records to {topic}");
    Ok(ExitCode::SUCCESS)
}

async fn delivered(pending: Vec<rdkafka::producer::DeliveryFuture>) -> anyhow::Result<()> {
    match kafka::await_all(pending, None, None).await {
        Delivery::Delivered => Ok(()),
        Delivery::Failed(_, e) => anyhow::bail!("a record was not delivered: {e}"),
        Delivery::Interrupted => anyhow::bail!("interrupted"),
    }
}

#[derive(Debug, Args)]
pub struct TailArgs {
    #[arg(long)]
    pub brokers: Option<String>,
    /// Topic to read from the beginning, with isolation.level=read_committed.
    #[arg(long)]
    pub topic: String,
    /// Stop after this many records.
    #[arg(long)]
    pub max: Option<usize>,
    /// Stop after this long without a new record.
    #[arg(long, default_value = "5")]
    pub idle_secs: u64,
    /// Print the records' headers too (as a JSON object per line: headers, key, value).
    #[arg(long)]
    pub headers: bool,
}

pub fn tail(settings: &Settings, args: TailArgs) -> anyhow::Result<ExitCode> {
    let k = settings.kafka.with_brokers(args.brokers.as_deref());
    let consumer: BaseConsumer = kafka::reader(&k, "llama-mapper-tail")?;
    // Assign every partition from the start: no group join to wait for, nothing committed.
    let md = consumer.fetch_metadata(Some(&args.topic), Duration::from_secs(10))?;
    let mut tpl = rdkafka::TopicPartitionList::new();
    for t in md.topics() {
        for p in t.partitions() {
            tpl.add_partition_offset(&args.topic, p.id(), rdkafka::Offset::Beginning)?;
        }
    }
    consumer.assign(&tpl)?;
    let mut out = io::stdout().lock();
    let mut n = 0usize;
    let mut last = Instant::now();
    while args.max.is_none_or(|m| n < m) && last.elapsed() < Duration::from_secs(args.idle_secs) {
        let Some(msg) = consumer.poll(Duration::from_millis(200)) else { continue };
        let msg = msg?;
        last = Instant::now();
        n += 1;
        let value = msg.payload().map(|p| String::from_utf8_lossy(p).into_owned());
        if args.headers {
            let mut h = BTreeMap::new();
            if let Some(hs) = msg.headers() {
                for x in hs.iter() {
                    h.insert(x.key.to_string(), x.value.map(|v| String::from_utf8_lossy(v).into_owned()));
                }
            }
            let value = value.map(|v| serde_json::from_str::<Value>(&v).unwrap_or(Value::String(v)));
            let key = msg.key().map(|k| String::from_utf8_lossy(k).into_owned());
            writeln!(
                out,
                "{}",
                json!({"partition": msg.partition(), "offset": msg.offset(), "key": key, "headers": h, "value": value})
            )?;
        } else {
            writeln!(out, "{}", value.unwrap_or_default())?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
