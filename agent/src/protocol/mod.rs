//! The local API's wire contract, shared by the agent's server ([`crate::api`]) and its
//! clients ([`crate::client`], the CLI, the adapters, MCP): the files a client reads to find
//! and prove itself to the agent, and the messages both sides exchange. Types only, so
//! neither side depends on the other, and neither reads the other's JSON by string key.
//!
//! Answers never deny unknown fields (an older client reads a newer agent's answer), and
//! their optional fields read as `None` when missing. Where a lower layer owns a type that
//! crosses the wire (a profile's status, a login, the catalog's reports), it is re-exported
//! here rather than copied.

pub mod aws;
pub mod catalog;
pub mod endpoint;
pub mod error;
pub mod login;
pub mod secret_file;
pub mod status;
pub mod token;
pub mod version;

pub use aws::AwsErrorBody;
pub use catalog::{CatalogStatus, DiffReport, SyncReport};
pub use endpoint::EndpointFile;
pub use error::ErrorBody;
pub use login::{CallbackRequest, Empty, LoggedOut, LoginState};
pub use status::{CatalogSection, Health, Status};
pub use token::{InvalidateRequest, Invalidated, TokenAnswer};

#[cfg(test)]
mod tests;
