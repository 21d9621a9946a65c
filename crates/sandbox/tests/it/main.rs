//! Sandbox fixtures against the real SoftHSM2 module and a real OpenBao server.

mod openbao;
mod softhsm;
