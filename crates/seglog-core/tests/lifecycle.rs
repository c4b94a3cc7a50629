//! The log's lifecycle (FORMAT.md 8 and 9): removing a prefix (`delete_before`,
//! retention by bytes, age and record count, held back by cursors, archiving), truncating
//! a suffix, seeking by time, durable consumer cursors, and what a crash in the middle
//! of any of them leaves behind. Guards against removing too much or too little, leaving
//! gaps, orphan files or unreclaimed space, resurrecting truncated records, a time lookup
//! that disagrees with a linear scan, and cursor files that are torn or silently wrong.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use common::*;
use common::Rng;
use proptest::prelude::*;
use seglog_core::format::{framed_len, MAX_TIMESTAMP, SEGMENT_HEADER_LEN};
use seglog_core::{now_ms, Log, Options, RemovedSegment, Retention};

const SEG: usize = 4096;
const INTERVAL: usize = 128;
/// Every record of these tests has this payload size unless said otherwise, so each
/// segment holds exactly `PER_SEG` records and segment boundaries are known in advance.
const LEN: usize = 100;
const PER_SEG: u64 = ((SEG - SEGMENT_HEADER_LEN) / framed_len(LEN)) as u64;
const TS_BASE: u64 = 1_600_000_000_000;
const DAY: u64 = 86_400_000;

fn opts() -> Options {
    options(SEG, INTERVAL)
}

fn with_retention(retention: Retention) -> Options {
    Options { retention, ..opts() }
}

/// What the log holds, by offset from 0: (payload, timestamp). Offsets below the log's
/// first offset are kept here too, so later checks can tell them apart.
type Model = Vec<(Vec<u8>, u64)>;

/// The payload of `offset` written in `generation` (a truncation starts a new one, so
/// re-appended offsets get different bytes than the ones they replace).
fn payload_of(offset: u64, generation: u64, len: usize) -> Vec<u8> {
    payload(offset.wrapping_mul(1_000_003) ^ generation.wrapping_mul(0x9E37), len)
}

fn append_one(log: &mut Log, model: &mut Model, generation: u64, timestamp: u64) -> u64 {
    let o = model.len() as u64;
    let p = payload_of(o, generation, LEN);
    assert_eq!(log.append(&p, Some(timestamp)).unwrap(), o);
    model.push((p, timestamp));
    o
}

/// Appends `n` records with timestamps `ts(offset)`.
fn append_n(log: &mut Log, model: &mut Model, n: u64, ts: impl Fn(u64) -> u64) {
    for _ in 0..n {
        let o = model.len() as u64;
        append_one(log, model, 0, ts(o));
    }
}

fn default_ts(o: u64) -> u64 {
    TS_BASE + o
}

/// A log of `sealed` full segments plus `active` records in the active segment.
fn build(dir: &Path, sealed: u64, active: u64) -> Model {
    let mut log = Log::open(dir, &opts()).unwrap();
    let mut model = Model::new();
    append_n(&mut log, &mut model, sealed * PER_SEG + active, default_ts);
    let bases: Vec<u64> = log.segments().iter().map(|s| s.base_offset).collect();
    let expected: Vec<u64> = (0..=sealed).map(|i| i * PER_SEG).filter(|&b| b < model.len() as u64 || b == 0).collect();
    assert_eq!(bases, expected, "test setup: segments hold {PER_SEG} records each");
    log.close().unwrap();
    model
}

/// Checks everything a reader of the log relies on: first/next offset, every record
/// from `first` on byte for byte, reads below `first` failing with OFFSET_OUT_OF_RANGE,
/// segments contiguous, and `verify`.
#[track_caller]
fn check_log(log: &Log, model: &Model, first: u64) {
    assert_eq!(log.first_offset(), first, "first_offset");
    assert_eq!(log.next_offset(), model.len() as u64, "next_offset");
    for o in first..model.len() as u64 {
        let r = log.read(o).unwrap_or_else(|e| panic!("read({o}): {e}")).unwrap_or_else(|| panic!("read({o}) is None"));
        assert!(r.payload == &model[o as usize].0[..], "payload of offset {o}");
        assert_eq!(r.timestamp, model[o as usize].1, "timestamp of offset {o}");
    }
    assert!(log.read(model.len() as u64).unwrap().is_none());
    if first > 0 {
        expect_code(log.read(first - 1), "ERR_SEGLOG_OFFSET_OUT_OF_RANGE");
        expect_code(log.read(0), "ERR_SEGLOG_OFFSET_OUT_OF_RANGE");
        let mut buf = vec![0u8; 1 << 16];
        expect_code(log.read_frames_into(first - 1, 10, 1 << 16, &mut buf), "ERR_SEGLOG_OFFSET_OUT_OF_RANGE");
    }
    let iterated: Vec<u64> = log.iter(first, u64::MAX).map(|r| r.unwrap().offset).collect();
    assert_eq!(iterated, (first..model.len() as u64).collect::<Vec<_>>(), "iter");
    let segs = log.segments();
    assert_eq!(segs.first().unwrap().base_offset, first);
    for w in segs.windows(2) {
        assert_eq!(w[0].next_offset, w[1].base_offset, "segments contiguous");
    }
    assert_eq!(segs.last().unwrap().next_offset, model.len() as u64);
    let report = log.verify().unwrap();
    assert!(report.problem.is_none(), "verify: {:?}", report.problem);
    assert_eq!(report.first_offset, first);
    assert_eq!(report.records, model.len() as u64 - first);
}

/// Names of the files directly in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    v.sort();
    v
}

/// No `*.tmp` anywhere, every `.idx` has its `.seg`, and the segment files on disk are
/// exactly the log's segments.
#[track_caller]
fn check_files(log: &Log) {
    let dir = log.dir();
    let files = names(dir);
    for f in &files {
        assert!(!f.ends_with(".tmp"), "leftover temp file {f}");
        if let Some(stem) = f.strip_suffix(".idx") {
            assert!(files.contains(&format!("{stem}.seg")), "orphan index {f}");
        }
    }
    let cursors = dir.join("cursors");
    if cursors.exists() {
        for f in names(&cursors) {
            assert!(!f.ends_with(".tmp"), "leftover cursor temp file {f}");
        }
    }
    let bases: Vec<u64> = log.segments().iter().map(|s| s.base_offset).collect();
    assert_eq!(segment_bases(dir), bases, "segment files on disk");
}

/// Disk space actually allocated to every file under `dir` (st_blocks * 512).
fn disk_usage(dir: &Path) -> u64 {
    let mut total = 0;
    for e in fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let m = fs::symlink_metadata(e.path()).unwrap();
        total += if m.is_dir() { disk_usage(&e.path()) } else { m.blocks() * 512 };
    }
    total
}

/// Copies the files of an open log as a SIGKILL would leave them (the mappings are
/// shared, so the page cache is what a reader of the files sees) into a fresh directory.
fn crash_copy(from: &Path, to: &Path) {
    restore(&snapshot(from), to);
    let cursors = from.join("cursors");
    if cursors.exists() {
        fs::create_dir_all(to.join("cursors")).unwrap();
        for f in names(&cursors) {
            fs::copy(cursors.join(&f), to.join("cursors").join(&f)).unwrap();
        }
    }
}

fn removed_bases(removed: &[RemovedSegment]) -> Vec<u64> {
    let mut v: Vec<u64> = removed.iter().map(|r| r.base_offset).collect();
    v.sort_unstable();
    v
}

// ---------------------------------------------------------------- delete_before

#[test]
fn delete_before_removes_whole_segments_below_the_offset_and_reclaims_their_space() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let mut model = build(&dir, 6, 10);
    let mut log = Log::open(&dir, &opts()).unwrap();
    let before_usage = disk_usage(&dir);

    // An offset inside segment 2: segments 0 and 1 go, segment 2 (holding records below
    // and at the offset) stays.
    let removed = log.delete_before(2 * PER_SEG + 5).unwrap();
    assert_eq!(
        removed,
        vec![
            RemovedSegment { path: seg_path(&dir, 0), base_offset: 0, next_offset: PER_SEG, file_bytes: SEG as u64, archived_to: None },
            RemovedSegment {
                path: seg_path(&dir, PER_SEG),
                base_offset: PER_SEG,
                next_offset: 2 * PER_SEG,
                file_bytes: SEG as u64,
                archived_to: None
            },
        ]
    );
    check_log(&log, &model, 2 * PER_SEG);
    check_files(&log);
    for base in [0, PER_SEG] {
        assert!(!seg_path(&dir, base).exists() && !idx_path(&dir, base).exists(), "files of segment {base} removed");
    }
    let after_usage = disk_usage(&dir);
    assert!(
        before_usage - after_usage >= 2 * SEG as u64,
        "disk usage dropped by {} bytes, less than the {} bytes of the removed segments",
        before_usage - after_usage,
        2 * SEG
    );

    // Nothing below the first offset's segment is left to remove.
    assert_eq!(log.delete_before(2 * PER_SEG).unwrap(), vec![]);
    assert_eq!(log.delete_before(0).unwrap(), vec![]);
    // Exactly at a boundary: the segment ending there goes.
    assert_eq!(removed_bases(&log.delete_before(3 * PER_SEG).unwrap()), vec![2 * PER_SEG]);
    check_log(&log, &model, 3 * PER_SEG);
    // Past the end: every sealed segment goes, never the active one.
    let removed = log.delete_before(u64::MAX).unwrap();
    assert_eq!(removed_bases(&removed), vec![3 * PER_SEG, 4 * PER_SEG, 5 * PER_SEG]);
    check_log(&log, &model, 6 * PER_SEG);
    check_files(&log);
    assert_eq!(log.delete_before(u64::MAX).unwrap(), vec![], "the active segment is never removed");

    // Appends go on from where they were, and everything survives a reopen.
    append_n(&mut log, &mut model, PER_SEG, default_ts);
    check_log(&log, &model, 6 * PER_SEG);
    log.close().unwrap();
    let log = Log::open(&dir, &opts()).unwrap();
    check_log(&log, &model, 6 * PER_SEG);
    check_files(&log);
    assert!(log.recovery_report().temp_files_removed.is_empty());
}

#[test]
fn delete_before_on_a_single_segment_log_removes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let mut log = Log::open(tmp.path(), &opts()).unwrap();
    assert_eq!(log.delete_before(100).unwrap(), vec![]);
    let mut model = Model::new();
    append_n(&mut log, &mut model, 5, default_ts);
    assert_eq!(log.delete_before(u64::MAX).unwrap(), vec![]);
    check_log(&log, &model, 0);
}

#[test]
fn delete_before_is_refused_on_a_reader_and_the_reader_follows_it() {
    let tmp = tempfile::tempdir().unwrap();
    let model = build(tmp.path(), 4, 3);
    let mut writer = Log::open(tmp.path(), &opts()).unwrap();
    let mut reader = Log::open(tmp.path(), &Options { read_only: true, ..opts() }).unwrap();
    expect_code(reader.delete_before(PER_SEG), "ERR_SEGLOG_READ_ONLY");
    expect_code(reader.truncate(PER_SEG), "ERR_SEGLOG_READ_ONLY");
    expect_code(reader.enforce_retention(), "ERR_SEGLOG_READ_ONLY");

    writer.delete_before(2 * PER_SEG).unwrap();
    // Until it refreshes, the reader still reads the removed segments it has mapped, and
    // what it reads is right.
    let r = reader.read(5).unwrap().unwrap();
    assert!(r.payload == &model[5].0[..]);
    reader.refresh().unwrap();
    check_log(&reader, &model, 2 * PER_SEG);
}

#[test]
fn archive_dir_receives_removed_segments_byte_for_byte() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let archive = tmp.path().join("archive").join("nested");
    let model = build(&dir, 5, 7);
    let before = snapshot(&dir);
    let options = Options { archive_dir: Some(archive.clone()), ..opts() };
    let mut log = Log::open(&dir, &options).unwrap();
    assert!(archive.is_dir(), "the archive directory is created at open");

    let removed = log.delete_before(2 * PER_SEG).unwrap();
    assert_eq!(removed_bases(&removed), vec![0, PER_SEG]);
    for r in &removed {
        assert_eq!(r.archived_to.as_deref(), Some(archive.join(seg_name(r.base_offset)).as_path()));
    }
    check_log(&log, &model, 2 * PER_SEG);
    check_files(&log);
    let archived = snapshot(&archive);
    let expected_names = vec![idx_name(0), seg_name(0), idx_name(PER_SEG), seg_name(PER_SEG)];
    let mut expected_names_sorted = expected_names.clone();
    expected_names_sorted.sort();
    assert_eq!(archived.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>(), expected_names_sorted);
    for (name, bytes) in &archived {
        assert!(file_bytes(&before, name) == &bytes[..], "{name} archived byte for byte");
    }

    // The archive is itself a readable log of the removed records.
    {
        let arch = Log::open(&archive, &Options { read_only: true, ..opts() }).unwrap();
        check_log(&arch, &model[..2 * PER_SEG as usize].to_vec(), 0);
    }

    // Retention archives too; truncation deletes (truncated records are not history).
    log.close().unwrap();
    let options = Options { archive_dir: Some(archive.clone()), retention: Retention { records: Some(PER_SEG + 7), ..Retention::default() }, ..opts() };
    let mut log = Log::open(&dir, &options).unwrap();
    let removed = log.enforce_retention().unwrap();
    assert_eq!(removed_bases(&removed), vec![2 * PER_SEG, 3 * PER_SEG]);
    assert!(removed.iter().all(|r| r.archived_to.is_some()));
    assert!(archive.join(seg_name(3 * PER_SEG)).exists());
    let t = log.truncate(4 * PER_SEG + 3).unwrap();
    assert_eq!(removed_bases(&t.segments_removed), vec![5 * PER_SEG]);
    assert!(t.segments_removed.iter().all(|r| r.archived_to.is_none()));
    assert!(!archive.join(seg_name(5 * PER_SEG)).exists(), "a truncated segment is not archived");
    assert!(!seg_path(&dir, 5 * PER_SEG).exists());
    check_log(&log, &model[..(4 * PER_SEG + 3) as usize].to_vec(), 4 * PER_SEG);
    check_files(&log);
}

// ---------------------------------------------------------------- retention

#[test]
fn retention_bytes_keeps_the_segment_files_under_the_limit() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let model = build(&src, 6, 9);
    let snap = snapshot(&src);
    let total_segments = 7u64;
    for limit in [0, 1, SEG as u64 - 1, SEG as u64, 2 * SEG as u64 + 100, 3 * SEG as u64, 7 * SEG as u64, 100 * SEG as u64] {
        let dir = tmp.path().join(format!("l{limit}"));
        restore(&snap, &dir);
        let usage_before = disk_usage(&dir);
        let mut log = Log::open(&dir, &with_retention(Retention { bytes: Some(limit), ..Retention::default() })).unwrap();
        let removed = log.enforce_retention().unwrap();
        let keep = (limit / SEG as u64).clamp(1, total_segments);
        let first = (total_segments - keep) * PER_SEG;
        assert_eq!(removed.len() as u64, total_segments - keep, "limit {limit}");
        check_log(&log, &model, first);
        check_files(&log);
        let on_disk: u64 = segment_bases(&dir).iter().map(|&b| fs::metadata(seg_path(&dir, b)).unwrap().len()).sum();
        assert!(on_disk <= limit.max(SEG as u64), "limit {limit}: {on_disk} bytes of segments left");
        let freed = usage_before - disk_usage(&dir);
        let removed_bytes: u64 = removed.iter().map(|r| r.file_bytes).sum();
        assert!(freed >= removed_bytes, "limit {limit}: freed {freed} bytes, removed segments hold {removed_bytes}");
        assert_eq!(log.enforce_retention().unwrap(), vec![], "limit {limit}: a second pass removes nothing");
    }
}

#[test]
fn retention_bytes_applies_whenever_a_segment_rolls() {
    let tmp = tempfile::tempdir().unwrap();
    let limit = 3 * SEG as u64;
    let mut log = Log::open(tmp.path(), &with_retention(Retention { bytes: Some(limit), ..Retention::default() })).unwrap();
    let mut model = Model::new();
    for _ in 0..10 * PER_SEG {
        let o = model.len() as u64;
        append_one(&mut log, &mut model, 0, default_ts(o));
        let segments = log.segments().len() as u64;
        assert_eq!(segments, (o / PER_SEG + 1).min(3), "after offset {o}: at most 3 segments, and no fewer than allowed");
        assert_eq!(segment_bases(tmp.path()).len() as u64, segments);
    }
    assert!(log.retention_error().is_none());
    check_log(&log, &model, 7 * PER_SEG);
    check_files(&log);
    log.close().unwrap();
    let log = Log::open(tmp.path(), &opts()).unwrap();
    check_log(&log, &model, 7 * PER_SEG);
}

/// Record timestamps, not file times, decide age: a segment goes when its newest record
/// (the maximum, whatever the order) is older than the limit, oldest segments first.
#[test]
fn retention_ms_removes_segments_whose_newest_record_is_too_old() {
    let now = now_ms();
    let old = now - 10 * DAY;
    let recent = now - 60_000;
    let retention = Retention { ms: Some(DAY), ..Retention::default() };
    let tmp = tempfile::tempdir().unwrap();

    // Segment 1 holds one recent record (its first, the rest old): it and everything
    // after it stay, although segment 2 is entirely old (removal is from the front).
    let dir = tmp.path().join("a");
    let mut log = Log::open(&dir, &opts()).unwrap();
    let mut model = Model::new();
    append_n(&mut log, &mut model, 4 * PER_SEG + 3, |o| if o == PER_SEG { recent } else { old + o });
    log.close().unwrap();
    let mut log = Log::open(&dir, &with_retention(retention.clone())).unwrap();
    assert_eq!(removed_bases(&log.enforce_retention().unwrap()), vec![0]);
    check_log(&log, &model, PER_SEG);

    // Non-monotonic: segments 0 and 1 are old (1 in decreasing order), segment 2 ends
    // with a recent record, segment 3 (sealed) is old, the active segment too.
    let dir = tmp.path().join("b");
    let mut log = Log::open(&dir, &opts()).unwrap();
    let mut model = Model::new();
    append_n(&mut log, &mut model, 4 * PER_SEG + 3, |o| match o {
        o if o == 3 * PER_SEG - 1 => recent,
        o if o < 2 * PER_SEG && o >= PER_SEG => old + 2 * PER_SEG - o,
        o => old + o,
    });
    log.close().unwrap();
    let mut log = Log::open(&dir, &with_retention(retention.clone())).unwrap();
    assert_eq!(removed_bases(&log.enforce_retention().unwrap()), vec![0, PER_SEG]);
    check_log(&log, &model, 2 * PER_SEG);
    check_files(&log);
    log.close().unwrap();
    let log = Log::open(&dir, &opts()).unwrap();
    check_log(&log, &model, 2 * PER_SEG);

    // Applied at every roll: old records never outlive the segment after them; the
    // active segment is kept however old; records from the future are never expired.
    let dir = tmp.path().join("c");
    let mut log = Log::open(&dir, &with_retention(retention.clone())).unwrap();
    let mut model = Model::new();
    append_n(&mut log, &mut model, 3 * PER_SEG + 2, |o| old + o);
    assert_eq!(log.segments().len(), 1, "every sealed segment was old");
    check_log(&log, &model, 3 * PER_SEG);
    append_n(&mut log, &mut model, PER_SEG, |_| now + 365 * DAY);
    append_n(&mut log, &mut model, 2 * PER_SEG, |o| old + o);
    // Segment 3 holds future records: removal stops there.
    assert_eq!(log.first_offset(), 3 * PER_SEG);
    assert_eq!(log.enforce_retention().unwrap(), vec![]);
    check_log(&log, &model, 3 * PER_SEG);
    check_files(&log);
}

#[test]
fn retention_records_keeps_at_least_that_many_records() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let model = build(&src, 6, 10);
    let snap = snapshot(&src);
    let next = model.len() as u64;
    let bases: Vec<u64> = (0..=6).map(|i| i * PER_SEG).collect();
    for keep in [0, 1, 10, 11, PER_SEG + 10, PER_SEG + 11, 3 * PER_SEG, next - 1, next, next + 1, 10 * next] {
        let dir = tmp.path().join(format!("k{keep}"));
        restore(&snap, &dir);
        let mut log = Log::open(&dir, &with_retention(Retention { records: Some(keep), ..Retention::default() })).unwrap();
        log.enforce_retention().unwrap();
        // The most that may go: the last segment start leaving at least `keep` records.
        let first = bases.iter().copied().filter(|&b| next - b >= keep).max().unwrap_or(0);
        assert!(next - log.first_offset() >= keep.min(next), "keep {keep}: only {} records left", next - log.first_offset());
        check_log(&log, &model, first);
        check_files(&log);
    }
}

#[test]
fn several_retention_limits_remove_what_any_of_them_allows() {
    let tmp = tempfile::tempdir().unwrap();
    build(tmp.path(), 6, 10);
    // bytes allows removing 2 segments, records allows 4.
    let retention = Retention { bytes: Some(5 * SEG as u64), records: Some(2 * PER_SEG + 10), ..Retention::default() };
    let mut log = Log::open(tmp.path(), &with_retention(retention)).unwrap();
    assert_eq!(removed_bases(&log.enforce_retention().unwrap()), vec![0, PER_SEG, 2 * PER_SEG, 3 * PER_SEG]);
}

#[test]
fn retain_for_cursors_never_removes_records_at_or_after_the_slowest_cursor() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let model = build(dir, 7, 5);
    let next = model.len() as u64;
    {
        let mut log = Log::open(dir, &opts()).unwrap();
        log.commit_cursor("slow", 3 * PER_SEG + 2).unwrap();
        log.commit_cursor("fast", next).unwrap();
    }
    let retention = Retention { bytes: Some(0), retain_for_cursors: true, ..Retention::default() };
    let mut log = Log::open(dir, &with_retention(retention.clone())).unwrap();
    assert_eq!(removed_bases(&log.enforce_retention().unwrap()), vec![0, PER_SEG, 2 * PER_SEG]);
    check_log(&log, &model, 3 * PER_SEG);

    // At a segment boundary: the segment ending there goes, the one starting there stays.
    log.commit_cursor("slow", 5 * PER_SEG).unwrap();
    assert_eq!(removed_bases(&log.enforce_retention().unwrap()), vec![3 * PER_SEG, 4 * PER_SEG]);
    check_log(&log, &model, 5 * PER_SEG);

    // A cursor left behind (below the first offset) holds everything.
    log.commit_cursor("stale", 0).unwrap();
    assert_eq!(log.enforce_retention().unwrap(), vec![]);
    assert_eq!(log.cursor("stale").unwrap().unwrap().position, 0);
    assert!(log.delete_cursor("stale").unwrap());

    // Without the slow cursor only the fast one (at the end) holds anything: only the
    // active segment stays.
    assert!(log.delete_cursor("slow").unwrap());
    assert_eq!(removed_bases(&log.enforce_retention().unwrap()), vec![5 * PER_SEG, 6 * PER_SEG]);
    check_log(&log, &model, 7 * PER_SEG);
    check_files(&log);

    // Without retain_for_cursors, cursors hold nothing back.
    let tmp2 = tempfile::tempdir().unwrap();
    let model = build(tmp2.path(), 3, 1);
    let mut log = Log::open(tmp2.path(), &with_retention(Retention { bytes: Some(0), ..Retention::default() })).unwrap();
    log.commit_cursor("c", 1).unwrap();
    assert_eq!(log.enforce_retention().unwrap().len(), 3);
    check_log(&log, &model, 3 * PER_SEG);
    assert_eq!(log.cursor("c").unwrap().unwrap().position, 1, "a cursor below the first offset keeps its position");
}

#[test]
fn retain_for_cursors_applies_at_every_roll() {
    let tmp = tempfile::tempdir().unwrap();
    let retention = Retention { bytes: Some(0), retain_for_cursors: true, ..Retention::default() };
    let mut log = Log::open(tmp.path(), &with_retention(retention)).unwrap();
    let mut model = Model::new();
    append_n(&mut log, &mut model, 10, default_ts);
    log.commit_cursor("reader", 7).unwrap();
    append_n(&mut log, &mut model, 5 * PER_SEG, default_ts);
    check_log(&log, &model, 0);
    log.commit_cursor("reader", 2 * PER_SEG + 1).unwrap();
    append_n(&mut log, &mut model, PER_SEG, default_ts);
    check_log(&log, &model, 2 * PER_SEG);
    assert!(log.retention_error().is_none());
}

/// A corrupt cursor file must stop retention that depends on cursors (removing data a
/// consumer may still need is not recoverable); the append that rolled still succeeds.
#[test]
fn retention_with_a_corrupt_cursor_file_removes_nothing_and_reports_why() {
    let tmp = tempfile::tempdir().unwrap();
    let retention = Retention { bytes: Some(0), retain_for_cursors: true, ..Retention::default() };
    let mut log = Log::open(tmp.path(), &with_retention(retention)).unwrap();
    let mut model = Model::new();
    append_n(&mut log, &mut model, 3, default_ts);
    log.commit_cursor("c", 2).unwrap();
    let path = tmp.path().join("cursors").join("c.cursor");
    let mut bytes = fs::read(&path).unwrap();
    bytes[16] ^= 0xff;
    fs::write(&path, &bytes).unwrap();
    append_n(&mut log, &mut model, 2 * PER_SEG, default_ts);
    let err = log.retention_error().expect("the failed retention at the roll is reported");
    assert!(err.contains("c.cursor"), "the error names the cursor file: {err}");
    check_log(&log, &model, 0);
    let e = expect_code(log.enforce_retention(), "ERR_SEGLOG_CORRUPT");
    assert!(e.to_string().contains(&path.display().to_string()), "{e}");
    check_log(&log, &model, 0);
}

// ---------------------------------------------------------------- truncate

#[test]
fn truncate_inside_the_active_segment_then_append_then_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let mut model = build(tmp.path(), 0, 30);
    let mut log = Log::open(tmp.path(), &opts()).unwrap();
    let report = log.truncate(25).unwrap();
    assert_eq!(report.previous_next_offset, 30);
    assert_eq!(report.next_offset, 25);
    assert_eq!(report.records_removed, 5);
    assert_eq!(report.segments_removed, vec![]);
    model.truncate(25);
    check_log(&log, &model, 0);
    for _ in 0..8 {
        let o = model.len() as u64;
        append_one(&mut log, &mut model, 1, default_ts(o) + 7);
    }
    check_log(&log, &model, 0);
    log.close().unwrap();
    let log = Log::open(tmp.path(), &opts()).unwrap();
    assert!(log.recovery_report().truncation.is_none());
    check_log(&log, &model, 0);
}

#[test]
fn truncate_across_segments_removes_later_segments_and_zeroes_the_cut_one() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut model = build(dir, 5, 12);
    let mut log = Log::open(dir, &opts()).unwrap();
    let cut = 2 * PER_SEG + 3;
    let report = log.truncate(cut).unwrap();
    assert_eq!(report.previous_next_offset, model.len() as u64);
    assert_eq!(report.next_offset, cut);
    assert_eq!(report.records_removed, model.len() as u64 - cut);
    assert_eq!(removed_bases(&report.segments_removed), vec![3 * PER_SEG, 4 * PER_SEG, 5 * PER_SEG]);
    for r in &report.segments_removed {
        assert_eq!(r.file_bytes, SEG as u64);
        assert!(!r.path.exists() && !idx_path(dir, r.base_offset).exists());
    }
    model.truncate(cut as usize);
    check_log(&log, &model, 0);
    check_files(&log);
    // Everything after the cut in the segment's file is zero (FORMAT.md 8 and 6.5), so
    // no old frame can line up behind a new record.
    let bytes = fs::read(seg_path(dir, 2 * PER_SEG)).unwrap();
    let end = log.segments().last().unwrap().data_bytes as usize;
    assert_eq!(last_nonzero_from(&bytes, end), None, "bytes after the cut are zero");

    // The segment that was sealed is the active one now: appends fill it and roll on.
    for _ in 0..2 * PER_SEG {
        let o = model.len() as u64;
        append_one(&mut log, &mut model, 1, default_ts(o));
    }
    check_log(&log, &model, 0);
    let bases: Vec<u64> = log.segments().iter().map(|s| s.base_offset).collect();
    assert_eq!(bases, vec![0, PER_SEG, 2 * PER_SEG, 3 * PER_SEG, 4 * PER_SEG]);
    log.close().unwrap();
    let log = Log::open(dir, &opts()).unwrap();
    assert!(log.recovery_report().truncation.is_none());
    check_log(&log, &model, 0);
    check_files(&log);
}

#[test]
fn truncate_at_a_segment_boundary_and_to_the_first_offset() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut model = build(dir, 4, 4);
    let mut log = Log::open(dir, &opts()).unwrap();
    log.truncate(3 * PER_SEG).unwrap();
    model.truncate(3 * PER_SEG as usize);
    check_log(&log, &model, 0);
    check_files(&log);
    append_n(&mut log, &mut model, 3, |o| default_ts(o) + 1);
    check_log(&log, &model, 0);

    // With a prefix removed, the log can be emptied down to its first offset but not below.
    log.delete_before(2 * PER_SEG).unwrap();
    expect_code(log.truncate(2 * PER_SEG - 1), "ERR_SEGLOG_OFFSET_OUT_OF_RANGE");
    expect_code(log.truncate(0), "ERR_SEGLOG_OFFSET_OUT_OF_RANGE");
    check_log(&log, &model, 2 * PER_SEG);
    let report = log.truncate(2 * PER_SEG).unwrap();
    assert_eq!(report.next_offset, 2 * PER_SEG);
    model.truncate(2 * PER_SEG as usize);
    assert_eq!(log.next_offset(), 2 * PER_SEG);
    assert_eq!(log.first_offset(), 2 * PER_SEG);
    assert!(log.read(2 * PER_SEG).unwrap().is_none());
    assert_eq!(log.offset_for_timestamp(0).unwrap(), None, "an empty log has no timestamps");
    log.close().unwrap();
    let mut log = Log::open(dir, &opts()).unwrap();
    assert_eq!((log.first_offset(), log.next_offset()), (2 * PER_SEG, 2 * PER_SEG), "an emptied log keeps its offsets");
    append_n(&mut log, &mut model, 5, |o| default_ts(o) + 2);
    check_log(&log, &model, 2 * PER_SEG);
    log.close().unwrap();
    let log = Log::open(dir, &opts()).unwrap();
    check_log(&log, &model, 2 * PER_SEG);
}

#[test]
fn truncate_at_or_past_the_end_is_a_no_op() {
    let tmp = tempfile::tempdir().unwrap();
    let model = build(tmp.path(), 2, 3);
    let mut log = Log::open(tmp.path(), &opts()).unwrap();
    let next = model.len() as u64;
    for at in [next, next + 1, u64::MAX] {
        let r = log.truncate(at).unwrap();
        assert_eq!((r.previous_next_offset, r.next_offset, r.records_removed), (next, next, 0));
        assert!(r.segments_removed.is_empty());
        check_log(&log, &model, 0);
    }
}

/// An atomic batch is a unit: a truncation point inside one is refused, naming the
/// batch's bounds, and changes nothing; its bounds are fine, also across a crash.
#[test]
fn truncate_inside_an_atomic_batch_is_refused_and_its_bounds_work() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let mut log = Log::open(&dir, &opts()).unwrap();
    let mut model = Model::new();
    append_n(&mut log, &mut model, 5, default_ts);
    let batch: Vec<Vec<u8>> = (5..15).map(|o| payload_of(o, 0, 60)).collect();
    assert_eq!(log.append_batch(batch.iter().map(|p| p.as_slice()), Some(42)).unwrap(), 5);
    model.extend(batch.iter().map(|p| (p.clone(), 42)));
    append_n(&mut log, &mut model, 3, default_ts);
    for inside in [6, 9, 14] {
        let e = log.truncate(inside).unwrap_err();
        assert_eq!(e.code(), "ERR_SEGLOG_INVALID_ARGUMENT", "{e}");
        assert!(e.to_string().contains("offsets 5 to 14"), "{e}");
        check_log(&log, &model, 0);
    }
    log.truncate(15).unwrap();
    model.truncate(15);
    check_log(&log, &model, 0);
    log.truncate(5).unwrap();
    model.truncate(5);
    check_log(&log, &model, 0);

    let crashed = tmp.path().join("crashed");
    crash_copy(&dir, &crashed);
    {
        let c = Log::open(&crashed, &opts()).unwrap();
        assert_eq!(c.recovery_report().truncation, None, "recovery cut nothing");
        check_log(&c, &model, 0);
    }
    let batch2: Vec<Vec<u8>> = (5..8).map(|o| payload_of(o, 1, 70)).collect();
    assert_eq!(log.append_batch(batch2.iter().map(|p| p.as_slice()), Some(43)).unwrap(), 5);
    model.extend(batch2.iter().map(|p| (p.clone(), 43)));
    log.close().unwrap();
    let log = Log::open(&dir, &opts()).unwrap();
    assert_eq!(log.recovery_report().truncation, None);
    check_log(&log, &model, 0);
}

/// Truncates at `at`, or at the start of the atomic batch `at` would split (the engine
/// refuses to split one and names its bounds). Returns where it truncated.
fn truncate_at_boundary(log: &mut Log, at: u64) -> u64 {
    match log.truncate(at) {
        Ok(_) => at,
        Err(e) if e.code() == "ERR_SEGLOG_INVALID_ARGUMENT" => {
            let msg = e.to_string();
            let start: u64 = msg.split("offsets ").nth(1).and_then(|r| r.split(' ').next()).and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("no batch bounds in {msg}"));
            assert!(start < at, "{msg}");
            log.truncate(start).unwrap();
            start
        }
        Err(e) => panic!("truncate({at}): {e}"),
    }
}

/// Re-appending records of the same sizes puts frame boundaries exactly where the old
/// ones were: if truncate left the old frames behind, recovery after a crash would find
/// the next old frame (right offset, valid CRC) and bring it back.
#[test]
fn truncated_records_never_come_back_after_a_crash() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let mut log = Log::open(&dir, &opts()).unwrap();
    let mut model = Model::new();
    append_n(&mut log, &mut model, 2 * PER_SEG + 20, default_ts);
    for (i, cut) in [2 * PER_SEG + 10, PER_SEG + 5].into_iter().enumerate() {
        log.truncate(cut).unwrap();
        model.truncate(cut as usize);
        for _ in 0..3 {
            let o = model.len() as u64;
            append_one(&mut log, &mut model, i as u64 + 1, default_ts(o));
        }
        let crashed = tmp.path().join(format!("crashed{i}"));
        crash_copy(&dir, &crashed);
        let c = Log::open(&crashed, &opts()).unwrap();
        assert_eq!(c.next_offset(), cut + 3, "truncated records came back after a crash (cut at {cut})");
        check_log(&c, &model, 0);
    }
}

#[test]
fn truncate_updates_timestamps_and_time_lookups() {
    let tmp = tempfile::tempdir().unwrap();
    let mut log = Log::open(tmp.path(), &opts()).unwrap();
    let mut model = Model::new();
    append_n(&mut log, &mut model, 2 * PER_SEG, |o| 1000 + o);
    append_n(&mut log, &mut model, 5, |_| 9000);
    assert_eq!(log.offset_for_timestamp(9000).unwrap(), Some(2 * PER_SEG));
    log.truncate(2 * PER_SEG).unwrap();
    model.truncate(2 * PER_SEG as usize);
    assert_eq!(log.offset_for_timestamp(9000).unwrap(), None);
    assert_eq!(log.offset_for_timestamp(1000 + PER_SEG + 3).unwrap(), Some(PER_SEG + 3));
    let last = log.segments().into_iter().rfind(|s| s.records > 0).unwrap();
    assert_eq!(last.timestamps.unwrap().1, 1000 + 2 * PER_SEG - 1);
    log.truncate(PER_SEG + 2).unwrap();
    let segs = log.segments();
    assert_eq!(segs.last().unwrap().timestamps, Some((1000 + PER_SEG, 1000 + PER_SEG + 1)));
    assert_eq!(log.offset_for_timestamp(1000 + PER_SEG + 2).unwrap(), None);
}

// ---------------------------------------------------------------- crashes midway (FORMAT.md 8)

/// Each state a crash can leave in the middle of `delete_before` or `truncate`, made by
/// hand from a pristine log: the log must open at a segment boundary between the old and
/// the new ends, with every remaining record intact, no orphan files and `verify` ok.
#[test]
fn a_crash_midway_through_removal_or_truncation_leaves_a_consistent_log() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let model = build(&src, 4, 6);
    let pristine = snapshot(&src);
    let without = |snap: &Snapshot, drop: &[String]| -> Snapshot { snap.iter().filter(|(n, _)| !drop.contains(n)).cloned().collect() };
    let next = model.len() as u64;

    let cases: Vec<(&str, Snapshot, u64, u64)> = vec![
        // delete_before(2 * PER_SEG): segment 0's index gone, its data still there.
        ("removal: first index deleted", without(&pristine, &[idx_name(0)]), 0, next),
        ("removal: first segment deleted", without(&pristine, &[idx_name(0), seg_name(0)]), PER_SEG, next),
        (
            "removal: second index deleted",
            without(&pristine, &[idx_name(0), seg_name(0), idx_name(PER_SEG)]),
            PER_SEG,
            next,
        ),
        // The other order (segment before its index) would leave an orphan index.
        ("removal: orphan index left", without(&pristine, &[seg_name(0)]), PER_SEG, next),
        // truncate(PER_SEG + 3): newest segment first.
        ("truncation: active index deleted", without(&pristine, &[idx_name(4 * PER_SEG)]), 0, next),
        ("truncation: active segment deleted", without(&pristine, &[idx_name(4 * PER_SEG), seg_name(4 * PER_SEG)]), 0, 4 * PER_SEG),
        (
            "truncation: two segments deleted",
            without(&pristine, &[idx_name(4 * PER_SEG), seg_name(4 * PER_SEG), idx_name(3 * PER_SEG), seg_name(3 * PER_SEG)]),
            0,
            3 * PER_SEG,
        ),
    ];
    for (what, snap, first, end) in cases {
        let dir = tmp.path().join("case");
        restore(&snap, &dir);
        {
            let reader = Log::open(&dir, &Options { read_only: true, ..opts() }).unwrap_or_else(|e| panic!("{what}: reader open: {e}"));
            check_log(&reader, &model[..end as usize].to_vec(), first);
        }
        let log = Log::open(&dir, &opts()).unwrap_or_else(|e| panic!("{what}: open: {e}"));
        check_log(&log, &model[..end as usize].to_vec(), first);
        check_files(&log);
    }

    // Truncation into a sealed segment: later segments gone and the segment cut and
    // zeroed, but the crash came before its index was rewritten (the stale index still
    // claims the old end).
    let dir = tmp.path().join("cut");
    restore(&pristine, &dir);
    let cut = PER_SEG + 3;
    {
        let mut log = Log::open(&dir, &opts()).unwrap();
        log.truncate(cut).unwrap();
    }
    let mut snap = snapshot(&dir);
    let stale = file_bytes(&pristine, &idx_name(PER_SEG)).to_vec();
    snap.iter_mut().find(|(n, _)| *n == idx_name(PER_SEG)).unwrap().1 = stale;
    restore(&snap, &dir);
    let log = Log::open(&dir, &opts()).unwrap();
    check_log(&log, &model[..cut as usize].to_vec(), 0);
    check_files(&log);
}

#[test]
fn writer_open_deletes_orphan_indexes_and_temp_files_and_readers_leave_them() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let model = build(dir, 3, 2);
    {
        let mut log = Log::open(dir, &opts()).unwrap();
        log.commit_cursor("a", 4).unwrap();
    }
    // Orphans: segment 0 removed before its index; an index of a segment that never
    // existed past the end; leftovers of an interrupted segment creation and cursor commit.
    fs::remove_file(seg_path(dir, 0)).unwrap();
    fs::copy(idx_path(dir, PER_SEG), idx_path(dir, 999_999)).unwrap();
    fs::write(dir.join(format!("{}.tmp", seg_name(3 * PER_SEG + 2))), b"partial").unwrap();
    fs::write(dir.join("cursors").join("a.cursor.tmp"), b"torn").unwrap();
    fs::write(dir.join("cursors").join("b.cursor.tmp"), [0u8; 40]).unwrap();
    let planted: Vec<PathBuf> = vec![
        idx_path(dir, 0),
        idx_path(dir, 999_999),
        dir.join(format!("{}.tmp", seg_name(3 * PER_SEG + 2))),
        dir.join("cursors").join("a.cursor.tmp"),
        dir.join("cursors").join("b.cursor.tmp"),
    ];
    {
        let reader = Log::open(dir, &Options { read_only: true, ..opts() }).unwrap();
        check_log(&reader, &model, PER_SEG);
        assert_eq!(reader.cursor("a").unwrap().unwrap().position, 4);
        assert_eq!(reader.cursors().unwrap().len(), 1, "temp files are not cursors");
        assert!(reader.recovery_report().temp_files_removed.is_empty());
        for p in &planted {
            assert!(p.exists(), "a reader removed {}", p.display());
        }
    }
    let log = Log::open(dir, &opts()).unwrap();
    let mut reported = log.recovery_report().temp_files_removed.clone();
    reported.sort();
    let mut expected = planted.clone();
    expected.sort();
    assert_eq!(reported, expected, "every removed file is reported");
    for p in &planted {
        assert!(!p.exists(), "{} was not removed", p.display());
    }
    check_log(&log, &model, PER_SEG);
    check_files(&log);
    assert_eq!(log.cursor("a").unwrap().unwrap().position, 4, "the committed cursor is untouched");
    assert!(log.cursor("b").unwrap().is_none());
}

// ---------------------------------------------------------------- cursors (FORMAT.md 9)

fn cursor_file(dir: &Path, name: &str) -> PathBuf {
    dir.join("cursors").join(format!("{name}.cursor"))
}

/// Decodes a cursor file by the spec alone: (position, committed_ms).
fn decode_cursor_by_spec(b: &[u8]) -> (u64, u64) {
    assert_eq!(b.len(), 40, "a cursor file is 40 bytes");
    assert_eq!(&b[0..8], b"SEGLOG\0C", "magic");
    assert_eq!(u32::from_le_bytes(b[8..12].try_into().unwrap()), 1, "format_version");
    assert_eq!(&b[12..16], &[0; 4], "reserved");
    assert_eq!(&b[32..36], &[0; 4], "reserved");
    assert_eq!(u32::from_le_bytes(b[36..40].try_into().unwrap()), crc32fast::hash(&b[..36]), "crc");
    (u64::from_le_bytes(b[16..24].try_into().unwrap()), u64::from_le_bytes(b[24..32].try_into().unwrap()))
}

#[test]
fn cursor_commits_are_durable_files_in_the_documented_format() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let model = build(dir, 1, 5);
    let next = model.len() as u64;
    let mut log = Log::open(dir, &opts()).unwrap();
    assert!(log.cursor("billing").unwrap().is_none());
    assert!(log.cursors().unwrap().is_empty());

    let before = now_ms();
    log.commit_cursor("billing", 7).unwrap();
    let after = now_ms();
    let c = log.cursor("billing").unwrap().unwrap();
    assert_eq!((c.name.as_str(), c.position), ("billing", 7));
    assert!((before..=after).contains(&c.committed_ms), "committed_ms {} not in {before}..={after}", c.committed_ms);
    let (position, ms) = decode_cursor_by_spec(&fs::read(cursor_file(dir, "billing")).unwrap());
    assert_eq!((position, ms), (7, c.committed_ms));

    // Up to and including next_offset; past it is refused and changes nothing.
    log.commit_cursor("billing", next).unwrap();
    let e = expect_code(log.commit_cursor("billing", next + 1), "ERR_SEGLOG_INVALID_ARGUMENT");
    assert!(e.to_string().contains(&(next + 1).to_string()), "{e}");
    assert_eq!(log.cursor("billing").unwrap().unwrap().position, next);
    log.commit_cursor("billing", 3).unwrap();
    assert_eq!(log.cursor("billing").unwrap().unwrap().position, 3, "a cursor may move back");

    log.commit_cursor("a-1", 0).unwrap();
    log.commit_cursor("Z.z_9", 1).unwrap();
    let listed: Vec<(String, u64)> = log.cursors().unwrap().into_iter().map(|c| (c.name, c.position)).collect();
    let mut expected = vec![("billing".to_string(), 3), ("a-1".to_string(), 0), ("Z.z_9".to_string(), 1)];
    expected.sort();
    assert_eq!(listed, expected, "cursors() lists every cursor by name");
    assert!(names(&dir.join("cursors")).iter().all(|n| n.ends_with(".cursor")), "no temp files left");

    log.close().unwrap();
    let log = Log::open(dir, &opts()).unwrap();
    assert_eq!(log.cursor("billing").unwrap().unwrap().position, 3, "survives a reopen");
    assert!(log.delete_cursor("billing").unwrap());
    assert!(!log.delete_cursor("billing").unwrap());
    assert!(log.cursor("billing").unwrap().is_none());
    assert!(!cursor_file(dir, "billing").exists());
    assert_eq!(log.cursors().unwrap().len(), 2);
    drop(log);
    let log = Log::open(dir, &opts()).unwrap();
    assert!(log.cursor("billing").unwrap().is_none(), "a deletion survives a reopen");
}

#[test]
fn cursor_names_are_checked() {
    let tmp = tempfile::tempdir().unwrap();
    let mut log = Log::open(tmp.path(), &opts()).unwrap();
    let mut model = Model::new();
    append_n(&mut log, &mut model, 3, default_ts);
    let longest = "x".repeat(200);
    for good in ["a", "A", "0", "a.b", "a-b_c", "-x", "_", "x.", longest.as_str()] {
        log.commit_cursor(good, 1).unwrap_or_else(|e| panic!("{good:?}: {e}"));
        assert_eq!(log.cursor(good).unwrap().unwrap().position, 1, "{good:?}");
        assert!(cursor_file(tmp.path(), good).exists());
    }
    let too_long = "x".repeat(201);
    for bad in ["", ".", "..", ".hidden", "a/b", "../x", "a b", "a\0b", "ü", "a\\b", "a:b", too_long.as_str()] {
        expect_code(log.commit_cursor(bad, 1), "ERR_SEGLOG_INVALID_ARGUMENT");
        expect_code(log.cursor(bad), "ERR_SEGLOG_INVALID_ARGUMENT");
        expect_code(log.delete_cursor(bad), "ERR_SEGLOG_INVALID_ARGUMENT");
    }
    assert_eq!(log.cursors().unwrap().len(), 9);
    assert!(!tmp.path().join("x").exists() && !tmp.path().join("x.cursor").exists(), "nothing written outside cursors/");
}

#[test]
fn a_damaged_cursor_file_is_corruption_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    build(dir, 0, 9);
    let mut log = Log::open(dir, &opts()).unwrap();
    log.commit_cursor("c", 5).unwrap();
    log.commit_cursor("ok", 2).unwrap();
    let path = cursor_file(dir, "c");
    let good = fs::read(&path).unwrap();
    let with_crc = |mut b: Vec<u8>| {
        let crc = crc32fast::hash(&b[..36]);
        b[36..40].copy_from_slice(&crc.to_le_bytes());
        b
    };
    let damaged: Vec<(&str, Vec<u8>)> = vec![
        ("bad crc (position flipped)", {
            let mut b = good.clone();
            b[16] ^= 1;
            b
        }),
        ("bad crc (crc flipped)", {
            let mut b = good.clone();
            b[39] ^= 0x80;
            b
        }),
        ("too short", good[..39].to_vec()),
        ("too long", [good.clone(), vec![0]].concat()),
        ("empty", Vec::new()),
        ("bad magic, good crc", with_crc({
            let mut b = good.clone();
            b[7] = b'X';
            b
        })),
        ("unknown version, good crc", with_crc({
            let mut b = good.clone();
            b[8] = 2;
            b
        })),
    ];
    for (what, bytes) in damaged {
        fs::write(&path, &bytes).unwrap();
        let e = expect_code(log.cursor("c"), "ERR_SEGLOG_CORRUPT");
        assert!(e.to_string().contains(&path.display().to_string()), "{what}: the error names the file: {e}");
        let e = expect_code(log.cursors(), "ERR_SEGLOG_CORRUPT");
        assert!(e.to_string().contains(&path.display().to_string()), "{what}: {e}");
        assert_eq!(log.cursor("ok").unwrap().unwrap().position, 2, "{what}: other cursors still read");
        // The log itself opens (cursors are read when asked for), and a commit repairs it.
        {
            let reader = Log::open(dir, &Options { read_only: true, ..opts() }).unwrap();
            expect_code(reader.cursor("c"), "ERR_SEGLOG_CORRUPT");
        }
        log.commit_cursor("c", 6).unwrap();
        assert_eq!(log.cursor("c").unwrap().unwrap().position, 6, "{what}");
    }
}

#[test]
fn readers_commit_cursors_too() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut writer = Log::open(dir, &opts()).unwrap();
    let mut model = Model::new();
    append_n(&mut writer, &mut model, 10, default_ts);
    let mut reader = Log::open(dir, &Options { read_only: true, ..opts() }).unwrap();
    reader.commit_cursor("r", 7).unwrap();
    assert_eq!(writer.cursor("r").unwrap().unwrap().position, 7);
    // The writer's records appended since the reader last looked count as in range.
    append_n(&mut writer, &mut model, 5, default_ts);
    reader.commit_cursor("r", 15).unwrap();
    expect_code(reader.commit_cursor("r", 16), "ERR_SEGLOG_INVALID_ARGUMENT");
    assert_eq!(writer.cursors().unwrap()[0].position, 15);
    assert!(reader.delete_cursor("r").unwrap());
    assert!(writer.cursor("r").unwrap().is_none());
    // Segment files stay untouched by the reader's cursor work.
    assert!(reader.recovery_report().temp_files_removed.is_empty());
}

#[test]
fn a_crash_during_a_cursor_commit_leaves_the_old_or_the_new_position() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    build(dir, 0, 20);
    {
        let mut log = Log::open(dir, &opts()).unwrap();
        log.commit_cursor("c", 5).unwrap();
    }
    let old = fs::read(cursor_file(dir, "c")).unwrap();
    // The temp file written (whole or torn) but not renamed yet.
    for tmp_bytes in [seglog_core::cursor::encode(9, 123).to_vec(), seglog_core::cursor::encode(9, 123)[..17].to_vec(), Vec::new()] {
        fs::write(cursor_file(dir, "c"), &old).unwrap();
        fs::write(dir.join("cursors").join("c.cursor.tmp"), &tmp_bytes).unwrap();
        let log = Log::open(dir, &opts()).unwrap();
        assert_eq!(log.cursor("c").unwrap().unwrap().position, 5, "the old position");
        assert!(!dir.join("cursors").join("c.cursor.tmp").exists());
    }
    // Renamed: the new position, whole.
    fs::write(cursor_file(dir, "c"), seglog_core::cursor::encode(9, 123)).unwrap();
    let log = Log::open(dir, &opts()).unwrap();
    assert_eq!(log.cursor("c").unwrap().unwrap().position, 9);
}

// ---------------------------------------------------------------- time

/// The first offset at or after `first` whose timestamp is >= `ts`, by linear scan.
fn reference_offset(timestamps: &[u64], first: u64, ts: u64) -> Option<u64> {
    (first..timestamps.len() as u64).find(|&o| timestamps[o as usize] >= ts)
}

#[track_caller]
fn check_time_lookups(log: &Log, timestamps: &[u64], first: u64, what: &str) -> Result<(), TestCaseError> {
    let mut queries: Vec<u64> = vec![0, 1, MAX_TIMESTAMP, MAX_TIMESTAMP + 1, u64::MAX];
    for &t in &timestamps[first as usize..] {
        queries.extend([t.saturating_sub(1), t, t.saturating_add(1)]);
    }
    queries.sort_unstable();
    queries.dedup();
    for q in queries {
        let got = log.offset_for_timestamp(q).map_err(|e| TestCaseError::fail(format!("{what}: offset_for_timestamp({q}): {e}")))?;
        prop_assert_eq!(got, reference_offset(timestamps, first, q), "{}: offset_for_timestamp({})", what, q);
    }
    Ok(())
}

#[derive(Debug, Clone)]
struct Write {
    timestamp: u64,
    len: usize,
    /// Records in this call (1: `append`; more: an atomic batch sharing the timestamp).
    count: usize,
}

fn timestamp_strategy() -> impl Strategy<Value = u64> {
    prop_oneof![
        4 => 0..40u64,
        2 => 1_000_000..1_000_064u64,
        1 => Just(0u64),
        1 => Just(MAX_TIMESTAMP),
        1 => 0..=MAX_TIMESTAMP,
    ]
}

fn writes_strategy() -> impl Strategy<Value = Vec<Write>> {
    prop::collection::vec(
        (timestamp_strategy(), prop_oneof![3 => 0..200usize, 1 => 200..1500usize], prop_oneof![4 => Just(1usize), 1 => 2..6usize])
            // An atomic batch must fit in one segment.
            .prop_map(|(timestamp, len, count)| Write { timestamp, len: if count > 1 { len.min(600) } else { len }, count }),
        1..240,
    )
}

fn proptest_config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(128);
    ProptestConfig { cases, ..ProptestConfig::default() }
}

proptest! {
    #![proptest_config(proptest_config())]

    /// `offset_for_timestamp` equals a linear scan, for random non-monotonic timestamps
    /// (with ties, batches sharing one, and the extremes) across many segments and
    /// index entries: live, after a reopen (indexes from files), with every index file
    /// missing (a reader's in-memory rebuild, then the writer's), with every index file
    /// damaged, after removing a prefix and after truncating and appending again.
    #[test]
    fn offset_for_timestamp_matches_a_linear_scan(
        writes in writes_strategy(),
        interval in prop_oneof![Just(64usize), Just(200), Just(1024), Just(SEG)],
        remove_at in any::<u64>(),
        cut_at in any::<u64>(),
        more in prop::collection::vec(timestamp_strategy(), 0..40),
    ) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let o = options(SEG, interval);
        let reader_opts = Options { read_only: true, ..o.clone() };
        let mut timestamps: Vec<u64> = Vec::new();
        let mut log = Log::open(dir, &o).unwrap();
        for (i, w) in writes.iter().enumerate() {
            let payloads: Vec<Vec<u8>> = (0..w.count).map(|k| payload((i * 8 + k) as u64, w.len)).collect();
            if w.count == 1 {
                log.append(&payloads[0], Some(w.timestamp)).unwrap();
            } else {
                log.append_batch(payloads.iter().map(|p| p.as_slice()), Some(w.timestamp)).unwrap();
            }
            timestamps.extend(std::iter::repeat(w.timestamp).take(w.count));
        }
        check_time_lookups(&log, &timestamps, 0, "live")?;
        {
            let reader = Log::open(dir, &reader_opts).unwrap();
            check_time_lookups(&reader, &timestamps, 0, "live reader")?;
        }
        log.close().unwrap();

        let log = Log::open(dir, &o).unwrap();
        check_time_lookups(&log, &timestamps, 0, "reopened")?;
        drop(log);

        for b in segment_bases(dir) {
            let _ = fs::remove_file(idx_path(dir, b));
        }
        {
            let reader = Log::open(dir, &reader_opts).unwrap();
            check_time_lookups(&reader, &timestamps, 0, "reader without index files")?;
        }
        let log = Log::open(dir, &o).unwrap();
        check_time_lookups(&log, &timestamps, 0, "indexes rebuilt")?;
        drop(log);

        for b in segment_bases(dir) {
            let p = idx_path(dir, b);
            if let Ok(mut bytes) = fs::read(&p) {
                let at = bytes.len() - 1;
                bytes[at] ^= 0x5a;
                fs::write(&p, bytes).unwrap();
            }
        }
        let mut log = Log::open(dir, &o).unwrap();
        check_time_lookups(&log, &timestamps, 0, "damaged indexes")?;

        let next = timestamps.len() as u64;
        log.delete_before(remove_at % (next + 1)).unwrap();
        let first = log.first_offset();
        check_time_lookups(&log, &timestamps, first, "prefix removed")?;

        let cut = truncate_at_boundary(&mut log, first + cut_at % (next - first + 1));
        timestamps.truncate(cut as usize);
        check_time_lookups(&log, &timestamps, first, "truncated")?;
        for (i, &t) in more.iter().enumerate() {
            log.append(&payload(10_000 + i as u64, 50), Some(t)).unwrap();
            timestamps.push(t);
        }
        check_time_lookups(&log, &timestamps, first, "appended after truncation")?;
        log.close().unwrap();
        let log = Log::open(dir, &o).unwrap();
        check_time_lookups(&log, &timestamps, first, "reopened at the end")?;
        let report = log.verify().unwrap();
        prop_assert!(report.problem.is_none(), "verify: {:?}", report.problem);
    }
}

#[test]
fn offset_for_timestamp_on_empty_and_emptied_logs() {
    let tmp = tempfile::tempdir().unwrap();
    let mut log = Log::open(tmp.path(), &opts()).unwrap();
    assert_eq!(log.offset_for_timestamp(0).unwrap(), None);
    log.append(b"x", Some(5)).unwrap();
    assert_eq!(log.offset_for_timestamp(0).unwrap(), Some(0));
    assert_eq!(log.offset_for_timestamp(5).unwrap(), Some(0));
    assert_eq!(log.offset_for_timestamp(6).unwrap(), None);
    log.truncate(0).unwrap();
    assert_eq!(log.offset_for_timestamp(0).unwrap(), None);
}

// ---------------------------------------------------------------- a longer random run

/// Random interleavings of appends, batches, removals, truncations, cursor commits,
/// retention and reopens against a model: after every step the log holds exactly the
/// model's records from its first offset, and only whole segments ever leave the front.
#[test]
fn random_lifecycle_operations_agree_with_a_model() {
    for seed in 0..6u64 {
        let tmp = tempfile::tempdir().unwrap();
        let dir = &tmp.path().join("log");
        let mut rng = Rng::new(seed);
        let mut log = Log::open(dir, &opts()).unwrap();
        let mut model = Model::new();
        let mut first = 0u64;
        let mut generation = 0u64;
        let mut cursors: BTreeMap<String, u64> = BTreeMap::new();
        for step in 0..400 {
            let next = model.len() as u64;
            match rng.below(20) {
                0..=9 => {
                    let n = 1 + rng.below(12);
                    for _ in 0..n {
                        append_one(&mut log, &mut model, generation, TS_BASE + rng.below(1000));
                    }
                }
                10 | 11 => {
                    let k = 1 + rng.below(8) as usize;
                    let ps: Vec<Vec<u8>> = (0..k).map(|i| payload_of(next + i as u64, generation, rng.below(300) as usize)).collect();
                    let ts = TS_BASE + rng.below(1000);
                    assert_eq!(log.append_batch(ps.iter().map(|p| p.as_slice()), Some(ts)).unwrap(), next);
                    model.extend(ps.into_iter().map(|p| (p, ts)));
                }
                12 | 13 => {
                    let at = first + rng.below(next - first + 2);
                    let segs = log.segments();
                    let removed = log.delete_before(at).unwrap();
                    let expect: Vec<u64> = segs[..segs.len() - 1].iter().filter(|s| s.next_offset <= at).map(|s| s.base_offset).collect();
                    assert_eq!(removed_bases(&removed), expect, "seed {seed} step {step}: delete_before({at})");
                    if let Some(r) = removed.iter().max_by_key(|r| r.next_offset) {
                        first = r.next_offset;
                    }
                }
                14 => {
                    let at = truncate_at_boundary(&mut log, first + rng.below(next - first + 1));
                    assert_eq!(log.next_offset(), at);
                    model.truncate(at as usize);
                    generation += 1;
                }
                15 | 16 => {
                    let name = format!("c{}", rng.below(3));
                    let at = first + rng.below(next - first + 1);
                    log.commit_cursor(&name, at).unwrap();
                    cursors.insert(name, at);
                }
                17 => {
                    // retain_for_cursors with an all-removing byte limit: removal stops at the
                    // slowest cursor's segment.
                    drop(log);
                    let retention = Retention { bytes: Some(0), retain_for_cursors: true, ..Retention::default() };
                    log = Log::open(dir, &with_retention(retention)).unwrap();
                    let segs = log.segments();
                    let slowest = cursors.values().copied().min().unwrap_or(u64::MAX);
                    let expect: Vec<u64> =
                        segs[..segs.len() - 1].iter().take_while(|s| s.next_offset <= slowest).map(|s| s.base_offset).collect();
                    let removed = log.enforce_retention().unwrap();
                    assert_eq!(removed_bases(&removed), expect, "seed {seed} step {step}: retention with cursors {cursors:?}");
                    if let Some(r) = removed.iter().max_by_key(|r| r.next_offset) {
                        first = r.next_offset;
                    }
                    drop(log);
                    log = Log::open(dir, &opts()).unwrap();
                }
                18 => {
                    log.close().unwrap();
                    log = Log::open(dir, &opts()).unwrap();
                }
                _ => {
                    let crashed = tmp.path().join(format!("crash{step}"));
                    crash_copy(dir, &crashed);
                    let c = Log::open(&crashed, &opts()).unwrap();
                    check_log(&c, &model, first);
                    drop(c);
                    fs::remove_dir_all(&crashed).unwrap();
                }
            }
            check_log(&log, &model, first);
            for (name, &pos) in &cursors {
                assert_eq!(log.cursor(name).unwrap().unwrap().position, pos);
            }
        }
        check_files(&log);
    }
}
