//! What sk_lookup does with a connection, as a pure function both the
//! program and the tests call: the kernel has already parsed everything, so
//! the decision needs only the port, whether the source is a partner, the
//! config and whether a responder socket is registered.
use crate::{Counter, GateConfig, Mode};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Steer {
    /// SK_PASS without assigning: the normal lookup finds the MTA.
    Pass(Counter),
    /// Assign the responder socket; if that fails, fall back as `down`.
    Responder,
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
        Mode::Defer => Steer::Responder,
        Mode::Reset | Mode::Drop => Steer::Refuse(Counter::SkRefused),
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

    #[test]
    fn decisions() {
        let mut cfg = GateConfig::new(Mode::Defer, &[25]);
        assert_eq!(decide(&cfg, 80, false), Steer::Pass(Counter::PassedOther));
        assert_eq!(decide(&cfg, 25, true), Steer::Pass(Counter::SkAllowed));
        assert_eq!(decide(&cfg, 25, false), Steer::Responder);
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
}
