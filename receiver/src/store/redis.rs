//! The Redis backend of the message store, shared by every receiver replica that uses the
//! same server and key prefix, with the bounds of the in-memory store.
//!
//! Keys (`P` is the configured prefix, `semclip:` by default):
//! - `P msg:<message id>`: the record (see [`encode`]), written with a TTL of the store's
//!   maximum age, so that Redis itself expires it;
//! - `P order`: a sorted set of message ids scored by arrival time in milliseconds since the
//!   Unix epoch (the writing replica's clock). It gives the newest-first listing and the
//!   count bound: an insert trims the oldest ids beyond `max_messages` and deletes their
//!   records, atomically, in one Lua script.
//!
//! The script names record keys it builds itself, which a Redis Cluster cannot route; the
//! backend is for a single Redis server (or a primary with replicas), not a cluster.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde::{Deserialize, Serialize};
use tracing::warn;

use super::{redact_url, StoreError, StoredMessage};

/// Stores a record, indexes it and enforces both bounds, atomically.
///
/// KEYS: 1 the order set, 2 the record's key. ARGV: 1 message id, 2 record, 3 arrival ms,
/// 4 max age ms (the record's TTL), 5 max messages, 6 record key prefix, 7 the oldest
/// arrival ms still within the max age.
const INSERT_SCRIPT: &str = r#"
local order, key = KEYS[1], KEYS[2]
local max_messages = tonumber(ARGV[5])
redis.call('SET', key, ARGV[2], 'PX', ARGV[4])
redis.call('ZADD', order, ARGV[3], ARGV[1])
redis.call('ZREMRANGEBYSCORE', order, '-inf', '(' .. ARGV[7])
local over = redis.call('ZCARD', order) - max_messages
if over > 0 then
  local oldest = redis.call('ZRANGE', order, 0, over - 1)
  for _, id in ipairs(oldest) do
    redis.call('DEL', ARGV[6] .. id)
  end
  redis.call('ZREMRANGEBYRANK', order, 0, over - 1)
end
redis.call('PEXPIRE', order, ARGV[4])
return redis.call('ZCARD', order)
"#;

/// First bytes of every record: a format tag, so that a key written by something else is
/// recognised as such instead of misread.
const MAGIC: &[u8; 4] = b"SCM1";

/// Reconnection attempts per failed command before it fails (each up to the timeout).
/// Kept low so that an RPC fails with UNAVAILABLE within a few timeouts while Redis is
/// down; the next command starts a new round.
const RECONNECT_RETRIES: usize = 2;

/// The store in Redis. Clones of the connection manager share one multiplexed connection,
/// which it re-establishes in the background after an I/O error.
pub struct RedisStore {
    /// Connection to the server; reconnects by itself.
    connection: ConnectionManager,
    /// The server's URL with the password redacted, for logs and errors.
    url: String,
    /// Prefix of the record keys (`<prefix>msg:`).
    record_prefix: String,
    /// Key of the sorted set of ids by arrival time.
    order_key: String,
    /// Most records kept.
    max_messages: usize,
    /// Longest time a record is kept (its TTL).
    max_age: Duration,
    /// The insert script (sent by hash, loaded on first use and after a server restart).
    insert: redis::Script,
}

/// The metadata of a record; z_hat follows it as raw little-endian f32.
#[derive(Debug, Serialize, Deserialize)]
struct RecordHeader {
    message_id: String,
    k: u32,
    snr_db: f32,
    /// Absent in records written before it was kept: then `snr_db`.
    #[serde(default)]
    effective_snr_db: Option<f32>,
    received_unix_ms: i64,
    top_labels: Vec<(String, f32)>,
    bundle_id: String,
    bundle_version: String,
    /// Number of f32 values of z_hat that follow.
    dim: usize,
}

/// A record: `MAGIC`, the header's length (u32 little-endian), the header as JSON, then
/// z_hat as little-endian f32 (4 bytes per value; JSON would take about 20).
pub(crate) fn encode(m: &StoredMessage) -> Vec<u8> {
    let header = RecordHeader {
        message_id: m.message_id.clone(),
        k: m.k,
        snr_db: m.snr_db,
        effective_snr_db: Some(m.effective_snr_db),
        received_unix_ms: m.received_unix_ms,
        top_labels: m.top_labels.clone(),
        bundle_id: m.bundle_id.clone(),
        bundle_version: m.bundle_version.clone(),
        dim: m.z_hat.len(),
    };
    // A struct of strings and numbers always serialises.
    let json = serde_json::to_vec(&header).unwrap_or_default();
    let mut out = Vec::with_capacity(8 + json.len() + 4 * m.z_hat.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(json.len() as u32).to_le_bytes());
    out.extend_from_slice(&json);
    for v in &m.z_hat {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// Reads a record written by [`encode`]; the error says what is wrong with it.
pub(crate) fn decode(bytes: &[u8]) -> Result<StoredMessage, String> {
    let rest = bytes
        .strip_prefix(MAGIC)
        .ok_or("not a SemCLIP message record (format tag missing)")?;
    if rest.len() < 4 {
        return Err("truncated before the header length".into());
    }
    let (len, rest) = rest.split_at(4);
    let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
    if rest.len() < len {
        return Err(format!(
            "header of {len} bytes, only {} present",
            rest.len()
        ));
    }
    let (json, values) = rest.split_at(len);
    let header: RecordHeader =
        serde_json::from_slice(json).map_err(|e| format!("header is not valid: {e}"))?;
    if values.len() != 4 * header.dim {
        return Err(format!(
            "z_hat has {} bytes, expected 4 * {} = {}",
            values.len(),
            header.dim,
            4 * header.dim
        ));
    }
    let z_hat = values
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Ok(StoredMessage {
        message_id: header.message_id,
        k: header.k,
        snr_db: header.snr_db,
        effective_snr_db: header.effective_snr_db.unwrap_or(header.snr_db),
        z_hat,
        received_unix_ms: header.received_unix_ms,
        top_labels: header.top_labels,
        bundle_id: header.bundle_id,
        bundle_version: header.bundle_version,
    })
}

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl RedisStore {
    /// Connects to `url` (and checks the server answers); fails when it cannot within the
    /// timeout and retries.
    pub async fn connect(
        url: &str,
        key_prefix: &str,
        max_messages: usize,
        max_age: Duration,
        timeout: Duration,
    ) -> Result<Self, StoreError> {
        let shown = redact_url(url);
        let client = redis::Client::open(url).map_err(|cause| StoreError::BadUrl {
            url: shown.clone(),
            cause,
        })?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(RECONNECT_RETRIES)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500));
        let unavailable = |cause| StoreError::Unavailable {
            url: shown.clone(),
            cause,
        };
        let mut connection = client
            .get_connection_manager_with_config(config)
            .await
            .map_err(unavailable)?;
        redis::cmd("PING")
            .query_async::<String>(&mut connection)
            .await
            .map_err(unavailable)?;
        Ok(Self {
            connection,
            url: shown,
            record_prefix: format!("{key_prefix}msg:"),
            order_key: format!("{key_prefix}order"),
            max_messages: max_messages.max(1),
            max_age,
            insert: redis::Script::new(INSERT_SCRIPT),
        })
    }

    /// One line for the start-up log.
    pub fn describe(&self) -> String {
        format!(
            "in redis at {} (keys {}*, at most {} messages, {} s)",
            self.url,
            self.order_key.trim_end_matches("order"),
            self.max_messages,
            self.max_age.as_secs()
        )
    }

    fn unavailable(&self, cause: redis::RedisError) -> StoreError {
        StoreError::Unavailable {
            url: self.url.clone(),
            cause,
        }
    }

    fn record_key(&self, id: &str) -> String {
        format!("{}{id}", self.record_prefix)
    }

    /// Arrival times before this one are over the maximum age.
    fn cutoff_ms(&self, now_ms: i64) -> i64 {
        now_ms.saturating_sub(self.max_age.as_millis() as i64)
    }

    /// Stores `message` with a TTL of the maximum age, trims the oldest beyond the count;
    /// returns it and the number of messages now stored.
    pub async fn insert(
        &self,
        message: StoredMessage,
    ) -> Result<(Arc<StoredMessage>, usize), StoreError> {
        let now = unix_ms();
        let count: usize = self
            .insert
            .key(&self.order_key)
            .key(self.record_key(&message.message_id))
            .arg(&message.message_id)
            .arg(encode(&message))
            .arg(message.received_unix_ms)
            .arg((self.max_age.as_millis() as u64).max(1))
            .arg(self.max_messages)
            .arg(&self.record_prefix)
            .arg(self.cutoff_ms(now))
            .invoke_async(&mut self.connection.clone())
            .await
            .map_err(|e| self.unavailable(e))?;
        Ok((Arc::new(message), count))
    }

    /// The message with `id`, unless it is unknown, was evicted or has expired.
    pub async fn get(&self, id: &str) -> Result<Option<Arc<StoredMessage>>, StoreError> {
        let bytes: Option<Vec<u8>> = redis::cmd("GET")
            .arg(self.record_key(id))
            .query_async(&mut self.connection.clone())
            .await
            .map_err(|e| self.unavailable(e))?;
        match bytes {
            None => Ok(None),
            Some(bytes) => {
                decode(&bytes)
                    .map(|m| Some(Arc::new(m)))
                    .map_err(|reason| StoreError::Corrupt {
                        url: self.url.clone(),
                        message_id: id.to_owned(),
                        reason,
                    })
            }
        }
    }

    /// Up to `limit` messages, newest first (`0`: all). A record that cannot be read is
    /// left out with a warning rather than failing the whole listing.
    pub async fn list(&self, limit: usize) -> Result<Vec<Arc<StoredMessage>>, StoreError> {
        let limit = if limit == 0 {
            self.max_messages
        } else {
            limit.min(self.max_messages)
        };
        let mut connection = self.connection.clone();
        let ids: Vec<String> = redis::cmd("ZREVRANGEBYSCORE")
            .arg(&self.order_key)
            .arg("+inf")
            .arg(self.cutoff_ms(unix_ms()))
            .arg("LIMIT")
            .arg(0)
            .arg(limit)
            .query_async(&mut connection)
            .await
            .map_err(|e| self.unavailable(e))?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = ids.iter().map(|id| self.record_key(id)).collect();
        let records: Vec<Option<Vec<u8>>> = redis::cmd("MGET")
            .arg(&keys)
            .query_async(&mut connection)
            .await
            .map_err(|e| self.unavailable(e))?;

        // A missing record expired or was evicted between the two commands.
        let mut out = Vec::with_capacity(records.len());
        for (id, bytes) in ids.iter().zip(records) {
            let Some(bytes) = bytes else { continue };
            match decode(&bytes) {
                Ok(m) => out.push(Arc::new(m)),
                Err(reason) => warn!(
                    message_id = %id,
                    "redis store at {}: skipping an unreadable record: {reason}",
                    self.url
                ),
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message() -> StoredMessage {
        StoredMessage {
            message_id: "m:1".into(),
            k: 16,
            snr_db: -3.5,
            effective_snr_db: -1.25,
            z_hat: vec![0.6, -0.8, 0.0, 1.0e-7],
            received_unix_ms: 1_700_000_000_123,
            top_labels: vec![("cat".into(), 0.75), ("dog".into(), 0.25)],
            bundle_id: "tiny-lit".into(),
            bundle_version: "1.0.0".into(),
        }
    }

    #[test]
    fn records_round_trip_exactly() {
        let m = message();
        let bytes = encode(&m);
        assert_eq!(decode(&bytes).unwrap(), m);
        // z_hat costs 4 bytes per value.
        assert!(bytes.len() < 4 * m.z_hat.len() + 300, "{}", bytes.len());
    }

    #[test]
    fn records_without_the_effective_snr_read_the_channel_snr() {
        let m = message();
        let header = serde_json::json!({
            "message_id": m.message_id, "k": m.k, "snr_db": m.snr_db,
            "received_unix_ms": m.received_unix_ms, "top_labels": m.top_labels,
            "bundle_id": m.bundle_id, "bundle_version": m.bundle_version,
            "dim": m.z_hat.len(),
        });
        let json = serde_json::to_vec(&header).unwrap();
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&(json.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&json);
        m.z_hat
            .iter()
            .for_each(|v| bytes.extend_from_slice(&v.to_le_bytes()));
        let got = decode(&bytes).unwrap();
        assert_eq!(got.effective_snr_db, m.snr_db);
        assert_eq!(got.z_hat, m.z_hat);
    }

    #[test]
    fn damaged_records_are_refused_with_a_reason() {
        let bytes = encode(&message());
        assert!(decode(b"{\"json\": 1}").unwrap_err().contains("format tag"));
        assert!(decode(&bytes[..bytes.len() - 1])
            .unwrap_err()
            .contains("z_hat"));
        assert!(decode(&bytes[..10]).unwrap_err().contains("header"));
    }
}
