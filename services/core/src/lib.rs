//! Agentry's domain: resource names, the error model, validation and the pure logic
//! (JSON Schema configs, the instance state machine, page tokens, API key secrets) that
//! the store and the server share. Nothing here knows about SQL or gRPC.

pub mod absent;
pub mod agent;
pub mod apikey;
pub mod document;
/// The one error type (the `agentry-error` crate, which the wire crate shares).
pub use agentry_error as error;
pub mod instance;
pub mod json;
pub mod model;
pub mod names;
pub mod page;
pub mod port;
pub mod record;
pub mod run;
pub mod schema;
pub mod status;
pub mod time;
pub mod trace;
pub mod wake;

pub use error::{Error, FieldViolation, Reason, Result};
