use std::os::unix::fs::DirBuilderExt as _;
use std::path::Path;

use crate::{Error, Result};

/// Writes `contents` to `path` unless the file already holds exactly that with mode 0600.
/// The write is atomic: a 0600 temporary file in the same directory is written, synced and
/// renamed over `path`, so readers never see a partial or world-readable secret. Returns
/// whether the file was written. `what` names the content in errors (never the content).
///
/// # Errors
/// [`Error::WriteFile`] naming the file.
pub fn write_if_changed(path: &Path, contents: &[u8], what: &'static str) -> Result<bool> {
    if mesh_common::fs::holds(path, contents, mesh_common::fs::OWNER_ONLY) {
        return Ok(false);
    }
    mesh_common::fs::write_atomic(path, contents, mesh_common::fs::OWNER_ONLY).map_err(
        |source| Error::WriteFile {
            what,
            path: path.to_owned(),
            source,
        },
    )?;
    Ok(true)
}

/// Creates `dir` (mode 0700) when it does not exist.
pub(crate) fn ensure_dir(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| Error::WriteFile {
            what: "the credential directory",
            path: dir.to_owned(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn writes_0600_and_only_when_changed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pin");
        assert!(write_if_changed(&path, b"1234\n", "pin").unwrap());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(!write_if_changed(&path, b"1234\n", "pin").unwrap());
        assert!(write_if_changed(&path, b"5678\n", "pin").unwrap());
        assert_eq!(std::fs::read(&path).unwrap(), b"5678\n");
        // Same content but loosened mode is rewritten private.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(write_if_changed(&path, b"5678\n", "pin").unwrap());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // No temporary files are left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn errors_name_the_file_not_the_content() {
        let err =
            write_if_changed(Path::new("/nonexistent-dir/pin"), b"s3cret", "the PIN").unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("/nonexistent-dir/pin") && !text.contains("s3cret"),
            "{text}"
        );
    }
}
