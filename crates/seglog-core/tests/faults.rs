//! Injected I/O faults (`seglog_core::fault`): a failed sync poisons the log (every later
//! write fails with the same `ERR_SEGLOG_IO`, even if the disk recovers, because the
//! kernel may have dropped the dirty pages and a retry could "succeed" over lost data),
//! while reads, `close` and a reopen keep working and keep everything acknowledged as
//! durable. A failed preallocation (disk full) or index write is not a poison.
//!
//! Fault state is process-wide: this file holds every test that injects faults, and each
//! test runs under one lock and clears the faults when it ends (also when it panics).
//!
//! Guards against: retrying a failed fsync and acknowledging lost data, writes accepted
//! after a failed sync, a failed sync advancing `durable_offset`, a full disk poisoning
//! the log or leaving temp files behind, an index written over data that was never
//! synced, and logs that do not reopen after any of these.

mod common;

use std::io;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::thread;

use common::*;
use seglog_core::fault::{self, FaultPoint};
use seglog_core::format::framed_len;
use seglog_core::{Error, Log, Options};

const EIO: i32 = libc::EIO;
const ENOSPC: i32 = libc::ENOSPC;
const SMALL_SEGMENT: usize = 4096;

static SERIAL: Mutex<()> = Mutex::new(());

/// Holds the fault lock for one test; clears every fault when created and when dropped.
struct Faults {
    _serial: MutexGuard<'static, ()>,
}

impl Drop for Faults {
    fn drop(&mut self) {
        fault::clear();
    }
}

fn faults() -> Faults {
    let serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    fault::clear();
    Faults { _serial: serial }
}

fn opts(segment_bytes: usize) -> Options {
    options(segment_bytes, 256)
}

type Expected = Vec<(Vec<u8>, u64)>;

fn append_next(log: &mut Log, expected: &mut Expected, len: usize) -> u64 {
    let o = expected.len() as u64;
    let data = payload(o ^ 0xFA17, len);
    assert_eq!(log.append(&data, Some(100 + o)).unwrap(), o);
    expected.push((data, 100 + o));
    o
}

/// The errno behind a `Poisoned` error (the error of the sync that failed).
#[track_caller]
fn poisoned_errno(e: &Error) -> Option<i32> {
    match e {
        Error::Poisoned { source, .. } => source.raw_os_error(),
        other => panic!("expected a Poisoned error, got {other}"),
    }
}

/// Every write fails with the poison (`ERR_SEGLOG_IO`, errno `errno`), none changes the log.
#[track_caller]
fn assert_every_write_refused(log: &mut Log, errno: i32, what: &str) {
    let next = log.next_offset();
    let durable = log.durable_offset();
    let check = |op: &str, e: Error| {
        assert_eq!(e.code(), "ERR_SEGLOG_IO", "{what}: {op}: {e}");
        assert_eq!(poisoned_errno(&e), Some(errno), "{what}: {op}: {e}");
    };
    check("append", log.append(b"late", None).unwrap_err());
    check("append (empty)", log.append(&[], Some(1)).unwrap_err());
    check("append_batch", log.append_batch([&b"a"[..], &b"b"[..]], None).unwrap_err());
    check("append_packed", log.append_packed(b"abc", &[1, 2], None).unwrap_err());
    check("flush", log.flush().unwrap_err());
    check("sync", log.sync().unwrap_err());
    match log.begin_sync() {
        Ok(_) => panic!("{what}: begin_sync succeeded on a poisoned log"),
        Err(e) => check("begin_sync", e),
    }
    let p = log.poisoned().unwrap_or_else(|| panic!("{what}: poisoned() is None"));
    check("poisoned()", p);
    assert_eq!((log.next_offset(), log.durable_offset()), (next, durable), "{what}: a refused write changed the log");
}

/// Reopens `dir` and checks it holds a prefix of `expected` at least `durable` long,
/// contiguous and valid, and takes appends again. Returns the number of records.
#[track_caller]
fn assert_reopens_with_durable_prefix(dir: &Path, opts: &Options, expected: &Expected, durable: u64, what: &str) -> u64 {
    let mut log = Log::open(dir, opts).unwrap_or_else(|e| panic!("{what}: reopen failed: {e}"));
    let n = log.next_offset();
    assert!(n >= durable, "{what}: reopened with {n} records, but {durable} were acknowledged as durable");
    assert!(n <= expected.len() as u64, "{what}: reopened with {n} records, only {} were appended", expected.len());
    assert_records(&log, &expected[..n as usize]);
    assert_eq!(log.verify().unwrap().problem, None, "{what}: verify after reopen");
    assert!(log.poisoned().is_none(), "{what}: a reopened log is poisoned");
    assert_eq!(log.durable_offset(), n, "{what}");
    assert_eq!(log.append(b"again", Some(1)).unwrap(), n, "{what}: append after reopen");
    assert_eq!(log.sync().unwrap(), n + 1, "{what}: sync after reopen");
    log.close().unwrap();
    n
}

/// Appends records of `len` bytes until the next one would not fit in the active segment.
fn fill_active_segment(log: &mut Log, expected: &mut Expected, len: usize) {
    loop {
        let active = log.segments().last().unwrap().clone();
        if active.data_bytes as usize + framed_len(len) > active.file_bytes as usize {
            return;
        }
        append_next(log, expected, len);
    }
}

fn temp_files(dir: &Path) -> Vec<String> {
    snapshot(dir).into_iter().map(|(n, _)| n).filter(|n| n.ends_with(".tmp")).collect()
}

// ---- 8. a failed sync poisons ----

#[test]
fn a_failed_sync_poisons_every_later_write_until_reopen() {
    let _f = faults();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let opts = opts(1 << 20);
    let mut log = Log::open(&dir, &opts).unwrap();
    let mut expected = Vec::new();
    for _ in 0..20 {
        append_next(&mut log, &mut expected, 90);
    }
    assert_eq!(log.sync().unwrap(), 20);
    for _ in 0..10 {
        append_next(&mut log, &mut expected, 90);
    }

    fault::inject(FaultPoint::Sync, 0, EIO, false);
    let e = log.sync().unwrap_err();
    assert_eq!(e.code(), "ERR_SEGLOG_IO", "{e}");
    assert_eq!(poisoned_errno(&e), Some(EIO));
    assert_eq!(log.durable_offset(), 20, "a failed sync advanced durable_offset");
    // The fault was one-shot: the disk "works" again, yet nothing is retried or accepted.
    assert_every_write_refused(&mut log, EIO, "after a one-shot EIO");
    assert_every_write_refused(&mut log, EIO, "asked twice");

    // Reads keep working, including records that never became durable.
    assert_records(&log, &expected);
    assert_eq!(log.iter(0, u64::MAX).count(), 30);
    assert_eq!(log.verify().unwrap().problem, None);
    assert_eq!(log.refresh().unwrap(), 30);
    // close succeeds and does not sync: a persistent fault would make any sync fail.
    fault::inject(FaultPoint::Sync, 0, EIO, true);
    log.close().unwrap();
    assert!(log.is_closed());
    fault::clear();

    assert_reopens_with_durable_prefix(&dir, &opts, &expected, 20, "one-shot EIO on sync");
}

#[test]
fn a_failed_sync_run_on_another_thread_poisons_and_later_successes_do_not_cure_it() {
    let _f = faults();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let opts = opts(1 << 20);
    let mut log = Log::open(&dir, &opts).unwrap();
    let mut expected = Vec::new();
    for _ in 0..5 {
        append_next(&mut log, &mut expected, 40);
    }
    let failing = log.begin_sync().unwrap();
    append_next(&mut log, &mut expected, 40);
    let succeeding = log.begin_sync().unwrap();
    assert_eq!((failing.target, succeeding.target), (5, 6));

    fault::inject(FaultPoint::Sync, 0, EIO, false);
    let (failing, r1) = thread::spawn(move || {
        let r = failing.run();
        (failing, r)
    })
    .join()
    .unwrap();
    assert_eq!(r1.as_ref().unwrap_err().raw_os_error(), Some(EIO), "the injected fault did not reach run()");
    let (succeeding, r2) = thread::spawn(move || {
        let r = succeeding.run();
        (succeeding, r)
    })
    .join()
    .unwrap();
    r2.as_ref().expect("the fault was one-shot");

    let e = log.complete_sync(&failing, r1).unwrap_err();
    assert_eq!((e.code(), poisoned_errno(&e)), ("ERR_SEGLOG_IO", Some(EIO)));
    assert_eq!(log.durable_offset(), 0);
    // The other sync succeeded, but after a failure nothing more is acknowledged.
    let e = log.complete_sync(&succeeding, r2).unwrap_err();
    assert_eq!((e.code(), poisoned_errno(&e)), ("ERR_SEGLOG_IO", Some(EIO)));
    assert_eq!(log.durable_offset(), 0, "a sync completed after the failure advanced durable_offset");
    assert_every_write_refused(&mut log, EIO, "after a failed sync on another thread");
    // A later, different error is not what gets reported: the first failure is.
    let e = log.complete_sync(&succeeding, Err(io::Error::from_raw_os_error(libc::EROFS))).unwrap_err();
    assert_eq!(poisoned_errno(&e), Some(EIO));
    assert_records(&log, &expected);
    log.close().unwrap();
    assert_reopens_with_durable_prefix(&dir, &opts, &expected, 0, "EIO in SyncRequest::run");
}

#[test]
fn a_failed_flush_poisons_and_a_poisoned_close_writes_no_index() {
    let _f = faults();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let opts = opts(1 << 20);
    let mut log = Log::open(&dir, &opts).unwrap();
    let mut expected = Vec::new();
    for _ in 0..40 {
        append_next(&mut log, &mut expected, 100);
    }
    fault::inject(FaultPoint::Sync, 0, EIO, true);
    let e = log.flush().unwrap_err();
    assert_eq!((e.code(), poisoned_errno(&e)), ("ERR_SEGLOG_IO", Some(EIO)));
    assert_eq!(log.durable_offset(), 0);
    assert_every_write_refused(&mut log, EIO, "after a failed flush");
    log.close().unwrap();
    // An index covers only synced frames (FORMAT.md 4): none may be written for this data.
    assert!(!idx_path(&dir, 0).exists(), "a poisoned close wrote an index over unsynced data");
    fault::clear();
    assert_reopens_with_durable_prefix(&dir, &opts, &expected, 0, "EIO on flush");
}

#[test]
fn a_failed_sync_at_close_is_reported_and_writes_no_index() {
    let _f = faults();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let opts = opts(1 << 20);
    let mut log = Log::open(&dir, &opts).unwrap();
    let mut expected = Vec::new();
    for _ in 0..40 {
        append_next(&mut log, &mut expected, 100);
    }
    assert_eq!(log.sync().unwrap(), 40);
    append_next(&mut log, &mut expected, 100);
    fault::inject(FaultPoint::Sync, 0, EIO, true);
    let e = log.close().expect_err("close hid a failed sync");
    assert_eq!(e.code(), "ERR_SEGLOG_IO", "{e}");
    assert!(log.is_closed());
    assert!(!idx_path(&dir, 0).exists(), "close wrote an index over data whose sync failed");
    fault::clear();
    // The lock was released and the log recovers.
    assert_reopens_with_durable_prefix(&dir, &opts, &expected, 40, "EIO at close");
}

#[test]
fn a_sync_with_nothing_new_does_no_io() {
    let _f = faults();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let mut log = Log::open(&dir, &opts(1 << 20)).unwrap();
    let mut expected = Vec::new();
    for _ in 0..10 {
        append_next(&mut log, &mut expected, 10);
    }
    assert_eq!(log.sync().unwrap(), 10);
    // Any fdatasync/msync would now fail and poison the log.
    fault::inject(FaultPoint::Sync, 0, EIO, true);
    for _ in 0..100 {
        assert_eq!(log.sync().unwrap(), 10);
    }
    let req = log.begin_sync().unwrap();
    assert_eq!(req.target, 10);
    let result = req.run();
    assert!(result.is_ok(), "a sync with nothing to sync ran an fdatasync: {result:?}");
    assert_eq!(log.complete_sync(&req, result).unwrap(), 10);
    assert!(log.poisoned().is_none());
    fault::clear();
    append_next(&mut log, &mut expected, 10);
    assert_eq!(log.sync().unwrap(), 11);
    log.close().unwrap();
}

// ---- 9. a failed msync while rolling ----

#[test]
fn a_failed_msync_while_rolling_poisons_the_same_way() {
    for batch in [false, true] {
        let what = if batch { "roll for a batch" } else { "roll for a record" };
        let _f = faults();
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("log");
        let opts = opts(SMALL_SEGMENT);
        let mut log = Log::open(&dir, &opts).unwrap();
        let mut expected = Vec::new();
        while log.segments().len() < 2 {
            append_next(&mut log, &mut expected, 150);
        }
        fill_active_segment(&mut log, &mut expected, 150);
        let durable = log.durable_offset();
        let n = log.next_offset();
        let bases = segment_bases(&dir);
        assert_eq!(durable, bases[1], "{what}: the first roll made the sealed segment durable");

        fault::inject(FaultPoint::Sync, 0, EIO, false);
        let e = if batch {
            log.append_batch([&[7u8; 150][..], &[8u8; 150][..]], None).unwrap_err()
        } else {
            log.append(&[7u8; 150], None).unwrap_err()
        };
        assert_eq!((e.code(), poisoned_errno(&e)), ("ERR_SEGLOG_IO", Some(EIO)), "{what}: {e}");
        assert_eq!(log.next_offset(), n, "{what}: the failed append wrote records");
        assert_eq!(log.durable_offset(), durable, "{what}: a failed roll advanced durable_offset");
        assert_eq!(segment_bases(&dir), bases, "{what}: a segment was created after the failed msync");
        assert!(temp_files(&dir).is_empty(), "{what}");
        // A small record would fit in the segment, but the log takes nothing more.
        assert_every_write_refused(&mut log, EIO, what);
        assert_records(&log, &expected);
        log.close().unwrap();
        assert_reopens_with_durable_prefix(&dir, &opts, &expected, durable, what);
        drop(_f);
    }
}

// ---- 10. a full disk when creating a segment ----

#[test]
fn a_full_disk_when_rolling_is_reported_and_not_a_poison() {
    let _f = faults();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let opts = opts(SMALL_SEGMENT);
    let mut log = Log::open(&dir, &opts).unwrap();
    let mut expected = Vec::new();
    fill_active_segment(&mut log, &mut expected, 150);
    let n = log.next_offset();
    let bases = segment_bases(&dir);

    fault::inject(FaultPoint::Preallocate, 0, ENOSPC, true);
    for attempt in 0..3 {
        let e = log.append(&payload(n, 150), Some(100 + n)).unwrap_err();
        assert_eq!(e.code(), "ERR_SEGLOG_NO_SPACE", "attempt {attempt}: {e}");
        assert!(!matches!(e, Error::Poisoned { .. }), "{e}");
        let e = log.append_batch([&[1u8; 150][..], &[2u8; 150][..]], None).unwrap_err();
        assert_eq!(e.code(), "ERR_SEGLOG_NO_SPACE", "attempt {attempt} (batch): {e}");
    }
    assert!(log.poisoned().is_none(), "a full disk poisoned the log");
    assert_eq!(log.next_offset(), n, "a failed roll wrote records");
    assert_eq!(segment_bases(&dir), bases, "a segment file was left behind");
    assert!(temp_files(&dir).is_empty(), "temp files left behind: {:?}", temp_files(&dir));
    // Syncs and reads still work; a reader is unaffected.
    assert_eq!(log.sync().unwrap(), n);
    log.flush().unwrap();
    assert_records(&log, &expected);
    let reader = Log::open(&dir, &Options { read_only: true, ..opts.clone() }).unwrap();
    assert_records(&reader, &expected);

    fault::clear();
    assert_eq!(append_next(&mut log, &mut expected, 150), n, "the append after the disk freed up");
    assert_eq!(log.segments().len(), 2);
    append_next(&mut log, &mut expected, 150);
    drop(reader);
    log.close().unwrap();
    let log = Log::open(&dir, &opts).unwrap();
    assert_records(&log, &expected);
    assert_eq!(log.verify().unwrap().problem, None);
}

#[test]
fn a_one_shot_preallocate_failure_fails_one_append_only() {
    let _f = faults();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let opts = opts(SMALL_SEGMENT);
    let mut log = Log::open(&dir, &opts).unwrap();
    let mut expected = Vec::new();
    fill_active_segment(&mut log, &mut expected, 150);
    let n = log.next_offset();
    fault::inject(FaultPoint::Preallocate, 0, EIO, false);
    let e = log.append(&[0u8; 150], None).unwrap_err();
    assert_eq!(e.code(), "ERR_SEGLOG_IO", "{e}");
    assert!(!matches!(e, Error::Poisoned { .. }), "a failed preallocation is not a failed sync: {e}");
    assert!(log.poisoned().is_none());
    assert!(temp_files(&dir).is_empty());
    assert_eq!(append_next(&mut log, &mut expected, 150), n);
    log.close().unwrap();
    fault::clear();
    let log = Log::open(&dir, &opts).unwrap();
    assert_records(&log, &expected);
}

#[test]
fn a_full_disk_when_creating_a_new_log_leaves_nothing_locked_or_half_made() {
    let _f = faults();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let opts = opts(SMALL_SEGMENT);
    fault::inject(FaultPoint::Preallocate, 0, ENOSPC, true);
    match Log::open(&dir, &opts) {
        Ok(_) => panic!("open created a segment although preallocation fails"),
        Err(e) => assert_eq!(e.code(), "ERR_SEGLOG_NO_SPACE", "{e}"),
    }
    assert!(segment_bases(&dir).is_empty());
    assert!(temp_files(&dir).is_empty());
    fault::clear();
    let mut log = Log::open(&dir, &opts).expect("the failed open kept the lock");
    assert_eq!(log.append(b"first", Some(1)).unwrap(), 0);
    log.close().unwrap();
}

/// A writer reopened with a larger `segment_bytes` replaces an empty active segment that
/// is too small for a record. If creating the replacement fails (disk full), the log must
/// still have its old active segment: the error is reported, and appends work once the
/// disk has room again.
#[test]
fn a_full_disk_while_replacing_an_empty_segment_keeps_the_log_usable() {
    let _f = faults();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    Log::open(&dir, &opts(SMALL_SEGMENT)).unwrap().close().unwrap();
    let big = opts(64 << 10);
    let mut log = Log::open(&dir, &big).unwrap();
    let data = payload(1, 10_000);

    fault::inject(FaultPoint::Preallocate, 0, ENOSPC, false);
    let e = log.append(&data, Some(1)).unwrap_err();
    assert_eq!(e.code(), "ERR_SEGLOG_NO_SPACE", "{e}");
    assert!(log.poisoned().is_none());
    assert!(temp_files(&dir).is_empty());
    assert_eq!(segment_bases(&dir), vec![0], "the old segment file must still be there");
    assert_eq!(log.next_offset(), 0);
    assert_eq!(log.segments().len(), 1, "the log lost its active segment");
    fault::clear();

    // The disk has room again: the same append now succeeds, and so do the rest.
    assert_eq!(log.append(&data, Some(1)).unwrap(), 0);
    assert_eq!(log.append(b"small", Some(2)).unwrap(), 1);
    assert_eq!(log.sync().unwrap(), 2);
    log.close().unwrap();
    let log = Log::open(&dir, &big).unwrap();
    assert_eq!(log.read(0).unwrap().unwrap().payload, &data[..]);
    assert_eq!(log.read(1).unwrap().unwrap().payload, b"small");
    assert_eq!(log.verify().unwrap().problem, None);
}

// ---- 11. a failed index write ----

#[test]
fn a_failed_index_write_at_close_loses_nothing_and_the_index_is_rebuilt() {
    let _f = faults();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let opts = opts(SMALL_SEGMENT);
    let mut log = Log::open(&dir, &opts).unwrap();
    let mut expected = Vec::new();
    while log.segments().len() < 3 {
        append_next(&mut log, &mut expected, 120);
    }
    append_next(&mut log, &mut expected, 120);
    let active = *segment_bases(&dir).last().unwrap();
    assert!(!idx_path(&dir, active).exists());

    fault::inject(FaultPoint::WriteFile, 0, EIO, false);
    if let Err(e) = log.close() {
        assert_eq!(e.code(), "ERR_SEGLOG_IO", "{e}");
    }
    assert!(log.is_closed());
    assert!(!idx_path(&dir, active).exists());
    assert!(temp_files(&dir).is_empty());
    fault::clear();

    // The lock was released; everything is there; the missing index is rebuilt.
    let log = Log::open(&dir, &opts).expect("reopen after a failed index write");
    assert_records(&log, &expected);
    assert_eq!(log.verify().unwrap().problem, None);
    assert!(
        log.recovery_report().indexes_rebuilt.contains(&idx_path(&dir, active)),
        "rebuilt: {:?}",
        log.recovery_report().indexes_rebuilt
    );
    assert_eq!(log.durable_offset(), expected.len() as u64);
    drop(log);
    let log = Log::open(&dir, &opts).unwrap();
    assert!(log.recovery_report().indexes_rebuilt.is_empty(), "{:?}", log.recovery_report().indexes_rebuilt);
    assert_records(&log, &expected);
}

#[test]
fn a_failed_index_write_when_rolling_loses_no_acknowledged_record() {
    for persistent in [false, true] {
        let what = if persistent { "persistent index write failure" } else { "one index write failure" };
        let _f = faults();
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("log");
        let opts = opts(SMALL_SEGMENT);
        let mut log = Log::open(&dir, &opts).unwrap();
        let mut expected = Vec::new();
        fill_active_segment(&mut log, &mut expected, 150);

        fault::inject(FaultPoint::WriteFile, 0, EIO, persistent);
        let mut failures = 0;
        for i in 0..60u64 {
            let o = expected.len() as u64;
            let data = payload(o ^ 0x1D8, 150);
            match log.append(&data, Some(i)) {
                Ok(got) => {
                    assert_eq!(got, o, "{what}: an append after a failed one skipped or reused an offset");
                    expected.push((data, i));
                }
                Err(e) => {
                    assert_eq!(e.code(), "ERR_SEGLOG_IO", "{what}: {e}");
                    assert!(!matches!(e, Error::Poisoned { .. }), "{what}: an index write is not a sync: {e}");
                    assert_eq!(log.next_offset(), o, "{what}: a failed append wrote a record");
                    failures += 1;
                }
            }
        }
        assert!(log.poisoned().is_none(), "{what}");
        if !persistent {
            assert!(failures <= 1, "{what}: a one-shot fault failed {failures} appends");
            assert!(log.segments().len() > 2, "{what}: the log stopped rolling");
        }
        assert_records(&log, &expected);
        let _ = log.close();
        fault::clear();
        let log = Log::open(&dir, &opts).unwrap_or_else(|e| panic!("{what}: reopen failed: {e}"));
        assert_records(&log, &expected);
        assert_eq!(log.verify().unwrap().problem, None, "{what}");
        drop(log);
        drop(_f);
    }
}
