//! Atomic file writes with the permissions set from creation.

use std::io::{self, Write as _};
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

/// Owner read/write only: for PINs, keys, tokens.
pub const OWNER_ONLY: u32 = 0o600;

/// Writes `contents` to `path` atomically: a temporary file in the same directory, created with
/// permission bits `mode`, is written, synced and renamed over `path`. Readers never see a
/// partial file, and a secret is never readable by others, not even briefly.
///
/// # Errors
/// The I/O error; the temporary file is removed.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map_or_else(|| "out".into(), |n| n.to_string_lossy().into_owned());
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .permissions(std::fs::Permissions::from_mode(mode))
        .tempfile_in(dir)?;
    tmp.write_all(contents)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// True when `path` is a regular file with permission bits `mode` holding exactly `contents`.
pub fn holds(path: &Path, contents: &[u8], mode: u32) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o777 == mode)
        && std::fs::read(path).is_ok_and(|existing| {
            let same = existing == contents;
            // The old content may be a secret too.
            drop(zeroize::Zeroizing::new(existing));
            same
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_files_carry_the_mode_and_leave_no_temporary_behind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pin");
        std::fs::write(&path, "old").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(!holds(&path, b"1234", OWNER_ONLY));

        write_atomic(&path, b"1234", OWNER_ONLY).unwrap();

        assert_eq!(std::fs::read(&path).unwrap(), b"1234");
        assert!(holds(&path, b"1234", OWNER_ONLY));
        assert!(!holds(&path, b"1234", 0o644));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_missing_directory_is_an_error() {
        assert!(write_atomic(Path::new("/nonexistent-dir/pin"), b"x", OWNER_ONLY).is_err());
    }
}
