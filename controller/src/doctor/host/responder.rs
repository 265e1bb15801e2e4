//! Defer mode's responder, asked as a sender would.
use super::*;
/// Defer mode needs the responder: connect to it and read its greeting,
/// as a sender would.
pub(super) fn responder(
    ctx: &Ctx,
    mode: Mode,
    daemon: Option<i32>,
    maps: Option<&GateMaps>,
    out: &mut Vec<Finding>,
) {
    let r = &ctx.cfg.responder;
    if mode != Mode::Defer {
        out.push(Finding::new(
            "responder",
            Severity::Ok,
            format!("not used in {} mode", mode.as_str()),
        ));
        return;
    }
    let down = r.down_policy.consequence();
    let greeting = daemon
        .ok_or_else(|| "the daemon is not running".to_string())
        .and_then(|_| read_greeting(SocketAddr::V6(r.listen)));
    match greeting {
        Ok(line) if line.starts_with(&r.code.to_string()) => out.push(Finding::new(
            "responder",
            Severity::Ok,
            format!("answers on {}: {line}", r.listen),
        )),
        Ok(line) => out.push(
            Finding::new(
                "responder",
                Severity::Warn,
                format!("something else answers on {}: {line:?}", r.listen),
            )
            .fix("check `[responder] listen` for a clash with another service"),
        ),
        Err(e) => out.push(
            Finding::new(
                "responder",
                Severity::Fail,
                format!("no responder on {}: {e}", r.listen),
            )
            .detail(format!(
                "The gate is in defer mode; while the responder is down, {down}."
            ))
            .fix("start the daemon (`systemctl start mx6gate`) and check its log"),
        ),
    }
    if let Some(maps) = maps {
        if let Ok(c) = maps.sk_counters() {
            let n: u64 = c
                .iter()
                .filter(|(c, _)| {
                    matches!(
                        c,
                        Counter::SkResponderDownPassed | Counter::SkResponderDownRefused
                    )
                })
                .map(|(_, n)| n)
                .sum();
            if n > 0 {
                out.push(
                    Finding::new(
                        "responder-gaps",
                        Severity::Warn,
                        format!("{n} deferred connection(s) found no responder since the gate was loaded"),
                    )
                    .detail(format!("Each time, {down}."))
                    .fix("keep the daemon running (systemd restarts it on failure); read its log around the gaps"),
                );
            }
        }
    }
}

pub(super) fn read_greeting(addr: SocketAddr) -> Result<String, String> {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(3))).ok();
    let mut line = String::new();
    let mut r = BufReader::new(&s);
    r.read_line(&mut line)
        .map_err(|e| format!("reading the greeting: {e}"))?;
    let _ = (&s).write_all(b"QUIT\r\n");
    Ok(line.trim_end().to_string())
}
