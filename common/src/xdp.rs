//! What the XDP program does with a SYN to a protected port from a source
//! outside the allowlist, by mode: the one mapping the program, the
//! reference classifier (`classify`) and `mx6gate check` share, as
//! `steer::decide` is sk_lookup's.
use crate::{report::ReportAction, Counter, Mode};

/// The XDP verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// XDP_PASS: the packet continues unchanged.
    Pass,
    /// XDP_DROP.
    Drop,
    /// XDP_TX: the buffer was rewritten into a RST and goes back out.
    Tx,
}

/// A non-partner SYN's fate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NonPartner {
    pub action: Action,
    pub counter: Counter,
    /// Drop and reset are final in XDP, so XDP reports them; what it
    /// passes on (monitor, plain defer) sk_lookup reports, once per
    /// connection.
    pub report: Option<ReportAction>,
}

/// `escalate`: defer mode and the source was explained within the
/// window (its SYN is a new attempt, not the explained connection's
/// retransmit: see `explain::seen`); ignored in the other modes.
#[inline(always)]
pub const fn decide(mode: Mode, escalate: bool) -> NonPartner {
    let (action, counter, report) = match mode {
        Mode::Monitor => (Action::Pass, Counter::Monitored, None),
        Mode::Defer if escalate => (
            Action::Tx,
            Counter::Escalated,
            Some(ReportAction::Escalated),
        ),
        Mode::Defer => (Action::Pass, Counter::Deferred, None),
        Mode::Drop => (Action::Drop, Counter::Dropped, Some(ReportAction::Drop)),
        Mode::Reset => (Action::Tx, Counter::Reset, Some(ReportAction::Reset)),
    };
    NonPartner {
        action,
        counter,
        report,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn by_mode() {
        let d = |m, e| {
            let d = decide(m, e);
            (d.action, d.counter, d.report)
        };
        use Action::*;
        for e in [false, true] {
            assert_eq!(d(Mode::Monitor, e), (Pass, Counter::Monitored, None));
            assert_eq!(
                d(Mode::Drop, e),
                (Drop, Counter::Dropped, Some(ReportAction::Drop))
            );
            assert_eq!(
                d(Mode::Reset, e),
                (Tx, Counter::Reset, Some(ReportAction::Reset))
            );
        }
        assert_eq!(d(Mode::Defer, false), (Pass, Counter::Deferred, None));
        assert_eq!(
            d(Mode::Defer, true),
            (Tx, Counter::Escalated, Some(ReportAction::Escalated))
        );
    }
}
