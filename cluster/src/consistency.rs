//! Consistency levels: how many of a key's N replicas must answer a read (R) or acknowledge a
//! write (W). Set per node, per connection (`CONSISTENCY read write`) and per request
//! (`R n` / `W n`); the most specific wins.

use std::fmt;
use std::str::FromStr;

use crate::error::Error;

/// A level as the user wrote it; [`Consistency::required`] turns it into a count for a given N.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Consistency {
    One,
    /// A majority: `N / 2 + 1`.
    Quorum,
    All,
    /// Exactly this many replicas (at least 1). More than N can never be met: UNAVAILABLE.
    Count(u32),
}

impl Consistency {
    /// Replicas that must answer when the key has `n` replicas.
    pub fn required(self, n: u32) -> u32 {
        match self {
            Consistency::One => 1,
            Consistency::Quorum => n / 2 + 1,
            Consistency::All => n,
            Consistency::Count(k) => k,
        }
    }
}

impl FromStr for Consistency {
    type Err = Error;

    /// `ONE`, `QUORUM`, `ALL` (any case) or a positive decimal number.
    fn from_str(s: &str) -> Result<Consistency, Error> {
        let level = if s.eq_ignore_ascii_case("one") {
            Consistency::One
        } else if s.eq_ignore_ascii_case("quorum") {
            Consistency::Quorum
        } else if s.eq_ignore_ascii_case("all") {
            Consistency::All
        } else {
            match s.parse::<u32>() {
                Ok(k) if k > 0 && s.bytes().all(|b| b.is_ascii_digit()) => Consistency::Count(k),
                _ => return Err(Error::InvalidConsistency(s.to_string())),
            }
        };
        Ok(level)
    }
}

impl fmt::Display for Consistency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Consistency::One => f.write_str("ONE"),
            Consistency::Quorum => f.write_str("QUORUM"),
            Consistency::All => f.write_str("ALL"),
            Consistency::Count(k) => write!(f, "{k}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parse_and_required() {
        assert_eq!("quorum".parse::<Consistency>().unwrap().required(3), 2);
        assert_eq!("ONE".parse::<Consistency>().unwrap().required(3), 1);
        assert_eq!("All".parse::<Consistency>().unwrap().required(5), 5);
        assert_eq!("2".parse::<Consistency>().unwrap(), Consistency::Count(2));
        assert_eq!(Consistency::Quorum.required(4), 3);
        for bad in ["", "0", "-1", "+2", "two", "1.0", "99999999999"] {
            assert!(bad.parse::<Consistency>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn quorums_intersect() {
        for n in 1..10 {
            let q = Consistency::Quorum.required(n);
            assert!(q + q > n && q <= n);
        }
    }

    proptest! {
        #[test]
        fn display_parses_back(k in 1u32..1000, which in 0usize..4) {
            let level: Consistency = [Consistency::One, Consistency::Quorum, Consistency::All, Consistency::Count(k)][which];
            prop_assert_eq!(level.to_string().parse::<Consistency>().unwrap(), level);
        }
    }
}
