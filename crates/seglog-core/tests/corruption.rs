//! Bit rot (DURABILITY.md rules 3 and 5): a flipped bit anywhere in a record or segment
//! header is detected. In a sealed segment it is corruption, reported with the segment
//! file, offset and position, never skipped, truncated or returned as data; in the last
//! record of the active segment it is a torn tail that recovery cuts; in an index file it
//! only costs a rebuild. `verify` finds damage and reports a healthy log as healthy.

mod common;

use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use common::*;
use seglog_core::format::SEGMENT_HEADER_LEN;
use seglog_core::{Error, Log, Options, Problem};

const SEGMENT_BYTES: usize = 4096;

fn opts() -> Options {
    options(SEGMENT_BYTES, 256)
}

/// A closed log of at least four segments. Payload sizes vary, but every frame_len is
/// 28 + 45 = 73 or more and never a power of two, so no single bit flip turns a length
/// into the zero that marks a clean end (that case has its own test below).
struct Pristine {
    snap: Snapshot,
    expected: Vec<(Vec<u8>, u64)>,
    bases: Vec<u64>,
}

fn pristine() -> Pristine {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("pristine");
    let mut log = Log::open(&dir, &opts()).unwrap();
    let mut expected = Vec::new();
    let mut i = 0u64;
    while log.segments().len() < 4 {
        let mut len = 45 + (i as usize * 29) % 120;
        if (28 + len).is_power_of_two() {
            len += 1;
        }
        let data = payload(i, len);
        log.append(&data, Some(1_000 + i)).unwrap();
        expected.push((data, 1_000 + i));
        i += 1;
    }
    let bases = log.segments().iter().map(|s| s.base_offset).collect();
    log.close().unwrap();
    Pristine { snap: snapshot(&dir), expected, bases }
}

/// Frames of segment `base` in a snapshot.
fn frames(snap: &Snapshot, base: u64) -> Vec<FramePos> {
    frames_in(file_bytes(snap, &seg_name(base)))
}

fn flip(bytes: &mut [u8], bit: usize) {
    bytes[bit / 8] ^= 1 << (bit % 8);
}

/// Checks that `err` is corruption reported in segment file `seg` with a message naming it,
/// and returns its offset and position.
#[track_caller]
fn assert_corrupt_in(err: &Error, seg: &Path, what: &str) -> (Option<u64>, Option<u64>) {
    assert_eq!(err.code(), "ERR_SEGLOG_CORRUPT", "{what}: {err}");
    let name = seg.file_name().unwrap().to_str().unwrap();
    assert!(err.to_string().contains(name), "{what}: message does not name {name}: {err}");
    match err {
        Error::Corrupt { path, offset, position, .. } => {
            assert_eq!(path, seg, "{what}: corruption reported in the wrong file: {err}");
            (*offset, *position)
        }
        other => panic!("{what}: not a Corrupt error: {other:?}"),
    }
}

#[track_caller]
fn open_err(dir: &Path, what: &str) -> Error {
    match Log::open(dir, &opts()) {
        Ok(log) => panic!("{what}: open succeeded with next_offset {}", log.next_offset()),
        Err(e) => e,
    }
}

/// Flips every bit of the frame of `victim` (a record of sealed segment `base`) in turn.
fn for_every_bit_of(snap: &Snapshot, base: u64, victim: &FramePos, mut check: impl FnMut(&Path, &str)) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    for bit in victim.start * 8..victim.end() * 8 {
        let what = format!("bit {} of byte {} (record {} at {})", bit % 8, bit / 8, victim.offset, victim.start);
        restore(&edited(snap, &seg_name(base), |seg| flip(seg, bit)), &dir);
        check(&dir, &what);
    }
}

#[test]
fn every_bit_flip_in_the_last_record_of_a_sealed_segment_fails_the_open() {
    let p = pristine();
    let base = p.bases[1];
    let victim = *frames(&p.snap, base).last().unwrap();
    for_every_bit_of(&p.snap, base, &victim, |dir, what| {
        let err = open_err(dir, what);
        let at = assert_corrupt_in(&err, &seg_path(dir, base), what);
        assert_eq!(at, (Some(victim.offset), Some(victim.start as u64)), "{what}: {err}");
    });
}

#[test]
fn every_bit_flip_in_a_sealed_segment_without_its_index_fails_the_open() {
    let p = pristine();
    let base = p.bases[1];
    let snap: Snapshot = p.snap.iter().filter(|(n, _)| *n != idx_name(base)).cloned().collect();
    let all = frames(&snap, base);
    for victim in [all[0], all[all.len() / 2]] {
        for_every_bit_of(&snap, base, &victim, |dir, what| {
            let err = open_err(dir, what);
            let at = assert_corrupt_in(&err, &seg_path(dir, base), what);
            assert_eq!(at, (Some(victim.offset), Some(victim.start as u64)), "{what}: {err}");
        });
    }
}

/// With a valid index, open checks only the frames after the sealed segment's last index
/// entry (FORMAT.md 6.2); damage before it must then surface as corruption on every read
/// that touches it and in `verify`, and no read may ever return wrong data.
#[test]
fn every_bit_flip_in_an_indexed_sealed_segment_is_reported_and_never_read_as_data() {
    let p = pristine();
    let base = p.bases[1];
    let all = frames(&p.snap, base);
    let victim = all[all.len() / 3];
    for_every_bit_of(&p.snap, base, &victim, |dir, what| {
        let log = match Log::open(dir, &opts()) {
            Err(e) => {
                assert_corrupt_in(&e, &seg_path(dir, base), what);
                return;
            }
            Ok(log) => log,
        };
        for (o, (data, ts)) in p.expected.iter().enumerate() {
            match log.read(o as u64) {
                Ok(Some(rec)) => {
                    assert!(rec.payload == &data[..] && rec.timestamp == *ts, "{what}: read({o}) returned wrong data")
                }
                Ok(None) => panic!("{what}: read({o}) returned None"),
                Err(e) => {
                    assert_corrupt_in(&e, &seg_path(dir, base), &format!("{what}, read({o})"));
                }
            }
        }
        let err = log.read(victim.offset).expect_err("the damaged record was read");
        assert_corrupt_in(&err, &seg_path(dir, base), what);
        let problem = log.verify().unwrap().problem.unwrap_or_else(|| panic!("{what}: verify found nothing"));
        assert_eq!(problem.segment, seg_path(dir, base), "{what}");
        assert_eq!((problem.offset, problem.position), (Some(victim.offset), Some(victim.start as u64)), "{what}");
    });
}

#[test]
fn bit_flips_in_every_field_of_a_sealed_index_file_only_rebuild_the_index() {
    let p = pristine();
    let base = p.bases[1];
    let name = idx_name(base);
    let len = file_bytes(&p.snap, &name).len();
    let entries = (len - 64) / 16;
    assert!(entries >= 3);
    // Every bit of the header and of the first, a middle and the last entry: together
    // every field the file has (each fsynced rebuild costs a few milliseconds).
    let bytes: Vec<usize> =
        (0..64).chain([0, entries / 2, entries - 1].iter().flat_map(|e| 64 + e * 16..80 + e * 16)).collect();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    for bit in bytes.iter().flat_map(|b| b * 8..b * 8 + 8) {
        let what = format!("bit {} of byte {} of {name}", bit % 8, bit / 8);
        restore(&edited(&p.snap, &name, |idx| flip(idx, bit)), &dir);
        let log = Log::open(&dir, &opts()).unwrap_or_else(|e| panic!("{what}: open failed: {e}"));
        assert_eq!(log.recovery_report().indexes_rebuilt, vec![idx_path(&dir, base)], "{what}");
        assert_records(&log, &p.expected);
        drop(log);
        assert_eq!(fs::read(idx_path(&dir, base)).unwrap(), file_bytes(&p.snap, &name), "{what}: rebuilt index");
    }
}

#[test]
fn every_bit_flip_in_the_last_record_of_the_active_segment_is_cut_as_a_torn_tail() {
    let p = pristine();
    let base = *p.bases.last().unwrap();
    let victim = *frames(&p.snap, base).last().unwrap();
    let n = p.expected.len();
    assert_eq!(victim.offset, n as u64 - 1);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    for bit in victim.start * 8..victim.end() * 8 {
        let what = format!("bit {} of byte {} (last record at {})", bit % 8, bit / 8, victim.start);
        let damaged = edited(&p.snap, &seg_name(base), |seg| flip(seg, bit));
        let seg = file_bytes(&damaged, &seg_name(base)).to_vec();
        restore(&damaged, &dir);
        let mut log = Log::open(&dir, &opts()).unwrap_or_else(|e| panic!("{what}: open failed: {e}"));
        assert_records(&log, &p.expected[..n - 1]);
        let t = log.recovery_report().truncation.clone().unwrap_or_else(|| panic!("{what}: no truncation reported"));
        assert_eq!(t.segment, seg_path(&dir, base), "{what}");
        assert_eq!(
            (t.position, t.first_dropped_offset, t.records_dropped),
            (victim.start as u64, n as u64 - 1, 0),
            "{what}"
        );
        let last = last_nonzero_from(&seg, victim.start).unwrap();
        assert_eq!(t.bytes_dropped, (last + 1 - victim.start) as u64, "{what}");
        assert_eq!(log.verify().unwrap().problem, None, "{what}");
        assert_eq!(log.append(b"after", Some(1)).unwrap(), n as u64 - 1, "{what}");
        log.close().unwrap();
        let log = Log::open(&dir, &opts()).unwrap();
        assert_eq!(log.recovery_report().truncation, None, "{what}: second reopen");
        assert_eq!(log.read(n as u64 - 1).unwrap().unwrap().payload, b"after");
    }
}

#[test]
fn every_bit_flip_in_a_segment_header_fails_the_open() {
    let p = pristine();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    for base in [p.bases[1], *p.bases.last().unwrap()] {
        for bit in 0..SEGMENT_HEADER_LEN * 8 {
            let what = format!("bit {} of header byte {} of segment {base}", bit % 8, bit / 8);
            restore(&edited(&p.snap, &seg_name(base), |seg| flip(seg, bit)), &dir);
            let err = open_err(&dir, &what);
            let (_, position) = assert_corrupt_in(&err, &seg_path(&dir, base), &what);
            assert_eq!(position, Some(0), "{what}");
        }
    }
}

/// A zero `frame_len` inside a sealed segment cannot be a torn write (FORMAT.md 6.2): the
/// open must fail and name the damaged segment, not the healthy one after it.
#[test]
fn a_zeroed_length_inside_a_sealed_segment_is_reported_in_that_segment() {
    let p = pristine();
    let base = p.bases[1];
    let all = frames(&p.snap, base);
    let victim = all[all.len() / 2];
    let at = victim.start + frame_len_field();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    for keep_index in [true, false] {
        let what = format!(
            "frame_len of record {} zeroed, index {}",
            victim.offset,
            if keep_index { "kept" } else { "deleted" }
        );
        let mut snap = edited(&p.snap, &seg_name(base), |seg| seg[at..at + 4].fill(0));
        if !keep_index {
            snap.retain(|(n, _)| *n != idx_name(base));
        }
        restore(&snap, &dir);
        match Log::open(&dir, &opts()) {
            Err(e) => {
                assert_corrupt_in(&e, &seg_path(&dir, base), &what);
            }
            Ok(log) => {
                let e = log.read(victim.offset).expect_err("the missing record was read");
                assert_corrupt_in(&e, &seg_path(&dir, base), &what);
                assert_eq!(log.verify().unwrap().problem.map(|p| p.segment), Some(seg_path(&dir, base)), "{what}");
            }
        }
    }
}

/// DURABILITY.md: files can be truncated by other programs. A segment shorter than its
/// header says is corruption of that segment, sealed or active.
#[test]
fn a_truncated_segment_file_fails_the_open_naming_it() {
    let p = pristine();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    for base in [p.bases[1], *p.bases.last().unwrap()] {
        for len in [0usize, 10, SEGMENT_HEADER_LEN, 2048, SEGMENT_BYTES - 1] {
            let what = format!("segment {base} truncated to {len} bytes");
            restore(&edited(&p.snap, &seg_name(base), |seg| seg.truncate(len)), &dir);
            let err = open_err(&dir, &what);
            assert_corrupt_in(&err, &seg_path(&dir, base), &what);
        }
    }
}

#[test]
fn verify_reports_a_healthy_log_with_its_counts() {
    let p = pristine();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    restore(&p.snap, &dir);
    let mut log = Log::open(&dir, &opts()).unwrap();
    for _ in 0..2 {
        let segs = log.segments();
        let report = log.verify().unwrap();
        assert_eq!(report.problem, None);
        assert_eq!(report.segments, segs.len());
        assert_eq!(report.records, log.next_offset());
        assert_eq!(report.first_offset, 0);
        assert_eq!(report.next_offset, log.next_offset());
        assert_eq!(report.index_entries, segs.iter().map(|s| s.index_entries as u64).sum::<u64>());
        assert!(report.index_entries >= segs.len() as u64);
        assert_eq!(report.bytes, segs.iter().map(|s| s.data_bytes).sum::<u64>());
        log.append(b"one more", None).unwrap();
    }
}

/// Damage made behind the log's back while it is open shows up in `verify` (the segments
/// are shared mappings of the files).
#[test]
fn verify_finds_damage_in_a_sealed_record_and_after_the_end_of_data() {
    let p = pristine();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    restore(&p.snap, &dir);
    let log = Log::open(&dir, &opts()).unwrap();
    assert_eq!(log.verify().unwrap().problem, None);

    let write_at = |path: PathBuf, pos: usize, byte: u8| {
        OpenOptions::new().write(true).open(path).unwrap().write_all_at(&[byte], pos as u64).unwrap();
    };
    let base = p.bases[2];
    let victim = frames(&p.snap, base)[3];
    let original = file_bytes(&p.snap, &seg_name(base))[victim.end() - 1];
    write_at(seg_path(&dir, base), victim.end() - 1, original ^ 0x01);
    let problem: Problem = log.verify().unwrap().problem.expect("verify missed a flipped bit");
    assert_eq!(problem.segment, seg_path(&dir, base));
    assert_eq!((problem.offset, problem.position), (Some(victim.offset), Some(victim.start as u64)));
    write_at(seg_path(&dir, base), victim.end() - 1, original);
    assert_eq!(log.verify().unwrap().problem, None);

    let active = log.segments().last().unwrap().clone();
    write_at(active.path.clone(), active.data_bytes as usize + 100, 0x5A);
    let problem = log.verify().unwrap().problem.expect("verify missed bytes after the end of data");
    assert_eq!(problem.segment, active.path);
    assert_eq!(problem.position, Some(active.data_bytes));
}
