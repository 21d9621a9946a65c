//! Compiles the protos with protox (pure Rust; no `protoc` needed).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/istio_v1.proto",
        "proto/k8s_v1beta1.proto",
        "proto/k8s_v2.proto",
        "proto/health.proto",
        "proto/signing_v1.proto",
    ];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let fds = protox::compile(protos, ["proto"])?;
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}
