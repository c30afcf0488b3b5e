//! The local API's wire contract, shared by the agent's server ([`crate::api`]) and its
//! clients ([`crate::client`], the CLI, the adapters, MCP): the files a client reads to find
//! and prove itself to the agent, and the messages both sides exchange. Types only, so
//! neither side depends on the other.

pub mod endpoint;
pub mod error;
pub mod secret_file;
pub mod version;

pub use endpoint::EndpointFile;
pub use error::ErrorBody;
