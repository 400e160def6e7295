//! The catalog: taxonomy, compliance frameworks and detector packs, loaded from
//! `pillars-detectors/` and cross-checked as a whole.
//!
//! Loading collects every problem across all files before failing, so `mapper
//! validate-config` reports a broken catalog in one run.

pub mod frameworks;
pub mod pack;
pub mod source;
pub mod taxonomy;

use std::collections::BTreeMap;
use std::path::Path;

pub use frameworks::Frameworks;
pub use pack::{Pack, PackMeaning};
pub use source::{ConfigError, ConfigErrors};
pub use taxonomy::{Taxonomy, UNKNOWN_LABEL};

#[derive(Debug, Clone)]
pub struct Catalog {
    pub taxonomy: Taxonomy,
    pub frameworks: Frameworks,
    pub packs: BTreeMap<String, Pack>,
    /// Used for events from detectors that have no pack.
    pub generic: Pack,
}

impl Catalog {
    pub fn load(dir: &Path) -> Result<Catalog, ConfigErrors> {
        let taxonomy = Taxonomy::load(&dir.join("taxonomy.yaml"))?;
        let mut errors = ConfigErrors::default();
        let frameworks =
            Frameworks::load(&dir.join("frameworks.yaml"), &taxonomy).map_err(|e| errors.0.extend(e.0)).ok();
        let packs = pack::load_packs(dir, &taxonomy).map_err(|e| errors.0.extend(e.0)).ok();
        match (frameworks, packs) {
            (Some(frameworks), Some(packs)) if errors.is_empty() => {
                Ok(Catalog { taxonomy, frameworks, packs, generic: Pack::generic() })
            }
            _ => Err(errors.sorted()),
        }
    }

    /// The pack for `detector`, or the generic one.
    pub fn pack_for(&self, detector: &str) -> (&Pack, bool) {
        match self.packs.get(detector) {
            Some(p) => (p, true),
            None => (&self.generic, false),
        }
    }
}
