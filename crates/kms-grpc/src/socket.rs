//! Unix socket lifecycle for the plugin server.

use std::io;
use std::os::unix::fs::FileTypeExt as _;
use std::path::{Path, PathBuf};

/// Errors preparing a socket path.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Something other than a socket sits at the path; it is never deleted for you.
    #[error("{path} exists and is not a socket; remove it or choose another SOCKET path")]
    NotASocket {
        /// The path.
        path: PathBuf,
    },
    /// A file-system operation failed.
    #[error("cannot {action} {path}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// What [`prepare`] found at the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prepared {
    /// Nothing was there.
    Fresh,
    /// A socket left by an earlier server was removed.
    RemovedStale,
}

/// Makes `path` ready for `bind`: creates the parent directory when missing and removes a
/// stale socket left by a previous run. Anything that is not a socket is left alone.
///
/// # Errors
/// [`Error::NotASocket`] for a regular file, directory or link at the path; [`Error::Io`] when
/// the directory cannot be created or the stale socket cannot be removed.
pub fn prepare(path: &Path) -> Result<Prepared, Error> {
    let io = |action| {
        move |source| Error::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(io("create the directory of"))?;
    }
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Prepared::Fresh),
        Err(e) => Err(io("inspect")(e)),
        Ok(meta) if meta.file_type().is_socket() => {
            std::fs::remove_file(path).map_err(io("remove the stale socket"))?;
            Ok(Prepared::RemovedStale)
        }
        Ok(_) => Err(Error::NotASocket {
            path: path.to_path_buf(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixListener;

    use super::*;

    #[test]
    fn stale_socket_is_removed_and_path_can_be_bound_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/.hsm-sock");
        assert_eq!(prepare(&path).unwrap(), Prepared::Fresh);
        let first = UnixListener::bind(&path).unwrap();
        drop(first); // leaves the socket file behind, as a crashed server would
        assert!(UnixListener::bind(&path).is_err());

        assert_eq!(prepare(&path).unwrap(), Prepared::RemovedStale);
        UnixListener::bind(&path).unwrap();
    }

    #[test]
    fn regular_file_is_never_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("important.txt");
        std::fs::write(&path, "keep me").unwrap();
        let err = prepare(&path).unwrap_err();
        assert!(matches!(err, Error::NotASocket { .. }));
        assert!(err.to_string().contains("important.txt"));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "keep me");
    }
}
