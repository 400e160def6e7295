//! `mapper run` against a real Kafka-protocol broker (tansu), started per test.

#[path = "../common/mod.rs"]
mod common;

mod crash;
mod e2e;
mod modes;
mod probe;
mod scale_out;
mod support;
