//! Compiles proto/ with protox (pure Rust, no protoc) and generates tonic/prost code.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "crm/common/v1/common.proto",
    "crm/contact/v1/contact.proto",
    "crm/contact/v1/events.proto",
    "crm/events/v1/events.proto",
    "crm/pipeline/v1/pipeline.proto",
    "crm/pipeline/v1/events.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let descriptors = protox::compile(PROTOS, ["."])?;
    let descriptor_path = out_dir.join("crm_descriptor.bin");
    std::fs::write(&descriptor_path, prost::Message::encode_to_vec(&descriptors))?;
    tonic_prost_build::configure()
        // Ordered maps encode deterministically, so equal requests hash equal (idempotency keys).
        .btree_map(".")
        .skip_protoc_run()
        .compile_fds(descriptors)?;
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    Ok(())
}
