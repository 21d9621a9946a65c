//! Where a cluster's files live and how each component is started: the flags envtest and kwok's
//! cluster tool use, on loopback ports of this machine.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::kubeconfig;
use super::pki::{Identity, Pki};
use super::{KWOK_NODE_ANNOTATION, SERVICE_ACCOUNT_ISSUER};
use crate::{Error, Result};

/// Audit every request once, when its response is complete, without bodies.
const AUDIT_POLICY: &str = "apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived, ResponseStarted]
rules:
  - level: Metadata
";

/// Free loopback ports for the components.
pub(crate) struct Ports {
    etcd: u16,
    etcd_peer: u16,
    pub(crate) apiserver: u16,
    controller_manager: u16,
    scheduler: u16,
    kwok: u16,
}

impl Ports {
    fn pick() -> Result<Self> {
        let error = || Error::io("finding a free port", Path::new("127.0.0.1:0"));
        // Hold every listener until all are picked, so no two components get the same port.
        let listeners = (0..6)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0").map_err(error()))
            .collect::<Result<Vec<_>>>()?;
        let ports = listeners
            .iter()
            .map(|l| l.local_addr().map(|a| a.port()).map_err(error()))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            etcd: ports[0],
            etcd_peer: ports[1],
            apiserver: ports[2],
            controller_manager: ports[3],
            scheduler: ports[4],
            kwok: ports[5],
        })
    }
}

/// The cluster directory: PKI, kubeconfigs, logs, etcd data, each component's certificates.
pub(crate) struct Layout {
    root: PathBuf,
    pub(crate) pki: Pki,
    pub(crate) ports: Ports,
}

impl Layout {
    pub(crate) fn create(root: &Path) -> Result<Self> {
        for sub in ["kubeconfig", "logs"] {
            let dir = root.join(sub);
            std::fs::create_dir_all(&dir)
                .map_err(Error::io("creating a cluster directory", &dir))?;
        }
        let policy = root.join("audit-policy.yaml");
        std::fs::write(&policy, AUDIT_POLICY)
            .map_err(Error::io("writing the audit policy", &policy))?;
        Ok(Self {
            root: root.to_owned(),
            pki: Pki::create(&root.join("pki"))?,
            ports: Ports::pick()?,
        })
    }

    pub(crate) fn server(&self) -> String {
        format!("https://127.0.0.1:{}", self.ports.apiserver)
    }

    pub(crate) fn log(&self, component: &str) -> PathBuf {
        self.root.join("logs").join(format!("{component}.log"))
    }

    /// Writes a kubeconfig with a fresh client certificate for `identity`.
    pub(crate) fn kubeconfig(&self, identity: Identity) -> Result<PathBuf> {
        self.kubeconfig_for(identity.file, identity.user, identity.groups)
    }

    /// Writes `kubeconfig/<file>` with a fresh client certificate for `user` in `groups`.
    pub(crate) fn kubeconfig_for(
        &self,
        file: &str,
        user: &str,
        groups: &[&str],
    ) -> Result<PathBuf> {
        let path = self.root.join("kubeconfig").join(file);
        let cert = self.pki.client(user, groups)?;
        kubeconfig::write(&path, &self.server(), &self.pki.ca_pem, user, &cert)?;
        Ok(path)
    }

    pub(crate) fn audit_log(&self) -> PathBuf {
        self.root.join("logs").join("audit.jsonl")
    }

    fn cert_dir(&self, component: &str) -> String {
        format!("--cert-dir={}", self.root.join(component).display())
    }

    pub(crate) fn etcd(&self, bin: &Path) -> Command {
        let client = format!("http://127.0.0.1:{}", self.ports.etcd);
        let peer = format!("http://127.0.0.1:{}", self.ports.etcd_peer);
        let mut cmd = Command::new(bin);
        cmd.arg(format!("--data-dir={}", self.root.join("etcd").display()))
            .arg("--name=sandbox")
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=sandbox={peer}"))
            // A throw-away store: durability buys nothing here and fsync costs seconds.
            .arg("--unsafe-no-fsync")
            .arg("--log-level=warn");
        cmd
    }

    pub(crate) fn apiserver(&self, bin: &Path) -> Command {
        let pki = &self.pki;
        let mut cmd = Command::new(bin);
        cmd.arg(format!(
            "--etcd-servers=http://127.0.0.1:{}",
            self.ports.etcd
        ))
        .arg("--bind-address=127.0.0.1")
        .arg("--advertise-address=127.0.0.1")
        // The `kubernetes` Service's endpoints may not be loopback addresses, and nothing in
        // the cluster's simulated network could reach them anyway.
        .arg("--endpoint-reconciler-type=none")
        .arg(format!("--secure-port={}", self.ports.apiserver))
        .arg(self.cert_dir("apiserver"))
        .arg(format!("--tls-cert-file={}", pki.serving_cert.display()))
        .arg(format!(
            "--tls-private-key-file={}",
            pki.serving_key.display()
        ))
        .arg(format!("--client-ca-file={}", pki.ca_cert.display()))
        .arg(format!("--service-account-issuer={SERVICE_ACCOUNT_ISSUER}"))
        .arg(format!(
            "--service-account-key-file={}",
            pki.service_account_public_key.display()
        ))
        .arg(format!(
            "--service-account-signing-key-file={}",
            pki.service_account_key.display()
        ))
        .arg("--authorization-mode=Node,RBAC")
        .arg("--service-cluster-ip-range=10.0.0.0/24")
        .arg("--allow-privileged=true")
        .arg("--profiling=false")
        // Every request, at metadata level: what tests read instead of a recording proxy.
        .arg(format!(
            "--audit-policy-file={}",
            self.root.join("audit-policy.yaml").display()
        ))
        .arg(format!("--audit-log-path={}", self.audit_log().display()))
        .arg("--audit-log-format=json")
        .arg("--audit-log-mode=blocking");
        cmd
    }

    /// `--kubeconfig` and the delegated authentication and authorisation kubeconfigs, all one.
    fn client_flags(&self, cmd: &mut Command, identity: Identity) -> Result<()> {
        let kubeconfig = self.kubeconfig(identity)?;
        for flag in [
            "kubeconfig",
            "authentication-kubeconfig",
            "authorization-kubeconfig",
        ] {
            cmd.arg(format!("--{flag}={}", kubeconfig.display()));
        }
        Ok(())
    }

    pub(crate) fn controller_manager(&self, bin: &Path, identity: Identity) -> Result<Command> {
        let pki = &self.pki;
        let mut cmd = Command::new(bin);
        self.client_flags(&mut cmd, identity)?;
        cmd.arg("--leader-elect=false")
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--secure-port={}", self.ports.controller_manager))
            .arg(self.cert_dir("controller-manager"))
            .arg(format!("--root-ca-file={}", pki.ca_cert.display()))
            .arg(format!(
                "--service-account-private-key-file={}",
                pki.service_account_key.display()
            ))
            .arg("--use-service-account-credentials=true")
            .arg(format!(
                "--cluster-signing-cert-file={}",
                pki.ca_cert.display()
            ))
            .arg(format!(
                "--cluster-signing-key-file={}",
                pki.ca_key.display()
            ))
            // No pod CIDRs to hand out. The node lifecycle controller stays: it lifts the
            // not-ready taint the API server puts on new nodes, and kwok renews the leases it
            // watches.
            .arg("--controllers=*,-nodeipam");
        Ok(cmd)
    }

    pub(crate) fn scheduler(&self, bin: &Path, identity: Identity) -> Result<Command> {
        let mut cmd = Command::new(bin);
        self.client_flags(&mut cmd, identity)?;
        cmd.arg("--leader-elect=false")
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--secure-port={}", self.ports.scheduler))
            .arg(self.cert_dir("scheduler"));
        Ok(cmd)
    }

    pub(crate) fn kwok(&self, bin: &Path, stages: &Path, identity: Identity) -> Result<Command> {
        let mut cmd = Command::new(bin);
        cmd.arg(format!(
            "--kubeconfig={}",
            self.kubeconfig(identity)?.display()
        ))
        .arg(format!("--config={}", stages.display()))
        .arg("--manage-all-nodes=false")
        .arg(format!(
            "--manage-nodes-with-annotation-selector={}={}",
            KWOK_NODE_ANNOTATION.0, KWOK_NODE_ANNOTATION.1
        ))
        .arg("--cidr=10.244.0.0/16")
        .arg("--node-ip=10.0.1.1")
        .arg("--node-lease-duration-seconds=40")
        .arg(format!("--server-address=127.0.0.1:{}", self.ports.kwok));
        Ok(cmd)
    }
}
