//! `mx6gate doctor`: is this gateway set up so that turning IPv6 senders
//! away loses no mail? Each check returns findings in plain words with a
//! fix; the exit status says whether anything needs attention.
//!
//! - `host` — kernel and bpffs, the gate's pins and links, the responder,
//!   the MTA's listeners, the interfaces' IPv4 addresses, partner expiry
//! - `mx`   — a domain's MX set through the system resolver
pub mod host;
pub mod mx;

use std::fmt::Write as _;

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Ok,
    /// Worth knowing; nothing to do.
    Info,
    /// Works, but not as well as it should, or will stop working.
    Warn,
    /// Mail would be delayed or lost (or the gate is not doing its job).
    Fail,
}

impl Severity {
    fn label(self) -> &'static str {
        match self {
            Severity::Ok => "ok",
            Severity::Info => "info",
            Severity::Warn => "WARN",
            Severity::Fail => "FAIL",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// Stable identifier of the check, e.g. `ipv4:eth0` or `mx:example.org:primary-ipv4`.
    pub check: String,
    pub severity: Severity,
    /// One line.
    pub summary: String,
    /// What it means for mail, in plain words.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub detail: String,
    /// What to do about it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Finding {
    pub fn new(
        check: impl Into<String>,
        severity: Severity,
        summary: impl Into<String>,
    ) -> Finding {
        Finding {
            check: check.into(),
            severity,
            summary: summary.into(),
            detail: String::new(),
            fix: None,
        }
    }

    pub fn detail(mut self, d: impl Into<String>) -> Finding {
        self.detail = d.into();
        self
    }

    pub fn fix(mut self, f: impl Into<String>) -> Finding {
        self.fix = Some(f.into());
        self
    }
}

/// The worst severity among `findings` (Ok when there are none).
pub fn worst(findings: &[Finding]) -> Severity {
    findings
        .iter()
        .map(|f| f.severity)
        .max()
        .unwrap_or(Severity::Ok)
}

/// Exit status: 0 nothing needs attention, 1 warnings, 2 failures.
pub fn exit_code(findings: &[Finding]) -> u8 {
    match worst(findings) {
        Severity::Ok | Severity::Info => 0,
        Severity::Warn => 1,
        Severity::Fail => 2,
    }
}

/// The human report: one line per finding, explanation and fix indented
/// under the ones that need attention (and under infos, which say why).
pub fn render(findings: &[Finding]) -> String {
    let mut o = String::new();
    for f in findings {
        let _ = writeln!(
            o,
            "[{:<4}] {:<28} {}",
            f.severity.label(),
            f.check,
            f.summary
        );
        if f.severity != Severity::Ok {
            for line in wrap(&f.detail, 72) {
                let _ = writeln!(o, "{:7} {line}", "");
            }
            if let Some(fix) = &f.fix {
                for (i, line) in wrap(fix, 67).into_iter().enumerate() {
                    let lead = if i == 0 { "fix: " } else { "     " };
                    let _ = writeln!(o, "{:7} {lead}{line}", "");
                }
            }
        }
    }
    let count = |s| findings.iter().filter(|f| f.severity == s).count();
    let _ = writeln!(
        o,
        "\n{} failure(s), {} warning(s), {} ok",
        count(Severity::Fail),
        count(Severity::Warn),
        count(Severity::Ok) + count(Severity::Info)
    );
    o
}

fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut cur = String::new();
    for word in text.split_whitespace() {
        if !cur.is_empty() && cur.len() + 1 + word.len() > width {
            lines.push(std::mem::take(&mut cur));
        }
        if !cur.is_empty() {
            cur.push(' ');
        }
        cur.push_str(word);
    }
    if !cur.is_empty() {
        lines.push(cur);
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_code_follows_the_worst_finding() {
        let ok = Finding::new("a", Severity::Ok, "fine");
        let info = Finding::new("b", Severity::Info, "note");
        let warn = Finding::new("c", Severity::Warn, "hmm");
        let fail = Finding::new("d", Severity::Fail, "bad");
        assert_eq!(exit_code(&[]), 0);
        assert_eq!(exit_code(&[ok.clone(), info.clone()]), 0);
        assert_eq!(exit_code(&[ok.clone(), warn.clone()]), 1);
        assert_eq!(exit_code(&[fail, warn, info, ok]), 2);
    }

    #[test]
    fn render_shows_fix_for_problems_only() {
        let text = render(&[
            Finding::new("x", Severity::Ok, "fine").fix("never shown"),
            Finding::new("y", Severity::Fail, "broken")
                .detail("because")
                .fix("do this"),
        ]);
        assert!(!text.contains("never shown"), "{text}");
        assert!(text.contains("[FAIL] y"), "{text}");
        assert!(text.contains("fix: do this"), "{text}");
        assert!(text.contains("1 failure(s), 0 warning(s), 1 ok"), "{text}");
    }
}
