//! The bounded store of received embeddings z_hat, keyed by message id.
//!
//! Bounded twice: at most `max_messages` entries (the oldest is evicted first) and at most
//! `max_age` old (expired entries are dropped on every access). Times are passed in by the
//! caller so that eviction can be tested without waiting.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One decoded message.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredMessage {
    /// The transmitter's message id.
    pub message_id: String,
    /// Complex channel uses of its frame.
    pub k: u32,
    /// SNR in dB the channel applied to it.
    pub snr_db: f32,
    /// The received, decoded embedding z_hat ([D], L2-normalised).
    pub z_hat: Vec<f32>,
    /// Arrival time in milliseconds since the Unix epoch (reported to callers).
    pub received_unix_ms: i64,
    /// Top labels of the default label set, most probable first (empty when none is set).
    pub top_labels: Vec<(String, f32)>,
}

/// Entries in arrival order plus an index by id.
#[derive(Debug)]
pub struct MessageStore {
    /// Most entries kept.
    max_messages: usize,
    /// Longest time an entry is kept.
    max_age: Duration,
    /// Oldest first; each entry with the instant it arrived.
    order: VecDeque<(Instant, Arc<StoredMessage>)>,
    /// Message id to entry; always the same entries as `order`.
    by_id: HashMap<String, Arc<StoredMessage>>,
}

impl MessageStore {
    /// An empty store (`max_messages` is raised to one).
    pub fn new(max_messages: usize, max_age: Duration) -> Self {
        Self {
            max_messages: max_messages.max(1),
            max_age,
            order: VecDeque::new(),
            by_id: HashMap::new(),
        }
    }

    /// Stores `message` (replacing an older one with the same id), evicting what is expired
    /// or over the count.
    pub fn insert(&mut self, message: StoredMessage, now: Instant) -> Arc<StoredMessage> {
        self.expire(now);
        let message = Arc::new(message);
        if self.by_id.remove(&message.message_id).is_some() {
            self.order
                .retain(|(_, m)| m.message_id != message.message_id);
        }
        self.order.push_back((now, message.clone()));
        self.by_id
            .insert(message.message_id.clone(), message.clone());
        while self.order.len() > self.max_messages {
            if let Some((_, old)) = self.order.pop_front() {
                self.by_id.remove(&old.message_id);
            }
        }
        message
    }

    /// The message with `id`, unless it was evicted or has expired.
    pub fn get(&mut self, id: &str, now: Instant) -> Option<Arc<StoredMessage>> {
        self.expire(now);
        self.by_id.get(id).cloned()
    }

    /// Up to `limit` messages, newest first (`0`: all).
    pub fn list(&mut self, limit: usize, now: Instant) -> Vec<Arc<StoredMessage>> {
        self.expire(now);
        let limit = if limit == 0 { usize::MAX } else { limit };
        self.order
            .iter()
            .rev()
            .take(limit)
            .map(|(_, m)| m.clone())
            .collect()
    }

    /// Entries stored now.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    fn expire(&mut self, now: Instant) {
        while let Some((arrived, m)) = self.order.front() {
            if now.saturating_duration_since(*arrived) <= self.max_age {
                break;
            }
            self.by_id.remove(&m.message_id);
            self.order.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(id: &str) -> StoredMessage {
        StoredMessage {
            message_id: id.into(),
            k: 8,
            snr_db: 5.0,
            z_hat: vec![1.0, 0.0],
            received_unix_ms: 0,
            top_labels: vec![],
        }
    }

    #[test]
    fn evicts_the_oldest_over_the_count() {
        let t = Instant::now();
        let mut s = MessageStore::new(2, Duration::from_secs(60));
        s.insert(msg("a"), t);
        s.insert(msg("b"), t);
        s.insert(msg("c"), t);
        assert!(s.get("a", t).is_none());
        assert!(s.get("b", t).is_some());
        let ids: Vec<_> = s.list(0, t).iter().map(|m| m.message_id.clone()).collect();
        assert_eq!(ids, ["c", "b"]);
    }

    #[test]
    fn drops_expired_entries() {
        let t = Instant::now();
        let mut s = MessageStore::new(10, Duration::from_secs(5));
        s.insert(msg("old"), t);
        s.insert(msg("new"), t + Duration::from_secs(4));
        let later = t + Duration::from_secs(6);
        assert!(s.get("old", later).is_none());
        assert!(s.get("new", later).is_some());
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn same_id_replaces_and_moves_to_newest() {
        let t = Instant::now();
        let mut s = MessageStore::new(3, Duration::from_secs(60));
        s.insert(msg("a"), t);
        s.insert(msg("b"), t);
        let mut again = msg("a");
        again.snr_db = -5.0;
        s.insert(again, t);
        assert_eq!(s.len(), 2);
        assert_eq!(s.get("a", t).unwrap().snr_db, -5.0);
        assert_eq!(s.list(1, t)[0].message_id, "a");
    }
}
