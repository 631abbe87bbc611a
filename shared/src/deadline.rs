//! When an invocation must be done: Lambda gives every invocation a deadline (its
//! configured timeout from the start), and work that could run past it is bounded by what
//! is left of it, so a slow step ends in an answer (a failed document, a 504) instead of
//! the function being cut off mid-write.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Lambda's longest function timeout.
pub const LONGEST_INVOCATION: Duration = Duration::from_secs(900);

/// Kept from a deadline to answer in time (a 504 rather than a cut-off invocation).
pub const ANSWER_MARGIN: Duration = Duration::from_millis(1500);

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

    /// The deadline of an invocation whose context says `ms` (epoch milliseconds): that, if
    /// it is still ahead; otherwise Lambda's longest timeout from now. Lambda never starts an
    /// invocation past its deadline, but emulators do (`cargo lambda watch` sends a fixed
    /// 600000, ten minutes into 1970), and a test's context has none (0).
    pub fn of_invocation(ms: u64) -> Self {
        let deadline = Self::from_epoch_ms(ms);
        if deadline.remaining().is_zero() {
            Self::after(LONGEST_INVOCATION)
        } else {
            deadline
        }
    }

    /// `timeout` from now (a function's configured timeout, where no context gives one).
    pub fn after(timeout: Duration) -> Self {
        Self(Instant::now() + timeout)
    }

    /// How long work that must also end within `limit` may take, keeping [`ANSWER_MARGIN`]
    /// to answer.
    pub fn budget(&self, limit: Duration) -> Duration {
        self.remaining().min(limit).saturating_sub(ANSWER_MARGIN)
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

    #[test]
    fn an_invocation_already_past_its_deadline_has_none() {
        let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
        let real = Deadline::of_invocation(now_ms + 30_000).remaining();
        assert!(real > Duration::from_secs(29) && real <= Duration::from_secs(30), "{real:?}");
        // cargo lambda watch's fixed value, and a test's empty context: no deadline known.
        for bogus in [600_000, 0] {
            assert!(Deadline::of_invocation(bogus).remaining() > Duration::from_secs(899));
        }
    }
}
