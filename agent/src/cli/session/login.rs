//! `stagepass login`: start a login at the agent and wait for approval: a device login
//! (show the URL and code), or an authorization-code sign-in (show the URL; the browser comes
//! back to the agent's listener, or the user pastes the address it ended on).

use super::output::print_line;
use crate::client::{Client, ClientError};
use crate::protocol::login::{LoginPhase, LoginState};
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

/// How often the agent is asked whether the login finished.
const POLL: Duration = Duration::from_secs(1);

/// Starts the login and waits until it ends, the code expires, or Ctrl-C.
pub async fn run(client: &Client, profile: &str) -> Result<ExitCode, ClientError> {
    let started = client.login_start(profile).await?;
    if started.state == LoginPhase::Complete {
        print_line(&format!("{profile}: already logged in"));
        return Ok(ExitCode::SUCCESS);
    }
    let uri = started.verification_uri.unwrap_or_default();
    if let Some(redirect) = started.redirect_uri {
        return sign_in(client, profile, &uri, &redirect).await;
    }
    let code = started.user_code.unwrap_or_default();
    print_line(&format!(
        "To log in to {profile}, open:\n\n    {uri}\n\nand enter the code:\n\n    {code}\n"
    ));
    if let Some(complete) = started.verification_uri_complete {
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
        let state = client.login_state(profile).await?;
        if let Some(code) = ended(profile, &state, spin) {
            return Ok(code);
        }
    }
}

/// The exit code once the login state has left `pending`.
fn ended(profile: &str, state: &LoginState, spin: bool) -> Option<ExitCode> {
    match state.state {
        LoginPhase::Pending => None,
        LoginPhase::Complete => {
            clear(spin);
            print_line(&format!("{profile}: logged in"));
            Some(ExitCode::SUCCESS)
        }
        other => {
            clear(spin);
            let why = state.message.as_deref().unwrap_or_default();
            eprintln!(
                "stagepass: login {}{}{why}",
                other.as_str(),
                if why.is_empty() { "" } else { ": " }
            );
            Some(ExitCode::FAILURE)
        }
    }
}

/// An authorization-code sign-in: the agent listens for the browser's redirect; a pasted
/// address (one line on stdin) completes it where the browser cannot reach the listener.
async fn sign_in(
    client: &Client,
    profile: &str,
    uri: &str,
    redirect: &str,
) -> Result<ExitCode, ClientError> {
    print_line(&format!(
        "To sign in to {profile}, open:\n\n    {uri}\n\nIf the browser cannot reach {redirect} (a browser Codespace), paste the address it ended on here and press Enter."
    ));
    let mut pasted = pasted_lines();
    let mut stdin_open = true;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        tokio::select! {
            _ = &mut ctrl_c => {
                eprintln!("stagepass: stopped waiting; the sign-in stays open until it expires");
                return Ok(ExitCode::from(super::EXIT_INTERRUPTED));
            }
            line = pasted.recv(), if stdin_open => match line {
                Some(l) if !l.trim().is_empty() => {
                    match client.login_callback(profile, l.trim()).await {
                        Ok(state) => {
                            if let Some(code) = ended(profile, &state, false) {
                                return Ok(code);
                            }
                        }
                        Err(e) => eprintln!("stagepass: {e}"),
                    }
                }
                Some(_) => {}
                None => stdin_open = false,
            },
            () = tokio::time::sleep(POLL) => {}
        }
        let state = client.login_state(profile).await?;
        if let Some(code) = ended(profile, &state, false) {
            return Ok(code);
        }
    }
}

/// Lines typed or pasted on stdin, read by a plain thread: a read blocked on a terminal
/// must not keep the process from exiting once the sign-in is done (tokio's stdin would
/// hold the runtime's shutdown until the next Enter).
fn pasted_lines() -> tokio::sync::mpsc::UnboundedReceiver<String> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
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
