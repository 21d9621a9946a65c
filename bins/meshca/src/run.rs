//! Loading the configuration, resolving secrets, connecting the backends a selection needs and
//! running the flow.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use hsm_core::HsmAdmin as _;
use hsm_core::pin::FileAccess;
use k8s_bootstrap::vault_auth::ClusterEndpoint;
use mesh_common::Mode;
use mesh_install::config::{Config, InstallMethod, Overrides, RootKey, SecretSource};
use mesh_install::flow::{self, Event, FlowReport, FlowSpec, Inputs, Ports, StepStatus};
use mesh_install::install::{InstallError, Installer, Istioctl, MeshProbe};
use mesh_install::steps::Step;
use secrecy::SecretString;

/// How progress is shown on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Progress {
    /// One line per step start and end (stderr is not a terminal).
    Lines,
    /// A spinner per step with its latest wait message (stderr is a terminal).
    Spinner,
    /// Nothing.
    Quiet,
}

impl Progress {
    /// Quiet when asked; a spinner on a terminal; lines otherwise.
    pub(crate) fn for_stderr(quiet: bool) -> Self {
        use std::io::IsTerminal as _;
        if quiet {
            Self::Quiet
        } else if std::io::stderr().is_terminal() {
            Self::Spinner
        } else {
            Self::Lines
        }
    }
}

/// Shows flow events as [`Progress`] says.
struct Display {
    progress: Progress,
    mode: Mode,
    spinner: Option<indicatif::ProgressBar>,
}

impl Display {
    fn line(&self, text: &str) {
        match &self.spinner {
            Some(bar) => bar.println(text),
            None => eprintln!("{text}"),
        }
    }

    fn show(&mut self, event: &Event<'_>) {
        if self.progress == Progress::Quiet {
            return;
        }
        match event {
            Event::Started(step) => {
                if self.progress == Progress::Spinner {
                    let bar = indicatif::ProgressBar::new_spinner();
                    bar.enable_steady_tick(std::time::Duration::from_millis(120));
                    bar.set_message(step.to_string());
                    self.spinner = Some(bar);
                } else {
                    self.line(&format!("==> {step}"));
                }
            }
            Event::Progress { step, message } => match &self.spinner {
                Some(bar) => bar.set_message(format!("{step}: {message}")),
                None => eprintln!("    {message}"),
            },
            Event::Finished(report) => {
                if let Some(bar) = self.spinner.take() {
                    bar.finish_and_clear();
                    if report.detail != "not selected" {
                        eprintln!("==> {}", report.step);
                    }
                }
                if let Some(text) = finished_line(self.mode, report) {
                    eprintln!("{text}");
                }
            }
            _ => {}
        }
    }
}

fn finished_line(mode: Mode, report: &flow::StepReport) -> Option<String> {
    match report.status {
        StepStatus::Done => {
            let changed = report
                .changes
                .iter()
                .filter(|c| c.outcome.is_change())
                .count();
            Some(format!(
                "    done in {} ms: {changed} of {} objects {}",
                report.elapsed_ms,
                report.changes.len(),
                if mode.is_dry_run() {
                    "would change"
                } else {
                    "changed"
                }
            ))
        }
        StepStatus::Failed | StepStatus::Blocked | StepStatus::Skipped
            if report.detail != "not selected" =>
        {
            Some(format!("    {}: {}", report.status, report.detail))
        }
        _ => None,
    }
}

/// Reads a secret named by the configuration. Every failure is a configuration error naming
/// the field; the value never appears in it.
fn read_secret(field: &'static str, source: &SecretSource) -> mesh_install::Result<SecretString> {
    match source {
        SecretSource::File(path) => hsm_core::pin::pin_from_file(path, FileAccess::OwnerOnly)
            .map_err(|e| mesh_install::Error::InvalidConfig {
                field: field.to_owned(),
                reason: e.to_string(),
            }),
        SecretSource::Env(var) => std::env::var(var)
            .ok()
            .filter(|v| !v.trim().is_empty())
            .map(|v| SecretString::from(v.trim_end().to_owned()))
            .ok_or_else(|| mesh_install::Error::SecretEnvMissing {
                field,
                var: var.clone(),
            }),
    }
}

fn kubeconfig_path(config: &Config) -> Option<PathBuf> {
    config
        .cluster
        .kubeconfig
        .clone()
        .or_else(|| std::env::var_os("KUBECONFIG").map(PathBuf::from))
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".kube/config")))
}

fn invalid(field: &str, reason: impl std::fmt::Display) -> mesh_install::Error {
    mesh_install::Error::InvalidConfig {
        field: field.to_owned(),
        reason: reason.to_string(),
    }
}

/// The tools step 0 reports on, looked up on `PATH`.
fn tools() -> Vec<flow::Tool> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    [
        ("istioctl", "step 9 (control-plane install)"),
        ("kubectl", "inspecting the cluster by hand"),
    ]
    .into_iter()
    .map(|(name, used_for)| flow::Tool {
        name: name.to_owned(),
        path: std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file()),
        used_for,
    })
    .collect()
}

fn needs(selection: &[Step], steps: &[Step]) -> bool {
    selection.iter().any(|s| steps.contains(s))
}

/// Where the audit log goes: the flag or environment, then `audit.log`, then
/// `meshca-audit.jsonl` next to the configuration file.
pub(crate) fn audit_path(config_path: &Path, config: &Config, flag: Option<&Path>) -> PathBuf {
    flag.map(Path::to_owned)
        .or_else(|| config.audit.log.clone())
        .unwrap_or_else(|| {
            config_path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or_else(|| Path::new("."))
                .join("meshca-audit.jsonl")
        })
}

/// Appends the audit records of `report` (created and updated objects only) to `path` as JSON
/// lines, creating it owner-only. A dry run writes nothing.
pub(crate) fn append_audit(path: &Path, report: &FlowReport) -> anyhow::Result<usize> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let records = mesh_install::audit::records(report, &jiff::Timestamp::now().to_string());
    if records.is_empty() {
        return Ok(0);
    }
    let mut text = String::new();
    for record in &records {
        text.push_str(&serde_json::to_string(record)?);
        text.push('\n');
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .with_context(|| {
            format!(
                "opening the audit log {}; set audit.log or --audit-log",
                path.display()
            )
        })?;
    file.write_all(text.as_bytes())
        .with_context(|| format!("appending to the audit log {}", path.display()))?;
    Ok(records.len())
}

/// Backends a caller supplies instead of the defaults: the demo's emulated istiod as the
/// installer, and its workloads as the TLS probe.
#[derive(Clone, Copy, Default)]
pub(crate) struct Supplied<'a> {
    /// Replaces `istioctl`.
    pub(crate) installer: Option<&'a dyn Installer>,
    /// Step 11's TLS probe.
    pub(crate) probe: Option<&'a dyn MeshProbe>,
}

/// `istioctl` when it is there; otherwise an installer whose install fails with the hint (so
/// that plans and re-runs that install nothing do not need it).
enum CliInstaller {
    Found(Istioctl),
    Missing(Option<PathBuf>),
}

impl CliInstaller {
    fn for_config(config: &Config) -> Self {
        let path = std::env::var_os("PATH").unwrap_or_default();
        match Istioctl::find(config.install.istioctl.as_deref(), &path) {
            Ok(found) => Self::Found(
                found.with_cluster(kubeconfig_path(config), config.cluster.context.clone()),
            ),
            Err(_) => Self::Missing(config.install.istioctl.clone()),
        }
    }
}

#[async_trait::async_trait]
impl Installer for CliInstaller {
    fn describe(&self) -> String {
        match self {
            Self::Found(i) => i.describe(),
            Self::Missing(_) => "istioctl (not found)".to_owned(),
        }
    }

    async fn install(&self, operator: &serde_json::Value) -> Result<(), InstallError> {
        match self {
            Self::Found(i) => i.install(operator).await,
            Self::Missing(explicit) => {
                let path = std::env::var_os("PATH").unwrap_or_default();
                Istioctl::find(explicit.as_deref(), &path)?
                    .install(operator)
                    .await
            }
        }
    }
}

/// Step 10's root key.
fn root_signer(
    config: &Config,
    token: Option<&Arc<hsm_core::HsmToken>>,
) -> anyhow::Result<Option<Box<dyn ca_signing::Signer>>> {
    match &config.root_ca.key {
        None => Ok(None),
        Some(RootKey::File(path)) => {
            let signer = ca_signing::SoftwareSigner::from_file(path, None)
                .map_err(|e| invalid("root-ca.key", e))?;
            Ok(Some(Box::new(signer)))
        }
        Some(RootKey::Hsm(id)) => {
            let token = token.context("root-ca.key = { hsm = ... } needs the HSM token")?;
            let id = hsm_core::KeyPairId::new(id.clone()).map_err(|e| invalid("root-ca.key", e))?;
            let key = hsm_core::HsmKey::open(token.clone(), &id).map_err(|source| {
                mesh_install::Error::Hsm {
                    step: Step::SignCa,
                    source,
                }
            })?;
            Ok(Some(Box::new(key)))
        }
    }
}

/// Loads `config_path`, connects what `selection` needs and runs the flow under `mode`.
/// Returns the report, or the error with the partial report (already printed by the caller).
/// The changes of an applied run (also of a failed one) are appended to the audit log.
#[expect(
    clippy::too_many_lines,
    reason = "connects each backend a selection needs, in step order"
)]
pub(crate) async fn execute(
    config_path: &Path,
    overrides: Overrides,
    audit_log: Option<&Path>,
    selection: &[Step],
    mode: Mode,
    progress: Progress,
    supplied: Supplied<'_>,
) -> anyhow::Result<Result<FlowReport, Box<flow::Failure>>> {
    let mut config = Config::load(config_path)?.with_overrides(overrides)?;
    if config.install.method == InstallMethod::Manual && config.install.manifest.is_none() {
        config.install.manifest = Some(
            config_path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or_else(|| Path::new("."))
                .join("istio-operator.yaml"),
        );
    }
    let audit = audit_path(config_path, &config, audit_log);
    let hsm_steps = [
        Step::Prerequisites,
        Step::HsmSlot,
        Step::Kek,
        Step::RootImport,
        Step::SignCa,
    ];
    let kube_steps = [
        Step::Prerequisites,
        Step::VaultKubeAuth,
        Step::VaultSetup,
        Step::ControlPlaneResources,
        Step::WebhookService,
        Step::Install,
        Step::SignCa,
        Step::Verify,
        Step::Injection,
        Step::ExternalIp,
    ];

    let pin = if needs(
        selection,
        &[
            Step::Prerequisites,
            Step::HsmSlot,
            Step::Kek,
            Step::RootImport,
            Step::VaultSetup,
            Step::SignCa,
        ],
    ) {
        Some(read_secret("hsm.pin", &config.hsm.pin)?)
    } else {
        None
    };

    let (kube_client, endpoint) = if needs(selection, &kube_steps) {
        let (client, endpoint) = connect_kube(&config).await?;
        (Some(client), Some(endpoint))
    } else {
        (None, None)
    };
    let vault_client = if needs(selection, &[Step::Prerequisites, Step::VaultSetup]) {
        Some(connect_vault(&config)?)
    } else {
        None
    };
    let token = match &pin {
        Some(pin) if needs(selection, &hsm_steps) => Some(open_hsm(&config, pin.clone()).await?),
        _ => None,
    };
    let hsm_admin = token.clone().map(hsm_core::HsmAdminService::new);
    let kms = token.clone().map(|t| {
        hsm_core::HsmIstioKms::new(
            t,
            hsm_core::IstioConfig {
                default_ca_id: hsm_core::CaId::new(config.hsm.ca_id.clone()).unwrap_or_default(),
                ..hsm_core::IstioConfig::default()
            },
        )
    });
    let signer = if needs(selection, &[Step::SignCa]) {
        root_signer(&config, token.as_ref())?
    } else {
        None
    };
    let cli_installer = CliInstaller::for_config(&config);
    let installer: &dyn Installer = supplied.installer.unwrap_or(&cli_installer);

    let spec = FlowSpec::from_config(
        &config,
        Inputs {
            endpoint,
            pin,
            tools: tools(),
        },
    )?;
    let ports = Ports {
        hsm: hsm_admin.as_ref().map(|h| h as &dyn hsm_core::HsmAdmin),
        vault: vault_client
            .as_ref()
            .map(|v| v as &dyn vault_bootstrap::Vault),
        kube: kube_client.as_ref().map(|k| k as &dyn k8s_bootstrap::Kube),
        installer: Some(installer),
        kms: kms.as_ref().map(|k| k as &dyn hsm_core::IstioKms),
        root_signer: signer.as_deref(),
        probe: supplied.probe,
    };
    let mut display = Display {
        progress,
        mode,
        spinner: None,
    };
    let mut events = |event: Event<'_>| display.show(&event);
    let outcome = flow::run(&spec, ports, selection, mode, &mut events).await;
    let report = match &outcome {
        Ok(report) => report,
        Err(failure) => &failure.report,
    };
    if !mode.is_dry_run() {
        let written = append_audit(&audit, report)?;
        if written > 0 && progress != Progress::Quiet {
            eprintln!("    {written} change(s) appended to {}", audit.display());
        }
    }
    Ok(outcome)
}

async fn connect_kube(
    config: &Config,
) -> mesh_install::Result<(k8s_bootstrap::KubeClient, ClusterEndpoint)> {
    let path = kubeconfig_path(config)
        .ok_or_else(|| invalid("cluster.kubeconfig", "not set and HOME is unknown"))?;
    let kubeconfig = kube::config::Kubeconfig::read_from(&path)
        .map_err(|e| invalid("cluster.kubeconfig", format!("{}: {e}", path.display())))?;
    let context = config.cluster.context.as_deref();
    let endpoint = ClusterEndpoint::from_kubeconfig(&kubeconfig, context)
        .map_err(|e| invalid("cluster.kubeconfig", e))?;
    let client = k8s_bootstrap::KubeClient::from_kubeconfig(kubeconfig, context)
        .await
        .map_err(|e| invalid("cluster.kubeconfig", e))?;
    Ok((client, endpoint))
}

fn connect_vault(config: &Config) -> mesh_install::Result<vault_bootstrap::HttpVault> {
    let token = read_secret("vault.token", &config.vault.token)?;
    let addr = vault_bootstrap::VaultAddr::parse(&config.vault.address)
        .map_err(|e| invalid("vault.address", e))?;
    let mut conn =
        vault_bootstrap::Connection::new(addr).with_namespace(config.vault.namespace.clone());
    if let Some(ca) = &config.vault.ca_cert {
        conn = conn
            .with_ca_cert_file(ca)
            .map_err(|e| invalid("vault.ca-cert", e))?;
    }
    vault_bootstrap::HttpVault::new(conn, Some(&token)).map_err(|e| invalid("vault", e))
}

/// Step 1's connection: loads the module, finds the token by label and logs in once.
async fn open_hsm(config: &Config, pin: SecretString) -> anyhow::Result<Arc<hsm_core::HsmToken>> {
    let module_path = config.hsm.module.clone();
    let label = hsm_core::TokenLabel::new(config.hsm.token_label.clone())
        .map_err(|e| invalid("hsm.token-label", e))?;
    let token = tokio::task::spawn_blocking(move || {
        let module = hsm_core::Module::load(&module_path)?;
        hsm_core::HsmToken::open(&module, &label, pin, hsm_core::TokenOptions::default())
    })
    .await
    .context("opening the HSM token")?
    .map_err(|source| mesh_install::Error::Hsm {
        step: Step::HsmSlot,
        source,
    })?;
    Ok(Arc::new(token))
}

/// Prints the report (text or JSON) to stdout.
pub(crate) fn print_report(report: &FlowReport, json: bool) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", serde_json::to_string_pretty(report)?)?;
    } else {
        write!(out, "{report}")?;
        let changed = report
            .changes()
            .filter(|(_, c)| c.outcome.is_change())
            .count();
        let verb = if report.dry_run {
            "would change"
        } else {
            "changed"
        };
        writeln!(out, "\n{changed} object(s) {verb}.")?;
    }
    Ok(())
}

/// Prints `meshca status` checks: `linkerd check` style text, or JSON.
pub(crate) fn print_status(
    checks: &[mesh_install::status::Check],
    clean: bool,
    json: bool,
) -> anyhow::Result<()> {
    use mesh_install::status::CheckState;
    let mut out = std::io::stdout().lock();
    if json {
        let doc = serde_json::json!({ "clean": clean, "checks": checks });
        writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
        return Ok(());
    }
    let mut last = None;
    for c in checks {
        if last != Some(c.step) {
            writeln!(
                out,
                "\n{}\n{}",
                c.step,
                "-".repeat(c.step.to_string().len())
            )?;
            last = Some(c.step);
        }
        let mark = match c.state {
            CheckState::Ok => "\u{2714}",
            CheckState::Drift | CheckState::Error => "\u{2718}",
            CheckState::Warning => "\u{203c}",
        };
        match c.plane {
            Some(plane) => writeln!(out, "{mark} {plane} {}", c.name)?,
            None => writeln!(out, "{mark} {}", c.name)?,
        }
        if !c.hint.is_empty() {
            writeln!(out, "    hint: {}", c.hint)?;
        }
    }
    let failing = checks
        .iter()
        .filter(|c| matches!(c.state, CheckState::Drift | CheckState::Error))
        .count();
    if clean {
        writeln!(out, "\nStatus: {} check(s) passed, no drift.", checks.len())?;
    } else {
        writeln!(
            out,
            "\nStatus: {failing} of {} check(s) failed.",
            checks.len()
        )?;
    }
    Ok(())
}

/// `meshca hsm list`: the KEKs and CA anchors on the configured token, as JSON (attribute
/// flags and certificate fingerprints; never key material).
pub(crate) async fn hsm_list(
    config_path: &Path,
    overrides: Overrides,
) -> anyhow::Result<serde_json::Value> {
    let config = Config::load(config_path)?.with_overrides(overrides)?;
    let pin = read_secret("hsm.pin", &config.hsm.pin)?;
    let admin = hsm_core::HsmAdminService::new(open_hsm(&config, pin).await?);
    let hsm = |source| mesh_install::Error::Hsm {
        step: Step::HsmSlot,
        source,
    };
    let keks: Vec<serde_json::Value> = admin
        .list_keks()
        .await
        .map_err(hsm)?
        .iter()
        .map(|k| {
            serde_json::json!({
                "id": k.id.to_string(),
                "label": k.label,
                "bytes": k.value_len,
                "sensitive": k.sensitive,
                "extractable": k.extractable,
                "never_extractable": k.never_extractable,
                "local": k.local,
            })
        })
        .collect();
    let anchors: Vec<serde_json::Value> = admin
        .list_anchors()
        .await
        .map_err(hsm)?
        .iter()
        .map(|a| {
            serde_json::json!({
                "ca_id": a.ca_id.to_string(),
                "subject": a.label,
                "sha256": a.sha256,
                "not_after": a.not_after,
            })
        })
        .collect();
    Ok(serde_json::json!({
        "token": config.hsm.token_label,
        "keks": keks,
        "anchors": anchors,
    }))
}
