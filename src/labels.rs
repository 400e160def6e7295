//! Raw-label normalisation shared by packs, aliases and the model cache.
//!
//! Detectors disagree on casing and separators (`US_SSN`, `us-ssn`, `US SSN`); treating them
//! as one key is what lets a short pack cover a vendor's spelling drift.

/// Lower-case and keep only letters and digits.
pub fn normalize(raw: &str) -> String {
    raw.chars().filter(|c| c.is_alphanumeric()).flat_map(char::to_lowercase).collect()
}

/// Longest raw label we carry into lineage. A detector emitting free text where a label
/// should be must not turn lineage into a copy of that text.
pub const MAX_RAW_LABEL_CHARS: usize = 128;

/// `raw` cut to [`MAX_RAW_LABEL_CHARS`] characters.
pub fn bounded(raw: &str) -> String {
    match raw.char_indices().nth(MAX_RAW_LABEL_CHARS) {
        Some((i, _)) => raw[..i].to_string(),
        None => raw.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separators_and_case_do_not_matter() {
        assert_eq!(normalize("US_SSN"), normalize("us-ssn"));
        assert_eq!(normalize("US SSN"), "usssn");
        assert_ne!(normalize("S1"), normalize("S10"));
    }

    #[test]
    fn bounded_cuts_on_char_boundary() {
        let long = "é".repeat(300);
        assert_eq!(bounded(&long).chars().count(), MAX_RAW_LABEL_CHARS);
        assert_eq!(bounded("toxic"), "toxic");
    }
}
