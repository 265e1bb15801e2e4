//! The kernel: its features, probed, and whether its verifier takes the
//! gate's programs.
use super::*;
/// The "kernel" finding from the probed requirements: below the floor in
/// plain words (what is missing, what that means, what to run instead).
pub(super) fn kernel_finding(rel: &str, reqs: &[kernel::Requirement]) -> Finding {
    let missing = kernel::missing(reqs);
    let unknown: Vec<String> = reqs
        .iter()
        .filter_map(|r| match &r.present {
            kernel::Probe::Unknown(why) => Some(format!("{}: {why}", r.what)),
            _ => None,
        })
        .collect();
    if !missing.is_empty() {
        let names: Vec<&str> = missing.iter().map(|r| r.what).collect();
        let lacks: Vec<String> = missing
            .iter()
            .map(|r| {
                format!(
                    "{} (in Linux since {}; the gate needs them for {})",
                    r.what, r.since, r.why
                )
            })
            .collect();
        Finding::new(
            "kernel",
            Severity::Fail,
            format!(
                "Linux {rel} is too old for the gate: it lacks {}",
                names.join(", ")
            ),
        )
        .detail(format!(
            "The gate runs inside the kernel, and this one lacks {}. `mx6gate run` refuses to start \
             here and nothing is gated: every IPv6 sender reaches the MTA as it does today.",
            lacks.join("; ")
        ))
        .fix(format!(
            "run Linux {} or later: the stock kernels of {} are new enough",
            kernel::FLOOR,
            kernel::FLOOR_DISTROS
        ))
    } else if !unknown.is_empty() {
        Finding::new(
            "kernel",
            Severity::Warn,
            format!("Linux {rel}: could not probe its BPF features"),
        )
        .detail(unknown.join("; "))
        .fix("run doctor as root")
    } else {
        Finding::new(
            "kernel",
            Severity::Ok,
            format!("Linux {rel}: sk_lookup, BPF links and ring buffers present"),
        )
    }
}

/// The kernel's features, probed (not read off the version), and whether
/// its verifier takes the gate's programs.
pub(super) fn kernel(ctx: &Ctx) -> Vec<Finding> {
    let pin_path = &ctx.cfg.pin_path;
    let mut out = Vec::new();
    let reqs = kernel::requirements();
    let found = kernel_finding(&kernel::release(), &reqs);
    let fit = found.severity == Severity::Ok;
    out.push(found);
    if fit {
        out.push(match Gate::verify(&ctx.cfg) {
            Ok(_) => Finding::new(
                "programs",
                Severity::Ok,
                "both programs pass this kernel's verifier",
            ),
            Err(e) => Finding::new(
                "programs",
                Severity::Fail,
                "this kernel's verifier refuses the gate's programs",
            )
            .detail(format!(
                "`mx6gate run` cannot load the gate here, so nothing is gated. The loader said: {}",
                tail(&format!("{e:#}"), 600)
            ))
            .fix("report it with the kernel release and this output; meanwhile run a kernel the project tests (README, Supported kernels)"),
        });
    }
    out.push(
        Finding::new(
            "kernel:features",
            Severity::Info,
            "newer kernel features the gate uses where present",
        )
        .detail(kernel::Optional::probe().describe().join("; ")),
    );
    out.push(if Path::new("/sys/kernel/btf/vmlinux").exists() {
        Finding::new("btf", Severity::Ok, "kernel BTF present (/sys/kernel/btf/vmlinux)")
    } else {
        Finding::new("btf", Severity::Warn, "no kernel BTF (/sys/kernel/btf/vmlinux)")
            .detail("The gate's programs do not need CO-RE today, but bpftool and most BPF tooling work better with it.")
            .fix("use a kernel built with CONFIG_DEBUG_INFO_BTF=y (Debian's are)")
    });
    // The pin path itself may not exist yet: its filesystem is its parent's.
    let probe = pin_path
        .ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"));
    out.push(match crate::gate::is_bpffs(probe) {
        Ok(true) => Finding::new(
            "bpffs",
            Severity::Ok,
            format!("{} is on a BPF filesystem", probe.display()),
        ),
        Ok(false) => Finding::new(
            "bpffs",
            Severity::Fail,
            format!("{} is not on a BPF filesystem", probe.display()),
        )
        .detail(
            "The gate pins its programs, links and maps there so that they outlive the daemon (restarts \
             leave no gap); without bpffs nothing can be pinned and the gate cannot start.",
        )
        .fix("mount it: `mount -t bpf bpf /sys/fs/bpf` (systemd mounts it at boot), or set pin_path under it"),
        Err(e) => Finding::new(
            "bpffs",
            Severity::Warn,
            format!("could not stat {}: {e}", probe.display()),
        ),
    });
    out
}
