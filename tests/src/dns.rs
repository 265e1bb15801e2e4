//! A real DNS server (Debian's dnsmasq) inside a namespace, serving the
//! records a test needs on 127.0.0.1:53 of that namespace only.
use std::{path::PathBuf, process::Child, time::Duration};

use anyhow::{bail, Result};

use crate::{cmd, Netns};

pub struct Dnsmasq {
    child: Child,
    /// A resolv.conf pointing at this server, for `PostfixInstance::resolv_conf`.
    pub resolv_conf: PathBuf,
    _dir: tempfile::TempDir,
}

impl Dnsmasq {
    /// `records` are dnsmasq options without the leading `--`, e.g.
    /// `mx-host=example.test,mx.example.test,10` and
    /// `host-record=mx.example.test,2001:db8:100::1,198.51.100.1`.
    pub fn start(ns: &Netns, records: &[&str]) -> Result<Dnsmasq> {
        if !cmd::have_program("dnsmasq") {
            bail!("dnsmasq is not installed (apt-get install dnsmasq-base)");
        }
        let dir = tempfile::Builder::new().prefix("mx6t-dns").tempdir()?;
        let resolv_conf = dir.path().join("resolv.conf");
        std::fs::write(
            &resolv_conf,
            "nameserver 127.0.0.1\noptions attempts:1 timeout:1\n",
        )?;
        let mut argv: Vec<String> = [
            "dnsmasq",
            "--keep-in-foreground",
            "--no-resolv",
            "--no-hosts",
            "--no-poll",
            "--conf-file=/dev/null",
            "--listen-address=127.0.0.1",
            "--bind-interfaces",
            "--port=53",
            "--user=root",
            "--pid-file=",
            "--log-facility=-",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        argv.extend(records.iter().map(|r| format!("--{r}")));
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let child = ns.spawn(&argv)?;
        let d = Dnsmasq {
            child,
            resolv_conf,
            _dir: dir,
        };
        // Ready when port 53 answers.
        for _ in 0..100 {
            let out = ns.try_run(&["ss", "-Hlnu", "sport = :53"], Duration::from_secs(5))?;
            if !String::from_utf8_lossy(&out.stdout).trim().is_empty() {
                return Ok(d);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        bail!("dnsmasq did not start listening in {}", ns.name())
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}
