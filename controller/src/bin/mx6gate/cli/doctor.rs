//! `mx6gate doctor [--domain D]…`: what on this host (and in D's DNS)
//! would make turning IPv6 senders away cost mail, each with a fix.
use std::{path::Path, process::ExitCode};

use anyhow::Result;
use mx6gate::{
    doctor::{self, mx, Finding},
    reconcile,
};
use serde::Serialize;

use super::{json, Ctx};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A mail domain this gateway receives for: check its MX set through
    /// the system resolver (repeatable).
    #[arg(long = "domain", value_name = "DOMAIN")]
    pub domains: Vec<String>,
    /// Print the findings as JSON (schema "mx6gate.doctor/1": the exit
    /// status and a `findings` array).
    #[arg(long)]
    pub json: bool,
}

/// The `--json` body (mx6gate.doctor/1).
#[derive(Serialize)]
struct DoctorJson<'a> {
    /// The exit status: 0 all good, 1 warnings, 2 failures.
    exit: u8,
    findings: &'a [Finding],
}

/// Exit status 0: nothing needs attention; 1: warnings; 2: failures.
pub fn run(config: &Path, args: Args) -> Result<ExitCode> {
    for d in &args.domains {
        validate_domain(d)?;
    }
    let ctx = Ctx::load(config)?;
    let mode = reconcile::effective_mode(&ctx.cfg, &ctx.state)?;
    let daemon = ctx.state.running_daemon();
    let mut findings: Vec<Finding> = vec![Finding::new(
        "mode",
        doctor::Severity::Ok,
        format!("{} (config {})", mode.as_str(), ctx.config_path.display()),
    )];
    findings.extend(doctor::host::run_all(&ctx, mode, daemon));
    if !args.domains.is_empty() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        for d in &args.domains {
            let set = rt.block_on(mx::resolve(d));
            let gating = mx::Gating {
                mode,
                escalates: ctx.cfg.defer.kernel().escalates(),
            };
            findings.extend(mx::assess(d, &set, gating));
        }
    }
    if args.json {
        json::print(
            json::DOCTOR,
            &DoctorJson {
                exit: doctor::exit_code(&findings),
                findings: &findings,
            },
        )?;
    } else {
        print!("{}", doctor::render(&findings));
    }
    Ok(ExitCode::from(doctor::exit_code(&findings)))
}

/// A domain name as DNS has it: labels of letters, digits and hyphens.
fn validate_domain(d: &str) -> Result<()> {
    let name = d.strip_suffix('.').unwrap_or(d);
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        });
    if !ok {
        anyhow::bail!("--domain {d:?} is not a domain name");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The documented shape: a change here is a change of mx6gate.doctor/1.
    #[test]
    fn json_shape_v1() {
        let findings = vec![
            Finding::new("mode", doctor::Severity::Ok, "monitor"),
            Finding::new("kernel", doctor::Severity::Warn, "old"),
        ];
        let t = json::to_string(
            json::DOCTOR,
            &DoctorJson {
                exit: doctor::exit_code(&findings),
                findings: &findings,
            },
        )
        .unwrap();
        assert_eq!(json::tests::keys(&t), ["exit", "findings", "schema"]);
        let v: serde_json::Value = serde_json::from_str(&t).unwrap();
        assert_eq!(v["schema"], "mx6gate.doctor/1");
        assert_eq!(v["exit"], 1);
        let mut keys: Vec<&String> = v["findings"][0].as_object().unwrap().keys().collect();
        keys.sort();
        // detail and fix are left out when empty.
        assert_eq!(keys, ["check", "severity", "summary"]);
        assert_eq!(v["findings"][1]["severity"], "warn");
    }

    #[test]
    fn domains() {
        for ok in [
            "example.org",
            "example.org.",
            "mx-1.example.test",
            "xn--bcher-kva.example",
        ] {
            assert!(super::validate_domain(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            ".",
            "a..b",
            "-a.b",
            "a b",
            "exa$mple.org",
            "user@example.org",
        ] {
            let e = super::validate_domain(bad).unwrap_err().to_string();
            assert!(e.contains(&format!("{bad:?}")), "{e}");
        }
    }
}
