//! Bad input and misuse fail fast with their stable error codes and change nothing:
//! oversized records and batches, out-of-range timestamps, invalid options, use after
//! close, and a second writer on the same directory (DURABILITY.md rule 9).

mod common;

use std::path::Path;

use common::*;
use seglog_core::format::MAX_TIMESTAMP;
use seglog_core::{Log, Options};

fn opts() -> Options {
    options(4096, 256)
}

/// A log holding three small records, and their content.
fn three_records(dir: &Path) -> (Log, Vec<(Vec<u8>, u64)>) {
    let mut log = Log::open(dir, &opts()).unwrap();
    let expected: Vec<_> = (0..3u64).map(|i| (payload(i, 10 + i as usize), i)).collect();
    for (p, t) in &expected {
        log.append(p, Some(*t)).unwrap();
    }
    (log, expected)
}

/// The log still holds exactly `expected`, now and after a reopen.
#[track_caller]
fn assert_unchanged(dir: &Path, mut log: Log, expected: &[(Vec<u8>, u64)]) {
    assert_records(&log, expected);
    log.close().unwrap();
    let log = Log::open(dir, &opts()).unwrap();
    assert_eq!(log.recovery_report().truncation, None);
    assert_records(&log, expected);
    assert_eq!(log.verify().unwrap().problem, None);
}

#[test]
fn a_record_larger_than_max_record_bytes_is_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, expected) = three_records(dir.path());
    let max = log.max_record_bytes();
    let too_big = vec![7u8; max + 1];
    let small = [1u8; 5];
    expect_code(log.append(&too_big, Some(1)), "ERR_SEGLOG_RECORD_TOO_LARGE");
    expect_code(log.append_batch([&small[..], &too_big[..], &small[..]], Some(1)), "ERR_SEGLOG_RECORD_TOO_LARGE");
    let packed = [&small[..], &too_big[..]].concat();
    expect_code(log.append_packed(&packed, &[5, max as u32 + 1], Some(1)), "ERR_SEGLOG_RECORD_TOO_LARGE");
    assert_eq!(log.next_offset(), 3);
    assert_unchanged(dir.path(), log, &expected);

    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), &Options { max_record_bytes: Some(100), ..opts() }).unwrap();
    expect_code(log.append(&[0u8; 101], None), "ERR_SEGLOG_RECORD_TOO_LARGE");
    assert_eq!(log.append(&[0u8; 100], None).unwrap(), 0);
}

#[test]
fn a_batch_that_cannot_fit_in_one_segment_is_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, mut expected) = three_records(dir.path());
    // 5 frames of 1032 bytes need 5160 bytes; a 4096-byte segment holds 4032 after its header.
    let big: Vec<Vec<u8>> = (0..5u64).map(|i| payload(i, 1000)).collect();
    expect_code(log.append_batch(big.iter().map(|p| p.as_slice()), Some(1)), "ERR_SEGLOG_BATCH_TOO_LARGE");
    let lengths = [1000u32; 5];
    expect_code(log.append_packed(&big.concat(), &lengths, Some(1)), "ERR_SEGLOG_BATCH_TOO_LARGE");
    assert_eq!(log.next_offset(), 3);
    assert_eq!(log.segments().len(), 1, "a refused batch must not roll the segment");

    // A batch that exactly fills an empty segment (4 frames of 1008 bytes) is accepted.
    let fits: Vec<Vec<u8>> = (0..4u64).map(|i| payload(10 + i, 980)).collect();
    assert_eq!(log.append_batch(fits.iter().map(|p| p.as_slice()), Some(2)).unwrap(), 3);
    expected.extend(fits.into_iter().map(|p| (p, 2)));
    assert_eq!(log.segments().len(), 2);
    assert_eq!(log.segments()[1].data_bytes, 4096);
    assert_unchanged(dir.path(), log, &expected);
}

#[test]
fn timestamps_above_2_pow_53_minus_1_are_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, mut expected) = three_records(dir.path());
    for bad in [MAX_TIMESTAMP + 1, 1 << 60, u64::MAX] {
        expect_code(log.append(b"x", Some(bad)), "ERR_SEGLOG_INVALID_ARGUMENT");
        expect_code(log.append_batch([&b"a"[..], b"b"], Some(bad)), "ERR_SEGLOG_INVALID_ARGUMENT");
        expect_code(log.append_packed(b"ab", &[1, 1], Some(bad)), "ERR_SEGLOG_INVALID_ARGUMENT");
    }
    assert_eq!(log.next_offset(), 3);
    assert_eq!(log.append(b"max", Some(MAX_TIMESTAMP)).unwrap(), 3, "2^53-1 itself is valid");
    expected.push((b"max".to_vec(), MAX_TIMESTAMP));
    assert_unchanged(dir.path(), log, &expected);
}

#[test]
fn packed_lengths_that_do_not_match_the_data_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, expected) = three_records(dir.path());
    expect_code(log.append_packed(b"abcdef", &[2, 2], None), "ERR_SEGLOG_INVALID_ARGUMENT");
    expect_code(log.append_packed(b"abc", &[2, 2], None), "ERR_SEGLOG_INVALID_ARGUMENT");
    expect_code(log.append_packed(b"abc", &[u32::MAX, 4], None), "ERR_SEGLOG_INVALID_ARGUMENT");
    assert_unchanged(dir.path(), log, &expected);
}

#[test]
fn invalid_options_are_refused_before_anything_is_created() {
    let tmp = tempfile::tempdir().unwrap();
    let bad = [
        ("segment_bytes below 4 KiB", options(4095, 64)),
        ("segment_bytes of zero", options(0, 64)),
        ("segment_bytes of 4 GiB", options(1 << 32, 4096)),
        ("index_interval_bytes below 64", options(4096, 63)),
        ("index_interval_bytes above segment_bytes", options(4096, 4097)),
        ("max_record_bytes that cannot fit", Options { max_record_bytes: Some(4096), ..options(4096, 256) }),
        (
            "max_record_bytes one above the limit",
            Options { max_record_bytes: Some(4096 - 64 - 28 + 1), ..options(4096, 256) },
        ),
    ];
    for (what, o) in bad {
        let dir = tmp.path().join("never");
        let err = expect_code(Log::open(&dir, &o).map(|_| ()), "ERR_SEGLOG_INVALID_ARGUMENT");
        assert!(!err.to_string().is_empty(), "{what}");
        assert!(!dir.exists(), "{what}: a refused open created the directory");
    }
    // The limits themselves are valid.
    for o in [options(4096, 64), options(4096, 4096), Options { max_record_bytes: Some(0), ..options(4096, 256) }] {
        let dir = tempfile::tempdir().unwrap();
        Log::open(dir.path(), &o).unwrap_or_else(|e| panic!("{o:?}: {e}"));
    }
}

#[test]
fn every_operation_after_close_fails_with_closed_and_close_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, expected) = three_records(dir.path());
    log.close().unwrap();
    assert!(log.is_closed());
    log.close().expect("a second close is Ok");
    const CLOSED: &str = "ERR_SEGLOG_CLOSED";
    expect_code(log.append(b"x", None), CLOSED);
    expect_code(log.append_batch([&b"x"[..]], None), CLOSED);
    expect_code(log.append_batch(std::iter::empty(), None), CLOSED);
    expect_code(log.append_packed(b"x", &[1], None), CLOSED);
    expect_code(log.read(0), CLOSED);
    expect_code(log.read(100), CLOSED);
    expect_code(log.read_frame(0), CLOSED);
    expect_code(log.read_frames_into(0, 10, 1 << 16, &mut [0u8; 1 << 16]), CLOSED);
    expect_code(log.flush(), CLOSED);
    expect_code(log.verify(), CLOSED);
    drop(log);
    let log = Log::open(dir.path(), &opts()).unwrap();
    assert_records(&log, &expected);
}

/// `iter` yields `Result`s; after close it must say so rather than look like an empty log.
#[test]
fn iterating_a_closed_log_fails_with_closed() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = three_records(dir.path());
    log.close().unwrap();
    let first = log.iter(0, 3).next().map(|r| r.map(|rec| rec.offset));
    match first {
        Some(Err(e)) => assert_eq!(e.code(), "ERR_SEGLOG_CLOSED"),
        Some(Ok(offset)) => panic!("a closed log yielded record {offset}"),
        None => panic!("iter over a closed log yielded nothing instead of ERR_SEGLOG_CLOSED"),
    }
}

#[test]
fn a_second_writer_is_locked_out_until_the_first_closes_or_drops() {
    let dir = tempfile::tempdir().unwrap();
    let (mut first, mut expected) = three_records(dir.path());
    let err = expect_code(Log::open(dir.path(), &opts()).map(|_| ()), "ERR_SEGLOG_LOCKED");
    assert!(err.to_string().contains(dir.path().to_str().unwrap()), "message should name the log: {err}");
    // Another spelling of the same directory is the same log.
    expect_code(Log::open(dir.path().join("."), &opts()).map(|_| ()), "ERR_SEGLOG_LOCKED");

    // The refused open took nothing from the writer.
    assert_eq!(first.append(b"still mine", Some(9)).unwrap(), 3);
    expected.push((b"still mine".to_vec(), 9));
    first.close().unwrap();

    let mut second = Log::open(dir.path(), &opts()).expect("open after the first writer closed");
    assert_records(&second, &expected);
    assert_eq!(second.append(b"second", Some(10)).unwrap(), 4);
    expected.push((b"second".to_vec(), 10));
    expect_code(Log::open(dir.path(), &opts()).map(|_| ()), "ERR_SEGLOG_LOCKED");
    drop(second);

    let third = Log::open(dir.path(), &opts()).expect("open after the second writer was dropped");
    assert_records(&third, &expected);
}
