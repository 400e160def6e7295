-- Pre-aggregated answers to the auditors' two most common questions, kept current by
-- materialized views on every insert into audit_events. They hold uniqExact states of
-- event_id, not counters, so a redelivered event never counts twice.

-- "Incidents per control per day for tenant X": controls evidenced by hits (labels), not the
-- controls every run evidences (frameworks.yaml `always`).
CREATE TABLE IF NOT EXISTS incidents_by_control_day
(
    tenant_id LowCardinality(String),
    day       Date,
    control   LowCardinality(String),
    events    AggregateFunction(uniqExact, String)
)
ENGINE = AggregatingMergeTree
ORDER BY (tenant_id, day, control)
TTL day + INTERVAL {ttl_days} DAY;

CREATE MATERIALIZED VIEW IF NOT EXISTS incidents_by_control_day_mv TO incidents_by_control_day AS
SELECT tenant_id, toDate(ts) AS day, control, uniqExactState(event_id) AS events
FROM audit_events
ARRAY JOIN incident_controls AS control
GROUP BY tenant_id, day, control;

-- "Coverage: which detectors reported for tenant X" (and how much, and when last).
CREATE TABLE IF NOT EXISTS detector_coverage_day
(
    tenant_id LowCardinality(String),
    day       Date,
    detector  LowCardinality(String),
    events    AggregateFunction(uniqExact, String),
    last_seen SimpleAggregateFunction(max, DateTime64(3, 'UTC'))
)
ENGINE = AggregatingMergeTree
ORDER BY (tenant_id, day, detector)
TTL day + INTERVAL {ttl_days} DAY;

CREATE MATERIALIZED VIEW IF NOT EXISTS detector_coverage_day_mv TO detector_coverage_day AS
SELECT tenant_id, toDate(ts) AS day, detector, uniqExactState(event_id) AS events, max(ts) AS last_seen
FROM audit_events
GROUP BY tenant_id, day, detector;
