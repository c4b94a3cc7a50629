//! Byte layouts from `docs/FORMAT.md`: segment header, record frame, index file.
//! Every offset here is derived from the one before it; `docs/FORMAT.md` is the spec.

use std::mem::size_of;

pub const FORMAT_VERSION: u32 = 1;
pub const ALIGN: usize = 8;

// ---- Segment header (FORMAT.md 2.1) ----
pub const SEGMENT_MAGIC: [u8; 8] = *b"SEGLOG\0S";
const SH_MAGIC: usize = 0;
const SH_VERSION: usize = SH_MAGIC + 8;
const SH_FLAGS: usize = SH_VERSION + size_of::<u32>();
const SH_BASE_OFFSET: usize = SH_FLAGS + size_of::<u32>();
const SH_CREATED_MS: usize = SH_BASE_OFFSET + size_of::<u64>();
const SH_SEGMENT_BYTES: usize = SH_CREATED_MS + size_of::<u64>();
const SH_RESERVED: usize = SH_SEGMENT_BYTES + size_of::<u64>();
const SH_CRC: usize = SH_RESERVED + 20;
pub const SEGMENT_HEADER_LEN: usize = SH_CRC + size_of::<u32>();
const _: () = assert!(SEGMENT_HEADER_LEN == 64);

// ---- Record frame (FORMAT.md 2.2) ----
const F_CRC: usize = 0;
const F_LEN: usize = F_CRC + size_of::<u32>();
/// The CRC covers everything after itself: `[F_LEN, frame_len)`.
const CRC_COVERS_FROM: usize = F_LEN;
const F_OFFSET: usize = F_LEN + size_of::<u32>();
const F_TIMESTAMP: usize = F_OFFSET + size_of::<u64>();
const F_FLAGS: usize = F_TIMESTAMP + size_of::<u64>();
pub const FRAME_HEADER_LEN: usize = F_FLAGS + size_of::<u32>();
const _: () = assert!(FRAME_HEADER_LEN == 28);

pub const FLAG_BATCH_CONTINUES: u32 = 1;
const KNOWN_FLAGS: u32 = FLAG_BATCH_CONTINUES;
pub const MAX_TIMESTAMP: u64 = (1 << 53) - 1;

// ---- Index file (FORMAT.md 4) ----
pub const INDEX_MAGIC: [u8; 8] = *b"SEGLOG\0I";
const IH_MAGIC: usize = 0;
const IH_VERSION: usize = IH_MAGIC + 8;
const IH_COUNT: usize = IH_VERSION + size_of::<u32>();
const IH_BASE_OFFSET: usize = IH_COUNT + size_of::<u32>();
const IH_NEXT_OFFSET: usize = IH_BASE_OFFSET + size_of::<u64>();
const IH_END_POSITION: usize = IH_NEXT_OFFSET + size_of::<u64>();
const IH_RESERVED: usize = IH_END_POSITION + size_of::<u32>();
const IH_MIN_TS: usize = IH_RESERVED + size_of::<u32>();
const IH_MAX_TS: usize = IH_MIN_TS + size_of::<u64>();
const IH_ENTRIES_CRC: usize = IH_MAX_TS + size_of::<u64>();
const IH_CRC: usize = IH_ENTRIES_CRC + size_of::<u32>();
pub const INDEX_HEADER_LEN: usize = IH_CRC + size_of::<u32>();
const _: () = assert!(INDEX_HEADER_LEN == 64);
pub const INDEX_ENTRY_LEN: usize = 16;

#[inline]
pub const fn align_up(n: usize) -> usize {
    (n + ALIGN - 1) & !(ALIGN - 1)
}

/// The space a record with `payload_len` bytes takes in a segment, padding included.
#[inline]
pub const fn framed_len(payload_len: usize) -> usize {
    align_up(FRAME_HEADER_LEN + payload_len)
}

/// Largest payload whose padded frame fits in an empty segment of `segment_bytes`
/// (FORMAT.md 3): the aligned room after the header, minus a frame header.
pub const fn max_payload_for_segment(segment_bytes: usize) -> usize {
    ((segment_bytes - SEGMENT_HEADER_LEN) & !(ALIGN - 1)) - FRAME_HEADER_LEN
}

#[inline]
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}
#[inline]
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}
#[inline]
fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
#[inline]
fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

// ---------------------------------------------------------------------------
// Segment header

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    pub base_offset: u64,
    pub created_ms: u64,
    pub segment_bytes: u64,
}

impl SegmentHeader {
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_LEN] {
        let mut b = [0u8; SEGMENT_HEADER_LEN];
        b[SH_MAGIC..SH_MAGIC + 8].copy_from_slice(&SEGMENT_MAGIC);
        put_u32(&mut b, SH_VERSION, FORMAT_VERSION);
        put_u32(&mut b, SH_FLAGS, 0);
        put_u64(&mut b, SH_BASE_OFFSET, self.base_offset);
        put_u64(&mut b, SH_CREATED_MS, self.created_ms);
        put_u64(&mut b, SH_SEGMENT_BYTES, self.segment_bytes);
        let crc = crc32fast::hash(&b[..SH_CRC]);
        put_u32(&mut b, SH_CRC, crc);
        b
    }

    /// Decodes and checks a segment header; the error is a reason for a corruption report.
    pub fn decode(b: &[u8]) -> Result<Self, &'static str> {
        if b.len() < SEGMENT_HEADER_LEN {
            return Err("segment shorter than its header");
        }
        if b[SH_MAGIC..SH_MAGIC + 8] != SEGMENT_MAGIC {
            return Err("bad segment magic");
        }
        if crc32fast::hash(&b[..SH_CRC]) != u32_at(b, SH_CRC) {
            return Err("segment header checksum mismatch");
        }
        if u32_at(b, SH_VERSION) != FORMAT_VERSION {
            return Err("unsupported segment format version");
        }
        if u32_at(b, SH_FLAGS) != 0 {
            return Err("unknown segment header flags");
        }
        Ok(SegmentHeader {
            base_offset: u64_at(b, SH_BASE_OFFSET),
            created_ms: u64_at(b, SH_CREATED_MS),
            segment_bytes: u64_at(b, SH_SEGMENT_BYTES),
        })
    }
}

// ---------------------------------------------------------------------------
// Record frames

/// What a valid frame header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameInfo {
    pub frame_len: usize,
    pub offset: u64,
    pub timestamp: u64,
    pub flags: u32,
}

impl FrameInfo {
    #[inline]
    pub fn payload_len(&self) -> usize {
        self.frame_len - FRAME_HEADER_LEN
    }
    #[inline]
    pub fn next_position(&self, pos: usize) -> usize {
        align_up(pos + self.frame_len)
    }
}

/// Why a frame is not a valid record (FORMAT.md 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameProblem {
    BadLength,
    BadCrc,
    BadOffset { found: u64 },
    BadHeader,
}

impl FrameProblem {
    pub fn describe(&self) -> &'static str {
        match self {
            FrameProblem::BadLength => "record length out of bounds",
            FrameProblem::BadCrc => "record checksum mismatch",
            FrameProblem::BadOffset { .. } => "record offset is not the next expected offset",
            FrameProblem::BadHeader => "record header has unknown flags or an invalid timestamp",
        }
    }
}

/// Result of looking at the bytes at a frame position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    /// A zero length (or no room for a length): the end of written data.
    End,
    Valid(FrameInfo),
    Bad(FrameProblem),
}

/// Reads only `frame_len` (FORMAT.md 5, step 1); `None` if the segment ends first.
#[inline]
pub fn frame_len_at(seg: &[u8], pos: usize) -> Option<usize> {
    if pos + F_LEN + 4 > seg.len() {
        None
    } else {
        Some(u32_at(seg, pos + F_LEN) as usize)
    }
}

/// Checks the frame at `pos` in segment bytes `seg` against FORMAT.md 5, including the CRC.
/// `max_payload` bounds the length before anything else is trusted.
pub fn check_frame(seg: &[u8], pos: usize, expected_offset: u64, max_payload: usize) -> Frame {
    match check_frame_header(seg, pos, expected_offset, max_payload) {
        Frame::Valid(info) => {
            if frame_crc(&seg[pos..pos + info.frame_len]) != u32_at(seg, pos + F_CRC) {
                return Frame::Bad(FrameProblem::BadCrc);
            }
            Frame::Valid(info)
        }
        other => other,
    }
}

/// Checks length bounds, offset and flags but not the CRC: for walking over frames
/// whose payload the caller does not need (an index walk); the target is then fully checked.
#[inline]
pub fn check_frame_header(seg: &[u8], pos: usize, expected_offset: u64, max_payload: usize) -> Frame {
    let len = match frame_len_at(seg, pos) {
        None | Some(0) => return Frame::End,
        Some(len) => len,
    };
    // Pairs with the writer's release fence before it stores `frame_len` (FORMAT.md 2.3):
    // a reader in another thread or process that saw a non-zero length sees the bytes
    // stored before it. Free on x86; orders the loads on weaker memory models.
    std::sync::atomic::fence(std::sync::atomic::Ordering::Acquire);
    if len < FRAME_HEADER_LEN || len - FRAME_HEADER_LEN > max_payload || pos + len > seg.len() {
        return Frame::Bad(FrameProblem::BadLength);
    }
    let offset = u64_at(seg, pos + F_OFFSET);
    let timestamp = u64_at(seg, pos + F_TIMESTAMP);
    let flags = u32_at(seg, pos + F_FLAGS);
    if offset != expected_offset {
        // A CRC failure explains a wrong offset better than "out of sequence" does.
        if frame_crc(&seg[pos..pos + len]) != u32_at(seg, pos + F_CRC) {
            return Frame::Bad(FrameProblem::BadCrc);
        }
        return Frame::Bad(FrameProblem::BadOffset { found: offset });
    }
    if flags & !KNOWN_FLAGS != 0 || timestamp > MAX_TIMESTAMP {
        if frame_crc(&seg[pos..pos + len]) != u32_at(seg, pos + F_CRC) {
            return Frame::Bad(FrameProblem::BadCrc);
        }
        return Frame::Bad(FrameProblem::BadHeader);
    }
    Frame::Valid(FrameInfo { frame_len: len, offset, timestamp, flags })
}

/// CRC of a whole frame: every byte after the CRC field, `[4, frame_len)`.
#[inline]
pub fn frame_crc(frame: &[u8]) -> u32 {
    crc32fast::hash(&frame[CRC_COVERS_FROM..])
}

/// Writes a complete frame into `dst` (exactly `FRAME_HEADER_LEN + payload.len()` bytes)
/// except `frame_len`, and returns the value `frame_len` must be published with.
/// The caller stores the length last (see `Segment::publish`), so a concurrent reader
/// that sees a non-zero length sees the whole frame.
#[inline]
pub fn write_frame_body(dst: &mut [u8], offset: u64, timestamp: u64, flags: u32, payload: &[u8]) -> u32 {
    let frame_len = (FRAME_HEADER_LEN + payload.len()) as u32;
    debug_assert_eq!(dst.len(), frame_len as usize);
    put_u64(dst, F_OFFSET, offset);
    put_u64(dst, F_TIMESTAMP, timestamp);
    put_u32(dst, F_FLAGS, flags);
    dst[FRAME_HEADER_LEN..].copy_from_slice(payload);
    // The CRC covers the length, which is published later: hash it from a copy.
    let mut h = crc32fast::Hasher::new();
    h.update(&frame_len.to_le_bytes());
    h.update(&dst[F_OFFSET..]);
    put_u32(dst, F_CRC, h.finalize());
    frame_len
}

/// Encodes the length field in place (used by tests and by `Segment::publish`).
#[inline]
pub fn put_frame_len(dst: &mut [u8], frame_len: u32) {
    put_u32(dst, F_LEN, frame_len);
}

/// Payload of a frame known to be valid.
#[inline]
pub fn frame_payload<'a>(seg: &'a [u8], pos: usize, info: &FrameInfo) -> &'a [u8] {
    &seg[pos + FRAME_HEADER_LEN..pos + info.frame_len]
}

// ---------------------------------------------------------------------------
// Index file

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    pub relative_offset: u32,
    pub position: u32,
    /// Running maximum of record timestamps in the segment, up to and including this record.
    pub max_timestamp: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexFile {
    pub base_offset: u64,
    pub next_offset: u64,
    pub end_position: u32,
    pub min_timestamp: u64,
    pub max_timestamp: u64,
    pub entries: Vec<IndexEntry>,
}

impl IndexFile {
    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; INDEX_HEADER_LEN + self.entries.len() * INDEX_ENTRY_LEN];
        for (i, e) in self.entries.iter().enumerate() {
            let at = INDEX_HEADER_LEN + i * INDEX_ENTRY_LEN;
            put_u32(&mut b, at, e.relative_offset);
            put_u32(&mut b, at + 4, e.position);
            put_u64(&mut b, at + 8, e.max_timestamp);
        }
        b[IH_MAGIC..IH_MAGIC + 8].copy_from_slice(&INDEX_MAGIC);
        put_u32(&mut b, IH_VERSION, FORMAT_VERSION);
        put_u32(&mut b, IH_COUNT, self.entries.len() as u32);
        put_u64(&mut b, IH_BASE_OFFSET, self.base_offset);
        put_u64(&mut b, IH_NEXT_OFFSET, self.next_offset);
        put_u32(&mut b, IH_END_POSITION, self.end_position);
        put_u64(&mut b, IH_MIN_TS, self.min_timestamp);
        put_u64(&mut b, IH_MAX_TS, self.max_timestamp);
        let entries_crc = crc32fast::hash(&b[INDEX_HEADER_LEN..]);
        put_u32(&mut b, IH_ENTRIES_CRC, entries_crc);
        let crc = crc32fast::hash(&b[..IH_CRC]);
        put_u32(&mut b, IH_CRC, crc);
        b
    }

    /// Decodes an index file and checks its own consistency (checksums, ordering, bounds
    /// within `segment_bytes`). Agreement with the segment's records is checked by the caller.
    pub fn decode(b: &[u8], base_offset: u64, segment_bytes: usize) -> Result<Self, &'static str> {
        if b.len() < INDEX_HEADER_LEN {
            return Err("index shorter than its header");
        }
        if b[IH_MAGIC..IH_MAGIC + 8] != INDEX_MAGIC {
            return Err("bad index magic");
        }
        if crc32fast::hash(&b[..IH_CRC]) != u32_at(b, IH_CRC) {
            return Err("index header checksum mismatch");
        }
        if u32_at(b, IH_VERSION) != FORMAT_VERSION {
            return Err("unsupported index version");
        }
        if u64_at(b, IH_BASE_OFFSET) != base_offset {
            return Err("index base offset does not match its segment");
        }
        let count = u32_at(b, IH_COUNT) as usize;
        if b.len() != INDEX_HEADER_LEN + count * INDEX_ENTRY_LEN {
            return Err("index length does not match its entry count");
        }
        if crc32fast::hash(&b[INDEX_HEADER_LEN..]) != u32_at(b, IH_ENTRIES_CRC) {
            return Err("index entries checksum mismatch");
        }
        let next_offset = u64_at(b, IH_NEXT_OFFSET);
        let end_position = u32_at(b, IH_END_POSITION);
        if next_offset < base_offset || next_offset - base_offset > u32::MAX as u64 {
            return Err("index next offset out of range");
        }
        if (end_position as usize) < SEGMENT_HEADER_LEN || end_position as usize > segment_bytes {
            return Err("index end position out of range");
        }
        let mut entries = Vec::with_capacity(count);
        for i in 0..count {
            let at = INDEX_HEADER_LEN + i * INDEX_ENTRY_LEN;
            let e = IndexEntry {
                relative_offset: u32_at(b, at),
                position: u32_at(b, at + 4),
                max_timestamp: u64_at(b, at + 8),
            };
            if let Some(prev) = entries.last() {
                let prev: &IndexEntry = prev;
                if e.relative_offset <= prev.relative_offset
                    || e.position <= prev.position
                    || e.max_timestamp < prev.max_timestamp
                {
                    return Err("index entries are not sorted");
                }
            }
            if (e.position as usize) < SEGMENT_HEADER_LEN
                || e.position >= end_position
                || base_offset + e.relative_offset as u64 >= next_offset
            {
                return Err("index entry out of range");
            }
            entries.push(e);
        }
        Ok(IndexFile {
            base_offset,
            next_offset,
            end_position,
            min_timestamp: u64_at(b, IH_MIN_TS),
            max_timestamp: u64_at(b, IH_MAX_TS),
            entries,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_header_round_trip_and_every_bit_flip_detected() {
        let h = SegmentHeader { base_offset: 42, created_ms: 1_700_000_000_000, segment_bytes: 1 << 20 };
        let b = h.encode();
        assert_eq!(SegmentHeader::decode(&b), Ok(h));
        for bit in 0..SEGMENT_HEADER_LEN * 8 {
            let mut c = b;
            c[bit / 8] ^= 1 << (bit % 8);
            assert!(SegmentHeader::decode(&c).is_err(), "flip of bit {bit} undetected");
        }
    }

    fn frame(offset: u64, ts: u64, flags: u32, payload: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; framed_len(payload.len())];
        let n = FRAME_HEADER_LEN + payload.len();
        let len = write_frame_body(&mut b[..n], offset, ts, flags, payload);
        put_frame_len(&mut b, len);
        b
    }

    #[test]
    fn frame_round_trip_including_empty_payload() {
        for payload in [&b""[..], b"x", b"hello world, this is a record"] {
            let b = frame(7, 123, 0, payload);
            match check_frame(&b, 0, 7, 1024) {
                Frame::Valid(info) => {
                    assert_eq!(info.offset, 7);
                    assert_eq!(info.timestamp, 123);
                    assert_eq!(frame_payload(&b, 0, &info), payload);
                    assert_eq!(info.next_position(0), b.len());
                    assert_eq!(b.len() % ALIGN, 0);
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn frame_every_bit_flip_detected() {
        let b = frame(9, 55, FLAG_BATCH_CONTINUES, b"some payload bytes");
        let used = FRAME_HEADER_LEN + 18;
        for bit in 0..used * 8 {
            let mut c = b.clone();
            c[bit / 8] ^= 1 << (bit % 8);
            match check_frame(&c, 0, 9, 1 << 20) {
                Frame::Valid(_) => panic!("flip of bit {bit} undetected"),
                Frame::End | Frame::Bad(_) => {}
            }
        }
    }

    #[test]
    fn frame_length_is_bounded_before_crc() {
        let mut b = frame(0, 0, 0, b"abc");
        put_frame_len(&mut b, u32::MAX);
        assert_eq!(check_frame(&b, 0, 0, 1 << 20), Frame::Bad(FrameProblem::BadLength));
        put_frame_len(&mut b, 5);
        assert_eq!(check_frame(&b, 0, 0, 1 << 20), Frame::Bad(FrameProblem::BadLength));
        let b = frame(0, 0, 0, &[1u8; 100]);
        assert_eq!(check_frame(&b, 0, 0, 99), Frame::Bad(FrameProblem::BadLength));
        assert_eq!(check_frame(&[0u8; 16], 0, 0, 99), Frame::End);
        assert_eq!(check_frame(&[0u8; 3], 0, 0, 99), Frame::End);
    }

    #[test]
    fn frame_offset_out_of_sequence() {
        let b = frame(5, 0, 0, b"abc");
        assert_eq!(check_frame(&b, 0, 6, 100), Frame::Bad(FrameProblem::BadOffset { found: 5 }));
    }

    #[test]
    fn index_round_trip_and_rejections() {
        let idx = IndexFile {
            base_offset: 100,
            next_offset: 150,
            end_position: 9000,
            min_timestamp: 1,
            max_timestamp: 9,
            entries: vec![
                IndexEntry { relative_offset: 0, position: 64, max_timestamp: 1 },
                IndexEntry { relative_offset: 30, position: 4200, max_timestamp: 5 },
            ],
        };
        let b = idx.encode();
        assert_eq!(IndexFile::decode(&b, 100, 1 << 20), Ok(idx.clone()));
        assert!(IndexFile::decode(&b, 101, 1 << 20).is_err());
        assert!(IndexFile::decode(&b[..b.len() - 1], 100, 1 << 20).is_err());
        for bit in 0..b.len() * 8 {
            let mut c = b.clone();
            c[bit / 8] ^= 1 << (bit % 8);
            assert!(IndexFile::decode(&c, 100, 1 << 20).is_err(), "flip of bit {bit} undetected");
        }
        let mut unsorted = idx.clone();
        unsorted.entries.swap(0, 1);
        assert!(IndexFile::decode(&unsorted.encode(), 100, 1 << 20).is_err());
    }
}
