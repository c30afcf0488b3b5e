//! stagepass: a credential and Backstage-catalog agent for dev containers.
//!
//! Map of the crate (data flows one way, top to bottom; no module reaches back up):
//!
//! - [`config`]: layered TOML config (`/etc`, `~/.config`, `STAGEPASS_*`, flags) parsed into typed values.
//! - [`lockfile`]: kernel file locks (single instance, one refresh per grant across processes).
//! - [`paths`]: where state, runtime and config files live (XDG with container fallbacks).
//! - [`secret`]: the [`secret::Secret`] newtype every token and key travels in; never printed.
//! - [`store`]: refresh tokens at rest (persistent keyring, else a locked-down file store).
//! - [`broker`]: profiles, OAuth flows, the per-profile cache and single-flight refresher.
//! - [`attest`]: which process is calling (SO_PEERCRED, /proc), once per connection.
//! - [`policy`]: per-profile caller rules, maximum login age and token lifetime.
//! - [`audit`]: the JSONL audit log of every credential handed out or refused.
//! - [`api`]: the hardened local HTTP API on loopback TCP and a Unix socket.
//! - [`adapters`]: tool protocols (git credential helper, AWS container credentials, kubectl, docker).
//! - [`catalog`]: catalog file discovery, watch, validation, ownership diff, outbox, Backstage client.
//! - [`mcp`]: `stagepass mcp`, an MCP server over stdio with the catalog and ownership (no token).
//! - [`cli`]: the `stagepass` subcommands; thin clients of the agent's Unix socket.
//! - [`daemon`]: `stagepass agent`, which wires the pieces together and owns their lifetimes.

pub mod adapters;
pub mod api;
pub mod atomic_file;
pub mod attest;
pub mod audit;
pub mod aws;
pub mod broker;
pub mod catalog;
pub mod cleartext;
pub mod cli;
pub mod client;
pub mod config;
pub mod daemon;
pub mod lockfile;
pub mod logging;
pub mod mcp;
pub mod paths;
pub mod policy;
pub mod protocol;
pub mod secret;
pub mod store;
pub mod timefmt;

#[cfg(test)]
mod layering;
#[cfg(test)]
mod proptests;
#[cfg(test)]
mod test_fs;
