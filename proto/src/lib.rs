//! Generated types and gRPC stubs of the CRM suite. Module paths mirror proto packages:
//! `crm.contact.v1` is [`crm::contact::v1`].

pub mod json;
pub mod options;

pub use prost;
pub use prost_reflect;
pub use prost_types;
pub use tonic;

/// Encoded `FileDescriptorSet` of every proto of the suite, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/crm_descriptor.bin"));

#[allow(clippy::all, unreachable_pub, missing_docs)]
pub mod google {
    pub mod api {
        include!(concat!(env!("OUT_DIR"), "/google.api.rs"));
    }
}

#[allow(clippy::all, unreachable_pub, missing_docs)]
pub mod crm {
    pub mod analytics {
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/crm.analytics.v1.rs"));
        }
    }
    pub mod common {
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/crm.common.v1.rs"));
        }
    }
    pub mod contact {
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/crm.contact.v1.rs"));
        }
    }
    pub mod events {
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/crm.events.v1.rs"));
        }
    }
    pub mod notification {
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/crm.notification.v1.rs"));
        }
    }
    pub mod pipeline {
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/crm.pipeline.v1.rs"));
        }
    }
}
