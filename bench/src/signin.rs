//! Issue 22: signing in to Backstage as the user, against the live Backstage of the catalog
//! bench (its own `@backstage/plugin-auth-backend` 0.31 authorization server), through the
//! agent's broker in process (the code `stagepass agent` runs):
//!
//! - the sign-in round trip: `login_start` -> the browser's path (authorize, the consent
//!   page's approve with the user's Backstage token, the redirect to the agent's loopback
//!   listener) -> code exchange, refresh token stored, ownership read from `/v1/userinfo`;
//!   the user's Backstage sign-in itself is done once beforehand (a browser already has it);
//! - a refresh: the cached token dropped, the next `token()` refreshes, rotates and persists;
//! - a catalog push as the user (`POST /api/catalog/refresh` of an entity the user owns,
//!   which Backstage's permission policy checks) beside the same push as a service principal
//!   (an IdP token through `externalAccess`, which the policy does not check).

use crate::report::{Report, median};
use anyhow::{Context, Result, bail};
use stagepass::broker::{Broker, BrokerOptions, TokenRequest};
use stagepass::config::Config;
use stagepass::paths::Paths;
use stagepass_e2e::idp::AUD_BACKSTAGE;
use stagepass_e2e::support::private_tempdir;
use stagepass_e2e::{Backstage, Idp};
use std::time::{Duration, Instant};

fn ms(v: &[Duration]) -> Vec<f64> {
    v.iter().map(|d| d.as_secs_f64() * 1e3).collect()
}

fn line(v: &[Duration]) -> String {
    let m = ms(v);
    let min = m.iter().copied().fold(f64::INFINITY, f64::min);
    let max = m.iter().copied().fold(0.0, f64::max);
    format!(
        "median {:.1} ms, min {min:.1}, max {max:.1} (n = {})",
        median(m.clone()),
        m.len()
    )
}

/// `rounds` sign-ins, refreshes and pushes of each kind, as `user`, who owns `entity`.
pub async fn run(
    r: &mut Report,
    idp: &Idp,
    bs: &Backstage,
    entity: &str,
    user: &str,
    rounds: usize,
) -> Result<()> {
    let client = bs.oauth_client("stagepass")?;
    let port = client
        .free_redirect_port()
        .context("no free redirect port of the stagepass client")?;
    let dir = private_tempdir()?;
    let config_path = dir.path().join("config.toml");
    std::fs::write(
        &config_path,
        format!(
            "[store]\nbackend = \"file\"\n\n[profiles.bs]\ngrant = \"authorization-code\"\n\
             issuer = \"{}\"\nclient_id = \"stagepass\"\nredirect_port = {port}\n\
             scopes = [\"openid\", \"offline_access\"]\n",
            bs.auth_issuer()
        ),
    )?;
    let config = Config::load_files(&[config_path])?;
    let paths = Paths {
        config_files: Vec::new(),
        state_dir: dir.path().join("state"),
        runtime_dir: dir.path().join("run"),
    };
    let broker = Broker::start_with(
        &config,
        &paths,
        BrokerOptions {
            background_refresh: false,
            ..BrokerOptions::default()
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let signed_in = bs.sign_in(idp, user).await?;
    let http = reqwest::Client::builder().no_proxy().build()?;

    let mut signin = Vec::new();
    for _ in 0..rounds {
        let t = Instant::now();
        let started = broker
            .login_start("bs")
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let url = started.verification_uri.context("no authorization URL")?;
        let back = bs.approve(&url, &signed_in).await?;
        let page = http.get(&back).send().await?;
        if !page.status().is_success() {
            bail!("the redirect listener answered {}", page.status());
        }
        signin.push(t.elapsed());
    }

    let mut refresh = Vec::new();
    for _ in 0..rounds {
        let fp = broker
            .status()
            .into_iter()
            .find_map(|p| p.token_fingerprint)
            .context("no token after sign-in")?;
        broker
            .invalidate("bs", &fp)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let t = Instant::now();
        broker
            .token("bs", TokenRequest::default())
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        refresh.push(t.elapsed());
    }

    let user = broker
        .token("bs", TokenRequest::default())
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .access_token
        .clone();
    let service = idp
        .mint("catalog-bench", AUD_BACKSTAGE, 3600)
        .await?
        .access_token;
    let body = serde_json::json!({ "entityRef": entity });
    let mut as_user = Vec::new();
    let mut as_service = Vec::new();
    for _ in 0..rounds {
        for (token, out) in [
            (user.expose(), &mut as_user),
            (service.as_str(), &mut as_service),
        ] {
            let t = Instant::now();
            let resp = http
                .post(format!("{}/refresh", bs.catalog_url()))
                .bearer_auth(token)
                .json(&body)
                .send()
                .await?;
            if !resp.status().is_success() {
                bail!("catalog refresh of {entity} answered {}", resp.status());
            }
            out.push(t.elapsed());
        }
    }
    // What a user's push pays first under an owner-only policy: the refresh of the file's
    // Location entity (no owner), refused with 403, before the entity's own refresh above.
    let location = location_of(&http, bs, entity, &service).await?;
    let loc_body = serde_json::json!({ "entityRef": location });
    let mut refused = Vec::new();
    for _ in 0..rounds {
        let t = Instant::now();
        let resp = http
            .post(format!("{}/refresh", bs.catalog_url()))
            .bearer_auth(user.expose())
            .json(&loc_body)
            .send()
            .await?;
        if resp.status() != reqwest::StatusCode::FORBIDDEN {
            bail!(
                "the Location refresh as the user answered {}, not 403",
                resp.status()
            );
        }
        refused.push(t.elapsed());
    }
    r.fact(
        "Backstage sign-in round trip (authorize, approve, redirect to the agent, code exchange, stored, userinfo)",
        line(&signin),
    );
    r.fact("Backstage refresh (rotated and persisted)", line(&refresh));
    r.fact(
        "catalog push as the user (POST /refresh, permission policy checked)",
        line(&as_user),
    );
    r.fact(
        "catalog push as a service principal (same call, IdP token)",
        line(&as_service),
    );
    r.fact(
        "the file's Location refresh refused to the user (403, tried before the entity's refresh)",
        line(&refused),
    );
    Ok(())
}

/// The Location entity `entity` was read through (its parent in `/ancestry`).
async fn location_of(
    http: &reqwest::Client,
    bs: &Backstage,
    entity: &str,
    token: &str,
) -> Result<String> {
    let (kind, rest) = entity
        .split_once(':')
        .context("entity ref without a kind")?;
    let (ns, name) = rest
        .split_once('/')
        .context("entity ref without a namespace")?;
    let v: serde_json::Value = http
        .get(format!(
            "{}/entities/by-name/{kind}/{ns}/{name}/ancestry",
            bs.catalog_url()
        ))
        .bearer_auth(token)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    v["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["parentEntityRefs"].as_array())
        .flatten()
        .filter_map(|p| p.as_str())
        .find(|p| p.starts_with("location:"))
        .map(str::to_string)
        .with_context(|| format!("no Location parent of {entity}"))
}
