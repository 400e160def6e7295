//! Compliance frameworks (`frameworks.yaml`): which controls each taxonomy label evidences.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use marked_yaml::Spanned;
use serde::Deserialize;

use super::source::{read_yaml, ConfigError, ConfigErrors};
use super::taxonomy::Taxonomy;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FrameworksFile {
    version: Spanned<String>,
    frameworks: HashMap<Spanned<String>, FrameworkFile>,
    #[serde(default)]
    always: Vec<Spanned<String>>,
    mappings: HashMap<Spanned<String>, Vec<Spanned<String>>>,
    #[serde(default)]
    unmapped: HashMap<Spanned<String>, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FrameworkFile {
    name: String,
    controls: HashMap<Spanned<String>, String>,
}

#[derive(Debug, Clone)]
pub struct Framework {
    pub name: String,
    pub controls: BTreeMap<String, String>,
}

#[derive(Debug, Clone)]
pub struct Frameworks {
    pub version: String,
    pub frameworks: BTreeMap<String, Framework>,
    /// Controls every audit event evidences, whatever its labels (the detector run was logged).
    pub always: Vec<String>,
    /// Resolved per label once at load: the hot path only does a map lookup.
    by_label: BTreeMap<String, Vec<String>>,
    pub unmapped: BTreeMap<String, String>,
}

impl Frameworks {
    pub fn load(path: &Path, taxonomy: &Taxonomy) -> Result<Frameworks, ConfigErrors> {
        let file: FrameworksFile = read_yaml(path)?;
        let mut errors = ConfigErrors::default();
        let frameworks: BTreeMap<String, Framework> = file
            .frameworks
            .iter()
            .map(|(k, v)| {
                let controls = v.controls.iter().map(|(c, d)| (c.to_string(), d.clone())).collect();
                (k.to_string(), Framework { name: v.name.clone(), controls })
            })
            .collect();

        let check_ref = |r: &Spanned<String>, errors: &mut ConfigErrors| {
            let ok = r
                .split_once(':')
                .and_then(|(fw, ctl)| frameworks.get(fw).map(|f| f.controls.contains_key(ctl)))
                .unwrap_or(false);
            if !ok {
                errors.push(ConfigError::at(
                    path,
                    r,
                    format!("control '{}' is not defined (expected FRAMEWORK:CONTROL listed under `frameworks`)", **r),
                ));
            }
        };
        for r in &file.always {
            check_ref(r, &mut errors);
        }
        let mut prefix_map: HashMap<String, Vec<String>> = HashMap::new();
        for (key, refs) in &file.mappings {
            if !taxonomy.has_prefix(key) {
                errors.push(ConfigError::at(
                    path,
                    key,
                    format!("mapping key '{}' is neither a taxonomy label nor a prefix of one", **key),
                ));
            }
            for r in refs {
                check_ref(r, &mut errors);
            }
            prefix_map.insert(key.to_string(), refs.iter().map(|r| r.to_string()).collect());
        }
        for key in file.unmapped.keys() {
            if !taxonomy.contains(key) {
                errors.push(ConfigError::at(path, key, format!("unmapped label '{}' is not in the taxonomy", **key)));
            }
        }

        let mut by_label = BTreeMap::new();
        for label in taxonomy.labels() {
            let mut controls = BTreeSet::new();
            let segments: Vec<&str> = label.name.split('.').collect();
            for n in 1..=segments.len() {
                if let Some(refs) = prefix_map.get(&segments[..n].join(".")) {
                    controls.extend(refs.iter().cloned());
                }
            }
            let unmapped = file.unmapped.keys().find(|k| k.as_str() == label.name);
            match (controls.is_empty(), unmapped) {
                (true, None) => errors.push(ConfigError::at(
                    path,
                    &file.version,
                    format!(
                        "taxonomy label {} maps to no control: add it (or a prefix) under `mappings`, or list it under `unmapped` with the reason",
                        label.name
                    ),
                )),
                (false, Some(k)) => errors.push(ConfigError::at(
                    path,
                    k,
                    format!("{} is listed as unmapped but `mappings` gives it controls", label.name),
                )),
                _ => {}
            }
            by_label.insert(label.name.clone(), controls.into_iter().collect());
        }

        errors.into_result(Frameworks {
            version: file.version.to_string(),
            frameworks,
            always: file.always.iter().map(|r| r.to_string()).collect(),
            by_label,
            unmapped: file.unmapped.iter().map(|(k, v)| (k.to_string(), v.clone())).collect(),
        })
    }

    /// Controls a label evidences (without the `always` ones), sorted.
    pub fn controls_for(&self, label: &str) -> &[String] {
        self.by_label.get(label).map(Vec::as_slice).unwrap_or(&[])
    }
}
