//! `stagepass doctor`: checks the setup one item at a time, each failure with its fix.

use crate::client::{Client, ClientError};
use crate::config::Config;
use crate::paths::Paths;
use crate::protocol::status::ProfileState;
use crate::protocol::{EndpointFile, Status};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

/// Clock skew against the IdP above which tokens look expired or not yet valid.
const MAX_SKEW: Duration = Duration::from_secs(30);
/// Timeout of each network check.
const NET_TIMEOUT: Duration = Duration::from_secs(5);

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Fine.
    Ok,
    /// Works, but something is off.
    Warn,
    /// Broken.
    Fail,
    /// Does not apply here.
    Skip,
}

/// One check's result.
#[derive(Debug, Clone)]
pub struct Check {
    /// What was checked.
    pub name: String,
    /// How it went.
    pub level: Level,
    /// What was found.
    pub detail: String,
    /// What to do about it.
    pub fix: Option<String>,
}

fn check(name: &str, level: Level, detail: impl Into<String>, fix: Option<&str>) -> Check {
    Check {
        name: name.into(),
        level,
        detail: detail.into(),
        fix: fix.map(str::to_string),
    }
}

/// Runs every check, prints them, and returns 69 when the agent is down, 1 on another failure.
pub async fn run(config: &Config, paths: &Paths) -> ExitCode {
    let mut checks = Vec::new();
    let status = agent_check(paths, &mut checks).await;
    checks.push(socket_check(paths));
    checks.push(port_check(paths).await);
    checks.push(secret_check(paths));
    checks.push(store_check(status.as_ref()));
    checks.extend(grant_age_checks(status.as_ref()));
    let http = reqwest::Client::builder().timeout(NET_TIMEOUT).build().ok();
    checks.extend(idp_checks(config, http.as_ref()).await);
    checks.push(backstage_check(config, http.as_ref()).await);
    checks.push(codespaces_check());
    checks.push(forward_check(
        config,
        &std::env::current_dir().unwrap_or_default(),
        Path::new(FEATURE_METADATA),
    ));
    let mut out = String::new();
    for c in &checks {
        let tag = match c.level {
            Level::Ok => "[ok]  ",
            Level::Warn => "[warn]",
            Level::Fail => "[FAIL]",
            Level::Skip => "[skip]",
        };
        out.push_str(&format!("{tag} {}: {}\n", c.name, c.detail));
        if let (Some(fix), Level::Fail | Level::Warn) = (&c.fix, c.level) {
            out.push_str(&format!("       fix: {fix}\n"));
        }
    }
    super::output::print_line(out.trim_end());
    if status.is_none() {
        ExitCode::from(crate::cli::EXIT_AGENT_DOWN)
    } else if checks.iter().any(|c| c.level == Level::Fail) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

async fn agent_check(paths: &Paths, checks: &mut Vec<Check>) -> Option<Status> {
    const NAME: &str = "agent running";
    const FIX: &str = "start it with `stagepass agent` (the dev container entrypoint starts it at every container start; run `stagepass agent` in a terminal to see why it stops)";
    let answer = match Client::new(paths) {
        Ok(c) => c.status().await,
        Err(e) => Err(e),
    };
    match answer {
        Ok(v) => {
            checks.push(check(
                NAME,
                Level::Ok,
                format!("pid {}, version {}", v.agent.pid, v.agent.version),
                None,
            ));
            Some(v)
        }
        Err(e) => {
            let held = paths.lock().exists()
                && matches!(
                    crate::daemon::acquire_lock(&paths.lock()),
                    Err(crate::daemon::LockError::Held(_))
                );
            let (detail, fix) = match (&e, held) {
                (_, true) => (
                    format!(
                        "an agent holds the lock {} but does not answer: {e}",
                        paths.lock().display()
                    ),
                    "it may be starting or stuck; look at its log, or stop it (kill its pid) and start `stagepass agent` again",
                ),
                (ClientError::NotRunning(why), false) => (format!("not running ({why})"), FIX),
                (other, false) => (other.to_string(), FIX),
            };
            checks.push(check(NAME, Level::Fail, detail, Some(fix)));
            None
        }
    }
}

fn socket_check(paths: &Paths) -> Check {
    const NAME: &str = "unix socket";
    let sock = paths.socket();
    match std::fs::symlink_metadata(&sock) {
        Ok(m)
            if m.file_type().is_socket()
                && m.uid() == crate::paths::current_uid()
                && m.mode() & 0o077 == 0 =>
        {
            check(
                NAME,
                Level::Ok,
                format!("{} (0600, ours)", sock.display()),
                None,
            )
        }
        Ok(m) => check(
            NAME,
            Level::Fail,
            format!(
                "{} has mode {:o}, uid {}",
                sock.display(),
                m.mode() & 0o777,
                m.uid()
            ),
            Some("stop the agent, remove the runtime dir, start the agent again"),
        ),
        Err(_) => check(
            NAME,
            Level::Fail,
            format!("no socket at {}", sock.display()),
            Some("start the agent (or set [api] unix_socket = true if it was turned off)"),
        ),
    }
}

async fn port_check(paths: &Paths) -> Check {
    const NAME: &str = "tcp port";
    let Some(ep) = EndpointFile::read(paths) else {
        return check(
            NAME,
            Level::Fail,
            format!("no {}", paths.endpoint().display()),
            Some("start the agent; it writes the bound port there"),
        );
    };
    let Some(port) = ep.port else {
        return check(
            NAME,
            Level::Skip,
            "TCP is turned off ([api] tcp = false)",
            None,
        );
    };
    match tokio::time::timeout(
        NET_TIMEOUT,
        tokio::net::TcpStream::connect(("127.0.0.1", port)),
    )
    .await
    {
        Ok(Ok(_)) => check(NAME, Level::Ok, format!("127.0.0.1:{port} accepts"), None),
        _ => check(
            NAME,
            Level::Fail,
            format!("127.0.0.1:{port} does not accept connections"),
            Some("restart the agent; if the port is taken by another program set [api] port = 0"),
        ),
    }
}

fn secret_check(paths: &Paths) -> Check {
    const NAME: &str = "api secret";
    match crate::protocol::secret_file::read(&paths.api_secret()) {
        Ok(_) => check(
            NAME,
            Level::Ok,
            format!("{} (0600, 256 bits)", paths.api_secret().display()),
            None,
        ),
        Err(e) => check(
            NAME,
            Level::Fail,
            e.to_string(),
            Some("restart the agent; it writes a fresh secret at every start"),
        ),
    }
}

fn store_check(status: Option<&Status>) -> Check {
    const NAME: &str = "store backend";
    let Some(store) = status.map(|s| &s.store) else {
        return check(NAME, Level::Skip, "agent not running", None);
    };
    check(
        NAME,
        Level::Ok,
        format!("{} ({})", store.backend, store.detail),
        None,
    )
}

/// Profiles whose login ran past their `policy.max_grant_age` (issue 11): one warning each,
/// with the agent's reason and the command that renews the login.
fn grant_age_checks(status: Option<&Status>) -> Vec<Check> {
    let Some(status) = status else {
        return Vec::new();
    };
    status
        .profiles
        .iter()
        .filter(|p| p.state == ProfileState::LoginRequired)
        .filter_map(|p| {
            let reason = p.reason.as_deref()?;
            if !reason.contains("max_grant_age") {
                return None;
            }
            let name = &p.profile;
            Some(Check {
                name: format!("login age of {name}"),
                level: Level::Warn,
                detail: reason.to_string(),
                fix: Some(format!("stagepass login {name}")),
            })
        })
        .collect()
}

async fn idp_checks(config: &Config, http: Option<&reqwest::Client>) -> Vec<Check> {
    let mut issuers: Vec<&str> = config
        .profiles
        .values()
        .filter_map(|p| p.issuer.as_ref().map(crate::config::HttpUrl::as_str))
        .collect();
    issuers.sort_unstable();
    issuers.dedup();
    if issuers.is_empty() {
        return vec![check(
            "identity provider",
            Level::Skip,
            "no profile names an issuer",
            None,
        )];
    }
    let Some(http) = http else {
        return vec![check(
            "identity provider",
            Level::Fail,
            "cannot build an HTTP client",
            None,
        )];
    };
    let mut out = Vec::new();
    for issuer in issuers {
        let url = format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        );
        let name = format!("IdP discovery {issuer}");
        let sent = SystemTime::now();
        match http.get(&url).send().await {
            Ok(r) if r.status().is_success() => {
                let date = r
                    .headers()
                    .get(http::header::DATE)
                    .and_then(|d| d.to_str().ok())
                    .and_then(parse_http_date);
                out.push(check(&name, Level::Ok, format!("{url} answers"), None));
                out.push(skew_check(issuer, date, sent, SystemTime::now()));
            }
            Ok(r) => out.push(check(
                &name,
                Level::Fail,
                format!("{url} answered HTTP {}", r.status().as_u16()),
                Some("check the profile's issuer URL in the config (it must be the exact issuer)"),
            )),
            Err(e) => out.push(check(
                &name,
                Level::Fail,
                format!(
                    "{url}: {}",
                    if e.is_timeout() {
                        "timed out".to_string()
                    } else {
                        e.to_string()
                    }
                ),
                Some("check network access to the IdP (proxy, VPN, DNS) and the issuer URL"),
            )),
        }
    }
    out
}

/// Compares our clock with the IdP's `Date` header, taken halfway through the request.
pub fn skew_check(
    issuer: &str,
    date: Option<SystemTime>,
    sent: SystemTime,
    received: SystemTime,
) -> Check {
    let name = format!("clock skew vs {issuer}");
    let Some(date) = date else {
        return check(
            &name,
            Level::Skip,
            "the IdP sent no usable Date header",
            None,
        );
    };
    let mid = sent + received.duration_since(sent).unwrap_or_default() / 2;
    let (skew, ahead) = match mid.duration_since(date) {
        Ok(d) => (d, "ahead of"),
        Err(e) => (e.duration(), "behind"),
    };
    // Date has whole seconds: allow one second of rounding.
    let secs = skew.as_secs();
    if skew <= MAX_SKEW {
        check(&name, Level::Ok, format!("{secs}s"), None)
    } else {
        check(
            &name,
            Level::Fail,
            format!(
                "this machine is {secs}s {ahead} the IdP; tokens will look expired or not yet valid"
            ),
            Some(
                "sync the clock (host NTP; Docker Desktop/WSL: restart the VM or run `hwclock -s`)",
            ),
        )
    }
}

/// Parses an HTTP date (`Sat, 28 Nov 2026 23:33:40 GMT`).
pub fn parse_http_date(s: &str) -> Option<SystemTime> {
    let format = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    let dt = time::PrimitiveDateTime::parse(s.trim(), &format).ok()?;
    Some(dt.assume_utc().into())
}

async fn backstage_check(config: &Config, http: Option<&reqwest::Client>) -> Check {
    const NAME: &str = "backstage";
    let Some(base) = config
        .catalog
        .backstage_url
        .as_ref()
        .map(crate::config::HttpUrl::as_str)
    else {
        return check(
            NAME,
            Level::Skip,
            "no [catalog] backstage_url configured",
            None,
        );
    };
    let Some(http) = http else {
        return check(NAME, Level::Fail, "cannot build an HTTP client", None);
    };
    let url = format!(
        "{}/.backstage/health/v1/liveness",
        base.trim_end_matches('/')
    );
    match http.get(&url).send().await {
        Ok(r) if r.status().is_success() => check(NAME, Level::Ok, format!("{base} answers"), None),
        Ok(r) => check(
            NAME,
            Level::Warn,
            format!("{url} answered HTTP {}", r.status().as_u16()),
            Some("check [catalog] backstage_url (the base URL, without /api/catalog)"),
        ),
        Err(e) => check(
            NAME,
            Level::Fail,
            format!(
                "{base}: {}",
                if e.is_timeout() {
                    "timed out".to_string()
                } else {
                    e.to_string()
                }
            ),
            Some("check network access to Backstage and [catalog] backstage_url"),
        ),
    }
}

fn codespaces_check() -> Check {
    const NAME: &str = "codespaces variables";
    if std::env::var("CODESPACES").as_deref() != Ok("true") {
        return check(NAME, Level::Skip, "not a Codespace", None);
    }
    let missing: Vec<&str> = [
        "GITHUB_TOKEN",
        "CODESPACE_NAME",
        "GITHUB_REPOSITORY",
        "GITHUB_USER",
    ]
    .into_iter()
    .filter(|v| std::env::var_os(v).is_none_or(|x| x.is_empty()))
    .collect();
    if missing.is_empty() {
        check(
            NAME,
            Level::Ok,
            "GITHUB_TOKEN, CODESPACE_NAME, GITHUB_REPOSITORY, GITHUB_USER set",
            None,
        )
    } else {
        check(
            NAME,
            Level::Warn,
            format!("missing: {}", missing.join(", ")),
            Some(
                "processes started by the entrypoint may lack them; they are in /workspaces/.codespaces/shared/.env-secrets (KEY=base64 lines); open a new terminal or restart the agent from one",
            ),
        )
    }
}

/// Where install.sh keeps a copy of the Feature's metadata: its `remote.portsAttributes` are
/// part of every container built with it, although no workspace file shows them.
pub const FEATURE_METADATA: &str = "/usr/local/share/stagepass/devcontainer-feature.json";

/// Judges whether VS Code would auto-forward the agent's port, from what is really configured:
/// the Feature's own metadata (`feature_json`) and the workspace's devcontainer.json, both read
/// as JSONC the way VS Code reads them.
pub fn forward_check(config: &Config, start: &Path, feature_json: &Path) -> Check {
    const NAME: &str = "port auto-forward protection";
    if !config.api.tcp {
        return check(NAME, Level::Skip, "TCP is turned off", None);
    }
    let port = config.api.port;
    let mut looked = Vec::new();
    for file in [Some(feature_json.to_path_buf()), find_devcontainer(start)]
        .into_iter()
        .flatten()
    {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        match ignores_port(&text, port) {
            Ok(true) => {
                return check(
                    NAME,
                    Level::Ok,
                    format!(
                        "{} keeps VS Code from forwarding port {port}",
                        file.display()
                    ),
                    None,
                );
            }
            Ok(false) => looked.push(file.display().to_string()),
            Err(e) => looked.push(format!("{} (unreadable: {e})", file.display())),
        }
    }
    if looked.is_empty() {
        return check(
            NAME,
            Level::Skip,
            "no devcontainer.json found from the current directory up, and no stagepass Feature",
            None,
        );
    }
    check(
        NAME,
        Level::Warn,
        format!(
            "nothing stops VS Code from forwarding port {port} (looked at {})",
            looked.join(", ")
        ),
        Some(&format!(
            "add to devcontainer.json: \"customizations\": {{\"vscode\": {{\"settings\": {{\"remote.portsAttributes\": {{\"{port}\": {{\"onAutoForward\": \"ignore\"}}}}}}}}}} (the Host guard refuses forwarded requests anyway)"
        )),
    )
}

/// Whether a devcontainer.json or devcontainer-feature.json (JSONC) asks VS Code to ignore
/// `port`: a `portsAttributes` entry for it (top level, or the `remote.portsAttributes` setting
/// under `customizations.vscode.settings`) or `otherPortsAttributes`, with `onAutoForward`
/// set to `ignore`.
fn ignores_port(text: &str, port: u16) -> Result<bool, String> {
    let doc: serde_json::Value =
        jsonc_parser::parse_to_serde_value(text, &jsonc_parser::ParseOptions::default())
            .map_err(|e| e.to_string())?;
    let ignore = |attrs: Option<&serde_json::Value>| {
        attrs
            .and_then(|a| a.get("onAutoForward"))
            .and_then(|v| v.as_str())
            == Some("ignore")
    };
    let key = port.to_string();
    let settings = doc.pointer("/customizations/vscode/settings");
    let tables = [
        doc.get("portsAttributes"),
        settings.and_then(|s| s.get("remote.portsAttributes")),
    ];
    let others = [
        doc.get("otherPortsAttributes"),
        settings.and_then(|s| s.get("remote.otherPortsAttributes")),
    ];
    Ok(tables.iter().any(|t| ignore(t.and_then(|t| t.get(&key))))
        || others.iter().any(|o| ignore(*o)))
}

fn find_devcontainer(start: &Path) -> Option<PathBuf> {
    let mut dir = Some(start);
    while let Some(d) = dir {
        for cand in [".devcontainer/devcontainer.json", ".devcontainer.json"] {
            let p = d.join(cand);
            if p.is_file() {
                return Some(p);
            }
        }
        dir = d.parent();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_expired_login_age_is_a_warning_with_the_fix() {
        let status: Status = serde_json::from_value(serde_json::json!({
            "agent": {"pid": 1, "started_at": "t", "uptime_seconds": 0, "version": "0.1.0"},
            "api": {"tcp_port": null, "unix_socket": null},
            "catalog": {"state": "disabled"},
            "store": {"backend": "file", "detail": "d"},
            "profiles": [
            {"profile": "gh", "grant": "device", "state": "login_required", "reason": "the login is older than the maximum grant age of 12h (profiles.gh.policy.max_grant_age); run `stagepass login gh`"},
            {"profile": "other", "grant": "device", "state": "login_required", "reason": "not logged in"},
            {"profile": "ok", "grant": "device", "state": "valid"},
        ]}))
        .unwrap();
        let checks = grant_age_checks(Some(&status));
        assert_eq!(checks.len(), 1);
        assert_eq!(checks[0].level, Level::Warn);
        assert!(checks[0].detail.contains("maximum grant age of 12h"));
        assert_eq!(checks[0].fix.as_deref(), Some("stagepass login gh"));
        assert!(grant_age_checks(None).is_empty());
    }

    #[test]
    fn http_dates_parse() {
        let t = parse_http_date("Sat, 28 Nov 2026 23:33:40 GMT").unwrap();
        let secs = t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
        assert_eq!(secs, 1_795_908_820);
        assert!(parse_http_date("yesterday").is_none());
    }

    #[test]
    fn skew_over_the_limit_fails_with_a_fix() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let ok = skew_check("i", Some(now - Duration::from_secs(2)), now, now);
        assert_eq!(ok.level, Level::Ok);
        let bad = skew_check("i", Some(now + Duration::from_secs(120)), now, now);
        assert_eq!(bad.level, Level::Fail);
        assert!(bad.detail.contains("120s behind"), "{}", bad.detail);
        assert!(bad.fix.is_some());
    }

    #[test]
    fn forward_protection_is_found_in_devcontainer_json() {
        let tmp = tempfile::tempdir().unwrap();
        let config = Config::default();
        let sub = tmp.path().join("src/deep");
        let no_feature = tmp.path().join("no-feature.json");
        std::fs::create_dir_all(&sub).unwrap();
        assert_eq!(forward_check(&config, &sub, &no_feature).level, Level::Skip);
        std::fs::create_dir_all(tmp.path().join(".devcontainer")).unwrap();
        let f = tmp.path().join(".devcontainer/devcontainer.json");
        std::fs::write(&f, "{\"name\": \"x\"}").unwrap();
        assert_eq!(forward_check(&config, &sub, &no_feature).level, Level::Warn);
        // JSONC as VS Code reads it: comments and trailing commas.
        std::fs::write(
            &f,
            "// team config\n{\"customizations\": {\"vscode\": {\"settings\": {\"remote.portsAttributes\": {\"7391\": {\"onAutoForward\": \"ignore\",},}}}}, /* end */}",
        )
        .unwrap();
        assert_eq!(forward_check(&config, &sub, &no_feature).level, Level::Ok);
        // The top-level property of the spec counts too; "notify" does not protect.
        std::fs::write(
            &f,
            "{\"portsAttributes\": {\"7391\": {\"onAutoForward\": \"ignore\"}}}",
        )
        .unwrap();
        assert_eq!(forward_check(&config, &sub, &no_feature).level, Level::Ok);
        std::fs::write(
            &f,
            "{\"portsAttributes\": {\"7391\": {\"onAutoForward\": \"notify\"}}}",
        )
        .unwrap();
        assert_eq!(forward_check(&config, &sub, &no_feature).level, Level::Warn);
    }

    /// The false warning of a real container: the workspace's devcontainer.json says nothing
    /// about the port, but the Feature itself (its installed metadata) protects it.
    #[test]
    fn the_features_own_ports_attributes_count() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join(".devcontainer")).unwrap();
        std::fs::write(
            tmp.path().join(".devcontainer/devcontainer.json"),
            "{\"features\": {\"./stagepass\": {}}}",
        )
        .unwrap();
        let feature = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../feature/src/stagepass/devcontainer-feature.json");
        let config = Config::default();
        let c = forward_check(&config, tmp.path(), &feature);
        assert_eq!(c.level, Level::Ok, "{}", c.detail);
        assert!(
            c.detail.contains("devcontainer-feature.json"),
            "{}",
            c.detail
        );
        // Another port is not covered by the Feature's attributes.
        let mut other = Config::default();
        other.api.port = 8123;
        let c = forward_check(&other, tmp.path(), &feature);
        assert_eq!(c.level, Level::Warn, "{}", c.detail);
        assert!(c.detail.contains("8123"), "{}", c.detail);
    }
}
