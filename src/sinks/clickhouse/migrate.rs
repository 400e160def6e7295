//! Numbered migrations under `schemas/clickhouse/` (`NNN_name.sql`), compiled in and applied
//! in order by `mapper clickhouse migrate`. Applied versions are recorded in
//! `mapper_schema_migrations`; every statement is idempotent (`IF NOT EXISTS`), so a run that
//! died half-way is simply run again.

use anyhow::Context;

use crate::config::ClickHouseSettings;

pub struct Migration {
    pub version: u32,
    pub name: &'static str,
    sql: &'static str,
}

pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "001_audit_events",
        sql: include_str!("../../../schemas/clickhouse/001_audit_events.sql"),
    },
    Migration {
        version: 2,
        name: "002_auditor_views",
        sql: include_str!("../../../schemas/clickhouse/002_auditor_views.sql"),
    },
];

/// Tables holding tenant rows: what row policies cover and what `mapper replay` rebuilds
/// (`canonical_events` is rebuilt from its topic, not the trail; see README).
pub const TENANT_TABLES: &[&str] =
    &["audit_events", "canonical_events", "incidents_by_control_day", "detector_coverage_day"];
/// The audit projection: `audit_events` and the tables its materialized views feed.
pub const AUDIT_TABLES: &[&str] = &["audit_events", "incidents_by_control_day", "detector_coverage_day"];

impl Migration {
    /// The statements, one per request (the HTTP interface runs one statement at a time),
    /// with `{ttl_days}` filled in.
    pub fn statements(&self, settings: &ClickHouseSettings) -> Vec<String> {
        let sql: String = self
            .sql
            .lines()
            .filter(|l| !l.trim_start().starts_with("--"))
            .collect::<Vec<_>>()
            .join("\n")
            .replace("{ttl_days}", &settings.ttl_days.to_string());
        sql.split(';').map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect()
    }
}

/// Applies the migrations not yet recorded; returns the names applied.
pub async fn migrate(client: &clickhouse::Client, settings: &ClickHouseSettings) -> anyhow::Result<Vec<&'static str>> {
    client
        .query(
            "CREATE TABLE IF NOT EXISTS mapper_schema_migrations (version UInt32, name String, \
             applied_at DateTime DEFAULT now()) ENGINE = ReplacingMergeTree ORDER BY version",
        )
        .execute()
        .await
        .context("creating mapper_schema_migrations")?;
    let applied: Vec<u32> = client
        .query("SELECT DISTINCT version FROM mapper_schema_migrations ORDER BY version")
        .fetch_all()
        .await
        .context("reading applied migrations")?;
    let mut done = Vec::new();
    for m in MIGRATIONS.iter().filter(|m| !applied.contains(&m.version)) {
        for stmt in m.statements(settings) {
            client.query(&stmt).execute().await.with_context(|| format!("migration {}: {stmt}", m.name))?;
        }
        client
            .query("INSERT INTO mapper_schema_migrations (version, name) VALUES (?, ?)")
            .bind(m.version)
            .bind(m.name)
            .execute()
            .await
            .with_context(|| format!("recording migration {}", m.name))?;
        done.push(m.name);
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_are_split_and_ttl_filled_in() {
        let s = ClickHouseSettings { ttl_days: 7, ..Default::default() };
        let stmts = MIGRATIONS[0].statements(&s);
        assert_eq!(stmts.len(), 2, "{stmts:?}");
        assert!(stmts.iter().all(|s| s.contains("INTERVAL 7 DAY") && !s.contains("{ttl_days}")));
        let versions: Vec<u32> = MIGRATIONS.iter().map(|m| m.version).collect();
        assert!(versions.windows(2).all(|w| w[0] < w[1]), "migrations in order");
        for m in MIGRATIONS {
            assert!(m.name.starts_with(&format!("{:03}_", m.version)));
        }
    }
}
