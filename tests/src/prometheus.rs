//! A real Prometheus server (Debian's `prometheus` package) inside a
//! namespace: it scrapes targets on that namespace's own loopback, loads
//! rule files, and answers queries over its HTTP API. Short scrape and
//! evaluation intervals (1 s) so a test waits for events, not minutes.
use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::{cmd, Netns};

/// Where the server listens, inside its namespace.
pub const LISTEN: &str = "127.0.0.1:9090";
/// Job name of every scrape target.
pub const JOB: &str = "mx6gate";

pub struct Prometheus<'ns> {
    child: Option<Child>,
    ns: &'ns Netns,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl<'ns> Prometheus<'ns> {
    /// Start a server in `ns` scraping `targets` ("host:port") every
    /// second and evaluating `rule_files` every second; returns once it
    /// answers /-/ready.
    pub fn start(
        ns: &'ns Netns,
        targets: &[&str],
        rule_files: &[PathBuf],
    ) -> Result<Prometheus<'ns>> {
        if !cmd::have_program("prometheus") {
            bail!("prometheus is not installed (apt-get install prometheus)");
        }
        let dir = tempfile::Builder::new().prefix("mx6t-prom").tempdir()?;
        let config = dir.path().join("prometheus.yml");
        let rules: Vec<String> = rule_files
            .iter()
            .map(|p| format!("  - {}\n", p.display()))
            .collect();
        let targets: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 rule_files:\n{}\
                 scrape_configs:\n  - job_name: {JOB}\n    static_configs:\n      - targets: [{}]\n",
                rules.concat(),
                targets.join(", ")
            ),
        )?;
        let log = std::fs::File::create(dir.path().join("prometheus.log"))?;
        let mut c = ns.command(&[
            "prometheus",
            &format!("--config.file={}", config.display()),
            &format!("--storage.tsdb.path={}", dir.path().join("data").display()),
            &format!("--web.listen-address={LISTEN}"),
            "--log.level=warn",
        ]);
        c.stdout(Stdio::null()).stderr(log);
        let child = ns.spawn_command(c)?;
        let mut p = Prometheus {
            child: Some(child),
            ns,
            addr: LISTEN.parse().unwrap(),
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok((200, _)) = p.get("/-/ready") {
                return Ok(p);
            }
            if let Some(st) = p.child.as_mut().unwrap().try_wait()? {
                p.child = None;
                bail!("prometheus exited ({st}):\n{}", p.log());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("prometheus was not ready within 60 s:\n{}", p.log())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// An instant query: the result vector (`[{metric, value}]`).
    pub fn query(&self, expr: &str) -> Result<Vec<Value>> {
        let v = self.api(&format!("/api/v1/query?query={}", urlencode(expr)))?;
        match v["data"]["resultType"].as_str() {
            Some("vector") => Ok(v["data"]["result"].as_array().cloned().unwrap_or_default()),
            // A scalar or string result (e.g. `vector(1)` is a vector, `1` a scalar).
            Some(_) => Ok(vec![v["data"]["result"].clone()]),
            None => bail!("query {expr:?}: no result in {v}"),
        }
    }

    /// The values of an instant query, as numbers.
    pub fn values(&self, expr: &str) -> Result<Vec<f64>> {
        self.query(expr)?
            .iter()
            .map(|s| {
                s["value"][1]
                    .as_str()
                    .and_then(|v| v.parse().ok())
                    .with_context(|| format!("query {expr:?}: no value in {s}"))
            })
            .collect()
    }

    /// Active alerts (pending and firing) named `name`.
    pub fn alerts(&self, name: &str) -> Result<Vec<Value>> {
        let v = self.api("/api/v1/alerts")?;
        Ok(v["data"]["alerts"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|a| a["labels"]["alertname"] == name)
            .collect())
    }

    /// The firing ones of [`alerts`](Self::alerts).
    pub fn firing(&self, name: &str) -> Result<Vec<Value>> {
        Ok(self
            .alerts(name)?
            .into_iter()
            .filter(|a| a["state"] == "firing")
            .collect())
    }

    /// Poll `ok` every 250 ms until it holds or `timeout` passes.
    pub fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        mut ok: impl FnMut(&Prometheus<'ns>) -> Result<bool>,
    ) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let mut last = None;
        while Instant::now() < deadline {
            match ok(self) {
                Ok(true) => return Ok(()),
                Ok(false) => last = None,
                Err(e) => last = Some(format!("{e:#}")),
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        bail!(
            "prometheus never showed {what} within {timeout:?}{}\nprometheus log:\n{}",
            last.map(|e| format!(" (last error: {e})"))
                .unwrap_or_default(),
            self.log()
        )
    }

    /// GET an API path; the JSON body, which must say status "success".
    fn api(&self, path: &str) -> Result<Value> {
        let (status, body) = self.get(path)?;
        let v: Value = serde_json::from_str(&body)
            .with_context(|| format!("GET {path}: HTTP {status}, not JSON: {body}"))?;
        if status != 200 || v["status"] != "success" {
            bail!("GET {path}: HTTP {status}: {body}");
        }
        Ok(v)
    }

    fn get(&self, path: &str) -> Result<(u16, String)> {
        let addr = self.addr;
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        let text = self.ns.enter(move || -> std::io::Result<String> {
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
            s.set_read_timeout(Some(Duration::from_secs(10)))?;
            s.set_write_timeout(Some(Duration::from_secs(10)))?;
            s.write_all(request.as_bytes())?;
            let mut raw = Vec::new();
            s.take(16 << 20).read_to_end(&mut raw)?;
            Ok(String::from_utf8_lossy(&raw).into_owned())
        })?;
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        // Go's server answers a Connection: close request without chunking.
        let chunked = head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked");
        let body = if chunked {
            dechunk(body)
        } else {
            body.to_string()
        };
        Ok((status, body))
    }
}

impl Drop for Prometheus<'_> {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().ok();
            c.wait().ok();
        }
    }
}

/// Percent-encode a query parameter (RFC 3986 unreserved characters kept).
pub fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || tail.len() < n {
            break;
        }
        out.push_str(&tail[..n]);
        rest = tail[n..].trim_start_matches("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn urlencode_and_dechunk() {
        assert_eq!(
            super::urlencode("up{job=\"a b\"} == 0"),
            "up%7Bjob%3D%22a%20b%22%7D%20%3D%3D%200"
        );
        assert_eq!(super::dechunk("3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"), "abcde");
    }
}
