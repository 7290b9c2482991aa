//! Shared bookkeeping for propagation latency: every edit is registered under
//! `(doc, client, clock)` with its send time and the number of other subscribers still to
//! receive it; when the last one has it, the edit's end-to-end latency is recorded.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Instant;

use quire_protocol::varint::Reader;
use yrs::updates::decoder::Decode;
use yrs::Update;

use crate::histogram::Histogram;

#[derive(Debug)]
struct Pending {
    sent_at: Instant,
    remaining: u32,
    measured: bool,
    /// Set for edits registered with [`Tracker::sent_tagged`]: their own totals.
    tag: Option<usize>,
}

/// Totals of the edits registered under one tag.
#[derive(Debug, Default, Clone)]
pub(crate) struct TagTotals {
    pub(crate) sent: u64,
    /// Receipts (edit × receiving subscriber).
    pub(crate) delivered: u64,
    /// Edit → all other subscribers have it, µs.
    pub(crate) propagation: Histogram,
}

/// Totals of one run, read once its load has drained.
#[derive(Debug, Default, Clone)]
pub(crate) struct Totals {
    /// Edits sent inside the measurement window.
    pub(crate) sent_measured: u64,
    /// Receipts (edit × receiving subscriber) of those edits.
    pub(crate) delivered_measured: u64,
    /// Receipts of any edit that arrived inside the measurement window.
    pub(crate) delivered_in_window: u64,
    /// Updates that arrived but matched no registered edit.
    pub(crate) unmatched: u64,
    /// Edit → all other subscribers have it, µs (measured edits only).
    pub(crate) propagation: Histogram,
    /// Update write → ACK covering it, µs (measured edits only).
    pub(crate) ack: Histogram,
    /// Awareness updates sent, and received from others, inside the measurement window.
    pub(crate) awareness_sent: u64,
    pub(crate) awareness_received: u64,
    /// Per tag, for edits registered with [`Tracker::sent_tagged`] (index = tag).
    pub(crate) tagged: Vec<TagTotals>,
}

#[derive(Debug)]
struct Inner {
    pending: BTreeMap<(u32, u64, u32), Pending>,
    window: Option<(Instant, Instant)>,
    totals: Totals,
}

impl Inner {
    fn tag_totals(&mut self, tag: usize) -> &mut TagTotals {
        if self.totals.tagged.len() <= tag {
            self.totals.tagged.resize_with(tag + 1, TagTotals::default);
        }
        &mut self.totals.tagged[tag]
    }
}

#[derive(Debug)]
pub(crate) struct Tracker {
    inner: Mutex<Inner>,
}

impl Tracker {
    pub(crate) fn new() -> Self {
        Self {
            inner: Mutex::new(Inner {
                pending: BTreeMap::new(),
                window: None,
                totals: Totals::default(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets the measurement window `[from, to)`.
    pub(crate) fn set_window(&self, from: Instant, to: Instant) {
        self.lock().window = Some((from, to));
    }

    /// Whether `at` falls in the measurement window.
    pub(crate) fn in_window(&self, at: Instant) -> bool {
        matches!(self.lock().window, Some((from, to)) if at >= from && at < to)
    }

    /// Counts an awareness update sent (`sent`) or received, if `at` is in the window.
    pub(crate) fn awareness(&self, sent: bool, at: Instant) {
        let mut inner = self.lock();
        if matches!(inner.window, Some((from, to)) if at >= from && at < to) {
            if sent {
                inner.totals.awareness_sent += 1;
            } else {
                inner.totals.awareness_received += 1;
            }
        }
    }

    /// Registers an edit that `receivers` other subscribers should get.
    pub(crate) fn sent(
        &self,
        doc: u32,
        client: u64,
        clock: u32,
        at: Instant,
        receivers: u32,
        measured: bool,
    ) {
        if receivers == 0 {
            return;
        }
        let mut inner = self.lock();
        if measured {
            inner.totals.sent_measured += 1;
        }
        inner.pending.insert(
            (doc, client, clock),
            Pending {
                sent_at: at,
                remaining: receivers,
                measured,
                tag: None,
            },
        );
    }

    /// Registers an edit whose latency goes to the totals of `tag` only, not to the
    /// measurement window's (S11 sorts its edits by phase and stream, which a single time
    /// window cannot express).
    pub(crate) fn sent_tagged(
        &self,
        doc: u32,
        client: u64,
        clock: u32,
        at: Instant,
        receivers: u32,
        tag: usize,
    ) {
        if receivers == 0 {
            return;
        }
        let mut inner = self.lock();
        inner.tag_totals(tag).sent += 1;
        inner.pending.insert(
            (doc, client, clock),
            Pending {
                sent_at: at,
                remaining: receivers,
                measured: false,
                tag: Some(tag),
            },
        );
    }

    /// A subscriber of `doc` whose own client is `own_client` received the v1 `update`.
    pub(crate) fn received(&self, doc: u32, own_client: u64, update: &[u8], now: Instant) {
        let keys = match single_struct(update) {
            Some((client, _)) if client == own_client => return,
            Some((client, clock)) => vec![(client, clock, clock)],
            None => match Update::decode_v1(update) {
                Ok(decoded) => decoded
                    .state_vector()
                    .iter()
                    .filter(|(client, _)| client.get() != own_client)
                    .map(|(client, end)| (client.get(), 0, end.saturating_sub(1)))
                    .collect(),
                Err(_) => Vec::new(),
            },
        };
        let mut inner = self.lock();
        let in_window = matches!(inner.window, Some((from, to)) if now >= from && now < to);
        let mut matched = Vec::new();
        for (client, lo, hi) in keys {
            matched.extend(
                inner
                    .pending
                    .range((doc, client, lo)..=(doc, client, hi))
                    .map(|(k, _)| *k),
            );
        }
        if matched.is_empty() {
            inner.totals.unmatched += 1;
        }
        for key in matched {
            let Some(pending) = inner.pending.get_mut(&key) else {
                continue;
            };
            pending.remaining -= 1;
            let (done, measured, sent_at, tag) = (
                pending.remaining == 0,
                pending.measured,
                pending.sent_at,
                pending.tag,
            );
            if in_window {
                inner.totals.delivered_in_window += 1;
            }
            if measured {
                inner.totals.delivered_measured += 1;
            }
            if let Some(tag) = tag {
                inner.tag_totals(tag).delivered += 1;
            }
            if done {
                inner.pending.remove(&key);
                let us = now.duration_since(sent_at).as_micros() as u64;
                if measured {
                    inner.totals.propagation.record(us);
                }
                if let Some(tag) = tag {
                    inner.tag_totals(tag).propagation.record(us);
                }
            }
        }
    }

    /// Tagged edits some subscriber has not received yet.
    pub(crate) fn tagged_outstanding(&self) -> usize {
        self.lock()
            .pending
            .values()
            .filter(|p| p.tag.is_some())
            .count()
    }

    /// Adds one connection's durable-ack latencies.
    pub(crate) fn merge_acks(&self, acks: &Histogram) {
        self.lock().totals.ack.merge(acks);
    }

    pub(crate) fn totals(&self) -> Totals {
        self.lock().totals.clone()
    }
}

/// `(client, clock)` of a v1 update holding exactly one struct (one local edit), read from its
/// header without decoding the rest; `None` for anything else.
fn single_struct(update: &[u8]) -> Option<(u64, u32)> {
    let mut reader = Reader::new(update);
    let groups = reader.read_varint().ok()?;
    let structs = reader.read_varint().ok()?;
    if groups != 1 || structs != 1 {
        return None;
    }
    let client = reader.read_varint().ok()?;
    let clock = reader.read_varint_u32().ok()?;
    Some((client, clock))
}

#[cfg(test)]
mod tests {
    use super::*;
    use yrs::{Doc, GetString, Text, Transact};

    fn edit(doc: &Doc, at: u32, text: &str) -> Vec<u8> {
        let t = doc.get_or_insert_text("t");
        let mut txn = doc.transact_mut();
        t.insert(&mut txn, at, text);
        txn.encode_update_v1()
    }

    #[test]
    fn a_single_edit_is_found_by_its_header() {
        let doc = Doc::with_client_id(42);
        edit(&doc, 0, "abcdefgh");
        let second = edit(&doc, 8, "ijklmnop");
        assert_eq!(single_struct(&second), Some((42, 8)));
        assert_eq!(
            doc.get_or_insert_text("t")
                .get_string(&doc.transact())
                .len(),
            16
        );
    }

    #[test]
    fn latency_is_recorded_when_the_last_receiver_has_it() {
        let tracker = Tracker::new();
        let doc = Doc::with_client_id(7);
        let update = edit(&doc, 0, "abcdefgh");
        let t0 = Instant::now();
        tracker.set_window(t0, t0 + std::time::Duration::from_secs(60));
        tracker.sent(3, 7, 0, t0, 2, true);
        tracker.received(3, 9, &update, t0);
        assert_eq!(tracker.totals().propagation.count(), 0);
        tracker.received(3, 7, &update, t0); // the sender's own echo does not count
        tracker.received(3, 11, &update, t0);
        let totals = tracker.totals();
        assert_eq!(totals.propagation.count(), 1);
        assert_eq!(totals.delivered_measured, 2);
    }

    #[test]
    fn tagged_edits_have_totals_of_their_own() {
        let tracker = Tracker::new();
        let doc = Doc::with_client_id(7);
        let first = edit(&doc, 0, "abcdefgh");
        let second = edit(&doc, 8, "ijklmnop");
        let t0 = Instant::now();
        tracker.sent_tagged(0, 7, 0, t0, 1, 0);
        tracker.sent_tagged(0, 7, 8, t0, 1, 2);
        tracker.received(0, 9, &first, t0);
        tracker.received(0, 9, &second, t0);
        let totals = tracker.totals();
        assert_eq!(totals.propagation.count(), 0);
        assert_eq!(totals.tagged.len(), 3);
        assert_eq!((totals.tagged[0].sent, totals.tagged[0].delivered), (1, 1));
        assert_eq!(totals.tagged[1].sent, 0);
        assert_eq!(totals.tagged[2].propagation.count(), 1);
    }
}
