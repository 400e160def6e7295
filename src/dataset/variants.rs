//! Synthetic spellings of a raw label, the way real detectors drift: casing, separators,
//! abbreviations, vendor-style wrapping and typos. Deterministic: the same label always yields
//! the same variants, so a dataset build is reproducible from the catalog alone.

use sha2::{Digest, Sha256};

/// Words detectors commonly shorten, with the short forms seen in the wild.
const ABBREVIATIONS: &[(&str, &[&str])] = &[
    ("number", &["num", "no", "nbr"]),
    ("identification", &["id"]),
    ("identifier", &["id"]),
    ("identity", &["id"]),
    ("address", &["addr"]),
    ("information", &["info"]),
    ("personal", &["pers"]),
    ("account", &["acct"]),
    ("passport", &["pp"]),
    ("license", &["lic"]),
    ("licence", &["lic"]),
    ("credit", &["cc"]),
    ("phone", &["ph", "tel"]),
    ("telephone", &["tel"]),
    ("security", &["sec"]),
    ("social", &["soc"]),
    ("medical", &["med"]),
    ("prompt", &["pmpt"]),
    ("injection", &["inj"]),
    ("jailbreak", &["jb"]),
    ("harassment", &["harass"]),
    ("violence", &["viol"]),
    ("violent", &["viol"]),
    ("sexual", &["sex"]),
    ("minors", &["minor"]),
    ("threatening", &["threat"]),
    ("explicit", &["expl"]),
    ("profanity", &["prof"]),
    ("insult", &["insl"]),
    ("toxicity", &["tox"]),
    ("toxic", &["tox"]),
    ("severe", &["sev"]),
    ("password", &["pwd", "pw"]),
    ("credential", &["cred"]),
    ("credentials", &["creds"]),
    ("key", &["k"]),
    ("private", &["priv"]),
    ("email", &["mail"]),
    ("location", &["loc"]),
    ("organization", &["org"]),
    ("date", &["dt"]),
    ("birth", &["b"]),
    ("driver", &["drv"]),
    ("bank", &["bnk"]),
    ("routing", &["rtn"]),
    ("self", &["slf"]),
    ("harm", &["hrm"]),
];

/// Splits on separators and camelCase boundaries, lower-cased.
pub fn words(raw: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut prev_lower = false;
    for c in raw.chars() {
        if !c.is_alphanumeric() {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            prev_lower = false;
            continue;
        }
        if c.is_uppercase() && prev_lower && !cur.is_empty() {
            out.push(std::mem::take(&mut cur));
        }
        prev_lower = c.is_lowercase() || c.is_ascii_digit();
        cur.extend(c.to_lowercase());
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn title(w: &str) -> String {
    let mut c = w.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

fn hash_index(s: &str, salt: &str, n: usize) -> usize {
    let h = Sha256::digest(format!("{salt}\u{0}{s}").as_bytes());
    (u64::from_be_bytes(h[..8].try_into().expect("8 bytes")) % n.max(1) as u64) as usize
}

/// `(kind, spelling)` variants of `raw`, excluding `raw` itself, without duplicates.
pub fn variants(raw: &str, vendor: Option<&str>) -> Vec<(&'static str, String)> {
    let w = words(raw);
    if w.is_empty() {
        return Vec::new();
    }
    let mut out: Vec<(&'static str, String)> = Vec::new();
    let mut push = |kind: &'static str, s: String| {
        if s != raw && !s.is_empty() && !out.iter().any(|(_, x)| *x == s) {
            out.push((kind, s));
        }
    };
    // Casing and separators.
    push("case", raw.to_uppercase());
    push("case", raw.to_lowercase());
    push("separator", w.join("_"));
    push("separator", w.join("-"));
    push("separator", w.join(" "));
    push("separator", w.join("."));
    push("separator", w.iter().map(|x| title(x)).collect::<String>());
    push("separator", {
        let mut s = w[0].clone();
        s.extend(w[1..].iter().map(|x| title(x)));
        s
    });
    // Abbreviations: every abbreviable word, one at a time; and the acronym of long names.
    for (i, word) in w.iter().enumerate() {
        if let Some((_, shorts)) = ABBREVIATIONS.iter().find(|(long, _)| long == word) {
            for s in *shorts {
                let mut v = w.clone();
                v[i] = (*s).to_string();
                push("abbreviation", v.join("_"));
            }
        }
    }
    if w.len() >= 3 {
        push("abbreviation", w.iter().filter_map(|x| x.chars().next()).collect());
    }
    // Vendor-style wrapping.
    let snake = w.join("_");
    push("vendor", format!("LABEL_{}", snake.to_uppercase()));
    push("vendor", format!("category/{snake}"));
    push("vendor", format!("{snake}_detected"));
    if let Some(v) = vendor {
        let v: String = words(v).join("");
        push("vendor", format!("{v}.{snake}"));
    }
    // Typos: one dropped and one swapped letter, at a position fixed by the label itself.
    let letters: Vec<char> = snake.chars().collect();
    if letters.len() >= 5 {
        let i = 1 + hash_index(&snake, "drop", letters.len() - 2);
        let mut d = letters.clone();
        d.remove(i);
        push("typo", d.into_iter().collect());
        let j = 1 + hash_index(&snake, "swap", letters.len() - 3);
        let mut s = letters.clone();
        s.swap(j, j + 1);
        push("typo", s.into_iter().collect());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_split_on_separators_and_camel_case() {
        assert_eq!(words("US_SSN"), ["us", "ssn"]);
        assert_eq!(words("socialSecurityNumber"), ["social", "security", "number"]);
        assert_eq!(words("hate/threatening"), ["hate", "threatening"]);
    }

    #[test]
    fn variants_cover_every_kind_and_are_stable() {
        let v = variants("social_security_number", Some("Acme Corp"));
        let kinds: std::collections::BTreeSet<&str> = v.iter().map(|(k, _)| *k).collect();
        assert_eq!(kinds.into_iter().collect::<Vec<_>>(), ["abbreviation", "case", "separator", "typo", "vendor"]);
        assert!(v.iter().any(|(_, s)| s == "ssn"), "acronym");
        assert!(v.iter().any(|(_, s)| s == "social_security_num"));
        assert!(v.iter().any(|(_, s)| s == "acmecorp.social_security_number"));
        assert!(!v.iter().any(|(_, s)| s == "social_security_number"), "never the label itself");
        assert_eq!(v, variants("social_security_number", Some("Acme Corp")), "deterministic");
    }
}
