//! The sinks against real servers: Apache Kafka (the run's shared broker, topics and groups per
//! test), SeaweedFS (S3 with Object Lock) and ClickHouse (chdb behind the HTTP test front),
//! both started per test.

#[path = "../common/mod.rs"]
mod common;

mod clickhouse;
mod faults;
mod support;
mod trail;
