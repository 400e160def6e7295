//! Detector packs (`pillars-detectors/<detector>.yaml`): how to read one detector's native
//! output and what its raw labels mean. The format is documented in `docs/pack-format.md`.
//!
//! Packs are compiled once at load: JSONPath expressions (RFC 9535, `serde_json_path`) and
//! regexes are parsed, raw labels normalised and checked against the taxonomy, so the hot
//! path never re-parses anything and a typo is a start-up error with a line number, not a
//! silent miss in production.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

use marked_yaml::Spanned;
use regex::Regex;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json_path::JsonPath;

use super::source::{line_of, read_yaml, ConfigError, ConfigErrors};
use super::taxonomy::Taxonomy;
use crate::labels::normalize;

/// Hit threshold when a pack names none: the documented default.
pub const DEFAULT_THRESHOLD: f64 = 0.5;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PackFile {
    detector: Spanned<String>,
    version: Spanned<String>,
    #[serde(default)]
    vendor: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    docs: Option<String>,
    #[serde(default)]
    threshold: Option<Spanned<f64>>,
    #[serde(default)]
    thresholds: HashMap<Spanned<String>, Spanned<f64>>,
    extract: Vec<ExtractorFile>,
    #[serde(default)]
    maps: HashMap<Spanned<String>, OneOrMany>,
    #[serde(default)]
    clean: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExtractorFile {
    select: Spanned<String>,
    #[serde(default)]
    members: bool,
    #[serde(default)]
    label: Option<Spanned<String>>,
    #[serde(default)]
    label_prefix: Option<String>,
    #[serde(default)]
    score: Option<Spanned<String>>,
    #[serde(default)]
    normalize: Option<Spanned<String>>,
    #[serde(default)]
    range: Option<Spanned<Vec<f64>>>,
    #[serde(default)]
    levels: HashMap<Spanned<String>, f64>,
    #[serde(default)]
    flag: Option<Spanned<String>>,
    #[serde(default)]
    flagged_when: Option<bool>,
    #[serde(default)]
    default_score: Option<f64>,
    #[serde(default)]
    text: Option<TextFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TextFile {
    #[serde(default)]
    when: Option<Spanned<String>>,
    labels: Spanned<String>,
}

/// A map target: one label, or a list when one raw category spans several labels.
#[derive(Debug, Clone)]
struct OneOrMany(Vec<String>);

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = OneOrMany;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a taxonomy label or a list of taxonomy labels")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<OneOrMany, E> {
                Ok(OneOrMany(vec![v.to_string()]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<OneOrMany, A::Error> {
                let mut out = Vec::new();
                while let Some(s) = seq.next_element::<String>()? {
                    out.push(s);
                }
                Ok(OneOrMany(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// How a raw score becomes a number in [0,1].
#[derive(Debug, Clone)]
pub enum Normalize {
    Probability,
    Linear { min: f64, max: f64 },
    Levels(HashMap<String, f64>),
}

#[derive(Debug, Clone)]
pub struct TextRule {
    pub when: Option<Regex>,
    pub labels: Regex,
}

/// One compiled extractor. See `docs/pack-format.md` for the meaning of each part.
#[derive(Debug, Clone)]
pub struct Extractor {
    pub select: JsonPath,
    pub members: bool,
    pub label: Option<JsonPath>,
    pub label_prefix: String,
    pub score: Option<JsonPath>,
    pub normalize: Normalize,
    pub flag: Option<JsonPath>,
    pub flagged_when: bool,
    pub default_score: Option<f64>,
    pub text: Option<TextRule>,
}

/// What a raw label means according to its pack.
#[derive(Debug, Clone)]
pub enum PackMeaning {
    Labels(Vec<String>),
    Clean,
}

#[derive(Debug, Clone)]
pub struct Pack {
    pub detector: String,
    pub version: String,
    pub vendor: Option<String>,
    pub description: Option<String>,
    pub docs: Option<String>,
    pub path: PathBuf,
    pub threshold: f64,
    pub extractors: Vec<Extractor>,
    /// Stop at the first extractor that yields anything (the generic pack's shape sniffing).
    pub first_match: bool,
    /// normalised raw label → meaning.
    meanings: HashMap<String, PackMeaning>,
    /// normalised raw label → threshold override.
    thresholds: HashMap<String, f64>,
    /// The map as written (raw label → labels), for listings and dataset building.
    pub maps: BTreeMap<String, Vec<String>>,
    pub clean: Vec<String>,
}

impl Pack {
    pub fn load(path: &Path, taxonomy: &Taxonomy) -> Result<Pack, ConfigErrors> {
        let file: PackFile = read_yaml(path)?;
        let mut errors = ConfigErrors::default();

        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
        if file.detector.as_str() != stem {
            errors.push(ConfigError::at(
                path,
                &file.detector,
                format!("detector '{}' must match the file name '{stem}.yaml'", *file.detector),
            ));
        }
        if !is_detector_name(&file.detector) {
            errors.push(ConfigError::at(path, &file.detector, "detector names are lower-case letters, digits and '-'"));
        }
        if file.version.trim().is_empty() {
            errors.push(ConfigError::at(path, &file.version, "version must not be empty"));
        }
        let threshold = match &file.threshold {
            Some(t) => {
                check_unit(path, t, "threshold", &mut errors);
                **t
            }
            None => DEFAULT_THRESHOLD,
        };
        if file.extract.is_empty() {
            errors.push(ConfigError::at(path, &file.detector, "`extract` needs at least one extractor"));
        }
        let extractors: Vec<Extractor> =
            file.extract.iter().filter_map(|x| compile_extractor(path, x, &mut errors)).collect();

        let mut meanings = HashMap::new();
        let mut seen: HashMap<String, Option<usize>> = HashMap::new();
        let mut maps = BTreeMap::new();
        for (raw, targets) in &file.maps {
            let key = normalize(raw);
            if key.is_empty() {
                errors.push(ConfigError::at(path, raw, format!("raw label '{}' is empty once normalised", **raw)));
                continue;
            }
            if let Some(prev) = seen.insert(key.clone(), line_of(raw)) {
                errors.push(ConfigError::at(
                    path,
                    raw,
                    format!(
                        "raw label '{}' normalises to '{key}', already mapped on line {}",
                        **raw,
                        prev.map_or("?".into(), |l| l.to_string())
                    ),
                ));
            }
            if targets.0.is_empty() {
                errors.push(ConfigError::at(path, raw, format!("raw label '{}' maps to no label", **raw)));
            }
            for t in &targets.0 {
                if !taxonomy.contains(t) {
                    errors.push(ConfigError::at(
                        path,
                        raw,
                        format!("'{}' maps to '{t}', which is not a taxonomy label", **raw),
                    ));
                }
            }
            meanings.insert(key, PackMeaning::Labels(targets.0.clone()));
            maps.insert(raw.to_string(), targets.0.clone());
        }
        for raw in &file.clean {
            let key = normalize(raw);
            if let Some(prev) = seen.insert(key.clone(), line_of(raw)) {
                errors.push(ConfigError::at(
                    path,
                    raw,
                    format!(
                        "clean label '{}' is also mapped on line {}",
                        **raw,
                        prev.map_or("?".into(), |l| l.to_string())
                    ),
                ));
            }
            meanings.insert(key, PackMeaning::Clean);
        }
        let mut thresholds = HashMap::new();
        for (raw, t) in &file.thresholds {
            check_unit(path, t, &format!("threshold of '{}'", **raw), &mut errors);
            let key = normalize(raw);
            if !meanings.contains_key(&key) {
                errors.push(ConfigError::at(
                    path,
                    raw,
                    format!("threshold for '{}', which is neither in `maps` nor in `clean`", **raw),
                ));
            }
            thresholds.insert(key, **t);
        }

        errors.into_result(Pack {
            detector: file.detector.to_string(),
            version: file.version.to_string(),
            vendor: file.vendor,
            description: file.description,
            docs: file.docs,
            path: path.to_path_buf(),
            threshold,
            extractors,
            first_match: false,
            meanings,
            thresholds,
            maps,
            clean: file.clean.iter().map(|c| c.to_string()).collect(),
        })
    }

    /// The pack used for detectors that have none: the common output shapes, no label map.
    /// Every label then goes through aliases, the model and the fallback — an in-house
    /// detector's events are mapped (and visible as such) instead of bounced to the DLQ.
    pub fn generic() -> Pack {
        let p = |s: &str| JsonPath::parse(s).expect("built-in JSONPath parses");
        let base = Extractor {
            select: p("$"),
            members: false,
            label: None,
            label_prefix: String::new(),
            score: None,
            normalize: Normalize::Probability,
            flag: None,
            flagged_when: true,
            default_score: None,
            text: None,
        };
        // Tried in order; the first that yields anything wins (`first_match`), so a
        // `{"label": .., "score": ..}` object is read as one label, not as two members.
        let extractors = vec![
            // [{"label": "toxic", "score": 0.9}], and batches of such lists
            Extractor {
                select: p("$..[?@.label]"),
                label: Some(p("$.label")),
                score: Some(p("$.score")),
                ..base.clone()
            },
            // {"label": "toxic", "score": 0.9}
            Extractor { label: Some(p("$.label")), score: Some(p("$.score")), ..base.clone() },
            // "toxic"
            base.clone(),
            // ["toxic", "insult"]
            Extractor { select: p("$[*]"), ..base.clone() },
            // {"toxic": 0.9, "insult": 0.1}
            Extractor { members: true, score: Some(p("$")), ..base.clone() },
        ];
        Pack {
            detector: "generic".into(),
            version: "builtin".into(),
            vendor: None,
            description: Some("fallback extraction for detectors without a pack".into()),
            docs: None,
            path: PathBuf::new(),
            threshold: DEFAULT_THRESHOLD,
            extractors,
            first_match: true,
            meanings: HashMap::new(),
            thresholds: HashMap::new(),
            maps: BTreeMap::new(),
            clean: Vec::new(),
        }
    }

    pub fn meaning(&self, normalized_raw: &str) -> Option<&PackMeaning> {
        self.meanings.get(normalized_raw)
    }

    /// The pack's own threshold for a raw label (per-label override, else the pack default).
    pub fn threshold_for(&self, normalized_raw: &str) -> f64 {
        self.thresholds.get(normalized_raw).copied().unwrap_or(self.threshold)
    }

    /// `detector@version`, the form that goes into every event's `versions.pack`.
    pub fn version_tag(&self) -> String {
        format!("{}@{}", self.detector, self.version)
    }
}

pub fn is_detector_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.starts_with('-')
}

fn check_unit(path: &Path, t: &Spanned<f64>, what: &str, errors: &mut ConfigErrors) {
    if !(0.0..=1.0).contains(&**t) {
        errors.push(ConfigError::at(path, t, format!("{what} must be within [0, 1], got {}", **t)));
    }
}

fn compile_path(path: &Path, expr: &Spanned<String>, errors: &mut ConfigErrors) -> Option<JsonPath> {
    match JsonPath::parse(expr) {
        Ok(p) => Some(p),
        Err(e) => {
            errors.push(ConfigError::at(path, expr, format!("invalid JSONPath '{}': {e}", **expr)));
            None
        }
    }
}

fn compile_regex(path: &Path, expr: &Spanned<String>, errors: &mut ConfigErrors) -> Option<Regex> {
    match Regex::new(expr) {
        Ok(r) => Some(r),
        Err(e) => {
            errors.push(ConfigError::at(path, expr, format!("invalid regex '{}': {e}", **expr)));
            None
        }
    }
}

fn compile_extractor(path: &Path, x: &ExtractorFile, errors: &mut ConfigErrors) -> Option<Extractor> {
    let before = errors.0.len();
    let select = compile_path(path, &x.select, errors);
    let label = x.label.as_ref().and_then(|l| compile_path(path, l, errors));
    let score = x.score.as_ref().and_then(|s| compile_path(path, s, errors));
    let flag = x.flag.as_ref().and_then(|s| compile_path(path, s, errors));
    let normalize = match x.normalize.as_ref().map(|n| n.as_str()) {
        None | Some("probability") => {
            if !x.levels.is_empty() {
                Normalize::Levels(x.levels.iter().map(|(k, v)| (normalize(k), *v)).collect())
            } else {
                Normalize::Probability
            }
        }
        Some("linear") => match x.range.as_ref().map(|r| r.as_slice()) {
            Some([min, max]) if max > min => Normalize::Linear { min: *min, max: *max },
            _ => {
                errors.push(ConfigError::at(
                    path,
                    x.normalize.as_ref().expect("matched Some"),
                    "`normalize: linear` needs `range: [min, max]` with max > min",
                ));
                Normalize::Probability
            }
        },
        Some("levels") => {
            if x.levels.is_empty() {
                errors.push(ConfigError::at(
                    path,
                    x.normalize.as_ref().expect("matched Some"),
                    "`normalize: levels` needs a `levels` map",
                ));
            }
            Normalize::Levels(x.levels.iter().map(|(k, v)| (normalize(k), *v)).collect())
        }
        Some(other) => {
            errors.push(ConfigError::at(
                path,
                x.normalize.as_ref().expect("matched Some"),
                format!("unknown normalize '{other}' (probability, linear, levels)"),
            ));
            Normalize::Probability
        }
    };
    for (k, v) in &x.levels {
        if !(0.0..=1.0).contains(v) {
            errors.push(ConfigError::at(path, k, format!("level '{}' must be within [0, 1], got {v}", **k)));
        }
    }
    if let Some(d) = x.default_score {
        if !(0.0..=1.0).contains(&d) {
            errors.push(ConfigError::at(path, &x.select, format!("default_score must be within [0, 1], got {d}")));
        }
    }
    let text = x.text.as_ref().and_then(|t| {
        let when = t.when.as_ref().and_then(|w| compile_regex(path, w, errors));
        let labels = compile_regex(path, &t.labels, errors)?;
        Some(TextRule { when, labels })
    });
    if errors.0.len() > before {
        return None;
    }
    Some(Extractor {
        select: select?,
        members: x.members,
        label,
        label_prefix: x.label_prefix.clone().unwrap_or_default(),
        score,
        normalize,
        flag,
        flagged_when: x.flagged_when.unwrap_or(true),
        default_score: x.default_score,
        text,
    })
}

/// Loads every `*.yaml` in `dir` except the taxonomy and frameworks files.
pub fn load_packs(dir: &Path, taxonomy: &Taxonomy) -> Result<BTreeMap<String, Pack>, ConfigErrors> {
    let mut errors = ConfigErrors::default();
    let mut packs = BTreeMap::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => return Err(ConfigError::new(dir, format!("cannot read pack directory: {e}")).into()),
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .filter(|p| !matches!(p.file_stem().and_then(|s| s.to_str()), Some("taxonomy" | "frameworks")))
        .collect();
    paths.sort();
    let mut names = HashSet::new();
    for p in paths {
        match Pack::load(&p, taxonomy) {
            Ok(pack) => {
                if !names.insert(pack.detector.clone()) {
                    errors.push(ConfigError::new(&p, format!("detector '{}' has two packs", pack.detector)));
                }
                packs.insert(pack.detector.clone(), pack);
            }
            Err(e) => errors.0.extend(e.0),
        }
    }
    errors.into_result(packs)
}
