//! Async Rust client for Monotable's native protocol.
//!
//! A [`Client`] holds one TCP connection and pipelines every call over it:
//! clone it freely and call from many tasks at once; replies are matched to
//! calls by request id and may complete in any order.
//!
//! Keys and values are bytes. Keys sort lexicographically; build composite
//! keys with [`tuple::encode`] so that `("paris", 31)` sorts before
//! `("paris", 40)`.
//!
//! ```
//! # let dir = tempfile::tempdir().unwrap();
//! # let server = monotable_node::server::ServerHandle::start(
//! #     monotable_node::config::NodeConfig::for_tests(dir.path())).unwrap();
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use monotable_client::{Client, RangeOptions, Scan};
//!
//! let client = Client::connect(server.addr).await?;
//! client.create_range("users", RangeOptions::default()).await?;
//! client.put("users", b"ada", b"{\"born\":1815}").await?;
//! assert_eq!(client.get("users", b"ada").await?, Some(b"{\"born\":1815}".to_vec()));
//!
//! let page = client.scan("users", &Scan::all().limit(10)).await?;
//! assert_eq!(page.records.len(), 1);
//! # Ok::<(), monotable_client::Error>(())
//! # }).unwrap();
//! ```
//!
//! # Values for views
//!
//! Mappers read a record's value as one MessagePack document: encode values
//! that views read (with `rmp_serde::to_vec_named`, for instance). The CLI
//! and the Redis commands encode JSON for you; this client stores bytes as
//! given. A value that is not exactly one MessagePack document is an error
//! of its record in the mapper's status (`errors`, `last_error`,
//! `last_error_key`), and the record has no rows. A mapper's rows are keyed
//! by [`row::encode_row`]`(emitted key, source key, repeat)`; reducers on its
//! target take emitted keys as bounds and group by their elements.
//!
//! ```
//! # let dir = tempfile::tempdir().unwrap();
//! # let server = monotable_node::server::ServerHandle::start(
//! #     monotable_node::config::NodeConfig::for_tests(dir.path())).unwrap();
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use monotable_client::{row, AggregateReply, AggregateRequest, Client, Element};
//! use monotable_client::{MapFunction, RangeOptions, Scan};
//!
//! let client = Client::connect(server.addr).await?;
//! client.create_range("orders", RangeOptions::default()).await?;
//! let doc = serde_json::json!({"city": "paris", "amount": 12});
//! client.put("orders", b"o1", rmp_serde::to_vec_named(&doc)?).await?;
//! client.put("orders", b"o2", b"raw bytes, not MessagePack").await?;
//! let by_city = MapFunction::Field { key_path: "city".into(), value_path: Some("amount".into()) };
//! client.create_mapper("by_city", "orders", "orders_by_city", by_city).await?;
//! client.create_reducer("orders_n", "orders_by_city", "count").await?;
//! let fresh = AggregateRequest {
//!     reducer: "orders_n".into(),
//!     fresh: true,
//!     timeout_ms: 10_000,
//!     ..AggregateRequest::default()
//! };
//! let AggregateReply::Total(n) = client.aggregate(fresh).await? else { unreachable!() };
//! assert_eq!(rmp_serde::from_slice::<u64>(&n)?, 1);
//! let rows = client.scan("orders_by_city", &Scan::all()).await?.records;
//! let (emitted, source, _) = row::decode_row(&rows[0].key)?;
//! assert_eq!((emitted, source), (vec![Element::from("paris")], b"o1".to_vec()));
//! let views = client.list_views().await?;
//! let mapper = views.iter().find(|v| v.name == "by_city").unwrap();
//! assert_eq!(mapper.errors, 1);
//! assert_eq!(mapper.last_error_key.as_ref().map(|k| k.to_vec()), Some(b"o2".to_vec()));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```
//!
//! # Layout
//!
//! - [`Client`] (this file): the calls, each a [`monotable_proto::Command`].
//! - [`Options`]: the password and the connect and handshake timeouts of
//!   [`Client::connect_with`].
//! - `connection`: the pipelined connection (writer and reader tasks), and
//!   the handshake and authentication that open it.
//! - [`error`]: [`Error`], with the server's typed [`ErrorCode`].
//! - [`Scan`], [`ScanPage`], [`RecordStream`]: range scans, paged or streamed.
//! - [`Batch`]: write batches.

mod connection;
pub mod error;
mod options;

use std::sync::Arc;

use monotable_proto::limits::BATCH_OPS_MAX;
pub use monotable_proto::{row, tuple};
pub use monotable_proto::{
    AggregateReply, AggregateRequest, ChunkInfo, ClusterStatus, CommitToken, Element, ErrorCode,
    ErrorInfo, JobErrorSample, JobInput, JobOutput, JobSpec, JobStatus, MapFunction, NodeInfo,
    NodeStatus, RangeInfo, RangeOptions, ReduceFunction, ServerHello, SinkSource, TreeStatus,
    ViewDefinition, ViewStatus,
};
use monotable_proto::{Bytes, Command, Reply, ScanRequest, WriteOp};
use tokio::net::ToSocketAddrs;

use connection::Connection;

/// Most key and value bytes one request of [`Client::write`] carries: half a
/// frame ([`monotable_proto::limits::FRAME_SIZE_MAX_BYTES`]), leaving room
/// for the encoding.
pub const WRITE_PART_BYTES_MAX: usize = monotable_proto::limits::FRAME_SIZE_MAX_BYTES / 2;

/// Cuts `ops` into runs of at most `max` key and value bytes each (an
/// operation alone over `max` is a run of its own), in order.
fn split_by_bytes(ops: Vec<WriteOp>, max: usize) -> Vec<Vec<WriteOp>> {
    let mut parts = vec![Vec::new()];
    let mut bytes = 0;
    for op in ops {
        let size = op.key().len() + op.value().map_or(0, <[u8]>::len);
        let last = parts.last_mut().expect("one part at least");
        if !last.is_empty() && bytes + size > max {
            parts.push(Vec::new());
            bytes = 0;
        }
        bytes += size;
        parts.last_mut().expect("one part at least").push(op);
    }
    parts
}
pub use error::{Error, Result};
pub use options::{Options, CONNECT_TIMEOUT_DEFAULT_MS, HANDSHAKE_TIMEOUT_DEFAULT_MS};

/// A key and its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
}

/// A connection to a Monotable node. Cheap to clone; clones share the
/// connection.
#[derive(Clone)]
pub struct Client {
    conn: Arc<Connection>,
}

fn bytes(b: impl AsRef<[u8]>) -> Bytes {
    Bytes::from(b.as_ref().to_vec())
}

fn invalid(code: ErrorCode, message: String) -> Error {
    Error::Invalid(ErrorInfo::new(code, message))
}

fn check_key(key: &[u8]) -> Result<()> {
    monotable_proto::limits::check_key_size(key).map_err(Error::Invalid)
}

fn unexpected(reply: Reply) -> Error {
    Error::Protocol(format!("unexpected reply {reply:?}"))
}

/// Operations to apply together. The operations that fall in one chunk are
/// applied atomically (all or none, one commit token); a batch whose keys
/// span several chunks is applied chunk by chunk, see [`Client::write`].
#[derive(Debug, Clone, Default)]
pub struct Batch {
    ops: Vec<WriteOp>,
}

impl Batch {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn put(mut self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Self {
        self.ops.push(WriteOp::Put { key: bytes(key), value: bytes(value) });
        self
    }

    pub fn delete(mut self, key: impl AsRef<[u8]>) -> Self {
        self.ops.push(WriteOp::Delete { key: bytes(key) });
        self
    }

    pub fn len(&self) -> usize {
        self.ops.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    fn check(&self) -> Result<()> {
        if self.ops.len() > BATCH_OPS_MAX {
            return Err(invalid(
                ErrorCode::BatchTooLarge,
                format!("{} operations exceed the batch limit of {BATCH_OPS_MAX}", self.ops.len()),
            ));
        }
        self.ops.iter().try_for_each(|op| op.check_size().map_err(Error::Invalid))
    }
}

/// What to scan: bounds or a prefix, a limit, a direction, a snapshot.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scan {
    start: Option<Vec<u8>>,
    end: Option<Vec<u8>>,
    prefix: Option<Vec<u8>>,
    limit: u32,
    reverse: bool,
    snapshot: Option<u64>,
}

impl Scan {
    /// Every key of the range.
    pub fn all() -> Self {
        Self::default()
    }

    /// Keys from `start`, inclusive.
    pub fn start(mut self, start: impl AsRef<[u8]>) -> Self {
        self.start = Some(start.as_ref().to_vec());
        self
    }

    /// Keys before `end`, exclusive.
    pub fn end(mut self, end: impl AsRef<[u8]>) -> Self {
        self.end = Some(end.as_ref().to_vec());
        self
    }

    /// Keys that start with the bytes `prefix` (instead of `start`/`end`).
    /// For an encoded tuple this also matches a last string or bytes
    /// element that continues past it (`("a",)` is a byte prefix of
    /// `("a\0b",)`), and a number's non-integral neighbours (`(1,)` of
    /// `(1.5,)`): use [`Scan::tuple_prefix`] for whole elements.
    pub fn prefix(mut self, prefix: impl AsRef<[u8]>) -> Self {
        self.prefix = Some(prefix.as_ref().to_vec());
        self
    }

    /// Keys whose tuple starts with the elements of the encoded tuple
    /// `prefix`, whole elements only: the bounds `prefix` ..
    /// [`monotable_proto::keys::tuple_prefix_end`] (instead of
    /// `start`/`end`). The empty tuple selects every key.
    pub fn tuple_prefix(self, prefix: impl AsRef<[u8]>) -> Self {
        let prefix = prefix.as_ref();
        match monotable_proto::keys::tuple_prefix_end(prefix) {
            Some(end) => self.start(prefix).end(end),
            None => self,
        }
    }

    /// At most `limit` records per page (0: the server's maximum).
    pub fn limit(mut self, limit: u32) -> Self {
        self.limit = limit;
        self
    }

    /// Descending key order.
    pub fn reverse(mut self) -> Self {
        self.reverse = true;
        self
    }

    /// Read at a snapshot from [`Client::snapshot`].
    pub fn at(mut self, snapshot: u64) -> Self {
        self.snapshot = Some(snapshot);
        self
    }

    fn request(&self, range: &str) -> ScanRequest {
        ScanRequest {
            range: range.to_owned(),
            start: self.start.as_ref().map(bytes),
            end: self.end.as_ref().map(bytes),
            prefix: self.prefix.as_ref().map(bytes),
            limit: self.limit,
            reverse: self.reverse,
            snapshot: self.snapshot,
        }
    }

    /// The same scan, continuing after the records a page returned.
    fn resumed(&self, resume: Vec<u8>) -> Scan {
        let mut next = self.clone();
        // A prefix scan continues as a bounded scan over the same prefix.
        if let Some(prefix) = next.prefix.take() {
            next.start = Some(prefix.clone());
            next.end = monotable_proto::keys::prefix_end(&prefix);
        }
        if next.reverse {
            next.end = Some(resume);
        } else {
            next.start = Some(resume);
        }
        next
    }
}

/// One page of a scan.
#[derive(Debug, Clone)]
pub struct ScanPage {
    pub records: Vec<Record>,
    /// The scan to run for the next page; `None` when the scan is complete.
    pub next: Option<Scan>,
}

/// A scan streamed page by page: call [`RecordStream::next`] until `None`.
pub struct RecordStream {
    client: Client,
    range: String,
    next_scan: Option<Scan>,
    page: std::vec::IntoIter<Record>,
}

impl RecordStream {
    /// The next record, fetching the next page when needed.
    pub async fn next(&mut self) -> Option<Result<Record>> {
        loop {
            if let Some(r) = self.page.next() {
                return Some(Ok(r));
            }
            let scan = self.next_scan.take()?;
            match self.client.scan(&self.range, &scan).await {
                Ok(page) => {
                    self.page = page.records.into_iter();
                    self.next_scan = page.next;
                }
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

/// A grouped aggregate streamed page by page (see
/// [`Client::aggregate_groups`]).
pub struct GroupStream {
    client: Client,
    /// The request for the next page; `None` once the last page came.
    next: Option<AggregateRequest>,
    page: std::vec::IntoIter<(Bytes, Bytes)>,
}

impl GroupStream {
    /// The next group: (group key, reduction as a MessagePack document).
    pub async fn next(&mut self) -> Option<Result<(Vec<u8>, Vec<u8>)>> {
        loop {
            if let Some((k, v)) = self.page.next() {
                return Some(Ok((k.into_vec(), v.into_vec())));
            }
            let mut request = self.next.take()?;
            match self.client.aggregate(request.clone()).await {
                Ok(AggregateReply::Groups { groups, cursor }) => {
                    self.page = groups.into_iter();
                    if let Some(cursor) = cursor {
                        request.cursor = Some(cursor);
                        self.next = Some(request);
                    }
                }
                Ok(AggregateReply::Total(_)) => {
                    return Some(Err(Error::Protocol(
                        "a total, not groups: set the request's group_level".into(),
                    )))
                }
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

impl Client {
    /// Connects and performs the version handshake, with the default
    /// [`Options`]: no password, the default timeouts.
    pub async fn connect(addr: impl ToSocketAddrs) -> Result<Client> {
        Self::connect_with(addr, Options::default()).await
    }

    /// Connects, performs the version handshake and, when `options` has a
    /// password, authenticates. A node with a password refuses every
    /// request of a connection that has not given it
    /// ([`ErrorCode::NoAuth`]); a wrong password fails here with
    /// [`ErrorCode::AuthFailed`]. Something at `addr` that does not answer
    /// the handshake in time (the node's Redis port, say) fails with
    /// [`Error::NoHandshake`] rather than waiting for ever.
    pub async fn connect_with(addr: impl ToSocketAddrs, options: Options) -> Result<Client> {
        Ok(Client { conn: Arc::new(Connection::open(addr, &options).await?) })
    }

    /// What the server said about itself at the handshake.
    pub fn server(&self) -> &ServerHello {
        &self.conn.hello
    }

    /// Whether the connection is known to be closed (the server closed it
    /// or it broke): every later request fails without being sent.
    pub fn is_closed(&self) -> bool {
        self.conn.is_closed()
    }

    async fn call(&self, command: Command) -> Result<Reply> {
        self.conn.call(command).await
    }

    async fn call_ok(&self, command: Command) -> Result<()> {
        match self.call(command).await? {
            Reply::Ok => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    pub async fn ping(&self) -> Result<()> {
        match self.call(Command::Ping).await? {
            Reply::Pong => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Creates a range. Fails with [`ErrorCode::RangeExists`] if it exists.
    pub async fn create_range(&self, name: &str, options: RangeOptions) -> Result<()> {
        self.call_ok(Command::CreateRange { name: name.to_owned(), options, replicas: None }).await
    }

    /// Creates a range whose chunks are replicated by Raft on `replicas`
    /// nodes (capped at the live nodes of the cluster; 1: an ordinary
    /// range of the node asked). Fails with [`ErrorCode::RangeExists`] if
    /// it exists.
    pub async fn create_range_replicated(
        &self,
        name: &str,
        options: RangeOptions,
        replicas: u32,
    ) -> Result<()> {
        let command =
            Command::CreateRange { name: name.to_owned(), options, replicas: Some(replicas) };
        self.call_ok(command).await
    }

    /// Every range, with its chunks.
    pub async fn list_ranges(&self) -> Result<Vec<RangeInfo>> {
        match self.call(Command::ListRanges).await? {
            Reply::Ranges(r) => Ok(r),
            other => Err(unexpected(other)),
        }
    }

    pub async fn describe_range(&self, name: &str) -> Result<RangeInfo> {
        match self.call(Command::DescribeRange { name: name.to_owned() }).await? {
            Reply::Range(r) => Ok(r),
            other => Err(unexpected(other)),
        }
    }

    /// Drops a range and deletes its data.
    pub async fn drop_range(&self, name: &str) -> Result<()> {
        self.call_ok(Command::DropRange { name: name.to_owned() }).await
    }

    /// Writes one record; returns once it is durable.
    pub async fn put(
        &self,
        range: &str,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
    ) -> Result<CommitToken> {
        let tokens = self.write(range, Batch::new().put(key, value)).await?;
        tokens
            .into_iter()
            .next()
            .ok_or_else(|| Error::Protocol("write without a commit token".into()))
    }

    /// Deletes one record (deleting an absent key is not an error).
    pub async fn delete(&self, range: &str, key: impl AsRef<[u8]>) -> Result<CommitToken> {
        let tokens = self.write(range, Batch::new().delete(key)).await?;
        tokens
            .into_iter()
            .next()
            .ok_or_else(|| Error::Protocol("write without a commit token".into()))
    }

    /// Applies a batch. The operations that fall in one chunk are applied
    /// atomically, with one commit token each chunk; a batch spanning several
    /// chunks is *not* atomic as a whole: if the call fails, some chunks'
    /// parts may have been applied. Use [`Client::write_atomic`] to refuse
    /// such batches instead. A batch whose keys and values pass
    /// [`WRITE_PART_BYTES_MAX`] (it would not fit one frame) is sent in
    /// parts of at most that many bytes, one after the other: then not even
    /// its operations in one chunk are atomic together.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let server = monotable_node::server::ServerHandle::start(
    /// #     monotable_node::config::NodeConfig::for_tests(dir.path())).unwrap();
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// # let client = monotable_client::Client::connect(server.addr).await?;
    /// # client.create_range("accounts", Default::default()).await?;
    /// use monotable_client::Batch;
    /// let batch = Batch::new().put("alice", "90").put("bob", "10").delete("carol");
    /// let tokens = client.write("accounts", batch).await?;
    /// assert_eq!(tokens.len(), 1); // one chunk, so one atomic commit
    /// assert_eq!(client.get("accounts", "bob").await?, Some(b"10".to_vec()));
    /// # Ok::<(), monotable_client::Error>(())
    /// # }).unwrap();
    /// ```
    pub async fn write(&self, range: &str, batch: Batch) -> Result<Vec<CommitToken>> {
        batch.check()?;
        let mut tokens = Vec::new();
        for ops in split_by_bytes(batch.ops, WRITE_PART_BYTES_MAX) {
            match self.call(Command::Write { range: range.to_owned(), ops, atomic: false }).await? {
                Reply::Written(t) => tokens.extend(t),
                other => return Err(unexpected(other)),
            }
        }
        Ok(tokens)
    }

    /// Applies a batch all or nothing, whatever chunks its keys fall in: a
    /// batch over several chunks is recorded whole in the node's intent log
    /// first (one more fsync) and applied under one seq in every chunk, so
    /// a crash leaves all of it or none. On a replicated range it must fall
    /// in one chunk: [`ErrorCode::CrossChunkBatch`] otherwise, nothing
    /// applied.
    pub async fn write_atomic(&self, range: &str, batch: Batch) -> Result<CommitToken> {
        batch.check()?;
        match self
            .call(Command::Write { range: range.to_owned(), ops: batch.ops, atomic: true })
            .await?
        {
            Reply::Written(tokens) if tokens.len() == 1 => Ok(tokens[0]),
            other => Err(unexpected(other)),
        }
    }

    /// The newest durable value of `key`.
    pub async fn get(&self, range: &str, key: impl AsRef<[u8]>) -> Result<Option<Vec<u8>>> {
        self.get_inner(range, key.as_ref(), None).await
    }

    /// The value of `key` at a snapshot.
    pub async fn get_at(
        &self,
        range: &str,
        key: impl AsRef<[u8]>,
        snapshot: u64,
    ) -> Result<Option<Vec<u8>>> {
        self.get_inner(range, key.as_ref(), Some(snapshot)).await
    }

    async fn get_inner(
        &self,
        range: &str,
        key: &[u8],
        snapshot: Option<u64>,
    ) -> Result<Option<Vec<u8>>> {
        check_key(key)?;
        match self.call(Command::Get { range: range.to_owned(), key: bytes(key), snapshot }).await?
        {
            Reply::Value(v) => Ok(v.map(|b| b.into_vec())),
            other => Err(unexpected(other)),
        }
    }

    /// Values of many keys, in the order asked.
    pub async fn multi_get<K: AsRef<[u8]>>(
        &self,
        range: &str,
        keys: &[K],
    ) -> Result<Vec<Option<Vec<u8>>>> {
        for k in keys {
            check_key(k.as_ref())?;
        }
        let keys = keys.iter().map(bytes).collect();
        match self.call(Command::MultiGet { range: range.to_owned(), keys, snapshot: None }).await?
        {
            Reply::Values(v) => Ok(v.into_iter().map(|o| o.map(|b| b.into_vec())).collect()),
            other => Err(unexpected(other)),
        }
    }

    /// One page of a scan; `page.next` continues it.
    pub async fn scan(&self, range: &str, scan: &Scan) -> Result<ScanPage> {
        match self.call(Command::Scan(scan.request(range))).await? {
            Reply::Scan(reply) => Ok(ScanPage {
                records: reply
                    .records
                    .into_iter()
                    .map(|r| Record { key: r.key.into_vec(), value: r.value.into_vec() })
                    .collect(),
                next: reply.resume.map(|k| scan.resumed(k.into_vec())),
            }),
            other => Err(unexpected(other)),
        }
    }

    /// Every record the scan covers, fetched a page at a time. The `limit`
    /// of `scan` sets the page size.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let server = monotable_node::server::ServerHandle::start(
    /// #     monotable_node::config::NodeConfig::for_tests(dir.path())).unwrap();
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// # let client = monotable_client::Client::connect(server.addr).await?;
    /// # client.create_range("accounts", Default::default()).await?;
    /// use monotable_client::{tuple, Element, Scan};
    /// for (city, n) in [("lyon", 1), ("paris", 31), ("paris", 40)] {
    ///     let key = tuple::encode(&[Element::from(city), Element::from(n)]).unwrap();
    ///     client.put("accounts", key, b"").await?;
    /// }
    /// let paris = tuple::encode(&[Element::from("paris")]).unwrap();
    /// let mut stream = client.scan_stream("accounts", Scan::all().tuple_prefix(paris).limit(1));
    /// let mut found = Vec::new();
    /// while let Some(record) = stream.next().await {
    ///     found.push(tuple::decode(&record?.key).unwrap());
    /// }
    /// assert_eq!(found, vec![
    ///     vec![Element::from("paris"), Element::from(31)],
    ///     vec![Element::from("paris"), Element::from(40)],
    /// ]);
    /// # Ok::<(), monotable_client::Error>(())
    /// # }).unwrap();
    /// ```
    pub fn scan_stream(&self, range: &str, scan: Scan) -> RecordStream {
        RecordStream {
            client: self.clone(),
            range: range.to_owned(),
            next_scan: Some(scan),
            page: Vec::new().into_iter(),
        }
    }

    /// Pins a consistent snapshot of the whole node and returns it; reads at
    /// it see the same data until [`Client::release_snapshot`] or until
    /// this connection closes.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let server = monotable_node::server::ServerHandle::start(
    /// #     monotable_node::config::NodeConfig::for_tests(dir.path())).unwrap();
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// # let client = monotable_client::Client::connect(server.addr).await?;
    /// # client.create_range("accounts", Default::default()).await?;
    /// client.put("accounts", "alice", "90").await?;
    /// let snapshot = client.snapshot().await?;
    /// client.put("accounts", "alice", "0").await?;
    /// assert_eq!(client.get_at("accounts", "alice", snapshot).await?, Some(b"90".to_vec()));
    /// assert_eq!(client.get("accounts", "alice").await?, Some(b"0".to_vec()));
    /// client.release_snapshot(snapshot).await?;
    /// # Ok::<(), monotable_client::Error>(())
    /// # }).unwrap();
    /// ```
    pub async fn snapshot(&self) -> Result<u64> {
        match self.call(Command::CreateSnapshot).await? {
            Reply::Snapshot(seq) => Ok(seq),
            other => Err(unexpected(other)),
        }
    }

    pub async fn release_snapshot(&self, snapshot: u64) -> Result<()> {
        self.call_ok(Command::ReleaseSnapshot { seq: snapshot }).await
    }

    /// Compacts every chunk of a range now (it also happens on its own).
    pub async fn compact_range(&self, name: &str) -> Result<()> {
        self.call_ok(Command::CompactRange { name: name.to_owned(), replica_only: false }).await
    }

    /// Splits the chunk holding `key` so that `key` starts a chunk (chunks
    /// also split on their own past the range's chunk size).
    pub async fn split_chunk(&self, range: &str, key: impl AsRef<[u8]>) -> Result<()> {
        self.call_ok(Command::SplitChunk { range: range.to_owned(), key: bytes(key) }).await
    }

    /// Registers a mapper that keeps `target` (created if missing) equal to
    /// `function` applied to every record of `source`: it first maps what
    /// `source` holds (see the backfill in [`Client::list_views`]), then
    /// follows every change.
    pub async fn create_mapper(
        &self,
        name: &str,
        source: &str,
        target: &str,
        function: MapFunction,
    ) -> Result<()> {
        self.call_ok(Command::CreateMapper {
            name: name.to_owned(),
            source: source.to_owned(),
            target: target.to_owned(),
            function,
        })
        .await
    }

    /// Drops a mapper; the rows it wrote stay in its target range.
    pub async fn drop_mapper(&self, name: &str) -> Result<()> {
        self.call_ok(Command::DropMapper { name: name.to_owned() }).await
    }

    /// Registers a sink: the Redis database at `url` (`redis://HOST:PORT/DB`)
    /// is kept equal to `source` from now on, with `prefix` before every
    /// key it writes.
    pub async fn create_sink(
        &self,
        name: &str,
        source: SinkSource,
        url: &str,
        prefix: &[u8],
    ) -> Result<()> {
        self.call_ok(Command::CreateSink {
            name: name.to_owned(),
            source,
            url: url.to_owned(),
            prefix: bytes(prefix),
        })
        .await
    }

    /// Drops a sink; what it wrote stays in Redis.
    pub async fn drop_sink(&self, name: &str) -> Result<()> {
        self.call_ok(Command::DropSink { name: name.to_owned() }).await
    }

    /// Status of every view: watermark, pending changes, errors, backfill,
    /// sorted by name. The node takes the statuses upstream first (a
    /// mapper's before those of the views reading its target), so a
    /// listing in which no view has a backfill or pending changes means
    /// every view, however deep its chain, reflects its sources as of the
    /// moment the listing started.
    pub async fn list_views(&self) -> Result<Vec<ViewStatus>> {
        match self.call(Command::ListViews).await? {
            Reply::Views(v) => Ok(v),
            other => Err(unexpected(other)),
        }
    }

    /// What every view and sink was created from, sorted by name (mappers,
    /// reducers and sinks alike): each can be created again from it.
    pub async fn view_definitions(&self) -> Result<Vec<ViewDefinition>> {
        match self.call(Command::ViewDefinitions).await? {
            Reply::ViewDefinitions(v) => Ok(v),
            other => Err(unexpected(other)),
        }
    }

    /// Registers a built-in reducer on `range`: count, sum, min, max,
    /// stats or count_distinct.
    pub async fn create_reducer(&self, name: &str, range: &str, builtin: &str) -> Result<()> {
        self.create_reducer_with(name, range, ReduceFunction::Builtin(builtin.to_owned())).await
    }

    /// Registers a reducer on `range` with any function, Lua included.
    pub async fn create_reducer_with(
        &self,
        name: &str,
        range: &str,
        function: ReduceFunction,
    ) -> Result<()> {
        self.call_ok(Command::CreateReducer {
            name: name.to_owned(),
            range: range.to_owned(),
            function,
        })
        .await
    }

    pub async fn drop_reducer(&self, name: &str) -> Result<()> {
        self.call_ok(Command::DropReducer { name: name.to_owned() }).await
    }

    /// The cluster's nodes as the node this client talks to sees them:
    /// ids, addresses, liveness, meta-range roles and chunk counts.
    pub async fn cluster_status(&self) -> Result<ClusterStatus> {
        match self.call(Command::ClusterStatus).await? {
            Reply::Cluster(c) => Ok(c),
            other => Err(unexpected(other)),
        }
    }

    /// Takes node `node` out of the cluster for good.
    pub async fn cluster_remove(&self, node: u64) -> Result<()> {
        self.call_ok(Command::ClusterRemove { node }).await
    }

    /// Node to node: asks for a node id to join with (see
    /// [`Command::ClusterJoin`]).
    /// Answers the node id and the cluster's id.
    pub async fn cluster_join(&self, addr: &str, token: u64) -> Result<(u64, u64)> {
        match self.call(Command::ClusterJoin { addr: addr.to_owned(), token }).await? {
            Reply::Joined { node, cluster } => Ok((node, cluster)),
            other => Err(unexpected(other)),
        }
    }

    /// Node to node: makes a node that runs its meta replica a voter.
    pub async fn cluster_add_voter(&self, node: u64, addr: &str) -> Result<()> {
        self.call_ok(Command::ClusterAddVoter { node, addr: addr.to_owned() }).await
    }

    /// Node to node: the node's id and what it holds.
    pub async fn node_info(&self) -> Result<NodeInfo> {
        match self.call(Command::NodeInfo).await? {
            Reply::NodeInfo(i) => Ok(i),
            other => Err(unexpected(other)),
        }
    }

    /// Node to node: sends a request as it is and returns the reply as it
    /// is (a node forwarding a client's request to the node that must
    /// answer it).
    pub async fn forward(&self, command: Command) -> Result<Reply> {
        self.call(command).await
    }

    /// Node to node: one Raft RPC of group `group`, as encoded bytes, from
    /// node `from` of cluster `cluster` to node `to`.
    pub async fn raft_rpc(
        &self,
        group: u64,
        rpc: Vec<u8>,
        (cluster, from, to): (u64, u64, u64),
    ) -> Result<Vec<u8>> {
        let command = Command::Raft { group, rpc: Bytes::from(rpc), cluster, from, to };
        match self.call(command).await? {
            Reply::Raft(b) => Ok(b.into_vec()),
            other => Err(unexpected(other)),
        }
    }

    /// Node to node: up to `len` bytes at `offset` of segment region
    /// `region` of the node's process `incarnation`, for cluster
    /// `cluster` (see [`Command::SegmentRead`]).
    pub async fn segment_read(
        &self,
        cluster: u64,
        (incarnation, region): (u64, u64),
        offset: u64,
        len: u32,
    ) -> Result<Vec<u8>> {
        let command = Command::SegmentRead { cluster, incarnation, region, offset, len };
        match self.call(command).await? {
            Reply::Segment(b) => Ok(b.into_vec()),
            other => Err(unexpected(other)),
        }
    }

    /// Node to node: connects a queue pair of the server to `reader` for
    /// RDMA READs of its segment regions; returns the server's queue pair.
    /// Errors: `BadRequest` from a node without RDMA.
    pub async fn rdma_connect(
        &self,
        cluster: u64,
        reader: monotable_proto::RdmaEndpoint,
    ) -> Result<monotable_proto::RdmaEndpoint> {
        match self.call(Command::RdmaConnect { cluster, reader }).await? {
            Reply::RdmaEndpoint(e) => Ok(e),
            other => Err(unexpected(other)),
        }
    }

    /// Node to node: registers a segment region for RDMA READs and renews
    /// its lease; returns `(addr, rkey, len)`. Errors as
    /// [`Client::segment_read`], and `BadRequest` from a node without RDMA.
    pub async fn rdma_region(
        &self,
        cluster: u64,
        (incarnation, region): (u64, u64),
    ) -> Result<(u64, u32, u64)> {
        match self.call(Command::RdmaRegion { cluster, incarnation, region }).await? {
            Reply::RdmaRegion { addr, rkey, len } => Ok((addr, rkey, len)),
            other => Err(unexpected(other)),
        }
    }

    /// Starts a batch map-reduce job on the node ([`JobSpec`]); returns
    /// once it runs. Follow it with [`Client::jobs`]. Errors: `BadRequest`
    /// (the message says what does not hold), `JobExists`.
    pub async fn run_job(&self, spec: JobSpec) -> Result<()> {
        match self.call(Command::RunJob(spec)).await? {
            Reply::Ok => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// The node's jobs: those running, then the last that ended.
    pub async fn jobs(&self) -> Result<Vec<JobStatus>> {
        match self.call(Command::ListJobs).await? {
            Reply::Jobs(j) => Ok(j),
            other => Err(unexpected(other)),
        }
    }

    /// Stops a running job; it ends `cancelled`. Errors: `JobNotFound`.
    pub async fn cancel_job(&self, name: &str) -> Result<()> {
        match self.call(Command::CancelJob { name: name.to_owned() }).await? {
            Reply::Ok => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Runs an aggregate. Reductions come back as MessagePack documents.
    /// A grouped aggregate answers one page of groups (at most
    /// `request.limit`, and
    /// [`AGGREGATE_GROUPS_MAX`](monotable_proto::limits::AGGREGATE_GROUPS_MAX)):
    /// when its `cursor` is set, more groups follow; ask again with that
    /// cursor, or use [`Client::aggregate_groups`], which does.
    pub async fn aggregate(&self, request: AggregateRequest) -> Result<AggregateReply> {
        match self.call(Command::Aggregate(request)).await? {
            Reply::Aggregate(a) => Ok(a),
            other => Err(unexpected(other)),
        }
    }

    /// Every group of a grouped aggregate (`request.group_level` set),
    /// streamed page by page: call [`GroupStream::next`] until `None`.
    /// Each page answers as the view is when it is asked (with `fresh`,
    /// each waits for the writes acknowledged before it).
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let server = monotable_node::server::ServerHandle::start(
    /// #     monotable_node::config::NodeConfig::for_tests(dir.path())).unwrap();
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// # let client = monotable_client::Client::connect(server.addr).await?;
    /// use monotable_client::{tuple, AggregateRequest, Element};
    /// client.create_range("visits", Default::default()).await?;
    /// for (day, n) in [("mon", 1), ("mon", 2), ("tue", 3)] {
    ///     let key = tuple::encode(&[Element::from(day), Element::from(n)]).unwrap();
    ///     client.put("visits", key, b"").await?;
    /// }
    /// client.create_reducer("visit_count", "visits", "count").await?;
    /// let request = AggregateRequest {
    ///     reducer: "visit_count".into(),
    ///     group_level: Some(1),
    ///     fresh: true,
    ///     limit: 1, // one group per page, for the example
    ///     ..AggregateRequest::default()
    /// };
    /// let mut groups = client.aggregate_groups(request);
    /// let mut days = Vec::new();
    /// while let Some(group) = groups.next().await {
    ///     let (key, count) = group?;
    ///     days.push((tuple::decode(&key).unwrap(), count));
    /// }
    /// // The counts are MessagePack documents: 2 and 1.
    /// assert_eq!(days, vec![(vec![Element::from("mon")], vec![2]), (vec![Element::from("tue")], vec![1])]);
    /// # Ok::<(), monotable_client::Error>(())
    /// # }).unwrap();
    /// ```
    pub fn aggregate_groups(&self, request: AggregateRequest) -> GroupStream {
        GroupStream { client: self.clone(), next: Some(request), page: Vec::new().into_iter() }
    }
}

#[cfg(test)]
mod split_tests {
    use super::*;

    #[test]
    fn batches_are_cut_by_bytes_in_order() {
        let put = |k: &str, n: usize| WriteOp::Put {
            key: Bytes::from(k.as_bytes().to_vec()),
            value: Bytes::from(vec![0u8; n]),
        };
        let ops = vec![put("a", 5), put("b", 3), put("c", 20), put("d", 1)];
        let parts = split_by_bytes(ops, 10);
        let keys: Vec<Vec<&[u8]>> =
            parts.iter().map(|p| p.iter().map(WriteOp::key).collect()).collect();
        assert_eq!(keys, vec![vec![&b"a"[..], b"b"], vec![b"c"], vec![b"d"]]);
        assert_eq!(split_by_bytes(Vec::new(), 10).len(), 1, "an empty batch is one request");
    }
}
