//! Key files the operator provides (the trail's signing key, the label-hash key): 32 bytes as
//! 64 hex characters, readable by their owner alone.

use std::path::Path;

use anyhow::Context;

/// Reads a 32-byte key from `path`, refusing a file that group or others can read: a key
/// anyone on the host can copy protects nothing.
pub fn read_key_file(path: &Path, what: &str) -> anyhow::Result<[u8; 32]> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode =
            std::fs::metadata(path).with_context(|| format!("reading {what} {}", path.display()))?.permissions().mode();
        anyhow::ensure!(
            mode & 0o077 == 0,
            "{what} {} is readable by group or others (mode {:o}): `chmod 600 {}`",
            path.display(),
            mode & 0o777,
            path.display()
        );
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {what} {}", path.display()))?;
    let bytes = hex::decode(text.trim()).with_context(|| format!("{}: expected 64 hex characters", path.display()))?;
    bytes.try_into().map_err(|_| anyhow::anyhow!("{}: expected 64 hex characters (32 bytes)", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_others_can_read_is_refused_and_an_owner_only_one_is_read() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        std::fs::write(&p, "ab".repeat(32)).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = read_key_file(&p, "test key").unwrap_err().to_string();
        assert!(e.contains("readable by group or others (mode 644)") && e.contains("chmod 600"), "{e}");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_key_file(&p, "test key").unwrap(), [0xab; 32]);
        std::fs::write(&p, "abc").unwrap();
        assert!(read_key_file(&p, "test key").unwrap_err().to_string().contains("expected 64 hex characters"));
    }
}
