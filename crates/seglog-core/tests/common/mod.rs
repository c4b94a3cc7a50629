//! Helpers shared by the integration tests: options, deterministic payloads, frame
//! positions found by walking the bytes on disk as `docs/FORMAT.md` 2.2 describes them,
//! and directory snapshots so one pristine log can be damaged in many ways.
#![allow(dead_code)]

use std::fmt::Debug;
use std::fs;
use std::path::{Path, PathBuf};

use seglog_core::format::{self, Frame, FRAME_HEADER_LEN, SEGMENT_HEADER_LEN};
use seglog_core::{Error, Log, Options};

pub fn options(segment_bytes: usize, index_interval_bytes: usize) -> Options {
    Options {
        segment_bytes: Some(segment_bytes),
        index_interval_bytes: Some(index_interval_bytes),
        max_record_bytes: None,
        ..Options::default()
    }
}

/// SplitMix64: a small deterministic generator, so every failure reproduces.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next_u64() as u8).collect()
    }

    /// Bytes that are never zero, so a "garbage" tail can never read as a clean end.
    pub fn nonzero_bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| (self.below(255) + 1) as u8).collect()
    }
}

/// A payload that differs for every (seed, length), so a record read from the wrong
/// place cannot pass for the right one.
pub fn payload(seed: u64, len: usize) -> Vec<u8> {
    Rng::new(seed.wrapping_mul(0x1000_0000_01B3) ^ len as u64).bytes(len)
}

pub fn seg_name(base: u64) -> String {
    format!("{base:020}.seg")
}

pub fn idx_name(base: u64) -> String {
    format!("{base:020}.idx")
}

pub fn seg_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(seg_name(base))
}

pub fn idx_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(idx_name(base))
}

/// Base offsets of the segment files in `dir`, parsed from their names (FORMAT.md 1).
pub fn segment_bases(dir: &Path) -> Vec<u64> {
    let mut bases: Vec<u64> = fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            let stem = name.strip_suffix(".seg")?;
            (stem.len() == 20 && stem.bytes().all(|b| b.is_ascii_digit())).then(|| stem.parse().unwrap())
        })
        .collect();
    bases.sort_unstable();
    bases
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// Byte position of `frame_len` within a frame header (FORMAT.md 2.2), found through the
/// public encoder so these helpers and the engine can never disagree about it.
pub fn frame_len_field() -> usize {
    let marker = 0xA1B2_C3D4u32;
    let mut probe = [0u8; FRAME_HEADER_LEN];
    format::put_frame_len(&mut probe, marker);
    probe.windows(4).position(|w| w == marker.to_le_bytes()).expect("put_frame_len wrote the length")
}

/// The `frame_len` field of the frame at `start`.
pub fn frame_len_of(seg: &[u8], start: usize) -> u32 {
    u32_at(seg, start + frame_len_field())
}

/// A frame found on disk (FORMAT.md 2.2), read with raw little-endian loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FramePos {
    pub offset: u64,
    pub timestamp: u64,
    pub flags: u32,
    /// Byte position of the frame in its segment file.
    pub start: usize,
    pub frame_len: usize,
}

impl FramePos {
    /// End of the frame's bytes, padding excluded.
    pub fn end(&self) -> usize {
        self.start + self.frame_len
    }
}

/// Walks a segment's frames by `frame_len` alone, from byte 64, each next frame at the
/// 8-aligned end of the one before, until a zero length or the end of the file.
pub fn frames_in(seg: &[u8]) -> Vec<FramePos> {
    let mut out = Vec::new();
    let len_at = frame_len_field();
    let mut pos = SEGMENT_HEADER_LEN;
    while pos + len_at + 4 <= seg.len() {
        let frame_len = u32_at(seg, pos + len_at) as usize;
        if frame_len == 0 || pos + frame_len > seg.len() {
            break;
        }
        out.push(FramePos {
            offset: u64_at(seg, pos + 8),
            timestamp: u64_at(seg, pos + 16),
            flags: u32_at(seg, pos + 24),
            start: pos,
            frame_len,
        });
        pos = (pos + frame_len + 7) & !7;
    }
    out
}

pub fn frames_of_file(path: &Path) -> Vec<FramePos> {
    frames_in(&fs::read(path).unwrap())
}

/// The segment base and frame holding `offset` in a closed log directory.
pub fn locate_frame(dir: &Path, offset: u64) -> (u64, FramePos) {
    let bases = segment_bases(dir);
    let base = *bases.iter().rev().find(|&&b| b <= offset).expect("offset below the first segment");
    let frame = frames_of_file(&seg_path(dir, base))
        .into_iter()
        .find(|f| f.offset == offset)
        .unwrap_or_else(|| panic!("offset {offset} not found in segment {base}"));
    (base, frame)
}

/// Every regular file of a log directory, by name.
pub type Snapshot = Vec<(String, Vec<u8>)>;

pub fn snapshot(dir: &Path) -> Snapshot {
    let mut files: Snapshot = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_file())
        .map(|e| (e.file_name().into_string().unwrap(), fs::read(e.path()).unwrap()))
        .collect();
    files.sort();
    files
}

/// Makes `dir` hold exactly the files of `snap`.
pub fn restore(snap: &Snapshot, dir: &Path) {
    if dir.exists() {
        fs::remove_dir_all(dir).unwrap();
    }
    fs::create_dir_all(dir).unwrap();
    for (name, bytes) in snap {
        fs::write(dir.join(name), bytes).unwrap();
    }
}

/// Applies `edit` to the bytes of file `name` in `snap`, returning the edited copy.
pub fn edited(snap: &Snapshot, name: &str, edit: impl FnOnce(&mut Vec<u8>)) -> Snapshot {
    let mut out = snap.clone();
    let file = out.iter_mut().find(|(n, _)| n == name).unwrap_or_else(|| panic!("no file {name} in snapshot"));
    edit(&mut file.1);
    out
}

pub fn file_bytes<'a>(snap: &'a Snapshot, name: &str) -> &'a [u8] {
    &snap.iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("no file {name} in snapshot")).1
}

/// Unwraps the error of `result` and checks its code.
#[track_caller]
pub fn expect_code<T: Debug>(result: Result<T, Error>, code: &str) -> Error {
    match result {
        Ok(v) => panic!("expected {code}, got Ok({v:?})"),
        Err(e) => {
            assert_eq!(e.code(), code, "wrong error: {e}");
            e
        }
    }
}

/// Checks that the log holds exactly `expected` (payload, timestamp) from offset 0.
#[track_caller]
pub fn assert_records(log: &Log, expected: &[(Vec<u8>, u64)]) {
    assert_eq!(log.next_offset(), expected.len() as u64, "next_offset");
    for (offset, (payload, timestamp)) in expected.iter().enumerate() {
        let offset = offset as u64;
        let rec = log
            .read(offset)
            .unwrap_or_else(|e| panic!("read({offset}) failed: {e}"))
            .unwrap_or_else(|| panic!("read({offset}) returned None"));
        assert_eq!(rec.offset, offset);
        assert!(rec.payload == &payload[..], "payload of offset {offset} differs");
        assert_eq!(rec.timestamp, *timestamp, "timestamp of offset {offset}");
    }
    assert!(log.read(expected.len() as u64).unwrap().is_none(), "a record past next_offset");
}

/// A record parsed back from bytes copied by `read_frames_into`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopiedRecord {
    pub offset: u64,
    pub timestamp: u64,
    pub flags: u32,
    pub payload: Vec<u8>,
}

/// Parses frames laid back to back, each 8-byte aligned (FORMAT.md 2.2), with the public
/// `format` checks (length bounds, CRC, dense offsets from `first_offset`). Every byte of
/// `buf` must belong to a frame or its padding.
#[track_caller]
pub fn parse_copied_frames(buf: &[u8], first_offset: u64) -> Vec<CopiedRecord> {
    let mut out = Vec::new();
    let mut pos = 0;
    let mut offset = first_offset;
    while pos < buf.len() {
        assert_eq!(pos % format::ALIGN, 0, "frame at {pos} not aligned");
        match format::check_frame(buf, pos, offset, buf.len()) {
            Frame::Valid(info) => {
                let end = info.next_position(pos);
                assert!(end <= buf.len(), "padding of the frame at {pos} not copied");
                assert!(buf[pos + info.frame_len..end].iter().all(|&b| b == 0), "padding not zero");
                out.push(CopiedRecord {
                    offset: info.offset,
                    timestamp: info.timestamp,
                    flags: info.flags,
                    payload: format::frame_payload(buf, pos, &info).to_vec(),
                });
                pos = end;
                offset += 1;
            }
            other => panic!("copied frame at byte {pos} (offset {offset}) is not valid: {other:?}"),
        }
    }
    out
}

/// Position of the last non-zero byte of `bytes` at or after `from`.
pub fn last_nonzero_from(bytes: &[u8], from: usize) -> Option<usize> {
    bytes[from..].iter().rposition(|&b| b != 0).map(|i| from + i)
}
