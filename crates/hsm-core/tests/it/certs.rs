//! Software test certificates (rcgen): a root, an istiod-style intermediate, a leaf.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, date_time_ymd,
};

pub(crate) struct Pki {
    pub(crate) root_der: Vec<u8>,
    pub(crate) root_pem: String,
    pub(crate) int_der: Vec<u8>,
    pub(crate) int_pem: String,
    pub(crate) leaf_der: Vec<u8>,
}

pub(crate) fn ca_params(cn: &str, pathlen: Option<u8>) -> CertificateParams {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::OrganizationName, "Istio");
    p.distinguished_name.push(DnType::CommonName, cn);
    p.is_ca = IsCa::Ca(pathlen.map_or(
        BasicConstraints::Unconstrained,
        BasicConstraints::Constrained,
    ));
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p.not_before = date_time_ymd(2024, 1, 1);
    p.not_after = date_time_ymd(2090, 1, 1);
    p
}

/// A root `O=Istio, CN=<root_cn>`, an intermediate with `int_eku`, a leaf.
pub(crate) fn pki(
    root_cn: &str,
    int_eku: Vec<ExtendedKeyUsagePurpose>,
    int_not_after: (i32, u8, u8),
) -> Pki {
    let root_key = KeyPair::generate().unwrap();
    let root_params = ca_params(root_cn, None);
    let root = root_params.self_signed(&root_key).unwrap();
    let issuer = Issuer::new(root_params, &root_key);

    let int_key = KeyPair::generate().unwrap();
    let mut int_params = ca_params("Intermediate CA", Some(0));
    int_params.extended_key_usages = int_eku;
    int_params.not_after = date_time_ymd(int_not_after.0, int_not_after.1, int_not_after.2);
    let int = int_params.signed_by(&int_key, &issuer).unwrap();
    let int_issuer = Issuer::new(int_params, &int_key);

    let leaf_key = KeyPair::generate().unwrap();
    let mut leaf_params = CertificateParams::new(vec!["workload.example".to_owned()]).unwrap();
    leaf_params
        .distinguished_name
        .push(DnType::CommonName, "workload");
    leaf_params.not_before = date_time_ymd(2024, 1, 1);
    leaf_params.not_after = date_time_ymd(2080, 1, 1);
    let leaf = leaf_params.signed_by(&leaf_key, &int_issuer).unwrap();

    Pki {
        root_der: root.der().to_vec(),
        root_pem: root.pem(),
        int_der: int.der().to_vec(),
        int_pem: int.pem(),
        leaf_der: leaf.der().to_vec(),
    }
}
