//! `stagepass login`: start a device login at the agent, show the code, wait for approval.

use super::output::print_line;
use crate::client::{Client, ClientError};
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

/// How often the agent is asked whether the login finished.
const POLL: Duration = Duration::from_secs(1);

/// Starts the login and waits until it ends, the code expires, or Ctrl-C.
pub async fn run(client: &Client, profile: &str) -> Result<ExitCode, ClientError> {
    let path = format!("/v1/login/{profile}");
    let started = client.post_json(&path, &serde_json::json!({})).await?;
    let field =
        |v: &serde_json::Value, k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
    if field(&started, "state").as_deref() == Some("complete") {
        print_line(&format!("{profile}: already logged in"));
        return Ok(ExitCode::SUCCESS);
    }
    let uri = field(&started, "verification_uri").unwrap_or_default();
    let code = field(&started, "user_code").unwrap_or_default();
    print_line(&format!(
        "To log in to {profile}, open:\n\n    {uri}\n\nand enter the code:\n\n    {code}\n"
    ));
    if let Some(complete) = field(&started, "verification_uri_complete") {
        print_line(&format!("(or open {complete} to have the code filled in)"));
        if let Some(qr) = qr_text(&complete).filter(|_| std::io::stdout().is_terminal()) {
            print_line(&qr);
        }
    }
    let spin = std::io::stderr().is_terminal();
    let frames = ['|', '/', '-', '\\'];
    let mut i = 0usize;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        if spin {
            let mut e = std::io::stderr().lock();
            let _ = write!(
                e,
                "\r{} waiting for approval (Ctrl-C to stop waiting) ",
                frames[i % 4]
            );
            let _ = e.flush();
            i += 1;
        }
        tokio::select! {
            _ = &mut ctrl_c => {
                clear(spin);
                eprintln!("stagepass: stopped waiting; the code stays valid until it expires");
                return Ok(ExitCode::from(super::EXIT_INTERRUPTED));
            }
            () = tokio::time::sleep(POLL) => {}
        }
        let state = client.get_json(&path).await?;
        match field(&state, "state").as_deref() {
            Some("pending") | None => continue,
            Some("complete") => {
                clear(spin);
                print_line(&format!("{profile}: logged in"));
                return Ok(ExitCode::SUCCESS);
            }
            Some(other) => {
                clear(spin);
                let why = field(&state, "message").unwrap_or_default();
                eprintln!(
                    "stagepass: login {other}{}{why}",
                    if why.is_empty() { "" } else { ": " }
                );
                return Ok(ExitCode::FAILURE);
            }
        }
    }
}

fn clear(spin: bool) {
    if spin {
        let mut e = std::io::stderr().lock();
        let _ = write!(e, "\r\x1b[2K");
        let _ = e.flush();
    }
}

/// A QR code of `text` drawn with half blocks (two modules per character row), quiet zone included.
pub fn qr_text(text: &str) -> Option<String> {
    let qr = qrcodegen::QrCode::encode_text(text, qrcodegen::QrCodeEcc::Low).ok()?;
    let size = qr.size();
    let dark = |x: i32, y: i32| x >= 0 && y >= 0 && x < size && y < size && qr.get_module(x, y);
    let mut out = String::new();
    let mut y = -2;
    while y < size + 2 {
        for x in -2..size + 2 {
            out.push(match (dark(x, y), dark(x, y + 1)) {
                (true, true) => ' ',
                (true, false) => '▄',
                (false, true) => '▀',
                (false, false) => '█',
            });
        }
        out.push('\n');
        y += 2;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn qr_is_square_ish_and_inverted_for_dark_terminals() {
        let q = super::qr_text("http://127.0.0.1:1234/device?user_code=ABCD-EFGH").unwrap();
        let lines: Vec<&str> = q.lines().collect();
        let width = lines[0].chars().count();
        assert!(width >= 25);
        assert!(lines.iter().all(|l| l.chars().count() == width));
        // The quiet zone is light, drawn as full blocks.
        assert!(lines[0].chars().all(|c| c == '█'));
    }
}
