-- Audit evidence, one row per audit event (mapper.audit.v1). Also rebuilt by `mapper replay`
-- from the S3 trail. ReplacingMergeTree collapses a redelivered event (same tenant, ts,
-- event_id) at merge time; queries count uniqExact(event_id) or use FINAL so answers are
-- right before merges too. {ttl_days} is `clickhouse.ttl_days` (default 90).
CREATE TABLE IF NOT EXISTS audit_events
(
    tenant_id          LowCardinality(String),
    ts                 DateTime64(3, 'UTC'),
    event_id           String,
    detector           LowCardinality(String),
    environment        LowCardinality(String),
    request_id         String,
    labels             Array(LowCardinality(String)),
    controls           Array(LowCardinality(String)),
    incident_controls  Array(LowCardinality(String)),
    routes             Array(LowCardinality(String)),
    taxonomy_version   LowCardinality(String),
    frameworks_version LowCardinality(String),
    pack_version       LowCardinality(String),
    model_version      LowCardinality(String),
    mapper_version     LowCardinality(String),
    event              String CODEC(ZSTD(3)),
    INDEX labels_idx labels TYPE bloom_filter GRANULARITY 4,
    INDEX controls_idx controls TYPE bloom_filter GRANULARITY 4,
    CONSTRAINT tenant_present CHECK tenant_id != '',
    CONSTRAINT ts_plausible CHECK ts >= toDateTime64('2000-01-01 00:00:00', 3, 'UTC')
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (tenant_id, ts, event_id)
TTL toDateTime(ts) + INTERVAL {ttl_days} DAY;

-- Canonical events (mapper.canonical.v1) for analytics: every score, hits and misses.
CREATE TABLE IF NOT EXISTS canonical_events
(
    tenant_id        LowCardinality(String),
    ts               DateTime64(3, 'UTC'),
    event_id         String,
    detector         LowCardinality(String),
    vendor           LowCardinality(String),
    detector_version LowCardinality(String),
    environment      LowCardinality(String),
    request_id       String,
    route            LowCardinality(String),
    confidence       Float64,
    labels           Array(LowCardinality(String)),
    score_labels     Array(LowCardinality(String)),
    score_values     Array(Float64),
    taxonomy_version LowCardinality(String),
    pack_version     LowCardinality(String),
    model_version    LowCardinality(String),
    mapper_version   LowCardinality(String),
    event            String CODEC(ZSTD(3)),
    INDEX labels_idx labels TYPE bloom_filter GRANULARITY 4,
    CONSTRAINT tenant_present CHECK tenant_id != '',
    CONSTRAINT ts_plausible CHECK ts >= toDateTime64('2000-01-01 00:00:00', 3, 'UTC')
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (tenant_id, ts, event_id)
TTL toDateTime(ts) + INTERVAL {ttl_days} DAY;
