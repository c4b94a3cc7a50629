//! The sparse index (FORMAT.md 4) is a hint. These tests guard against lookups that land
//! on the wrong record (offsets on, between and after index entries, and across segment
//! boundaries, which is where "before the first entry" of a segment lies: its first entry
//! is always its first record), against index files that drift from the spec, and against
//! trusting an index that is missing, truncated, garbage, stale or plainly lying: the log
//! must still open, return the right records and pass `verify`.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::*;
use seglog_core::format::{IndexEntry, IndexFile};
use seglog_core::{Log, Options};

const SEGMENT_BYTES: usize = 16384;
const INTERVAL: usize = 256;

fn opts() -> Options {
    options(SEGMENT_BYTES, INTERVAL)
}

/// Index entries FORMAT.md 4.2 prescribes for the frames of one segment: the first record,
/// then the first record starting at least `interval` bytes after the previous entry.
fn expected_entries(frames: &[FramePos], base: u64, interval: usize) -> Vec<IndexEntry> {
    let mut out = Vec::new();
    let mut last: Option<usize> = None;
    let mut max_ts = 0;
    for f in frames {
        max_ts = max_ts.max(f.timestamp);
        let due = match last {
            None => true,
            Some(l) => f.start - l >= interval,
        };
        if due {
            out.push(IndexEntry {
                relative_offset: (f.offset - base) as u32,
                position: f.start as u32,
                max_timestamp: max_ts,
            });
            last = Some(f.start);
        }
    }
    out
}

/// Appends records of 20..300 bytes with non-monotonic timestamps until the log has
/// `segments` segments, and returns what was written.
fn fill(log: &mut Log, segments: usize, seed: u64) -> Vec<(Vec<u8>, u64)> {
    fill_active(log, segments, 20, seed)
}

/// `fill`, then more until the active segment holds `active_records`.
fn fill_active(log: &mut Log, segments: usize, active_records: u64, seed: u64) -> Vec<(Vec<u8>, u64)> {
    let mut rng = Rng::new(seed);
    let mut expected = Vec::new();
    while log.segments().len() < segments || log.segments().last().unwrap().records < active_records {
        let o = expected.len() as u64;
        let data = payload(o ^ seed, 20 + rng.below(280) as usize);
        let t = 1_000_000 + rng.below(10_000);
        assert_eq!(log.append(&data, Some(t)).unwrap(), o);
        expected.push((data, t));
    }
    expected
}

/// Reads every offset in a scrambled order, then backwards.
#[track_caller]
fn read_all_scrambled(log: &Log, expected: &[(Vec<u8>, u64)], seed: u64) {
    let n = expected.len() as u64;
    let mut order: Vec<u64> = (0..n).collect();
    let mut rng = Rng::new(seed);
    for i in (1..order.len()).rev() {
        order.swap(i, rng.below(i as u64 + 1) as usize);
    }
    order.extend((0..n).rev());
    for o in order {
        let rec = log.read(o).unwrap_or_else(|e| panic!("read({o}): {e}")).unwrap();
        assert_eq!(rec.offset, o);
        assert!(rec.payload == &expected[o as usize].0[..], "read({o}) returned another record's payload");
        assert_eq!(rec.timestamp, expected[o as usize].1, "read({o}) timestamp");
    }
    assert!(log.read(n).unwrap().is_none());
}

#[test]
fn index_files_follow_format_md_4() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), &opts()).unwrap();
    let expected = fill(&mut log, 3, 1);
    let live = log.segments();
    log.close().unwrap();

    for seg in &live {
        let frames = frames_of_file(&seg.path);
        assert_eq!(frames.len() as u64, seg.records);
        let bytes = fs::read(idx_path(dir.path(), seg.base_offset)).unwrap();
        let idx = IndexFile::decode(&bytes, seg.base_offset, SEGMENT_BYTES).expect("index file decodes");
        let want = expected_entries(&frames, seg.base_offset, INTERVAL);
        assert_eq!(idx.entries, want, "entries of segment {}", seg.base_offset);
        assert!(idx.entries.len() >= 10, "a segment should have many entries");
        assert_eq!(seg.index_entries, want.len(), "segments()[..].index_entries");
        assert_eq!(idx.next_offset, seg.next_offset);
        assert_eq!(idx.end_position as u64, seg.data_bytes);
        let last = frames.last().unwrap();
        assert_eq!(
            idx.end_position as usize,
            (last.end() + 7) & !7,
            "end_position is the aligned end of the last frame"
        );
        let ts: Vec<u64> = frames.iter().map(|f| f.timestamp).collect();
        assert_eq!((idx.min_timestamp, idx.max_timestamp), (*ts.iter().min().unwrap(), *ts.iter().max().unwrap()));
        assert_eq!(seg.timestamps, Some((idx.min_timestamp, idx.max_timestamp)));
        // The file is exactly what the public encoder produces for these fields.
        assert_eq!(idx.encode(), bytes);
    }

    let log = Log::open(dir.path(), &opts()).unwrap();
    assert_eq!(log.segments(), live, "segments() after reopen");
    assert_eq!(log.recovery_report().indexes_rebuilt, Vec::<PathBuf>::new(), "valid indexes were rebuilt");
    read_all_scrambled(&log, &expected, 2);
}

#[test]
fn lookups_on_between_and_after_index_entries_return_the_right_record() {
    let dir = tempfile::tempdir().unwrap();
    let opts = options(65536, 512);
    let mut log = Log::open(dir.path(), &opts).unwrap();
    let expected = fill_active(&mut log, 2, 200, 3);
    // While open: the active segment is looked up through its in-memory index.
    read_all_scrambled(&log, &expected, 4);
    log.close().unwrap();

    let log = Log::open(dir.path(), &opts).unwrap();
    for seg in log.segments() {
        let bytes = fs::read(idx_path(dir.path(), seg.base_offset)).unwrap();
        let idx = IndexFile::decode(&bytes, seg.base_offset, 65536).unwrap();
        let rels: Vec<u64> = idx.entries.iter().map(|e| e.relative_offset as u64).collect();
        assert!(rels.len() >= 40, "segment {} has only {} entries", seg.base_offset, rels.len());
        assert_eq!(rels[0], 0, "the first entry is the first record");
        let on: Vec<u64> = rels.iter().map(|r| seg.base_offset + r).collect();
        let between: Vec<u64> = rels.windows(2).flat_map(|w| w[0] + 1..w[1]).map(|r| seg.base_offset + r).collect();
        let after: Vec<u64> = (seg.base_offset + rels.last().unwrap() + 1..seg.next_offset).collect();
        assert!(
            !between.is_empty() && !after.is_empty(),
            "segment {}: no records between or after entries",
            seg.base_offset
        );
        for (what, offsets) in [("on an entry", &on), ("between entries", &between), ("after the last entry", &after)] {
            for &o in offsets {
                let rec = log.read(o).unwrap().unwrap();
                assert!(rec.payload == &expected[o as usize].0[..], "offset {o} {what} of segment {}", seg.base_offset);
            }
        }
        // The record just before a segment's first entry lives in the previous segment.
        if seg.base_offset > 0 {
            let o = seg.base_offset - 1;
            assert!(log.read(o).unwrap().unwrap().payload == &expected[o as usize].0[..], "offset {o} before segment");
        }
    }
    read_all_scrambled(&log, &expected, 5);
}

/// A pristine closed log of three segments (two sealed, one active) and its content.
struct Pristine {
    snap: Snapshot,
    expected: Vec<(Vec<u8>, u64)>,
    bases: Vec<u64>,
}

fn pristine() -> Pristine {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), &opts()).unwrap();
    let expected = fill(&mut log, 3, 7);
    let bases = log.segments().iter().map(|s| s.base_offset).collect();
    log.close().unwrap();
    let snap = snapshot(dir.path());
    Pristine { snap, expected, bases }
}

/// Opens `snap` in a fresh directory and checks every read, `verify`, and, after close,
/// that the damaged index was rewritten to exactly the pristine one.
fn check_recovers(
    snap: &Snapshot,
    pristine_snap: &Snapshot,
    expected: &[(Vec<u8>, u64)],
    base: u64,
    what: &str,
    expect_reported: bool,
) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    restore(snap, &dir);
    let mut log = Log::open(&dir, &opts()).unwrap_or_else(|e| panic!("{what}: open failed: {e}"));
    assert_eq!(log.recovery_report().truncation, None, "{what}: nothing may be cut");
    if expect_reported {
        assert!(
            log.recovery_report().indexes_rebuilt.contains(&idx_path(&dir, base)),
            "{what}: rebuilt index not reported: {:?}",
            log.recovery_report().indexes_rebuilt
        );
    }
    assert_eq!(log.next_offset(), expected.len() as u64, "{what}");
    read_all_scrambled(&log, expected, base);
    let report = log.verify().unwrap();
    assert_eq!(report.problem, None, "{what}: verify");
    assert_eq!(report.records, expected.len() as u64, "{what}");
    for seg in log.segments() {
        let frames = frames_of_file(&seg.path);
        assert_eq!(
            seg.index_entries,
            expected_entries(&frames, seg.base_offset, INTERVAL).len(),
            "{what}: segment {}",
            seg.base_offset
        );
        let ts: Vec<u64> = frames.iter().map(|f| f.timestamp).collect();
        assert_eq!(
            seg.timestamps,
            Some((*ts.iter().min().unwrap(), *ts.iter().max().unwrap())),
            "{what}: timestamps of segment {}",
            seg.base_offset
        );
    }
    log.close().unwrap();
    assert_eq!(
        fs::read(idx_path(&dir, base)).unwrap(),
        file_bytes(pristine_snap, &idx_name(base)),
        "{what}: index file after close"
    );
    let log = Log::open(&dir, &opts()).unwrap();
    assert_eq!(log.recovery_report().indexes_rebuilt, Vec::<PathBuf>::new(), "{what}: second reopen");
    read_all_scrambled(&log, expected, base + 1);
}

#[test]
fn missing_truncated_or_garbage_index_files_are_rebuilt() {
    let Pristine { snap, expected, bases } = pristine();
    let targets = [("sealed", bases[1]), ("active", *bases.last().unwrap())];
    for (kind, base) in targets {
        let name = idx_name(base);
        let len = file_bytes(&snap, &name).len();
        let mut rng = Rng::new(base);
        let garbage_same_len = rng.bytes(len);
        let garbage_short = rng.bytes(100);
        type Edit = Box<dyn Fn(&mut Vec<u8>)>;
        let damages: Vec<(&str, Edit)> = vec![
            ("emptied", Box::new(|b: &mut Vec<u8>| b.clear())),
            ("cut to 10 bytes", Box::new(|b: &mut Vec<u8>| b.truncate(10))),
            ("cut to its header", Box::new(|b: &mut Vec<u8>| b.truncate(64))),
            ("cut by one byte", Box::new(|b: &mut Vec<u8>| b.truncate(b.len() - 1))),
            ("cut by one entry", Box::new(|b: &mut Vec<u8>| b.truncate(b.len() - 16))),
            ("zero-filled", Box::new(|b: &mut Vec<u8>| b.fill(0))),
            ("garbage of its length", Box::new(move |b: &mut Vec<u8>| b.copy_from_slice(&garbage_same_len))),
            ("100 bytes of garbage", Box::new(move |b: &mut Vec<u8>| *b = garbage_short.clone())),
            ("one more entry of garbage", Box::new(|b: &mut Vec<u8>| b.extend_from_slice(&[0xA5; 16]))),
        ];
        for (damage, edit) in &damages {
            let damaged = edited(&snap, &name, |b| edit(b));
            check_recovers(&damaged, &snap, &expected, base, &format!("{kind} index {damage}"), true);
        }
        let deleted: Snapshot = snap.iter().filter(|(n, _)| *n != name).cloned().collect();
        check_recovers(&deleted, &snap, &expected, base, &format!("{kind} index deleted"), true);
    }
}

/// The normal state after a crash: the active segment's index is the one written at an
/// earlier close and covers only a prefix of its records.
#[test]
fn a_stale_active_index_from_an_earlier_close_is_extended() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), &opts()).unwrap();
    let mut expected = fill(&mut log, 2, 9);
    let base = log.segments().last().unwrap().base_offset;
    log.close().unwrap();
    let stale = fs::read(idx_path(dir.path(), base)).unwrap();

    let mut log = Log::open(dir.path(), &opts()).unwrap();
    for i in 0..25u64 {
        let data = payload(900 + i, 150);
        log.append(&data, Some(5 + i)).unwrap();
        expected.push((data, 5 + i));
    }
    assert_eq!(log.segments().last().unwrap().base_offset, base, "the extra records stay in the same segment");
    log.close().unwrap();
    let pristine_snap = snapshot(dir.path());
    let snap = edited(&pristine_snap, &idx_name(base), |b| *b = stale.clone());
    check_recovers(&snap, &pristine_snap, &expected, base, "stale active index", false);
}

/// Re-encodes the index of segment `base` in `snap` after `change`.
fn lie(snap: &Snapshot, base: u64, change: impl FnOnce(&mut IndexFile, &[FramePos])) -> Snapshot {
    let frames = frames_in(file_bytes(snap, &seg_name(base)));
    let mut idx = IndexFile::decode(file_bytes(snap, &idx_name(base)), base, SEGMENT_BYTES).unwrap();
    change(&mut idx, &frames);
    let bytes = idx.encode();
    edited(snap, &idx_name(base), move |b| *b = bytes)
}

/// Position of the frame after the one at `pos`, or before it for the last frame.
fn neighbour_frame(frames: &[FramePos], pos: u32) -> u32 {
    let i = frames.iter().position(|f| f.start == pos as usize).unwrap();
    frames.get(i + 1).unwrap_or(&frames[i - 1]).start as u32
}

#[test]
fn structurally_valid_but_lying_indexes_do_not_misdirect_reads() {
    let Pristine { snap, expected, bases } = pristine();
    for (kind, base) in [("sealed", bases[1]), ("active", *bases.last().unwrap())] {
        let cases: Vec<(&str, Snapshot)> = vec![
            (
                "a middle entry shifted by 8 bytes",
                lie(&snap, base, |idx, _| {
                    let m = idx.entries.len() / 2;
                    idx.entries[m].position += 8;
                }),
            ),
            (
                "a middle entry pointing at the next frame",
                lie(&snap, base, |idx, frames| {
                    let m = idx.entries.len() / 2;
                    idx.entries[m].position = neighbour_frame(frames, idx.entries[m].position);
                }),
            ),
            (
                "the last entry pointing at a neighbouring frame",
                lie(&snap, base, |idx, frames| {
                    let last = idx.entries.len() - 1;
                    idx.entries[last].position = neighbour_frame(frames, idx.entries[last].position);
                }),
            ),
            (
                "every position shifted by 8 bytes",
                lie(&snap, base, |idx, _| {
                    for e in &mut idx.entries {
                        e.position += 8;
                    }
                }),
            ),
            (
                "a middle entry claiming the next offset",
                lie(&snap, base, |idx, _| {
                    let m = (1..idx.entries.len() - 1)
                        .find(|&m| idx.entries[m].relative_offset + 1 < idx.entries[m + 1].relative_offset)
                        .expect("an entry with room after it");
                    idx.entries[m].relative_offset += 1;
                }),
            ),
            (
                "an index cut back consistently to half the segment",
                lie(&snap, base, |idx, frames| {
                    let keep = idx.entries.len() / 2;
                    idx.entries.truncate(keep);
                    let last = idx.entries[keep - 1];
                    let f = frames.iter().find(|f| f.start == last.position as usize).unwrap();
                    let f2 = frames[frames.iter().position(|g| g == f).unwrap() + 1];
                    idx.next_offset = f2.offset + 1;
                    idx.end_position = ((f2.end() + 7) & !7) as u32;
                    idx.max_timestamp = idx.max_timestamp.max(f2.timestamp);
                }),
            ),
        ];
        for (lie_name, damaged) in &cases {
            let what = format!("{kind} index with {lie_name}");
            let tmp = tempfile::tempdir().unwrap();
            let dir = tmp.path().join("log");
            restore(damaged, &dir);
            let log = Log::open(&dir, &opts()).unwrap_or_else(|e| panic!("{what}: open failed: {e}"));
            assert_eq!(log.recovery_report().truncation, None, "{what}: nothing may be cut");
            assert_eq!(log.next_offset(), expected.len() as u64, "{what}");
            read_all_scrambled(&log, &expected, base);
            assert_eq!(log.verify().unwrap().problem, None, "{what}: verify after reads");
            check_segment_timestamps(&log, &what);
            drop(log);
            let log = Log::open(&dir, &opts()).unwrap();
            read_all_scrambled(&log, &expected, base + 1);
        }
    }
}

#[track_caller]
fn check_segment_timestamps(log: &Log, what: &str) {
    for seg in log.segments() {
        let ts: Vec<u64> = frames_of_file(&seg.path).iter().map(|f| f.timestamp).collect();
        let want = ts.iter().min().zip(ts.iter().max()).map(|(a, b)| (*a, *b));
        assert_eq!(seg.timestamps, want, "{what}: timestamps of segment {}", seg.base_offset);
    }
}

/// Writes a single-segment log of `count` records whose sizes come from `seed`.
fn one_segment_log(dir: &Path, count: usize, seed: u64, ts_base: u64) -> Vec<(Vec<u8>, u64)> {
    let mut log = Log::open(dir, &opts()).unwrap();
    let mut rng = Rng::new(seed);
    let mut expected = Vec::new();
    for i in 0..count as u64 {
        let data = payload(seed * 1000 + i, 10 + rng.below(150) as usize);
        log.append(&data, Some(ts_base + i)).unwrap();
        expected.push((data, ts_base + i));
    }
    assert_eq!(log.segments().len(), 1);
    log.close().unwrap();
    expected
}

/// Our one-segment log of 60 records with another one-segment log's index file, valid in
/// itself (same base offset, as many records) but describing records of other sizes and
/// older timestamps.
fn active_segment_with_foreign_index() -> (tempfile::TempDir, Vec<(Vec<u8>, u64)>) {
    let ours = tempfile::tempdir().unwrap();
    let theirs = tempfile::tempdir().unwrap();
    let expected = one_segment_log(ours.path(), 60, 1, 50_000);
    one_segment_log(theirs.path(), 60, 2, 10);
    fs::copy(idx_path(theirs.path(), 0), idx_path(ours.path(), 0)).unwrap();
    (ours, expected)
}

#[test]
fn a_valid_index_from_another_log_does_not_misdirect_reads() {
    let (ours, expected) = active_segment_with_foreign_index();
    let log = Log::open(ours.path(), &opts()).unwrap();
    assert_eq!(log.recovery_report().truncation, None);
    read_all_scrambled(&log, &expected, 1);
    assert_eq!(log.verify().unwrap().problem, None);
    drop(log);

    // Sealed segment: the first segment of two multi-segment logs.
    let ours = tempfile::tempdir().unwrap();
    let theirs = tempfile::tempdir().unwrap();
    let mut log = Log::open(ours.path(), &opts()).unwrap();
    let expected = fill(&mut log, 3, 11);
    log.close().unwrap();
    let mut log = Log::open(theirs.path(), &opts()).unwrap();
    fill(&mut log, 3, 12);
    log.close().unwrap();
    fs::copy(idx_path(theirs.path(), 0), idx_path(ours.path(), 0)).unwrap();
    let log = Log::open(ours.path(), &opts()).unwrap();
    assert_eq!(log.recovery_report().truncation, None);
    read_all_scrambled(&log, &expected, 2);
    assert_eq!(log.verify().unwrap().problem, None);
    check_segment_timestamps(&log, "sealed segment with a foreign index");
}

/// Recovery walks the whole active segment when no later index entry checks out, so it
/// knows the segment's smallest timestamp and must not take the index file's word for it.
#[test]
fn a_foreign_index_does_not_change_the_active_segment_timestamps() {
    let (ours, _) = active_segment_with_foreign_index();
    let log = Log::open(ours.path(), &opts()).unwrap();
    check_segment_timestamps(&log, "active segment with a foreign index");
}
