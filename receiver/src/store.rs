//! The bounded store of received embeddings z_hat, keyed by message id.
//!
//! Two backends behind [`Store`]: [`MessageStore`] in this process (the default) and
//! [`RedisStore`], shared by every receiver replica that points at the same Redis. Both are
//! bounded twice: at most `max_messages` entries (the oldest is evicted first) and at most
//! `max_age` old. In memory, expired entries are dropped on every access and times are
//! passed in by the caller so that eviction can be tested without waiting.

mod redis;

pub use self::redis::RedisStore;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::{Config, StoreKind};

/// Why the store could not answer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Redis could not be reached or did not answer in time.
    #[error("redis store at {url} is unavailable: {cause}")]
    Unavailable {
        /// The server's URL, password redacted.
        url: String,
        /// What the client reported.
        cause: ::redis::RedisError,
    },

    /// A record in Redis could not be read back (written by something else, or damaged).
    #[error("redis store at {url}: the record of message {message_id:?} is unreadable: {reason}")]
    Corrupt {
        /// The server's URL, password redacted.
        url: String,
        /// The message whose record it is.
        message_id: String,
        /// What is wrong with it.
        reason: String,
    },

    /// The configuration names a Redis URL that does not parse.
    #[error("invalid redis URL {url}: {cause}")]
    BadUrl {
        /// The URL, password redacted.
        url: String,
        /// The client's parse error.
        cause: ::redis::RedisError,
    },
}

/// Where the receiver keeps its decoded embeddings.
pub enum Store {
    /// In this process. A plain mutex: every operation is a few map updates, and no lock is
    /// held across an await.
    Memory(Mutex<MessageStore>),
    /// In Redis, shared with other replicas.
    Redis(RedisStore),
}

impl Store {
    /// Opens the backend the configuration names; for Redis this connects once, so that an
    /// unreachable server stops the daemon at start rather than at the first frame.
    pub async fn open(config: &Config) -> Result<Self, StoreError> {
        let max_age = Duration::from_secs(config.store_max_age_s);
        match config.store {
            StoreKind::Memory => Ok(Self::Memory(Mutex::new(MessageStore::new(
                config.store_max_messages,
                max_age,
            )))),
            StoreKind::Redis => Ok(Self::Redis(
                RedisStore::connect(
                    &config.redis_url,
                    &config.redis_key_prefix,
                    config.store_max_messages,
                    max_age,
                    Duration::from_millis(config.redis_timeout_ms),
                )
                .await?,
            )),
        }
    }

    /// One line for the start-up log: the backend and its bounds.
    pub fn describe(&self) -> String {
        match self {
            Self::Memory(m) => {
                let m = lock(m);
                format!(
                    "in memory (at most {} messages, {} s)",
                    m.max_messages,
                    m.max_age.as_secs()
                )
            }
            Self::Redis(r) => r.describe(),
        }
    }

    /// Stores `message` (replacing one with the same id, which becomes the newest) and
    /// evicts what is over the count; returns it and the number of entries now stored.
    pub async fn insert(
        &self,
        message: StoredMessage,
    ) -> Result<(Arc<StoredMessage>, usize), StoreError> {
        match self {
            Self::Memory(m) => {
                let mut m = lock(m);
                let stored = m.insert(message, Instant::now());
                Ok((stored, m.len()))
            }
            Self::Redis(r) => r.insert(message).await,
        }
    }

    /// The message with `id`, unless it is unknown, was evicted or has expired.
    pub async fn get(&self, id: &str) -> Result<Option<Arc<StoredMessage>>, StoreError> {
        match self {
            Self::Memory(m) => Ok(lock(m).get(id, Instant::now())),
            Self::Redis(r) => r.get(id).await,
        }
    }

    /// Up to `limit` messages, newest first (`0`: all).
    pub async fn list(&self, limit: usize) -> Result<Vec<Arc<StoredMessage>>, StoreError> {
        match self {
            Self::Memory(m) => Ok(lock(m).list(limit, Instant::now())),
            Self::Redis(r) => r.list(limit).await,
        }
    }
}

fn lock(m: &Mutex<MessageStore>) -> std::sync::MutexGuard<'_, MessageStore> {
    // Store updates cannot panic half-way, so a poisoned lock is safe to reuse.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// `url` with the password (and user name) of its authority replaced by `***`, for logs
/// and error messages.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
        None => url.to_owned(),
    }
}

/// One decoded message.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredMessage {
    /// The transmitter's message id.
    pub message_id: String,
    /// Complex channel uses of its frame.
    pub k: u32,
    /// SNR in dB the channel applied to it.
    pub snr_db: f32,
    /// SNR in dB the decoder was told (`snr_db` plus the fading gain in dB; equal to
    /// `snr_db` on AWGN): what classification's prior correction depends on.
    pub effective_snr_db: f32,
    /// The received, decoded embedding z_hat ([D], L2-normalised).
    pub z_hat: Vec<f32>,
    /// Arrival time in milliseconds since the Unix epoch (reported to callers).
    pub received_unix_ms: i64,
    /// Top labels of the default label set, most probable first (empty when none is set).
    pub top_labels: Vec<(String, f32)>,
    /// Id of the bundle that decoded z_hat; a receiver serving another bundle must not
    /// classify it (the embedding spaces differ).
    pub bundle_id: String,
    /// Version of that bundle.
    pub bundle_version: String,
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
            effective_snr_db: 5.0,
            z_hat: vec![1.0, 0.0],
            received_unix_ms: 0,
            top_labels: vec![],
            bundle_id: "b".into(),
            bundle_version: "1".into(),
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

    #[test]
    fn urls_lose_their_password() {
        assert_eq!(
            redact_url("redis://:secret@db:6379/0"),
            "redis://***@db:6379/0"
        );
        assert_eq!(
            redact_url("redis://user:p@ss@db:6379/0"),
            "redis://***@db:6379/0"
        );
        assert_eq!(redact_url("redis://db:6379/0"), "redis://db:6379/0");
        assert_eq!(redact_url("db:6379"), "db:6379");
    }
}
