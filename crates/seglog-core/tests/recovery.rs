//! Writer recovery of the active segment (FORMAT.md 6, DURABILITY.md rule 5): a tail torn
//! at any byte (zeros or garbage) is cut back to the last whole record and reported, an
//! atomic batch loses all its records or none, and bytes from before a crash can never be
//! resurrected behind records written after it. Guards against losing acknowledged
//! records, keeping half-written ones, silent cuts, and a log that opens with a hole in it.

mod common;

use std::fs;
use std::path::Path;

use common::*;
use seglog_core::{Log, Options, Truncation};

const SEGMENT_BYTES: usize = 4096;

fn opts(index_interval_bytes: usize) -> Options {
    options(SEGMENT_BYTES, index_interval_bytes)
}

/// Writes one record of each size in `sizes`, closes the log and returns its snapshot.
fn closed_log(dir: &Path, opts: &Options, sizes: &[usize]) -> (Snapshot, Vec<(Vec<u8>, u64)>) {
    let mut log = Log::open(dir, opts).unwrap();
    let mut expected = Vec::new();
    for (i, &len) in sizes.iter().enumerate() {
        let data = payload(i as u64, len);
        log.append(&data, Some(100 + i as u64)).unwrap();
        expected.push((data, 100 + i as u64));
    }
    log.close().unwrap();
    (snapshot(dir), expected)
}

/// The truncation FORMAT.md 6.4 prescribes for a cut at `frame` in `seg` (damaged bytes),
/// with an empty reason: `assert_truncation` checks only that the reason is not empty.
fn expected_truncation(dir: &Path, base: u64, seg: &[u8], frame: &FramePos, records_dropped: u64) -> Truncation {
    let last = last_nonzero_from(seg, frame.start).expect("damage left non-zero bytes");
    Truncation {
        segment: seg_path(dir, base),
        position: frame.start as u64,
        first_dropped_offset: frame.offset,
        bytes_dropped: (last + 1 - frame.start) as u64,
        records_dropped,
        reason: String::new(),
    }
}

/// Checks a truncation against `want`, ignoring the wording of the reason.
#[track_caller]
fn assert_truncation(got: &Option<Truncation>, want: &Truncation, what: &str) {
    let got = got.as_ref().unwrap_or_else(|| panic!("{what}: no truncation reported"));
    assert!(!got.reason.is_empty(), "{what}: empty reason");
    let got = Truncation { reason: want.reason.clone(), ..got.clone() };
    assert_eq!(&got, want, "{what}");
}

/// After recovery: appending continues at `next`, and a second reopen cuts nothing.
#[track_caller]
fn assert_appends_then_reopens_clean(
    dir: &Path,
    opts: &Options,
    mut log: Log,
    expected: &[(Vec<u8>, u64)],
    what: &str,
) {
    assert_eq!(log.verify().unwrap().problem, None, "{what}: verify after recovery");
    let next = expected.len() as u64;
    let fresh = payload(0xF00D + next, 33);
    assert_eq!(log.append(&fresh, Some(7)).unwrap(), next, "{what}: append after recovery");
    log.close().unwrap();
    let log = Log::open(dir, opts).unwrap();
    assert_eq!(log.recovery_report().truncation, None, "{what}: second reopen");
    let mut all = expected.to_vec();
    all.push((fresh, 7));
    assert_records(&log, &all);
}

enum Tear {
    Zeros,
    Garbage,
}

/// For every byte k of the last record's frame, overwrites `[k, frame end)` and recovers.
fn tear_last_record_at_every_byte(tear: Tear) {
    let tmp = tempfile::tempdir().unwrap();
    let opts = opts(256);
    let sizes: Vec<usize> = (0..40).map(|i| if i == 39 { 150 } else { (i * 53) % 200 }).collect();
    let (snap, expected) = closed_log(&tmp.path().join("pristine"), &opts, &sizes);
    let n = expected.len() as u64;
    let (base, frame) = locate_frame(&tmp.path().join("pristine"), n - 1);
    assert!(base > 0, "the log should have a sealed segment");
    let mut rng = Rng::new(42);
    let dir = tmp.path().join("log");

    for k in frame.start..frame.end() {
        let what = format!("tail overwritten from byte {k} (frame {}..{})", frame.start, frame.end());
        let damaged = edited(&snap, &seg_name(base), |seg| match tear {
            Tear::Zeros => seg[k..frame.end()].fill(0),
            Tear::Garbage => seg[k..frame.end()].copy_from_slice(&rng.nonzero_bytes(frame.end() - k)),
        });
        let seg = file_bytes(&damaged, &seg_name(base)).to_vec();
        restore(&damaged, &dir);

        let log = Log::open(&dir, &opts).unwrap_or_else(|e| panic!("{what}: open failed: {e}"));
        assert_records(&log, &expected[..n as usize - 1]);
        // A zero frame_len is a clean end of data (FORMAT.md 2.2); anything else is a cut.
        if frame_len_of(&seg, frame.start) == 0 {
            assert_eq!(log.recovery_report().truncation, None, "{what}: a zero length is a clean end");
        } else {
            let want = expected_truncation(&dir, base, &seg, &frame, 0);
            assert_truncation(&log.recovery_report().truncation, &want, &what);
        }
        assert_appends_then_reopens_clean(&dir, &opts, log, &expected[..n as usize - 1], &what);
    }
}

#[test]
fn a_tail_torn_to_zeros_at_any_byte_of_the_last_record_is_cut() {
    tear_last_record_at_every_byte(Tear::Zeros);
}

#[test]
fn a_tail_torn_to_garbage_at_any_byte_of_the_last_record_is_cut() {
    tear_last_record_at_every_byte(Tear::Garbage);
}

/// Writes 6 single records then a batch of 4 as the last thing, and closes or drops.
fn log_ending_in_a_batch(dir: &Path, opts: &Options, close: bool) -> (Snapshot, Vec<(Vec<u8>, u64)>) {
    let mut log = Log::open(dir, opts).unwrap();
    let mut expected = Vec::new();
    for i in 0..6u64 {
        let data = payload(i, 90);
        log.append(&data, Some(i)).unwrap();
        expected.push((data, i));
    }
    let batch: Vec<Vec<u8>> = (0..4u64).map(|i| payload(50 + i, 60 + 8 * i as usize)).collect();
    assert_eq!(log.append_batch(batch.iter().map(|p| p.as_slice()), Some(99)).unwrap(), 6);
    if close {
        log.close().unwrap();
    } else {
        drop(log);
    }
    (snapshot(dir), expected)
}

type Damage = fn(&mut [u8], &FramePos);

fn zero_tail_of(seg: &mut [u8], f: &FramePos) {
    seg[f.start + 40..f.end()].fill(0)
}

fn zero_whole(seg: &mut [u8], f: &FramePos) {
    seg[f.start..f.end()].fill(0)
}

/// Damages record `victim` of the batch 6..=9 written by `log_ending_in_a_batch` and checks
/// that recovery keeps records 0..6 only and reports a cut at record 6. Returns the reason.
/// With `without_index`, the active segment's index file is removed too: the state a
/// crash leaves when no index covering the batch reached the disk (an index is written
/// only over synced data, FORMAT.md 4).
fn recover_damaged_batch(
    interval: usize,
    close: bool,
    victim: u64,
    damage: Damage,
    well_formed: u64,
    what: &str,
    without_index: bool,
) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let opts = opts(interval);
    let (snap, expected) = log_ending_in_a_batch(&tmp.path().join("pristine"), &opts, close);
    let (base, frame) = locate_frame(&tmp.path().join("pristine"), victim);
    let (_, first) = locate_frame(&tmp.path().join("pristine"), 6);
    let mut damaged = edited(&snap, &seg_name(base), |seg| damage(seg, &frame));
    if without_index {
        damaged.retain(|(n, _)| n != &idx_name(base));
    }
    let seg = file_bytes(&damaged, &seg_name(base)).to_vec();
    let dir = tmp.path().join("log");
    restore(&damaged, &dir);

    let log = Log::open(&dir, &opts).unwrap_or_else(|e| panic!("{what}: open failed: {e}"));
    assert_eq!(log.next_offset(), 6, "{what}: records of the batch survived");
    assert_records(&log, &expected);
    let t = log.recovery_report().truncation.clone();
    let want = expected_truncation(&dir, base, &seg, &first, well_formed);
    assert_truncation(&t, &want, what);
    assert_appends_then_reopens_clean(&dir, &opts, log, &expected, what);
    t.unwrap().reason
}

#[test]
fn a_batch_whose_last_record_is_torn_is_dropped_whole() {
    let cases: [(usize, bool, &str, Damage); 3] = [
        (256, true, "last record zeroed whole", zero_whole),
        (256, true, "last record's tail zeroed", zero_tail_of),
        (64, false, "last record's tail zeroed, every record indexed, dropped without close", zero_tail_of),
    ];
    let mut unexplained = Vec::new();
    for (interval, close, how, damage) in cases {
        let what = format!("batch 6..=9, {how}");
        let reason = recover_damaged_batch(interval, close, 9, damage, 3, &what, false);
        if !reason.to_lowercase().contains("batch") {
            unexplained.push(format!("{what}: {reason:?}"));
        }
    }
    // The cut starts at the batch's first record, which is intact: a reason that only
    // describes the damaged record points the reader at the wrong place.
    assert!(unexplained.is_empty(), "truncation reasons that do not mention the batch: {unexplained:#?}");
}

#[test]
fn a_batch_torn_in_its_middle_is_dropped_whole() {
    recover_damaged_batch(256, true, 7, zero_tail_of, 1, "batch 6..=9, second record's tail zeroed", true);
    recover_damaged_batch(
        64,
        true,
        8,
        zero_tail_of,
        2,
        "batch 6..=9, third record's tail zeroed, every record indexed",
        true,
    );
}

#[test]
fn a_torn_batch_that_opened_a_new_segment_leaves_it_empty() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let opts = opts(256);
    let mut log = Log::open(&dir, &opts).unwrap();
    let mut expected = Vec::new();
    while log.segments()[0].data_bytes < 3000 {
        let o = expected.len() as u64;
        let data = payload(o, 200);
        log.append(&data, Some(o)).unwrap();
        expected.push((data, o));
    }
    let batch: Vec<Vec<u8>> = (0..5u64).map(|i| payload(70 + i, 300)).collect();
    let first = log.append_batch(batch.iter().map(|p| p.as_slice()), Some(1)).unwrap();
    assert_eq!(log.segments().len(), 2, "the batch should have rolled to a new segment");
    assert_eq!(log.segments()[1].base_offset, first);
    log.close().unwrap();
    let (base, last) = locate_frame(&dir, first + 4);
    let mut seg = fs::read(seg_path(&dir, base)).unwrap();
    seg[last.start + 40..last.end()].fill(0);
    fs::write(seg_path(&dir, base), &seg).unwrap();

    let log = Log::open(&dir, &opts).unwrap();
    assert_records(&log, &expected);
    let t = log.recovery_report().truncation.clone().expect("a cut batch is reported");
    assert_eq!((t.first_dropped_offset, t.position, t.records_dropped), (first, 64, 4));
    let segs = log.segments();
    assert_eq!((segs.len(), segs[1].base_offset, segs[1].records), (2, first, 0));
    assert_appends_then_reopens_clean(&dir, &opts, log, &expected, "empty active segment after a cut batch");
}

/// FORMAT.md 4 and 6.3: an index file covers only frames that were synced before it was
/// written, so damage behind its last entry cannot be a torn write. It must be reported
/// as corruption (by reads and verify, naming the offset), never cut (which would drop
/// the valid, durable records after it) and never returned as data.
#[test]
fn a_damaged_record_behind_the_durable_index_is_reported_not_cut() {
    let cases: [(&str, Damage); 3] = [
        ("frame_len zeroed", |seg, f| {
            let at = f.start + frame_len_field();
            seg[at..at + 4].fill(0)
        }),
        ("payload tail zeroed", |seg, f| seg[f.end() - 20..f.end()].fill(0)),
        ("one payload bit flipped", |seg, f| seg[f.end() - 1] ^= 0x10),
    ];
    for interval in [64, 256] {
        for (how, damage) in cases {
            let what = format!("record 5 of 10 with {how}, index interval {interval}");
            let tmp = tempfile::tempdir().unwrap();
            let dir = tmp.path().join("log");
            let opts = opts(interval);
            let (_, expected) = closed_log(&dir, &opts, &[100; 10]);
            let (base, frame) = locate_frame(&dir, 5);
            let mut seg = fs::read(seg_path(&dir, base)).unwrap();
            damage(&mut seg, &frame);
            fs::write(seg_path(&dir, base), &seg).unwrap();

            let log = Log::open(&dir, &opts).unwrap_or_else(|e| panic!("{what}: open failed: {e}"));
            assert_eq!(log.next_offset(), 10, "{what}: durable records were cut");
            assert_eq!(log.recovery_report().truncation, None, "{what}");
            for (o, (data, ts)) in expected[..5].iter().enumerate() {
                let r = log.read(o as u64).unwrap().unwrap();
                assert_eq!((r.payload, r.timestamp), (&data[..], *ts), "{what}: record {o}");
            }
            let e = log.read(5).expect_err(&format!("{what}: the damaged record was returned"));
            assert_eq!(e.code(), "ERR_SEGLOG_CORRUPT", "{what}: {e}");
            assert!(e.to_string().contains(&seg_name(base)) && e.to_string().contains("offset 5"), "{what}: {e}");
            for o in 6..10u64 {
                match log.read(o) {
                    Ok(Some(r)) => assert_eq!((r.payload, r.timestamp), (&expected[o as usize].0[..], expected[o as usize].1), "{what}"),
                    Ok(None) => panic!("{what}: record {o} missing"),
                    Err(e) => assert_eq!(e.code(), "ERR_SEGLOG_CORRUPT", "{what}: {e}"),
                }
            }
            let problem = log.verify().unwrap().problem.unwrap_or_else(|| panic!("{what}: verify missed it"));
            assert_eq!(problem.offset, Some(5), "{what}: {problem:?}");
        }
    }
}

/// FORMAT.md 6.5: the tail is zeroed on every writer open, so frames from before a crash
/// cannot line up behind records written after it.
#[test]
fn stale_frames_behind_a_clean_end_are_never_resurrected() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    // One index entry per segment: recovery walks every frame from the first.
    let opts = opts(4096);
    let (_, expected) = closed_log(&dir, &opts, &[100; 10]);
    let (base, r5) = locate_frame(&dir, 5);
    let (_, r9) = locate_frame(&dir, 9);
    let mut seg = fs::read(seg_path(&dir, base)).unwrap();
    let at = r5.start + frame_len_field();
    seg[at..at + 4].fill(0);
    fs::write(seg_path(&dir, base), &seg).unwrap();
    assert_eq!(frames_of_file(&seg_path(&dir, base)).len(), 5, "records 6..9 now sit behind a zero length");

    let mut log = Log::open(&dir, &opts).unwrap();
    assert_eq!(log.next_offset(), 5);
    let mut now = expected[..5].to_vec();
    // Four records of other sizes covering exactly the bytes of old records 5..8, so that the
    // new end of data is where old record 9 (offset 9, the next offset) starts.
    for (i, len) in [36usize, 164, 100, 100].into_iter().enumerate() {
        let data = payload(500 + i as u64, len);
        assert_eq!(log.append(&data, Some(9)).unwrap(), 5 + i as u64);
        now.push((data, 9));
    }
    assert_eq!(log.segments().last().unwrap().data_bytes as usize, r9.start, "new end of data at old record 9");
    log.close().unwrap();

    let log = Log::open(&dir, &opts).unwrap();
    assert_eq!(log.recovery_report().truncation, None);
    assert_records(&log, &now);
    assert_eq!(log.next_offset(), 9, "old record 9 was resurrected");
}

/// The issue's own scenario: the same sizes again, with new content.
#[test]
fn records_rewritten_after_a_torn_tail_replace_the_old_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let opts = opts(4096);
    let (_, expected) = closed_log(&dir, &opts, &[100; 10]);
    let (base, r5) = locate_frame(&dir, 5);
    let mut seg = fs::read(seg_path(&dir, base)).unwrap();
    let at = r5.start + frame_len_field();
    seg[at..at + 4].fill(0);
    fs::write(seg_path(&dir, base), &seg).unwrap();

    let mut log = Log::open(&dir, &opts).unwrap();
    assert_eq!(log.next_offset(), 5);
    let mut now = expected[..5].to_vec();
    for i in 5..10u64 {
        let data = payload(1000 + i, 100);
        assert_eq!(log.append(&data, Some(1)).unwrap(), i);
        now.push((data, 1));
    }
    log.close().unwrap();
    let log = Log::open(&dir, &opts).unwrap();
    assert_records(&log, &now);
    assert_eq!(log.next_offset(), 10);
}

#[test]
fn leftover_temp_files_are_removed_and_other_files_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let opts = opts(256);
    let (_, expected) = closed_log(&dir, &opts, &[300; 30]);
    let bases = segment_bases(&dir);
    let tmp_seg = dir.join(format!("{}.tmp", seg_name(bases.last().unwrap() + 1000)));
    let tmp_idx = dir.join(format!("{}.tmp", idx_name(bases[0])));
    fs::write(&tmp_seg, vec![0xEE; 4096]).unwrap();
    fs::write(&tmp_idx, b"partial").unwrap();
    fs::write(dir.join("notes.txt"), b"keep me").unwrap();

    let log = Log::open(&dir, &opts).unwrap();
    let mut removed = log.recovery_report().temp_files_removed.clone();
    removed.sort();
    let mut want = vec![tmp_seg.clone(), tmp_idx.clone()];
    want.sort();
    assert_eq!(removed, want);
    assert!(!tmp_seg.exists() && !tmp_idx.exists());
    assert_eq!(fs::read(dir.join("notes.txt")).unwrap(), b"keep me");
    assert_records(&log, &expected);
}
