//! Helpers shared by the integration tests: the `openssl` CLI as the independent checker.

#![allow(dead_code, reason = "each test binary uses a subset of the helpers")]

use std::path::Path;
use std::process::{Command, Output};

/// Runs `openssl args...` in `dir`; panics with the install hint when the CLI is missing.
pub(crate) fn openssl_raw(dir: &Path, args: &[&str]) -> Output {
    Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("the openssl CLI is needed ({e}); run `cargo xtask setup`"))
}

/// Runs `openssl args...` in `dir`, asserts success and returns stdout.
pub(crate) fn openssl(dir: &Path, args: &[&str]) -> String {
    let out = openssl_raw(dir, args);
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A CSR made by `openssl req` with a fresh key (`<name>.key`, `<name>.csr`), plus `-addext`s.
pub(crate) fn openssl_csr(
    dir: &Path,
    name: &str,
    newkey: &str,
    subj: &str,
    addext: &[&str],
) -> Vec<u8> {
    let key = format!("{name}.key");
    let csr = format!("{name}.csr");
    let mut args = vec![
        "req", "-new", "-newkey", newkey, "-nodes", "-keyout", &key, "-subj", subj, "-out", &csr,
    ];
    for e in addext {
        args.push("-addext");
        args.push(e);
    }
    openssl(dir, &args);
    std::fs::read(dir.join(&csr)).unwrap()
}

/// Names of the files in `dir`.
pub(crate) fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}
