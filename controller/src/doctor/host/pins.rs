//! The gate's pins, links and daemon (and who owns the pins).
use super::*;
/// The gate's pins, links and daemon; returns the maps when loaded.
pub(super) fn gate(ctx: &Ctx, daemon: Option<i32>, out: &mut Vec<Finding>) -> Option<GateMaps> {
    let cfg = &ctx.cfg;
    let layout = PinLayout::new(&cfg.pin_path);
    let maps = match GateMaps::open_if_loaded(&cfg.pin_path) {
        Ok(Some(m)) => {
            out.push(Finding::new(
                "gate",
                Severity::Ok,
                format!("loaded, pinned at {}", cfg.pin_path.display()),
            ));
            Some(m)
        }
        Ok(None) if daemon.is_some() => {
            out.push(
                Finding::new(
                    "gate",
                    Severity::Fail,
                    format!(
                        "nothing pinned at {} although the daemon runs",
                        cfg.pin_path.display()
                    ),
                )
                .detail(
                    "The pins were removed by hand (or pin_path changed in the file since the daemon started). \
                     The daemon holds the gate's objects and pins them again within a second; commands cannot reach \
                     the gate meanwhile.",
                )
                .fix("run doctor again; if it persists, read the daemon's log, and remove a gate only with `mx6gate detach`"),
            );
            None
        }
        Ok(None) => {
            out.push(
                Finding::new(
                    "gate",
                    Severity::Warn,
                    format!("not loaded (nothing pinned at {})", cfg.pin_path.display()),
                )
                .detail("No IPv6 SYN is looked at: every sender reaches the MTA as before.")
                .fix("start the daemon: `systemctl start mx6gate` or `mx6gate run`"),
            );
            None
        }
        Err(e) => {
            out.push(
                Finding::new("gate", Severity::Fail, format!("the pinned gate cannot be read: {e:#}"))
                    .fix("run doctor as root; if it persists, `mx6gate detach` and start the daemon again"),
            );
            None
        }
    };
    if let Ok(Some(h)) = crate::pinlock::holder(&cfg.pin_path) {
        if daemon.is_none() || h.pid.is_some_and(|p| Some(p) != daemon) {
            out.push(
                Finding::new(
                    "owner",
                    Severity::Fail,
                    format!(
                        "the gate at {} is run by another mx6gate daemon{}",
                        cfg.pin_path.display(),
                        h.pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
                    ),
                )
                .detail("Another config with the same pin_path drives this gate from its own partner store; this config's store does not count.")
                .fix("give each config its own pin_path, or use the other daemon's config"),
            );
        }
    }
    out.push(match daemon {
        Some(pid) => Finding::new("daemon", Severity::Ok, format!("running (pid {pid})")),
        None if maps.is_some() => Finding::new("daemon", Severity::Warn, "not running")
            .detail(
                "The pinned gate keeps applying the policy without it, but the allowlist no longer follows \
                 the partner store, nothing reports who is turned away, and defer mode has no responder.",
            )
            .fix("`systemctl start mx6gate` (it adopts the pinned gate without a gap)"),
        None => Finding::new("daemon", Severity::Info, "not running"),
    });
    maps.as_ref()?;
    let record = AttachRecord::load(&ctx.state.path);
    let attached = layout.attached_interfaces();
    for name in protected_interfaces(ctx) {
        let check = format!("attach:{name}");
        if crate::gate::ifindex(&name).is_none() {
            out.push(
                Finding::new(
                    &check,
                    Severity::Fail,
                    format!("interface {name} does not exist"),
                )
                .fix(format!("fix `interfaces` in {}", ctx.config_path.display())),
            );
            continue;
        }
        if !attached.contains(&name) {
            out.push(
                Finding::new(&check, Severity::Fail, format!("{name} is configured but the gate is not attached to it"))
                    .detail("IPv6 SYNs arriving on it are not looked at by XDP (sk_lookup still judges connections).")
                    .fix("restart the daemon (`systemctl restart mx6gate`) and read its log for why attaching failed"),
            );
            continue;
        }
        match record.interfaces.get(&name).map(|r| r.mode.as_str()) {
            Some("generic") => out.push(
                Finding::new(&check, Severity::Warn, format!("{name}: XDP in generic (skb) mode"))
                    .detail(
                        "The policy holds, but it runs after the kernel has built a socket buffer for each packet: \
                         a SYN flood costs several times more CPU than in native mode.",
                    )
                    .fix("use a NIC driver with native XDP (most 10G+ drivers, virtio-net, veth), then restart the daemon"),
            ),
            Some(m) => out.push(Finding::new(&check, Severity::Ok, format!("{name}: XDP in {m} mode"))),
            None => out.push(Finding::new(&check, Severity::Ok, format!("{name}: attached"))),
        }
    }
    if !layout.sk_lookup_link().exists() {
        out.push(
            Finding::new("sk_lookup", Severity::Fail, "the sk_lookup program is not attached")
                .detail("Defer mode cannot steer connections to the responder, and what XDP could not parse is not judged.")
                .fix("restart the daemon (`systemctl restart mx6gate`)"),
        );
    } else {
        out.push(Finding::new(
            "sk_lookup",
            Severity::Ok,
            "sk_lookup attached",
        ));
    }
    maps
}
