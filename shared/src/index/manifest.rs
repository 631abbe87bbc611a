//! What a manifest change means, as pure functions on [`Manifest`]: adding or replacing a
//! document, deleting one (a tombstone), planning and applying a compaction, and finding
//! objects nobody references any more. The writer reads a manifest, applies one of these
//! and writes it back conditionally, so each is applied to a consistent state or retried.
//!
//! Invariants every operation keeps: each live document is live in exactly one served
//! segment; a served segment has at least one live document; a tombstoned document is not
//! live; an object is either referenced (served, or some live document's delta), retired
//! (waiting out the grace period) or an orphan of a crashed writer.

use std::collections::{BTreeSet, HashMap};

use crate::{
    model::Clearance,
    store::{Access, DocEntry, Manifest, Retired, SegmentInfo},
};

/// Segments smaller than this form the lowest tier.
const TIER_BASE: u64 = 64 * 1024;
/// How many segments of one tier are merged into one of the next.
pub const MERGE_FACTOR: usize = 8;

/// Size tier of a segment: 0 below [`TIER_BASE`], then one per factor of [`MERGE_FACTOR`].
fn tier(bytes: u64) -> u32 {
    let mut tier = 0;
    let mut bound = TIER_BASE;
    while bytes >= bound {
        tier += 1;
        bound = bound.saturating_mul(MERGE_FACTOR as u64);
    }
    tier
}

impl Manifest {
    /// Live documents per served segment.
    pub fn live_counts(&self) -> HashMap<&str, u32> {
        let mut counts: HashMap<&str, u32> = HashMap::new();
        for entry in self.docs.values() {
            *counts.entry(entry.segment.as_str()).or_default() += 1;
        }
        counts
    }

    /// Whether an object is still needed: served, or some live document's delta.
    pub fn references(&self, id: &str) -> bool {
        self.segments.iter().any(|s| s.id == id) || self.docs.values().any(|d| d.delta == id)
    }

    /// Retires `ids` that nothing references any more, and stops serving segments left
    /// without a live document.
    fn release(&mut self, ids: &[String], now_ms: u64) {
        let live: BTreeSet<String> = self.docs.values().map(|d| d.segment.clone()).collect();
        let empty: Vec<String> = self.segments.iter().filter(|s| !live.contains(&s.id)).map(|s| s.id.clone()).collect();
        self.segments.retain(|s| live.contains(&s.id));
        let mut candidates: BTreeSet<String> = ids.iter().cloned().collect();
        candidates.extend(empty);
        for id in candidates {
            if !self.references(&id) && !self.retired.iter().any(|r| r.id == id) {
                self.retired.push(Retired { id, since_ms: now_ms });
            }
        }
    }

    /// Serves document `id` from its new one-document segment `delta` (replacing any earlier
    /// version of it, and lifting a tombstone: the caller has checked the source exists).
    pub fn add(&mut self, id: &str, delta: SegmentInfo, etag: &str, now_ms: u64) {
        let chunks = delta.chunks;
        self.serve(delta, &[(id.to_owned(), chunks)], etag, now_ms);
    }

    /// Serves the `docs` (id, chunks) from the new segment `info`, which is also each one's
    /// delta (the only copy of its data), replacing earlier versions and lifting tombstones.
    pub fn serve(&mut self, info: SegmentInfo, docs: &[(String, u32)], etag: &str, now_ms: u64) {
        let mut replaced = Vec::new();
        for (id, chunks) in docs {
            self.deleted.remove(id);
            let entry =
                DocEntry { segment: info.id.clone(), delta: info.id.clone(), etag: etag.to_owned(), chunks: *chunks };
            if let Some(old) = self.docs.insert(id.clone(), entry) {
                replaced.extend([old.segment, old.delta]);
            }
        }
        self.segments.push(info);
        if !replaced.is_empty() {
            self.release(&replaced, now_ms);
        }
    }

    /// Deletes document `id`: a tombstone at once, its data left to the next compaction.
    /// Returns whether it was live.
    pub fn remove(&mut self, id: &str, now_ms: u64) -> bool {
        self.deleted.insert(id.to_owned(), now_ms);
        self.access.remove(id);
        match self.docs.remove(id) {
            Some(old) => {
                self.release(&[old.segment, old.delta], now_ms);
                true
            }
            None => false,
        }
    }

    /// Sets who may read document `id` (`None`: the whole tenant) as of the record's access
    /// revision `rev`, unless the manifest holds a newer one. Returns whether it changed.
    pub fn set_access(&mut self, id: &str, groups: Option<&[String]>, rev: u64) -> bool {
        let wanted = Access { groups: groups.map(<[String]>::to_vec), rev };
        match self.access.get(id) {
            Some(held) if held.rev > rev || *held == wanted => false,
            // An open document never restricted needs no entry.
            None if groups.is_none() => false,
            _ => {
                self.access.insert(id.to_owned(), wanted);
                true
            }
        }
    }

    /// Who may read document `id`: `None` the whole tenant, else these groups.
    pub fn access_of(&self, id: &str) -> Option<&[String]> {
        self.access.get(id).and_then(|a| a.groups.as_deref())
    }

    /// Per document of a segment (`ids` in its order, `live` as [`Manifest`] makes it live
    /// there): whether search may give it to a caller of `clearance`: live, and open to the
    /// tenant or restricted to a group of the caller's.
    pub fn readable<'a>(
        &self,
        ids: impl Iterator<Item = &'a str>,
        live: &[bool],
        clearance: Clearance<'_>,
    ) -> Vec<bool> {
        ids.zip(live).map(|(id, live)| *live && clearance.may_read(self.access_of(id))).collect()
    }

    /// Whether any document of the scope is restricted to groups.
    pub fn any_restricted(&self) -> bool {
        self.access.values().any(|a| a.groups.is_some())
    }

    /// Whether document `id` is tombstoned.
    pub fn is_deleted(&self, id: &str) -> bool {
        self.deleted.contains_key(id)
    }

    /// Segments to merge next, oldest first: every segment holding data of a document that
    /// is no longer live in it (deleted or replaced) or reported `damaged`, and the smallest
    /// tier with [`MERGE_FACTOR`] segments below half of `target` bytes. At most about
    /// twice `target` bytes in all; `None` when there is nothing worth doing.
    pub fn plan_compaction(&self, target: u64, damaged: &[String]) -> Option<Vec<String>> {
        let counts = self.live_counts();
        let stale = |s: &SegmentInfo| counts.get(s.id.as_str()).copied().unwrap_or(0) < s.docs;
        let mut chosen: BTreeSet<&str> =
            self.segments.iter().filter(|s| stale(s) || damaged.contains(&s.id)).map(|s| s.id.as_str()).collect();
        let mut tiers: HashMap<u32, Vec<&SegmentInfo>> = HashMap::new();
        for s in self.segments.iter().filter(|s| s.bytes < target / 2) {
            tiers.entry(tier(s.bytes)).or_default().push(s);
        }
        if let Some((_, full)) = tiers.iter().filter(|(_, v)| v.len() >= MERGE_FACTOR).min_by_key(|(t, _)| **t) {
            chosen.extend(full.iter().map(|s| s.id.as_str()));
        }
        let mut total = 0;
        let mut plan = Vec::new();
        for s in self.segments.iter().filter(|s| chosen.contains(s.id.as_str())) {
            if plan.len() >= 2 && total + s.bytes > target.saturating_mul(2) {
                break;
            }
            total += s.bytes;
            plan.push(s.id.clone());
        }
        let worth = plan.len() >= 2 || plan.first().is_some_and(|id| chosen.contains(id.as_str()));
        (worth && !plan.is_empty()).then_some(plan)
    }

    /// Serves the documents of `outputs` (each a new segment and the documents written
    /// into it) from them, where they are still live in one of `inputs`, and stops serving
    /// the inputs. A document still live in an input but in no output (its data was
    /// damaged beyond repair) is dropped. Returns the outputs that ended up with no live
    /// document (to delete) and the dropped documents.
    pub fn apply_compaction(
        &mut self,
        inputs: &[String],
        outputs: Vec<(SegmentInfo, Vec<String>)>,
        now_ms: u64,
    ) -> (Vec<String>, Vec<String>) {
        let mut unused = Vec::new();
        for (info, docs) in outputs {
            let mut live = 0;
            for id in &docs {
                if let Some(entry) = self.docs.get_mut(id) {
                    if inputs.contains(&entry.segment) {
                        entry.segment = info.id.clone();
                        live += 1;
                    }
                }
            }
            if live > 0 {
                self.segments.push(info);
            } else {
                unused.push(info.id);
            }
        }
        let served: Vec<String> =
            inputs.iter().filter(|id| self.segments.iter().any(|s| &s.id == *id)).cloned().collect();
        let lost: Vec<String> =
            self.docs.iter().filter(|(_, e)| served.contains(&e.segment)).map(|(id, _)| id.clone()).collect();
        let mut released = served.clone();
        for id in &lost {
            if let Some(entry) = self.docs.remove(id) {
                released.push(entry.delta);
            }
        }
        self.segments.retain(|s| !served.contains(&s.id));
        self.release(&released, now_ms);
        (unused, lost)
    }

    /// Drops tombstones older than `ttl_ms`: by then no ingest that started before the
    /// delete can still be running.
    pub fn expire_tombstones(&mut self, now_ms: u64, ttl_ms: u64) {
        self.deleted.retain(|_, at| now_ms.saturating_sub(*at) < ttl_ms);
    }

    /// Objects that may be deleted now: retired ones past `grace_ms`, and unreferenced,
    /// unretired ones (from a writer that crashed before its manifest write) older than
    /// `orphan_ms`, out of the `stored` (id, written at) objects.
    pub fn collectable(&self, stored: &[(String, u64)], now_ms: u64, grace_ms: u64, orphan_ms: u64) -> Vec<String> {
        let mut out: Vec<String> = self
            .retired
            .iter()
            .filter(|r| now_ms.saturating_sub(r.since_ms) >= grace_ms)
            .map(|r| r.id.clone())
            .collect();
        // Built once: a scope keeps a delta per document, so `stored` is as long as `docs`.
        let mut known: BTreeSet<&str> = self.segments.iter().map(|s| s.id.as_str()).collect();
        known.extend(self.docs.values().map(|d| d.delta.as_str()));
        known.extend(self.retired.iter().map(|r| r.id.as_str()));
        for (id, written) in stored {
            if !known.contains(id.as_str()) && now_ms.saturating_sub(*written) >= orphan_ms {
                out.push(id.clone());
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(id: &str, bytes: u64, docs: u32) -> SegmentInfo {
        SegmentInfo { id: id.into(), bytes, memory: bytes, docs, chunks: docs }
    }

    fn served(m: &Manifest) -> Vec<&str> {
        m.segments.iter().map(|s| s.id.as_str()).collect()
    }

    fn retired(m: &Manifest) -> Vec<&str> {
        m.retired.iter().map(|r| r.id.as_str()).collect()
    }

    #[test]
    fn replacing_and_deleting_keep_one_live_copy_and_retire_the_rest() {
        let mut m = Manifest::default();
        m.add("a", info("s1", 10, 1), "e1", 1);
        m.add("b", info("s2", 10, 1), "e1", 1);
        // Re-ingesting replaces: the old delta is no longer needed.
        m.add("a", info("s3", 10, 1), "e2", 2);
        assert_eq!(served(&m), vec!["s2", "s3"]);
        assert_eq!(m.docs["a"].etag, "e2");
        assert_eq!(retired(&m), vec!["s1"]);
        // Deleting tombstones and retires; a second delete is not live any more.
        assert!(m.remove("b", 3));
        assert!(!m.remove("b", 4));
        assert!(m.is_deleted("b") && !m.docs.contains_key("b"));
        assert_eq!(served(&m), vec!["s3"]);
        assert_eq!(retired(&m), vec!["s1", "s2"]);
        // Adding again (a re-created shared doc) lifts the tombstone.
        m.add("b", info("s4", 10, 1), "e3", 5);
        assert!(!m.is_deleted("b"));
    }

    #[test]
    fn access_changes_apply_in_revision_order_and_leave_with_the_document() {
        let mut m = Manifest::default();
        let hr = vec!["hr".to_owned()];
        assert!(!m.set_access("a", None, 0), "open and never restricted: no entry");
        assert!(m.access.is_empty() && !m.any_restricted());
        // Set at upload, before the document is indexed.
        assert!(m.set_access("a", Some(&hr), 0));
        assert_eq!(m.access_of("a"), Some(&hr[..]));
        m.add("a", info("s1", 10, 1), "e", 1);
        assert_eq!(m.access_of("a"), Some(&hr[..]), "indexing keeps it");
        assert!(m.set_access("a", None, 1));
        assert_eq!(m.access_of("a"), None);
        // A late, older change does not undo a newer one; repeating the newest is a no-op.
        assert!(!m.set_access("a", Some(&hr), 0));
        assert!(!m.set_access("a", None, 1));
        assert!(m.set_access("a", Some(&hr), 2) && m.any_restricted());
        m.remove("a", 3);
        assert!(m.access.is_empty());
    }

    #[test]
    fn a_segment_of_several_documents_is_served_once() {
        let mut m = Manifest::default();
        m.add("a", info("s1", 10, 1), "e", 1);
        m.serve(info("big", 30, 3), &[("a".into(), 2), ("b".into(), 1), ("c".into(), 4)], "", 2);
        assert_eq!(served(&m), vec!["big"]);
        assert_eq!(m.docs["c"].chunks, 4);
        assert_eq!((m.docs["b"].segment.as_str(), m.docs["b"].delta.as_str()), ("big", "big"));
        assert_eq!(retired(&m), vec!["s1"], "the replaced version of a");
    }

    #[test]
    fn compaction_moves_live_documents_and_keeps_its_deltas() {
        let mut m = Manifest::default();
        for i in 0..MERGE_FACTOR {
            m.add(&format!("d{i}"), info(&format!("s{i}"), 1000, 1), "e", 1);
        }
        let plan = m.plan_compaction(1 << 20, &[]).unwrap();
        assert_eq!(plan.len(), MERGE_FACTOR);
        // Meanwhile one document is deleted and another replaced.
        m.remove("d0", 2);
        m.add("d1", info("s-new", 1000, 1), "e2", 2);
        let docs: Vec<String> = (0..MERGE_FACTOR).map(|i| format!("d{i}")).collect();
        let (unused, lost) = m.apply_compaction(&plan, vec![(info("big", 8000, 8), docs)], 3);
        assert!(unused.is_empty() && lost.is_empty());
        assert_eq!(served(&m), vec!["s-new", "big"]);
        assert_eq!(m.docs["d1"].segment, "s-new", "the newer version stays");
        assert_eq!(m.docs["d2"].segment, "big");
        assert_eq!(m.docs["d2"].delta, "s2", "deltas are kept to rebuild from");
        assert!(m.references("s2") && !m.references("s0"));
        // The compacted segment holds stale documents, so the next plan includes it.
        assert_eq!(m.plan_compaction(1 << 20, &[]), Some(vec!["big".to_owned()]));
        // A compaction whose inputs were all taken by another finds nothing to serve.
        let (unused, _) = m.apply_compaction(&plan, vec![(info("late", 8000, 8), vec!["d3".into()])], 4);
        assert_eq!(unused, vec!["late".to_owned()]);
        // A document whose data could not be rebuilt is dropped, not left pointing nowhere.
        let (_, lost) = m.apply_compaction(&["big".to_owned()], vec![(info("re", 10, 1), vec!["d2".into()])], 5);
        assert_eq!(lost, (3..MERGE_FACTOR).map(|i| format!("d{i}")).collect::<Vec<_>>());
        assert_eq!(served(&m), vec!["s-new", "re"]);
        assert!(m.docs.values().all(|e| m.segments.iter().any(|s| s.id == e.segment)));
    }

    #[test]
    fn plans_respect_tiers_damage_and_size() {
        let mut m = Manifest::default();
        for i in 0..MERGE_FACTOR - 1 {
            m.add(&format!("d{i}"), info(&format!("s{i}"), 1000, 1), "e", 1);
        }
        assert_eq!(m.plan_compaction(1 << 20, &[]), None, "too few to merge");
        assert_eq!(m.plan_compaction(1 << 20, &["s3".into()]), Some(vec!["s3".to_owned()]), "damaged");
        // Segments at or above half the target are full: never merged for size.
        let mut big = Manifest::default();
        for i in 0..MERGE_FACTOR {
            big.add(&format!("d{i}"), info(&format!("s{i}"), 600, 1), "e", 1);
        }
        assert_eq!(big.plan_compaction(1000, &[]), None);
        // At most about twice the target in one go.
        let plan = big.plan_compaction(2000, &[]).unwrap();
        assert!(plan.len() < MERGE_FACTOR && plan.len() >= 2, "{plan:?}");
        assert_eq!((tier(0), tier(TIER_BASE - 1), tier(TIER_BASE), tier(TIER_BASE * 8)), (0, 0, 1, 2));
    }

    #[test]
    fn collection_waits_out_the_grace_period_and_spares_what_is_referenced() {
        let mut m = Manifest::default();
        m.add("a", info("s1", 10, 1), "e", 0);
        m.add("a", info("s2", 10, 1), "e", 100);
        let stored = vec![("s1".to_owned(), 0), ("s2".to_owned(), 100), ("orphan".to_owned(), 50)];
        assert!(m.collectable(&stored, 150, 100, 1000).is_empty());
        assert_eq!(m.collectable(&stored, 200, 100, 1000), vec!["s1".to_owned()]);
        assert_eq!(m.collectable(&stored, 1050, 100, 1000), vec!["s1".to_owned(), "orphan".to_owned()]);
        m.expire_tombstones(10, 5);
        m.remove("a", 20);
        m.expire_tombstones(24, 5);
        assert!(m.is_deleted("a"));
        m.expire_tombstones(25, 5);
        assert!(!m.is_deleted("a"));
    }
}
