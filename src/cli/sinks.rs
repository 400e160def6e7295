//! `mapper sink …`, `mapper clickhouse …`, `mapper audit …` and `mapper replay`: the sink
//! workers and the tools auditors and operators use on what they wrote.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};

use crate::config::Settings;
use crate::sinks::clickhouse::{self as ch, migrate, tenant};
use crate::trail::{self, TrailStore};

#[derive(Debug, Subcommand)]
pub enum SinkCommand {
    /// Project the audit and canonical topics into ClickHouse.
    Clickhouse(SinkArgs),
    /// Seal audit events into the WORM trail on S3.
    S3(SinkArgs),
}

#[derive(Debug, Args)]
pub struct SinkArgs {
    #[arg(long)]
    pub brokers: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum ClickHouseCommand {
    /// Apply the migrations of schemas/clickhouse/ that are not applied yet.
    Migrate,
    /// Give a tenant's auditor a user that sees only that tenant's rows (row policies).
    TenantUser(TenantUserArgs),
}

#[derive(Debug, Args)]
pub struct TenantUserArgs {
    #[arg(long)]
    pub tenant: String,
    #[arg(long)]
    pub user: String,
    /// Environment variable holding the user's password (never a command-line argument).
    #[arg(long, default_value = "MAPPER_TENANT_PASSWORD")]
    pub password_env: String,
    /// Add the user to this users.xml (servers configured by files) instead of running SQL.
    #[arg(long)]
    pub users_xml: Option<PathBuf>,
    /// Print the SQL instead of running it.
    #[arg(long, conflicts_with = "users_xml")]
    pub print_sql: bool,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Create an ed25519 signing key for the trail (hex seed, mode 0600); prints the public key.
    Keygen {
        #[arg(long)]
        out: PathBuf,
    },
    /// Create the trail bucket with Object Lock enabled (if missing) and check it.
    InitBucket,
    /// Verify the trail: hashes, links, signatures, retention, and counts against ClickHouse.
    Verify(VerifyArgs),
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// One tenant (default: every tenant in the bucket).
    #[arg(long)]
    pub tenant: Option<String>,
    /// Only count events at or after this RFC 3339 time.
    #[arg(long)]
    pub since: Option<String>,
    /// Only count events before this RFC 3339 time.
    #[arg(long)]
    pub until: Option<String>,
    /// Skip the ClickHouse cross-check (e.g. an auditor with bucket access only).
    #[arg(long)]
    pub no_clickhouse: bool,
    /// Skip reading each object's Object Lock retention.
    #[arg(long)]
    pub no_retention: bool,
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    #[arg(long)]
    pub tenant: Option<String>,
    /// Empty the audit tables (or the tenant's rows) before loading.
    #[arg(long)]
    pub truncate: bool,
    #[arg(long)]
    pub no_progress: bool,
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

pub fn sink(mut settings: Settings, cmd: SinkCommand) -> anyhow::Result<ExitCode> {
    let (SinkCommand::Clickhouse(a) | SinkCommand::S3(a)) = &cmd;
    if let Some(b) = &a.brokers {
        settings.kafka.brokers = b.clone();
    }
    runtime()?.block_on(async {
        let shutdown = crate::kafka::shutdown_signal();
        match cmd {
            SinkCommand::Clickhouse(_) => ch::run(settings, shutdown).await,
            SinkCommand::S3(_) => crate::sinks::s3_worm::run(settings, shutdown).await,
        }
    })?;
    Ok(ExitCode::SUCCESS)
}

pub fn clickhouse(settings: &Settings, cmd: ClickHouseCommand) -> anyhow::Result<ExitCode> {
    let client = ch::client(&settings.clickhouse);
    match cmd {
        ClickHouseCommand::Migrate => {
            let applied = runtime()?.block_on(migrate::migrate(&client, &settings.clickhouse))?;
            for m in &applied {
                println!("applied {m}");
            }
            println!("{} migrations known, {} applied now", migrate::MIGRATIONS.len(), applied.len());
        }
        ClickHouseCommand::TenantUser(a) => {
            tenant::check_name("tenant", &a.tenant)?;
            tenant::check_name("user", &a.user)?;
            let password = std::env::var(&a.password_env)
                .map_err(|_| anyhow::anyhow!("set the user's password in ${}", a.password_env))?;
            anyhow::ensure!(password.len() >= 12, "the password in ${} is shorter than 12 characters", a.password_env);
            let db = &settings.clickhouse.database;
            if let Some(path) = &a.users_xml {
                let existing = std::fs::read_to_string(path).unwrap_or_default();
                let entry = tenant::users_xml_entry(db, &a.tenant, &a.user, &password);
                std::fs::write(path, tenant::merge_users_xml(&existing, &a.user, &entry))?;
                println!(
                    "{}: user {} sees only tenant {}'s rows (reload the server's users)",
                    path.display(),
                    a.user,
                    a.tenant
                );
            } else if a.print_sql {
                for s in tenant::sql(db, &a.tenant, &a.user, &password) {
                    println!("{s};");
                }
            } else {
                runtime()?.block_on(async {
                    for s in tenant::sql(db, &a.tenant, &a.user, &password) {
                        client.query(&s).execute().await.map_err(|e| anyhow::anyhow!("{e}"))?;
                    }
                    anyhow::Ok(())
                })?;
                println!("user {} created; it sees only tenant {}'s rows", a.user, a.tenant);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn audit(settings: &Settings, cmd: AuditCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        AuditCommand::Keygen { out } => {
            anyhow::ensure!(!out.exists(), "{} exists; refusing to overwrite a signing key", out.display());
            let key = trail::generate_signing_key()?;
            write_secret(&out, &hex::encode(key.to_bytes()))?;
            println!("signing key written to {}", out.display());
            println!("public key (s3.verify_key): {}", hex::encode(key.verifying_key().as_bytes()));
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::InitBucket => {
            let store = TrailStore::new(&settings.s3)?;
            runtime()?.block_on(async {
                let created = store.ensure_bucket().await?;
                anyhow::ensure!(store.object_lock_enabled().await?, "bucket {} has no Object Lock", store.bucket());
                println!(
                    "bucket {} {} with Object Lock enabled",
                    store.bucket(),
                    if created { "created" } else { "exists" }
                );
                anyhow::Ok(())
            })?;
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Verify(a) => verify(settings, a),
    }
}

fn write_secret(path: &std::path::Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    writeln!(f, "{text}")?;
    Ok(())
}

fn parse_time(s: &Option<String>, flag: &str) -> anyhow::Result<Option<i64>> {
    s.as_deref().map(|t| crate::sinks::rfc3339_millis(t).map_err(|e| anyhow::anyhow!("--{flag}: {e}"))).transpose()
}

fn verify(settings: &Settings, a: VerifyArgs) -> anyhow::Result<ExitCode> {
    let store = TrailStore::new(&settings.s3)?;
    let key = trail::verifying_key(&settings.s3)?;
    let opts = trail::verify::VerifyOptions {
        tenant: a.tenant,
        since_ms: parse_time(&a.since, "since")?,
        until_ms: parse_time(&a.until, "until")?,
        check_retention: !a.no_retention,
        min_retention: Duration::from_secs(u64::from(settings.s3.retention_days) * 86_400),
        clickhouse: (!a.no_clickhouse).then(|| (ch::client(&settings.clickhouse), settings.clickhouse.ttl_days)),
    };
    let reports = runtime()?.block_on(trail::verify::verify(&store, &key, &opts))?;
    let mut bad = 0;
    for r in &reports {
        let status = if r.findings.is_empty() { "OK" } else { "FAILED" };
        let ch = r.clickhouse_events.map(|n| format!(", ClickHouse {n}")).unwrap_or_default();
        println!(
            "{status} tenant {}: {} segments, {} events ({} in range{ch}), head seq {} {}",
            r.tenant,
            r.segments,
            r.events,
            r.events_in_range,
            r.head_seq,
            r.head_hash.as_deref().unwrap_or("-")
        );
        for f in &r.findings {
            println!("  - {f}");
        }
        bad += r.findings.len();
    }
    if reports.is_empty() {
        println!("no trail found under s3://{}/{}", store.bucket(), store.tenants_prefix());
        return Ok(ExitCode::from(1));
    }
    println!("{} tenants verified, {bad} problems", reports.len());
    Ok(if bad == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

pub fn replay(settings: &Settings, a: ReplayArgs) -> anyhow::Result<ExitCode> {
    let store = TrailStore::new(&settings.s3)?;
    let key = trail::verifying_key(&settings.s3)?;
    let client = ch::client(&settings.clickhouse);
    let opts = trail::replay::ReplayOptions {
        tenant: a.tenant,
        truncate: a.truncate,
        progress: !a.no_progress,
        insert_batch: 20_000,
    };
    let s = runtime()?.block_on(trail::replay::replay(&store, &key, &client, &opts))?;
    println!(
        "replayed {} events from {} segments of {} tenants into ClickHouse ({} segments skipped)",
        s.events, s.segments, s.tenants, s.skipped_segments
    );
    for f in &s.findings {
        println!("  - {f}");
    }
    Ok(if s.findings.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
