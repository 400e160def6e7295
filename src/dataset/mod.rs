//! `mapper dataset build`: instruction/response pairs for fine-tuning the model path, from
//! what the catalog already knows (pack maps, taxonomy aliases) plus synthetic spellings of
//! those labels (`variants`).
//!
//! The split is by *base label*: a raw label and all its variants land on the same side, so
//! the validation split measures what the model does with spellings it has never seen, not
//! how well it remembers a casing. Assignment hashes `(seed, detector, base label)`, so it is
//! reproducible and stable as the catalog grows (adding a pack moves no existing example).
//!
//! Format (the seeds' `instruction`/`response`): the response is the exact JSON the model is
//! constrained to at inference, `{"label":"<taxonomy label>"}`. The seeds also had the model
//! emit scores and a confidence; here scores come from the detector and confidence from the
//! model's token probabilities, so training the model to invent them would only teach it to
//! make numbers up.

pub mod variants;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::Path;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::catalog::Catalog;
use crate::labels::normalize;

/// The instruction the model sees, for training and inference alike.
pub fn instruction(detector: &str, raw_label: &str) -> String {
    format!("Map the following detector output to the canonical taxonomy. Detector: {detector}, Output: {raw_label}")
}

/// The response the model is trained (and at inference constrained) to give.
pub fn response(label: &str) -> String {
    serde_json::json!({ "label": label }).to_string()
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Example {
    pub instruction: String,
    pub response: String,
    /// Not part of the training text: where the example came from, for the report.
    #[serde(skip)]
    pub meta: ExampleMeta,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ExampleMeta {
    pub detector: String,
    pub raw_label: String,
    pub label: String,
    /// `pack`, `alias`, or the variant kind.
    pub source: String,
    /// Whether the rules (pack maps, aliases after normalisation) already place this label.
    pub rules_place: bool,
}

#[derive(Debug, Clone)]
pub struct Options {
    pub seed: u64,
    /// Share of base labels held out for validation.
    pub validation_fraction: f64,
    /// Detector name used for taxonomy aliases (labels an in-house detector might emit).
    pub alias_detector: String,
}

impl Default for Options {
    fn default() -> Self {
        Options { seed: 7, validation_fraction: 0.2, alias_detector: "in-house".into() }
    }
}

#[derive(Debug, Default)]
pub struct Dataset {
    pub train: Vec<Example>,
    pub validation: Vec<Example>,
}

struct Base {
    detector: String,
    vendor: Option<String>,
    raw: String,
    label: String,
    source: &'static str,
}

fn in_validation(seed: u64, detector: &str, raw: &str, fraction: f64) -> bool {
    let h = Sha256::digest(format!("{seed}\u{0}{detector}\u{0}{}", normalize(raw)).as_bytes());
    let x = u64::from_be_bytes(h[..8].try_into().expect("8 bytes")) as f64 / u64::MAX as f64;
    x < fraction
}

fn rules_place(catalog: &Catalog, detector: &str, raw: &str) -> bool {
    let n = normalize(raw);
    let (pack, _) = catalog.pack_for(detector);
    pack.meaning(&n).is_some() || catalog.taxonomy.resolve_alias(&n).is_some()
}

pub fn build(catalog: &Catalog, opts: &Options) -> Dataset {
    let mut bases: Vec<Base> = Vec::new();
    for pack in catalog.packs.values() {
        for (raw, labels) in &pack.maps {
            // Multi-label maps train on their first (primary) label: the model answers one.
            if let Some(label) = labels.first() {
                bases.push(Base {
                    detector: pack.detector.clone(),
                    vendor: pack.vendor.clone(),
                    raw: raw.clone(),
                    label: label.clone(),
                    source: "pack",
                });
            }
        }
    }
    for label in catalog.taxonomy.labels() {
        for alias in &label.aliases {
            bases.push(Base {
                detector: opts.alias_detector.clone(),
                vendor: None,
                raw: alias.clone(),
                label: label.name.clone(),
                source: "alias",
            });
        }
    }
    let mut seen: BTreeSet<(String, String)> = BTreeSet::new();
    let mut ds = Dataset::default();
    for b in &bases {
        let validation = in_validation(opts.seed, &b.detector, &b.raw, opts.validation_fraction);
        let spellings =
            std::iter::once((b.source, b.raw.clone())).chain(variants::variants(&b.raw, b.vendor.as_deref()));
        for (source, raw) in spellings {
            let raw = crate::labels::bounded(&raw);
            if !seen.insert((b.detector.clone(), raw.clone())) {
                continue;
            }
            let ex = Example {
                instruction: instruction(&b.detector, &raw),
                response: response(&b.label),
                meta: ExampleMeta {
                    detector: b.detector.clone(),
                    rules_place: rules_place(catalog, &b.detector, &raw),
                    raw_label: raw,
                    label: b.label.clone(),
                    source: source.to_string(),
                },
            };
            if validation {
                ds.validation.push(ex);
            } else {
                ds.train.push(ex);
            }
        }
    }
    // Two base labels can meet in one spelling (a typo of one is another's name): such a
    // spelling is not unseen, so it leaves the validation split.
    let trained: BTreeSet<(&str, String)> =
        ds.train.iter().map(|e| (e.meta.detector.as_str(), normalize(&e.meta.raw_label))).collect();
    let validation = std::mem::take(&mut ds.validation);
    let kept: Vec<Example> = validation
        .into_iter()
        .filter(|e| !trained.contains(&(e.meta.detector.as_str(), normalize(&e.meta.raw_label))))
        .collect();
    ds.validation = kept;
    ds
}

/// Counts per label and detector, and which labels have no training example.
#[derive(Debug, Serialize)]
pub struct Coverage {
    pub train: usize,
    pub validation: usize,
    /// Validation examples no pack map or alias places: what only the model can map.
    pub validation_model_only: usize,
    pub labels_in_taxonomy: usize,
    pub labels_covered_in_train: usize,
    pub labels_without_training_examples: Vec<String>,
    pub per_label: BTreeMap<String, [usize; 2]>,
    pub per_detector: BTreeMap<String, [usize; 2]>,
    pub per_source: BTreeMap<String, [usize; 2]>,
}

pub fn coverage(catalog: &Catalog, ds: &Dataset) -> Coverage {
    let mut per_label: BTreeMap<String, [usize; 2]> = BTreeMap::new();
    let mut per_detector: BTreeMap<String, [usize; 2]> = BTreeMap::new();
    let mut per_source: BTreeMap<String, [usize; 2]> = BTreeMap::new();
    for (side, set) in [(0, &ds.train), (1, &ds.validation)] {
        for e in set {
            per_label.entry(e.meta.label.clone()).or_default()[side] += 1;
            per_detector.entry(e.meta.detector.clone()).or_default()[side] += 1;
            per_source.entry(e.meta.source.clone()).or_default()[side] += 1;
        }
    }
    let missing: Vec<String> = catalog
        .taxonomy
        .labels()
        .map(|l| l.name.clone())
        .filter(|l| per_label.get(l).is_none_or(|c| c[0] == 0))
        .collect();
    let total = catalog.taxonomy.labels().count();
    Coverage {
        train: ds.train.len(),
        validation: ds.validation.len(),
        validation_model_only: ds.validation.iter().filter(|e| !e.meta.rules_place).count(),
        labels_in_taxonomy: total,
        labels_covered_in_train: total - missing.len(),
        labels_without_training_examples: missing,
        per_label,
        per_detector,
        per_source,
    }
}

/// Writes `train.jsonl`, `validation.jsonl` and `coverage.json` into `dir`.
pub fn write(dir: &Path, ds: &Dataset, cov: &Coverage) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for (name, set) in [("train.jsonl", &ds.train), ("validation.jsonl", &ds.validation)] {
        let mut f = std::io::BufWriter::new(std::fs::File::create(dir.join(name))?);
        for e in set {
            serde_json::to_writer(&mut f, e)?;
            f.write_all(b"\n")?;
        }
        f.flush()?;
    }
    std::fs::write(dir.join("coverage.json"), serde_json::to_vec_pretty(cov)?)?;
    Ok(())
}
