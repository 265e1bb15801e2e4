//! The daemon's control socket, `<state_dir>/control.sock`: one JSON
//! request line in, one JSON response line out, then the connection
//! closes. Mode 0600 (root only). Versioned so a CLI and a daemon of
//! different builds refuse each other clearly instead of misreading.
//!
//! Only what lives in the daemon's memory goes through here (today: the
//! `top` aggregate); everything else the CLI reads from the pins and the
//! store itself, so it keeps working without a daemon.
use std::{
    io::{BufRead, BufReader, Write},
    os::unix::{fs::PermissionsExt, net::UnixStream},
    path::PathBuf,
    time::Duration,
};

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tracing::warn;

use crate::{
    report::{self, TopQuery, TopReport},
    state::StateDir,
};

pub const SOCKET_NAME: &str = "control.sock";
/// Bumped on any incompatible change of the messages below.
pub const VERSION: u32 = 1;
/// Longest request line accepted.
const MAX_REQUEST: u64 = 64 * 1024;
/// A client gets this long to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// The CLI waits this long for an answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Serialize, Deserialize)]
pub struct Request {
    pub version: u32,
    #[serde(flatten)]
    pub query: Query,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "snake_case")]
pub enum Query {
    Top(TopQuery),
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Response {
    pub version: u32,
    #[serde(flatten)]
    pub answer: Answer,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "answer", rename_all = "snake_case")]
pub enum Answer {
    Top(TopReport),
    Error { message: String },
}

pub fn socket_path(state: &StateDir) -> PathBuf {
    state.path.join(SOCKET_NAME)
}

/// The daemon's listener. Bound under a temporary name, restricted to
/// root, then renamed into place: no moment where others could connect.
/// Call only while holding the daemon's claim on the state dir (a stale
/// socket from a dead daemon is replaced).
pub fn bind(state: &StateDir) -> Result<Listener> {
    let path = socket_path(state);
    let tmp = state
        .path
        .join(format!(".{SOCKET_NAME}.{}", std::process::id()));
    std::fs::remove_file(&tmp).ok();
    let l = std::os::unix::net::UnixListener::bind(&tmp)
        .with_context(|| format!("binding the control socket {}", tmp.display()))?;
    let bound = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
        .and_then(|()| std::fs::rename(&tmp, &path))
        .and_then(|()| l.set_nonblocking(true));
    if let Err(e) = bound {
        std::fs::remove_file(&tmp).ok();
        return Err(anyhow!(
            "setting up the control socket {}: {e}",
            path.display()
        ));
    }
    Ok(Listener { listener: l, path })
}

pub struct Listener {
    listener: std::os::unix::net::UnixListener,
    path: PathBuf,
}

impl Drop for Listener {
    fn drop(&mut self) {
        std::fs::remove_file(&self.path).ok();
    }
}

/// The serving task; stops (and removes the socket) when dropped.
pub struct Server(tokio::task::JoinHandle<()>);

impl Drop for Server {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Bind the control socket and serve `reports` on it.
pub fn spawn(state: &StateDir, reports: report::Handle) -> Result<Server> {
    let l = bind(state)?;
    Ok(Server(tokio::spawn(async move {
        if let Err(e) = l.serve(reports).await {
            warn!(
                error = format!("{e:#}"),
                "control socket failed; `mx6gate top` cannot reach the daemon"
            );
        }
    })))
}

impl Listener {
    /// Serve until the task is dropped. Each connection gets its own task
    /// and REQUEST_TIMEOUT to say what it wants.
    pub async fn serve(self, reports: report::Handle) -> Result<()> {
        let listener = tokio::net::UnixListener::from_std(self.listener.try_clone()?)?;
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(s) => s,
                Err(e) => {
                    warn!(error = %e, "control socket accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let reports = reports.clone();
            tokio::spawn(async move {
                if let Err(e) = tokio::time::timeout(REQUEST_TIMEOUT, answer(stream, &reports))
                    .await
                    .unwrap_or_else(|_| Err(anyhow!("client sent no request in time")))
                {
                    warn!(error = format!("{e:#}"), "control socket request failed");
                }
            });
        }
    }
}

/// Answer one request on `stream`.
async fn answer(stream: tokio::net::UnixStream, reports: &report::Handle) -> Result<()> {
    let (r, mut w) = stream.into_split();
    let mut line = String::new();
    tokio::io::BufReader::new(tokio::io::AsyncReadExt::take(r, MAX_REQUEST))
        .read_line(&mut line)
        .await?;
    let answer = match handle(&line, reports) {
        Ok(a) => a,
        Err(e) => Answer::Error {
            message: format!("{e:#}"),
        },
    };
    let mut out = serde_json::to_vec(&Response {
        version: VERSION,
        answer,
    })?;
    out.push(b'\n');
    w.write_all(&out).await?;
    w.shutdown().await?;
    Ok(())
}

fn handle(line: &str, reports: &report::Handle) -> Result<Answer> {
    // The version first, so an unknown request from a newer CLI is
    // answered as a version mismatch, not as garbage.
    #[derive(Deserialize)]
    struct Versioned {
        version: u32,
    }
    let v: Versioned =
        serde_json::from_str(line).context("the request is not a versioned JSON object")?;
    if v.version != VERSION {
        bail!(
            "this daemon speaks control protocol version {VERSION}, the request is version {}: run the same mx6gate version as the daemon",
            v.version
        );
    }
    let req: Request = serde_json::from_str(line).context("malformed request")?;
    match req.query {
        Query::Top(q) => Ok(Answer::Top(reports.top(&q)?)),
    }
}

/// Ask the daemon running for `state`. Errors say plainly when no daemon
/// is there to ask.
pub fn ask(state: &StateDir, query: Query) -> Result<Answer> {
    let path = socket_path(state);
    let no_daemon = || {
        anyhow!(
            "no mx6gate daemon is running for state dir {} (nothing answers on {}): start it with `mx6gate run`",
            state.path.display(),
            path.display()
        )
    };
    if state.running_daemon().is_none() {
        return Err(no_daemon());
    }
    let mut s = match UnixStream::connect(&path) {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Err(no_daemon());
        }
        Err(e) => return Err(anyhow!("connecting to {}: {e}", path.display())),
    };
    s.set_read_timeout(Some(ANSWER_TIMEOUT))?;
    s.set_write_timeout(Some(ANSWER_TIMEOUT))?;
    let mut req = serde_json::to_vec(&Request {
        version: VERSION,
        query,
    })?;
    req.push(b'\n');
    s.write_all(&req)
        .with_context(|| format!("sending the request to {}", path.display()))?;
    let mut line = String::new();
    BufReader::new(&s)
        .read_line(&mut line)
        .with_context(|| format!("reading the daemon's answer on {}", path.display()))?;
    if line.trim().is_empty() {
        bail!("the daemon closed {} without answering", path.display());
    }
    let resp: Response = serde_json::from_str(&line).with_context(|| {
        format!("the daemon's answer is not version-{VERSION} JSON: run the same mx6gate version as the daemon")
    })?;
    if resp.version != VERSION {
        bail!(
            "the daemon speaks control protocol version {}, this CLI {VERSION}: run the same mx6gate version as the daemon",
            resp.version
        );
    }
    match resp.answer {
        Answer::Error { message } => bail!("the daemon refused the request: {message}"),
        a => Ok(a),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_format_is_stable() {
        let r = Request {
            version: VERSION,
            query: Query::Top(TopQuery {
                by: 48,
                window_minutes: 10,
                limit: 20,
            }),
        };
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"version":1,"request":"top","by":48,"window_minutes":10,"limit":20}"#
        );
        let e = Response {
            version: VERSION,
            answer: Answer::Error {
                message: "x".into(),
            },
        };
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"version":1,"answer":"error","message":"x"}"#
        );
    }
}
