//! Generated code for the `agentry.v1` API, the encoded descriptor set that server
//! reflection serves, and the codec every service uses ([`codec`], with the
//! descriptor-guided request checks of [`scan`]), and the one mapping from errors to
//! statuses ([`status`]).

#[allow(clippy::all, missing_docs)]
pub mod agentry {
    pub mod v1 {
        tonic::include_proto!("agentry.v1");
    }
}

pub mod codec;
pub mod encoded;
pub mod scan;
pub mod status;

pub use agentry::v1;

/// Encoded `FileDescriptorSet` of every `agentry.v1` file and its imports.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/agentry_descriptor.bin"));

/// The `request_id` a request carries, for request logs: empty for messages without one.
pub trait RequestId {
    fn request_id(&self) -> &str {
        ""
    }
}

impl RequestId for () {}

include!(concat!(env!("OUT_DIR"), "/request_ids.rs"));
