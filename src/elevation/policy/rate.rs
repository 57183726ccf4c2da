//! How fast an agent may file new elevations: a token bucket per agent,
//! refilled at `elevation.maxRequestsPerMinute` with a burst of a third of
//! a minute's worth (20 of the default 60). Joining an identical pending
//! elevation files nothing and takes no token; nor does an answer that
//! needs no approval.

use std::time::{Duration, SystemTime};

/// One agent's bucket.
#[derive(Debug, Clone, Copy)]
pub struct Bucket {
    tokens: f64,
    at: SystemTime,
}

/// The most new elevations an agent may file at once.
pub fn burst(per_minute: u32) -> u32 {
    (per_minute / 3).max(1)
}

impl Bucket {
    /// A full bucket.
    pub fn full(per_minute: u32, now: SystemTime) -> Bucket {
        Bucket {
            tokens: f64::from(burst(per_minute)),
            at: now,
        }
    }

    /// A bucket as stored: its tokens at `at`.
    pub fn from_parts(tokens: f64, at: SystemTime) -> Bucket {
        Bucket { tokens, at }
    }

    /// The tokens and when they were counted, to store.
    pub fn parts(&self) -> (f64, SystemTime) {
        (self.tokens, self.at)
    }

    /// The bucket refilled up to `now`. Its clock never runs back: a `now`
    /// older than the last count (a request that read the time before
    /// another was counted, or a replica whose clock is behind) refills
    /// nothing and leaves the time as it was, so the same seconds are never
    /// refilled twice.
    fn refilled(self, per_minute: u32, now: SystemTime) -> Bucket {
        let Ok(elapsed) = now.duration_since(self.at) else {
            return self;
        };
        let tokens = (self.tokens + elapsed.as_secs_f64() * f64::from(per_minute) / 60.0)
            .min(f64::from(burst(per_minute)));
        Bucket { tokens, at: now }
    }

    /// Whether a new elevation may be filed at `now`; when not, how long
    /// until one may.
    pub fn check(&self, per_minute: u32, now: SystemTime) -> Result<(), Duration> {
        let b = self.refilled(per_minute, now);
        if b.tokens >= 1.0 {
            return Ok(());
        }
        let per_second = f64::from(per_minute.max(1)) / 60.0;
        Err(Duration::from_secs_f64((1.0 - b.tokens) / per_second))
    }

    /// Takes one token (after a successful [`Bucket::check`]).
    pub fn take(&mut self, per_minute: u32, now: SystemTime) {
        let mut b = self.refilled(per_minute, now);
        b.tokens = (b.tokens - 1.0).max(0.0);
        *self = b;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut b = Bucket::full(60, t0);
        for _ in 0..20 {
            assert!(b.check(60, t0).is_ok());
            b.take(60, t0);
        }
        let wait = b.check(60, t0).err();
        assert_eq!(wait.map(|d| d.as_secs()), Some(1));
        // One a second at 60 a minute.
        let t1 = t0 + Duration::from_secs(1);
        assert!(b.check(60, t1).is_ok());
        b.take(60, t1);
        assert!(b.check(60, t1).is_err());
        // Refills no further than the burst.
        let later = t1 + Duration::from_secs(3600);
        for _ in 0..20 {
            b.take(60, later);
        }
        assert!(b.check(60, later).is_err());
    }

    #[test]
    fn a_slow_rate_still_allows_one() {
        assert_eq!(burst(1), 1);
        let t0 = SystemTime::UNIX_EPOCH;
        let mut b = Bucket::full(1, t0);
        assert!(b.check(1, t0).is_ok());
        b.take(1, t0);
        assert_eq!(b.check(1, t0).err().map(|d| d.as_secs()), Some(60));
    }

    #[test]
    fn a_clock_going_back_refills_nothing() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(100);
        let mut b = Bucket::full(3, t0);
        b.take(3, t0);
        assert!(b.check(3, t0 - Duration::from_secs(50)).is_err());
    }

    #[test]
    fn a_late_count_with_an_earlier_time_refills_no_second_twice() {
        // Two requests read the time at t0 and t0 + 10s; the later one is
        // counted first.
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let mut b = Bucket::full(60, t0);
        for _ in 0..20 {
            b.take(60, t0);
        }
        let t10 = t0 + Duration::from_secs(10);
        b.take(60, t10);
        b.take(60, t0);
        // Ten seconds refilled ten tokens, two were taken: eight are left
        // at t10, not eighteen.
        let mut allowed = 0;
        while b.check(60, t10).is_ok() {
            b.take(60, t10);
            allowed += 1;
        }
        assert_eq!(allowed, 8);
    }
}
