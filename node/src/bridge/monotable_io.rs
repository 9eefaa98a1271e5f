//! The Monotable side of the bridge, through the native client: reading
//! Redis keys whole from a Redis database range, and replacing them.

use std::collections::HashSet;

use monotable_client::{Batch, Client, ErrorCode, Scan};
use monotable_proto::limits::BATCH_OPS_MAX;

use super::item::Item;
use super::BridgeError;
use crate::resp::keyspace::{key_row, key_rows_prefix, now_ms, Value};

/// A write batch is sent once it holds this many bytes of keys and values
/// (well under the frame limit).
const BATCH_BYTES_MAX: usize = 4 * 1024 * 1024;

/// Creates `range` unless it exists.
pub async fn ensure_range(client: &Client, range: &str) -> Result<(), BridgeError> {
    match client.create_range(range, Default::default()).await {
        Err(monotable_client::Error::Server(e)) if e.code == ErrorCode::RangeExists => Ok(()),
        other => Ok(other?),
    }
}

/// Every row whose tuple starts with the tuple `prefix` (whole elements:
/// the rows of key "a" are not those of "a\0b"), in order, at `snapshot`
/// or the latest.
pub async fn rows_with_prefix(
    client: &Client,
    range: &str,
    prefix: &[u8],
    snapshot: Option<u64>,
) -> Result<Vec<(Vec<u8>, Vec<u8>)>, BridgeError> {
    let mut scan = Scan::all().tuple_prefix(prefix);
    if let Some(s) = snapshot {
        scan = scan.at(s);
    }
    let mut stream = client.scan_stream(range, scan);
    let mut out = Vec::new();
    while let Some(r) = stream.next().await {
        let r = r?;
        out.push((r.key, r.value));
    }
    Ok(out)
}

/// A key whole, from its key row's value.
pub async fn read_item(
    client: &Client,
    range: &str,
    key: Vec<u8>,
    head: &[u8],
    snapshot: Option<u64>,
) -> Result<Item, BridgeError> {
    let head = Value::decode(head)
        .ok_or_else(|| BridgeError::Damaged(format!("key row of {}", show(&key))))?;
    let elements = match Item::element_prefix(&head, &key) {
        Some(prefix) => rows_with_prefix(client, range, &prefix, snapshot).await?,
        None => Vec::new(),
    };
    Item::from_rows(key, &head, elements)
}

/// The keys as the range holds them now; with `live`, an expired key
/// (not yet removed by the expirer) reads as absent.
pub async fn read_items(
    client: &Client,
    range: &str,
    keys: &[Vec<u8>],
    live: bool,
) -> Result<Vec<Option<Item>>, BridgeError> {
    let rows: Vec<Vec<u8>> = keys.iter().map(|k| key_row(k)).collect();
    let heads = match client.multi_get(range, &rows).await {
        Err(monotable_client::Error::Server(e)) if e.code == ErrorCode::RangeNotFound => {
            vec![None; keys.len()]
        }
        other => other?,
    };
    let now = now_ms();
    let mut out = Vec::with_capacity(keys.len());
    for (key, head) in keys.iter().zip(heads) {
        let item = match head {
            Some(h) => Some(read_item(client, range, key.clone(), &h, None).await?),
            None => None,
        };
        out.push(item.filter(|i| !live || i.expire_at_ms.is_none_or(|at| at > now)));
    }
    Ok(out)
}

/// Collects writes and sends them in batches within the protocol limits.
pub struct Writer<'a> {
    client: &'a Client,
    range: &'a str,
    batch: Batch,
    bytes: usize,
}

impl<'a> Writer<'a> {
    pub fn new(client: &'a Client, range: &'a str) -> Self {
        Writer { client, range, batch: Batch::new(), bytes: 0 }
    }

    pub async fn put(&mut self, key: Vec<u8>, value: Vec<u8>) -> Result<(), BridgeError> {
        self.bytes += key.len() + value.len();
        self.batch = std::mem::take(&mut self.batch).put(key, value);
        self.maybe_flush().await
    }

    pub async fn delete(&mut self, key: Vec<u8>) -> Result<(), BridgeError> {
        self.bytes += key.len();
        self.batch = std::mem::take(&mut self.batch).delete(key);
        self.maybe_flush().await
    }

    async fn maybe_flush(&mut self) -> Result<(), BridgeError> {
        if self.batch.len() >= BATCH_OPS_MAX / 2 || self.bytes >= BATCH_BYTES_MAX {
            self.flush().await?;
        }
        Ok(())
    }

    /// Sends what is collected; returns once it is durable.
    pub async fn flush(&mut self) -> Result<(), BridgeError> {
        if !self.batch.is_empty() {
            self.client.write(self.range, std::mem::take(&mut self.batch)).await?;
            self.bytes = 0;
        }
        Ok(())
    }
}

/// Makes the range hold `items` in place of whatever those keys held:
/// rows of an old value that the new one does not have are deleted.
pub async fn replace_items(
    writer: &mut Writer<'_>,
    old: Vec<Option<Item>>,
    items: &[Item],
) -> Result<(), BridgeError> {
    for (old, new) in old.into_iter().zip(items) {
        let rows = new.rows();
        if let Some(old) = old {
            let keep: HashSet<&[u8]> = rows.iter().map(|(r, _)| &r[..]).collect();
            for (row, _) in old.rows() {
                if !keep.contains(&row[..]) {
                    writer.delete(row).await?;
                }
            }
        }
        for (row, value) in rows {
            writer.put(row, value).await?;
        }
    }
    Ok(())
}

/// A key for messages: text when it is printable, escaped otherwise.
/// A key longer than [`SHOWN_KEY_BYTES_MAX`] shows its start and its length.
pub fn show(key: &[u8]) -> String {
    if key.len() <= SHOWN_KEY_BYTES_MAX {
        return key.escape_ascii().to_string();
    }
    format!("{}... ({} bytes)", key[..SHOWN_KEY_BYTES_MAX].escape_ascii(), key.len())
}

/// The most bytes of a key a message shows.
const SHOWN_KEY_BYTES_MAX: usize = 64;

/// Every key row of a Redis database range (`("k", KEY)` rows), at a
/// snapshot, streamed.
pub fn key_rows(
    client: &Client,
    range: &str,
    snapshot: Option<u64>,
) -> monotable_client::RecordStream {
    let mut scan = Scan::all().tuple_prefix(key_rows_prefix());
    if let Some(s) = snapshot {
        scan = scan.at(s);
    }
    client.scan_stream(range, scan)
}

#[cfg(test)]
mod show_tests {
    // Regression: an import summary printed a skipped 20 KB key whole.
    #[test]
    fn long_keys_show_their_start_and_length() {
        assert_eq!(super::show(b"a\x00b"), "a\\x00b");
        let long = vec![b'k'; 20_000];
        let shown = super::show(&long);
        assert!(shown.len() < 100 && shown.ends_with("... (20000 bytes)"), "{shown}");
    }
}
