//! Steps 9-11: install the control plane, hand istiod's CSR to the root and back, verify.

use std::path::Path;
use std::time::Duration;

use ca_signing::{CertChain, Certificate, CsrPurpose, IstiodCaProfile};
use hsm_core::{AuthenticatedDecryptRequest, KekId};
use k8s_bootstrap::ca_secrets::EncryptedCsr;
use k8s_bootstrap::names::{CA_CERT_SECRET, CA_CSR_SECRET, CERT_CHAIN_KEY, REVISION_LABEL};
use k8s_bootstrap::wait::{Progress, poll_until};
use k8s_bootstrap::{CertificatePem, Kind, Kube, ListQuery, ObjectRef};
use mesh_common::{Mode, Outcome};
use serde_json::Value;

use super::{Change, Event, FlowSpec, Plane, Ports, PreflightCheck, StepReport, StepStatus};
use crate::config::InstallMethod;
use crate::install::{self, installed_state_name};
use crate::steps::Step;
use crate::{Error, Result};

/// istiod's certificate lifetimes below this are reported as warnings.
pub const EXPIRY_WARNING: Duration = Duration::from_secs(30 * 24 * 3600);

type Events<'e> = dyn FnMut(Event<'_>) + Send + 'e;

fn kube_err(step: Step) -> impl Fn(k8s_bootstrap::Error) -> Error {
    move |source| Error::Kube { step, source }
}

fn installed_ref(revision: &str) -> ObjectRef {
    ObjectRef::namespaced(
        Kind::IstioOperator,
        super::ISTIO_NAMESPACE,
        installed_state_name(revision),
    )
}

/// The `IstioOperator` the configuration asks for.
fn desired_operator(spec: &FlowSpec) -> Value {
    install::operator_for(spec.install.flavour, &spec.install.values)
}

fn blocked(step: Step, detail: impl Into<String>) -> StepReport {
    StepReport::new(step, StepStatus::Blocked, detail)
}

/// istiod's pods of the revision: (name, containers ready, containers, phase).
async fn istiod_pods(kube: &dyn Kube, revision: &str) -> k8s_bootstrap::Result<Vec<PodState>> {
    let query = ListQuery::in_namespace(Kind::Pod, super::ISTIO_NAMESPACE)
        .with_labels(format!("app=istiod,{REVISION_LABEL}={revision}"));
    Ok(kube.list(&query).await?.iter().map(PodState::of).collect())
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct PodState {
    name: String,
    ready: usize,
    total: usize,
    running: bool,
}

impl PodState {
    fn of(pod: &Value) -> Self {
        let statuses = pod["status"]["containerStatuses"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let containers = pod["spec"]["containers"].as_array().map_or(0, Vec::len);
        Self {
            name: pod["metadata"]["name"].as_str().unwrap_or("?").to_owned(),
            ready: statuses.iter().filter(|s| s["ready"] == true).count(),
            total: containers.max(statuses.len()),
            running: pod["status"]["phase"] == "Running",
        }
    }

    fn all_ready(&self) -> bool {
        self.running && self.total > 0 && self.ready == self.total
    }

    fn shown(&self) -> String {
        format!("{} {}/{}", self.name, self.ready, self.total)
    }
}

fn pods_progress(pods: &[PodState], done: impl Fn(&PodState) -> bool) -> Progress {
    let pending: Vec<String> = pods
        .iter()
        .filter(|p| !done(p))
        .map(PodState::shown)
        .collect();
    Progress {
        ready: pods.len() - pending.len(),
        total: pods.len(),
        // No pod yet is pending too.
        pending: if pods.is_empty() {
            vec!["an istiod pod".to_owned()]
        } else {
            pending
        },
    }
}

async fn wait_for_pods(
    step: Step,
    spec: &FlowSpec,
    kube: &dyn Kube,
    what: &str,
    done: fn(&PodState) -> bool,
    events: &mut Events<'_>,
) -> Result<Vec<PodState>> {
    let revision = spec.revision.clone();
    let mut on_progress = |p: &Progress| {
        events(Event::Progress {
            step,
            message: format!("{what}: {p}"),
        });
    };
    poll_until(what, spec.install.wait, &mut on_progress, || {
        let revision = revision.clone();
        async move {
            let pods = istiod_pods(kube, &revision).await?;
            Ok(pods_progress(&pods, done))
        }
    })
    .await
    .map_err(kube_err(step))?;
    istiod_pods(kube, &spec.revision)
        .await
        .map_err(kube_err(step))
}

/// Step 9.
pub(super) async fn install(
    spec: &FlowSpec,
    ports: Ports<'_>,
    mode: Mode,
    events: &mut Events<'_>,
) -> Result<StepReport> {
    let step = Step::Install;
    let mut entry = StepReport::new(step, StepStatus::Done, "");
    let desired = desired_operator(spec);
    if let Some(path) = &spec.install.manifest {
        let yaml = install::to_yaml(&desired).map_err(|source| Error::Install { step, source })?;
        entry
            .changes
            .push(write_file(step, path, yaml.as_bytes(), mode)?);
    }
    if spec.install.method == InstallMethod::Manual {
        let shown = spec.install.manifest.as_deref().map_or_else(
            || "the rendered file".to_owned(),
            |p| p.display().to_string(),
        );
        entry.detail = format!(
            "rendered only (install.method = manual): run `istioctl install -y -f {shown}`"
        );
        return Ok(entry);
    }
    let kube = ports.kube(step)?;
    let object = installed_ref(&spec.revision);
    let installed = kube.get(&object).await.map_err(kube_err(step))?;
    let (outcome, differences) = match &installed {
        None => (Outcome::create(mode), Vec::new()),
        Some(live) => {
            let diff = install::install_differences(&desired, live);
            if diff.is_empty() {
                (Outcome::Unchanged, diff)
            } else {
                (Outcome::update(mode), diff)
            }
        }
    };
    entry.changes.push(Change {
        plane: Plane::Cluster,
        object: object.to_string(),
        outcome,
        differences,
    });
    if mode.is_dry_run() {
        entry.detail = format!(
            "profile {}, revision {}",
            spec.install.profile(),
            spec.revision
        );
        return Ok(entry);
    }
    let port = ports.installer.ok_or(Error::NotConnected {
        step,
        backend: "an installer (istioctl)",
    })?;
    if outcome.is_change() {
        events(Event::Progress {
            step,
            message: format!("installing with {}", port.describe()),
        });
        port.install(&desired)
            .await
            .map_err(|source| Error::Install { step, source })?;
    }
    // The guide's WAIT_FOR_RESOURCES_TIMEOUT: istiod runs but is not ready until step 10.
    let pods = wait_for_pods(
        step,
        spec,
        kube,
        "istiod pods running",
        |p| p.running,
        events,
    )
    .await?;
    entry.detail = format!(
        "{} ({}); {}",
        port.describe(),
        pods.iter()
            .map(PodState::shown)
            .collect::<Vec<_>>()
            .join(", "),
        if pods.iter().all(PodState::all_ready) {
            "ready"
        } else {
            "waiting for its CA certificate (step 10)"
        }
    );
    Ok(entry)
}

fn write_file(step: Step, path: &Path, contents: &[u8], mode: Mode) -> Result<Change> {
    let outcome = match std::fs::read(path) {
        Ok(existing) if existing == contents => Outcome::Unchanged,
        Ok(_) => Outcome::update(mode),
        Err(_) => Outcome::create(mode),
    };
    if outcome.is_change() && !mode.is_dry_run() {
        let failed = |source| Error::WriteFile {
            step,
            path: path.to_owned(),
            source,
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(failed)?;
        }
        mesh_common::fs::write_atomic(path, contents, 0o644).map_err(failed)?;
    }
    Ok(Change {
        plane: Plane::Files,
        object: path.display().to_string(),
        outcome,
        differences: Vec::new(),
    })
}

/// True when istiod is installed for the revision (the recorded `IstioOperator`, or its pods).
async fn is_installed(step: Step, spec: &FlowSpec, kube: &dyn Kube) -> Result<bool> {
    if kube
        .get(&installed_ref(&spec.revision))
        .await
        .map_err(kube_err(step))?
        .is_some()
    {
        return Ok(true);
    }
    Ok(!istiod_pods(kube, &spec.revision)
        .await
        .map_err(kube_err(step))?
        .is_empty())
}

fn root_of(step: Step, spec: &FlowSpec) -> Result<Certificate> {
    let bytes = spec.root_cert.as_deref().ok_or(Error::MissingInput {
        step,
        what: "the root CA certificate",
        hint: "set root-ca.cert",
    })?;
    Certificate::parse(bytes).map_err(|source| Error::Ca { step, source })
}

/// Step 10.
#[expect(
    clippy::too_many_lines,
    reason = "the hand-off read top to bottom: CSR, decrypt, review, sign, Secret, wait"
)]
pub(super) async fn sign_ca(
    spec: &FlowSpec,
    ports: Ports<'_>,
    mode: Mode,
    events: &mut Events<'_>,
) -> Result<StepReport> {
    let step = Step::SignCa;
    let ca_err = |source| Error::Ca { step, source };
    let kube = ports.kube(step)?;
    if !is_installed(step, spec, kube).await? {
        return Ok(blocked(
            step,
            "istiod is not installed yet; step 9 installs it and istiod then writes its CSR",
        ));
    }
    let csr_ref = ObjectRef::namespaced(Kind::Secret, super::ISTIO_NAMESPACE, CA_CSR_SECRET);
    let csr_secret = csr_secret(spec, kube, &csr_ref, mode, events).await?;
    let Some(csr_secret) = csr_secret else {
        return Ok(blocked(
            step,
            format!(
                "istiod has not written {csr_ref} yet (its discovery container does, once started)"
            ),
        ));
    };
    let encrypted = EncryptedCsr::from_secret(&csr_secret).map_err(kube_err(step))?;
    let kms = ports.kms.ok_or(Error::NotConnected {
        step,
        backend: "the HSM (to decrypt istiod's CSR)",
    })?;
    let kek_id =
        KekId::new(encrypted.kek_id.clone()).map_err(|source| Error::Hsm { step, source })?;
    let csr_pem = kms
        .authenticated_decrypt(AuthenticatedDecryptRequest {
            kek_id,
            encrypted_dek: encrypted.encrypted_dek.clone(),
            ciphertext: encrypted.encrypted_csr.clone(),
            aad: encrypted.csr_id.clone(),
        })
        .await
        .map_err(|source| Error::Hsm { step, source })?;
    let policy =
        ca_signing::CsrPolicy::for_trust_domain(&spec.install.trust_domain).map_err(ca_err)?;
    let reviewed =
        ca_signing::review_csr(&csr_pem, &policy, CsrPurpose::IstiodCa).map_err(ca_err)?;
    let review = reviewed.report();
    events(Event::Progress {
        step,
        message: format!(
            "CSR {}: {}, {} key {}",
            String::from_utf8_lossy(&encrypted.csr_id),
            review.subject,
            review.public_key.kind,
            review.public_key.sha256_fingerprint
        ),
    });
    let root = root_of(step, spec)?;

    // Already signed for this very CSR key and chaining to this root: nothing to do.
    let (cert_ref, live_chain) = live_chain(step, kube).await?;
    let current = |chain: &CertChain| {
        ca_signing::check_cert_matches_csr(chain.first(), reviewed.csr()).is_ok()
            && chain.verify(Some(&root)).is_ok()
    };
    let chain = match live_chain {
        Some(chain) if current(&chain) => chain,
        existing if mode.is_dry_run() => {
            let mut entry = StepReport::new(step, StepStatus::Done, "");
            entry.changes.push(Change {
                plane: Plane::Cluster,
                object: cert_ref.to_string(),
                outcome: if existing.is_some() {
                    Outcome::WouldUpdate
                } else {
                    Outcome::WouldCreate
                },
                differences: Vec::new(),
            });
            entry.detail = format!(
                "would sign {} with the root {}",
                review.subject,
                root.subject()
            );
            return Ok(entry);
        }
        _ => {
            let signer = ports.root_signer.ok_or(Error::MissingInput {
            step,
            what: "the root CA key",
            hint: "set root-ca.key ({ file = \"...\" } or { hsm = \"<key pair id>\" }), or sign \
                   offline with `meshca ca sign` and create Secret istio-ca-cert from its output",
        })?;
            let profile = IstiodCaProfile::default();
            let issued =
                ca_signing::sign_istiod_ca(&reviewed, &root, signer, &profile).map_err(ca_err)?;
            let chain = CertChain::build(&issued, &root).map_err(ca_err)?;
            chain.verify(Some(&root)).map_err(ca_err)?;
            ca_signing::check_cert_matches_csr(chain.first(), reviewed.csr()).map_err(ca_err)?;
            chain
        }
    };
    let mut entry = StepReport::new(step, StepStatus::Done, "");
    let pem =
        CertificatePem::parse(chain.to_pem(), "the istiod CA chain").map_err(kube_err(step))?;
    let report = k8s_bootstrap::ca_secrets::ensure_ca_cert_secret(kube, &pem, mode)
        .await
        .map_err(kube_err(step))?;
    super::kube_changes(report, &mut entry);
    if let Some(dir) = &spec.install.out_dir {
        for (name, bytes) in [
            (ca_signing::ops::files::CA_CERT, chain.first().pem()),
            (ca_signing::ops::files::CERT_CHAIN, chain.to_pem()),
            (ca_signing::ops::files::ROOT_CERT, root.pem()),
        ] {
            entry
                .changes
                .push(write_file(step, &dir.join(name), bytes.as_bytes(), mode)?);
        }
    }
    let pods = wait_for_pods(
        step,
        spec,
        kube,
        "istiod loading its CA certificate",
        PodState::all_ready,
        events,
    )
    .await?;
    entry.detail = format!(
        "{} (serial {}) signed by {}; {}",
        chain.first().subject(),
        chain.first().serial_hex(),
        root.subject(),
        pods.iter()
            .map(PodState::shown)
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(entry)
}

/// Secret `istio-ca-cert-csr`: waited for (with progress) when applying, read once in a plan.
async fn csr_secret(
    spec: &FlowSpec,
    kube: &dyn Kube,
    csr_ref: &ObjectRef,
    mode: Mode,
    events: &mut Events<'_>,
) -> Result<Option<Value>> {
    let step = Step::SignCa;
    if !mode.is_dry_run() {
        let mut on_progress = |p: &Progress| {
            if !p.is_done() {
                events(Event::Progress {
                    step,
                    message: format!("waiting for istiod to write {csr_ref}"),
                });
            }
        };
        poll_until(
            &csr_ref.to_string(),
            spec.install.wait,
            &mut on_progress,
            || async {
                let found = kube.get(csr_ref).await?.is_some();
                Ok(Progress {
                    ready: usize::from(found),
                    total: 1,
                    pending: if found {
                        Vec::new()
                    } else {
                        vec![csr_ref.to_string()]
                    },
                })
            },
        )
        .await
        .map_err(kube_err(step))?;
    }
    kube.get(csr_ref).await.map_err(kube_err(step))
}

/// Secret `istio-ca-cert` and the chain it holds (`None` when absent or unreadable).
async fn live_chain(step: Step, kube: &dyn Kube) -> Result<(ObjectRef, Option<CertChain>)> {
    let object = ObjectRef::namespaced(Kind::Secret, super::ISTIO_NAMESPACE, CA_CERT_SECRET);
    let chain = kube
        .get(&object)
        .await
        .map_err(kube_err(step))?
        .and_then(|s| chain_of_secret(&s));
    Ok((object, chain))
}

fn chain_of_secret(secret: &Value) -> Option<CertChain> {
    use base64::Engine as _;
    let b64 = secret["data"][CERT_CHAIN_KEY].as_str()?;
    let pem = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    CertChain::parse_pem(&pem).ok()
}

fn check(
    name: impl Into<String>,
    ok: bool,
    required: bool,
    detail: impl Into<String>,
) -> PreflightCheck {
    PreflightCheck {
        name: name.into(),
        ok,
        required,
        detail: detail.into(),
        failure: super::CheckFailure::Check,
    }
}

fn expiry_check(what: &str, cert: &Certificate) -> PreflightCheck {
    let left = cert.not_after() - time::OffsetDateTime::now_utc();
    let days = left.whole_days();
    let warn = Duration::try_from(left).map_or(true, |d| d < EXPIRY_WARNING);
    check(
        format!("{what} valid for {days} more day(s)"),
        !warn,
        days < 0,
        if warn {
            format!(
                "{} expires {}; renew it (step 10 signs a new istiod CA)",
                cert.subject(),
                cert.not_after()
            )
        } else {
            String::new()
        },
    )
}

/// Step 11.
pub(super) async fn verify(spec: &FlowSpec, ports: Ports<'_>) -> Result<StepReport> {
    let step = Step::Verify;
    let kube = ports.kube(step)?;
    if !is_installed(step, spec, kube).await? {
        return Ok(blocked(step, "istiod is not installed yet (step 9)"));
    }
    let mut entry = StepReport::new(step, StepStatus::Done, "");
    let pods = istiod_pods(kube, &spec.revision)
        .await
        .map_err(kube_err(step))?;
    let ready = !pods.is_empty() && pods.iter().all(PodState::all_ready);
    entry.checks.push(check(
        format!("istiod-{} pods ready", spec.revision),
        ready,
        true,
        if ready {
            pods.iter().map(PodState::shown).collect::<Vec<_>>().join(", ")
        } else {
            format!(
                "{}; istiod becomes ready once Secret {CA_CERT_SECRET} holds a chain it accepts (step 10)",
                if pods.is_empty() {
                    "no istiod pod".to_owned()
                } else {
                    pods.iter().map(PodState::shown).collect::<Vec<_>>().join(", ")
                }
            )
        },
    ));
    let others = kube
        .list(&ListQuery::in_namespace(Kind::Pod, super::ISTIO_NAMESPACE))
        .await
        .map_err(kube_err(step))?;
    let not_ready: Vec<String> = others
        .iter()
        .map(PodState::of)
        .filter(|p| !p.all_ready() && !pods.contains(p))
        .map(|p| p.shown())
        .collect();
    entry.checks.push(check(
        "other istio-system pods ready",
        not_ready.is_empty(),
        false,
        not_ready.join(", "),
    ));

    let root = root_of(step, spec)?;
    let (cert_ref, chain) = live_chain(step, kube).await?;
    let Some(chain) = chain else {
        entry.checks.push(check(
            format!("Secret {cert_ref} holds the istiod CA chain"),
            false,
            true,
            "missing or unreadable; step 10 creates it",
        ));
        entry.status = StepStatus::Failed;
        return Ok(entry);
    };
    let verified = chain.verify(Some(&root));
    entry.checks.push(check(
        format!("{cert_ref} chains to the root {}", root.subject()),
        verified.is_ok(),
        true,
        verified
            .as_ref()
            .err()
            .map(ToString::to_string)
            .unwrap_or_default(),
    ));
    entry
        .checks
        .push(expiry_check("the istiod CA certificate", chain.first()));
    entry
        .checks
        .push(expiry_check("the root certificate", &root));

    match ports.probe {
        Some(probe) => {
            let target = probe.target();
            let outcome = match probe.server_chain().await {
                Ok(pem) => probe_chain_matches(pem.as_bytes(), &chain, &root),
                Err(e) => Err(e.to_string()),
            };
            entry.checks.push(check(
                format!("mTLS (ALPN istio) to {target} presents a chain to the istiod CA"),
                outcome.is_ok(),
                true,
                outcome.as_ref().map_or_else(Clone::clone, Clone::clone),
            ));
        }
        None => "no TLS probe configured".clone_into(&mut entry.detail),
    }
    if entry.checks.iter().any(|c| c.required && !c.ok) {
        entry.status = StepStatus::Failed;
    } else if entry.detail.is_empty() {
        entry.detail = format!(
            "istiod CA {} chains to {}",
            chain.first().subject(),
            root.subject()
        );
    }
    Ok(entry)
}

/// The workload chain the probe saw must be issued by the istiod CA of `chain`, and the whole
/// must verify to `root`.
fn probe_chain_matches(
    pem: &[u8],
    chain: &CertChain,
    root: &Certificate,
) -> std::result::Result<String, String> {
    let certs = Certificate::parse_pem_bundle(pem).map_err(|e| e.to_string())?;
    let leaf = certs.first().ok_or("the server presented no certificate")?;
    if leaf.is_ca() || !leaf.is_issued_by(chain.first()) {
        return Err(format!(
            "the server's certificate {} is not a workload certificate of the istiod CA {}",
            leaf.subject(),
            chain.first().subject()
        ));
    }
    chain.verify(Some(root)).map_err(|e| e.to_string())?;
    chain.verify_leaf(leaf).map_err(|e| e.to_string())?;
    Ok(format!(
        "{} issued by {}",
        leaf.sans()
            .first()
            .map_or_else(|| leaf.subject().to_owned(), ToString::to_string),
        chain.first().subject()
    ))
}
