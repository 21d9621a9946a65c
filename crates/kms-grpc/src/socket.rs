//! Unix socket lifecycle for the plugin server: the directory must be private to the
//! server's user, and the socket is created with its final mode and group in a private
//! staging directory, then renamed into place, so it is never reachable with looser
//! permissions (no bind-then-chmod window, no process-wide umask change).

use std::io;
use std::os::unix::fs::{
    DirBuilderExt as _, FileTypeExt as _, MetadataExt as _, PermissionsExt as _,
};
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
    /// The socket's directory could be written by another user, who could replace the
    /// socket with their own and receive the KMS traffic (or answer it).
    #[error("refusing to serve: the socket directory {dir} {problem}; {fix}")]
    UnsafeDirectory {
        /// The directory.
        dir: PathBuf,
        /// What is wrong with it.
        problem: String,
        /// How to fix it.
        fix: String,
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

/// The effective uid of this process.
pub fn effective_uid() -> u32 {
    rustix::process::geteuid().as_raw()
}

fn directory_of(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| Path::new("."))
}

/// Checks that the directory of the socket `path` is private to this user: neither group-
/// nor world-writable, and owned by this process's uid or root. A missing directory passes
/// ([`prepare`] creates it, mode 0755 at most).
///
/// # Errors
/// [`Error::UnsafeDirectory`] naming the directory and the fix; [`Error::Io`] when it cannot
/// be inspected.
pub fn check_directory(path: &Path) -> Result<(), Error> {
    let dir = directory_of(path);
    let meta = match std::fs::metadata(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(Error::Io {
                action: "inspect the socket directory",
                path: dir.to_path_buf(),
                source,
            });
        }
        Ok(meta) => meta,
    };
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        let who = match (mode & 0o020 != 0, mode & 0o002 != 0) {
            (true, true) => "group- and world-writable",
            (true, false) => "group-writable",
            _ => "world-writable",
        };
        return Err(Error::UnsafeDirectory {
            dir: dir.to_path_buf(),
            problem: format!("is {who} (mode {mode:04o}): another user could replace the socket"),
            fix: format!(
                "run `chmod go-w {}` or put the socket in a directory only this user can write",
                dir.display()
            ),
        });
    }
    let me = effective_uid();
    if meta.uid() != me && meta.uid() != 0 {
        return Err(Error::UnsafeDirectory {
            dir: dir.to_path_buf(),
            problem: format!(
                "is owned by uid {}, not by this server's uid {me} or root",
                meta.uid()
            ),
            fix: format!(
                "run `chown {me} {}` or put the socket in a directory this user owns",
                dir.display()
            ),
        });
    }
    Ok(())
}

/// Makes `path` ready for `bind`: creates the parent directory when missing (mode 0755 at
/// most), checks it with [`check_directory`] and removes a stale socket left by a previous
/// run. Anything that is not a socket is left alone.
///
/// # Errors
/// [`Error::UnsafeDirectory`]; [`Error::NotASocket`] for a regular file, directory or link at
/// the path; [`Error::Io`] when the directory cannot be created or the stale socket cannot be
/// removed.
pub fn prepare(path: &Path) -> Result<Prepared, Error> {
    let io = |action| {
        move |source| Error::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(directory_of(path))
        .map_err(io("create the directory of"))?;
    check_directory(path)?;
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

/// Binds `path` with `mode` and group `gid` already set when it appears there: the socket is
/// bound in a fresh 0700 directory beside `path`, given its mode and group, then renamed into
/// place. Must run inside a tokio runtime.
pub(crate) fn bind_private(
    path: &Path,
    mode: u32,
    gid: Option<u32>,
) -> crate::Result<tokio::net::UnixListener> {
    use crate::Error as E;
    let name = path
        .file_name()
        .map_or_else(|| "socket".into(), |n| n.to_string_lossy().into_owned());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let staging = directory_of(path).join(format!(".{name}.{}-{nanos}", std::process::id()));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&staging)
        .map_err(|source| Error::Io {
            action: "create the private staging directory",
            path: staging.clone(),
            source,
        })?;
    let staged = staging.join("socket");
    let bound = (|| {
        let listener = tokio::net::UnixListener::bind(&staged).map_err(|source| E::Bind {
            path: path.to_path_buf(),
            source,
        })?;
        std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(mode)).map_err(
            |source| E::SocketPermissions {
                what: format!("mode {mode:04o}"),
                path: path.to_path_buf(),
                source,
            },
        )?;
        if let Some(gid) = gid {
            std::os::unix::fs::chown(&staged, None, Some(gid)).map_err(|source| {
                E::SocketPermissions {
                    what: format!("group {gid}"),
                    path: path.to_path_buf(),
                    source,
                }
            })?;
        }
        std::fs::rename(&staged, path).map_err(|source| E::Bind {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(listener)
    })();
    if let Err(err) = std::fs::remove_dir_all(&staging) {
        tracing::warn!(dir = %staging.display(), %err, "cannot remove the socket staging directory");
    }
    bound
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

    #[tokio::test]
    async fn the_socket_appears_with_its_mode_and_a_failed_bind_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kms.sock");
        let listener = bind_private(&path, 0o600, None).unwrap();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        drop(listener);
        std::fs::remove_file(&path).unwrap();

        // A directory in the way: the rename fails, and the staging directory is removed.
        let taken = dir.path().join("taken");
        std::fs::create_dir(&taken).unwrap();
        std::fs::write(taken.join("keep"), "x").unwrap();
        assert!(bind_private(&taken, 0o600, None).is_err());
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, vec![std::ffi::OsString::from("taken")]);
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
