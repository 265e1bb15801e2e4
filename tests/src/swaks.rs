//! swaks (the SMTP test client) run inside a namespace.

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use anyhow::{bail, Result};

use crate::{cmd, netns::Netns};

/// Envelope sender [`swaks`] uses unless told otherwise.
pub const DEFAULT_FROM: &str = "sender@partner.example";
/// Envelope recipient [`swaks`] uses unless told otherwise (the domain the
/// lab's receiving MTA accepts, [`crate::MAIL_DOMAIN`]).
pub const DEFAULT_TO: &str = "postmaster@example.test";

/// What to tell swaks. Build with [`SwaksOptions::new`] and adjust fields.
#[derive(Clone, Debug)]
pub struct SwaksOptions {
    /// `--local-interface`: the source address.
    pub local: IpAddr,
    /// `--server`/`--port`.
    pub server: SocketAddr,
    /// `--timeout` for each step; the whole run is also killed after
    /// `timeout * 4 + 5 s`.
    pub timeout: Duration,
    /// `--from`.
    pub from: String,
    /// `--to`.
    pub to: String,
    /// `--helo`, if set (swaks defaults to the machine's hostname).
    pub helo: Option<String>,
    /// `--quit-after` (e.g. "banner", "connect", "helo", "rcpt"), if set.
    pub quit_after: Option<String>,
    /// `--header` lines ("Name: value").
    pub headers: Vec<String>,
    /// `--body`, if set.
    pub body: Option<String>,
    /// Anything else, appended as is.
    pub extra_args: Vec<String>,
}

impl SwaksOptions {
    pub fn new(local: IpAddr, server: impl Into<SocketAddr>, timeout: Duration) -> SwaksOptions {
        SwaksOptions {
            local,
            server: server.into(),
            timeout,
            from: DEFAULT_FROM.into(),
            to: DEFAULT_TO.into(),
            helo: None,
            quit_after: None,
            headers: Vec::new(),
            body: None,
            extra_args: Vec::new(),
        }
    }

    /// The swaks argv (without the namespace wrapper).
    pub fn argv(&self) -> Vec<String> {
        let secs = self.timeout.as_secs_f64().ceil().max(1.0) as u64;
        let mut a: Vec<String> = vec![
            "swaks".into(),
            "--server".into(),
            self.server.ip().to_string(),
            "--port".into(),
            self.server.port().to_string(),
            "--local-interface".into(),
            self.local.to_string(),
            "--timeout".into(),
            format!("{secs}s"),
            "--from".into(),
            self.from.clone(),
            "--to".into(),
            self.to.clone(),
        ];
        if let Some(h) = &self.helo {
            a.extend(["--helo".into(), h.clone()]);
        }
        if let Some(q) = &self.quit_after {
            a.extend(["--quit-after".into(), q.clone()]);
        }
        for h in &self.headers {
            a.extend(["--header".into(), h.clone()]);
        }
        if let Some(b) = &self.body {
            a.extend(["--body".into(), b.clone()]);
        }
        a.extend(self.extra_args.iter().cloned());
        a
    }
}

/// What a swaks run gave.
#[derive(Clone, Debug)]
pub struct SwaksResult {
    /// swaks' exit code (None if killed by a signal), per swaks(1):
    /// 0 the whole transaction succeeded; 2 could not connect; 6 connection
    /// closed unexpectedly; 21 error reading the banner (e.g. a 4xx
    /// greeting); 22 HELO, 23 MAIL, 24 no RCPT accepted, 25 DATA refused,
    /// 26 message refused after the data.
    pub code: Option<i32>,
    /// stdout and stderr, in that order.
    pub transcript: String,
    /// The first line the server sent (e.g. "220 mx.example.test ESMTP …"),
    /// if any.
    pub first_reply: Option<String>,
}

impl SwaksResult {
    /// Exit code 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
    /// All lines the server sent, in order.
    pub fn server_lines(&self) -> Vec<String> {
        server_lines(&self.transcript)
    }
}

/// Send one test message from `from_addr` to `server` inside `ns` with the
/// default envelope ([`DEFAULT_FROM`] → [`DEFAULT_TO`]).
pub fn swaks(
    ns: &Netns,
    from_addr: IpAddr,
    server: impl Into<SocketAddr>,
    timeout: Duration,
) -> Result<SwaksResult> {
    swaks_with(ns, &SwaksOptions::new(from_addr, server, timeout))
}

/// Run swaks with full options inside `ns`. An error means swaks could not
/// be run or overran its limit; a failed SMTP transaction is a result with
/// a non-zero `code`.
pub fn swaks_with(ns: &Netns, opts: &SwaksOptions) -> Result<SwaksResult> {
    if !cmd::have_program("swaks") {
        bail!("swaks is not installed (apt-get install swaks)");
    }
    let argv = opts.argv();
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let limit = opts.timeout * 4 + Duration::from_secs(5);
    let out = ns.try_run(&argv, limit)?;
    let mut transcript = String::from_utf8_lossy(&out.stdout).into_owned();
    transcript.push_str(&String::from_utf8_lossy(&out.stderr));
    let first_reply = server_lines(&transcript).into_iter().next();
    Ok(SwaksResult {
        code: out.status.code(),
        transcript,
        first_reply,
    })
}

/// Server lines of a swaks transcript: `<-  …` (expected) and `<** …`
/// (unexpected) lines, with the marker removed.
pub fn server_lines(transcript: &str) -> Vec<String> {
    transcript
        .lines()
        .filter_map(|l| l.strip_prefix("<-").or_else(|| l.strip_prefix("<**")))
        .map(|l| l.trim_start().to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_server_lines() {
        let t = "=== Trying [2001:db8:100::1]:25...\n=== Connected to 2001:db8:100::1.\n\
                 <-  220 mx.example.test ESMTP Postfix\n -> EHLO vm\n<-  250-mx.example.test\n\
                 <** 421 4.7.0 retry over IPv4\n";
        assert_eq!(
            server_lines(t),
            vec![
                "220 mx.example.test ESMTP Postfix",
                "250-mx.example.test",
                "421 4.7.0 retry over IPv4"
            ]
        );
    }

    #[test]
    fn argv_has_ipv6_server_and_port_separately() {
        let o = SwaksOptions::new(
            "2001:db8:1::25".parse().unwrap(),
            ("2001:db8:100::1".parse::<IpAddr>().unwrap(), 25),
            Duration::from_millis(1500),
        );
        let a = o.argv();
        let pos = |s: &str| a.iter().position(|x| x == s).unwrap();
        assert_eq!(a[pos("--server") + 1], "2001:db8:100::1");
        assert_eq!(a[pos("--port") + 1], "25");
        assert_eq!(a[pos("--timeout") + 1], "2s");
    }
}
