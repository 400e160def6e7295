//! The canonical taxonomy (`taxonomy.yaml`): the only label names the product ever emits.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use marked_yaml::Spanned;
use serde::Deserialize;

use super::source::{read_yaml, ConfigError, ConfigErrors};
use crate::labels::normalize;

/// The label every unknown raw label falls back to.
pub const UNKNOWN_LABEL: &str = "OTHER.Unknown";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TaxonomyFile {
    version: Spanned<String>,
    #[serde(default)]
    namespace: Option<String>,
    categories: HashMap<Spanned<String>, String>,
    labels: Vec<LabelFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LabelFile {
    name: Spanned<String>,
    category: Spanned<String>,
    description: String,
    #[serde(default)]
    aliases: Vec<Spanned<String>>,
}

#[derive(Debug, Clone)]
pub struct Label {
    pub name: String,
    pub category: String,
    pub description: String,
    pub aliases: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Taxonomy {
    pub version: String,
    pub namespace: String,
    pub categories: BTreeMap<String, String>,
    labels: BTreeMap<String, Label>,
    /// normalised alias or label name → label name; what the `alias` route consults.
    alias_index: HashMap<String, String>,
}

impl Taxonomy {
    pub fn load(path: &Path) -> Result<Taxonomy, ConfigErrors> {
        let file: TaxonomyFile = read_yaml(path)?;
        let mut errors = ConfigErrors::default();
        let categories: BTreeMap<String, String> =
            file.categories.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();

        let mut labels = BTreeMap::new();
        let mut alias_index: HashMap<String, String> = HashMap::new();
        let mut alias_owner_line: HashMap<String, Option<usize>> = HashMap::new();
        let mut claim = |key: String, label: &str, at: &Spanned<String>, errors: &mut ConfigErrors| {
            if key.is_empty() {
                errors.push(ConfigError::at(path, at, format!("alias '{}' is empty once normalised", **at)));
                return;
            }
            match alias_index.get(&key) {
                Some(owner) if owner != label => errors.push(ConfigError::at(
                    path,
                    at,
                    format!(
                        "'{}' of {label} normalises to '{key}', already claimed by {owner} (line {})",
                        **at,
                        alias_owner_line[&key].map_or("?".into(), |l| l.to_string())
                    ),
                )),
                Some(_) => {}
                None => {
                    alias_index.insert(key.clone(), label.to_string());
                    alias_owner_line.insert(key, super::source::line_of(at));
                }
            }
        };

        for l in &file.labels {
            let name = l.name.as_str();
            if !is_label_name(name) {
                errors.push(ConfigError::at(
                    path,
                    &l.name,
                    format!("label name '{name}' must be dot-separated segments of letters and digits"),
                ));
            }
            let first = name.split('.').next().unwrap_or_default();
            if l.category.as_str() != first {
                errors.push(ConfigError::at(
                    path,
                    &l.category,
                    format!("category '{}' of {name} must be its first segment '{first}'", *l.category),
                ));
            }
            if !categories.contains_key(l.category.as_str()) {
                errors.push(ConfigError::at(
                    path,
                    &l.category,
                    format!("category '{}' is not declared under `categories`", *l.category),
                ));
            }
            if labels.contains_key(name) {
                errors.push(ConfigError::at(path, &l.name, format!("label {name} is defined twice")));
                continue;
            }
            claim(normalize(name), name, &l.name, &mut errors);
            for a in &l.aliases {
                claim(normalize(a), name, a, &mut errors);
            }
            labels.insert(
                name.to_string(),
                Label {
                    name: name.to_string(),
                    category: l.category.to_string(),
                    description: l.description.clone(),
                    aliases: l.aliases.iter().map(|a| a.to_string()).collect(),
                },
            );
        }
        if !labels.contains_key(UNKNOWN_LABEL) {
            errors.push(ConfigError::at(
                path,
                &file.version,
                format!("the taxonomy must define the fallback label {UNKNOWN_LABEL}"),
            ));
        }
        errors.into_result(Taxonomy {
            version: file.version.to_string(),
            namespace: file.namespace.unwrap_or_else(|| "llama-mapper".into()),
            categories,
            labels,
            alias_index,
        })
    }

    pub fn contains(&self, label: &str) -> bool {
        self.labels.contains_key(label)
    }

    pub fn labels(&self) -> impl Iterator<Item = &Label> {
        self.labels.values()
    }

    /// The label whose name or alias matches `raw` once both are normalised.
    pub fn resolve_alias(&self, normalized_raw: &str) -> Option<&str> {
        self.alias_index.get(normalized_raw).map(String::as_str)
    }

    /// True when `prefix` is a label or a dot-prefix of one (frameworks map by category).
    pub fn has_prefix(&self, prefix: &str) -> bool {
        self.labels.keys().any(|l| l == prefix || l.starts_with(&format!("{prefix}.")))
    }
}

fn is_label_name(name: &str) -> bool {
    !name.is_empty() && name.split('.').all(|seg| !seg.is_empty() && seg.chars().all(|c| c.is_ascii_alphanumeric()))
}
