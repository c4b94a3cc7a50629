//! Live readers (`Options { read_only: true }`) and the durability API, without fault
//! injection (that lives in `faults.rs`, which runs in its own process).
//!
//! A reader opened next to a writer sees new records only through `refresh`, byte for byte
//! as the writer wrote them, follows the writer across segment rolls (also from an empty
//! directory or an empty segment), never shows part of an atomic batch, and never writes
//! a byte: not the lock file, not an index, not a repair of a torn tail, not the removal of
//! a `.tmp` file. It takes no lock and refuses every write with `ERR_SEGLOG_READ_ONLY`.
//! `sync`, `begin_sync`/`complete_sync` (with the sync run on another thread) and
//! `durable_offset` report exactly what is on stable storage.
//!
//! Guards against readers that miss, duplicate or invent records, expose half a batch,
//! lose the writer after a roll, repair or lock what they only read, and against durable
//! offsets that run ahead of (or fall back behind) what was synced.

mod common;

use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use seglog_core::{Error, Log, Options};

const SMALL_SEGMENT: usize = 4096;

fn writer_opts(segment_bytes: usize) -> Options {
    options(segment_bytes, 256)
}

fn reader_opts(segment_bytes: usize) -> Options {
    Options { read_only: true, ..options(segment_bytes, 256) }
}

/// Record `n` of a test's sequence: a payload unique to it and a timestamp.
fn record(n: u64) -> (Vec<u8>, u64) {
    let len = ((n * 37) % 180) as usize;
    (payload(n ^ 0x5EED, len), 1_000 + 3 * n)
}

/// Appends one record per call, keeping `expected` in step (offset = index).
fn append_next(log: &mut Log, expected: &mut Vec<(Vec<u8>, u64)>) -> u64 {
    let n = expected.len() as u64;
    let (data, ts) = record(n);
    let offset = log.append(&data, Some(ts)).unwrap();
    assert_eq!(offset, n, "append returned the wrong offset");
    expected.push((data, ts));
    offset
}

/// Appends an atomic batch of `count` records of `len` bytes, keeping `expected` in step.
fn append_batch_next(log: &mut Log, expected: &mut Vec<(Vec<u8>, u64)>, count: usize, len: usize) -> u64 {
    let first = expected.len() as u64;
    let ts = 50_000 + first;
    let batch: Vec<Vec<u8>> = (0..count as u64).map(|i| payload(0xBA7C_0000 + first + i, len)).collect();
    assert_eq!(log.append_batch(batch.iter().map(|p| p.as_slice()), Some(ts)).unwrap(), first);
    expected.extend(batch.into_iter().map(|p| (p, ts)));
    first
}

/// (base_offset, next_offset, records, data_bytes) of every segment, as the log sees it.
fn layout(log: &Log) -> Vec<(u64, u64, u64, u64)> {
    log.segments().iter().map(|s| (s.base_offset, s.next_offset, s.records, s.data_bytes)).collect()
}

/// The reader's records `[from, to)` equal the writer's frames byte for byte.
#[track_caller]
fn assert_same_frames(reader: &Log, writer: &Log, from: u64, to: u64) {
    for o in from..to {
        let r = reader.read_frame(o).unwrap().unwrap_or_else(|| panic!("reader lacks offset {o}"));
        let w = writer.read_frame(o).unwrap().unwrap_or_else(|| panic!("writer lacks offset {o}"));
        assert!(r == w, "frame of offset {o} differs between reader and writer");
    }
}

fn open_reader(dir: &Path, segment_bytes: usize) -> Log {
    Log::open(dir, &reader_opts(segment_bytes)).unwrap_or_else(|e| panic!("reader open failed: {e}"))
}

fn open_writer(dir: &Path, segment_bytes: usize) -> Log {
    Log::open(dir, &writer_opts(segment_bytes)).unwrap_or_else(|e| panic!("writer open failed: {e}"))
}

fn file_names(dir: &Path) -> Vec<String> {
    snapshot(dir).into_iter().map(|(n, _)| n).collect()
}

#[track_caller]
fn assert_same_dir(before: &Snapshot, after: &Snapshot, what: &str) {
    let names = |s: &Snapshot| s.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(names(before), names(after), "{what}: the reader changed the file names");
    for ((name, a), (_, b)) in before.iter().zip(after) {
        if a != b {
            let at = a.iter().zip(b.iter()).position(|(x, y)| x != y).unwrap_or(a.len().min(b.len()));
            panic!("{what}: the reader changed {name} (first difference at byte {at}, sizes {} -> {})", a.len(), b.len());
        }
    }
}

// ---- 1. visibility through refresh ----

#[test]
fn a_reader_sees_new_records_only_after_refresh_byte_for_byte() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let seg = 1 << 20;
    let mut w = open_writer(&dir, seg);
    let mut expected = Vec::new();
    for _ in 0..5 {
        append_next(&mut w, &mut expected);
    }

    let mut r = open_reader(&dir, seg);
    assert!(r.is_read_only());
    assert_records(&r, &expected);

    for _ in 0..20 {
        append_next(&mut w, &mut expected);
    }
    append_batch_next(&mut w, &mut expected, 7, 33);
    assert_eq!(r.next_offset(), 5, "records became visible without refresh");
    assert!(r.read(5).unwrap().is_none(), "read past the reader's next_offset returned a record");
    assert_eq!(r.iter(0, u64::MAX).count(), 5);

    assert_eq!(r.refresh().unwrap(), 32);
    assert_eq!(r.next_offset(), 32);
    assert_records(&r, &expected);
    assert_same_frames(&r, &w, 0, 32);

    // One record at a time: the reader's next_offset tracks the writer's exactly.
    for i in 0..300 {
        let o = if i % 25 == 24 {
            append_batch_next(&mut w, &mut expected, 3, 70)
        } else {
            append_next(&mut w, &mut expected)
        };
        assert_eq!(r.refresh().unwrap(), w.next_offset(), "after writing offset {o}");
        let rec = r.read(o).unwrap().expect("the new record");
        assert_eq!((rec.offset, rec.payload, rec.timestamp), (o, &expected[o as usize].0[..], expected[o as usize].1));
    }
    // Nothing new: refresh is idempotent.
    assert_eq!(r.refresh().unwrap(), w.next_offset());
    assert_eq!(r.refresh().unwrap(), w.next_offset());
    assert_records(&r, &expected);
    assert_same_frames(&r, &w, 0, w.next_offset());

    // Bulk copies from the reader are the writer's bytes too.
    let mut rb = vec![0u8; 1 << 20];
    let mut wb = vec![0u8; 1 << 20];
    let ro = r.read_frames_into(0, u64::MAX, usize::MAX, &mut rb).unwrap();
    let wo = w.read_frames_into(0, u64::MAX, usize::MAX, &mut wb).unwrap();
    assert_eq!(ro, wo);
    assert!(rb[..ro.bytes] == wb[..wo.bytes], "read_frames_into differs between reader and writer");
    let copied = parse_copied_frames(&rb[..ro.bytes], 0);
    assert_eq!(copied.len(), expected.len());

    // The writer closing changes nothing the reader has seen.
    let n = w.next_offset();
    w.close().unwrap();
    assert_eq!(r.refresh().unwrap(), n);
    assert_records(&r, &expected);
    r.close().unwrap();
}

// ---- 2. following rolls, empty directories and empty segments ----

#[test]
fn a_reader_opened_before_the_first_roll_follows_every_roll() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let mut w = open_writer(&dir, SMALL_SEGMENT);
    let mut expected = Vec::new();
    for _ in 0..3 {
        append_next(&mut w, &mut expected);
    }
    // One reader refreshes after every write, one only at the very end. The latter opens
    // with default options: a reader need not know the writer's segment size.
    let mut stepper = open_reader(&dir, SMALL_SEGMENT);
    let mut jumper = Log::open(&dir, &Options { read_only: true, ..Options::default() }).unwrap();
    assert_eq!((stepper.next_offset(), stepper.segments().len()), (3, 1));

    let mut i = 0u64;
    while w.segments().len() < 8 {
        if i % 10 == 9 {
            // A batch too large for what is left of the segment opens the next one.
            append_batch_next(&mut w, &mut expected, 5, 150);
        } else {
            append_next(&mut w, &mut expected);
        }
        assert_eq!(stepper.refresh().unwrap(), w.next_offset(), "step {i}, writer at {} segments", w.segments().len());
        assert_eq!(stepper.segments().len(), w.segments().len(), "step {i}: reader did not follow the roll");
        i += 1;
    }
    assert_eq!(jumper.next_offset(), 3);
    assert_eq!(jumper.refresh().unwrap(), w.next_offset(), "one refresh across seven rolls");
    for r in [&stepper, &jumper] {
        assert_records(r, &expected);
        assert_eq!(layout(r), layout(&w));
        assert_same_frames(r, &w, 0, w.next_offset());
        assert_eq!(r.verify().unwrap().problem, None);
    }
    w.close().unwrap();
    for r in [&mut stepper, &mut jumper] {
        assert_eq!(r.refresh().unwrap(), expected.len() as u64);
        r.close().unwrap();
    }
}

#[test]
fn a_reader_of_an_empty_directory_finds_the_first_segment_and_follows_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    fs::create_dir(&dir).unwrap();

    let mut r = open_reader(&dir, SMALL_SEGMENT);
    assert_eq!((r.first_offset(), r.next_offset()), (0, 0));
    assert!(r.segments().is_empty());
    assert!(r.read(0).unwrap().is_none());
    assert_eq!(r.iter(0, u64::MAX).count(), 0);
    assert_eq!(r.refresh().unwrap(), 0);
    assert!(file_names(&dir).is_empty(), "a reader created files: {:?}", file_names(&dir));

    let mut w = open_writer(&dir, SMALL_SEGMENT);
    assert_eq!(r.refresh().unwrap(), 0);
    assert_eq!(r.segments().len(), 1, "the reader did not find the writer's first segment");

    let mut expected = Vec::new();
    append_next(&mut w, &mut expected);
    assert_eq!(r.refresh().unwrap(), 1);
    while w.segments().len() < 4 {
        append_next(&mut w, &mut expected);
    }
    assert_eq!(r.refresh().unwrap(), w.next_offset());
    assert_records(&r, &expected);
    assert_eq!(layout(&r), layout(&w));

    // A reader that first refreshes only after several rolls finds them all at once.
    let tmp2 = tempfile::tempdir().unwrap();
    let dir2 = tmp2.path().join("log");
    fs::create_dir(&dir2).unwrap();
    let mut late = open_reader(&dir2, SMALL_SEGMENT);
    let mut w2 = open_writer(&dir2, SMALL_SEGMENT);
    let mut expected2 = Vec::new();
    while w2.segments().len() < 5 {
        append_next(&mut w2, &mut expected2);
    }
    assert_eq!(late.refresh().unwrap(), w2.next_offset());
    assert_records(&late, &expected2);
    assert_eq!(layout(&late), layout(&w2));
    w.close().unwrap();
    w2.close().unwrap();
}

#[test]
fn a_reader_of_a_log_whose_only_segment_is_empty_follows_the_writer() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    open_writer(&dir, SMALL_SEGMENT).close().unwrap();

    let mut r = open_reader(&dir, SMALL_SEGMENT);
    assert_eq!(r.next_offset(), 0);
    assert_eq!(r.segments().len(), 1);
    assert_eq!(r.segments()[0].records, 0);

    let mut w = open_writer(&dir, SMALL_SEGMENT);
    let mut expected = Vec::new();
    while w.segments().len() < 5 {
        append_next(&mut w, &mut expected);
        assert_eq!(r.refresh().unwrap(), w.next_offset());
    }
    assert_records(&r, &expected);
    assert_eq!(layout(&r), layout(&w));
    w.close().unwrap();
}

/// A writer reopened with a larger `segment_bytes` replaces an empty active segment that
/// is too small for a record by a new file of the same name: the reader must follow.
#[test]
fn a_reader_follows_the_replacement_of_an_empty_segment() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    open_writer(&dir, SMALL_SEGMENT).close().unwrap();
    let mut r = open_reader(&dir, SMALL_SEGMENT);
    assert_eq!((r.next_offset(), r.segments()[0].file_bytes), (0, SMALL_SEGMENT as u64));

    let big = 64 << 10;
    let mut w = Log::open(&dir, &options(big, 256)).unwrap();
    let data = payload(77, 10_000);
    assert_eq!(w.append(&data, Some(5)).unwrap(), 0);
    assert_eq!(w.segments()[0].file_bytes, big as u64, "the writer should have replaced segment 0");
    assert_eq!(r.refresh().unwrap(), 1);
    assert_eq!(r.segments().len(), 1);
    assert_eq!(r.segments()[0].file_bytes, big as u64);
    let rec = r.read(0).unwrap().unwrap();
    assert_eq!((rec.payload, rec.timestamp), (&data[..], 5));
    assert_eq!(w.append(b"after", Some(6)).unwrap(), 1);
    assert_eq!(r.refresh().unwrap(), 2);
    assert_eq!(r.read(1).unwrap().unwrap().payload, b"after");
    w.close().unwrap();
}

// ---- 3. a reader never writes, whatever state the directory is in ----

/// The kind of damage a crash (or an old version) can leave behind.
#[derive(Clone, Copy, Debug)]
enum Damage {
    TornTailGarbage,
    TornTailZeros,
    /// The last record of a trailing batch of 4 is torn.
    TornBatch,
    /// The last record of a trailing batch of 4 never reached the file (clean end).
    UnfinishedBatch,
    MissingIndexes,
    LeftoverTempFiles,
    NoLockFile,
    Everything,
}

/// Builds a closed log over several 4 KiB segments, ending with a batch of 4 if `batch`.
fn closed_log(dir: &Path, batch: bool) -> Vec<(Vec<u8>, u64)> {
    let mut w = open_writer(dir, SMALL_SEGMENT);
    let mut expected = Vec::new();
    for i in 0..60u64 {
        let data = payload(i, 100 + (i as usize * 13) % 90);
        assert_eq!(w.append(&data, Some(10 + i)).unwrap(), i);
        expected.push((data, 10 + i));
    }
    if batch {
        append_batch_next(&mut w, &mut expected, 4, 120);
    }
    assert!(w.segments().len() >= 3);
    w.close().unwrap();
    expected
}

/// Damages `dir` (a closed log) and returns how many records a reader may show.
fn damage(dir: &Path, how: Damage, n: u64, rng: &mut Rng) -> u64 {
    let bases = segment_bases(dir);
    let last_base = *bases.last().unwrap();
    let tear_last = |garbage: bool, rng: &mut Rng| {
        let (base, f) = locate_frame(dir, n - 1);
        let mut seg = fs::read(seg_path(dir, base)).unwrap();
        let from = f.start + 10;
        if garbage {
            seg[from..f.end()].copy_from_slice(&rng.nonzero_bytes(f.end() - from));
        } else {
            seg[f.start + 40..f.end()].fill(0);
        }
        fs::write(seg_path(dir, base), &seg).unwrap();
    };
    let forget_last = || {
        let (base, f) = locate_frame(dir, n - 1);
        let mut seg = fs::read(seg_path(dir, base)).unwrap();
        seg[f.start..f.end()].fill(0);
        fs::write(seg_path(dir, base), &seg).unwrap();
    };
    let remove_indexes = || {
        for b in &bases {
            let _ = fs::remove_file(idx_path(dir, *b));
        }
    };
    let add_temp_files = |rng: &mut Rng| {
        fs::write(dir.join(format!("{}.tmp", seg_name(n))), rng.nonzero_bytes(4096)).unwrap();
        fs::write(dir.join(format!("{}.tmp", idx_name(last_base))), b"half an index").unwrap();
    };
    let remove_lock = || fs::remove_file(dir.join(seglog_core::LOCK_FILE_NAME)).unwrap();
    match how {
        Damage::TornTailGarbage => {
            tear_last(true, rng);
            n - 1
        }
        Damage::TornTailZeros => {
            tear_last(false, rng);
            n - 1
        }
        Damage::TornBatch => {
            tear_last(false, rng);
            n - 4
        }
        Damage::UnfinishedBatch => {
            forget_last();
            n - 4
        }
        Damage::MissingIndexes => {
            remove_indexes();
            n
        }
        Damage::LeftoverTempFiles => {
            add_temp_files(rng);
            n
        }
        Damage::NoLockFile => {
            remove_lock();
            n
        }
        Damage::Everything => {
            tear_last(true, rng);
            remove_indexes();
            add_temp_files(rng);
            remove_lock();
            n - 4
        }
    }
}

#[test]
fn a_reader_never_writes_and_shows_only_the_valid_prefix() {
    let cases = [
        (Damage::TornTailGarbage, false),
        (Damage::TornTailZeros, false),
        (Damage::TornBatch, true),
        (Damage::UnfinishedBatch, true),
        (Damage::MissingIndexes, false),
        (Damage::LeftoverTempFiles, false),
        (Damage::NoLockFile, false),
        (Damage::Everything, true),
    ];
    let mut rng = Rng::new(7);
    for (how, batch) in cases {
        let what = format!("{how:?}");
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("log");
        let expected = closed_log(&dir, batch);
        let n = expected.len() as u64;
        let visible = damage(&dir, how, n, &mut rng);
        let before = snapshot(&dir);

        // A reader that stays open while a writer recovers the log later.
        let mut follower = open_reader(&dir, SMALL_SEGMENT);
        {
            let mut r = open_reader(&dir, SMALL_SEGMENT);
            assert_eq!(r.refresh().unwrap(), visible, "{what}");
            assert_eq!(r.refresh().unwrap(), visible, "{what}");
            assert_records(&r, &expected[..visible as usize]);
            assert_eq!(r.iter(0, u64::MAX).count() as u64, visible, "{what}");
            let mut buf = vec![0u8; 1 << 20];
            let out = r.read_frames_into(0, u64::MAX, usize::MAX, &mut buf).unwrap();
            assert_eq!(out.records, visible, "{what}");
            assert_eq!(r.segments().len(), segment_bases(&dir).len(), "{what}");
            // What the reader cannot see yet (a torn tail, an open batch) is not a problem.
            assert_eq!(r.verify().unwrap().problem, None, "{what}: verify on the reader");
            assert!(r.recovery_report().temp_files_removed.is_empty(), "{what}");
            assert!(r.recovery_report().truncation.is_none(), "{what}: a reader reported a cut");
            expect_code(r.append(b"no", None), "ERR_SEGLOG_READ_ONLY");
            r.close().unwrap();
        }
        assert_eq!(follower.refresh().unwrap(), visible, "{what}");
        assert_same_dir(&before, &snapshot(&dir), &what);

        // A writer then recovers normally, to exactly what the reader showed.
        let mut w = open_writer(&dir, SMALL_SEGMENT);
        assert_eq!(w.next_offset(), visible, "{what}: the writer recovered a different prefix");
        assert_records(&w, &expected[..visible as usize]);
        assert_eq!(w.verify().unwrap().problem, None, "{what}");
        match w.recovery_report().truncation.as_ref() {
            Some(t) => assert_eq!(t.first_dropped_offset, visible, "{what}"),
            None => assert_eq!(visible, n, "{what}: the writer cut nothing although the reader hid records"),
        }
        assert!(!file_names(&dir).iter().any(|f| f.ends_with(".tmp")), "{what}: temp files left");

        // The reader that stayed open sees the writer's new records where the damage was.
        let mut now = expected[..visible as usize].to_vec();
        for _ in 0..3 {
            let o = now.len() as u64;
            let data = payload(0xF00 + o, 64);
            assert_eq!(w.append(&data, Some(o)).unwrap(), o, "{what}");
            now.push((data, o));
        }
        assert_eq!(follower.refresh().unwrap(), visible + 3, "{what}: the reader lost the writer after recovery");
        assert_records(&follower, &now);
        assert_same_frames(&follower, &w, 0, visible + 3);
        w.close().unwrap();
        follower.close().unwrap();
        let w = open_writer(&dir, SMALL_SEGMENT);
        assert_eq!(w.recovery_report().truncation, None, "{what}");
        assert_records(&w, &now);
    }
}

#[test]
fn a_reader_of_a_missing_directory_fails_without_creating_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("nope");
    match Log::open(&dir, &reader_opts(SMALL_SEGMENT)) {
        Ok(_) => panic!("a reader opened a directory that does not exist"),
        Err(e) => assert_eq!(e.code(), "ERR_SEGLOG_IO", "{e}"),
    }
    assert!(!dir.exists(), "a reader created the log directory");
}

// ---- 4. locking ----

#[test]
fn a_reader_takes_no_lock_and_a_second_writer_is_still_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let mut w = open_writer(&dir, SMALL_SEGMENT);
    let mut expected = Vec::new();
    for _ in 0..10 {
        append_next(&mut w, &mut expected);
    }
    let mut r1 = open_reader(&dir, SMALL_SEGMENT);
    let mut r2 = open_reader(&dir, SMALL_SEGMENT);
    assert_records(&r1, &expected);

    match Log::open(&dir, &writer_opts(SMALL_SEGMENT)) {
        Ok(_) => panic!("a second writer opened while the first holds the lock"),
        Err(e) => {
            assert!(matches!(e, Error::Locked { .. }), "{e}");
            assert_eq!(e.code(), "ERR_SEGLOG_LOCKED");
        }
    }
    // The refused open disturbed neither the writer nor the readers.
    append_next(&mut w, &mut expected);
    assert_eq!(r1.refresh().unwrap(), 11);
    assert_eq!(r2.refresh().unwrap(), 11);
    w.close().unwrap();

    // Readers hold no lock: a new writer opens while they are open, and they follow it.
    let mut w2 = open_writer(&dir, SMALL_SEGMENT);
    append_next(&mut w2, &mut expected);
    assert_eq!(r1.refresh().unwrap(), 12);
    assert_records(&r1, &expected);
    match Log::open(&dir, &writer_opts(SMALL_SEGMENT)) {
        Ok(_) => panic!("a second writer opened while the new writer holds the lock"),
        Err(e) => assert_eq!(e.code(), "ERR_SEGLOG_LOCKED", "{e}"),
    }
    w2.close().unwrap();
    r1.close().unwrap();
    r2.close().unwrap();
}

// ---- 5. writes on a reader ----

#[test]
fn every_write_on_a_reader_is_refused_and_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let mut w = open_writer(&dir, SMALL_SEGMENT);
    let mut expected = Vec::new();
    while w.segments().len() < 2 {
        append_next(&mut w, &mut expected);
    }
    let n = w.next_offset();
    let mut r = open_reader(&dir, SMALL_SEGMENT);
    let before = snapshot(&dir);

    #[track_caller]
    fn read_only<T>(what: &str, result: Result<T, Error>) {
        match result {
            Ok(_) => panic!("{what} succeeded on a reader"),
            Err(e) => {
                assert!(matches!(e, Error::ReadOnly), "{what}: {e}");
                assert_eq!(e.code(), "ERR_SEGLOG_READ_ONLY", "{what}");
            }
        }
    }
    read_only("append", r.append(b"x", None));
    read_only("append (empty payload, explicit timestamp)", r.append(&[], Some(1)));
    // A record the reader sees as too large is still refused as a write on a reader.
    read_only("append (bigger than any segment)", r.append(&vec![1u8; 8192], None));
    read_only("append_batch", r.append_batch([&b"a"[..], &b"b"[..]], None));
    read_only("append_batch (empty)", r.append_batch(std::iter::empty::<&[u8]>(), None));
    read_only("append_packed", r.append_packed(b"abc", &[1, 2], None));
    read_only("flush", r.flush());
    read_only("sync", r.sync());
    read_only("begin_sync", r.begin_sync());

    assert!(r.poisoned().is_none(), "a refused write poisoned the reader");
    assert_eq!(r.next_offset(), n);
    assert_eq!(r.refresh().unwrap(), n);
    assert_records(&r, &expected);
    assert_eq!(w.next_offset(), n);
    assert_same_dir(&before, &snapshot(&dir), "refused writes");
    // The writer is unaffected and the reader still follows it.
    append_next(&mut w, &mut expected);
    assert_eq!(r.refresh().unwrap(), n + 1);
    r.close().unwrap();
    w.close().unwrap();
}

// ---- 6. durability API ----

#[test]
fn durable_offset_follows_syncs_flushes_and_opens() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let seg = 1 << 20;
    let mut log = open_writer(&dir, seg);
    let mut expected = Vec::new();
    assert_eq!((log.durable_offset(), log.next_offset()), (0, 0));
    for _ in 0..100 {
        append_next(&mut log, &mut expected);
    }
    assert_eq!(log.durable_offset(), 0, "appends alone are not durable");
    assert_eq!(log.sync().unwrap(), 100);
    assert_eq!(log.durable_offset(), 100);

    // Nothing new: ok, same answer, and cheap.
    let t = Instant::now();
    for _ in 0..1000 {
        assert_eq!(log.sync().unwrap(), 100);
    }
    assert!(t.elapsed() < Duration::from_secs(2), "1000 syncs with nothing new took {:?}", t.elapsed());
    let req = log.begin_sync().unwrap();
    assert_eq!(req.target, 100);
    let res = req.run();
    assert_eq!(log.complete_sync(&req, res).unwrap(), 100);

    // A sync run on another thread while the writer goes on appending covers only what
    // was appended before begin_sync.
    for _ in 0..50 {
        append_next(&mut log, &mut expected);
    }
    let req = log.begin_sync().unwrap();
    assert_eq!(req.target, 150);
    let start = Arc::new(Barrier::new(2));
    let syncer = {
        let start = Arc::clone(&start);
        thread::spawn(move || {
            start.wait();
            let result = req.run();
            (req, result)
        })
    };
    start.wait();
    for _ in 0..50 {
        append_next(&mut log, &mut expected);
    }
    let (req, result) = syncer.join().unwrap();
    result.unwrap();
    assert_eq!(log.complete_sync(&req, Ok(())).unwrap(), 150);
    assert_eq!((log.durable_offset(), log.next_offset()), (150, 200), "records after begin_sync counted as durable");
    assert_eq!(log.sync().unwrap(), 200);

    // Two syncs in flight completing out of order: the durable offset never goes back.
    append_next(&mut log, &mut expected);
    let first = log.begin_sync().unwrap();
    append_next(&mut log, &mut expected);
    let second = log.begin_sync().unwrap();
    assert_eq!((first.target, second.target), (201, 202));
    let (a, b) = thread::scope(|s| {
        let a = s.spawn(|| first.run());
        let b = s.spawn(|| second.run());
        (a.join().unwrap(), b.join().unwrap())
    });
    assert_eq!(log.complete_sync(&second, b).unwrap(), 202);
    assert_eq!(log.complete_sync(&first, a).unwrap(), 202, "an older sync moved durable_offset back");
    assert_eq!(log.durable_offset(), 202);

    // flush() makes everything durable too.
    for _ in 0..5 {
        append_next(&mut log, &mut expected);
    }
    log.flush().unwrap();
    assert_eq!(log.durable_offset(), 207);
    log.close().unwrap();

    // After open, everything present is durable.
    let log = open_writer(&dir, seg);
    assert_eq!((log.durable_offset(), log.next_offset()), (207, 207));
    assert_records(&log, &expected);
}

#[test]
fn a_roll_makes_the_sealed_segment_durable_and_pending_syncs_never_move_durable_back() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let mut log = open_writer(&dir, SMALL_SEGMENT);
    let mut expected = Vec::new();
    append_next(&mut log, &mut expected);
    let pending = log.begin_sync().unwrap();
    assert_eq!(pending.target, 1);
    while log.segments().len() < 2 {
        append_next(&mut log, &mut expected);
    }
    let base = log.segments()[1].base_offset;
    assert_eq!(log.durable_offset(), base, "a roll syncs the sealed segment");
    // The sync begun before the roll completes late: durable stays at the roll's.
    let result = pending.run();
    assert_eq!(log.complete_sync(&pending, result).unwrap(), base);
    while log.segments().len() < 4 {
        append_next(&mut log, &mut expected);
    }
    let base = log.segments()[3].base_offset;
    assert_eq!(log.durable_offset(), base);
    assert!(log.next_offset() > base);
    assert_eq!(log.sync().unwrap(), log.next_offset());
    log.close().unwrap();
    let log = open_writer(&dir, SMALL_SEGMENT);
    assert_eq!(log.durable_offset(), log.next_offset());
    assert_records(&log, &expected);
}

#[test]
fn a_log_and_a_sync_request_can_move_to_other_threads() {
    fn send<T: Send>() {}
    send::<Log>();
    send::<seglog_core::SyncRequest>();
}

// ---- 7. a reader thread against a writer thread ----

const LIVE_RECORDS: u64 = 200_000;
const LIVE_SEGMENT: usize = 256 << 10;

/// The plan both threads derive the records from: batch start offsets (each batch is one
/// `append` or one atomic `append_batch`), and each record's payload and timestamp.
struct Plan {
    /// `true` at every offset where a batch starts (and at `LIVE_RECORDS`).
    boundary: Vec<bool>,
    /// The first offset of the batch holding each offset.
    batch_of: Vec<u64>,
}

impl Plan {
    fn new() -> Plan {
        let mut rng = Rng::new(2024);
        let mut boundary = vec![false; LIVE_RECORDS as usize + 1];
        let mut batch_of = vec![0; LIVE_RECORDS as usize];
        let mut o = 0u64;
        while o < LIVE_RECORDS {
            boundary[o as usize] = true;
            let size = if rng.below(10) < 7 { 1 } else { 2 + rng.below(15) };
            let size = size.min(LIVE_RECORDS - o);
            for k in o..o + size {
                batch_of[k as usize] = o;
            }
            o += size;
        }
        boundary[LIVE_RECORDS as usize] = true;
        Plan { boundary, batch_of }
    }

    fn payload(&self, o: u64) -> Vec<u8> {
        let len = ((o * 13) % 48) as usize;
        let mut p = o.to_le_bytes().to_vec();
        p.extend(payload(o, len));
        p
    }

    fn timestamp(&self, o: u64) -> u64 {
        1_700_000_000_000 + self.batch_of[o as usize]
    }
}

/// Refreshes in a loop until everything is seen, checking each new record and that the
/// visible end is always a batch boundary. Returns the reader's segment layout.
fn follow(mut r: Log, plan: &Plan, deadline: Instant) -> (Vec<(u64, u64, u64, u64)>, u64) {
    let mut seen = r.next_offset();
    assert!(plan.boundary[seen as usize], "reader opened showing part of the batch starting at {}", plan.batch_of[seen as usize]);
    let mut refreshes = 0u64;
    let mut buf = vec![0u8; 64 << 10];
    // Records seen at open must check out too.
    let mut checked = 0u64;
    loop {
        while checked < seen {
            let o = checked;
            let rec = r.read(o).unwrap_or_else(|e| panic!("reader: read({o}) failed: {e}")).unwrap_or_else(|| panic!("reader: offset {o} missing"));
            assert_eq!(rec.offset, o);
            assert!(rec.payload == plan.payload(o), "reader: payload of offset {o} differs");
            assert_eq!(rec.timestamp, plan.timestamp(o), "reader: timestamp of offset {o}");
            checked += 1;
        }
        if seen == LIVE_RECORDS {
            break;
        }
        assert!(Instant::now() < deadline, "reader stuck at {seen} of {LIVE_RECORDS} after {refreshes} refreshes");
        let next = r.refresh().unwrap_or_else(|e| panic!("reader: refresh failed at {seen}: {e}"));
        refreshes += 1;
        assert!(next >= seen, "reader went back from {seen} to {next}");
        assert!(next <= LIVE_RECORDS, "reader sees {next} records, more than were written");
        assert!(plan.boundary[next as usize], "reader sees part of the batch starting at {}: next_offset {next}", plan.batch_of[next as usize]);
        if next > seen && refreshes & 63 == 0 {
            // Now and then, bulk copies of the new records as well.
            let out = r.read_frames_into(seen, next - seen, usize::MAX, &mut buf).unwrap();
            for c in parse_copied_frames(&buf[..out.bytes], seen) {
                assert!(c.payload == plan.payload(c.offset), "reader: copied payload of {} differs", c.offset);
            }
        }
        if seen / 25_000 != next / 25_000 {
            // verify on a reader of a live log checks what it has seen, and finds no problem.
            let report = r.verify().unwrap_or_else(|e| panic!("reader: verify failed at {next}: {e}"));
            assert_eq!(report.problem, None, "reader: verify at {next}");
            assert_eq!(report.records, next, "reader: verify counted a different number of records");
        }
        if next == seen {
            thread::yield_now();
        }
        seen = next;
    }
    assert_eq!(r.refresh().unwrap(), LIVE_RECORDS);
    assert!(r.read(LIVE_RECORDS).unwrap().is_none());
    let l = layout(&r);
    r.close().unwrap();
    (l, refreshes)
}

#[test]
fn reader_threads_follow_a_writer_thread_through_200k_records_and_many_rolls() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    fs::create_dir(&dir).unwrap();
    let plan = Arc::new(Plan::new());
    let progress = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(60);

    // Opened on an empty directory, before the writer exists.
    let early = {
        let plan = Arc::clone(&plan);
        let r = open_reader(&dir, LIVE_SEGMENT);
        assert_eq!(r.next_offset(), 0);
        thread::spawn(move || follow(r, &plan, deadline))
    };
    let writer = {
        let (dir, plan, progress) = (dir.clone(), Arc::clone(&plan), Arc::clone(&progress));
        thread::spawn(move || {
            let mut w = open_writer(&dir, LIVE_SEGMENT);
            let mut o = 0u64;
            let mut syncs = 0;
            while o < LIVE_RECORDS {
                let mut end = o + 1;
                while !plan.boundary[end as usize] {
                    end += 1;
                }
                let ts = Some(plan.timestamp(o));
                if end == o + 1 {
                    assert_eq!(w.append(&plan.payload(o), ts).unwrap(), o);
                } else {
                    let batch: Vec<Vec<u8>> = (o..end).map(|k| plan.payload(k)).collect();
                    assert_eq!(w.append_batch(batch.iter().map(|p| p.as_slice()), ts).unwrap(), o);
                }
                let before = o;
                o = end;
                if before / 20_000 != o / 20_000 {
                    assert_eq!(w.sync().unwrap(), o);
                    syncs += 1;
                }
                progress.store(o, Ordering::Release);
            }
            assert!(syncs >= 5);
            let l = layout(&w);
            w.close().unwrap();
            l
        })
    };
    // Opened mid-stream, while the writer is busy.
    let late = {
        let (dir, plan, progress) = (dir.clone(), Arc::clone(&plan), Arc::clone(&progress));
        thread::spawn(move || {
            while progress.load(Ordering::Acquire) < LIVE_RECORDS / 4 {
                assert!(Instant::now() < deadline, "the writer never got a quarter of the way");
                thread::sleep(Duration::from_millis(1));
            }
            follow(open_reader(&dir, LIVE_SEGMENT), &plan, deadline)
        })
    };
    let wl = writer.join().expect("writer thread panicked");
    let (el, er) = early.join().expect("early reader panicked");
    let (ll, _) = late.join().expect("late reader panicked");
    assert!(wl.len() >= 20, "expected many rolls, got {} segments", wl.len());
    assert_eq!(el, wl, "early reader's segments differ from the writer's");
    assert_eq!(ll, wl, "late reader's segments differ from the writer's");
    assert!(er > 1, "the early reader should have caught up in several refreshes");

    let log = open_writer(&dir, LIVE_SEGMENT);
    assert_eq!(log.next_offset(), LIVE_RECORDS);
    assert_eq!(log.verify().unwrap().problem, None);
}

// ---- verify on a reader ----

/// `verify` on a reader checks what the reader shows. Records the writer appended since
/// the reader's last refresh are not corruption.
#[test]
fn verify_on_a_reader_behind_the_writer_finds_no_problem() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let mut w = open_writer(&dir, 1 << 20);
    let mut expected = Vec::new();
    for _ in 0..10 {
        append_next(&mut w, &mut expected);
    }
    let mut r = open_reader(&dir, 1 << 20);
    assert_eq!(r.verify().unwrap().problem, None, "reader in step with the writer");
    append_next(&mut w, &mut expected);
    let report = r.verify().unwrap();
    assert_eq!(report.next_offset, 10);
    assert_eq!(report.problem, None, "a record not yet refreshed was reported as a problem");
    assert_eq!(r.refresh().unwrap(), 11);
    assert_eq!(r.verify().unwrap().problem, None);
    w.close().unwrap();
}
