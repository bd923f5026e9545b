//! [`Request::Restart`](ha_mgmt_api::Request::Restart): the daemon replaced in place by a new
//! program (the main CPU's half of a rolling update). The same process id and arguments, so a
//! supervisor (systemd) sees no exit; the kernel's state (the standby guard, the conntrack
//! entries) stays, and the new daemon rejoins its controller and the state sync (the peer
//! sends it the table in bulk).
//!
//! Nothing changes unless the new program would run: it must be an absolute path to an
//! executable file, and `PROGRAM <the daemon's arguments> --check` must accept the
//! configuration within [`CHECK_WITHIN`]. A member that forwards refuses (it would drop its
//! traffic while the new daemon starts): make it passive first.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ha_mgmt_api::{ApiError, ErrorCode};

/// A refusal of the request.
fn err(code: ErrorCode, message: impl Into<String>) -> ApiError {
    ApiError {
        code,
        message: message.into(),
    }
}

/// How long the new program's `--check` may take.
pub const CHECK_WITHIN: Duration = Duration::from_secs(10);

/// The command that replaces this daemon by `binary`, once checked; or the refusal.
pub(super) fn prepare(binary: &str, forwarding: bool) -> Result<Command, ApiError> {
    if forwarding {
        return Err(err(
            ErrorCode::Refused,
            "this member forwards: make it passive first (hactl passive), then restart its daemon",
        ));
    }
    let path = Path::new(binary);
    if !path.is_absolute() {
        return Err(err(
            ErrorCode::BadRequest,
            format!("{binary:?}: the new daemon must be given as an absolute path"),
        ));
    }
    let meta =
        std::fs::metadata(path).map_err(|e| err(ErrorCode::NotFound, format!("{binary}: {e}")))?;
    if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
        return Err(err(
            ErrorCode::BadRequest,
            format!("{binary}: not an executable file"),
        ));
    }
    let args: Vec<_> = std::env::args_os().skip(1).collect();
    check(binary, &args)?;
    let mut cmd = Command::new(path);
    cmd.args(&args);
    Ok(cmd)
}

/// Runs `binary ARGS --check`; its refusal (exit status and last line of its errors) or
/// a timeout is the request's refusal.
fn check(binary: &str, args: &[std::ffi::OsString]) -> Result<(), ApiError> {
    let refused = |why: String| err(ErrorCode::Refused, format!("{binary} --check: {why}"));
    let mut child = Command::new(binary)
        .args(args)
        .arg("--check")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| refused(e.to_string()))?;
    let deadline = Instant::now() + CHECK_WITHIN;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(refused(format!("no answer within {CHECK_WITHIN:?}")));
            }
            Err(e) => return Err(refused(e.to_string())),
        }
    };
    if status.success() {
        return Ok(());
    }
    let mut text = String::new();
    if let Some(mut e) = child.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut text);
    }
    let last = text.lines().last().unwrap_or("").trim().to_string();
    Err(refused(format!("{status}: {last}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(r: Result<Command, ApiError>) -> (ErrorCode, String) {
        match r {
            Err(e) => (e.code, e.message),
            Ok(c) => panic!("accepted: {c:?}"),
        }
    }

    #[test]
    fn a_forwarding_member_or_a_bad_program_is_refused_and_nothing_runs() {
        assert_eq!(refusal(prepare("/bin/true", true)).0, ErrorCode::Refused);
        assert_eq!(refusal(prepare("true", false)).0, ErrorCode::BadRequest);
        assert_eq!(
            refusal(prepare("/nonexistent/ha-daemon", false)).0,
            ErrorCode::NotFound
        );
        assert_eq!(refusal(prepare("/etc", false)).0, ErrorCode::BadRequest);
        let dir = std::env::temp_dir().join(format!("ha-restart-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // Not executable.
        let plain = dir.join("plain");
        std::fs::write(&plain, "#!/bin/sh\nexit 0\n").unwrap();
        assert_eq!(
            refusal(prepare(plain.to_str().unwrap(), false)).0,
            ErrorCode::BadRequest
        );
        // Its check refuses the configuration: the refusal carries its last word.
        let picky = dir.join("picky");
        std::fs::write(&picky, "#!/bin/sh\necho 'bad option: x' >&2\nexit 2\n").unwrap();
        std::fs::set_permissions(&picky, std::fs::Permissions::from_mode(0o755)).unwrap();
        let (code, msg) = refusal(prepare(picky.to_str().unwrap(), false));
        assert_eq!(code, ErrorCode::Refused);
        assert!(msg.contains("bad option: x"), "{msg}");
        // One that accepts it: the command to replace the daemon.
        let fine = dir.join("fine");
        std::fs::write(&fine, "#!/bin/sh\nexit 0\n").unwrap();
        std::fs::set_permissions(&fine, std::fs::Permissions::from_mode(0o755)).unwrap();
        let cmd = prepare(fine.to_str().unwrap(), false).expect("accepted");
        assert_eq!(cmd.get_program(), fine.as_os_str());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
