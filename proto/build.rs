//! Compiles proto/ with protox (pure Rust, no protoc) and generates tonic/prost code.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "crm/common/v1/common.proto",
    "crm/common/v1/rules.proto",
    "crm/contact/v1/contact.proto",
    "crm/contact/v1/events.proto",
    "crm/events/v1/events.proto",
    "crm/pipeline/v1/pipeline.proto",
    "crm/pipeline/v1/events.proto",
    "crm/analytics/v1/analytics.proto",
    "crm/analytics/v1/events.proto",
    "crm/notification/v1/notification.proto",
    "crm/notification/v1/events.proto",
];

/// Google API annotations (HTTP rules, field behaviour), vendored: imported by the protos above.
const VENDORED: &[&str] = &[
    "google/api/annotations.proto",
    "google/api/field_behavior.proto",
    "google/api/http.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let mut compiler = protox::Compiler::new(["."])?;
    compiler
        .include_imports(true)
        .include_source_info(true)
        .open_files(PROTOS)?;
    // Encoded by protox itself: prost's FileDescriptorSet would drop the custom options (the
    // HTTP rules and field behaviours the gateway reads).
    std::fs::write(
        out_dir.join("crm_descriptor.bin"),
        compiler.encode_file_descriptor_set(),
    )?;
    let descriptors = compiler.file_descriptor_set();
    // Every message knows its fully qualified name (`prost::Name`): events are typed by it.
    let mut config = tonic_prost_build::Config::new();
    config.enable_type_names();
    tonic_prost_build::configure()
        // Ordered maps encode deterministically, so equal requests hash equal (idempotency keys).
        .btree_map(".")
        .skip_protoc_run()
        .compile_fds_with_config(descriptors, config)?;
    for proto in PROTOS.iter().chain(VENDORED) {
        println!("cargo:rerun-if-changed={proto}");
    }
    Ok(())
}
