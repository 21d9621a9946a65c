//! hsm-core against a real SoftHSM2 token (one throw-away token per test).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers outside #[test] functions fail loudly"
)]

mod anchors;
mod certs;
mod envelope;
mod handles;
mod hsm_key;
mod istio;
mod kek;
mod kube;
mod ports;
mod token;
mod weak;

use std::sync::Arc;

use hsm_core::{HsmToken, TokenOptions};
use sandbox::SoftHsm;

/// A fresh token and a logged-in handle on it.
pub(crate) fn token(prefix: &str) -> (SoftHsm, Arc<HsmToken>) {
    let hsm = SoftHsm::new(prefix);
    let token = HsmToken::open(
        hsm.module(),
        hsm.label(),
        hsm.user_pin().clone(),
        TokenOptions::default(),
    )
    .unwrap();
    (hsm, Arc::new(token))
}

pub(crate) fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}
