//! The whole test bed: IdP + git host + Backstage.
//!
//! cargo-nextest runs every test in its own process, so "share Backstage across tests"
//! cannot be an in-process static. `tests/run` starts one bed per run with
//! `tests/peers/bed.mjs`, which writes a JSON file (the "bed file") with the peers' URLs;
//! `STAGEPASS_TEST_BED_FILE` points at it. [`Bed::get`] connects to that bed, or, when the
//! variable is absent (e.g. `cargo nextest run -p stagepass-e2e smoke` by hand), starts a
//! private bed that this test owns and stops on drop.
//!
//! The shared bed is shared: use unique repository and entity names
//! ([`crate::support::unique_name`]), do not set IdP faults or TTLs on it, and do not count
//! its IdP calls. Tests that need exact IdP counters or faults start a private [`Idp`].

use std::path::Path;

use serde::Deserialize;

use crate::backstage::{Backstage, BackstageOptions};
use crate::error::{HarnessError, Result};
use crate::git_host::GitHost;
use crate::idp::{Idp, IdpOptions};

/// Environment variable naming the bed file of the shared bed.
pub const BED_FILE_ENV: &str = "STAGEPASS_TEST_BED_FILE";

/// One peer's entry in the bed file.
#[derive(Debug, Clone, Deserialize)]
pub struct BedPeer {
    /// Base URL.
    pub url: String,
    /// PID of the peer process.
    pub pid: u32,
    /// Backstage's static token (Backstage only).
    pub static_token: Option<String>,
    /// The IdP's separate control port (IdP only).
    pub control_url: Option<String>,
    /// Backstage's static OAuth clients (Backstage only).
    #[serde(default)]
    pub oauth_clients: Vec<crate::backstage::OauthClient>,
    /// Backstage only: the URL template of per-workspace Client ID Metadata Documents
    /// (`http://127.0.0.1:PORT/stagepass/clients/{workspace}.json`), allowed by a pattern.
    #[serde(default)]
    pub client_metadata_template: Option<String>,
}

/// The bed file written by `tests/peers/bed.mjs`.
#[derive(Debug, Clone, Deserialize)]
pub struct BedFile {
    /// Format version (1).
    pub version: u32,
    /// PID of bed.mjs, the supervisor to stop.
    pub pid: u32,
    /// Directory holding each peer's log.
    pub log_dir: String,
    /// The IdP.
    pub idp: BedPeer,
    /// The git host.
    pub git: BedPeer,
    /// Backstage.
    pub backstage: BedPeer,
}

impl BedFile {
    /// Reads and parses a bed file.
    pub fn read(path: &Path) -> Result<BedFile> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| HarnessError::io(format!("reading bed file {}", path.display()), e))?;
        let bed: BedFile = serde_json::from_str(&text).map_err(|source| HarnessError::Json {
            what: format!("bed file {}", path.display()),
            source,
        })?;
        if bed.version != 1 {
            return Err(HarnessError::Other(format!(
                "bed file {} has version {}, expected 1",
                path.display(),
                bed.version
            )));
        }
        Ok(bed)
    }
}

/// IdP, git host and Backstage wired to each other.
#[derive(Debug)]
pub struct Bed {
    /// The IdP (shared or private).
    pub idp: Idp,
    /// The git host; token repositories trust the IdP.
    pub git: GitHost,
    /// Backstage; trusts the IdP and reads from the git host.
    pub backstage: Backstage,
    shared: bool,
}

impl Bed {
    /// The shared bed when `STAGEPASS_TEST_BED_FILE` is set, else a private one.
    pub async fn get() -> Result<Bed> {
        match std::env::var_os(BED_FILE_ENV) {
            Some(path) if !path.is_empty() => Self::connect(Path::new(&path)),
            _ => Self::start_private().await,
        }
    }

    /// Connects to the bed described by a bed file; fails clearly when the bed that wrote
    /// it is gone (a stale `STAGEPASS_TEST_BED_FILE`).
    pub fn connect(path: &Path) -> Result<Bed> {
        let file = BedFile::read(path)?;
        let alive = i32::try_from(file.pid)
            .ok()
            .and_then(rustix::process::Pid::from_raw)
            .is_some_and(|pid| rustix::process::test_kill_process(pid).is_ok());
        if !alive {
            return Err(HarnessError::Other(format!(
                "bed file {} belongs to a bed that is no longer running (pid {}); \
                 unset {BED_FILE_ENV} or start the bed again (tests/peers/bed.sh)",
                path.display(),
                file.pid
            )));
        }
        Ok(Bed {
            idp: Idp::connect(&file.idp.url, file.idp.control_url.as_deref())?,
            git: GitHost::connect(&file.git.url)?,
            backstage: Backstage::connect(
                &file.backstage.url,
                file.backstage.static_token.as_deref().unwrap_or_default(),
            )?
            .with_oauth_clients(file.backstage.oauth_clients.clone())
            .with_client_metadata_template(file.backstage.client_metadata_template.clone()),
            shared: true,
        })
    }

    /// Starts a private bed (IdP, then git host, then Backstage), stopped on drop.
    pub async fn start_private() -> Result<Bed> {
        let idp = Idp::start(IdpOptions::default()).await?;
        let git = GitHost::start(Some(idp.issuer())).await?;
        let backstage =
            Backstage::start(BackstageOptions::new(idp.issuer(), git.host_port())).await?;
        Ok(Bed {
            idp,
            git,
            backstage,
            shared: false,
        })
    }

    /// Whether this is the run's shared bed (do not set faults or count calls on it).
    pub fn is_shared(&self) -> bool {
        self.shared
    }
}
