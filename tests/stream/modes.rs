use std::time::Duration;

use llama_mapper::contracts::{avro, Contract};
use llama_mapper::ingest::avro_wire;
use serde_json::Value;

use super::support::*;
use crate::common::kafka::{Broker, MapperProcess, CANONICAL, INPUT};

/// At-least-once mode with Avro output: the same canonical events, Confluent-framed Avro.
#[test]
fn at_least_once_with_avro_output() {
    let broker = Broker::start();
    let events: Vec<Value> = pack_events().into_iter().step_by(5).collect();
    broker.produce(INPUT, &keyed(&events));
    let mapper = MapperProcess::start(
        &broker,
        "alo",
        &[("LLAMA_MAPPER_KAFKA__GUARANTEE", "at-least-once"), ("LLAMA_MAPPER_KAFKA__OUTPUT_FORMAT", "avro")],
    );
    wait_inputs_committed(&broker, events.len() as i64, Duration::from_secs(120), &[&mapper]);
    let out = wait_committed(&broker, CANONICAL, events.len(), Duration::from_secs(30), &[&mapper]);
    assert_eq!(out.len(), events.len());
    assert_eq!(broker.transactions(), vec![], "at-least-once does not use transactions");
    let pipeline = crate::common::pipeline();
    for r in &out {
        assert_eq!(r.headers["content-type"], "application/vnd.confluent.avro");
        let (id, datum) = avro_wire::unframe(r.value.as_deref().unwrap()).unwrap();
        assert_eq!(id, 2, "canonical schema id");
        let got = avro::decode(Contract::CanonicalEvent, datum).unwrap();
        let src = events.iter().find(|e| e["event_id"] == got["event_id"]).unwrap();
        let want = pipeline.map_batch(&[serde_json::from_value(src.clone()).unwrap()]).pop().unwrap().unwrap();
        assert_eq!(got["taxonomy"], want.canonical_json["taxonomy"]);
        assert_eq!(got["lineage"].as_array().unwrap().len(), want.canonical.lineage.len());
    }
}

/// At-least-once under `kill -9`: each kill lands while work is left (committed offsets short
/// of the end), each restart moves them on, and in the end every event is on the canonical
/// topic at least once. Copies are allowed in this mode and counted: they are what the
/// killed incarnations published but had not committed.
#[test]
fn at_least_once_loses_nothing_under_kill_nine() {
    let _heavy = crate::common::kafka::heavy();
    let broker = Broker::start();
    const N: usize = 12_000;
    let events: Vec<Value> = numbered_events("alo", 0..N, 12);
    broker.produce(INPUT, &keyed(&events));
    let env = [("LLAMA_MAPPER_KAFKA__GUARANTEE", "at-least-once"), ("LLAMA_MAPPER_KAFKA__BATCH_SIZE", "200")];
    let mut last = 0;
    for round in 1..=3 {
        let mut mapper = MapperProcess::start(&broker, "alo-kill", &env);
        let goal = last + 2_000;
        wait_inputs_committed(&broker, goal, Duration::from_secs(120), &[&mapper]);
        mapper.kill9();
        let at = broker.committed_inputs();
        assert!(at < N as i64, "round {round}: the kill came after the end ({at})");
        assert!(at > last, "round {round}: no progress ({at} after {last})");
        last = at;
    }
    let mapper = MapperProcess::start(&broker, "alo-kill", &env);
    wait_inputs_committed(&broker, N as i64, Duration::from_secs(180), &[&mapper]);
    // Everything: with copies there are more than N records (deliveries come before the commit).
    let counts = count_ids(&broker.read_all(CANONICAL));
    assert_eq!(counts.len(), N, "every event at least once:\n{}", logs(&[&mapper]));
    let copies: usize = counts.values().map(|c| c - 1).sum();
    println!("at-least-once, 3 kills: {N} events, {copies} extra copies");
}

/// `mapper topics apply` creates what topics/*.yaml defines; `check` then passes, and fails
/// on a topic whose partition count differs. (The definitions are copied with this test's
/// prefix on their names, so the run's shared broker stays clean.)
#[test]
fn topics_apply_then_check() {
    let broker = Broker::start_empty();
    let defs = tempfile::tempdir().unwrap();
    for f in std::fs::read_dir(crate::common::root().join("topics")).unwrap() {
        let f = f.unwrap().path();
        let text = std::fs::read_to_string(&f).unwrap().replacen("name: ", &format!("name: {}", broker.prefix), 1);
        std::fs::write(defs.path().join(f.file_name().unwrap()), text).unwrap();
    }
    let defs_dir = defs.path().to_str().unwrap().to_string();
    let run = |args: &[&str]| {
        let out = crate::common::mapper_command().args(args).args(["--brokers", &broker.brokers()]).output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let (code, before) = run(&["topics", "check", "--dir", &defs_dir]);
    assert_eq!(code, Some(1), "{before}");
    assert!(before.contains("does not exist"));
    let (code, applied) = run(&["topics", "apply", "--dir", &defs_dir, "--replication-factor", "1"]);
    assert_eq!(code, Some(0), "{applied}");
    assert!(applied.contains("created"), "{applied}");
    let (code, after) = run(&["topics", "check", "--dir", &defs_dir, "--replication-factor", "1"]);
    assert_eq!(code, Some(0), "{after}");
    assert!(after.contains("5 topics match"), "{after}");
    // Configs are compared too: a retention the cluster does not have is reported.
    let cfgdir = tempfile::tempdir().unwrap();
    std::fs::write(
        cfgdir.path().join("dlq.yaml"),
        format!(
            "name: {}\npartitions: 3\nreplication_factor: 1\nconfig:\n  retention.ms: \"1000\"\n",
            broker.name("mapper.dlq.v1")
        ),
    )
    .unwrap();
    let (code, diff) = run(&["topics", "check", "--dir", cfgdir.path().to_str().unwrap()]);
    assert_eq!(code, Some(1), "{diff}");
    assert!(diff.contains("has retention.ms=1209600000, the definition says 1000"), "{diff}");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("x.yaml"),
        format!("name: {}\npartitions: 12\nreplication_factor: 1\n", broker.name("detector.events.v1")),
    )
    .unwrap();
    let (code, diff) = run(&["topics", "check", "--dir", dir.path().to_str().unwrap()]);
    assert_eq!(code, Some(1));
    assert!(diff.contains("has 6 partitions, the definition says 12"), "{diff}");
}

/// `kafka.client` reaches every client the binary makes: with a `security.protocol` librdkafka
/// refuses, `produce`, `tail` and `topics check` fail naming it (they used to build their own
/// configuration and connect in plaintext regardless), and with the map empty they work.
#[test]
fn the_operator_client_settings_reach_produce_tail_and_topics() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "kafka:\n  client:\n    security.protocol: carrier-pigeon\n").unwrap();
    let events = dir.path().join("events.jsonl");
    std::fs::write(&events, format!("{}\n", pack_events()[0])).unwrap();
    let input = broker.name(INPUT);
    let run = |cfg: Option<&std::path::Path>, args: &[&str]| {
        let mut cmd = crate::common::mapper_command();
        cmd.args(args).args(["--brokers", &broker.brokers()]);
        if let Some(c) = cfg {
            cmd.env("LLAMA_MAPPER_CONFIG", c);
        }
        let out = cmd.output().unwrap();
        (
            out.status.success(),
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
        )
    };
    let produce = ["produce", "--topic", &input, "--input", events.to_str().unwrap()];
    let tail = ["tail", "--topic", &input, "--idle-secs", "2"];
    let topics = ["topics", "check", "--replication-factor", "1"];
    for args in [&produce[..], &tail[..], &topics[..]] {
        let (ok, text) = run(Some(&bad), args);
        assert!(!ok, "{args:?} ignored kafka.client:\n{text}");
        assert!(text.contains("security.protocol"), "{args:?}:\n{text}");
    }
    let (ok, text) = run(None, &produce);
    assert!(ok, "{text}");
    let (ok, text) = run(None, &tail);
    assert!(ok && text.contains(pack_events()[0]["event_id"].as_str().unwrap()), "{text}");
}

/// `/readyz` says whether the instance has joined its group: not while no broker answers, and
/// `/healthz` stays 200 meanwhile (nothing is stalled; there is no batch), so an orchestrator
/// holds traffic and alerts without restarting it in a loop.
#[test]
fn not_ready_until_it_has_joined_and_healthy_while_waiting() {
    let broker = Broker::start_empty();
    let nowhere = format!("127.0.0.1:{}", crate::common::kafka::free_port());
    let mapper = MapperProcess::start(&broker, "unready", &[("LLAMA_MAPPER_KAFKA__BROKERS", &nowhere)]);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while mapper.health().is_none() {
        assert!(std::time::Instant::now() < deadline, "no metrics server:\n{}", mapper.log_text());
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(3));
    let ready = crate::common::kafka::http_get(mapper.port(), "/readyz");
    assert!(ready.starts_with("HTTP/1.1 503") && ready.ends_with("not ready\n"), "{ready}");
    assert_eq!(mapper.health().map(|h| h.0), Some(200));
}

/// A batch closes once the stream goes quiet (`kafka.batch_idle_ms`, 5 ms by default), not at
/// its linger: with `batch_timeout_ms` at a minute, a handful of events is committed within
/// seconds. Before batches closed on an idle stream, they waited out the whole minute.
#[test]
fn a_quiet_stream_does_not_wait_out_the_linger() {
    let broker = Broker::start();
    let mapper = MapperProcess::start(&broker, "idle", &[("LLAMA_MAPPER_KAFKA__BATCH_TIMEOUT_MS", "60000")]);
    wait_joined(&[&mapper]);
    let events = numbered_events("idle", 0..5, 1);
    broker.produce(INPUT, &keyed(&events));
    // Far below the linger: only a batch closed on the idle stream commits in time.
    wait_inputs_committed(&broker, 5, Duration::from_secs(20), &[&mapper]);
    let out = wait_committed(&broker, CANONICAL, 5, Duration::from_secs(20), &[&mapper]);
    assert_eq!(count_ids(&out).len(), 5);
}
