//! Per-tenant auditor users: a ClickHouse user whose row policies show it only one tenant's
//! rows in every tenant table.
//!
//! Two ways to provision, for the two ways ClickHouse keeps users: SQL (`CREATE USER`,
//! `CREATE ROW POLICY`, `GRANT`), run against a server with SQL-driven access control; or a
//! `users.xml` entry (`<databases><db><table><filter>`), for servers configured by files (and
//! the test engine, which has no writable access storage).

use std::fmt::Write as _;

use sha2::{Digest, Sha256};

use super::migrate::TENANT_TABLES;

/// Names that can be spliced into SQL and XML without quoting surprises.
pub fn check_name(kind: &str, name: &str) -> anyhow::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    anyhow::ensure!(ok, "{kind} {name:?}: use letters, digits, '_', '-' or '.' (at most 128)");
    Ok(())
}

fn filter(tenant: &str) -> String {
    format!("tenant_id = '{tenant}'")
}

/// The row policy's name: one per (tenant, user) pair that no other pair can produce.
/// `tenant_{tenant}_{user}` could: tenant `acme_eu` with user `auditor` and tenant `acme`
/// with user `eu_auditor` gave the same name, so `OR REPLACE` moved the first user's policy
/// to the second, and the first user, left without a policy, read every tenant (ClickHouse
/// ≥ 24.1 lets users without row policies read all rows). A hash of both names, separated
/// by a byte no name may contain, cannot collide that way.
pub fn policy_name(tenant: &str, user: &str) -> String {
    let digest = Sha256::digest(format!("{tenant}\0{user}").as_bytes());
    format!("mapper_tenant_{}", &hex::encode(digest)[..24])
}

/// The SQL that creates `user` with access to `tenant`'s rows only (one statement each).
pub fn sql(database: &str, tenant: &str, user: &str, password: &str) -> Vec<String> {
    let hash = hex::encode(Sha256::digest(password.as_bytes()));
    let mut out = vec![format!("CREATE USER IF NOT EXISTS `{user}` IDENTIFIED WITH sha256_hash BY '{hash}'")];
    let on: Vec<String> = TENANT_TABLES.iter().map(|t| format!("`{database}`.`{t}`")).collect();
    out.push(format!(
        "CREATE ROW POLICY OR REPLACE `{}` ON {} FOR SELECT USING {} TO `{user}`",
        policy_name(tenant, user),
        on.join(", "),
        filter(tenant)
    ));
    for t in TENANT_TABLES {
        out.push(format!("GRANT SELECT ON `{database}`.`{t}` TO `{user}`"));
    }
    out
}

/// The `users.xml` entry for `user`.
pub fn users_xml_entry(database: &str, tenant: &str, user: &str, password: &str) -> String {
    let hash = hex::encode(Sha256::digest(password.as_bytes()));
    let mut tables = String::new();
    for t in TENANT_TABLES {
        let _ = write!(tables, "\n          <{t}><filter>{}</filter></{t}>", filter(tenant).replace('\'', "&apos;"));
    }
    format!(
        "    <{user}>\n      <password_sha256_hex>{hash}</password_sha256_hex>\n      \
         <networks><ip>::/0</ip></networks>\n      <profile>default</profile>\n      <quota>default</quota>\n      \
         <databases>\n        <{database}>{tables}\n        </{database}>\n      </databases>\n    </{user}>\n"
    )
}

/// Adds (or replaces) `user`'s entry in a `users.xml` document; `existing` may be empty.
pub fn merge_users_xml(existing: &str, user: &str, entry: &str) -> String {
    let doc =
        if existing.trim().is_empty() { "<clickhouse>\n  <users>\n  </users>\n</clickhouse>\n" } else { existing };
    let open = format!("<{user}>");
    let close = format!("</{user}>\n");
    let doc = match (doc.find(&open), doc.find(&close)) {
        (Some(a), Some(b)) if a < b => {
            let start = doc[..a].rfind('\n').map(|i| i + 1).unwrap_or(a);
            format!("{}{}", &doc[..start], &doc[b + close.len()..])
        }
        _ => doc.to_string(),
    };
    match doc.rfind("</users>") {
        Some(i) => {
            let start = doc[..i].rfind('\n').map(|j| j + 1).unwrap_or(i);
            format!("{}{entry}{}", &doc[..start], &doc[start..])
        }
        None => format!("{doc}<!-- no <users> section found -->\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sql_scopes_every_tenant_table() {
        let s = sql("db", "acme", "auditor_acme", "pw");
        assert!(s[0].starts_with("CREATE USER IF NOT EXISTS `auditor_acme`"));
        assert!(!s.join(";").contains("pw'"), "the password itself is never in the SQL");
        for t in TENANT_TABLES {
            assert!(s[1].contains(&format!("`db`.`{t}`")), "{t} covered");
        }
        assert!(s[1].contains("USING tenant_id = 'acme' TO `auditor_acme`"));
    }

    #[test]
    fn policy_names_of_different_pairs_never_collide() {
        assert_ne!(policy_name("acme_eu", "auditor"), policy_name("acme", "eu_auditor"));
        assert_eq!(policy_name("acme", "a"), policy_name("acme", "a"), "stable, so OR REPLACE updates its own");
        let s = sql("db", "acme_eu", "auditor", "pw");
        assert!(s[1].contains(&format!("`{}`", policy_name("acme_eu", "auditor"))), "{}", s[1]);
    }

    #[test]
    fn names_that_could_inject_are_refused() {
        assert!(check_name("tenant", "acme-eu.1").is_ok());
        assert!(check_name("tenant", "a' OR 1=1 --").is_err());
        assert!(check_name("user", "").is_err());
    }

    #[test]
    fn users_xml_entries_are_added_and_replaced() {
        let a = users_xml_entry("default", "a", "ua", "x");
        let doc = merge_users_xml("", "ua", &a);
        let b = users_xml_entry("default", "b", "ub", "y");
        let doc = merge_users_xml(&doc, "ub", &b);
        let a2 = users_xml_entry("default", "a2", "ua", "z");
        let doc = merge_users_xml(&doc, "ua", &a2);
        assert_eq!(doc.matches("<ua>").count(), 1, "{doc}");
        assert!(doc.contains("tenant_id = &apos;a2&apos;") && !doc.contains("tenant_id = &apos;a&apos;"), "{doc}");
        assert!(doc.contains("<ub>") && doc.trim_end().ends_with("</clickhouse>"), "{doc}");
    }
}
