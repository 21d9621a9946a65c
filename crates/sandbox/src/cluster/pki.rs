//! The cluster's certificates and keys: a CA, the API server's serving certificate, a client
//! certificate per identity, and the service-account token signing key.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

use crate::{Error, Result};

/// A client identity: its certificate's common name (the user) and organisations (groups).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Identity {
    /// File stem of its certificate and key, and kubeconfig.
    pub(crate) file: &'static str,
    pub(crate) user: &'static str,
    pub(crate) groups: &'static [&'static str],
}

/// A client certificate and key in PEM.
pub(crate) struct ClientCert {
    pub(crate) cert_pem: String,
    pub(crate) key_pem: String,
}

/// The files the components are started with.
pub(crate) struct Pki {
    pub(crate) ca_pem: String,
    pub(crate) ca_cert: PathBuf,
    pub(crate) ca_key: PathBuf,
    pub(crate) serving_cert: PathBuf,
    pub(crate) serving_key: PathBuf,
    pub(crate) service_account_key: PathBuf,
    pub(crate) service_account_public_key: PathBuf,
    issuer: CertifiedIssuer<'static, KeyPair>,
}

fn fail(what: &'static str) -> impl FnOnce(rcgen::Error) -> Error {
    move |e| Error::ClusterStart {
        reason: format!("creating {what}: {e}"),
        log: String::new(),
    }
}

impl Pki {
    /// Creates the CA, the serving certificate and the service-account key under `dir`.
    pub(crate) fn create(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(Error::io("creating the PKI directory", dir))?;
        let ca_key = KeyPair::generate().map_err(fail("the cluster CA key"))?;
        let ca_key_pem = ca_key.serialize_pem();
        let mut params =
            CertificateParams::new(Vec::<String>::new()).map_err(fail("the cluster CA"))?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "sandbox-cluster-ca");
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let issuer =
            CertifiedIssuer::self_signed(params, ca_key).map_err(fail("the cluster CA"))?;
        let ca_pem = issuer.pem();

        let serving_key = KeyPair::generate().map_err(fail("the serving key"))?;
        let mut params = CertificateParams::new(vec![
            "127.0.0.1".to_owned(),
            "localhost".to_owned(),
            "10.0.0.1".to_owned(),
            "kubernetes".to_owned(),
            "kubernetes.default".to_owned(),
            "kubernetes.default.svc".to_owned(),
            "kubernetes.default.svc.cluster.local".to_owned(),
        ])
        .map_err(fail("the serving certificate"))?;
        params
            .distinguished_name
            .push(DnType::CommonName, "kube-apiserver");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let serving = params
            .signed_by(&serving_key, &issuer)
            .map_err(fail("the serving certificate"))?;

        let sa_key = KeyPair::generate().map_err(fail("the service-account signing key"))?;

        let pki = Self {
            ca_pem: ca_pem.clone(),
            ca_cert: dir.join("ca.crt"),
            ca_key: dir.join("ca.key"),
            serving_cert: dir.join("apiserver.crt"),
            serving_key: dir.join("apiserver.key"),
            service_account_key: dir.join("service-account.key"),
            service_account_public_key: dir.join("service-account.pub"),
            issuer,
        };
        write_public(&pki.ca_cert, &ca_pem)?;
        crate::write_secret_file(&pki.ca_key, ca_key_pem.as_bytes())?;
        write_public(&pki.serving_cert, &serving.pem())?;
        crate::write_secret_file(&pki.serving_key, serving_key.serialize_pem().as_bytes())?;
        crate::write_secret_file(&pki.service_account_key, sa_key.serialize_pem().as_bytes())?;
        // The API server reads verification keys as public keys or RSA/EC private keys, not
        // PKCS#8: it gets the public half on its own.
        write_public(&pki.service_account_public_key, &sa_key.public_key_pem())?;
        Ok(pki)
    }

    /// A client certificate for `user` in `groups`, signed by the cluster CA (which the API
    /// server trusts through `--client-ca-file`).
    pub(crate) fn client(&self, user: &str, groups: &[&str]) -> Result<ClientCert> {
        let key = KeyPair::generate().map_err(fail("a client key"))?;
        let mut params =
            CertificateParams::new(Vec::<String>::new()).map_err(fail("a client certificate"))?;
        params.distinguished_name.push(DnType::CommonName, user);
        for group in groups {
            params
                .distinguished_name
                .push(DnType::OrganizationName, *group);
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(fail("a client certificate"))?;
        Ok(ClientCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

fn write_public(path: &Path, pem: &str) -> Result<()> {
    mesh_common::fs::write_atomic(path, pem.as_bytes(), 0o644)
        .map_err(Error::io("writing a certificate", path))
}
