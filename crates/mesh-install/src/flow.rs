//! The flow: the built steps of the guide, run in order over the HSM, Vault and Kubernetes
//! ports, each planned (dry run) or applied idempotently, combined into one [`FlowReport`].

use std::fmt;
use std::path::Path;
use std::time::{Duration, Instant};

use hsm_core::{CaId, HsmAdmin, ImportPolicy, IstioKms, KekId};
use k8s_bootstrap::ingress::IntegratedLb;
use k8s_bootstrap::vault_auth::{
    ClusterEndpoint, Output, ReviewerToken, VaultAuthMaterial, VaultAuthSpec,
};
use k8s_bootstrap::wait::WaitOptions;
use k8s_bootstrap::{CertificatePem, ClusterSuffix, Kube};
use mesh_common::{Mode, Outcome};
use secrecy::SecretString;
use serde::Serialize;
use vault_bootstrap::{BootstrapSpec, KubernetesAuthConfig, SecretFields, Vault};

use crate::config::{Config, IngressMode, InstallFlavour, InstallMethod};
use crate::install::{InstallValues, Installer, MeshProbe};
use crate::steps::Step;
use crate::{Error, Result};

/// Every step of the guide, in order: what `meshca plan` and `apply` run.
pub const BUILT: [Step; 14] = Step::ALL;

/// The control plane's namespace.
pub const ISTIO_NAMESPACE: &str = k8s_bootstrap::names::ISTIO_NAMESPACE;

/// Istio's protocol prefixes for Service port names (`<protocol>[-<suffix>]`).
pub const PORT_PROTOCOLS: [&str; 11] = [
    "grpc", "grpc-web", "http", "http2", "https", "mongo", "mysql", "redis", "tcp", "tls", "udp",
];

/// True when a Service port name follows Istio's `<protocol>[-<suffix>]` convention.
pub fn is_valid_port_name(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    PORT_PROTOCOLS.iter().any(|p| {
        name == *p
            || name
                .strip_prefix(p)
                .is_some_and(|rest| rest.len() > 1 && rest.starts_with('-'))
    })
}

/// One named result of the pre-flight step.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PreflightCheck {
    /// What was checked (`API server reachable`, `tool istioctl`).
    pub name: String,
    /// True when it passed.
    pub ok: bool,
    /// True when a failure stops the run.
    pub required: bool,
    /// What was found, or how to fix it.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub detail: String,
    /// What a failure means (and so the exit code of a run it stops).
    pub failure: CheckFailure,
}

/// What a failed check means.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CheckFailure {
    /// The thing checked is not as it should be (a chain that does not verify, a pod not
    /// ready): exit 1.
    #[default]
    Check,
    /// The configuration is wrong (a rejected PIN, credentials refused): exit 3.
    Config,
    /// A dependency cannot be reached: exit 4.
    Unavailable,
}

impl CheckFailure {
    /// Unavailable when `unavailable`, else Config when `config`, else Check.
    pub fn of(unavailable: bool, config: bool) -> Self {
        if unavailable {
            Self::Unavailable
        } else if config {
            Self::Config
        } else {
            Self::Check
        }
    }
}

impl PreflightCheck {
    /// The same check, whose failure means `failure`.
    #[must_use]
    pub fn failing_as(mut self, failure: CheckFailure) -> Self {
        self.failure = failure;
        self
    }
}

/// A command-line tool the pre-flight step reports on, resolved by the caller (which knows
/// `PATH`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tool {
    /// The command name.
    pub name: String,
    /// Where it was found, if anywhere.
    pub path: Option<std::path::PathBuf>,
    /// What it is used for (shown when it is missing).
    pub used_for: &'static str,
}

/// Step 6's inputs: the downloaded release, its detached signature and the signing key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReleaseFiles {
    /// The archive.
    pub file: std::path::PathBuf,
    /// The DER ECDSA signature.
    pub signature: std::path::PathBuf,
    /// The PEM public key.
    pub public_key: std::path::PathBuf,
}

impl ReleaseFiles {
    /// All three files of `[release]`, or `None` when none is set.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] when only some are set.
    pub fn from_config(r: &crate::config::ReleaseConfig) -> Result<Option<Self>> {
        match (&r.file, &r.signature, &r.public_key) {
            (None, None, None) => Ok(None),
            (Some(file), Some(signature), Some(public_key)) => Ok(Some(Self {
                file: file.clone(),
                signature: signature.clone(),
                public_key: public_key.clone(),
            })),
            _ => Err(Error::InvalidConfig {
                field: "release".to_owned(),
                reason: "set file, signature and public-key together, or none of them".to_owned(),
            }),
        }
    }
}

/// The system a change is made in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Plane {
    /// Objects on the HSM token.
    Hsm,
    /// Vault configuration.
    Vault,
    /// Kubernetes objects.
    Cluster,
    /// Local files.
    Files,
}

impl fmt::Display for Plane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Hsm => "hsm",
            Self::Vault => "vault",
            Self::Cluster => "cluster",
            Self::Files => "files",
        })
    }
}

/// One object a step manages and what happened to it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Change {
    /// Where the object lives.
    pub plane: Plane,
    /// The object, as text (`KEK asm-kek`, `policy asm-c1-hsm-policy`, `namespace vault`).
    pub object: String,
    /// What was (or would be) done.
    pub outcome: Outcome,
    /// Settings that differed (names only, never values).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub differences: Vec<String>,
}

/// How a step ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    /// It ran; see its changes.
    Done,
    /// Left out on purpose (not selected, or nothing configured for it).
    Skipped,
    /// It could not run because something an earlier step (or istiod) creates is not there
    /// yet.
    Blocked,
    /// It failed; the run stopped here.
    Failed,
    /// Not reached because an earlier step failed.
    NotRun,
}

impl fmt::Display for StepStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Done => "done",
            Self::Skipped => "skipped",
            Self::Blocked => "blocked",
            Self::Failed => "failed",
            Self::NotRun => "not run",
        })
    }
}

/// One step's part of the report.
#[derive(Clone, Debug, Serialize)]
pub struct StepReport {
    /// The guide's step number.
    pub number: u8,
    /// The step.
    pub step: Step,
    /// Its title.
    pub title: &'static str,
    /// How it ended.
    pub status: StepStatus,
    /// The objects it manages, in order.
    pub changes: Vec<Change>,
    /// Things worth the operator's attention.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Named read-only checks (the pre-flight step).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<PreflightCheck>,
    /// A one-line explanation (why skipped, blocked or failed; what was checked).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub detail: String,
    /// Wall time, in milliseconds.
    pub elapsed_ms: u64,
}

impl StepReport {
    fn new(step: Step, status: StepStatus, detail: impl Into<String>) -> Self {
        Self {
            number: step.number(),
            step,
            title: step.title(),
            status,
            changes: Vec::new(),
            warnings: Vec::new(),
            checks: Vec::new(),
            detail: detail.into(),
            elapsed_ms: 0,
        }
    }

    /// True when every change is `Unchanged`.
    pub fn is_unchanged(&self) -> bool {
        self.changes.iter().all(|c| !c.outcome.is_change())
    }
}

/// The combined report of a run: every step of the guide, in order.
#[derive(Clone, Debug, Serialize)]
pub struct FlowReport {
    /// True for a dry run.
    pub dry_run: bool,
    /// One entry per guide step (0 to 13).
    pub steps: Vec<StepReport>,
}

impl FlowReport {
    /// True when nothing changed (or would change).
    pub fn is_unchanged(&self) -> bool {
        self.steps.iter().all(StepReport::is_unchanged)
    }

    /// Every change, with its step.
    pub fn changes(&self) -> impl Iterator<Item = (Step, &Change)> {
        self.steps
            .iter()
            .flat_map(|s| s.changes.iter().map(move |c| (s.step, c)))
    }

    /// The report of one step.
    pub fn step(&self, step: Step) -> Option<&StepReport> {
        self.steps.iter().find(|s| s.step == step)
    }
}

impl fmt::Display for FlowReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for s in &self.steps {
            writeln!(
                f,
                "{:>2}  {:<48} {:<14} {}",
                s.number,
                s.title,
                s.status.to_string(),
                s.detail
            )?;
            for c in &s.changes {
                write!(
                    f,
                    "      {:<13} {:<8} {}",
                    c.outcome.to_string(),
                    c.plane,
                    c.object
                )?;
                if !c.differences.is_empty() {
                    write!(f, " ({})", c.differences.join(", "))?;
                }
                writeln!(f)?;
            }
            for c in &s.checks {
                let mark = if c.ok { "\u{2714}" } else { "\u{2718}" };
                write!(f, "      {mark} {}", c.name)?;
                if !c.detail.is_empty() {
                    write!(f, ": {}", c.detail)?;
                }
                writeln!(f)?;
            }
            for w in &s.warnings {
                writeln!(f, "      warning: {w}")?;
            }
        }
        Ok(())
    }
}

/// A failed run: the report up to the failure (the failed step marked) and the error.
#[derive(Debug, thiserror::Error)]
#[error("the install flow stopped")]
pub struct Failure {
    /// What was done before the failure.
    pub report: FlowReport,
    /// The cause.
    #[source]
    pub error: Error,
}

/// What the flow tells its caller while it runs (for progress display).
#[derive(Debug)]
#[non_exhaustive]
pub enum Event<'a> {
    /// A step starts.
    Started(Step),
    /// A long wait inside a step made progress.
    Progress {
        /// The step.
        step: Step,
        /// What it is waiting for.
        message: String,
    },
    /// A step ended (also for skipped and not-built steps).
    Finished(&'a StepReport),
}

/// The backends the steps talk to; a run that selects only some steps needs only their
/// backends (`None` fails a step that needs it with [`Error::NotConnected`]).
#[derive(Clone, Copy, Default)]
pub struct Ports<'a> {
    /// The HSM token, logged in (steps 1-3).
    pub hsm: Option<&'a dyn HsmAdmin>,
    /// Vault, with an operator token (step 5).
    pub vault: Option<&'a dyn Vault>,
    /// The cluster (steps 4, 7-13).
    pub kube: Option<&'a dyn Kube>,
    /// What installs the control plane (step 9): `istioctl`, or the sandbox's istiod.
    pub installer: Option<&'a dyn Installer>,
    /// The HSM's Istio KMS operations, which decrypt istiod's CSR (step 10).
    pub kms: Option<&'a dyn IstioKms>,
    /// The root CA's key (step 10).
    pub root_signer: Option<&'a dyn ca_signing::Signer>,
    /// A TLS connection to a workload's sidecar (step 11).
    pub probe: Option<&'a dyn MeshProbe>,
}

impl<'a> Ports<'a> {
    fn hsm(&self, step: Step) -> Result<&'a dyn HsmAdmin> {
        self.hsm.ok_or(Error::NotConnected {
            step,
            backend: "the HSM",
        })
    }

    fn vault(&self, step: Step) -> Result<&'a dyn Vault> {
        self.vault.ok_or(Error::NotConnected {
            step,
            backend: "Vault",
        })
    }

    fn kube(&self, step: Step) -> Result<&'a dyn Kube> {
        self.kube.ok_or(Error::NotConnected {
            step,
            backend: "the cluster",
        })
    }
}

/// Inputs read from files or the environment that the flow needs besides the configuration.
#[derive(Clone, Debug)]
pub struct Inputs {
    /// The API server address and CA as Vault will reach it (from the kubeconfig); needed by
    /// steps 4 and 5.
    pub endpoint: Option<ClusterEndpoint>,
    /// The HSM user PIN, stored in Vault in step 5.
    pub pin: Option<SecretString>,
    /// The tools step 0 reports on.
    pub tools: Vec<Tool>,
}

/// Everything the built steps need, resolved and validated.
#[derive(Clone, Debug)]
pub struct FlowSpec {
    /// The token label (for reports).
    pub token_label: String,
    /// Step 2's KEK.
    pub kek_id: KekId,
    /// Step 3's anchor id.
    pub ca_id: CaId,
    /// Step 3's root certificate (PEM or DER); `None` leaves step 3 out.
    pub root_cert: Option<Vec<u8>>,
    /// Step 4.
    pub vault_auth: VaultAuthSpec,
    /// Step 4's cluster endpoint, handed to Vault in step 5.
    pub endpoint: Option<ClusterEndpoint>,
    /// Step 5 (its Kubernetes auth configuration is completed from step 4; without a PIN
    /// its secret is `None` and step 5 refuses to run).
    pub vault: BootstrapSpec,
    /// Step 7's Vault CA; `None` fails step 7 with a hint.
    pub vault_ca: Option<CertificatePem>,
    /// Steps 8, 12.
    pub revision: String,
    /// Step 12.
    pub inject_namespaces: Vec<String>,
    /// Step 12's wait for pods.
    pub inject_wait: WaitOptions,
    /// Step 13; `None` leaves it out.
    pub ingress: Option<IntegratedLb>,
    /// Step 0's tools.
    pub tools: Vec<Tool>,
    /// Step 6; `None` leaves it out.
    pub release: Option<ReleaseFiles>,
    /// Steps 9-11.
    pub install: InstallSpec,
}

/// Steps 9-11's settings.
#[derive(Clone, Debug)]
pub struct InstallSpec {
    /// What the `IstioOperator` is rendered from.
    pub values: InstallValues,
    /// `istioctl` or manual.
    pub method: InstallMethod,
    /// ASM or upstream Istio.
    pub flavour: InstallFlavour,
    /// Where the rendering is written, if anywhere.
    pub manifest: Option<std::path::PathBuf>,
    /// The trust domain the istiod CA is signed for.
    pub trust_domain: String,
    /// How long to wait for istiod.
    pub wait: WaitOptions,
    /// Where step 10 writes the chain files, if anywhere.
    pub out_dir: Option<std::path::PathBuf>,
}

impl InstallSpec {
    /// The `IstioOperator` profile.
    pub fn profile(&self) -> &str {
        &self.values.profile
    }
}

impl FlowSpec {
    /// Builds the spec from a validated configuration, reading the files it names (root
    /// certificate, Vault CA, HSM credential files).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] and [`Error::ReadFile`] naming the field or file.
    #[expect(
        clippy::too_many_lines,
        reason = "one block per configuration section, in the file's order"
    )]
    pub fn from_config(config: &Config, inputs: Inputs) -> Result<Self> {
        let invalid = |field: &str, reason: String| Error::InvalidConfig {
            field: field.to_owned(),
            reason,
        };
        let suffix = ClusterSuffix::new(config.cluster.suffix.clone())
            .map_err(|e| invalid("cluster.suffix", e.to_string()))?;
        let kek_id = KekId::new(config.hsm.kek_id.clone())
            .map_err(|e| invalid("hsm.kek-id", e.to_string()))?;
        let ca_id =
            CaId::new(config.hsm.ca_id.clone()).map_err(|e| invalid("hsm.ca-id", e.to_string()))?;
        let root_cert = config
            .root_ca
            .cert
            .as_deref()
            .map(|p| read_file("the root CA certificate (root-ca.cert)", p))
            .transpose()?;
        let vault_ca = config
            .vault
            .ca_cert
            .as_deref()
            .map(|p| {
                CertificatePem::from_file(p).map_err(|e| invalid("vault.ca-cert", e.to_string()))
            })
            .transpose()?;

        let mut fields = SecretFields::new();
        let have_pin = inputs.pin.is_some();
        if let Some(pin) = inputs.pin {
            fields.insert(vault_bootstrap::fields::PIN, pin);
        }
        for (name, what, path) in [
            (
                vault_bootstrap::fields::CLIENT_CERT,
                "the HSM client certificate (vault.hsm-client-cert)",
                &config.vault.hsm_client_cert,
            ),
            (
                vault_bootstrap::fields::CLIENT_KEY,
                "the HSM client key (vault.hsm-client-key)",
                &config.vault.hsm_client_key,
            ),
            (
                vault_bootstrap::fields::SERVER_CERT,
                "the HSM server certificate (vault.hsm-server-cert)",
                &config.vault.hsm_server_cert,
            ),
        ] {
            if let Some(path) = path {
                let text = String::from_utf8_lossy(&read_file(what, path)?).into_owned();
                fields.insert(name, SecretString::from(text));
            }
        }
        let vault = BootstrapSpec::for_cluster(
            suffix.as_str(),
            KubernetesAuthConfig::default(),
            have_pin.then_some(fields),
        )
        .map_err(|e| invalid("cluster.suffix", e.to_string()))?;

        let vault_auth = VaultAuthSpec {
            suffix,
            token: ReviewerToken::default(),
            output: Output::Return,
            wait: WaitOptions {
                timeout: Duration::from_secs(60),
                interval: Duration::from_millis(500),
            },
        };

        let ingress = match config.ingress.mode {
            IngressMode::None => None,
            IngressMode::Integrated => {
                Some(IntegratedLb::field(config.ingress.ip.ok_or_else(|| {
                    invalid("ingress.ip", "integrated mode needs an address".to_owned())
                })?))
            }
        };
        let release = ReleaseFiles::from_config(&config.release)?;
        let install = InstallSpec {
            values: install_values(config)?,
            method: config.install.method,
            flavour: config.install.flavour,
            manifest: config.install.manifest.clone(),
            trust_domain: config.install.trust_domain.clone(),
            wait: WaitOptions {
                timeout: Duration::from_secs(config.install.wait_seconds),
                interval: Duration::from_millis(200),
            },
            out_dir: config.install.out_dir.clone(),
        };
        Ok(Self {
            install,
            tools: inputs.tools,
            release,
            token_label: config.hsm.token_label.clone(),
            kek_id,
            ca_id,
            root_cert,
            vault_auth,
            endpoint: inputs.endpoint,
            vault,
            vault_ca,
            revision: config.cluster.revision.clone(),
            inject_namespaces: config.injection.namespaces.clone(),
            inject_wait: WaitOptions {
                timeout: Duration::from_secs(config.injection.wait_seconds),
                interval: Duration::from_millis(500),
            },
            ingress,
        })
    }
}

/// Step 9's values from the configuration.
fn install_values(config: &Config) -> Result<InstallValues> {
    let vault = BootstrapSpec::for_cluster(
        &config.cluster.suffix,
        KubernetesAuthConfig::default(),
        None,
    )
    .map_err(|e| Error::InvalidConfig {
        field: "cluster.suffix".to_owned(),
        reason: e.to_string(),
    })?;
    Ok(InstallValues {
        profile: config.install.profile.clone(),
        revision: config.cluster.revision.clone(),
        kek_id: config.hsm.kek_id.clone(),
        slot_label: config.hsm.token_label.clone(),
        ca_id: config.hsm.ca_id.clone(),
        mode: config.hsm.mode,
        plugin_image: config.images.hsm_plugin_image.clone(),
        vault_client_image: config.images.vault_client_image.clone(),
        vault_addr: config.vault.address.clone(),
        vault_auth_path: vault.login_path(),
        vault_auth_role: vault.auth.role.name.clone(),
        vault_secret_path: format!("{}/{}", vault.mount.path, vault.secret_path()),
    })
}

/// The `IstioOperator` step 9 installs for `config` (what `meshca mesh render` prints).
///
/// # Errors
/// [`Error::InvalidConfig`] for a bad cluster suffix.
pub fn render_operator(config: &Config) -> Result<serde_json::Value> {
    Ok(crate::install::operator_for(
        config.install.flavour,
        &install_values(config)?,
    ))
}

fn read_file(what: &'static str, path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| Error::ReadFile {
        what,
        path: path.to_owned(),
        source,
    })
}

/// What one step produced for the next ones.
#[derive(Default)]
struct Carry {
    material: Option<VaultAuthMaterial>,
    step4_ran: bool,
}

/// Runs the built steps among `selection` in the guide's order under `mode`.
///
/// Steps not selected are reported `Skipped`, unbuilt ones `NotBuilt`. The first failing step
/// stops the run: it is reported `Failed`, the rest `NotRun`, and the error comes back with the
/// report. Every step is idempotent, so running again after a failure resumes the work.
///
/// # Errors
/// A [`Failure`] holding the partial report and the step's error.
pub async fn run(
    spec: &FlowSpec,
    ports: Ports<'_>,
    selection: &[Step],
    mode: Mode,
    events: &mut (dyn FnMut(Event<'_>) + Send),
) -> std::result::Result<FlowReport, Box<Failure>> {
    let mut report = FlowReport {
        dry_run: mode.is_dry_run(),
        steps: Vec::with_capacity(Step::ALL.len()),
    };
    let mut carry = Carry::default();
    let mut failed: Option<Error> = None;
    for step in Step::ALL {
        let entry = if failed.is_some() {
            StepReport::new(step, StepStatus::NotRun, "an earlier step failed")
        } else if !selection.contains(&step) {
            StepReport::new(step, StepStatus::Skipped, "not selected")
        } else {
            events(Event::Started(step));
            let started = Instant::now();
            let mut entry = match run_step(step, spec, ports, mode, &mut carry, events).await {
                Ok(entry) if entry.status == StepStatus::Failed => {
                    let failing = entry.checks.iter().filter(|c| c.required && !c.ok);
                    failed = Some(Error::Preflight {
                        step,
                        failed: failing.clone().map(|c| c.name.clone()).collect(),
                        // The gravest cause decides: an unreachable dependency over a
                        // configuration error over a failed check.
                        failure: failing.map(|c| c.failure).max().unwrap_or_default(),
                    });
                    entry
                }
                Ok(entry) => entry,
                Err(error) => {
                    let mut entry = StepReport::new(step, StepStatus::Failed, error.to_string());
                    entry.detail = error_chain(&error);
                    failed = Some(error);
                    entry
                }
            };
            entry.elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            entry
        };
        events(Event::Finished(&entry));
        report.steps.push(entry);
    }
    match failed {
        Some(error) => Err(Box::new(Failure { report, error })),
        None => Ok(report),
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Checks `release.file` against its detached signature (the guide's
/// `openssl dgst -sha256 -verify KEY -signature SIG FILE`).
///
/// # Errors
/// [`Error::ReadFile`] for an unreadable key, signature or archive, [`Error::Release`] for a
/// bad key or a signature that does not match.
pub fn verify_release(step: Step, release: &ReleaseFiles) -> Result<()> {
    let key_pem = read_file("the release public key", &release.public_key)?;
    let signature = read_file("the release signature", &release.signature)?;
    let failed = |source| Error::Release {
        step,
        path: release.file.clone(),
        source,
    };
    let key = ca_signing::release::ReleaseKey::from_pem(&key_pem).map_err(failed)?;
    let file = std::fs::File::open(&release.file).map_err(|source| Error::ReadFile {
        what: "the release archive",
        path: release.file.clone(),
        source,
    })?;
    ca_signing::release::verify_detached(&key, std::io::BufReader::new(file), &signature)
        .map_err(failed)
}

async fn preflight(spec: &FlowSpec, ports: Ports<'_>) -> Vec<PreflightCheck> {
    let check = |name: String, ok: bool, required: bool, detail: String| PreflightCheck {
        name,
        ok,
        required,
        detail,
        failure: CheckFailure::Check,
    };
    let mut out = Vec::new();
    for tool in &spec.tools {
        out.push(match &tool.path {
            Some(path) => check(
                format!("tool {}", tool.name),
                true,
                false,
                path.display().to_string(),
            ),
            None => check(
                format!("tool {}", tool.name),
                false,
                false,
                format!("not on PATH; needed for {}", tool.used_for),
            ),
        });
    }
    if let Some(hsm) = ports.hsm {
        out.push(match hsm.health().await {
            hsm_core::Health::Ready => check(
                format!("HSM token {} usable", spec.token_label),
                true,
                true,
                String::new(),
            ),
            hsm_core::Health::PinRejected(rv) => check(
                format!("HSM token {} usable", spec.token_label),
                false,
                true,
                format!("the token rejected the PIN ({rv}); check hsm.pin"),
            )
            .failing_as(CheckFailure::Config),
        });
    }
    if let Some(vault) = ports.vault {
        out.push(match vault.read_policy("default").await {
            Ok(_) => check("Vault reachable".to_owned(), true, true, String::new()),
            Err(e) => check(
                "Vault reachable".to_owned(),
                false,
                true,
                format!(
                    "{}; check vault.address, vault.ca-cert and vault.token",
                    error_chain(&e)
                ),
            )
            .failing_as(CheckFailure::of(e.is_unavailable(), e.is_config())),
        });
    }
    if let Some(kube) = ports.kube {
        let namespaces = kube
            .list(&k8s_bootstrap::ListQuery::all(
                k8s_bootstrap::Kind::Namespace,
            ))
            .await;
        match namespaces {
            Ok(_) => out.push(check(
                "API server reachable".to_owned(),
                true,
                true,
                String::new(),
            )),
            Err(e) => {
                let failure = CheckFailure::of(e.is_unavailable(), e.is_denied());
                out.push(
                    check(
                        "API server reachable".to_owned(),
                        false,
                        true,
                        format!(
                            "{}; check cluster.kubeconfig and cluster.context",
                            error_chain(&e)
                        ),
                    )
                    .failing_as(failure),
                );
                return out;
            }
        }
        out.extend(port_naming(spec, kube).await);
    }
    out
}

async fn port_naming(spec: &FlowSpec, kube: &dyn Kube) -> Vec<PreflightCheck> {
    let check = |name: String, ok: bool, required: bool, detail: String| PreflightCheck {
        name,
        ok,
        required,
        detail,
        failure: CheckFailure::Check,
    };
    let mut out = Vec::new();
    for ns in &spec.inject_namespaces {
        let query = k8s_bootstrap::ListQuery::in_namespace(k8s_bootstrap::Kind::Service, ns);
        let name = format!("Service port names in {ns}");
        match kube.list(&query).await {
            Ok(services) => {
                let bad = misnamed_ports(&services);
                out.push(if bad.is_empty() {
                    check(name, true, false, format!("{} Service(s)", services.len()))
                } else {
                    check(
                        name,
                        false,
                        false,
                        format!(
                            "{}: name ports <protocol>[-<suffix>] ({}) or set appProtocol",
                            bad.join(", "),
                            PORT_PROTOCOLS.join(", ")
                        ),
                    )
                });
            }
            Err(e) => out.push(check(name, false, false, error_chain(&e))),
        }
    }
    out
}

/// `service/port` for every port without a protocol in its name or `appProtocol`.
fn misnamed_ports(services: &[serde_json::Value]) -> Vec<String> {
    let mut bad = Vec::new();
    for svc in services {
        let svc_name = svc["metadata"]["name"].as_str().unwrap_or("?");
        for port in svc["spec"]["ports"].as_array().into_iter().flatten() {
            if port.get("appProtocol").and_then(|p| p.as_str()).is_some() {
                continue;
            }
            let name = port["name"].as_str().unwrap_or("");
            if !is_valid_port_name(name) {
                let shown = if name.is_empty() {
                    port["port"].to_string()
                } else {
                    name.to_owned()
                };
                bad.push(format!("{svc_name}/{shown}"));
            }
        }
    }
    bad
}

fn kube_changes(report: k8s_bootstrap::Report, entry: &mut StepReport) {
    for c in report.changes {
        let plane = if c.resource.starts_with('/') {
            Plane::Files
        } else {
            Plane::Cluster
        };
        entry.changes.push(Change {
            plane,
            object: c.resource,
            outcome: c.action,
            differences: Vec::new(),
        });
    }
    entry.warnings.extend(report.warnings);
}

#[expect(
    clippy::too_many_lines,
    reason = "one arm per guide step, read top to bottom in the guide's order"
)]
async fn run_step(
    step: Step,
    spec: &FlowSpec,
    ports: Ports<'_>,
    mode: Mode,
    carry: &mut Carry,
    events: &mut (dyn FnMut(Event<'_>) + Send),
) -> Result<StepReport> {
    let mut entry = StepReport::new(step, StepStatus::Done, "");
    let hsm = |source| Error::Hsm { step, source };
    let kube = |source| Error::Kube { step, source };
    match step {
        Step::HsmSlot => {
            match ports.hsm(step)?.health().await {
                hsm_core::Health::Ready => {}
                hsm_core::Health::PinRejected(rv) => {
                    return Err(hsm(hsm_core::Error::PinRejected {
                        label: spec.token_label.clone(),
                        rv,
                    }));
                }
            }
            let keks = ports.hsm(step)?.list_keks().await.map_err(hsm)?;
            entry.detail = format!(
                "token {} found by label, user logged in ({} KEK(s) on it)",
                spec.token_label,
                keks.len()
            );
            entry.changes.push(Change {
                plane: Plane::Hsm,
                object: format!("token {} (user session)", spec.token_label),
                outcome: Outcome::Unchanged,
                differences: Vec::new(),
            });
        }
        Step::Kek => {
            let outcome = ports
                .hsm(step)?
                .ensure_kek(spec.kek_id.clone(), mode)
                .await
                .map_err(hsm)?;
            entry.changes.push(Change {
                plane: Plane::Hsm,
                object: format!("KEK {}", spec.kek_id),
                outcome,
                differences: Vec::new(),
            });
        }
        Step::RootImport => {
            let Some(cert) = &spec.root_cert else {
                return Ok(StepReport::new(
                    step,
                    StepStatus::Skipped,
                    "no root certificate configured (root-ca.cert)",
                ));
            };
            let outcome = ports
                .hsm(step)?
                .import_ca_cert(
                    spec.ca_id.clone(),
                    cert.clone(),
                    ImportPolicy::KeepExisting,
                    mode,
                )
                .await
                .map_err(hsm)?;
            entry.changes.push(Change {
                plane: Plane::Hsm,
                object: format!("CA anchor {}", spec.ca_id),
                outcome,
                differences: Vec::new(),
            });
        }
        Step::VaultKubeAuth => {
            let endpoint = spec.endpoint.as_ref().ok_or(Error::MissingInput {
                step,
                what: "the API server address and CA",
                hint: "set cluster.kubeconfig (or KUBECONFIG)",
            })?;
            let out = k8s_bootstrap::vault_auth::prepare_vault_auth(
                ports.kube(step)?,
                &spec.vault_auth,
                endpoint,
                mode,
            )
            .await
            .map_err(kube)?;
            kube_changes(out.report, &mut entry);
            entry.detail = format!(
                "reviewer JWT for vault/default, API server {}",
                endpoint.addr
            );
            carry.material = out.material;
            carry.step4_ran = true;
        }
        Step::VaultSetup => {
            if !carry.step4_ran {
                return Err(Error::MissingInput {
                    step,
                    what: "the reviewer JWT of step 4",
                    hint: "run step 4 in the same invocation (`meshca vault setup` does)",
                });
            }
            let (Some(endpoint), Some(_)) = (&spec.endpoint, &spec.vault.secret) else {
                return Err(Error::MissingInput {
                    step,
                    what: "the HSM PIN and the cluster endpoint",
                    hint: "set hsm.pin and cluster.kubeconfig",
                });
            };
            let mut vault = spec.vault.clone();
            vault.auth.config = KubernetesAuthConfig {
                kubernetes_host: endpoint.addr.clone(),
                kubernetes_ca_cert: Some(endpoint.ca.as_str().to_owned()),
                // In a dry run no token is issued; the server compares the JWT by presence
                // only, and nothing is written, so a stand-in gives the same plan.
                token_reviewer_jwt: Some(carry.material.as_ref().map_or_else(
                    || SecretString::from("dry-run"),
                    |m| m.token_reviewer_jwt.clone(),
                )),
                disable_local_ca_jwt: true,
                ..KubernetesAuthConfig::default()
            };
            let report = vault_bootstrap::apply(ports.vault(step)?, &vault, mode)
                .await
                .map_err(|source| Error::Vault { step, source })?;
            for c in report.changes {
                entry.changes.push(Change {
                    plane: Plane::Vault,
                    object: format!("{} {}", c.kind, c.object),
                    outcome: c.outcome,
                    differences: c.differences,
                });
            }
            entry.detail = format!("login path {}", vault.login_path());
        }
        Step::ControlPlaneResources => {
            let Some(ca) = &spec.vault_ca else {
                return Err(Error::MissingInput {
                    step,
                    what: "Vault's CA certificate",
                    hint: "set vault.ca-cert",
                });
            };
            let report = k8s_bootstrap::control_plane::ensure_vault_tls_configmap(
                ports.kube(step)?,
                ca,
                mode,
            )
            .await
            .map_err(kube)?;
            kube_changes(report, &mut entry);
        }
        Step::WebhookService => {
            let report = k8s_bootstrap::control_plane::ensure_istiod_service(
                ports.kube(step)?,
                &spec.revision,
                mode,
            )
            .await
            .map_err(kube)?;
            kube_changes(report, &mut entry);
        }
        Step::Injection => {
            if spec.inject_namespaces.is_empty() {
                return Ok(StepReport::new(
                    step,
                    StepStatus::Skipped,
                    "no namespaces configured (injection.namespaces)",
                ));
            }
            for ns in &spec.inject_namespaces {
                let mut on_progress = |p: &k8s_bootstrap::wait::Progress| {
                    events(Event::Progress {
                        step,
                        message: format!(
                            "{ns}: {}/{} pods on revision {}",
                            p.ready, p.total, spec.revision
                        ),
                    });
                };
                let report = k8s_bootstrap::injection::enable_injection(
                    ports.kube(step)?,
                    ns,
                    &spec.revision,
                    spec.inject_wait,
                    mode,
                    &mut on_progress,
                )
                .await
                .map_err(kube)?;
                kube_changes(report, &mut entry);
            }
        }
        Step::ExternalIp => {
            let Some(lb) = &spec.ingress else {
                return Ok(StepReport::new(
                    step,
                    StepStatus::Skipped,
                    "ingress.mode is none",
                ));
            };
            match k8s_bootstrap::ingress::ensure_load_balancer_ip(ports.kube(step)?, lb, mode).await
            {
                Ok(report) => kube_changes(report, &mut entry),
                Err(k8s_bootstrap::Error::NotFound { object, hint }) => {
                    entry.status = StepStatus::Blocked;
                    entry.detail = format!("{object} does not exist: {hint}");
                }
                Err(source) => return Err(kube(source)),
            }
        }
        Step::Prerequisites => {
            entry.checks = preflight(spec, ports).await;
            let failed = entry.checks.iter().filter(|c| c.required && !c.ok).count();
            let warned = entry.checks.iter().filter(|c| !c.required && !c.ok).count();
            entry.detail = format!(
                "{} check(s): {failed} required failed, {warned} warning(s)",
                entry.checks.len()
            );
            if failed > 0 {
                entry.status = StepStatus::Failed;
            }
        }
        Step::Download => {
            let Some(release) = &spec.release else {
                return Ok(StepReport::new(
                    step,
                    StepStatus::Skipped,
                    "no release configured (release.file); verify by hand with \
                     `meshca mesh verify-release`",
                ));
            };
            verify_release(step, release)?;
            entry.detail = format!(
                "signature of {} verified with {}",
                release.file.display(),
                release.public_key.display()
            );
            entry.changes.push(Change {
                plane: Plane::Files,
                object: format!("release {}", release.file.display()),
                outcome: Outcome::Unchanged,
                differences: Vec::new(),
            });
        }
        Step::Install => return control_plane::install(spec, ports, mode, events).await,
        Step::SignCa => return control_plane::sign_ca(spec, ports, mode, events).await,
        Step::Verify => return control_plane::verify(spec, ports).await,
    }
    Ok(entry)
}

mod control_plane;
pub use control_plane::EXPIRY_WARNING;

#[cfg(test)]
mod tests;
