//! Runnable examples of mesh-hsm's libraries, one scenario per file, each against the sandbox's
//! real components. Run one with `cargo run -p examples --example <name>`; `cargo xtask test`
//! runs them all.
