//! Segment reads by RDMA one-sided READ (cargo feature `rdma`), on
//! rdma-core's verbs through the `sideway` crate (the released `ibverbs`
//! crate cannot post an RDMA READ).
//!
//! The owner maps a region's file read-only and registers the mapping as
//! a memory region with remote read access ([`RdmaOwner::expose`]); a
//! reader posts READs of it into a landing buffer of its own and polls for
//! their completion ([`RdmaConn::read`]). The owner's CPU does nothing per
//! read (seed 004's claim); it answers only the two control requests of
//! the native protocol, `RdmaConnect` (a reliable-connected queue pair
//! per reader) and `RdmaRegion` (a region's address, remote key and
//! registered length, renewing its lease). Bytes read this way are
//! verified like any others ([`super::copy`]).
//!
//! Memory registration follows the region's lease: an exposed region is
//! deregistered and unmapped once [`super::Regions`] drops it, and a
//! reader renews the lease by asking for the region again (the owner sees
//! no reads). A file the owner's compaction unlinked stays readable while
//! the mapping holds it.
//!
//! The device is the first one rdma-core lists, on port 1, with its first
//! RoCE v2 GID (else its first non-zero one). A node without rdma-core or
//! without a device fails [`Verbs::open`] and reads segments over TCP.

use std::collections::HashMap;
use std::fs::File;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use monotable_proto::RdmaEndpoint;
use sideway::ibverbs::address::{AddressHandleAttribute, Gid, GidType};
use sideway::ibverbs::completion::{BasicCompletionQueue, WorkCompletionStatus};
use sideway::ibverbs::device::{DeviceInfo, DeviceList};
use sideway::ibverbs::device_context::{DeviceContext, LinkLayer, Mtu};
use sideway::ibverbs::memory_region::MemoryRegion;
use sideway::ibverbs::protection_domain::ProtectionDomain;
use sideway::ibverbs::queue_pair::{
    BasicQueuePair, PostSendGuard, QueuePair, QueuePairAttribute, QueuePairState,
    SetScatterGatherEntry, WorkRequestFlags,
};
use sideway::ibverbs::AccessFlags;

use super::{ReadError, Regions, SEGMENT_READ_MAX_BYTES};

/// The device port used.
const PORT: u8 = 1;
/// Connected queue pairs an owner keeps for readers; the oldest goes when
/// a new reader connects past this.
pub const RDMA_READERS_MAX: usize = 64;
/// Longest a reader waits for one READ to complete.
pub const RDMA_READ_TIMEOUT_MS: u64 = 5_000;
/// Completion queue entries per queue pair: one READ is outstanding at a
/// time on a connection.
const CQ_ENTRIES: u32 = 4;

/// An opened RDMA device: its context, protection domain and the address
/// of its port.
pub struct Verbs {
    ctx: Arc<DeviceContext>,
    pd: Arc<ProtectionDomain>,
    gid: Gid,
    gid_index: u8,
    lid: u16,
    mtu: Mtu,
    name: String,
}

impl Verbs {
    /// Opens the first device rdma-core lists.
    ///
    /// Errors: rdma-core is not installed, no device is present, or it
    /// cannot be opened; the text says which.
    pub fn open() -> Result<Verbs, String> {
        let list = DeviceList::new().map_err(|e| format!("no RDMA devices: {e}"))?;
        let device = list.iter().next().ok_or("no RDMA device is present")?;
        let name = device.name();
        let ctx = device.open().map_err(|e| format!("{name}: cannot open: {e}"))?;
        let port = ctx.query_port(PORT).map_err(|e| format!("{name}: port {PORT}: {e}"))?;
        let table = ctx.query_gid_table().map_err(|e| format!("{name}: GID table: {e}"))?;
        let on_port: Vec<_> = table
            .iter()
            .filter(|g| g.port_num() == u32::from(PORT) && !g.gid().is_zero())
            .collect();
        let entry = on_port
            .iter()
            .find(|g| g.gid_type() == GidType::RoceV2)
            .or_else(|| on_port.first())
            .ok_or_else(|| format!("{name}: port {PORT} has no GID"))?;
        let gid_index = u8::try_from(entry.gid_index())
            .map_err(|_| format!("{name}: GID index {} is too large", entry.gid_index()))?;
        let lid = if port.link_layer() == LinkLayer::InfiniBand { port.lid() } else { 0 };
        let pd = ctx.alloc_pd().map_err(|e| format!("{name}: protection domain: {e}"))?;
        Ok(Verbs { gid: entry.gid(), gid_index, lid, mtu: port.active_mtu(), pd, ctx, name })
    }

    /// The device's name (as `ibv_devices` lists it).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A new reliable-connected queue pair in state INIT, with a completion
    /// queue of its own, and its endpoint.
    fn queue_pair(&self, access: AccessFlags) -> Result<(Qp, RdmaEndpoint), String> {
        let cq = self
            .ctx
            .create_cq_builder()
            .setup_cqe(CQ_ENTRIES)
            .build()
            .map_err(|e| format!("completion queue: {e}"))?;
        let mut qp = self
            .pd
            .create_qp_builder()
            .setup_send_cq(cq.clone())
            .setup_recv_cq(cq.clone())
            .setup_max_send_wr(CQ_ENTRIES)
            .setup_max_recv_wr(1)
            .setup_max_send_sge(1)
            .build()
            .map_err(|e| format!("queue pair: {e}"))?;
        let mut attr = QueuePairAttribute::new();
        attr.setup_state(QueuePairState::Init)
            .setup_pkey_index(0)
            .setup_port(PORT)
            .setup_access_flags(access);
        qp.modify(&attr).map_err(|e| format!("queue pair to INIT: {e}"))?;
        let psn = rand::random::<u32>() & 0x00ff_ffff;
        let endpoint =
            RdmaEndpoint { lid: self.lid, gid: self.gid.raw, qp_num: qp.qp_number(), psn };
        Ok((Qp { qp, cq, psn }, endpoint))
    }
}

/// A queue pair and its completion queue.
struct Qp {
    qp: BasicQueuePair,
    cq: Arc<BasicCompletionQueue>,
    psn: u32,
}

impl Qp {
    /// Connects to `remote` (to RTR, then RTS), as `ibv_rc_pingpong` does.
    fn connect(&mut self, verbs: &Verbs, remote: &RdmaEndpoint) -> Result<(), String> {
        let mut rtr = QueuePairAttribute::new();
        rtr.setup_state(QueuePairState::ReadyToReceive)
            .setup_path_mtu(verbs.mtu)
            .setup_dest_qp_num(remote.qp_num)
            .setup_rq_psn(remote.psn)
            .setup_max_dest_read_atomic(1)
            .setup_min_rnr_timer(12);
        let mut ah = AddressHandleAttribute::new();
        ah.setup_dest_lid(remote.lid)
            .setup_port(PORT)
            .setup_grh_src_gid_index(verbs.gid_index)
            .setup_grh_dest_gid(&Gid { raw: remote.gid })
            .setup_grh_hop_limit(64);
        rtr.setup_address_vector(&ah);
        self.qp.modify(&rtr).map_err(|e| format!("queue pair to RTR: {e}"))?;
        let mut rts = QueuePairAttribute::new();
        rts.setup_state(QueuePairState::ReadyToSend)
            .setup_sq_psn(self.psn)
            .setup_timeout(14)
            .setup_retry_cnt(7)
            .setup_rnr_retry(7)
            .setup_max_read_atomic(1);
        self.qp.modify(&rts).map_err(|e| format!("queue pair to RTS: {e}"))
    }
}

/// A region's file, mapped and registered for remote reads. Fields drop
/// in order: the registration before the mapping it covers.
struct Exposed {
    mr: Arc<MemoryRegion>,
    map: memmap2::Mmap,
    len: u64,
}

/// The owner's side: exposes registered regions to remote READs and
/// keeps one connected queue pair per reader.
pub struct RdmaOwner {
    verbs: Arc<Verbs>,
    regions: Arc<Regions>,
    /// Region id -> its exposure. A std mutex: held to look up, register
    /// or drop, never across an await.
    exposed: Mutex<HashMap<u64, Exposed>>,
    readers: Mutex<Vec<Qp>>,
}

impl RdmaOwner {
    pub fn new(verbs: Arc<Verbs>, regions: Arc<Regions>) -> Self {
        RdmaOwner { verbs, regions, exposed: Mutex::default(), readers: Mutex::default() }
    }

    /// Connects a new queue pair to reader `reader`; returns its endpoint.
    ///
    /// Errors: the verbs failed (the text says where).
    pub fn connect(&self, reader: &RdmaEndpoint) -> Result<RdmaEndpoint, String> {
        let (mut qp, endpoint) = self.verbs.queue_pair(AccessFlags::RemoteRead)?;
        qp.connect(&self.verbs, reader)?;
        let mut readers = self.readers.lock().unwrap_or_else(|p| p.into_inner());
        if readers.len() >= RDMA_READERS_MAX {
            readers.remove(0);
        }
        readers.push(qp);
        Ok(endpoint)
    }

    /// Exposes region `region` for remote reads (or again, longer, when its
    /// file grew) and renews its lease; returns `(addr, rkey, len)`: `len`
    /// bytes from `addr` are readable. Exposures of regions whose lease
    /// ended are dropped first.
    ///
    /// Errors: [`ReadError::Gone`] for a region not registered;
    /// [`ReadError::Failed`] if the file cannot be mapped or registered.
    pub fn expose(&self, incarnation: u64, region: u64) -> Result<(u64, u32, u64), ReadError> {
        let (file, region_len) = self.regions.lease(incarnation, region)?;
        let failed = |reason: String| ReadError::Failed { owner: self.regions.owner(), reason };
        let file_len = file.metadata().map_err(|e| failed(e.to_string()))?.len();
        let len = file_len.min(region_len);
        let mut exposed = self.exposed.lock().unwrap_or_else(|p| p.into_inner());
        exposed.retain(|id, _| self.regions.contains(*id));
        if let Some(e) = exposed.get(&region) {
            if e.len >= len {
                return Ok((e.map.as_ptr() as u64, e.mr.rkey(), e.len));
            }
        }
        let e = expose_file(&self.verbs, &file, len).map_err(failed)?;
        let answer = (e.map.as_ptr() as u64, e.mr.rkey(), e.len);
        exposed.insert(region, e);
        Ok(answer)
    }

    /// Regions exposed now.
    pub fn exposed(&self) -> usize {
        self.exposed.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

fn expose_file(verbs: &Verbs, file: &File, len: u64) -> Result<Exposed, String> {
    if len == 0 {
        return Err("the region's file is empty".into());
    }
    let size = usize::try_from(len).map_err(|_| format!("a region of {len} bytes"))?;
    // SAFETY: segment files are only appended to while registered (sealed
    // ones never change), so the mapped bytes are not modified under the
    // reader; the mapping is read-only and lives as long as `Exposed`.
    let map = unsafe { memmap2::MmapOptions::new().len(size).map(file) }
        .map_err(|e| format!("cannot map the region's file: {e}"))?;
    // SAFETY: the registration covers exactly the mapping, which outlives
    // it (`Exposed` drops the registration first).
    let mr = unsafe { verbs.pd.reg_mr(map.as_ptr() as usize, size, AccessFlags::RemoteRead) }
        .map_err(|e| format!("cannot register the region: {e}"))?;
    Ok(Exposed { mr, map, len })
}

/// The reader's side of one connection: a queue pair connected to one
/// owner and a registered landing buffer for one READ at a time.
pub struct RdmaConn {
    qp: Qp,
    buf: Box<[u8]>,
    mr: Arc<MemoryRegion>,
    next_wr: u64,
}

/// A connection not yet connected: its endpoint goes to the owner, whose
/// answer [`Pending::connect`] takes.
pub struct Pending {
    verbs: Arc<Verbs>,
    qp: Qp,
    pub endpoint: RdmaEndpoint,
}

impl Pending {
    /// A new queue pair with a landing buffer of [`SEGMENT_READ_MAX_BYTES`].
    ///
    /// Errors: the verbs failed.
    pub fn new(verbs: Arc<Verbs>) -> Result<Pending, String> {
        let (qp, endpoint) = verbs.queue_pair(AccessFlags::LocalWrite)?;
        Ok(Pending { verbs, qp, endpoint })
    }

    /// Connects to the owner's queue pair `owner`.
    ///
    /// Errors: the verbs failed.
    pub fn connect(mut self, owner: &RdmaEndpoint) -> Result<RdmaConn, String> {
        self.qp.connect(&self.verbs, owner)?;
        let mut buf = vec![0u8; SEGMENT_READ_MAX_BYTES as usize].into_boxed_slice();
        // SAFETY: the buffer is heap memory owned by the connection, which
        // keeps it (and never moves it) for as long as the registration.
        let mr = unsafe {
            self.verbs.pd.reg_mr(buf.as_mut_ptr() as usize, buf.len(), AccessFlags::LocalWrite)
        }
        .map_err(|e| format!("cannot register the landing buffer: {e}"))?;
        Ok(RdmaConn { qp: self.qp, buf, mr, next_wr: 0 })
    }
}

impl RdmaConn {
    /// Reads `len` bytes at `addr` of the owner's region with key `rkey`
    /// (one READ), waiting at most [`RDMA_READ_TIMEOUT_MS`]. Blocking:
    /// call it off the async threads.
    ///
    /// Errors: the READ could not be posted, completed with an error
    /// status, or did not complete in time; the connection is then unusable
    /// (a queue pair in error stays so) and must be dropped.
    pub fn read(&mut self, addr: u64, rkey: u32, len: u32) -> Result<Vec<u8>, String> {
        assert!(len > 0 && len <= SEGMENT_READ_MAX_BYTES, "one READ of at most the buffer");
        self.next_wr += 1;
        let wr = self.next_wr;
        {
            let mut guard = self.qp.qp.start_post_send();
            let handle = guard.construct_wr(wr, WorkRequestFlags::Signaled).setup_read(rkey, addr);
            // SAFETY: the landing buffer is registered under `self.mr` and
            // stays alive and unmoved until the completion is polled below
            // (or the connection, holding both, is dropped).
            unsafe { handle.setup_sge(self.mr.lkey(), self.buf.as_mut_ptr() as u64, len) };
            guard.post().map_err(|e| format!("posting a READ: {e}"))?;
        }
        let deadline = Instant::now() + Duration::from_millis(RDMA_READ_TIMEOUT_MS);
        loop {
            if let Ok(poller) = self.qp.cq.start_poll() {
                for wc in poller {
                    if wc.wr_id() != wr {
                        continue;
                    }
                    if wc.status() != WorkCompletionStatus::Success as u32 {
                        let status: WorkCompletionStatus = wc.status().into();
                        return Err(format!("READ completed with {status:?}"));
                    }
                    return Ok(self.buf[..len as usize].to_vec());
                }
            }
            if Instant::now() >= deadline {
                return Err(format!("READ not completed within {RDMA_READ_TIMEOUT_MS} ms"));
            }
            std::thread::yield_now();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Without rdma-core or a device (as on these machines), opening fails
    /// with a reason, not a crash: the node then reads over TCP.
    #[test]
    fn a_machine_without_a_device_says_why() {
        if let Err(reason) = Verbs::open() {
            assert!(!reason.is_empty());
        }
    }
}
