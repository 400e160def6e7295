use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::extract::{extract, Observation};
use super::model::{LabelQuery, ModelDecision, ModelPolicy};
use crate::catalog::{Catalog, Pack, PackMeaning, UNKNOWN_LABEL};
use crate::config::ThresholdPolicy;
use crate::contracts::{CanonicalEvent, DetectorEvent, Lineage, Provenance, Route, Versions, SCHEMA_VERSION};
use crate::labels::LabelShield;

/// Longest `notes` the canonical schema allows.
const MAX_NOTES: usize = 500;

/// Most raw labels one event may carry. An unpacked detector can emit an object with
/// thousands of keys; mapped, that is a canonical event far over Kafka's record limit. Such
/// an event is refused (dead-lettered as `too_many_labels`) rather than truncated: silently
/// dropping evidence is worse than parking it. The schemas bound `lineage` to match.
pub const MAX_LABELS_PER_EVENT: usize = 256;

/// An event the engine refuses to map.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the detector output holds {found} labels; at most {MAX_LABELS_PER_EVENT} are mapped per event")]
pub struct TooManyLabels {
    pub found: usize,
}

/// The mapping engine: the catalog and the operator's thresholds, shared by every batch.
#[derive(Debug, Clone)]
pub struct Mapper {
    catalog: Arc<Catalog>,
    thresholds: ThresholdPolicy,
    model_policy: ModelPolicy,
    shield: LabelShield,
}

/// How one observation was placed by the rules.
#[derive(Debug, Clone)]
enum Placement {
    Labels(Vec<String>, Route),
    Clean,
    /// Waiting for the model: index into the batch's queries.
    Pending(usize),
}

#[derive(Debug)]
struct PreparedEvent {
    observations: Vec<(Observation, Placement, f64)>,
    has_pack: bool,
    /// Set when the output held more than [`MAX_LABELS_PER_EVENT`] labels (then nothing else is).
    too_many: Option<usize>,
}

/// A batch after the rules ran: what is left for the model is in [`PreparedBatch::queries`].
#[derive(Debug)]
pub struct PreparedBatch<'a> {
    mapper: &'a Mapper,
    events: &'a [DetectorEvent],
    prepared: Vec<PreparedEvent>,
    queries: Vec<LabelQuery>,
}

impl Mapper {
    pub fn new(catalog: Arc<Catalog>, thresholds: ThresholdPolicy) -> Self {
        Mapper { catalog, thresholds, model_policy: ModelPolicy::default(), shield: LabelShield::default() }
    }

    pub fn with_model_policy(mut self, policy: ModelPolicy) -> Self {
        self.model_policy = policy;
        self
    }

    /// How raw labels no rule knows are recorded (see [`LabelShield`]).
    pub fn with_label_shield(mut self, shield: LabelShield) -> Self {
        self.shield = shield;
        self
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// Runs extraction and the rules over a batch; the result lists the labels left for a model.
    pub fn prepare<'a>(&'a self, events: &'a [DetectorEvent]) -> PreparedBatch<'a> {
        let mut queries: Vec<LabelQuery> = Vec::new();
        let mut query_index: HashMap<(String, String), usize> = HashMap::new();
        let prepared = events
            .iter()
            .map(|event| {
                let (pack, has_pack) = self.catalog.pack_for(&event.detector);
                let override_t = self.thresholds.override_for(&event.detector, &event.tenant_id, event.environment());
                let found = extract(pack, &event.output);
                if found.len() > MAX_LABELS_PER_EVENT {
                    return PreparedEvent { observations: Vec::new(), has_pack, too_many: Some(found.len()) };
                }
                let observations = found
                    .into_iter()
                    .map(|obs| {
                        let threshold = override_t.as_ref().map_or_else(|| pack.threshold_for(&obs.key), |(t, _)| *t);
                        let placement = self.place(pack, &obs).unwrap_or_else(|| {
                            let k = (event.detector.clone(), obs.key.clone());
                            let i = *query_index.entry(k).or_insert_with(|| {
                                queries.push(LabelQuery {
                                    detector: event.detector.clone(),
                                    raw_label: obs.raw_label.clone(),
                                    pack_version: pack.version_tag(),
                                });
                                queries.len() - 1
                            });
                            Placement::Pending(i)
                        });
                        (obs, placement, threshold)
                    })
                    .collect();
                PreparedEvent { observations, has_pack, too_many: None }
            })
            .collect();
        PreparedBatch { mapper: self, events, prepared, queries }
    }

    /// Rules only: pack map, then taxonomy aliases.
    fn place(&self, pack: &Pack, obs: &Observation) -> Option<Placement> {
        match pack.meaning(&obs.key) {
            Some(PackMeaning::Labels(l)) => return Some(Placement::Labels(l.clone(), Route::Pack)),
            Some(PackMeaning::Clean) => return Some(Placement::Clean),
            None => {}
        }
        self.catalog.taxonomy.resolve_alias(&obs.key).map(|l| Placement::Labels(vec![l.to_string()], Route::Alias))
    }

    /// Maps a batch with the rules alone (no model): what runs when no model is configured,
    /// and what the kill-switch forces.
    pub fn map_rules_only(&self, events: &[DetectorEvent]) -> Vec<Result<CanonicalEvent, TooManyLabels>> {
        self.prepare(events).finish(&[])
    }
}

impl PreparedBatch<'_> {
    /// Distinct raw labels (per detector) the rules could not place.
    pub fn queries(&self) -> &[LabelQuery] {
        &self.queries
    }

    /// Builds the canonical events, in input order. `answers[i]` answers `queries()[i]`; a
    /// missing, unusable or low-confidence answer falls back to `OTHER.Unknown`.
    pub fn finish(self, answers: &[Option<ModelDecision>]) -> Vec<Result<CanonicalEvent, TooManyLabels>> {
        let taxonomy = &self.mapper.catalog.taxonomy;
        let decided: Vec<Option<&ModelDecision>> = (0..self.queries.len())
            .map(|i| {
                answers
                    .get(i)
                    .and_then(Option::as_ref)
                    .filter(|d| taxonomy.contains(&d.label) && d.confidence.is_finite())
            })
            .collect();
        self.events
            .iter()
            .zip(self.prepared)
            .map(|(event, prep)| match prep.too_many {
                Some(found) => Err(TooManyLabels { found }),
                None => Ok(build_event(self.mapper, event, prep, &decided)),
            })
            .collect()
    }
}

fn build_event(
    mapper: &Mapper,
    event: &DetectorEvent,
    prep: PreparedEvent,
    decided: &[Option<&ModelDecision>],
) -> CanonicalEvent {
    let catalog = &mapper.catalog;
    let (pack, _) = catalog.pack_for(&event.detector);
    let mut lineage = Vec::with_capacity(prep.observations.len());
    let mut scores: BTreeMap<String, f64> = BTreeMap::new();
    let mut hits: BTreeMap<String, f64> = BTreeMap::new();
    let mut model_used: Option<String> = None;
    let mut fallbacks: Vec<String> = Vec::new();

    for (obs, placement, threshold) in prep.observations {
        let score = obs.effective_score();
        let hit = obs.flagged.unwrap_or(score >= threshold);
        // A label the catalog knows is recorded as it is; one it does not, as the shield says.
        let recorded = match placement {
            Placement::Pending(_) => mapper.shield.shown(&obs.raw_label),
            _ => obs.raw_label.clone(),
        };
        let (labels, route, confidence) = match placement {
            Placement::Labels(l, r) => (l.into_iter().map(Some).collect(), r, 1.0),
            Placement::Clean => (vec![None], Route::Pack, 1.0),
            Placement::Pending(i) => match decided[i]
                .filter(|d| d.confidence >= mapper.model_policy.min_for(&event.tenant_id, &event.detector))
            {
                Some(d) => {
                    model_used = Some(d.model.clone());
                    (vec![Some(d.label.clone())], Route::Model, d.confidence.clamp(0.0, 1.0))
                }
                None => {
                    fallbacks.push(recorded.clone());
                    (vec![Some(UNKNOWN_LABEL.to_string())], Route::Fallback, 0.0)
                }
            },
        };
        for label in labels {
            if let Some(l) = &label {
                let s = scores.entry(l.clone()).or_insert(score);
                *s = s.max(score);
                if hit {
                    let h = hits.entry(l.clone()).or_insert(score);
                    *h = h.max(score);
                }
            }
            lineage.push(Lineage {
                raw_label: recorded.clone(),
                raw_score: obs.raw_score.clone(),
                score,
                threshold,
                hit,
                flagged: obs.flagged,
                label,
                route,
                confidence,
            });
        }
    }

    let mut taxonomy: Vec<(String, f64)> = hits.into_iter().collect();
    taxonomy.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let confidence = lineage.iter().map(|l| l.confidence).fold(1.0_f64, f64::min);
    let route =
        lineage.iter().map(|l| l.route).max().unwrap_or(if prep.has_pack { Route::Pack } else { Route::Fallback });

    let mut notes = Vec::new();
    if !prep.has_pack {
        notes.push(format!("no pack for detector '{}': generic extraction", event.detector));
    }
    if !fallbacks.is_empty() {
        notes.push(format!("unmapped raw labels fell back to {UNKNOWN_LABEL}: {}", fallbacks.join(", ")));
    }
    let notes = (!notes.is_empty()).then(|| truncate(&notes.join("; "), MAX_NOTES));

    CanonicalEvent {
        schema_version: SCHEMA_VERSION.to_string(),
        event_id: event.event_id.clone(),
        request_id: event.request_id.clone(),
        taxonomy: taxonomy.into_iter().map(|(l, _)| l).collect(),
        scores,
        confidence,
        notes,
        provenance: Provenance {
            vendor: pack.vendor.clone(),
            detector: event.detector.clone(),
            detector_version: event.detector_version.clone(),
            raw_ref: event.raw_ref.clone(),
            route,
            model: model_used.clone(),
            tenant_id: event.tenant_id.clone(),
            ts: event.ts.clone(),
        },
        policy_context: event.policy_context.clone(),
        lineage,
        versions: Versions {
            taxonomy: catalog.taxonomy.version.clone(),
            frameworks: catalog.frameworks.version.clone(),
            pack: pack.version_tag(),
            model: model_used,
            mapper: env!("CARGO_PKG_VERSION").to_string(),
        },
    }
}

fn truncate(s: &str, max_chars: usize) -> String {
    match s.char_indices().nth(max_chars) {
        Some((i, _)) => {
            let cut = s[..i].char_indices().nth(max_chars - 1).map_or(i, |(j, _)| j);
            format!("{}…", &s[..cut])
        }
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::truncate;

    #[test]
    fn truncate_respects_the_char_budget() {
        let s = "x".repeat(600);
        let t = truncate(&s, 500);
        assert_eq!(t.chars().count(), 500);
        assert!(t.ends_with('…'));
        assert_eq!(truncate("short", 500), "short");
    }
}
