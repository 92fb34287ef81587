//! Generates the Rust types and gRPC stubs of `semclip/v1/semclip.proto` and the encoded
//! file descriptor set used by gRPC reflection. `protoc` comes from `protoc-bin-vendored`,
//! so no system installation is needed.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    std::env::set_var("PROTOC", protoc);

    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let proto = "semclip/v1/semclip.proto";
    println!("cargo:rerun-if-changed={proto}");

    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("semclip_descriptor.bin"))
        .compile_protos(&[proto], &["."])?;
    Ok(())
}
