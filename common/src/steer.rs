//! What sk_lookup does with a connection, as pure functions both the
//! program and the tests call: the kernel has already parsed everything, so
//! the decision needs only the port, whether the source is a partner, the
//! config, the source's explanation record (defer mode) and whether a
//! responder socket is registered.
use crate::{
    explain::{DeferConfig, Seen},
    Counter, GateConfig, Mode,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Steer {
    /// SK_PASS without assigning: the normal lookup finds the MTA.
    Pass(Counter),
    /// Defer mode: look up the source's explanation, then [`defer`].
    Defer,
    /// Assign the responder socket; if that fails, fall back as
    /// [`responder_down`]. With `record`, once assigned, the source is
    /// recorded as explained (never when the assignment failed: then no
    /// banner was given).
    Responder { record: bool },
    /// SK_DROP: the client sees a connection refused.
    Refuse(Counter),
}

#[inline(always)]
pub fn decide(cfg: &GateConfig, port: u16, partner: bool) -> Steer {
    if !cfg.protects(port) {
        // Not ours; counted nowhere (the MTA's other ports are not our business).
        return Steer::Pass(Counter::PassedOther);
    }
    if partner {
        return Steer::Pass(Counter::SkAllowed);
    }
    match Mode::from_u32(cfg.mode) {
        Mode::Monitor => Steer::Pass(Counter::SkMonitored),
        Mode::Defer => Steer::Defer,
        Mode::Reset | Mode::Drop => Steer::Refuse(Counter::SkRefused),
    }
}

/// Defer mode, for a source that stands at `seen` (see `explain`): a
/// fresh source gets the banner and a record; the explained connection's
/// retransmit the banner again; a repeat the refusal, unless `repeat =
/// "defer"`.
#[inline(always)]
pub fn defer(x: &DeferConfig, seen: Seen) -> Steer {
    match seen {
        Seen::Fresh => Steer::Responder {
            record: x.records(),
        },
        Seen::Retransmit => Steer::Responder { record: false },
        Seen::Repeat if x.escalates() => Steer::Refuse(Counter::SkEscalated),
        Seen::Repeat => Steer::Responder { record: false },
    }
}

/// Defer mode, responder absent: fail open unless configured to refuse
/// (invariant 9).
#[inline(always)]
pub fn responder_down(cfg: &GateConfig) -> Steer {
    if cfg.responder_down_refuse != 0 {
        Steer::Refuse(Counter::SkResponderDownRefused)
    } else {
        Steer::Pass(Counter::SkResponderDownPassed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::explain::Repeat;

    #[test]
    fn decisions() {
        let mut cfg = GateConfig::new(Mode::Defer, &[25]);
        assert_eq!(decide(&cfg, 80, false), Steer::Pass(Counter::PassedOther));
        assert_eq!(decide(&cfg, 25, true), Steer::Pass(Counter::SkAllowed));
        assert_eq!(decide(&cfg, 25, false), Steer::Defer);
        assert_eq!(
            responder_down(&cfg),
            Steer::Pass(Counter::SkResponderDownPassed)
        );
        cfg.responder_down_refuse = 1;
        assert_eq!(
            responder_down(&cfg),
            Steer::Refuse(Counter::SkResponderDownRefused)
        );
        for m in [Mode::Drop, Mode::Reset] {
            let cfg = GateConfig::new(m, &[25]);
            assert_eq!(decide(&cfg, 25, false), Steer::Refuse(Counter::SkRefused));
            assert_eq!(decide(&cfg, 25, true), Steer::Pass(Counter::SkAllowed));
        }
        let cfg = GateConfig::new(Mode::Monitor, &[25]);
        assert_eq!(decide(&cfg, 25, false), Steer::Pass(Counter::SkMonitored));
    }

    #[test]
    fn defer_by_explanation() {
        let x = |repeat: Repeat| DeferConfig {
            window_ns: 1,
            grace_ns: 0,
            explain_by: 64,
            repeat: repeat as u32,
        };
        let reset = x(Repeat::Reset);
        assert_eq!(
            defer(&reset, Seen::Fresh),
            Steer::Responder { record: true }
        );
        assert_eq!(
            defer(&reset, Seen::Retransmit),
            Steer::Responder { record: false }
        );
        assert_eq!(
            defer(&reset, Seen::Repeat),
            Steer::Refuse(Counter::SkEscalated)
        );
        let again = x(Repeat::Defer);
        assert_eq!(
            defer(&again, Seen::Fresh),
            Steer::Responder { record: true }
        );
        assert_eq!(
            defer(&again, Seen::Repeat),
            Steer::Responder { record: false }
        );
        // Zeroed settings: plain defer, no records.
        assert_eq!(
            defer(&DeferConfig::default(), Seen::Fresh),
            Steer::Responder { record: false }
        );
    }
}
