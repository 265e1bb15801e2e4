//! Medians of repeated runs, with their spread.
use std::fmt;

/// A figure measured `n` times: its median and its range.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Stat {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

impl Stat {
    /// Every figure multiplied by `k` (units).
    pub fn scaled(self, k: f64) -> Stat {
        Stat {
            median: self.median * k,
            min: self.min * k,
            max: self.max * k,
            n: self.n,
        }
    }

    pub fn of(samples: &[f64]) -> Stat {
        if samples.is_empty() {
            return Stat::default();
        }
        let mut v = samples.to_vec();
        v.sort_by(|a, b| a.total_cmp(b));
        let m = v.len();
        let median = if m % 2 == 1 {
            v[m / 2]
        } else {
            (v[m / 2 - 1] + v[m / 2]) / 2.0
        };
        Stat {
            median,
            min: v[0],
            max: v[m - 1],
            n: m,
        }
    }
}

/// Numbers with a sensible number of digits for a table.
pub fn num(x: f64) -> String {
    let a = x.abs();
    if a >= 100.0 {
        format!("{x:.0}")
    } else if a >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

/// `median (min–max)`.
impl fmt::Display for Stat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.n == 0 {
            return write!(f, "–");
        }
        write!(
            f,
            "{} ({}–{})",
            num(self.median),
            num(self.min),
            num(self.max)
        )
    }
}

pub use crate::measure::ratio;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_spread() {
        let s = Stat::of(&[5.0, 1.0, 3.0]);
        assert_eq!((s.median, s.min, s.max, s.n), (3.0, 1.0, 5.0, 3));
        assert_eq!(Stat::of(&[1.0, 2.0, 3.0, 10.0]).median, 2.5);
    }
}
