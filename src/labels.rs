//! Raw labels: normalisation shared by packs, aliases and the model cache, and what of a raw
//! label may be recorded.
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

/// Longest raw label that may be recorded as it is.
const MAX_SHOWN_CHARS: usize = 64;
/// Most words a recorded raw label may have (`self harm talk`, `hate speech threatening`).
const MAX_SHOWN_WORDS: usize = 4;
/// A run of this many digits looks like part of an identifier (an SSN, a phone or card
/// number, an account), not of a label (`S10`, `CWE-79`).
const DIGIT_RUN: usize = 4;

/// Whether a raw label is shaped like a label a detector emits rather than like text: short,
/// ASCII letters, digits and `_ - . : /` and spaces, at most four words, no run of four digits.
/// Shape is all the rule can see: a bare name such as `John Smith` passes it; see the README's
/// privacy section.
pub fn is_label_like(raw: &str) -> bool {
    let chars = raw.chars().count();
    let mut run = 0;
    let mut long_run = false;
    for c in raw.chars() {
        run = if c.is_ascii_digit() { run + 1 } else { 0 };
        long_run |= run >= DIGIT_RUN;
    }
    (1..=MAX_SHOWN_CHARS).contains(&chars)
        && raw.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':' | '/' | ' '))
        && raw.split_whitespace().count() <= MAX_SHOWN_WORDS
        && !long_run
}

/// What of a raw label no rule knows may leave memory: lineage, notes, the audit event,
/// ClickHouse and the seven-year trail all record what [`LabelShield::shown`] returns. A
/// detector without a pack may put free text where a label belongs (`User said my SSN is
/// …`), or turn dict keys into labels; that text must not outlive the event. Labels the
/// catalog knows (pack maps, aliases) are recorded as they are; the model path still sees
/// the raw label, in memory.
#[derive(Clone, Default)]
pub struct LabelShield {
    /// The deployment's label-hash key (`privacy.label_key_file`).
    key: Option<[u8; 32]>,
}

impl std::fmt::Debug for LabelShield {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LabelShield").field("keyed", &self.key.is_some()).finish()
    }
}

impl LabelShield {
    pub fn new(key: Option<[u8; 32]>) -> LabelShield {
        LabelShield { key }
    }

    /// `raw` when it is label-like; otherwise `h:` and 16 hex characters of HMAC-SHA-256
    /// under the deployment's key (keyed, so a dictionary of phone numbers cannot be hashed
    /// to find one), or `redacted:<chars>` without a key.
    pub fn shown(&self, raw: &str) -> String {
        if is_label_like(raw) {
            return raw.to_string();
        }
        match &self.key {
            Some(k) => {
                use hmac::Mac as _;
                let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(k).expect("HMAC takes any key length");
                mac.update(raw.as_bytes());
                format!("h:{}", &hex::encode(mac.finalize().into_bytes())[..16])
            }
            None => format!("redacted:{}", raw.chars().count()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_like_labels_stay_and_text_does_not() {
        for l in ["toxic", "US_SSN", "self harm talk", "harassment/threatening", "S10", "CWE-79", "weird_thing_42"] {
            assert!(is_label_like(l), "{l}");
            assert_eq!(LabelShield::default().shown(l), l);
        }
        for t in [
            "User said my SSN is 078-05-1120 please",
            "078-05-1120",
            "call me at 555-0100",
            "card 4111111111111111",
            "john@example.com",
            "a b c d e",
            "",
            &"x".repeat(65),
            "naïve",
        ] {
            assert!(!is_label_like(t), "{t:?}");
        }
        let plain = LabelShield::default().shown("User said my SSN is 078-05-1120 please");
        assert_eq!(plain, "redacted:38");
        let a = LabelShield::new(Some([1; 32]));
        let h = a.shown("call me at 555-0100");
        assert!(h.starts_with("h:") && h.len() == 18, "{h}");
        assert_eq!(a.shown("call me at 555-0100"), h, "the same text, the same hash");
        assert_ne!(LabelShield::new(Some([2; 32])).shown("call me at 555-0100"), h, "another key, another hash");
        assert_ne!(a.shown("call me at 555-0101"), h);
    }

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
