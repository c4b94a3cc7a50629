//! The log: a directory of segments, its recovery on open, appends, reads and verify.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};
use crate::format::{
    check_frame, check_frame_header, frame_payload, framed_len, max_payload_for_segment, Frame, IndexFile, SegmentHeader, FLAG_BATCH_CONTINUES,
    FRAME_HEADER_LEN, MAX_TIMESTAMP, SEGMENT_HEADER_LEN,
};
use crate::segment::{parse_segment_file_name, segment_file_name, Segment, Walk, WalkStop};
use crate::sys;

pub const LOCK_FILE_NAME: &str = "seglog.lock";
/// The lock file of the pure-TypeScript engine (FORMAT.md 6.1).
pub const JS_LOCK_FILE_NAME: &str = "seglog.jslock";
pub const DEFAULT_SEGMENT_BYTES: usize = 64 << 20;
pub const DEFAULT_INDEX_INTERVAL_BYTES: usize = 4096;
pub const DEFAULT_MAX_RECORD_BYTES: usize = 16 << 20;
pub const MIN_SEGMENT_BYTES: usize = 4096;
pub const MAX_SEGMENT_BYTES: usize = u32::MAX as usize;
pub const MIN_INDEX_INTERVAL_BYTES: usize = 64;

#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Preallocated size of new segments (default 64 MiB).
    pub segment_bytes: Option<usize>,
    /// Bytes between sparse index entries (default 4096).
    pub index_interval_bytes: Option<usize>,
    /// Largest payload accepted (default 16 MiB, capped to what fits in a segment).
    pub max_record_bytes: Option<usize>,
    /// Open as a reader: no lock, no writes of any kind, live records found by `refresh`.
    pub read_only: bool,
    /// Retention, applied when a segment rolls and by `enforce_retention`.
    pub retention: Retention,
    /// Move removed segments here instead of deleting them.
    pub archive_dir: Option<PathBuf>,
    /// The writer syncs often (group commit per append): map segments so that dirty
    /// pages are tracked per 4 KiB page rather than per large folio, which keeps each
    /// sync from writing back far more than was appended, at some cost to bulk appends.
    pub frequent_syncs: bool,
}

/// Which whole sealed segments may be removed from the front of the log. Each limit that
/// is set removes the oldest segments until it holds; the active segment is never removed.
#[derive(Debug, Clone, Default)]
pub struct Retention {
    /// Keep the segment files' total size (preallocated sizes) at or under this.
    pub bytes: Option<u64>,
    /// Remove segments whose newest record is older than this many milliseconds.
    pub ms: Option<u64>,
    /// Keep at least this many records and remove segments not needed for that.
    pub records: Option<u64>,
    /// Never remove a segment holding records at or after the slowest cursor's position.
    pub retain_for_cursors: bool,
}

/// A segment removed by `delete_before`, retention or `truncate`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemovedSegment {
    pub path: PathBuf,
    pub base_offset: u64,
    pub next_offset: u64,
    pub file_bytes: u64,
    /// Where it went, when an archive directory is set (and the removal was not a truncation).
    pub archived_to: Option<PathBuf>,
}

/// What `truncate` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TruncateReport {
    pub previous_next_offset: u64,
    pub next_offset: u64,
    pub records_removed: u64,
    pub segments_removed: Vec<RemovedSegment>,
}

/// Options after defaults and validation.
#[derive(Debug, Clone, Copy)]
struct Limits {
    segment_bytes: usize,
    index_interval_bytes: usize,
    max_record_bytes: usize,
}

impl Limits {
    fn resolve(o: &Options) -> Result<Limits> {
        let segment_bytes = o.segment_bytes.unwrap_or(DEFAULT_SEGMENT_BYTES);
        if !(MIN_SEGMENT_BYTES..=MAX_SEGMENT_BYTES).contains(&segment_bytes) {
            return Err(Error::InvalidArgument(format!(
                "segmentBytes must be between {MIN_SEGMENT_BYTES} and {MAX_SEGMENT_BYTES}, got {segment_bytes}"
            )));
        }
        let index_interval_bytes = o.index_interval_bytes.unwrap_or(DEFAULT_INDEX_INTERVAL_BYTES);
        if !(MIN_INDEX_INTERVAL_BYTES..=segment_bytes).contains(&index_interval_bytes) {
            return Err(Error::InvalidArgument(format!(
                "indexIntervalBytes must be between {MIN_INDEX_INTERVAL_BYTES} and segmentBytes ({segment_bytes}), got {index_interval_bytes}"
            )));
        }
        let fits = max_payload_for_segment(segment_bytes);
        let max_record_bytes = match o.max_record_bytes {
            None => DEFAULT_MAX_RECORD_BYTES.min(fits),
            Some(m) if m <= fits => m,
            Some(m) => {
                return Err(Error::InvalidArgument(format!(
                    "maxRecordBytes ({m}) must fit in one segment: at most {fits} for segmentBytes {segment_bytes}"
                )))
            }
        };
        Ok(Limits { segment_bytes, index_interval_bytes, max_record_bytes })
    }
}

/// What recovery cut from the tail of the last segment (FORMAT.md 6, step 4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Truncation {
    pub segment: PathBuf,
    pub position: u64,
    pub first_dropped_offset: u64,
    pub bytes_dropped: u64,
    pub records_dropped: u64,
    pub reason: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    pub truncation: Option<Truncation>,
    /// Index files that were missing or failed their checks and were rebuilt from the log.
    pub indexes_rebuilt: Vec<PathBuf>,
    pub temp_files_removed: Vec<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentInfo {
    pub path: PathBuf,
    pub base_offset: u64,
    pub next_offset: u64,
    pub records: u64,
    /// Bytes of data written (segment header and frames, padding included).
    pub data_bytes: u64,
    /// Preallocated file size.
    pub file_bytes: u64,
    pub created_ms: u64,
    /// Smallest and largest record timestamp; `None` for an empty segment.
    pub timestamps: Option<(u64, u64)>,
    pub index_entries: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub segment: PathBuf,
    pub offset: Option<u64>,
    pub position: Option<u64>,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    pub segments: usize,
    pub records: u64,
    pub bytes: u64,
    pub index_entries: u64,
    pub first_offset: u64,
    pub next_offset: u64,
    /// The first problem found, if any; verification stops there.
    pub problem: Option<Problem>,
}

/// A record borrowed from the log's mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    pub offset: u64,
    pub timestamp: u64,
    pub payload: &'a [u8],
}

/// What `read_frames_into` copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopyOutcome {
    pub records: u64,
    pub bytes: usize,
    /// When nothing was copied although records exist: the buffer size the first one needs.
    pub needed: usize,
}

pub struct Log {
    dir: PathBuf,
    limits: Limits,
    /// In base-offset order; the last one is the active segment. Never empty while a
    /// writer's log is open; a reader's is empty until the writer creates a segment.
    segments: Vec<Segment>,
    _lock: Option<File>,
    closed: bool,
    read_only: bool,
    /// Records below this offset are on stable storage.
    durable: u64,
    /// Set by a failed sync: every later write fails with it (DURABILITY.md rule 7).
    poison: Option<Poison>,
    /// Truncations so far: a sync begun before one does not raise `durable`.
    truncations: u64,
    recovery: RecoveryReport,
    /// Faults in pages ahead of the writer; shut down before any mapping is dropped.
    prefaulter: sys::Prefaulter,
    retention: Retention,
    archive_dir: Option<PathBuf>,
    /// The last error of automatic retention at a roll (the append itself succeeded).
    retention_error: Option<String>,
    frequent_syncs: bool,
}

/// What a failed sync left behind: enough to report it again on every later write.
struct Poison {
    path: PathBuf,
    errno: Option<i32>,
    kind: io::ErrorKind,
    message: String,
}

impl Poison {
    fn error(&self) -> Error {
        let source = match self.errno {
            Some(e) => io::Error::from_raw_os_error(e),
            None => io::Error::new(self.kind, self.message.clone()),
        };
        Error::Poisoned { path: self.path.clone(), source }
    }
}

/// A sync to run off the writer's thread: `fdatasync` of the active segment, after which
/// every record below `target` is durable (older segments were synced when they rolled).
/// Hand it back to `Log::complete_sync` with the result of `run`.
pub struct SyncRequest {
    file: Option<Arc<File>>,
    path: PathBuf,
    /// Records below this offset are durable once the sync succeeds.
    pub target: u64,
    truncations: u64,
}

impl SyncRequest {
    /// Runs the sync on the calling thread (any thread). Does not touch the log.
    pub fn run(&self) -> io::Result<()> {
        match &self.file {
            Some(f) => sys::fdatasync(f),
            None => Ok(()),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl Log {
    /// Opens (creating if needed) the log in `dir` for writing, and recovers it (FORMAT.md 6).
    ///
    /// With `read_only`, the log must exist (the directory at least); nothing is locked,
    /// created, repaired or deleted, and records the writer appends later become visible
    /// through `refresh`.
    pub fn open(dir: impl AsRef<Path>, options: &Options) -> Result<Log> {
        // A reader can race the writer removing old segments (retention) between listing
        // the directory and opening a file: list again.
        let mut attempts = if options.read_only { 5 } else { 1 };
        loop {
            attempts -= 1;
            match Log::open_once(dir.as_ref(), options) {
                Err(Error::Io { op: "open segment", source, .. }) if attempts > 0 && source.kind() == io::ErrorKind::NotFound => continue,
                result => return result,
            }
        }
    }

    fn open_once(dir: &Path, options: &Options) -> Result<Log> {
        let limits = Limits::resolve(options)?;
        let dir = dir.to_path_buf();
        let read_only = options.read_only;
        let lock = if read_only {
            let meta = fs::metadata(&dir).map_err(Error::io("open log directory", &dir))?;
            if !meta.is_dir() {
                return Err(Error::io("open log directory", &dir)(io::Error::from_raw_os_error(libc::ENOTDIR)));
            }
            None
        } else {
            fs::create_dir_all(&dir).map_err(Error::io("create log directory", &dir))?;
            Some(take_lock(&dir)?)
        };
        let mut recovery = RecoveryReport::default();
        let found = list_segments(&dir, (!read_only).then_some(&mut recovery.temp_files_removed))?;
        if !read_only {
            crate::cursor::remove_temp_files(&dir, &mut recovery.temp_files_removed)?;
            if let Some(archive) = &options.archive_dir {
                fs::create_dir_all(archive).map_err(Error::io("create archive directory", archive))?;
            }
        }
        let mut log = Log {
            dir,
            limits,
            segments: Vec::new(),
            _lock: lock,
            closed: false,
            read_only,
            durable: 0,
            poison: None,
            truncations: 0,
            recovery,
            prefaulter: if read_only { sys::Prefaulter::disabled() } else { sys::Prefaulter::new(options.frequent_syncs) },
            retention: options.retention.clone(),
            archive_dir: options.archive_dir.clone(),
            retention_error: None,
            frequent_syncs: options.frequent_syncs,
        };
        if found.is_empty() && read_only {
            return Ok(log);
        }
        if found.is_empty() {
            let (seg, dir_sync) = Segment::create(&log.dir, 0, limits.segment_bytes, now_ms(), log.frequent_syncs)?;
            if let Some(e) = dir_sync {
                return Err(e);
            }
            log.segments.push(seg);
            log.prefault();
            return Ok(log);
        }
        let last = found.len() - 1;
        let next_bases: Vec<u64> = found[1..].iter().map(|(b, _)| *b).collect();
        for (i, (base, path)) in found.into_iter().enumerate() {
            let seg = Segment::open(path, base, !read_only, options.frequent_syncs)?;
            if let Some(prev) = log.segments.last() {
                if seg.base_offset != prev.next_offset {
                    return Err(Error::corrupt(
                        &seg.path,
                        Some(prev.next_offset),
                        Some(0),
                        format!(
                            "segment starts at offset {} but the previous segment ends at {}",
                            seg.base_offset, prev.next_offset
                        ),
                    ));
                }
            }
            let seg = if i == last { log.recover_active(seg)? } else { log.load_sealed(seg, next_bases[i])? };
            log.segments.push(seg);
        }
        if !read_only {
            // recover_active fsynced the active segment, and sealed segments were synced
            // before their successor was created: everything present is durable.
            log.durable = log.next_offset();
            log.prefault();
        }
        Ok(log)
    }

    /// Loads a sealed segment, which must end exactly where the next one begins.
    fn load_sealed(&mut self, mut seg: Segment, next_base: u64) -> Result<Segment> {
        let idx = read_index(&seg);
        let adopted = idx.is_some_and(|idx| seg.adopt_sealed_index(idx) && seg.next_offset == next_base);
        if !adopted {
            seg.rebuild_sealed(self.limits.index_interval_bytes)?;
            if seg.next_offset != next_base {
                return Err(Error::corrupt(
                    &seg.path,
                    Some(seg.next_offset),
                    Some(seg.end as u64),
                    format!(
                        "sealed segment ends at offset {} but the next segment, {}, starts at {next_base}",
                        seg.next_offset,
                        self.dir.join(crate::segment::segment_file_name(next_base)).display()
                    ),
                ));
            }
            if !self.read_only {
                seg.write_index(true)?;
            }
            self.recovery.indexes_rebuilt.push(seg.index_path());
        }
        Ok(seg)
    }

    /// Recovers the last segment: walk from the last index entry that checks out, cut a
    /// torn tail or an incomplete batch, then zero everything after the end of data.
    fn recover_active(&mut self, mut seg: Segment) -> Result<Segment> {
        let interval = self.limits.index_interval_bytes;
        let idx = read_index(&seg);
        let mut walk = match &idx {
            Some(idx) => start_from_index(&seg, idx),
            None => Walk::from_start(seg.base_offset),
        };
        let started_at_first = walk.position == SEGMENT_HEADER_LEN;
        let mut stop = seg.walk(&mut walk, interval);
        // The minimum timestamp before the starting entry is known only from the index
        // file, and only if everything it covered survived.
        let idx_min_exact = idx.as_ref().filter(|i| i.next_offset <= walk.next_offset).map(|i| i.min_timestamp);
        if !started_at_first {
            match idx_min_exact {
                Some(min) => walk.min_ts = walk.min_ts.min(min),
                None => {
                    walk = Walk::from_start(seg.base_offset);
                    stop = seg.walk(&mut walk, interval);
                }
            }
        }
        if idx.is_none() || !started_at_first && idx_min_exact.is_none() {
            self.recovery.indexes_rebuilt.push(seg.index_path());
        }
        if self.read_only {
            // A reader never repairs (DURABILITY.md rule 10): whatever fails its checks
            // at the end is a record still being written, and an open batch is not yet
            // complete. The writer's recovery decides what to cut.
            walk.cut_open_batch();
            seg.adopt_walk(walk);
            return Ok(seg);
        }
        let mut reason = match stop {
            WalkStop::Bad { problem, offset, position } => {
                Some(format!("{} at offset {offset} (byte position {position})", problem.describe()))
            }
            WalkStop::End => None,
        };
        if walk.cut_open_batch() {
            reason = Some(match reason {
                Some(r) => format!("incomplete atomic batch at the tail ({r})"),
                None => "incomplete atomic batch at the tail".to_string(),
            });
        }
        if let Some(reason) = reason {
            let cut = walk.position;
            self.recovery.truncation = Some(Truncation {
                segment: seg.path.clone(),
                position: cut as u64,
                first_dropped_offset: walk.next_offset,
                bytes_dropped: seg.last_nonzero_at_or_after(cut).map_or(0, |p| (p + 1 - cut) as u64),
                records_dropped: seg.count_well_formed_from(cut),
                reason,
            });
        }
        seg.adopt_walk(walk);
        seg.zero_tail()?;
        Ok(seg)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.recovery
    }

    pub fn max_record_bytes(&self) -> usize {
        self.limits.max_record_bytes
    }

    pub fn first_offset(&self) -> u64 {
        self.segments.first().map_or(0, |s| s.base_offset)
    }

    pub fn next_offset(&self) -> u64 {
        self.segments.last().map_or(0, |s| s.next_offset)
    }

    pub fn is_closed(&self) -> bool {
        self.closed
    }

    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// Records below this offset are on stable storage (a writer's log; 0 for a reader).
    pub fn durable_offset(&self) -> u64 {
        self.durable
    }

    /// The error of the sync that failed, if one did (then every write fails with it).
    pub fn poisoned(&self) -> Option<Error> {
        self.poison.as_ref().map(Poison::error)
    }

    fn check_open(&self) -> Result<()> {
        if self.closed {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }

    /// Writes need an open, writable, unpoisoned log.
    #[inline]
    fn check_writable(&self) -> Result<()> {
        if self.closed {
            return Err(Error::Closed);
        }
        if self.read_only {
            return Err(Error::ReadOnly);
        }
        match &self.poison {
            Some(p) => Err(p.error()),
            None => Ok(()),
        }
    }

    /// Records a failed sync of `path` and returns the error to report.
    fn poison_with(&mut self, path: &Path, e: &io::Error) -> Error {
        if self.poison.is_none() {
            self.poison = Some(Poison {
                path: path.to_path_buf(),
                errno: e.raw_os_error(),
                kind: e.kind(),
                message: e.to_string(),
            });
        }
        self.poison.as_ref().map(Poison::error).expect("just set")
    }

    /// Like `poison_with`, for engine errors from a sync (only I/O errors poison).
    fn poison_on_sync_error(&mut self, err: Error) -> Error {
        match err {
            Error::Io { path, source, .. } => self.poison_with(&path, &source),
            other => other,
        }
    }

    fn active(&mut self) -> &mut Segment {
        self.segments.last_mut().expect("an open log always has an active segment")
    }

    fn timestamp(timestamp: Option<u64>) -> Result<u64> {
        match timestamp {
            None => Ok(now_ms()),
            Some(t) if t <= MAX_TIMESTAMP => Ok(t),
            Some(t) => Err(Error::InvalidArgument(format!("timestamp {t} is above 2^53-1"))),
        }
    }

    // ---- writes ----

    /// Appends one record and returns its offset.
    pub fn append(&mut self, payload: &[u8], timestamp: Option<u64>) -> Result<u64> {
        self.check_writable()?;
        if payload.len() > self.limits.max_record_bytes {
            return Err(Error::RecordTooLarge { size: payload.len(), max: self.limits.max_record_bytes });
        }
        let timestamp = Self::timestamp(timestamp)?;
        let framed = framed_len(payload.len());
        if !self.active().fits(framed) {
            self.roll()?;
            if !self.active().fits(framed) {
                return Err(Error::RecordTooLarge { size: payload.len(), max: self.limits.max_record_bytes });
            }
        }
        let interval = self.limits.index_interval_bytes;
        let offset = self.active().append(payload, timestamp, 0, interval);
        self.prefault();
        Ok(offset)
    }

    /// Keeps the prefaulter ahead of the writer (a comparison, except every few MiB).
    #[inline]
    fn prefault(&mut self) {
        let active = self.segments.last_mut().expect("an open log always has an active segment");
        if let Some((from, to)) = active.prefault_due() {
            self.prefaulter.request(active.mapping(), from, to);
            // Every few MiB: start writing back what the writer is done with.
            // (Not when syncing often: group-commit syncs already write it.)
            let done = (active.end & !4095) as u64;
            if !self.frequent_syncs && done > active.written_back_to {
                self.prefaulter.writeback(active.shared_file(), active.written_back_to, done);
                active.written_back_to = done;
            }
        }
    }

    /// Appends records atomically (all or none survive a crash) and returns the first offset.
    /// The batch must fit in one segment. An empty batch appends nothing.
    pub fn append_batch<'a, I>(&mut self, payloads: I, timestamp: Option<u64>) -> Result<u64>
    where
        I: IntoIterator<Item = &'a [u8]>,
        I::IntoIter: Clone,
    {
        self.check_writable()?;
        let payloads = payloads.into_iter();
        let timestamp = Self::timestamp(timestamp)?;
        let max = self.limits.max_record_bytes;
        let (mut count, mut framed) = (0usize, 0usize);
        for p in payloads.clone() {
            if p.len() > max {
                return Err(Error::RecordTooLarge { size: p.len(), max });
            }
            count += 1;
            framed += framed_len(p.len());
        }
        let first = self.next_offset();
        if count == 0 {
            return Ok(first);
        }
        let capacity = self.limits.segment_bytes - SEGMENT_HEADER_LEN;
        if framed > capacity {
            return Err(Error::BatchTooLarge { bytes: framed, max: capacity });
        }
        if !self.active().fits(framed) {
            self.roll()?;
            if !self.active().fits(framed) {
                return Err(Error::BatchTooLarge { bytes: framed, max: capacity });
            }
        }
        let interval = self.limits.index_interval_bytes;
        let active = self.active();
        for (i, p) in payloads.enumerate() {
            let flags = if i + 1 < count { FLAG_BATCH_CONTINUES } else { 0 };
            active.append(p, timestamp, flags, interval);
        }
        self.prefault();
        Ok(first)
    }

    /// `append_batch` for payloads packed back to back in `data`, with their `lengths`.
    pub fn append_packed(&mut self, data: &[u8], lengths: &[u32], timestamp: Option<u64>) -> Result<u64> {
        let total: u64 = lengths.iter().map(|&l| l as u64).sum();
        if total != data.len() as u64 {
            return Err(Error::InvalidArgument(format!(
                "batch lengths add up to {total} bytes but the data has {}",
                data.len()
            )));
        }
        let payloads = lengths.iter().scan(0usize, |at, &len| {
            let p = &data[*at..*at + len as usize];
            *at += len as usize;
            Some(p)
        });
        self.append_batch(payloads, timestamp)
    }

    /// Seals the active segment (msync, index) and creates the next one (FORMAT.md 7).
    fn roll(&mut self) -> Result<()> {
        let segment_bytes = self.limits.segment_bytes;
        let active = self.active();
        let base = active.next_offset;
        let replace = active.record_count() == 0;
        if !replace {
            // A failed msync here poisons the log like any failed sync: the kernel may
            // have dropped the dirty pages, so a retry could "succeed" over lost data.
            if let Err(e) = active.flush() {
                return Err(self.poison_on_sync_error(e));
            }
            active.write_index(true)?;
            self.durable = self.durable.max(base);
        }
        // An empty active segment too small for the record (made with an older, smaller
        // segmentBytes) is replaced: the new file's rename overwrites it atomically, and
        // only then is the old one unmapped, so a failure (a full disk) keeps it usable.
        let (seg, dir_sync) = Segment::create(&self.dir, base, segment_bytes, now_ms(), self.frequent_syncs)?;
        if replace {
            // The prefaulter may be working on the old mapping: stop it before unmapping.
            self.prefaulter.shutdown();
            self.prefaulter = sys::Prefaulter::new(self.frequent_syncs);
            self.segments.pop();
        }
        self.segments.push(seg);
        if let Some(e) = dir_sync {
            // The new segment is in use but its name may not be durable: poison.
            return Err(self.poison_on_sync_error(e));
        }
        self.prefault();
        // The record that caused the roll is not written yet and does not depend on
        // retention: a failure here is kept for `retention_error` / `enforce_retention`.
        self.retention_error = self.enforce_retention().err().map(|e| e.to_string());
        Ok(())
    }

    /// A reader drops the segments at the front that the writer removed (retention,
    /// `delete_before`): reads below the new first offset then fail with
    /// `OffsetOutOfRange`. Until this runs (at a refresh) the reader keeps its mapping of
    /// a removed file and can still read it: a reader inside a segment that is removed
    /// finishes it.
    fn forget_removed_segments(&mut self) -> Result<()> {
        while self.segments.len() > 1 && !still_in_place(&self.segments[0])? {
            self.segments.remove(0);
        }
        Ok(())
    }

    /// A reader notices that the writer truncated the log below what it had seen: the
    /// segments it removed are gone, and the last record seen is no longer there. Its
    /// view then shrinks to what is there now (records past the cut read as absent,
    /// `next_offset` goes down) and follows the writer from there.
    fn follow_truncation(&mut self, interval: usize) -> Result<()> {
        while self.segments.len() > 1 && !still_in_place(self.segments.last().expect("more than one segment"))? {
            self.segments.pop();
        }
        if let Some(last) = self.segments.last_mut() {
            if !last.last_record_intact() {
                last.rescan_live(interval);
            }
        }
        Ok(())
    }

    // ---- lifecycle: removal, retention, truncation ----

    /// The last error automatic retention met at a segment roll, if any.
    pub fn retention_error(&self) -> Option<&str> {
        self.retention_error.as_deref()
    }

    /// Removes every whole sealed segment whose records all lie below `offset` (never
    /// the active one), oldest first, durably. Returns what was removed.
    pub fn delete_before(&mut self, offset: u64) -> Result<Vec<RemovedSegment>> {
        self.check_writable()?;
        let n = self.segments.len();
        let count = self.segments[..n - 1].iter().take_while(|s| s.next_offset <= offset).count();
        self.remove_leading(count)
    }

    /// Applies the retention options now. Returns what was removed.
    pub fn enforce_retention(&mut self) -> Result<Vec<RemovedSegment>> {
        self.check_writable()?;
        let count = self.retention_count()?;
        self.remove_leading(count)
    }

    /// How many leading segments the retention options allow to remove.
    fn retention_count(&self) -> Result<usize> {
        let r = &self.retention;
        let sealed = self.segments.len() - 1;
        let mut count = 0;
        if let Some(max) = r.bytes {
            let mut total: u64 = self.segments.iter().map(|s| s.size() as u64).sum();
            while count < sealed && total > max {
                total -= self.segments[count].size() as u64;
                count += 1;
            }
        }
        if let Some(ms) = r.ms {
            let cutoff = now_ms().saturating_sub(ms);
            let expired = self.segments[..sealed]
                .iter()
                .take_while(|s| s.record_count() == 0 || s.max_ts < cutoff)
                .count();
            count = count.max(expired);
        }
        if let Some(keep) = r.records {
            let next = self.next_offset();
            let spare = self.segments[..sealed].iter().take_while(|s| next - s.next_offset >= keep).count();
            count = count.max(spare);
        }
        if r.retain_for_cursors && count > 0 {
            if let Some(slowest) = crate::cursor::list(&self.dir)?.iter().map(|c| c.position).min() {
                while count > 0 && self.segments[count - 1].next_offset > slowest {
                    count -= 1;
                }
            }
        }
        Ok(count)
    }

    /// Removes (or archives) the first `count` segments, oldest first, so a crash leaves
    /// a log without gaps; each segment's index goes before its data, so no index is
    /// left without its segment. The directory is fsynced at the end.
    fn remove_leading(&mut self, count: usize) -> Result<Vec<RemovedSegment>> {
        assert!(count < self.segments.len(), "the active segment is never removed");
        if count == 0 {
            return Ok(Vec::new());
        }
        // The prefaulter only works on the active segment, which stays, but a request for
        // a segment sealed just now may still be queued: drain it before unmapping.
        self.prefaulter.shutdown();
        self.prefaulter = sys::Prefaulter::new(self.frequent_syncs);
        let mut removed = Vec::with_capacity(count);
        let result = (|| {
            for _ in 0..count {
                let seg = &self.segments[0];
                let archived_to = self.dispose_segment_files(seg, self.archive_dir.is_some())?;
                removed.push(RemovedSegment {
                    path: seg.path.clone(),
                    base_offset: seg.base_offset,
                    next_offset: seg.next_offset,
                    file_bytes: seg.size() as u64,
                    archived_to,
                });
                // Unmaps it. Nothing outside the engine points into it (JS gets copies).
                self.segments.remove(0);
            }
            Ok(())
        })();
        if count > 0 {
            let synced = sys::fsync_dir(&self.dir).map_err(Error::io("fsync directory", &self.dir)).and_then(|()| {
                match (&self.archive_dir, removed.is_empty()) {
                    (Some(archive), false) => sys::fsync_dir(archive).map_err(Error::io("fsync directory", archive)),
                    _ => Ok(()),
                }
            });
            if let Err(e) = synced {
                return Err(self.poison_on_sync_error(e));
            }
        }
        result.map(|()| removed)
    }

    /// Deletes (or moves to the archive) a segment's index and then its data file.
    fn dispose_segment_files(&self, seg: &Segment, archive: bool) -> Result<Option<PathBuf>> {
        let index = seg.index_path();
        match (archive, &self.archive_dir) {
            (true, Some(dir)) => {
                let to = dir.join(seg.path.file_name().expect("segment path has a file name"));
                if index.exists() {
                    let index_to = dir.join(index.file_name().expect("index path has a file name"));
                    sys::move_file(&index, &index_to).map_err(Error::io("archive index", &index))?;
                }
                sys::move_file(&seg.path, &to).map_err(Error::io("archive segment", &seg.path))?;
                Ok(Some(to))
            }
            _ => {
                match fs::remove_file(&index) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(Error::io("delete index", &index)(e)),
                }
                fs::remove_file(&seg.path).map_err(Error::io("delete segment", &seg.path))?;
                Ok(None)
            }
        }
    }

    /// Removes every record at or after `next`, durably: later segments are deleted
    /// (newest first), then the segment holding `next` is cut there, its tail zeroed and
    /// synced, and its index rewritten. Appends continue from `next`. A crash midway
    /// leaves a log that ends somewhere between `next` and the old end, without gaps.
    pub fn truncate(&mut self, next: u64) -> Result<TruncateReport> {
        self.check_writable()?;
        let previous = self.next_offset();
        let mut report = TruncateReport {
            previous_next_offset: previous,
            next_offset: previous,
            records_removed: 0,
            segments_removed: Vec::new(),
        };
        if next >= previous {
            return Ok(report);
        }
        if next < self.first_offset() {
            return Err(Error::OffsetOutOfRange { offset: next, first: self.first_offset() });
        }
        let keep = self.segments.partition_point(|s| s.base_offset <= next) - 1;
        // Batches never span segments: only the segment holding `next` can be split.
        self.segments[keep].check_cut_point(next)?;
        // The prefaulter may be working on the active mapping, which may go away.
        self.prefaulter.shutdown();
        let result = (|| {
            while self.segments.len() > keep + 1 {
                let seg = self.segments.last().expect("more than one segment");
                self.dispose_segment_files(seg, false)?;
                report.segments_removed.push(RemovedSegment {
                    path: seg.path.clone(),
                    base_offset: seg.base_offset,
                    next_offset: seg.next_offset,
                    file_bytes: seg.size() as u64,
                    archived_to: None,
                });
                self.segments.pop();
            }
            if !report.segments_removed.is_empty() {
                sys::fsync_dir(&self.dir).map_err(Error::io("fsync directory", &self.dir))?;
            }
            let interval = self.limits.index_interval_bytes;
            let seg = self.segments.last_mut().expect("the kept segment");
            seg.cut_at(next, interval)?;
            seg.zero_tail()?;
            seg.write_index(true)
        })();
        self.prefaulter = sys::Prefaulter::new(self.frequent_syncs);
        // Whatever happened, nothing past the end is durable (a sync that started before
        // the truncation must not raise it again: see `complete_sync`).
        self.truncations += 1;
        self.durable = self.durable.min(self.next_offset());
        if let Err(e) = result {
            // A failed fsync (of the tail or the directory) poisons like any other.
            return Err(match e {
                Error::Io { op, .. } if op.starts_with("fsync") => self.poison_on_sync_error(e),
                other => other,
            });
        }
        // zero_tail fsynced the whole file: everything kept is durable.
        self.durable = self.next_offset();
        self.prefault();
        report.next_offset = self.next_offset();
        report.records_removed = previous - report.next_offset;
        Ok(report)
    }

    // ---- time ----

    /// The first offset whose record's timestamp is `>= ts`, or `None` if there is none.
    /// Timestamps need not be monotonic: this is exactly the first such record in offset
    /// order, found through the index's running maximum (FORMAT.md 4.2) in O(log n) per
    /// segment plus a walk of at most one index interval.
    pub fn offset_for_timestamp(&self, ts: u64) -> Result<Option<u64>> {
        self.check_open()?;
        let interval = self.limits.index_interval_bytes;
        for seg in &self.segments {
            // Every record of earlier segments is older than `ts` (their maximum is).
            if seg.record_count() > 0 && seg.max_ts >= ts {
                return seg.first_at_or_after(ts, interval).map(Some);
            }
        }
        Ok(None)
    }

    // ---- cursors ----

    pub fn cursor(&self, name: &str) -> Result<Option<crate::cursor::CursorState>> {
        self.check_open()?;
        crate::cursor::read(&self.dir, name)
    }

    pub fn cursors(&self) -> Result<Vec<crate::cursor::CursorState>> {
        self.check_open()?;
        crate::cursor::list(&self.dir)
    }

    /// Commits cursor `name` at `position` (at most `next_offset`). Allowed on a reader:
    /// cursor files are consumer state, apart from the segments readers never touch.
    pub fn commit_cursor(&mut self, name: &str, position: u64) -> Result<()> {
        self.check_cursor_commit(name, position)?;
        crate::cursor::commit(&self.dir, name, position, now_ms())
    }

    /// The checks of `commit_cursor` (name, position within the log) without the write,
    /// for callers that write the cursor file on another thread.
    pub fn check_cursor_commit(&mut self, name: &str, position: u64) -> Result<()> {
        self.check_open()?;
        crate::cursor::validate_name(name)?;
        let next = self.refresh()?;
        if position > next {
            return Err(Error::InvalidArgument(format!(
                "cursor position {position} is past the end of the log (nextOffset {next})"
            )));
        }
        Ok(())
    }

    pub fn delete_cursor(&self, name: &str) -> Result<bool> {
        self.check_open()?;
        crate::cursor::delete(&self.dir, name)
    }

    /// Writes all data to stable storage (msync of the active segment) on this thread.
    pub fn flush(&mut self) -> Result<()> {
        self.check_writable()?;
        let target = self.next_offset();
        if let Err(e) = self.active().flush() {
            return Err(self.poison_on_sync_error(e));
        }
        self.durable = self.durable.max(target);
        Ok(())
    }

    /// Starts a sync of everything appended so far, to be `run` on another thread and
    /// then passed to `complete_sync`. The writer may go on appending meanwhile; those
    /// records ride on the next sync (group commit).
    pub fn begin_sync(&self) -> Result<SyncRequest> {
        self.check_writable()?;
        let target = self.next_offset();
        let active = self.segments.last().expect("an open log always has an active segment");
        Ok(SyncRequest {
            file: (target > self.durable).then(|| active.shared_file()),
            path: active.path.clone(),
            target,
            truncations: self.truncations,
        })
    }

    /// Records the outcome of a sync begun with `begin_sync`: on success returns the
    /// durable offset; on failure poisons the log and returns the error (also when the
    /// log was poisoned meanwhile by another failure).
    pub fn complete_sync(&mut self, request: &SyncRequest, result: io::Result<()>) -> Result<u64> {
        if let Err(e) = result {
            return Err(self.poison_with(&request.path, &e));
        }
        if let Some(p) = &self.poison {
            return Err(p.error());
        }
        // A truncation since the sync began may have removed records below its target.
        if request.truncations == self.truncations {
            self.durable = self.durable.max(request.target.min(self.next_offset()));
        }
        Ok(self.durable)
    }

    /// Syncs everything appended so far on this thread; returns the durable offset.
    pub fn sync(&mut self) -> Result<u64> {
        let request = self.begin_sync()?;
        let result = request.run();
        self.complete_sync(&request, result)
    }

    /// A reader's catch-up with the writer: makes records appended since visible, and
    /// follows the writer into segments it rolled to. Returns `next_offset`. A writer's
    /// log (which knows its own records) returns at once.
    pub fn refresh(&mut self) -> Result<u64> {
        self.check_open()?;
        if !self.read_only {
            return Ok(self.next_offset());
        }
        let interval = self.limits.index_interval_bytes;
        self.forget_removed_segments()?;
        self.follow_truncation(interval)?;
        loop {
            if let Some(last) = self.segments.last_mut() {
                last.extend_live(interval);
            }
            // The writer rolls by creating the segment named by the next offset (after
            // syncing the one before), so the current segment is complete once it exists.
            let next = self.next_offset();
            let path = self.dir.join(segment_file_name(next));
            let meta = match fs::metadata(&path) {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                Err(e) => return Err(Error::io("stat segment", &path)(e)),
            };
            // An empty segment's own name is the next offset's: the same file, nothing new.
            if self.segments.last().is_some_and(|s| s.file_id == (meta.dev(), meta.ino())) {
                break;
            }
            let seg = match Segment::open(path, next, false, false) {
                Ok(seg) => seg,
                // Replaced or removed between the stat and the open: look again next time.
                Err(Error::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => break,
                Err(e) => return Err(e),
            };
            // The writer replaced an empty active segment with a larger one (see `roll`).
            if self.segments.last().is_some_and(|s| s.base_offset == next) {
                self.segments.pop();
            }
            self.segments.push(seg);
        }
        Ok(self.next_offset())
    }

    // ---- reads ----

    /// Segment index and frame position of `offset`, or `None` at or past `next_offset`.
    /// `point`: a single-record read, which may use (and grow) the dense position index;
    /// sequential reads walk from the sparse index instead, so scanning a log does not
    /// build a dense index of it.
    fn locate(&self, offset: u64, point: bool) -> Result<Option<(usize, usize)>> {
        self.check_open()?;
        if offset >= self.next_offset() {
            return Ok(None);
        }
        if offset < self.first_offset() {
            return Err(Error::OffsetOutOfRange { offset, first: self.first_offset() });
        }
        let i = self.segments.partition_point(|s| s.base_offset <= offset) - 1;
        let pos = self.segments[i].position_of(offset, self.limits.index_interval_bytes, point)?;
        Ok(Some((i, pos)))
    }

    /// The record at `offset`, checked (CRC, offset), or `None` at or past `next_offset`.
    pub fn read(&self, offset: u64) -> Result<Option<Record<'_>>> {
        let Some((i, pos)) = self.locate(offset, true)? else { return Ok(None) };
        let seg = &self.segments[i];
        let info = seg.checked_frame(pos, offset)?;
        Ok(Some(Record {
            offset,
            timestamp: info.timestamp,
            payload: &seg.bytes()[pos + FRAME_HEADER_LEN..pos + info.frame_len],
        }))
    }

    /// The whole checked frame of the record at `offset` (FORMAT.md 2.2), unpadded.
    pub fn read_frame(&self, offset: u64) -> Result<Option<&[u8]>> {
        let Some((i, pos)) = self.locate(offset, true)? else { return Ok(None) };
        let seg = &self.segments[i];
        let info = seg.checked_frame(pos, offset)?;
        Ok(Some(&seg.bytes()[pos..pos + info.frame_len]))
    }

    /// Copies the frames of up to `max_records` records from `from` into `dest`, back to
    /// back and padded as on disk, each checked first. Stops before exceeding `max_bytes`
    /// (but always copies one record if `dest` can hold it) or the end of `dest`.
    pub fn read_frames_into(&self, from: u64, max_records: u64, max_bytes: usize, dest: &mut [u8]) -> Result<CopyOutcome> {
        let mut out = CopyOutcome { records: 0, bytes: 0, needed: 0 };
        let mut offset = from;
        'segments: while out.records < max_records {
            let Some((i, start)) = self.locate(offset, false)? else { break };
            let seg = &self.segments[i];
            let mut pos = start;
            while out.records < max_records && offset < seg.next_offset {
                let info = seg.checked_frame(pos, offset)?;
                let framed = info.next_position(pos) - pos;
                let total = out.bytes + (pos - start) + framed;
                if total > dest.len() || (out.records > 0 && total > max_bytes) {
                    if out.records == 0 {
                        out.needed = framed;
                    }
                    copy_range(dest, &mut out.bytes, &seg.bytes()[start..pos]);
                    break 'segments;
                }
                pos += framed;
                offset += 1;
                out.records += 1;
            }
            copy_range(dest, &mut out.bytes, &seg.bytes()[start..pos]);
            if offset < seg.next_offset {
                break;
            }
        }
        Ok(out)
    }

    // ---- for the key-value store (crate::store) ----

    /// The payload of the record at `offset`, whose frame starts at `pos`, fully
    /// checked (length, offset, CRC). A location that no longer holds that record is
    /// `Corrupt`.
    #[inline]
    pub(crate) fn payload_at(&self, offset: u64, pos: usize) -> Result<&[u8]> {
        let seg = self.segment_of(offset)?;
        let info = seg.checked_frame(pos, offset)?;
        Ok(frame_payload(seg.bytes(), pos, &info))
    }

    /// Like `payload_at` without the CRC (length and offset are still checked): to
    /// compare keys while probing the store's index; what is returned to a caller is
    /// read with `payload_at`.
    #[inline]
    pub(crate) fn payload_at_unchecked(&self, offset: u64, pos: usize) -> Option<&[u8]> {
        let seg = self.segment_of(offset).ok()?;
        match check_frame_header(seg.bytes(), pos, offset, seg.max_payload_on_disk()) {
            Frame::Valid(info) => Some(frame_payload(seg.bytes(), pos, &info)),
            _ => None,
        }
    }

    #[inline]
    fn segment_of(&self, offset: u64) -> Result<&Segment> {
        self.check_open()?;
        let i = self.segments.partition_point(|s| s.base_offset <= offset);
        match self.segments.get(i.wrapping_sub(1)) {
            Some(seg) if offset < seg.next_offset => Ok(seg),
            _ => Err(Error::corrupt(&self.dir, Some(offset), None, "a store index entry points at a record that is not in the log")),
        }
    }

    /// Position in the active segment where the next frame goes (after an append: the
    /// end of the frames just written, which all lie in the active segment).
    #[inline]
    pub(crate) fn active_end(&self) -> usize {
        self.segments.last().map_or(0, |s| s.end)
    }

    /// Calls `f(offset, position, timestamp, payload, framed_len)` for each record from
    /// `from` to the end (or until `f` returns `Ok(false)`), walking frames in order
    /// (one index lookup, then sequential), every frame fully checked.
    pub(crate) fn scan(&self, from: u64, mut f: impl FnMut(u64, usize, u64, &[u8], usize) -> Result<bool>) -> Result<()> {
        let mut offset = from;
        while let Some((i, mut pos)) = self.locate(offset, false)? {
            let seg = &self.segments[i];
            while offset < seg.next_offset {
                let info = seg.checked_frame(pos, offset)?;
                let next = info.next_position(pos);
                if !f(offset, pos, info.timestamp, frame_payload(seg.bytes(), pos, &info), next - pos)? {
                    return Ok(());
                }
                pos = next;
                offset += 1;
            }
        }
        Ok(())
    }

    /// Seals the active segment if it holds records and starts a fresh one; returns the
    /// fresh segment's base offset (everything below it is in sealed segments).
    pub(crate) fn roll_if_not_empty(&mut self) -> Result<u64> {
        self.check_writable()?;
        if self.segments.last().is_some_and(|s| s.record_count() > 0) {
            self.roll()?;
        }
        Ok(self.next_offset())
    }

    /// Iterates over records from `from` (inclusive) to `to` (exclusive).
    /// Fails with `Closed` (as its only item) after `close`.
    pub fn iter(&self, from: u64, to: u64) -> impl Iterator<Item = Result<Record<'_>>> + '_ {
        let closed = self.check_open().err().into_iter().map(Err);
        let to = to.min(self.next_offset());
        let records = (from.max(self.first_offset())..to).map(move |o| self.read(o).map(|r| r.expect("offset below next_offset")));
        closed.chain(records)
    }

    pub fn segments(&self) -> Vec<SegmentInfo> {
        self.segments
            .iter()
            .map(|s| SegmentInfo {
                path: s.path.clone(),
                base_offset: s.base_offset,
                next_offset: s.next_offset,
                records: s.record_count(),
                data_bytes: s.end as u64,
                file_bytes: s.size() as u64,
                created_ms: s.created_ms,
                timestamps: (s.record_count() > 0).then_some((s.min_ts, s.max_ts)),
                index_entries: s.index_len(),
            })
            .collect()
    }

    /// Full check of every segment: header, every frame (bounds, CRC, offset sequence),
    /// the zero tail after the data, and every index entry against the frame it names.
    pub fn verify(&self) -> Result<VerifyReport> {
        self.check_open()?;
        let mut report = VerifyReport {
            segments: self.segments.len(),
            records: 0,
            bytes: 0,
            index_entries: 0,
            first_offset: self.first_offset(),
            next_offset: self.next_offset(),
            problem: None,
        };
        let mut expected_base = self.first_offset();
        let last = self.segments.len().saturating_sub(1);
        for (i, seg) in self.segments.iter().enumerate() {
            // A reader's last segment has a live tail: bytes after what it has seen are
            // records being written (or a torn tail the writer's recovery will cut).
            let live_tail = self.read_only && i == last;
            if let Err(p) = verify_segment(seg, expected_base, live_tail, &mut report) {
                report.problem = Some(p);
                break;
            }
            expected_base = seg.next_offset;
        }
        Ok(report)
    }

    /// Writes the active segment's index and releases the lock and mappings. Idempotent.
    pub fn close(&mut self) -> Result<()> {
        if self.closed {
            return Ok(());
        }
        self.closed = true;
        // The index may only cover durable frames (FORMAT.md 4): recovery trusts every
        // frame before its last entry. So sync the data first, then the index. A reader
        // writes nothing; a poisoned writer syncs nothing more (recovery will redo it).
        let result = match self.segments.last() {
            Some(active) if !self.read_only && self.poison.is_none() => match active.flush() {
                Ok(()) => {
                    self.durable = active.next_offset;
                    active.write_index(true)
                }
                Err(e) => Err(e),
            },
            _ => Ok(()),
        };
        self.prefaulter.shutdown();
        self.segments.clear();
        self._lock = None;
        result
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        // A safety net only: callers close explicitly and see any error there.
        let _ = self.close();
    }
}

/// Whether `seg`'s path still names the file a reader mapped (not removed or replaced).
fn still_in_place(seg: &Segment) -> Result<bool> {
    match fs::metadata(&seg.path) {
        Ok(m) => Ok((m.dev(), m.ino()) == seg.file_id),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io("stat segment", &seg.path)(e)),
    }
}

fn copy_range(dest: &mut [u8], at: &mut usize, src: &[u8]) {
    dest[*at..*at + src.len()].copy_from_slice(src);
    *at += src.len();
}

fn take_lock(dir: &Path) -> Result<File> {
    let path = dir.join(LOCK_FILE_NAME);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(Error::io("open lock file", &path))?;
    match sys::try_lock_exclusive(&file) {
        Ok(true) => {}
        Ok(false) => return Err(Error::Locked { path }),
        Err(e) => return Err(Error::io("lock", &path)(e)),
    }
    // The pure-TypeScript engine cannot flock: it holds `seglog.jslock` instead and
    // checks for our flock after creating it (FORMAT.md 6.1). Taking ours and then
    // checking for its file makes the two exclusive whichever comes first.
    let js = dir.join(JS_LOCK_FILE_NAME);
    match fs::read_to_string(&js) {
        Ok(text) if js_lock_is_live(&text) => Err(Error::Locked { path: js }),
        Ok(_) => Ok(file),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(file),
        Err(e) => Err(Error::io("read lock file", &js)(e)),
    }
}

/// `seglog.jslock` holds `<pid> <host> <token>`: live unless it names a process of this
/// host that is gone (an unreadable one counts as live: refusing is the safe side).
fn js_lock_is_live(text: &str) -> bool {
    let mut parts = text.split_whitespace();
    let (Some(pid), Some(host)) = (parts.next().and_then(|p| p.parse::<i32>().ok()), parts.next()) else {
        return true;
    };
    match sys::hostname() {
        Some(this_host) if this_host == host => sys::process_exists(pid),
        _ => true,
    }
}

/// Segment files in base-offset order. A writer (`removed` given) deletes leftover
/// `*.tmp` files; a reader ignores them.
fn list_segments(dir: &Path, mut removed: Option<&mut Vec<PathBuf>>) -> Result<Vec<(u64, PathBuf)>> {
    let mut found = Vec::new();
    let mut indexes = Vec::new();
    let mut any_removed = false;
    for entry in fs::read_dir(dir).map_err(Error::io("list log directory", dir))? {
        let entry = entry.map_err(Error::io("list log directory", dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.ends_with(".tmp") {
            if let Some(removed) = removed.as_deref_mut() {
                fs::remove_file(entry.path()).map_err(Error::io("remove temp file", entry.path()))?;
                removed.push(entry.path());
                any_removed = true;
            }
        } else if let Some(base) = parse_segment_file_name(name) {
            found.push((base, entry.path()));
        } else if let Some(base) = name.strip_suffix(".idx").and_then(|stem| parse_segment_file_name(&format!("{stem}.seg"))) {
            indexes.push((base, entry.path()));
        }
    }
    found.sort();
    // An index whose segment is gone (a crash between removing the two): delete it.
    if let Some(removed) = removed.as_deref_mut() {
        for (base, path) in indexes {
            if found.binary_search_by_key(&base, |(b, _)| *b).is_err() {
                fs::remove_file(&path).map_err(Error::io("remove orphan index", &path))?;
                removed.push(path);
                any_removed = true;
            }
        }
    }
    if any_removed {
        sys::fsync_dir(dir).map_err(Error::io("fsync directory", dir))?;
    }
    Ok(found)
}

fn read_index(seg: &Segment) -> Option<IndexFile> {
    let bytes = fs::read(seg.index_path()).ok()?;
    IndexFile::decode(&bytes, seg.base_offset, seg.size()).ok()
}

/// A walk starting at the last index entry whose frame checks out, or at the first record.
fn start_from_index(seg: &Segment, idx: &IndexFile) -> Walk {
    let max_payload = seg.max_payload_on_disk();
    for i in (0..idx.entries.len()).rev() {
        let e = idx.entries[i];
        let offset = seg.base_offset + e.relative_offset as u64;
        if let Frame::Valid(_) = check_frame(seg.bytes(), e.position as usize, offset, max_payload) {
            return Walk::from_entry(seg.base_offset, &idx.entries, i);
        }
    }
    Walk::from_start(seg.base_offset)
}

fn verify_segment(seg: &Segment, expected_base: u64, live_tail: bool, report: &mut VerifyReport) -> Result<(), Problem> {
    let problem = |offset: Option<u64>, position: Option<usize>, reason: &str| Problem {
        segment: seg.path.clone(),
        offset,
        position: position.map(|p| p as u64),
        reason: reason.to_string(),
    };
    let bytes = seg.bytes();
    SegmentHeader::decode(bytes).map_err(|r| problem(None, Some(0), r))?;
    if seg.base_offset != expected_base {
        return Err(problem(Some(expected_base), Some(0), "segment does not start where the previous one ends"));
    }
    let entries = seg.index_entries();
    let (mut pos, mut offset, mut max_ts, mut j) = (SEGMENT_HEADER_LEN, seg.base_offset, 0u64, 0usize);
    let max_payload = seg.max_payload_on_disk();
    while offset < seg.next_offset {
        let info = match check_frame(bytes, pos, offset, max_payload) {
            Frame::Valid(info) => info,
            Frame::Bad(p) => return Err(problem(Some(offset), Some(pos), p.describe())),
            Frame::End => return Err(problem(Some(offset), Some(pos), "record missing before end of data")),
        };
        max_ts = max_ts.max(info.timestamp);
        if let Some(e) = entries.get(j).filter(|e| e.position as usize == pos) {
            if e.relative_offset as u64 != offset - seg.base_offset || e.max_timestamp != max_ts {
                return Err(problem(Some(offset), Some(pos), "index entry disagrees with the record it points at"));
            }
            j += 1;
            report.index_entries += 1;
        }
        report.records += 1;
        pos = info.next_position(pos);
        offset += 1;
    }
    if j != entries.len() {
        return Err(problem(None, entries.get(j).map(|e| e.position as usize), "index entry does not point at a record"));
    }
    if pos != seg.end {
        return Err(problem(Some(offset), Some(pos), "end of data disagrees with the records"));
    }
    let tail_end = (pos + 4096).min(bytes.len());
    if !live_tail && bytes[pos..tail_end].iter().any(|&b| b != 0) {
        return Err(problem(Some(offset), Some(pos), "non-zero bytes after the end of data"));
    }
    report.bytes += pos as u64;
    Ok(())
}
