//! The machine and the lab as the report describes them.
use std::process::Command;

use anyhow::Result;

use super::{observe::listen_backlogs, Lab, Server};

#[derive(Default)]
pub(super) struct Environment {
    pub(super) nofile: u64,
    pub(super) loadavg_start: String,
    pub(super) loadavg_end: String,
    pub(super) date: String,
    pub(super) kernel: String,
    pub(super) cpu: String,
    pub(super) cpus: usize,
    pub(super) mem: String,
    pub(super) postfix_version: String,
    pub(super) git: String,
    pub(super) backlog: Vec<(String, String)>,
    pub(super) backlog_raised: Vec<(String, String)>,
    pub(super) greetings: Vec<(Server, String)>,
    pub(super) rss_before_kb: u64,
    pub(super) rss_after_n: Vec<(usize, u64)>,
    pub(super) rss_end_kb: u64,
    pub(super) status_end: String,
    pub(super) postfix_log_tail: Vec<String>,
    pub(super) daemon_threads: String,
    pub(super) postfix_rss: String,
    pub(super) postscreen_rss: String,
}

pub(super) fn sh(argv: &[&str]) -> String {
    Command::new(argv[0])
        .args(&argv[1..])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "?".into())
}

impl Environment {
    pub(super) fn collect(lab: &Lab) -> Result<Environment> {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let root = crate::workspace_root();
        let root_s = root.display().to_string();
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", lab.daemon_pid)).unwrap_or_default();
        Ok(Environment {
            date: sh(&["date", "-u", "+%Y-%m-%d %H:%M UTC"]),
            kernel: sh(&["uname", "-sr"]),
            cpu: cpuinfo
                .lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string())
                .unwrap_or_else(|| "?".into()),
            cpus: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(0),
            mem: meminfo
                .lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .map(|l| l.trim().to_string())
                .unwrap_or_else(|| "?".into()),
            postfix_version: sh(&["postconf", "-d", "-h", "mail_version"]),
            git: sh(&["git", "-C", &root_s, "rev-parse", "--short", "HEAD"]),
            backlog: listen_backlogs(&lab.topo.gw)?,
            daemon_threads: status
                .lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .map(|l| l.trim().to_string())
                .unwrap_or_else(|| "?".into()),
            ..Environment::default()
        })
    }
}
