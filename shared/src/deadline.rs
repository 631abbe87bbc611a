//! When an invocation must be done: Lambda gives every invocation a deadline (its
//! configured timeout from the start), and work that could run past it is bounded by what
//! is left of it, so a slow step ends in an answer (a failed document, a 504) instead of
//! the function being cut off mid-write.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A point in time by which the invocation must be done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Deadline(Instant);

impl Deadline {
    /// From the Lambda context's deadline, in milliseconds since the Unix epoch. A deadline
    /// already past (or a clock before the epoch) is now.
    pub fn from_epoch_ms(ms: u64) -> Self {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        Self(Instant::now() + Duration::from_millis(ms).saturating_sub(now))
    }

    /// `timeout` from now (a function's configured timeout, where no context gives one).
    pub fn after(timeout: Duration) -> Self {
        Self(Instant::now() + timeout)
    }

    /// What is left of it; zero once it has passed.
    pub fn remaining(&self) -> Duration {
        self.0.saturating_duration_since(Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lambda_deadline_becomes_the_time_left() {
        let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
        let left = Deadline::from_epoch_ms(now_ms + 30_000).remaining();
        assert!(left > Duration::from_secs(29) && left <= Duration::from_secs(30), "{left:?}");
        assert_eq!(Deadline::from_epoch_ms(now_ms - 5_000).remaining(), Duration::ZERO);
        assert_eq!(Deadline::from_epoch_ms(0).remaining(), Duration::ZERO);
        let after = Deadline::after(Duration::from_secs(10)).remaining();
        assert!(after > Duration::from_secs(9) && after <= Duration::from_secs(10));
    }
}
