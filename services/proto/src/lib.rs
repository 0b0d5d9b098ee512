//! Generated code for the `agentry.v1` API, plus the encoded descriptor set that server
//! reflection serves.

#![allow(clippy::all, missing_docs)]

pub mod agentry {
    pub mod v1 {
        tonic::include_proto!("agentry.v1");
    }
}

pub mod codec;

pub use agentry::v1;

/// Encoded `FileDescriptorSet` of every `agentry.v1` file and its imports.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/agentry_descriptor.bin"));
