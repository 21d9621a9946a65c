//! Where built Go programs live: outside the work tree, shared by every checkout.

use std::path::PathBuf;

/// The file in a cache entry that records what it was built from.
pub(crate) const STAMP: &str = ".built-from";

/// The cache root: `$MESH_HSM_CACHE`, else `$XDG_CACHE_HOME/mesh-hsm`, else
/// `$HOME/.cache/mesh-hsm`, else a directory under the system temporary directory.
#[must_use]
pub fn cache_root() -> PathBuf {
    let non_empty = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(dir) = non_empty("MESH_HSM_CACHE") {
        return PathBuf::from(dir);
    }
    if let Some(dir) = non_empty("XDG_CACHE_HOME") {
        return PathBuf::from(dir).join("mesh-hsm");
    }
    if let Some(home) = non_empty("HOME") {
        return PathBuf::from(home).join(".cache").join("mesh-hsm");
    }
    std::env::temp_dir().join("mesh-hsm-cache")
}
