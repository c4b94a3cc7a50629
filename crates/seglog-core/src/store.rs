//! A key-value store on the log (FORMAT.md 10).
//!
//! Every put and delete is a log record; the log is the only source of truth. The index
//! maps each live key to the location (offset, frame position) of its latest PUT and
//! holds no keys: a lookup hashes the key, and compares it against the key stored in
//! the record the candidate entry points at. That keeps the index at ~24 bytes per key
//! plus the hash table's slack, whatever the key size.
//!
//! Snapshots (10.2) save the index so opening does not replay the whole log; compaction
//! (10.4) copies live records to the end of the log and removes the old segments.

use std::fs;
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::path::{Path, PathBuf};

use hashbrown::HashTable;

use crate::error::{Error, Result};
use crate::format::framed_len;
use crate::log::{now_ms, Log, Options, RemovedSegment, SyncRequest};
use crate::sys;

/// Longest string key, in UTF-8 bytes.
pub const MAX_KEY_BYTES: usize = 1024;
/// Largest integer key (JS's `Number.MAX_SAFE_INTEGER`).
pub const MAX_INT_KEY: u64 = (1 << 53) - 1;
/// Bytes of a store record before the key (FORMAT.md 10.1).
pub const RECORD_HEADER_LEN: usize = 4;

const OP_PUT: u8 = 1;
const OP_DELETE: u8 = 2;
const KIND_INT: u8 = 0;
const KIND_STR: u8 = 1;

pub const SNAPSHOT_DIR: &str = "snapshots";
const SNAPSHOT_MAGIC: [u8; 8] = *b"SEGLOG\0K";
const SNAPSHOT_VERSION: u32 = 1;
const SNAPSHOT_HEADER_LEN: usize = 64;
const SNAPSHOT_ENTRY_LEN: usize = 24;
/// Older valid snapshots kept as fallbacks besides the newest.
const SNAPSHOTS_KEPT: usize = 2;

/// A key: integer and string keys never equal each other.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Key<'a> {
    Int(u64),
    Str(&'a [u8]),
}

/// A key that owns its bytes (what `keys()` returns).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OwnedKey {
    Int(u64),
    Str(Vec<u8>),
}

impl OwnedKey {
    pub fn as_key(&self) -> Key<'_> {
        match self {
            OwnedKey::Int(v) => Key::Int(*v),
            OwnedKey::Str(s) => Key::Str(s),
        }
    }
}

impl Key<'_> {
    fn check(&self) -> Result<()> {
        match *self {
            Key::Int(v) if v > MAX_INT_KEY => Err(Error::InvalidArgument(format!("an integer key must be at most 2^53-1, got {v}"))),
            Key::Str([]) => Err(Error::InvalidArgument("a string key must not be empty".into())),
            Key::Str(s) if s.len() > MAX_KEY_BYTES => Err(Error::InvalidArgument(format!(
                "a string key must be at most {MAX_KEY_BYTES} bytes of UTF-8, got {}",
                s.len()
            ))),
            _ => Ok(()),
        }
    }

    fn to_owned_key(self) -> OwnedKey {
        match self {
            Key::Int(v) => OwnedKey::Int(v),
            Key::Str(s) => OwnedKey::Str(s.to_vec()),
        }
    }

    /// Appends the record's key fields (kind, length, key) to `buf`.
    fn encode(&self, buf: &mut Vec<u8>) {
        match *self {
            Key::Int(v) => {
                buf.extend_from_slice(&[KIND_INT, 8, 0]);
                buf.extend_from_slice(&v.to_le_bytes());
            }
            Key::Str(s) => {
                buf.push(KIND_STR);
                buf.extend_from_slice(&(s.len() as u16).to_le_bytes());
                buf.extend_from_slice(s);
            }
        }
    }

    /// Bytes of the record this key makes with a value of `value_len` bytes.
    fn record_len(&self, value_len: usize) -> usize {
        RECORD_HEADER_LEN + self.len() + value_len
    }

    fn len(&self) -> usize {
        match self {
            Key::Int(_) => 8,
            Key::Str(s) => s.len(),
        }
    }
}

/// A decoded store record (FORMAT.md 10.1).
struct StoreRecord<'a> {
    delete: bool,
    key: Key<'a>,
    value: &'a [u8],
}

fn decode_record(p: &[u8]) -> std::result::Result<StoreRecord<'_>, &'static str> {
    if p.len() < RECORD_HEADER_LEN {
        return Err("not a store record: shorter than the 4-byte header");
    }
    let delete = match p[0] {
        OP_PUT => false,
        OP_DELETE => true,
        _ => return Err("not a store record: unknown operation"),
    };
    let klen = u16::from_le_bytes([p[2], p[3]]) as usize;
    if p.len() < RECORD_HEADER_LEN + klen {
        return Err("store record: the key runs past the record");
    }
    let kb = &p[RECORD_HEADER_LEN..RECORD_HEADER_LEN + klen];
    let key = match p[1] {
        KIND_INT if klen == 8 => {
            let v = u64::from_le_bytes(kb.try_into().expect("8 bytes"));
            if v > MAX_INT_KEY {
                return Err("store record: integer key above 2^53-1");
            }
            Key::Int(v)
        }
        KIND_INT => return Err("store record: an integer key must be 8 bytes"),
        KIND_STR if (1..=MAX_KEY_BYTES).contains(&klen) => Key::Str(kb),
        KIND_STR => return Err("store record: bad string key length"),
        _ => return Err("not a store record: unknown key kind"),
    };
    let value = &p[RECORD_HEADER_LEN + klen..];
    if delete && !value.is_empty() {
        return Err("store record: a DELETE carries a value");
    }
    Ok(StoreRecord { delete, key, value })
}

/// Where a key's latest PUT is. `hash` is kept so the table can grow without reading keys.
#[derive(Clone, Copy, Debug)]
struct Entry {
    hash: u64,
    offset: u64,
    pos: u32,
    /// Aligned frame length: what this record occupies in the log.
    framed: u32,
}

#[derive(Clone, Debug, Default)]
pub struct StoreOptions {
    pub log: Options,
}

/// What opening the store did.
#[derive(Clone, Debug, Default)]
pub struct OpenReport {
    /// The snapshot loaded, if any.
    pub snapshot: Option<PathBuf>,
    /// Log offset replay started from (the snapshot's position, or the first offset).
    pub replayed_from: u64,
    pub records_replayed: u64,
    /// Snapshots that failed their checks and were skipped, with why.
    pub warnings: Vec<String>,
}

#[derive(Clone, Debug, Default)]
pub struct CompactReport {
    /// Records copied to the end of the log (live keys found in the compacted prefix).
    pub records_copied: u64,
    pub bytes_copied: u64,
    /// Records dropped (overwritten or deleted) with the old segments.
    pub records_dropped: u64,
    pub segments_removed: Vec<RemovedSegment>,
}

/// Compaction in progress (FORMAT.md 10.4).
struct Compaction {
    /// Records below this offset are being compacted (the base of the segment rolled to).
    end: u64,
    /// The next record to look at.
    next: u64,
    report: CompactReport,
}

/// How far compaction has got: `done` of `total` records of the prefix looked at.
#[derive(Clone, Copy, Debug)]
pub struct CompactProgress {
    pub done: bool,
    pub end: u64,
    pub next: u64,
}

/// A snapshot being written: serialized on the writer's thread, written (after the log
/// is synced up to its position) on any thread by `run`, finished by `complete_snapshot`.
pub struct SnapshotJob {
    pub position: u64,
    bytes: Vec<u8>,
    path: PathBuf,
    sync: SyncRequest,
    sync_result: Option<io::Result<()>>,
    write_result: Option<Result<()>>,
    /// Delete every older snapshot once this one is in place (after a compaction: they
    /// point into removed segments).
    drop_older: bool,
    /// `bytes_since_snapshot` when it began (restored if it fails).
    bytes_before: u64,
}

impl SnapshotJob {
    /// Syncs the log up to `position`, then writes the snapshot atomically (temp file,
    /// fsync, rename, fsync directory). Does not touch the store: safe on a worker thread.
    pub fn run(&mut self) {
        let sync = self.sync.run();
        let ok = sync.is_ok();
        self.sync_result = Some(sync);
        if ok {
            self.write_result = Some(write_snapshot(&self.path, &self.bytes));
        }
    }
}

fn write_snapshot(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().expect("snapshots live in a directory");
    let created = match fs::create_dir(dir) {
        Ok(()) => true,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => false,
        Err(e) => return Err(Error::io("create snapshot directory", dir)(e)),
    };
    if created {
        let parent = dir.parent().expect("the store directory");
        sys::fsync_dir(parent).map_err(Error::io("fsync store directory", parent))?;
    }
    sys::write_file_atomic(path, bytes, true).map_err(Error::io("write snapshot", path))?;
    sys::fsync_dir(dir).map_err(Error::io("fsync snapshot directory", dir))
}

pub fn snapshot_file_name(position: u64) -> String {
    format!("{position:020}.snap")
}

fn parse_snapshot_file_name(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(".snap")?;
    (stem.len() == 20 && stem.bytes().all(|b| b.is_ascii_digit())).then(|| stem.parse().ok()).flatten()
}

pub struct Store {
    log: Log,
    table: HashTable<Entry>,
    seed: u64,
    hasher: foldhash::fast::FixedState,
    /// Sum of the framed sizes of the live records.
    live_bytes: u64,
    /// Encoding scratch for records.
    buf: Vec<u8>,
    report: OpenReport,
    compaction: Option<Compaction>,
    /// Log bytes appended since the last snapshot (or open).
    bytes_since_snapshot: u64,
    last_snapshot: Option<u64>,
}

/// The hash check stored in a snapshot: proves that this build hashes keys as the one
/// that wrote it did (the hash function is the engine's choice and may change).
fn hash_check(hasher: &foldhash::fast::FixedState) -> u32 {
    hash_key(hasher, Key::Str(b"seglog hash check")) as u32 ^ hash_key(hasher, Key::Int(0x5e6_106)) as u32
}

#[inline]
fn hash_key(hasher: &foldhash::fast::FixedState, key: Key<'_>) -> u64 {
    let mut h = hasher.build_hasher();
    match key {
        Key::Int(v) => {
            h.write_u8(KIND_INT);
            h.write_u64(v);
        }
        Key::Str(s) => {
            h.write_u8(KIND_STR);
            h.write(s);
        }
    }
    h.finish()
}

/// Does the entry's record hold `key`? (Reads the key from the log; no CRC, see
/// `Log::payload_at_unchecked`.)
#[inline]
fn holds_key(log: &Log, e: &Entry, hash: u64, key: Key<'_>) -> bool {
    // The full hash first: the table only compared 7 bits of it.
    if e.hash != hash {
        return false;
    }
    match log.payload_at_unchecked(e.offset, e.pos as usize) {
        Some(p) => decode_record(p).is_ok_and(|r| r.key == key),
        None => false,
    }
}

fn random_seed() -> u64 {
    // std's RandomState is seeded from the OS's random source once per process and
    // varies per instance: enough to keep hash flooding from being precomputed.
    let s = std::collections::hash_map::RandomState::new();
    let mut h = s.build_hasher();
    h.write_u64(now_ms());
    h.finish()
}

impl Store {
    /// Opens or creates the store in `dir` (FORMAT.md 10.3).
    pub fn open(dir: impl AsRef<Path>, options: &StoreOptions) -> Result<Store> {
        if options.log.read_only {
            return Err(Error::InvalidArgument("a store is opened for writing (readOnly is not supported)".into()));
        }
        let log = Log::open(dir, &options.log)?;
        let seed = random_seed();
        let mut store = Store {
            log,
            table: HashTable::new(),
            seed,
            hasher: foldhash::fast::FixedState::with_seed(seed),
            live_bytes: 0,
            buf: Vec::with_capacity(256),
            report: OpenReport::default(),
            compaction: None,
            bytes_since_snapshot: 0,
            last_snapshot: None,
        };
        store.load_newest_snapshot()?;
        let from = store.report.replayed_from;
        store.replay(from)?;
        Ok(store)
    }

    fn snapshot_dir(&self) -> PathBuf {
        self.log.dir().join(SNAPSHOT_DIR)
    }

    /// Valid-looking snapshot files, newest first.
    fn snapshot_files(&self) -> Result<Vec<(u64, PathBuf)>> {
        let dir = self.snapshot_dir();
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io("list snapshots", &dir)(e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(Error::io("list snapshots", &dir))?;
            if let Some(pos) = entry.file_name().to_str().and_then(parse_snapshot_file_name) {
                out.push((pos, entry.path()));
            }
        }
        out.sort_by(|a, b| b.0.cmp(&a.0));
        Ok(out)
    }

    fn load_newest_snapshot(&mut self) -> Result<()> {
        self.report.replayed_from = self.log.first_offset();
        // Leftover temp files from a crash mid-write are never valid snapshots.
        if let Ok(entries) = fs::read_dir(self.snapshot_dir()) {
            for entry in entries.flatten() {
                if entry.file_name().to_str().is_some_and(|n| n.ends_with(".tmp")) {
                    let _ = fs::remove_file(entry.path());
                }
            }
        }
        for (position, path) in self.snapshot_files()? {
            match self.load_snapshot(&path, position) {
                Ok(()) => {
                    self.report.snapshot = Some(path);
                    self.report.replayed_from = position;
                    self.last_snapshot = Some(position);
                    return Ok(());
                }
                Err(why) => {
                    self.table.clear();
                    self.live_bytes = 0;
                    if position > self.log.next_offset() {
                        // Ahead of the log (recovery cut records it covered): once new
                        // writes pass its position it would pass every check and hide
                        // them. Set aside under a name that is never loaded.
                        let mut aside = path.clone().into_os_string();
                        aside.push(".rejected");
                        fs::rename(&path, &aside).map_err(Error::io("set aside snapshot", &path))?;
                        self.report.warnings.push(format!("snapshot {} skipped and renamed to *.rejected: {why}", path.display()));
                    } else {
                        self.report.warnings.push(format!("snapshot {} skipped: {why}", path.display()));
                    }
                }
            }
        }
        Ok(())
    }

    /// Loads one snapshot after checking it (FORMAT.md 10.3, step 2).
    fn load_snapshot(&mut self, path: &Path, name_position: u64) -> std::result::Result<(), String> {
        let b = fs::read(path).map_err(|e| format!("cannot read it: {e}"))?;
        if b.len() < SNAPSHOT_HEADER_LEN {
            return Err(format!("{} bytes is shorter than the header", b.len()));
        }
        let u32_at = |at: usize| u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"));
        let u64_at = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"));
        if b[0..8] != SNAPSHOT_MAGIC {
            return Err("bad magic".into());
        }
        if crc32fast::hash(&b[0..60]) != u32_at(60) {
            return Err("header CRC mismatch".into());
        }
        if u32_at(8) != SNAPSHOT_VERSION {
            return Err(format!("unknown version {}", u32_at(8)));
        }
        let position = u64_at(16);
        let count = u64_at(24);
        let seed = u64_at(32);
        let live_bytes = u64_at(40);
        if position != name_position {
            return Err(format!("position {position} disagrees with the file name"));
        }
        if count.checked_mul(SNAPSHOT_ENTRY_LEN as u64).and_then(|n| n.checked_add(SNAPSHOT_HEADER_LEN as u64)) != Some(b.len() as u64) {
            return Err(format!("{} bytes do not hold {count} entries", b.len()));
        }
        let entries = &b[SNAPSHOT_HEADER_LEN..];
        if crc32fast::hash(entries) != u32_at(56) {
            return Err("entries CRC mismatch".into());
        }
        let (first, next) = (self.log.first_offset(), self.log.next_offset());
        if position < first || position > next {
            return Err(format!("covers offsets below {position} but the log holds {first}..{next}"));
        }
        let hasher = foldhash::fast::FixedState::with_seed(seed);
        // A different hash function (another build) means the stored hashes are useless:
        // rehash every key from the log instead.
        let rehash = hash_check(&hasher) != u32_at(12);
        self.table = HashTable::with_capacity(count as usize);
        let mut live = 0u64;
        for e in entries.chunks_exact(SNAPSHOT_ENTRY_LEN) {
            let mut entry = Entry {
                hash: u64::from_le_bytes(e[0..8].try_into().expect("8")),
                offset: u64::from_le_bytes(e[8..16].try_into().expect("8")),
                pos: u32::from_le_bytes(e[16..20].try_into().expect("4")),
                framed: u32::from_le_bytes(e[20..24].try_into().expect("4")),
            };
            if entry.offset < first || entry.offset >= position {
                return Err(format!("an entry points at offset {} outside {first}..{position}", entry.offset));
            }
            if rehash {
                let payload = self.log.payload_at(entry.offset, entry.pos as usize).map_err(|e| e.to_string())?;
                let r = decode_record(payload).map_err(str::to_string)?;
                entry.hash = hash_key(&hasher, r.key);
            }
            live += entry.framed as u64;
            self.table.insert_unique(entry.hash, entry, |e| e.hash);
        }
        if live != live_bytes {
            return Err("live byte count disagrees with its entries".into());
        }
        self.seed = seed;
        self.hasher = hasher;
        self.live_bytes = live;
        Ok(())
    }

    /// Applies every record from `from` to the end of the log (FORMAT.md 10.3, step 3).
    fn replay(&mut self, from: u64) -> Result<()> {
        let Store { log, table, hasher, live_bytes, report, bytes_since_snapshot, .. } = self;
        let log: &Log = log;
        let path = log.dir().to_path_buf();
        log.scan(from, |offset, pos, _ts, payload, framed| {
            let r = decode_record(payload).map_err(|why| Error::corrupt(&path, Some(offset), Some(pos as u64), why))?;
            let hash = hash_key(hasher, r.key);
            if r.delete {
                remove_entry(log, table, live_bytes, hash, r.key);
            } else {
                set_entry(log, table, live_bytes, hash, r.key, Entry { hash, offset, pos: pos as u32, framed: framed as u32 });
            }
            report.records_replayed += 1;
            *bytes_since_snapshot += framed as u64;
            Ok(true)
        })
    }

    // ---- reads ----

    /// The value of `key`, checked (CRC) before it is returned.
    pub fn get(&self, key: Key<'_>) -> Result<Option<&[u8]>> {
        key.check()?;
        if self.log.is_closed() {
            return Err(Error::Closed);
        }
        let hash = hash_key(&self.hasher, key);
        let log = &self.log;
        let Some(e) = self.table.find(hash, |e| holds_key(log, e, hash, key)) else { return Ok(None) };
        let payload = log.payload_at(e.offset, e.pos as usize)?;
        let r = decode_record(payload).map_err(|why| Error::corrupt(log.dir(), Some(e.offset), Some(e.pos as u64), why))?;
        Ok(Some(r.value))
    }

    pub fn has(&self, key: Key<'_>) -> Result<bool> {
        key.check()?;
        if self.log.is_closed() {
            return Err(Error::Closed);
        }
        let hash = hash_key(&self.hasher, key);
        Ok(self.table.find(hash, |e| holds_key(&self.log, e, hash, key)).is_some())
    }

    /// Number of live keys.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Every live key, in log order of their latest PUT.
    pub fn keys(&self) -> Result<Vec<OwnedKey>> {
        if self.log.is_closed() {
            return Err(Error::Closed);
        }
        let mut locs: Vec<(u64, u32)> = self.table.iter().map(|e| (e.offset, e.pos)).collect();
        locs.sort_unstable();
        locs.into_iter()
            .map(|(offset, pos)| {
                let p = self.log.payload_at(offset, pos as usize)?;
                let r = decode_record(p).map_err(|why| Error::corrupt(self.log.dir(), Some(offset), Some(pos as u64), why))?;
                Ok(r.key.to_owned_key())
            })
            .collect()
    }

    // ---- writes ----

    /// Sets `key` to `value`; returns the record's log offset.
    pub fn put(&mut self, key: Key<'_>, value: &[u8]) -> Result<u64> {
        key.check()?;
        self.check_record_len(key, value.len())?;
        self.buf.clear();
        self.buf.push(OP_PUT);
        key.encode(&mut self.buf);
        self.buf.extend_from_slice(value);
        let offset = self.log.append(&self.buf, None)?;
        let framed = framed_len(self.buf.len());
        let pos = (self.log.active_end() - framed) as u32;
        let hash = hash_key(&self.hasher, key);
        set_entry(&self.log, &mut self.table, &mut self.live_bytes, hash, key, Entry { hash, offset, pos, framed: framed as u32 });
        self.bytes_since_snapshot += framed as u64;
        Ok(offset)
    }

    fn check_record_len(&self, key: Key<'_>, value_len: usize) -> Result<()> {
        let max = self.log.max_record_bytes();
        let len = key.record_len(value_len);
        if len > max {
            return Err(Error::RecordTooLarge { size: len, max });
        }
        Ok(())
    }

    /// Removes `key`; false if it was not there (then nothing is written).
    pub fn delete(&mut self, key: Key<'_>) -> Result<bool> {
        if !self.has(key)? {
            return Ok(false);
        }
        self.buf.clear();
        self.buf.push(OP_DELETE);
        key.encode(&mut self.buf);
        self.log.append(&self.buf, None)?;
        self.bytes_since_snapshot += framed_len(self.buf.len()) as u64;
        let hash = hash_key(&self.hasher, key);
        remove_entry(&self.log, &mut self.table, &mut self.live_bytes, hash, key);
        Ok(true)
    }

    /// Sets every key of `entries` atomically: after a crash all of them or none are
    /// there. Later entries win over earlier ones with the same key. Returns the first
    /// record's offset.
    pub fn put_batch(&mut self, entries: &[(Key<'_>, &[u8])]) -> Result<u64> {
        let mut lengths = Vec::with_capacity(entries.len());
        for (key, value) in entries {
            key.check()?;
            self.check_record_len(*key, value.len())?;
            lengths.push(key.record_len(value.len()) as u32);
        }
        let mut data = Vec::with_capacity(lengths.iter().map(|&l| l as usize).sum());
        for (key, value) in entries {
            data.push(OP_PUT);
            key.encode(&mut data);
            data.extend_from_slice(value);
        }
        let first = self.log.append_packed(&data, &lengths, None)?;
        if entries.is_empty() {
            return Ok(first);
        }
        let total: usize = lengths.iter().map(|&l| framed_len(l as usize)).sum();
        let mut pos = self.log.active_end() - total;
        for (i, (key, _)) in entries.iter().enumerate() {
            let framed = framed_len(lengths[i] as usize);
            let hash = hash_key(&self.hasher, *key);
            let entry = Entry { hash, offset: first + i as u64, pos: pos as u32, framed: framed as u32 };
            set_entry(&self.log, &mut self.table, &mut self.live_bytes, hash, *key, entry);
            pos += framed;
        }
        self.bytes_since_snapshot += total as u64;
        Ok(first)
    }

    // ---- the log underneath ----

    pub fn log(&self) -> &Log {
        &self.log
    }

    /// The log, for syncing (`begin_sync`/`complete_sync`/`sync`) and stats. Appending to
    /// it directly would add records the store cannot read: don't.
    pub fn log_mut(&mut self) -> &mut Log {
        &mut self.log
    }

    pub fn open_report(&self) -> &OpenReport {
        &self.report
    }

    /// Bytes of live records (what compaction would keep).
    pub fn live_bytes(&self) -> u64 {
        self.live_bytes
    }

    /// Log bytes appended since the last snapshot was taken (or since open).
    pub fn bytes_since_snapshot(&self) -> u64 {
        self.bytes_since_snapshot
    }

    /// Position of the newest snapshot written or loaded by this handle.
    pub fn last_snapshot(&self) -> Option<u64> {
        self.last_snapshot
    }

    pub fn close(&mut self) -> Result<()> {
        self.compaction = None;
        self.log.close()
    }

    // ---- snapshots ----

    /// Starts a snapshot of the index as of the current end of the log. Its bytes are
    /// built here (a pass over the table); `SnapshotJob::run` syncs and writes them.
    pub fn begin_snapshot(&mut self) -> Result<SnapshotJob> {
        self.begin_snapshot_inner(false)
    }

    fn begin_snapshot_inner(&mut self, drop_older: bool) -> Result<SnapshotJob> {
        if self.compaction.is_some() {
            return Err(Error::InvalidArgument("a snapshot cannot be taken while a compaction is running".into()));
        }
        let sync = self.log.begin_sync()?;
        let position = self.log.next_offset();
        let mut bytes = vec![0u8; SNAPSHOT_HEADER_LEN + self.table.len() * SNAPSHOT_ENTRY_LEN];
        for (e, out) in self.table.iter().zip(bytes[SNAPSHOT_HEADER_LEN..].chunks_exact_mut(SNAPSHOT_ENTRY_LEN)) {
            out[0..8].copy_from_slice(&e.hash.to_le_bytes());
            out[8..16].copy_from_slice(&e.offset.to_le_bytes());
            out[16..20].copy_from_slice(&e.pos.to_le_bytes());
            out[20..24].copy_from_slice(&e.framed.to_le_bytes());
        }
        let entries_crc = crc32fast::hash(&bytes[SNAPSHOT_HEADER_LEN..]);
        let h = &mut bytes[..SNAPSHOT_HEADER_LEN];
        h[0..8].copy_from_slice(&SNAPSHOT_MAGIC);
        h[8..12].copy_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
        h[12..16].copy_from_slice(&hash_check(&self.hasher).to_le_bytes());
        h[16..24].copy_from_slice(&position.to_le_bytes());
        h[24..32].copy_from_slice(&(self.table.len() as u64).to_le_bytes());
        h[32..40].copy_from_slice(&self.seed.to_le_bytes());
        h[40..48].copy_from_slice(&self.live_bytes.to_le_bytes());
        h[48..56].copy_from_slice(&now_ms().to_le_bytes());
        h[56..60].copy_from_slice(&entries_crc.to_le_bytes());
        let crc = crc32fast::hash(&h[0..60]);
        h[60..64].copy_from_slice(&crc.to_le_bytes());
        let bytes_before = std::mem::take(&mut self.bytes_since_snapshot);
        Ok(SnapshotJob {
            bytes_before,
            position,
            bytes,
            path: self.snapshot_dir().join(snapshot_file_name(position)),
            sync,
            sync_result: None,
            write_result: None,
            drop_older,
        })
    }

    /// Finishes a snapshot after `run`: records the log sync (a failure poisons the log,
    /// as any failed sync does), then removes snapshots it supersedes. Returns its path.
    pub fn complete_snapshot(&mut self, mut job: SnapshotJob) -> Result<PathBuf> {
        let sync = job.sync_result.take().unwrap_or_else(|| Err(io::Error::other("snapshot job was not run")));
        if let Err(e) = self.log.complete_sync(&job.sync, sync) {
            self.bytes_since_snapshot += job.bytes_before;
            return Err(e);
        }
        if let Err(e) = job.write_result.take().unwrap_or(Ok(())) {
            self.bytes_since_snapshot += job.bytes_before;
            return Err(e);
        }
        self.last_snapshot = Some(job.position);
        let keep = if job.drop_older { 1 } else { SNAPSHOTS_KEPT };
        let files = self.snapshot_files()?;
        let mut kept = 0;
        for (position, path) in files {
            // Keep the newest ones at or before this one; a newer file (impossible for
            // this writer) is left alone.
            if position > job.position {
                continue;
            }
            kept += 1;
            if kept > keep {
                fs::remove_file(&path).map_err(Error::io("remove old snapshot", &path))?;
            }
        }
        Ok(job.path)
    }

    /// Takes a snapshot on this thread (tests, tools).
    pub fn snapshot(&mut self) -> Result<PathBuf> {
        let mut job = self.begin_snapshot()?;
        job.run();
        self.complete_snapshot(job)
    }

    // ---- compaction ----

    /// Starts a compaction (FORMAT.md 10.4 step 1), or returns the one running.
    pub fn begin_compaction(&mut self) -> Result<CompactProgress> {
        if self.compaction.is_none() {
            let end = self.log.roll_if_not_empty()?;
            let next = self.log.first_offset();
            self.compaction = Some(Compaction { end, next, report: CompactReport::default() });
        }
        Ok(self.compaction_progress().expect("just started"))
    }

    pub fn compaction_progress(&self) -> Option<CompactProgress> {
        self.compaction.as_ref().map(|c| CompactProgress { done: c.next >= c.end, end: c.end, next: c.next })
    }

    /// Step 2: looks at records of the prefix, about `budget_bytes` of them, copying the
    /// live ones to the end of the log. Returns the progress.
    pub fn compact_step(&mut self, budget_bytes: usize) -> Result<CompactProgress> {
        let Some(c) = self.compaction.as_mut() else {
            return Err(Error::InvalidArgument("no compaction is running".into()));
        };
        let (from, end) = (c.next, c.end);
        // Find the live records first (reading), then copy them (appending).
        let mut live: Vec<(u64, u64, usize)> = Vec::new(); // (hash, offset, timestamp)
        let mut looked = 0usize;
        let mut next = from;
        let mut dropped = 0u64;
        {
            let Store { log, table, hasher, .. } = &*self;
            let path = log.dir().to_path_buf();
            log.scan(from, |offset, pos, ts, payload, framed| {
                if offset >= end {
                    return Ok(false);
                }
                let r = decode_record(payload).map_err(|why| Error::corrupt(&path, Some(offset), Some(pos as u64), why))?;
                let hash = hash_key(hasher, r.key);
                if !r.delete && table.find(hash, |e| e.offset == offset).is_some() {
                    live.push((hash, offset, ts as usize));
                } else {
                    dropped += 1;
                }
                looked += framed;
                next = offset + 1;
                Ok(looked < budget_bytes)
            })?;
        }
        let mut copied_bytes = 0u64;
        for &(hash, offset, ts) in &live {
            let entry = *self.table.find(hash, |e| e.offset == offset).expect("found live above; nothing ran since");
            self.buf.clear();
            self.buf.extend_from_slice(self.log.payload_at(entry.offset, entry.pos as usize)?);
            let new_offset = self.log.append(&self.buf, Some(ts as u64))?;
            let pos = (self.log.active_end() - entry.framed as usize) as u32;
            let e = self.table.find_mut(hash, |e| e.offset == offset).expect("still there");
            e.offset = new_offset;
            e.pos = pos;
            copied_bytes += entry.framed as u64;
        }
        self.bytes_since_snapshot += copied_bytes;
        let c = self.compaction.as_mut().expect("running");
        c.next = next.max(c.next);
        c.report.records_copied += live.len() as u64;
        c.report.bytes_copied += copied_bytes;
        c.report.records_dropped += dropped;
        Ok(self.compaction_progress().expect("running"))
    }

    /// Step 3: once every record of the prefix was looked at, syncs the copies and removes
    /// the old segments. The caller then takes a snapshot (`begin_compaction_snapshot`).
    pub fn finish_compaction(&mut self) -> Result<CompactReport> {
        match self.compaction_progress() {
            None => return Err(Error::InvalidArgument("no compaction is running".into())),
            Some(p) if !p.done => return Err(Error::InvalidArgument("the compaction has records left to look at".into())),
            Some(_) => {}
        }
        let end = self.compaction.as_ref().expect("running").end;
        self.log.sync()?;
        let removed = self.log.delete_before(end)?;
        let mut c = self.compaction.take().expect("running");
        c.report.segments_removed = removed;
        Ok(c.report)
    }

    /// Abandons a running compaction (the copies made so far stay: they are valid records).
    pub fn abort_compaction(&mut self) {
        self.compaction = None;
    }

    /// Step 4: a snapshot that replaces every older one.
    pub fn begin_compaction_snapshot(&mut self) -> Result<SnapshotJob> {
        self.begin_snapshot_inner(true)
    }

    /// A whole compaction on this thread (tests, tools).
    pub fn compact(&mut self) -> Result<CompactReport> {
        self.begin_compaction()?;
        while !self.compact_step(1 << 20)?.done {}
        let report = self.finish_compaction()?;
        let mut job = self.begin_compaction_snapshot()?;
        job.run();
        self.complete_snapshot(job)?;
        Ok(report)
    }
}

/// Points `key` at `entry` (a PUT): replaces the key's entry or adds one.
#[inline]
fn set_entry(log: &Log, table: &mut HashTable<Entry>, live_bytes: &mut u64, hash: u64, key: Key<'_>, entry: Entry) {
    match table.find_mut(hash, |e| holds_key(log, e, hash, key)) {
        Some(e) => {
            *live_bytes -= e.framed as u64;
            *e = entry;
        }
        None => {
            table.insert_unique(hash, entry, |e| e.hash);
        }
    }
    *live_bytes += entry.framed as u64;
}

/// Removes `key`'s entry (a DELETE), if any.
#[inline]
fn remove_entry(log: &Log, table: &mut HashTable<Entry>, live_bytes: &mut u64, hash: u64, key: Key<'_>) {
    if let Ok(e) = table.find_entry(hash, |e| holds_key(log, e, hash, key)) {
        *live_bytes -= e.get().framed as u64;
        e.remove();
    }
}
