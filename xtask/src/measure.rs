//! What both benchmarks (`bench`, `bench-responder`) print beside their
//! figures: same-run ratios and the machine's load average. One copy, so
//! the two reports read the same way.

/// `a / b` as `1.23×`; "–" when there is no meaningful ratio.
pub fn ratio(a: f64, b: f64) -> String {
    if b <= 0.0 || !a.is_finite() || !b.is_finite() {
        return "–".into();
    }
    format!("{:.2}×", a / b)
}

/// The 1, 5 and 15 minute load averages (the machine is shared: other work
/// running during a bench shows here); "?" when unreadable.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios() {
        assert_eq!(ratio(3.0, 2.0), "1.50×");
        assert_eq!(ratio(1.0, 0.0), "–");
        assert_eq!(ratio(f64::NAN, 1.0), "–");
    }
}
