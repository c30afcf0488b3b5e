//! Every message round-trips, and `/v1/status` keeps its JSON for a fixed state.

use super::catalog::{Action, BackstageStatus, Change, Finding, JobStatus};
use super::login::{LoginPhase, LogoutPhase};
use super::status::{
    AgentInfo, ApiInfo, CatalogOff, EngineState, Identity, ProfileState, ProfileStatus, StoreInfo,
};
use super::*;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::borrow::Cow;
use std::path::PathBuf;

/// Serializes `value`, reads it back as `T` and serializes that again: the same JSON both
/// times, or a field is lost or renamed on one side.
fn round_trip<T: Serialize + DeserializeOwned>(value: &T) -> String {
    let first = serde_json::to_string(value).unwrap();
    let back: T = serde_json::from_str(&first).unwrap();
    assert_eq!(serde_json::to_string(&back).unwrap(), first);
    first
}

fn profile(name: &str, identity: Option<Identity>) -> ProfileStatus {
    ProfileStatus {
        profile: name.into(),
        grant: "device".into(),
        state: ProfileState::Valid,
        reason: None,
        expires_at: Some("2026-12-05T23:00:00Z".into()),
        token_fingerprint: Some("0123456789ab".into()),
        identity,
    }
}

fn fixed_status(catalog: CatalogSection) -> Status {
    Status {
        agent: AgentInfo {
            pid: 42,
            started_at: "2026-12-05T22:00:00Z".into(),
            uptime_seconds: 3600,
            version: "0.1.0".into(),
        },
        api: ApiInfo {
            tcp_port: Some(7391),
            unix_socket: Some("/run/stagepass/api.sock".into()),
        },
        catalog,
        profiles: vec![profile(
            "backstage",
            Some(Identity {
                sub: Some("user:default/alice".into()),
                ent: vec!["user:default/alice".into(), "group:default/team-a".into()],
                ..Identity::default()
            }),
        )],
        store: StoreInfo {
            backend: "file".into(),
            detail: "no keyring".into(),
        },
    }
}

/// The JSON `stagepass status --json` users and the e2e tests read: these names and this
/// nesting are the contract (the keys of a profile come in the struct's order).
#[test]
fn status_json_is_pinned() {
    let json = serde_json::to_string(&fixed_status(CatalogSection::disabled())).unwrap();
    assert_eq!(
        json,
        concat!(
            r#"{"agent":{"pid":42,"started_at":"2026-12-05T22:00:00Z","uptime_seconds":3600,"version":"0.1.0"},"#,
            r#""api":{"tcp_port":7391,"unix_socket":"/run/stagepass/api.sock"},"#,
            r#""catalog":{"state":"disabled"},"#,
            r#""profiles":[{"profile":"backstage","grant":"device","state":"valid","reason":null,"#,
            r#""expires_at":"2026-12-05T23:00:00Z","token_fingerprint":"0123456789ab","#,
            r#""identity":{"sub":"user:default/alice","groups":[],"name":null,"email":null,"#,
            r#""preferred_username":null,"iss":null,"#,
            r#""ent":["user:default/alice","group:default/team-a"]}}],"#,
            r#""store":{"backend":"file","detail":"no keyring"}}"#
        )
    );
}

#[test]
fn status_round_trips_with_the_catalog_running_or_not() {
    let mut catalog = CatalogStatus {
        state: EngineState::Watching,
        root: Some(PathBuf::from("/w")),
        files: 1,
        entities: 1,
        backstage: Some(BackstageStatus {
            url: "http://b".into(),
            reachable: Some(true),
            ..BackstageStatus::default()
        }),
        scan: Some(super::catalog::ScanReport {
            files_seen: 10,
            dirs: 2,
            catalog_files: 1,
            millis: 12,
        }),
        ..CatalogStatus::default()
    };
    catalog.outbox.push(job());
    catalog.pushes.insert("component:default/t".into(), 1);
    let running = round_trip(&fixed_status(CatalogSection::Running(Box::new(catalog))));
    let back: Status = serde_json::from_str(&running).unwrap();
    assert!(
        matches!(&back.catalog, CatalogSection::Running(c) if c.state == EngineState::Watching && c.outbox[0].state == "failed"),
        "{running}"
    );
    // A status that does not read is an error, not a catalog that is off.
    let broken = running.replace(r#""files":1"#, r#""files":"one""#);
    assert!(serde_json::from_str::<Status>(&broken).is_err());
    let off = round_trip(&fixed_status(CatalogSection::Off(CatalogOff {
        state: EngineState::Error,
        message: Some("cannot encode".into()),
    })));
    assert!(off.contains(r#""catalog":{"state":"error","message":"cannot encode"}"#));
    let back: Status = serde_json::from_str(&off).unwrap();
    assert!(matches!(back.catalog, CatalogSection::Off(o) if o.state == EngineState::Error));
}

/// An older CLI reads a newer agent's status: unknown fields are skipped, and optional
/// fields it does not send read as `None`.
#[test]
fn status_reads_unknown_fields_and_missing_options() {
    let newer = r#"{"agent":{"pid":1,"started_at":"t","uptime_seconds":0,"version":"9","arch":"x"},
        "api":{"quic_port":1},"catalog":{"state":"disabled","since":"t"},
        "profiles":[{"profile":"p","grant":"device","state":"login_required","new":1}],
        "store":{"backend":"file","detail":"d"},"later":{"x":1}}"#;
    let s: Status = serde_json::from_str(newer).unwrap();
    assert_eq!(s.api.tcp_port, None);
    assert_eq!(s.api.unix_socket, None);
    let p = &s.profiles[0];
    assert_eq!(p.state, ProfileState::LoginRequired);
    assert!(p.reason.is_none() && p.expires_at.is_none() && p.identity.is_none());
    assert!(matches!(s.catalog, CatalogSection::Off(o) if o.state == EngineState::Disabled));
}

fn job() -> JobStatus {
    JobStatus {
        entity: "component:default/t".into(),
        file: PathBuf::from("t.yaml"),
        action: Action::Sync,
        state: Cow::Borrowed("failed"),
        attempts: 2,
        error: Some("400".into()),
    }
}

#[test]
fn health_round_trips() {
    assert_eq!(round_trip(&Health::ok()), r#"{"status":"ok"}"#);
}

#[test]
fn token_answer_round_trips() {
    let t = TokenAnswer {
        access_token: Cow::Borrowed("tok"),
        token_type: Cow::Borrowed("Bearer"),
        expires_at: Some("2026-12-05T23:00:00Z".into()),
        expires_in: Some(60),
        scope: None,
        profile: Cow::Borrowed("gh"),
    };
    assert_eq!(
        round_trip(&t),
        r#"{"access_token":"tok","token_type":"Bearer","expires_at":"2026-12-05T23:00:00Z","expires_in":60,"scope":null,"profile":"gh"}"#
    );
    let owned: TokenAnswer<'static> =
        serde_json::from_str(r#"{"access_token":"t","token_type":"Bearer","expires_at":null,"expires_in":null,"scope":"a b","profile":"p","extra":1}"#).unwrap();
    assert_eq!(owned.scope.as_deref(), Some("a b"));
    assert_eq!(owned.expires_at, None);
}

#[test]
fn invalidate_messages_round_trip() {
    let req = InvalidateRequest {
        fingerprint: "0123456789ab".into(),
    };
    assert_eq!(round_trip(&req), r#"{"fingerprint":"0123456789ab"}"#);
    // The request is the server's to check strictly; the answer is not.
    assert!(serde_json::from_str::<InvalidateRequest>(r#"{"fingerprint":"a","x":1}"#).is_err());
    let answer = Invalidated {
        profile: "gh".into(),
        fingerprint: "0123456789ab".into(),
    };
    assert_eq!(
        round_trip(&answer),
        r#"{"profile":"gh","fingerprint":"0123456789ab"}"#
    );
}

#[test]
fn login_messages_round_trip() {
    let state = LoginState {
        profile: "dev".into(),
        state: LoginPhase::Pending,
        verification_uri: Some("https://idp/device".into()),
        verification_uri_complete: None,
        user_code: Some("ABCD-EFGH".into()),
        expires_at: None,
        message: None,
        redirect_uri: None,
    };
    assert_eq!(
        round_trip(&state),
        r#"{"profile":"dev","state":"pending","verification_uri":"https://idp/device","verification_uri_complete":null,"user_code":"ABCD-EFGH","expires_at":null,"message":null}"#
    );
    let sparse: LoginState =
        serde_json::from_str(r#"{"profile":"dev","state":"complete"}"#).unwrap();
    assert_eq!(sparse.state, LoginPhase::Complete);
    assert!(sparse.redirect_uri.is_none() && sparse.user_code.is_none());
    let out = LoggedOut::new("dev");
    assert_eq!(out.state, LogoutPhase::LoggedOut);
    assert_eq!(
        round_trip(&out),
        r#"{"profile":"dev","state":"logged_out"}"#
    );
    let pasted = CallbackRequest {
        url: "http://127.0.0.1:1/cb?code=c".into(),
    };
    assert_eq!(
        round_trip(&pasted),
        r#"{"url":"http://127.0.0.1:1/cb?code=c"}"#
    );
    assert_eq!(round_trip(&Empty {}), "{}");
}

#[test]
fn catalog_reports_round_trip() {
    let diff = DiffReport {
        changes: vec![Change::OwnerChanged {
            entity: "component:default/p".into(),
            from: Some("group:team-a".into()),
            to: Some("group:team-b".into()),
        }],
        error: None,
        failed: vec![job()],
    };
    let text = round_trip(&diff);
    assert!(text.contains(r#""change":"owner_changed""#), "{text}");
    // `failed` is left out when empty, and reads back empty.
    let empty: DiffReport =
        serde_json::from_str(r#"{"changes":[],"error":"no backstage"}"#).unwrap();
    assert!(empty.failed.is_empty());
    assert_eq!(
        serde_json::to_string(&empty).unwrap(),
        r#"{"changes":[],"error":"no backstage"}"#
    );
    let sync = SyncReport {
        queued: 1,
        unchanged: 2,
        invalid: vec![Finding {
            file: PathBuf::from("a.yaml"),
            line: 6,
            col: 3,
            message: "spec.owner is missing".into(),
            rule: "required-field".into(),
        }],
        error: None,
    };
    assert_eq!(
        round_trip(&sync),
        r#"{"queued":1,"unchanged":2,"invalid":[{"file":"a.yaml","line":6,"col":3,"message":"spec.owner is missing","rule":"required-field"}],"error":null}"#
    );
    round_trip(&CatalogStatus::default());
}

#[test]
fn error_bodies_round_trip() {
    let e = ErrorBody {
        error: "login_required".into(),
        message: "run `stagepass login`".into(),
    };
    assert_eq!(
        round_trip(&e),
        r#"{"error":"login_required","message":"run `stagepass login`"}"#
    );
    let aws = AwsErrorBody {
        code: "forbidden_caller".into(),
        message: "no".into(),
    };
    assert_eq!(
        round_trip(&aws),
        r#"{"code":"forbidden_caller","message":"no"}"#
    );
}
