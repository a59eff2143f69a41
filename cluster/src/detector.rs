//! The phi accrual failure detector (Hayashibara et al., as Cassandra and Akka use it): a
//! member is judged by how unlikely its silence is, given the intervals at which its
//! heartbeats have arrived, instead of by a fixed timeout.
//!
//! Intervals are modelled as a normal distribution with the window's mean and standard
//! deviation (the deviation floored at `min_std_dev`, so a perfectly regular sender is not
//! convicted by a hair's delay); `phi(t) = -log10(P(interval > t))`, with the logistic
//! approximation of the normal tail Akka uses. `acceptable_pause` is added to the mean: a
//! pause that long (a garbage collector, a busy machine) costs no suspicion.
//!
//! **Bound.** With threshold `phi_t`, a member is convicted once its silence exceeds
//! `mean + acceptable_pause + z(phi_t) * max(std_dev, min_std_dev)`, where `z(8) ≈ 5.2` and
//! `z(4) ≈ 3.4` ([`Detector::conviction_after`] computes it). With heartbeats every second,
//! the defaults convict after about 1 + 1 + 5.2 × 0.5 ≈ 4.6 s of silence.

use std::collections::VecDeque;
use std::time::Duration;

/// Intervals remembered per member: enough for a stable mean, few enough to follow a change
/// of pace within a couple of minutes at one heartbeat a second.
pub const WINDOW_LEN: usize = 100;

/// Tuning of a [`Detector`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DetectorConfig {
    /// Phi at or above which a member is down (Cassandra's `phi_convict_threshold`).
    pub threshold: f64,
    /// Floor of the interval deviation.
    pub min_std_dev: Duration,
    /// Silence added to the mean before suspicion starts.
    pub acceptable_pause: Duration,
    /// The expected interval, used until real intervals have been seen.
    pub first_interval: Duration,
}

impl DetectorConfig {
    /// Cassandra's threshold with Akka's floors, for heartbeats every `interval`.
    pub fn for_interval(interval: Duration) -> DetectorConfig {
        DetectorConfig {
            threshold: 8.0,
            min_std_dev: interval / 2,
            acceptable_pause: interval,
            first_interval: interval,
        }
    }
}

/// One member's heartbeat history.
#[derive(Debug, Clone)]
pub struct Detector {
    config: DetectorConfig,
    /// Intervals in seconds, with their running sum and sum of squares.
    intervals: VecDeque<f64>,
    sum: f64,
    sum_sq: f64,
    last: Option<Duration>,
}

impl Detector {
    pub fn new(config: DetectorConfig) -> Detector {
        Detector {
            config,
            intervals: VecDeque::with_capacity(WINDOW_LEN),
            sum: 0.0,
            sum_sq: 0.0,
            last: None,
        }
    }

    /// A heartbeat arrived at `now`.
    pub fn heartbeat(&mut self, now: Duration) {
        if let Some(last) = self.last {
            if self.intervals.len() == WINDOW_LEN {
                if let Some(old) = self.intervals.pop_front() {
                    self.sum -= old;
                    self.sum_sq -= old * old;
                }
            }
            let interval = now.saturating_sub(last).as_secs_f64();
            self.intervals.push_back(interval);
            self.sum += interval;
            self.sum_sq += interval * interval;
        }
        self.last = Some(now);
    }

    /// When the last heartbeat arrived.
    pub fn last_heard(&self) -> Option<Duration> {
        self.last
    }

    /// The suspicion level at `now`: 0 right after a heartbeat, growing with silence.
    pub fn phi(&self, now: Duration) -> f64 {
        let Some(last) = self.last else {
            return 0.0;
        };
        let (mean, std_dev) = self.distribution();
        let silence = now.saturating_sub(last).as_secs_f64();
        phi(silence, mean, std_dev)
    }

    /// Whether phi has reached the threshold at `now`.
    pub fn is_down(&self, now: Duration) -> bool {
        self.phi(now) >= self.config.threshold
    }

    /// How long after the last heartbeat the member is convicted, as the history stands.
    pub fn conviction_after(&self) -> Duration {
        let (mean, std_dev) = self.distribution();
        let (mut lo, mut hi) = (0.0_f64, mean + 100.0 * std_dev + 1.0);
        for _ in 0..64 {
            let mid = (lo + hi) / 2.0;
            if phi(mid, mean, std_dev) >= self.config.threshold {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        Duration::from_secs_f64(hi)
    }

    /// Mean (with the acceptable pause) and floored standard deviation of the intervals,
    /// in seconds.
    fn distribution(&self) -> (f64, f64) {
        let pause = self.config.acceptable_pause.as_secs_f64();
        let floor = self.config.min_std_dev.as_secs_f64();
        if self.intervals.is_empty() {
            let first = self.config.first_interval.as_secs_f64();
            return (first + pause, (first / 4.0).max(floor));
        }
        let n = self.intervals.len() as f64;
        let mean = self.sum / n;
        // Rounding can leave the running variance a hair below zero.
        let variance = (self.sum_sq / n - mean * mean).max(0.0);
        (mean + pause, variance.sqrt().max(floor))
    }
}

/// `-log10(P(X > t))` for X normal with `mean` and `std_dev`, by the logistic approximation.
fn phi(t: f64, mean: f64, std_dev: f64) -> f64 {
    let y = (t - mean) / std_dev;
    let e = (-y * (1.5976 + 0.070566 * y * y)).exp();
    let tail = if t > mean {
        e / (1.0 + e)
    } else {
        1.0 - 1.0 / (1.0 + e)
    };
    // A tail below f64's resolution is certainty: cap rather than return infinity.
    -tail.max(1e-300).log10()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn regular(beats: u32, every: Duration) -> Detector {
        let mut d = Detector::new(DetectorConfig::for_interval(SECOND));
        for i in 0..beats {
            d.heartbeat(every * i);
        }
        d
    }

    #[test]
    fn silence_raises_suspicion_until_conviction() {
        let d = regular(50, SECOND);
        let last = d.last_heard().unwrap();
        assert!(d.phi(last) < 0.1);
        assert!(
            !d.is_down(last + 2 * SECOND),
            "a pause of the acceptable length"
        );
        assert!(d.is_down(last + 6 * SECOND));
        let mut previous = 0.0;
        for ms in (0..8000).step_by(250) {
            let p = d.phi(last + Duration::from_millis(ms));
            assert!(p >= previous, "phi never falls while silent");
            previous = p;
        }
    }

    #[test]
    fn the_documented_bound_holds_for_one_second_heartbeats() {
        let d = regular(50, SECOND);
        let after = d.conviction_after();
        assert!(
            after > Duration::from_secs(4) && after < Duration::from_secs(5),
            "{after:?}"
        );
        let last = d.last_heard().unwrap();
        assert!(!d.is_down(last + after - Duration::from_millis(10)));
        assert!(d.is_down(last + after + Duration::from_millis(10)));
    }

    #[test]
    fn irregular_heartbeats_earn_more_patience() {
        let mut jittery = Detector::new(DetectorConfig::for_interval(SECOND));
        let mut t = Duration::ZERO;
        for i in 0..60 {
            t += if i % 2 == 0 { SECOND / 4 } else { 3 * SECOND };
            jittery.heartbeat(t);
        }
        assert!(jittery.conviction_after() > regular(60, SECOND).conviction_after());
    }

    #[test]
    fn a_member_never_heard_is_not_suspected() {
        let d = Detector::new(DetectorConfig::for_interval(SECOND));
        assert_eq!(d.phi(Duration::from_secs(1000)), 0.0);
    }
}
