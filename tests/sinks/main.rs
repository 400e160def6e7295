//! The sinks against real servers started per test: tansu (Kafka protocol), SeaweedFS (S3 with
//! Object Lock) and ClickHouse (chdb behind the HTTP test front).

#[path = "../common/mod.rs"]
mod common;

mod clickhouse;
mod faults;
mod support;
mod trail;
