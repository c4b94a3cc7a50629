//! One segment file: its mapping, its in-memory index, frame walks and appends.

use std::cell::RefCell;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::format::{
    check_frame, check_frame_header, framed_len, max_payload_for_segment, put_frame_len, write_frame_body, Frame,
    FrameInfo, FrameProblem, IndexEntry, IndexFile, SegmentHeader, FLAG_BATCH_CONTINUES, FRAME_HEADER_LEN,
    SEGMENT_HEADER_LEN,
};
use crate::sys::{self, Mapping};

pub const SEGMENT_SUFFIX: &str = ".seg";
pub const INDEX_SUFFIX: &str = ".idx";

pub fn segment_file_name(base_offset: u64) -> String {
    format!("{base_offset:020}{SEGMENT_SUFFIX}")
}

/// Parses `<20 digits>.seg`.
pub fn parse_segment_file_name(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(SEGMENT_SUFFIX)?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

/// Where a walk over frames stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalkStop {
    /// A zero length or the end of the segment: clean end of data.
    End,
    /// A frame that fails FORMAT.md 5 at `position`, where `offset` was expected.
    Bad { position: usize, offset: u64, problem: FrameProblem },
}

/// Whether the record at `position` gets an index entry (FORMAT.md 4): the first record
/// of a segment, then the first at least `index_interval` bytes after the previous entry.
/// Shared by appends and by index rebuilds so both produce the same entries.
#[inline]
fn index_entry_due(last_entry_position: Option<usize>, position: usize, index_interval: usize) -> bool {
    last_entry_position.is_none_or(|last| position - last >= index_interval)
}

/// The state of a walk: where the next frame is and what has been seen.
#[derive(Debug, Clone)]
pub struct Walk {
    pub position: usize,
    pub next_offset: u64,
    pub min_ts: u64,
    pub max_ts: u64,
    pub entries: Vec<IndexEntry>,
    last_entry_position: Option<usize>,
    /// Position of the last record walked over.
    last_frame: Option<usize>,
    /// Set while inside an atomic batch: the state before its first record.
    pub batch_start: Option<BatchMark>,
}

/// The walk state before the first record of an open batch, to cut back to.
#[derive(Debug, Clone, Copy)]
pub struct BatchMark {
    pub position: usize,
    pub next_offset: u64,
    min_ts: u64,
    max_ts: u64,
    entries_len: usize,
    last_entry_position: Option<usize>,
    last_frame: Option<usize>,
}

impl Walk {
    pub fn from_start(base_offset: u64) -> Walk {
        Walk {
            position: SEGMENT_HEADER_LEN,
            next_offset: base_offset,
            min_ts: u64::MAX,
            max_ts: 0,
            entries: Vec::new(),
            last_entry_position: None,
            last_frame: None,
            batch_start: None,
        }
    }

    /// Starts at index entry `e` (whose frame the caller will check), keeping the entries before it.
    pub fn from_entry(base_offset: u64, entries: &[IndexEntry], i: usize) -> Walk {
        let e = entries[i];
        Walk {
            position: e.position as usize,
            next_offset: base_offset + e.relative_offset as u64,
            min_ts: u64::MAX,
            // The entry holds the running maximum up to and including its own record,
            // which the walk visits again (max is idempotent).
            max_ts: e.max_timestamp,
            entries: entries[..i].to_vec(),
            last_entry_position: if i == 0 { None } else { Some(entries[i - 1].position as usize) },
            last_frame: None,
            batch_start: None,
        }
    }

    /// Cuts back to the start of the open batch, if any. Returns true if it did.
    pub fn cut_open_batch(&mut self) -> bool {
        let Some(m) = self.batch_start.take() else { return false };
        self.position = m.position;
        self.next_offset = m.next_offset;
        self.min_ts = m.min_ts;
        self.max_ts = m.max_ts;
        self.entries.truncate(m.entries_len);
        self.last_entry_position = m.last_entry_position;
        self.last_frame = m.last_frame;
        true
    }

    /// Notes a valid record at `self.position` and advances past it.
    fn advance(&mut self, base_offset: u64, info: &FrameInfo, index_interval: usize) {
        if info.flags & FLAG_BATCH_CONTINUES != 0 {
            if self.batch_start.is_none() {
                self.batch_start = Some(BatchMark {
                    position: self.position,
                    next_offset: self.next_offset,
                    min_ts: self.min_ts,
                    max_ts: self.max_ts,
                    entries_len: self.entries.len(),
                    last_entry_position: self.last_entry_position,
                    last_frame: self.last_frame,
                });
            }
        } else {
            self.batch_start = None;
        }
        self.min_ts = self.min_ts.min(info.timestamp);
        self.max_ts = self.max_ts.max(info.timestamp);
        if index_entry_due(self.last_entry_position, self.position, index_interval) {
            self.entries.push(IndexEntry {
                relative_offset: (info.offset - base_offset) as u32,
                position: self.position as u32,
                max_timestamp: self.max_ts,
            });
            self.last_entry_position = Some(self.position);
        }
        self.last_frame = Some(self.position);
        self.position = info.next_position(self.position);
        self.next_offset += 1;
    }
}

pub struct Segment {
    pub path: PathBuf,
    pub base_offset: u64,
    pub created_ms: u64,
    /// Offset the next record appended to this segment gets.
    pub next_offset: u64,
    /// Position after the last frame (8-byte aligned): where the next frame goes.
    pub end: usize,
    pub min_ts: u64,
    pub max_ts: u64,
    /// Sparse index; a `RefCell` so a lookup that finds it lying can rebuild it.
    index: RefCell<Vec<IndexEntry>>,
    /// Positions of this segment's first records, one per record (a prefix, grown by
    /// random reads as they need it): a `get` finds its frame without walking from the
    /// nearest sparse entry. Cleared when records may have moved (a truncation).
    dense: RefCell<Vec<u32>>,
    last_entry_position: Option<usize>,
    /// Position of the last record, when known (a reader checks it is still there).
    last_frame: Option<usize>,
    /// Everything below this position has been handed to the prefaulter.
    prefaulted_to: usize,
    /// Writeback has been started for everything below this position.
    pub written_back_to: u64,
    map: Mapping,
    /// Shared with sync tasks, which `fdatasync` it off the writer's thread.
    file: Arc<File>,
    /// Device and inode: tells a reader whether a path still names this file.
    pub file_id: (u64, u64),
}

/// Prefault when the writer gets this close to the prefaulted end...
const PREFAULT_AHEAD_BYTES: usize = 4 << 20;
/// ...this many bytes at a time.
const PREFAULT_CHUNK_BYTES: usize = 4 << 20;

impl Segment {
    /// Creates a segment durably (FORMAT.md 7): temp file, preallocate, header, fsync,
    /// rename, fsync the directory.
    /// Returns the segment and, separately, a failure of the final directory fsync (the
    /// segment exists then, but its name may not be durable).
    pub fn create(dir: &Path, base_offset: u64, segment_bytes: usize, created_ms: u64, frequent_syncs: bool) -> Result<(Segment, Option<Error>)> {
        let path = dir.join(segment_file_name(base_offset));
        let tmp = dir.join(format!("{}.tmp", segment_file_name(base_offset)));
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(Error::io("create segment", &tmp))?;
        let header = SegmentHeader { base_offset, created_ms, segment_bytes: segment_bytes as u64 };
        let result = (|| {
            sys::preallocate(&file, segment_bytes as u64)?;
            file.write_all(&header.encode())?;
            file.sync_all()
        })();
        if let Err(e) = result {
            drop(file);
            let _ = fs::remove_file(&tmp);
            return Err(Error::io("preallocate segment", &tmp)(e));
        }
        // Everything that can fail without a sync failing happens before the rename, so
        // an error leaves no new segment in the directory (only a temp file, removed).
        let prepared = Mapping::map_with(&file, segment_bytes, true, frequent_syncs)
            .map_err(Error::io("map segment", &tmp))
            .and_then(|map| Ok((map, file.metadata().map_err(Error::io("stat segment", &tmp))?)));
        let (map, meta) = match prepared {
            Ok(p) => p,
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                return Err(e);
            }
        };
        fs::rename(&tmp, &path).map_err(Error::io("rename segment", &path))?;
        let segment = Segment {
            path,
            base_offset,
            created_ms,
            next_offset: base_offset,
            end: SEGMENT_HEADER_LEN,
            min_ts: u64::MAX,
            max_ts: 0,
            index: RefCell::new(Vec::new()),
            dense: RefCell::new(Vec::new()),
            last_entry_position: None,
            last_frame: None,
            prefaulted_to: 0,
            written_back_to: 0,
            map,
            file: Arc::new(file),
            file_id: (meta.dev(), meta.ino()),
        };
        // The segment is in place. If the directory fsync fails, the caller gets the
        // segment and the error: a failed fsync poisons the log (DURABILITY.md rule 7).
        let dir_sync = sys::fsync_dir(dir).map_err(Error::io("fsync directory", dir)).err();
        Ok((segment, dir_sync))
    }

    /// Opens and maps an existing segment and checks its header. The caller then
    /// establishes its extent with `adopt_index` or a walk. A reader (`writable` false)
    /// opens and maps the file read-only.
    pub fn open(path: PathBuf, base_offset: u64, writable: bool, frequent_syncs: bool) -> Result<Segment> {
        let file = OpenOptions::new().read(true).write(writable).open(&path).map_err(Error::io("open segment", &path))?;
        let meta = file.metadata().map_err(Error::io("stat segment", &path))?;
        let len = meta.len() as usize;
        if len < SEGMENT_HEADER_LEN + 4 {
            return Err(Error::corrupt(&path, None, Some(0), format!("segment file is only {len} bytes")));
        }
        let map = Mapping::map_with(&file, len, writable, frequent_syncs).map_err(Error::io("map segment", &path))?;
        let header = SegmentHeader::decode(map.bytes()).map_err(|r| Error::corrupt(&path, None, Some(0), r))?;
        if header.base_offset != base_offset {
            return Err(Error::corrupt(&path, None, Some(0), "segment header base offset does not match the file name"));
        }
        if header.segment_bytes != len as u64 {
            return Err(Error::corrupt(
                &path,
                None,
                Some(0),
                format!("segment file is {len} bytes but its header says {}", header.segment_bytes),
            ));
        }
        Ok(Segment {
            path,
            base_offset,
            created_ms: header.created_ms,
            next_offset: base_offset,
            end: SEGMENT_HEADER_LEN,
            min_ts: u64::MAX,
            max_ts: 0,
            index: RefCell::new(Vec::new()),
            dense: RefCell::new(Vec::new()),
            last_entry_position: None,
            last_frame: None,
            prefaulted_to: 0,
            written_back_to: 0,
            map,
            file: Arc::new(file),
            file_id: (meta.dev(), meta.ino()),
        })
    }

    pub fn index_path(&self) -> PathBuf {
        self.path.with_extension(&INDEX_SUFFIX[1..])
    }

    #[inline]
    pub fn size(&self) -> usize {
        self.map.bytes().len()
    }

    #[inline]
    pub fn bytes(&self) -> &[u8] {
        self.map.bytes()
    }

    /// Largest payload any frame of this segment can have (FORMAT.md 5, step 2).
    #[inline]
    pub fn max_payload_on_disk(&self) -> usize {
        max_payload_for_segment(self.size())
    }

    pub fn record_count(&self) -> u64 {
        self.next_offset - self.base_offset
    }

    pub fn index_len(&self) -> usize {
        self.index.borrow().len()
    }

    pub fn index_entries(&self) -> Vec<IndexEntry> {
        self.index.borrow().clone()
    }

    /// Walks frames from `walk` until the end of data or a bad frame, checking CRCs.
    pub fn walk(&self, walk: &mut Walk, index_interval: usize) -> WalkStop {
        let seg = self.bytes();
        let max_payload = self.max_payload_on_disk();
        loop {
            match check_frame(seg, walk.position, walk.next_offset, max_payload) {
                Frame::End => return WalkStop::End,
                Frame::Bad(problem) => {
                    return WalkStop::Bad { position: walk.position, offset: walk.next_offset, problem }
                }
                Frame::Valid(info) => walk.advance(self.base_offset, &info, index_interval),
            }
        }
    }

    /// Takes the extent and index found by a walk.
    pub fn adopt_walk(&mut self, walk: Walk) {
        self.end = walk.position;
        self.next_offset = walk.next_offset;
        self.min_ts = walk.min_ts;
        self.max_ts = walk.max_ts;
        self.last_entry_position = walk.last_entry_position;
        if walk.last_frame.is_some() || walk.next_offset == self.base_offset {
            self.last_frame = walk.last_frame;
        }
        *self.index.get_mut() = walk.entries;
    }

    /// A reader's catch-up: walks on from the end of data over frames the writer has
    /// published since. A frame that fails its checks here is one still being written
    /// ("not yet", FORMAT.md 2.3), and the records of an atomic batch whose last record
    /// is not there yet stay invisible. Returns how many records became visible.
    pub fn extend_live(&mut self, index_interval: usize) -> u64 {
        let before = self.next_offset;
        let mut walk = Walk {
            position: self.end,
            next_offset: self.next_offset,
            min_ts: self.min_ts,
            max_ts: self.max_ts,
            entries: std::mem::take(self.index.get_mut()),
            last_entry_position: self.last_entry_position,
            last_frame: self.last_frame,
            batch_start: None,
        };
        let _ = self.walk(&mut walk, index_interval);
        walk.cut_open_batch();
        self.adopt_walk(walk);
        self.next_offset - before
    }

    /// Whether the last record a reader saw is still where it saw it. False after the
    /// writer truncated this segment below it (the bytes are zeroed or rewritten).
    pub fn last_record_intact(&self) -> bool {
        match self.last_frame {
            None => self.next_offset == self.base_offset || self.record_count() == 0,
            Some(pos) => matches!(
                check_frame(self.bytes(), pos, self.next_offset - 1, self.max_payload_on_disk()),
                Frame::Valid(info) if info.next_position(pos) == self.end
            ),
        }
    }

    /// A reader's full re-walk after a truncation: the records now there, as a reader
    /// sees them (a bad frame at the end is "not yet", an open batch stays hidden).
    pub fn rescan_live(&mut self, index_interval: usize) {
        self.dense.get_mut().clear();
        let mut walk = Walk::from_start(self.base_offset);
        let _ = self.walk(&mut walk, index_interval);
        walk.cut_open_batch();
        self.last_frame = None;
        self.adopt_walk(walk);
    }

    /// Full scan from the first frame; used for sealed segments without a usable index.
    /// Any bad frame is corruption (a sealed segment was synced before the next existed).
    pub fn rebuild_sealed(&mut self, index_interval: usize) -> Result<()> {
        let mut walk = Walk::from_start(self.base_offset);
        match self.walk(&mut walk, index_interval) {
            WalkStop::End => {}
            WalkStop::Bad { position, offset, problem } => {
                return Err(Error::corrupt(&self.path, Some(offset), Some(position as u64), problem.describe()))
            }
        }
        self.adopt_walk(walk);
        Ok(())
    }

    /// Tries to use an index file for a sealed segment: it must start at the first record,
    /// and the frames from its last entry must end exactly at its `end_position` with offset
    /// `next_offset`. Returns false (changing nothing) if it does not check out.
    pub fn adopt_sealed_index(&mut self, idx: IndexFile) -> bool {
        let (Some(first), Some(last)) = (idx.entries.first(), idx.entries.last()) else { return false };
        if first.relative_offset != 0 || first.position as usize != SEGMENT_HEADER_LEN {
            return false;
        }
        let mut walk = Walk::from_entry(self.base_offset, &idx.entries, idx.entries.len() - 1);
        if self.walk(&mut walk, usize::MAX) != WalkStop::End
            || walk.position != idx.end_position as usize
            || walk.next_offset != idx.next_offset
            || walk.max_ts > idx.max_timestamp
            || walk.min_ts < idx.min_timestamp
        {
            return false;
        }
        self.end = walk.position;
        self.next_offset = walk.next_offset;
        self.min_ts = idx.min_timestamp;
        self.max_ts = idx.max_timestamp;
        self.last_entry_position = Some(last.position as usize);
        *self.index.get_mut() = idx.entries;
        true
    }

    /// The index file content for this segment's current state.
    pub fn index_file(&self) -> IndexFile {
        IndexFile {
            base_offset: self.base_offset,
            next_offset: self.next_offset,
            end_position: self.end as u32,
            min_timestamp: self.min_ts,
            max_timestamp: self.max_ts,
            entries: self.index.borrow().clone(),
        }
    }

    pub fn write_index(&self, fsync: bool) -> Result<()> {
        let path = self.index_path();
        sys::write_file_atomic(&path, &self.index_file().encode(), fsync).map_err(Error::io("write index", &path))
    }

    // ---- reads ----

    /// Position of the frame holding `offset` (which must be in this segment), using the
    /// sparse index as a hint: the hit is checked against the frame, and an index that
    /// lies is rebuilt from the log before trying again.
    pub fn position_of(&self, offset: u64, index_interval: usize, dense: bool) -> Result<usize> {
        debug_assert!(offset >= self.base_offset && offset < self.next_offset);
        let (pos, index_lies) = if dense { self.position_via_dense((offset - self.base_offset) as usize) } else { (None, false) };
        if index_lies {
            // A sparse entry the walk passed disagrees with the frames: repair it now, as
            // a read through it would have (verify and time lookups use it).
            self.rebuild_index_in_place(index_interval)?;
        }
        if let Some(pos) = pos {
            return Ok(pos);
        }
        if let Some(pos) = self.position_via_index(offset) {
            return Ok(pos);
        }
        self.rebuild_index_in_place(index_interval)?;
        self.position_via_index(offset).ok_or_else(|| {
            Error::corrupt(&self.path, Some(offset), None, "record not found after rebuilding the index")
        })
    }

    /// The position of record `rel` from the dense index, growing it by walking frames
    /// (header checks) from the last known one if needed: `None` if a frame fails (the
    /// sparse path then reports the problem). Also says whether a sparse index entry in
    /// the walked range disagrees with the frames found.
    fn position_via_dense(&self, rel: usize) -> (Option<usize>, bool) {
        if let Some(&pos) = self.dense.borrow().get(rel) {
            return (Some(pos as usize), false);
        }
        let mut dense = self.dense.borrow_mut();
        let seg = self.bytes();
        let max_payload = self.max_payload_on_disk();
        let from = dense.len();
        let (mut pos, mut at) = match dense.last() {
            None => (SEGMENT_HEADER_LEN, self.base_offset),
            Some(&last) => {
                let at = self.base_offset + dense.len() as u64 - 1;
                match check_frame_header(seg, last as usize, at, max_payload) {
                    Frame::Valid(info) => (info.next_position(last as usize), at + 1),
                    _ => return (None, false),
                }
            }
        };
        while dense.len() <= rel && at < self.next_offset {
            match check_frame_header(seg, pos, at, max_payload) {
                Frame::Valid(info) => {
                    dense.push(pos as u32);
                    pos = info.next_position(pos);
                    at += 1;
                }
                _ => return (None, false),
            }
        }
        let index = self.index.borrow();
        let first = index.partition_point(|e| (e.relative_offset as usize) < from);
        let lies = index[first..]
            .iter()
            .take_while(|e| (e.relative_offset as usize) < dense.len())
            .any(|e| dense[e.relative_offset as usize] != e.position);
        (dense.get(rel).map(|&p| p as usize), lies)
    }

    fn position_via_index(&self, offset: u64) -> Option<usize> {
        let index = self.index.borrow();
        let rel = (offset - self.base_offset) as u32;
        let i = index.partition_point(|e| e.relative_offset <= rel);
        let (mut pos, mut at) = match i {
            0 => (SEGMENT_HEADER_LEN, self.base_offset),
            _ => (index[i - 1].position as usize, self.base_offset + index[i - 1].relative_offset as u64),
        };
        let seg = self.bytes();
        let max_payload = self.max_payload_on_disk();
        while pos < self.end {
            match check_frame_header(seg, pos, at, max_payload) {
                Frame::Valid(info) if at == offset => return Some(pos).filter(|_| info.offset == offset),
                Frame::Valid(info) => {
                    pos = info.next_position(pos);
                    at += 1;
                }
                _ => return None,
            }
        }
        None
    }

    fn rebuild_index_in_place(&self, index_interval: usize) -> Result<()> {
        let mut walk = Walk::from_start(self.base_offset);
        let stop = self.walk(&mut walk, index_interval);
        if walk.position < self.end {
            let (position, offset, reason) = match stop {
                WalkStop::Bad { position, offset, problem } => (position, offset, problem.describe()),
                WalkStop::End => (walk.position, walk.next_offset, "unexpected end of data"),
            };
            return Err(Error::corrupt(&self.path, Some(offset), Some(position as u64), reason));
        }
        *self.index.borrow_mut() = walk.entries;
        Ok(())
    }

    /// The first offset whose timestamp is `>= ts`; the caller knows `max_ts >= ts`.
    /// The entry before the first whose running maximum reaches `ts` bounds the search
    /// from below (every record up to it is older), so at most one index interval of
    /// frames is walked. An index that lies is rebuilt from the log first.
    pub fn first_at_or_after(&self, ts: u64, index_interval: usize) -> Result<u64> {
        if let Some(offset) = self.find_timestamp_via_index(ts) {
            return Ok(offset);
        }
        self.rebuild_index_in_place(index_interval)?;
        self.find_timestamp_via_index(ts).ok_or_else(|| {
            Error::corrupt(&self.path, None, None, format!("no record with timestamp >= {ts} although the segment's maximum is {}", self.max_ts))
        })
    }

    fn find_timestamp_via_index(&self, ts: u64) -> Option<u64> {
        let (mut pos, mut at) = {
            let index = self.index.borrow();
            match index.partition_point(|e| e.max_timestamp < ts) {
                0 => (SEGMENT_HEADER_LEN, self.base_offset),
                j => (index[j - 1].position as usize, self.base_offset + index[j - 1].relative_offset as u64),
            }
        };
        let seg = self.bytes();
        let max_payload = self.max_payload_on_disk();
        while at < self.next_offset {
            match check_frame(seg, pos, at, max_payload) {
                Frame::Valid(info) if info.timestamp >= ts => return Some(at),
                Frame::Valid(info) => {
                    pos = info.next_position(pos);
                    at += 1;
                }
                _ => return None,
            }
        }
        None
    }

    /// Refuses a truncation point inside an atomic batch: keeping part of a batch would
    /// need rewriting a durable record's flags in place, which a crash could tear, and
    /// recovery drops an incomplete batch. Changes nothing.
    pub fn check_cut_point(&self, next: u64) -> Result<()> {
        let mut walk = Walk::from_start(self.base_offset);
        let max_payload = self.max_payload_on_disk();
        let mut continues = false;
        while walk.next_offset < self.next_offset && (walk.next_offset < next || continues) {
            let Frame::Valid(info) = check_frame(self.bytes(), walk.position, walk.next_offset, max_payload) else {
                return Err(Error::corrupt(&self.path, Some(walk.next_offset), Some(walk.position as u64), "record missing or damaged before the truncation point"));
            };
            if walk.next_offset >= next {
                // Inside the batch that `next` splits: find its last record.
                if info.flags & FLAG_BATCH_CONTINUES == 0 {
                    let start = walk.batch_start.map_or(walk.next_offset, |m| m.next_offset);
                    let end = walk.next_offset;
                    return Err(Error::InvalidArgument(format!(
                        "truncate({next}) would split an atomic batch (offsets {start} to {end}); truncate to {start} or to {}",
                        end + 1
                    )));
                }
            }
            continues = info.flags & FLAG_BATCH_CONTINUES != 0;
            walk.advance(self.base_offset, &info, usize::MAX);
        }
        Ok(())
    }

    /// Makes `next` the end of this segment's data (for `Log::truncate`, after
    /// `check_cut_point`): re-walks the kept records to rebuild extent, timestamps and
    /// index. The caller zeroes and syncs the tail afterwards.
    pub fn cut_at(&mut self, next: u64, index_interval: usize) -> Result<()> {
        self.dense.get_mut().clear();
        let mut walk = Walk::from_start(self.base_offset);
        let max_payload = self.max_payload_on_disk();
        while walk.next_offset < next {
            let pos = walk.position;
            match check_frame(self.bytes(), pos, walk.next_offset, max_payload) {
                Frame::Valid(info) => walk.advance(self.base_offset, &info, index_interval),
                Frame::Bad(problem) => {
                    return Err(Error::corrupt(&self.path, Some(walk.next_offset), Some(pos as u64), problem.describe()))
                }
                Frame::End => {
                    return Err(Error::corrupt(&self.path, Some(walk.next_offset), Some(pos as u64), "record missing before end of data"))
                }
            }
        }
        walk.batch_start = None;
        self.adopt_walk(walk);
        self.prefaulted_to = 0;
        Ok(())
    }

    /// Checks the frame at `pos` fully (length bounds, CRC, offset) for a read.
    pub fn checked_frame(&self, pos: usize, offset: u64) -> Result<FrameInfo> {
        match check_frame(self.bytes(), pos, offset, self.max_payload_on_disk()) {
            Frame::Valid(info) => Ok(info),
            Frame::Bad(problem) => Err(Error::corrupt(&self.path, Some(offset), Some(pos as u64), problem.describe())),
            Frame::End => Err(Error::corrupt(&self.path, Some(offset), Some(pos as u64), "record missing before end of data")),
        }
    }

    // ---- writes ----

    #[inline]
    pub fn fits(&self, framed_bytes: usize) -> bool {
        self.end + framed_bytes <= self.size()
    }

    /// Appends one frame at `end`. The caller has checked `fits`.
    #[inline]
    pub fn append(&mut self, payload: &[u8], timestamp: u64, flags: u32, index_interval: usize) -> u64 {
        let offset = self.next_offset;
        let pos = self.end;
        let frame_len = FRAME_HEADER_LEN + payload.len();
        debug_assert!(self.fits(framed_len(payload.len())));
        let bytes = self.map.bytes_mut();
        let len_field = write_frame_body(&mut bytes[pos..pos + frame_len], offset, timestamp, flags, payload);
        // Publish: every other byte of the frame is stored before its length, so a reader
        // that sees a non-zero length (FORMAT.md 2.2) sees the whole frame.
        fence(Ordering::Release);
        put_frame_len(&mut bytes[pos..pos + FRAME_HEADER_LEN], len_field);

        self.min_ts = self.min_ts.min(timestamp);
        self.max_ts = self.max_ts.max(timestamp);
        if index_entry_due(self.last_entry_position, pos, index_interval) {
            self.index.get_mut().push(IndexEntry {
                relative_offset: (offset - self.base_offset) as u32,
                position: pos as u32,
                max_timestamp: self.max_ts,
            });
            self.last_entry_position = Some(pos);
        }
        self.end = framed_len(payload.len()) + pos;
        self.next_offset = offset + 1;
        self.last_frame = Some(pos);
        offset
    }

    /// The next region to prefault, when the writer is within `PREFAULT_AHEAD_BYTES` of
    /// the prefaulted end.
    #[inline]
    pub fn prefault_due(&mut self) -> Option<(usize, usize)> {
        if self.end + PREFAULT_AHEAD_BYTES <= self.prefaulted_to || self.prefaulted_to >= self.size() {
            return None;
        }
        let from = self.prefaulted_to.max(self.end);
        let to = (from + PREFAULT_CHUNK_BYTES).min(self.size());
        self.prefaulted_to = to;
        Some((from, to))
    }

    pub fn mapping(&self) -> &Mapping {
        &self.map
    }

    /// Zeroes everything after the end of data (FORMAT.md 6, step 5) and fsyncs.
    pub fn zero_tail(&mut self) -> Result<()> {
        let (from, to) = (self.end, self.size());
        sys::zero_range(&self.file, &mut self.map, from, to).map_err(Error::io("zero segment tail", &self.path))?;
        sys::fsync(&self.file).map_err(Error::io("fsync segment", &self.path))
    }

    /// Msyncs written data to disk.
    pub fn flush(&self) -> Result<()> {
        self.map.flush_range(0, self.end).map_err(Error::io("msync segment", &self.path))
    }

    /// The open file, for a sync task to `fdatasync` while the writer goes on.
    pub fn shared_file(&self) -> Arc<File> {
        Arc::clone(&self.file)
    }

    /// Position of the last non-zero byte at or after `from`, if any (for damage reports).
    pub fn last_nonzero_at_or_after(&self, from: usize) -> Option<usize> {
        let seg = &self.bytes()[from..];
        let chunk = 4096;
        let mut end = seg.len();
        while end > 0 {
            let start = end.saturating_sub(chunk);
            if seg[start..end].iter().any(|&b| b != 0) {
                let i = seg[start..end].iter().rposition(|&b| b != 0).unwrap();
                return Some(from + start + i);
            }
            end = start;
        }
        None
    }

    /// Counts frames from `pos` that pass length and CRC checks, whatever their offset.
    pub fn count_well_formed_from(&self, mut pos: usize) -> u64 {
        let seg = self.bytes();
        let max_payload = self.max_payload_on_disk();
        let mut n = 0;
        loop {
            let Some(len) = crate::format::frame_len_at(seg, pos) else { return n };
            // Any offset is accepted here: ask for the one the frame claims.
            if len < FRAME_HEADER_LEN || pos + len > seg.len() {
                return n;
            }
            let claimed = u64::from_le_bytes(seg[pos + 8..pos + 16].try_into().unwrap());
            match check_frame(seg, pos, claimed, max_payload) {
                Frame::Valid(info) => {
                    n += 1;
                    pos = info.next_position(pos);
                }
                _ => return n,
            }
        }
    }

}
