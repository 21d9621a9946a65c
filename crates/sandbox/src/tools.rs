use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// The PKCS#11 module the sandbox loads: `PKCS11_MODULE` when set, else the distribution's
/// SoftHSM2 module.
///
/// # Errors
/// [`Error::MissingTool`] when the file does not exist.
pub fn pkcs11_module() -> Result<PathBuf> {
    let path = std::env::var_os("PKCS11_MODULE")
        .filter(|v| !v.is_empty())
        .map_or_else(
            || PathBuf::from(hsm_core::DEFAULT_SOFTHSM_MODULE),
            PathBuf::from,
        );
    if path.is_file() {
        Ok(path)
    } else {
        Err(Error::MissingTool {
            tool: "softhsm2",
            detail: format!("no PKCS#11 module at {}", path.display()),
        })
    }
}

/// The SoftHSM2 configuration file every token of this process lives under (`SOFTHSM2_CONF`).
///
/// # Errors
/// [`Error::MissingEnv`] when the variable is not set.
pub fn softhsm_conf_path() -> Result<PathBuf> {
    std::env::var_os("SOFTHSM2_CONF")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .ok_or(Error::MissingEnv {
            var: "SOFTHSM2_CONF",
            hint: "run through cargo (the workspace's .cargo/config.toml sets it) or export \
                   SOFTHSM2_CONF=<dir>/softhsm2.conf; the sandbox writes the file",
        })
}

/// The OpenBao binary: `BAO_BIN` when it names an existing file, else `bao` on `PATH`.
///
/// # Errors
/// [`Error::MissingTool`] when neither exists.
pub fn bao_binary() -> Result<PathBuf> {
    if let Some(bin) = std::env::var_os("BAO_BIN").filter(|v| !v.is_empty()) {
        let bin = PathBuf::from(bin);
        if bin.is_file() {
            return Ok(bin);
        }
    }
    find_on_path("bao").ok_or_else(|| Error::MissingTool {
        tool: "bao",
        detail: "neither $BAO_BIN nor `bao` on PATH".to_owned(),
    })
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path: OsString = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
