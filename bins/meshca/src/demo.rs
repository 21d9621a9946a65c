//! `meshca demo`: the guide end to end on one machine, as far as it is built.

use std::collections::HashMap;
use std::io::Write as _;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context as _;
use mesh_install::steps::Step;
use secrecy::ExposeSecret as _;
use serde::Serialize;

/// What happened to one step in this run.
#[derive(Debug, Serialize)]
struct StepResult {
    number: u8,
    step: Step,
    title: &'static str,
    status: Status,
    detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
enum Status {
    Done,
    Partial,
    NotBuiltYet,
}

impl Status {
    fn text(self) -> &'static str {
        match self {
            Self::Done => "done",
            Self::Partial => "partial",
            Self::NotBuiltYet => "not built yet",
        }
    }
}

/// Runs the demo. SoftHSM2 reads `SOFTHSM2_CONF` once per process, so when it is not set
/// (meshca started outside cargo) the demo re-runs itself with a private configuration.
pub(crate) fn run(json: bool) -> anyhow::Result<ExitCode> {
    if std::env::var_os("SOFTHSM2_CONF").is_none() {
        let dir = tempfile::tempdir().context("creating a SoftHSM2 directory for the demo")?;
        let exe = std::env::current_exe().context("locating the meshca binary")?;
        let status = std::process::Command::new(exe)
            .args(std::env::args_os().skip(1))
            .env("SOFTHSM2_CONF", dir.path().join("softhsm2.conf"))
            .status()
            .context("re-running meshca demo with its own SoftHSM2 configuration")?;
        return Ok(status
            .code()
            .and_then(|c| u8::try_from(c).ok())
            .map_or(ExitCode::FAILURE, ExitCode::from));
    }
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let results = runtime.block_on(flow(json))?;
    report(&results, json)?;
    Ok(ExitCode::SUCCESS)
}

fn progress(json: bool, message: &str) {
    if !json {
        eprintln!("==> {message}");
    }
}

async fn flow(json: bool) -> anyhow::Result<Vec<StepResult>> {
    let started = Instant::now();
    let mut done: HashMap<Step, (Status, String)> = HashMap::new();

    progress(
        json,
        "step 1: creating a SoftHSM2 token and logging in by label",
    );
    let hsm = sandbox::SoftHsm::builder()
        .label("asm-ca")
        .create()
        .context("creating the demo HSM token")?;
    let session = hsm
        .module()
        .login_user(hsm.label(), hsm.user_pin())
        .context("logging in to the demo token")?;
    drop(session);
    done.insert(
        Step::HsmSlot,
        (
            Status::Done,
            format!(
                "token {} (serial {}) found by label, user logged in",
                hsm.label(),
                hsm.serial()
            ),
        ),
    );

    progress(
        json,
        "step 5: starting OpenBao and storing the HSM credentials",
    );
    let bao = sandbox::OpenBao::builder()
        .start()
        .await
        .context("starting the demo OpenBao server")?;
    let client = bao.client()?;
    let mount = "asm-c1";
    let mut options = HashMap::new();
    options.insert("version".to_owned(), "1".to_owned());
    vaultrs::sys::mount::enable(
        &client,
        mount,
        "kv",
        Some(vaultrs::api::sys::requests::EnableEngineRequest::builder().options(options)),
    )
    .await
    .with_context(|| format!("enabling KV v1 at {mount}"))?;
    let mut secret = HashMap::new();
    secret.insert("PIN", hsm.user_pin().expose_secret());
    vaultrs::kv1::set(&client, mount, "hsm", &secret)
        .await
        .with_context(|| format!("writing {mount}/hsm"))?;
    let back: HashMap<String, String> = vaultrs::kv1::get(&client, mount, "hsm")
        .await
        .with_context(|| format!("reading {mount}/hsm back"))?;
    anyhow::ensure!(
        back.get("PIN").map(String::as_str) == Some(hsm.user_pin().expose_secret()),
        "the PIN read back from {mount}/hsm differs from the one written"
    );
    done.insert(
        Step::VaultSetup,
        (
            Status::Partial,
            format!("OpenBao {} at {}: KV v1 {mount}/hsm written and read back; policy and Kubernetes auth not built yet", 
                bao.connection()?.health().await?.version, bao.addr()),
        ),
    );

    progress(
        json,
        &format!("finished in {:.1}s", started.elapsed().as_secs_f64()),
    );
    Ok(Step::ALL
        .iter()
        .map(|&step| {
            let (status, detail) = done
                .remove(&step)
                .unwrap_or((Status::NotBuiltYet, String::new()));
            StepResult {
                number: step.number(),
                step,
                title: step.title(),
                status,
                detail,
            }
        })
        .collect())
}

fn report(results: &[StepResult], json: bool) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", serde_json::to_string_pretty(results)?)?;
        return Ok(());
    }
    writeln!(
        out,
        "{:>4}  {:<48} {:<14} detail",
        "step", "title", "status"
    )?;
    for r in results {
        writeln!(
            out,
            "{:>4}  {:<48} {:<14} {}",
            r.number,
            r.title,
            r.status.text(),
            r.detail
        )?;
    }
    let built = results
        .iter()
        .filter(|r| r.status != Status::NotBuiltYet)
        .count();
    writeln!(
        out,
        "\n{built} of {} steps run against real components; the others are not built yet.",
        results.len()
    )?;
    Ok(())
}
