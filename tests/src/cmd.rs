//! Running external commands with a deadline.
//!
//! Output goes to anonymous temporary files, not pipes: a command that
//! daemonizes (e.g. `postfix start`, whose master keeps running) would keep a
//! pipe open forever and a pipe reader would hang. With files we only wait for
//! the direct child, bounded by the timeout.

use std::{
    fs::File,
    io::{Read, Seek, SeekFrom},
    process::{Child, Command, ExitStatus, Output, Stdio},
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context, Result};

/// Timeout used by the helpers that do not take one.
pub const DEFAULT_CMD_TIMEOUT: Duration = Duration::from_secs(30);

/// Quote an argv for messages (shell-like, good enough to copy and paste).
pub fn describe(argv: &[&str]) -> String {
    argv.iter()
        .map(|a| {
            if !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@+%[]".contains(c))
            {
                a.to_string()
            } else {
                format!("'{}'", a.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Describe a finished command: its exit status, stderr and stdout.
pub fn describe_output(out: &Output) -> String {
    let mut s = format!("{}", out.status);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !stderr.trim().is_empty() {
        s.push_str(&format!("; stderr: {}", stderr.trim()));
    }
    if !stdout.trim().is_empty() {
        s.push_str(&format!("; stdout: {}", truncate(stdout.trim(), 2000)));
    }
    s
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// Wait for `child` at most `timeout`; on timeout kill it (SIGKILL), reap it
/// and return `Ok(None)`.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> std::io::Result<Option<ExitStatus>> {
    let deadline = Instant::now() + timeout;
    let mut nap = Duration::from_millis(1);
    loop {
        if let Some(st) = child.try_wait()? {
            return Ok(Some(st));
        }
        let now = Instant::now();
        if now >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(None);
        }
        std::thread::sleep(nap.min(deadline - now));
        nap = (nap * 2).min(Duration::from_millis(20));
    }
}

fn read_all(mut f: File) -> Vec<u8> {
    let mut v = Vec::new();
    if f.seek(SeekFrom::Start(0)).is_ok() {
        let _ = f.read_to_end(&mut v);
    }
    v
}

/// Run a prepared command (stdin is /dev/null, stdout/stderr are captured)
/// with a deadline. Returns its output whatever its exit status; fails only
/// if it cannot be started or does not finish in time. `what` names the
/// command in errors.
pub fn output_with_timeout(mut cmd: Command, what: &str, timeout: Duration) -> Result<Output> {
    let out = tempfile::tempfile().context("creating a temp file for stdout")?;
    let err = tempfile::tempfile().context("creating a temp file for stderr")?;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(out.try_clone()?))
        .stderr(Stdio::from(err.try_clone()?));
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start `{what}`"))?;
    drop(cmd); // closes our copies of the temp file handles given to the child
    let status =
        wait_timeout(&mut child, timeout).with_context(|| format!("waiting for `{what}`"))?;
    let stdout = read_all(out);
    let stderr = read_all(err);
    match status {
        Some(status) => Ok(Output { status, stdout, stderr }),
        None => Err(anyhow!(
            "`{what}` did not finish within {timeout:?} (killed); stderr so far: {}; stdout so far: {}",
            String::from_utf8_lossy(&stderr).trim(),
            truncate(String::from_utf8_lossy(&stdout).trim(), 2000)
        )),
    }
}

/// Run `argv` on the host with a deadline; any exit status is returned.
pub fn try_run(argv: &[&str], timeout: Duration) -> Result<Output> {
    let (prog, args) = argv.split_first().ok_or_else(|| anyhow!("empty command"))?;
    let mut cmd = Command::new(prog);
    cmd.args(args);
    output_with_timeout(cmd, &describe(argv), timeout)
}

/// Run `argv` on the host with a deadline; a non-zero exit is an error that
/// names the command and carries its stderr.
pub fn run(argv: &[&str], timeout: Duration) -> Result<Output> {
    let out = try_run(argv, timeout)?;
    check(argv, out)
}

/// Turn a non-zero exit into an error naming the command and its stderr.
pub fn check(argv: &[&str], out: Output) -> Result<Output> {
    if !out.status.success() {
        bail!("`{}` failed: {}", describe(argv), describe_output(&out));
    }
    Ok(out)
}

/// Is `prog` an executable file somewhere on PATH (or a path that exists)?
pub fn have_program(prog: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let is_exec = |p: &std::path::Path| {
        p.metadata()
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    if prog.contains('/') {
        return is_exec(std::path::Path::new(prog));
    }
    let path = std::env::var_os("PATH")
        .unwrap_or_else(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path).any(|d| is_exec(&d.join(prog)))
}

/// A command's stdout and stderr, as text.
pub fn out_str(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// The `mx6gate: error: …` line of a command's stderr (logs precede it).
pub fn error_line(stderr: &str) -> String {
    match stderr.find("mx6gate: error:") {
        Some(i) => stderr[i..].lines().next().unwrap_or("").to_string(),
        None => stderr.trim().to_string(),
    }
}
