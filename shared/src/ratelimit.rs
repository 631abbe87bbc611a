//! Rate limiting per user and per tenant with counters in fixed windows
//! (`COACH_RATE_LIMIT_WINDOW_SECS`, one minute by default). A request counts against the
//! user's window and the tenant's at once (one round trip); when either is full the request
//! gets 429 with `Retry-After` (seconds to the next window), and whatever it counted is given
//! back, so a refused request uses up neither limit. Counters expire through the table's TTL.
//!
//! The limiter fails closed, except when the counters cannot be reached at all:
//!
//! - the counter store throttling Coach: 429 (`Retry-After: 1`), as a flood is what makes it
//!   throttle;
//! - any other refusal (access denied, a missing table): 503, as the limit cannot be known;
//! - unreachable, or no answer in time: the request is counted in this instance's memory
//!   against the same limits, so an outage of the table neither blocks every request nor
//!   lifts the limits (each warm instance counts on its own, so the limit holds per
//!   instance rather than overall while it lasts).

use std::{
    future::Future,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use crate::{
    auth::Principal,
    config::{ConfigError, Env},
    error::Error,
    ids::now_ms,
    store::{Counter, Counters, Failure, StoreError},
};

/// Most windows kept in memory for the fallback count (users and tenants of one instance).
const LOCAL_WINDOWS: u64 = 10_000;

/// Requests allowed per window (`COACH_RATE_LIMIT_USER`, `COACH_RATE_LIMIT_TENANT`; 0 turns
/// a limit off) and the window (`COACH_RATE_LIMIT_WINDOW_SECS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitConfig {
    pub per_user: u64,
    pub per_tenant: u64,
    pub window: Duration,
}

impl RateLimitConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            per_user: env.number("COACH_RATE_LIMIT_USER")?,
            per_tenant: env.number("COACH_RATE_LIMIT_TENANT")?,
            window: Duration::from_secs(env.number("COACH_RATE_LIMIT_WINDOW_SECS")?),
        })
    }
}

pub struct RateLimiter {
    counters: Arc<dyn Counters>,
    config: RateLimitConfig,
    /// The fallback count while the counter store is unreachable, per counter and window.
    local: moka::future::Cache<String, Arc<AtomicU64>>,
}

/// What counting one request against one limit gave.
enum Verdict {
    /// Counted, in the store or (`local`) in memory.
    Counted {
        local: bool,
    },
    Full,
    /// The store is throttling Coach.
    Throttled,
    /// The store refused for another reason: the limit cannot be known.
    Broken(StoreError),
}

/// One window of one counter.
struct Window<'a> {
    counter: Counter<'a>,
    start: u64,
    limit: u64,
}

impl Window<'_> {
    fn local_key(&self) -> String {
        match self.counter {
            Counter::User(owner) => format!("user\n{}\n{}\n{}", owner.tenant, owner.user, self.start),
            Counter::Tenant(tenant) => format!("tenant\n{tenant}\n{}", self.start),
        }
    }
}

impl RateLimiter {
    pub fn new(counters: Arc<dyn Counters>, config: RateLimitConfig) -> Self {
        let local = moka::future::Cache::builder()
            .max_capacity(LOCAL_WINDOWS)
            .time_to_live(config.window.max(Duration::from_secs(1)) * 2)
            .build();
        Self { counters, config, local }
    }

    /// Counts one request of `who`; 429 when the user's or the tenant's window is full (or
    /// the counters are throttled), 503 when the counters refuse to answer.
    pub async fn check(&self, who: &Principal) -> Result<(), Error> {
        self.check_with(who, async { Ok(()) }).await
    }

    /// [`RateLimiter::check`] with another admission check (`gate`, a budget) run at the same
    /// time, in the same round trip: a request `gate` refuses gives back what it counted, and
    /// gets `gate`'s error (unless a limit refused it too, which is said first).
    pub async fn check_with(
        &self,
        who: &Principal,
        gate: impl Future<Output = Result<(), Error>>,
    ) -> Result<(), Error> {
        let now = now_ms();
        let window_ms = (self.config.window.as_millis() as u64).max(1000);
        let start = now / window_ms * window_ms;
        let retry_after_secs = ((start + window_ms).saturating_sub(now)).div_ceil(1000).max(1);
        let expires_at = (start + 2 * window_ms) / 1000;
        let windows: Vec<Window> = [
            (Counter::User(who.owner()), self.config.per_user),
            (Counter::Tenant(&who.tenant), self.config.per_tenant),
        ]
        .into_iter()
        .filter(|(_, limit)| *limit > 0)
        .map(|(counter, limit)| Window { counter, start, limit })
        .collect();
        let takes = futures_util::future::join_all(windows.iter().map(|window| self.take(window, expires_at)));
        let (verdicts, gate) = tokio::join!(takes, gate);
        let counted = verdicts.iter().all(|v| matches!(v, Verdict::Counted { .. }));
        if counted && gate.is_ok() {
            return Ok(());
        }
        // Refused: what was counted is given back, so the refusal uses up no limit.
        let give_back = windows.iter().zip(&verdicts).filter_map(|(window, verdict)| match verdict {
            Verdict::Counted { local } => Some(self.give_back(window, *local)),
            _ => None,
        });
        futures_util::future::join_all(give_back).await;
        if counted {
            return gate;
        }
        // A full window says most (when to come back), then throttling, then the failure.
        let (mut full, mut throttled, mut broken) = (false, false, None);
        for verdict in verdicts {
            match verdict {
                Verdict::Counted { .. } => {}
                Verdict::Full => full = true,
                Verdict::Throttled => throttled = true,
                Verdict::Broken(e) => broken = Some(e),
            }
        }
        if full {
            tracing::info!(tenant = %who.tenant, "rate limit reached");
            crate::metrics::rate_limited("limit");
            return Err(Error::RateLimited { retry_after_secs });
        }
        if throttled {
            tracing::warn!(tenant = %who.tenant, "rate limit counters throttled; request refused");
            crate::metrics::rate_limited("throttled");
            return Err(Error::RateLimited { retry_after_secs: 1 });
        }
        Err(match broken {
            Some(e) => Error::unavailable("the rate limiter is unavailable", e),
            None => Error::internal("a request refused without a reason"),
        })
    }

    async fn take(&self, window: &Window<'_>, expires_at: u64) -> Verdict {
        match self.counters.take(window.counter, window.start, window.limit, expires_at).await {
            Ok(true) => Verdict::Counted { local: false },
            Ok(false) => Verdict::Full,
            Err(e) => match e.failure() {
                Some(Failure::Throttled) => Verdict::Throttled,
                Some(Failure::Unreachable | Failure::TimedOut) => {
                    tracing::warn!(failure = ?e.failure(), "rate limit counters unreachable; counting in memory");
                    let count = self.local.get_with(window.local_key(), async { Arc::new(AtomicU64::new(0)) }).await;
                    let taken =
                        count.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| (n < window.limit).then_some(n + 1));
                    if taken.is_ok() {
                        Verdict::Counted { local: true }
                    } else {
                        Verdict::Full
                    }
                }
                _ => Verdict::Broken(e),
            },
        }
    }

    async fn give_back(&self, window: &Window<'_>, local: bool) {
        if local {
            if let Some(count) = self.local.get(&window.local_key()).await {
                let _ = count.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
            }
            return;
        }
        if let Err(e) = self.counters.give_back(window.counter, window.start).await {
            // The count stays one too high until the window ends.
            tracing::warn!(failure = ?e.failure(), "could not give back a refused request's count");
        }
    }
}
