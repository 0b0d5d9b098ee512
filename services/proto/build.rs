//! Compiles `proto/agentry/v1/*.proto` with protox (no system `protoc`) and generates the
//! prost messages, tonic clients and servers, and the encoded descriptor set used by
//! server reflection, and the [`RequestId`] impls of every request message.

use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let files: Vec<PathBuf> = std::fs::read_dir(root.join("agentry/v1"))?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    let mut files: Vec<PathBuf> = files
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "proto"))
        .collect();
    files.sort();
    println!(
        "cargo:rerun-if-changed={}",
        root.join("agentry/v1").display()
    );
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }

    let descriptors = protox::compile(&files, [&root])?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    std::fs::write(
        out.join("agentry_descriptor.bin"),
        prost::Message::encode_to_vec(&descriptors),
    )?;

    std::fs::write(out.join("request_ids.rs"), request_ids(&descriptors))?;

    tonic_prost_build::configure()
        // Maps encode in key order, so equal requests hash equally (idempotency keys).
        .btree_map(".")
        // Decode failures are the caller's bad input: INVALID_ARGUMENT, not INTERNAL.
        .codec_path("crate::codec::AgentryCodec")
        .compile_fds_with_config(descriptors, {
            let mut config = tonic_prost_build::Config::new();
            // `prost::Name` on every message: the codec finds a request's shape by name.
            config.enable_type_names();
            config
        })?;
    Ok(())
}

/// `impl RequestId` for every `agentry.v1` message: those with a `request_id` string
/// field return it, the others the empty string. Request logs read it without knowing
/// the message type.
fn request_ids(descriptors: &prost_types::FileDescriptorSet) -> String {
    let mut out = String::new();
    for file in &descriptors.file {
        if file.package() != "agentry.v1" {
            continue;
        }
        for message in &file.message_type {
            let has = message.field.iter().any(|f| {
                f.name() == "request_id"
                    && f.r#type() == prost_types::field_descriptor_proto::Type::String
            });
            let body = if has {
                "fn request_id(&self) -> &str { &self.request_id }"
            } else {
                ""
            };
            out.push_str(&format!(
                "impl crate::RequestId for crate::v1::{} {{ {body} }}\n",
                message.name()
            ));
        }
    }
    out
}
