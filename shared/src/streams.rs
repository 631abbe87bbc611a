//! Fair streaming capacity: a tenant holds at most `COACH_STREAMS_PER_TENANT` (10)
//! concurrent streams, so one tenant cannot take every stream the function's reserved
//! concurrency allows.
//!
//! Each stream holds one of the tenant's numbered slots in DynamoDB
//! (`TENANT#{t}#STREAMS` / `SLOT#{n}`), taken with a conditional write that succeeds only on
//! a free slot (missing, or its lease past) and given back when the stream ends, on every
//! path. A slot whose instance died frees itself when its lease (the stream function's
//! timeout) is past, and the table's TTL removes it. Taking a slot first tries one at random
//! (one conditional PutItem: a lightly used tenant's stream waits one round trip); when that
//! one is taken, it reads the tenant's slots (one Query) and tries a free one, again if
//! another stream took it meanwhile. With every slot taken, 429 with `Retry-After`.

use std::{sync::Arc, time::Duration};

use crate::{
    config::{ConfigError, Env},
    deadline::Deadline,
    error::Error,
    ids::now_ms,
    store::StreamSlots,
};

/// Tries to take a slot before a full tenant is refused (another stream took the slot read
/// as free).
const TAKE_TRIES: usize = 3;
/// `Retry-After` for a tenant whose slots are all taken: streams are short.
const RETRY_AFTER_SECS: u64 = 2;

/// The tenants' stream slots. Build once per cold start.
pub struct Streams {
    store: Arc<dyn StreamSlots>,
    per_tenant: u32,
}

/// A slot held by one stream; give it back with [`Streams::release`].
#[derive(Debug)]
pub struct Slot {
    tenant: String,
    number: u32,
    holder: String,
}

/// How many streams a tenant may hold at once (`COACH_STREAMS_PER_TENANT`, 10; 0: no limit).
pub fn per_tenant(env: &Env) -> Result<u32, ConfigError> {
    Ok(env.number("COACH_STREAMS_PER_TENANT")? as u32)
}

impl Streams {
    /// At most `per_tenant` streams at once per tenant ([`per_tenant`]; 0: no limit).
    pub fn new(store: Arc<dyn StreamSlots>, per_tenant: u32) -> Self {
        Self { store, per_tenant }
    }

    /// A slot of `tenant`'s for one stream, leased until `deadline` (the stream's
    /// invocation's); 429 when every one is taken, 503 when the slots cannot be read. `None`
    /// without a limit.
    pub async fn acquire(&self, tenant: &str, deadline: Deadline) -> Result<Option<Slot>, Error> {
        if self.per_tenant == 0 {
            return Ok(None);
        }
        let unavailable = |e| Error::unavailable("stream capacity cannot be checked", e);
        let holder = ulid::Ulid::generate().to_string();
        let lease = deadline.remaining().as_millis() as u64;
        let first = fastrand::u32(0..self.per_tenant);
        let now = now_ms();
        if self.store.take_slot(tenant, first, &holder, now + lease, now).await.map_err(unavailable)? {
            return Ok(Some(Slot { tenant: tenant.to_owned(), number: first, holder }));
        }
        for _ in 0..TAKE_TRIES {
            let now = now_ms();
            let taken = self.store.slots(tenant, now).await.map_err(unavailable)?;
            let Some(free) = (0..self.per_tenant).find(|n| !taken.contains(n)) else {
                tracing::info!(tenant, streams = self.per_tenant, "every stream slot of the tenant is taken");
                crate::metrics::rate_limited("streams");
                return Err(Error::RateLimited { retry_after_secs: RETRY_AFTER_SECS });
            };
            if self.store.take_slot(tenant, free, &holder, now + lease, now).await.map_err(unavailable)? {
                return Ok(Some(Slot { tenant: tenant.to_owned(), number: free, holder }));
            }
        }
        Err(Error::RateLimited { retry_after_secs: RETRY_AFTER_SECS })
    }

    /// Gives a slot back. Best effort: a slot not given back frees itself when its lease ends.
    pub async fn release(&self, slot: Option<Slot>) {
        let Some(slot) = slot else { return };
        let freed = self.store.free_slot(&slot.tenant, slot.number, &slot.holder);
        match tokio::time::timeout(Duration::from_secs(2), freed).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(problem = %e, "could not give a stream slot back; it frees itself later"),
            Err(_) => tracing::warn!("giving a stream slot back took too long; it frees itself later"),
        }
    }
}
