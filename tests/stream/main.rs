//! `mapper run` against Apache Kafka: one broker for the run, topics and groups per test
//! (`common/kafka.rs`); the fault tests bring their own broker.

#[path = "../common/mod.rs"]
mod common;

mod checker;
mod e2e;
mod faults;
mod modes;
mod scale_out;
mod support;
