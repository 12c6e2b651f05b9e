//! The development signing secret of `crm serve`: random, made on first start, kept in the
//! data directory (mode 0600) so that `crm token` and the server agree with no setup.

use std::io::Write;
use std::path::{Path, PathBuf};

const FILE: &str = "dev-secret";

pub(crate) fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(FILE)
}

/// Reads the secret, creating it when missing.
pub(crate) fn load_or_create(data_dir: &Path) -> anyhow::Result<Vec<u8>> {
    let path = path(data_dir);
    if let Ok(existing) = std::fs::read_to_string(&path) {
        return Ok(existing.trim().as_bytes().to_vec());
    }
    crm_platform::db::create_private_dir(data_dir)?;
    let mut bytes = [0_u8; 32];
    getrandom::fill(&mut bytes).map_err(|err| anyhow::anyhow!("no randomness for the dev secret: {err}"))?;
    let secret: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(&path) {
        Ok(mut file) => {
            file.write_all(secret.as_bytes())?;
            Ok(secret.into_bytes())
        }
        // Another process created it first; use theirs.
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
            Ok(std::fs::read_to_string(&path)?.trim().as_bytes().to_vec())
        }
        Err(err) => Err(err.into()),
    }
}

/// Reads the secret if it exists.
pub(crate) fn load(data_dir: &Path) -> Option<Vec<u8>> {
    std::fs::read_to_string(path(data_dir))
        .ok()
        .map(|s| s.trim().as_bytes().to_vec())
}
