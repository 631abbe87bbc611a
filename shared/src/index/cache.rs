//! Loaded segments in memory, bounded by bytes and shared fairly: when a segment does not
//! fit, the scope holding the most bytes gives up its least recently used segment first
//! (never one the current request is using), so one large tenant cannot push every other
//! tenant out. Each eviction is logged.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use super::segment::Loaded;

struct Entry {
    segment: Arc<Loaded>,
    bytes: u64,
    used_at: u64,
}

#[derive(Default)]
struct Inner {
    /// scope -> segment id -> entry
    scopes: HashMap<String, HashMap<String, Entry>>,
    used: u64,
    clock: u64,
}

/// The segments a chat instance has loaded. Cheap to share.
pub struct SegmentCache {
    budget: u64,
    inner: Mutex<Inner>,
}

impl SegmentCache {
    pub fn new(budget: u64) -> Self {
        Self { budget, inner: Mutex::new(Inner::default()) }
    }

    /// The most bytes the cache holds.
    pub fn budget(&self) -> u64 {
        self.budget
    }

    /// Bytes held now.
    pub fn used(&self) -> u64 {
        self.lock().used
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // After a panic while it was held, at worst the byte count is off: still usable.
        super::lock(&self.inner)
    }

    pub fn get(&self, scope: &str, id: &str) -> Option<Arc<Loaded>> {
        let mut inner = self.lock();
        inner.clock += 1;
        let now = inner.clock;
        let entry = inner.scopes.get_mut(scope)?.get_mut(id)?;
        entry.used_at = now;
        Some(entry.segment.clone())
    }

    /// Keeps `segment` (of `bytes`), evicting others until it fits. Segments of `keep`
    /// (scope, id) are never evicted. Returns false, keeping nothing, when it cannot fit.
    pub fn insert(&self, scope: &str, id: &str, segment: Arc<Loaded>, bytes: u64, keep: &[(&str, &str)]) -> bool {
        let mut inner = self.lock();
        if bytes > self.budget {
            return false;
        }
        while inner.used + bytes > self.budget {
            let Some((victim_scope, victim_id)) = victim(&inner, keep) else { return false };
            let scope_map = inner.scopes.get_mut(&victim_scope);
            let removed = scope_map.and_then(|m| m.remove(&victim_id)).map_or(0, |e| e.bytes);
            if inner.scopes.get(&victim_scope).is_some_and(HashMap::is_empty) {
                inner.scopes.remove(&victim_scope);
            }
            inner.used -= removed;
            tracing::info!(
                scope = %victim_scope,
                segment = %victim_id,
                bytes = removed,
                cached_bytes = inner.used,
                budget_bytes = self.budget,
                "index cache full: evicted a segment"
            );
        }
        inner.clock += 1;
        let used_at = inner.clock;
        let previous =
            inner.scopes.entry(scope.to_owned()).or_default().insert(id.to_owned(), Entry { segment, bytes, used_at });
        inner.used = inner.used - previous.map_or(0, |e| e.bytes) + bytes;
        true
    }
}

/// The least recently used evictable segment of the scope holding the most bytes.
fn victim(inner: &Inner, keep: &[(&str, &str)]) -> Option<(String, String)> {
    let evictable = |scope: &str, id: &str| !keep.contains(&(scope, id));
    inner
        .scopes
        .iter()
        .filter_map(|(scope, entries)| {
            let held: u64 = entries.values().map(|e| e.bytes).sum();
            let lru = entries.iter().filter(|(id, _)| evictable(scope, id)).min_by_key(|(_, e)| e.used_at)?;
            Some((held, scope, lru.0))
        })
        .max_by_key(|(held, scope, _)| (*held, std::cmp::Reverse(*scope)))
        .map(|(_, scope, id)| (scope.clone(), id.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg() -> Arc<Loaded> {
        Arc::new(Loaded::new(Default::default(), &Default::default()))
    }

    #[test]
    fn the_largest_tenant_gives_way_and_what_is_in_use_stays() {
        let cache = SegmentCache::new(100);
        assert!(cache.insert("big", "b1", seg(), 40, &[]));
        assert!(cache.insert("big", "b2", seg(), 30, &[]));
        assert!(cache.insert("small", "s1", seg(), 20, &[]));
        cache.get("big", "b1");
        // 90 + 20 > 100: the big tenant's least recently used segment goes, not the small one's.
        assert!(cache.insert("other", "o1", seg(), 20, &[]));
        assert!(cache.get("big", "b2").is_none());
        assert!(cache.get("big", "b1").is_some() && cache.get("small", "s1").is_some());
        assert_eq!(cache.used(), 80);
        // Segments the request uses are kept even when theirs is the largest scope.
        assert!(cache.insert("small", "s2", seg(), 50, &[("big", "b1")]));
        assert!(cache.get("big", "b1").is_some());
        assert!(cache.used() <= 100);
        // Too big for the whole budget, or nothing left to evict: not kept.
        assert!(!cache.insert("x", "huge", seg(), 101, &[]));
        let all: Vec<(&str, &str)> = vec![("big", "b1"), ("small", "s1"), ("small", "s2"), ("other", "o1")];
        assert!(!cache.insert("x", "y", seg(), 90, &all));
        assert!(cache.used() <= 100);
    }
}
