//! A model-based property test: random sequences of appends, batches, reads, clean
//! reopens and crash-like reopens (the `Log` dropped without `close`, or dropped with its
//! index files then put back as a SIGKILL would have left them) are run against a
//! plain `Vec` of (payload, timestamp). Guards against any interleaving that loses,
//! reorders, duplicates or alters a record, or lets `next_offset` drift from the model.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::{options, parse_copied_frames};
use proptest::prelude::*;
use seglog_core::format::{framed_len, MAX_TIMESTAMP, SEGMENT_HEADER_LEN};
use seglog_core::{now_ms, Log, Options};

#[derive(Debug, Clone)]
enum Op {
    Append(Vec<u8>, Option<u64>),
    Batch(Vec<Vec<u8>>, Option<u64>),
    /// `close`, then open again.
    Reopen,
    /// Drop without `close` (the Drop path), then open again.
    CrashReopen,
    /// Drop, then put every index file back as it was before the drop, as a SIGKILL
    /// leaves the directory (the Drop path writes the active index), then open again.
    KillReopen,
    /// Read the record at `seed % (len + 1)`: one past the end reads as `None`.
    Read(u64),
    /// Copy frames from `seed % (len + 1)`, at most `max_records` and `max_bytes`.
    ReadFrames(u64, u64, usize),
}

fn small_payload() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        1 => Just(Vec::new()),
        6 => prop::collection::vec(any::<u8>(), 0..300),
        1 => prop::collection::vec(any::<u8>(), 900..1200),
    ]
}

fn timestamp() -> impl Strategy<Value = Option<u64>> {
    prop_oneof![Just(None), (0..=MAX_TIMESTAMP).prop_map(Some), Just(Some(MAX_TIMESTAMP))]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (small_payload(), timestamp()).prop_map(|(p, t)| Op::Append(p, t)),
        3 => (prop::collection::vec(small_payload(), 0..5), timestamp()).prop_map(|(b, t)| Op::Batch(b, t)),
        1 => Just(Op::Reopen),
        1 => Just(Op::CrashReopen),
        1 => Just(Op::KillReopen),
        4 => any::<u64>().prop_map(Op::Read),
        2 => (any::<u64>(), 1..20u64, 0..6000usize).prop_map(|(s, r, b)| Op::ReadFrames(s, r, b)),
    ]
}

const SEGMENT_BYTES: usize = 4096;

fn opts() -> Options {
    options(SEGMENT_BYTES, 128)
}

type Model = Vec<(Vec<u8>, u64)>;

/// Appends and records the timestamp the log stored: the given one, or "now".
fn append(
    log: &mut Log,
    model: &mut Model,
    payloads: &[Vec<u8>],
    timestamp: Option<u64>,
    batch: bool,
) -> Result<(), TestCaseError> {
    let before = now_ms();
    let first = if batch {
        // An atomic batch must fit in one segment (FORMAT.md 3): a larger one is refused
        // whole, and nothing of it is written.
        let framed: usize = payloads.iter().map(|p| framed_len(p.len())).sum();
        if framed > SEGMENT_BYTES - SEGMENT_HEADER_LEN {
            let e = log.append_batch(payloads.iter().map(|p| p.as_slice()), timestamp).unwrap_err();
            prop_assert_eq!(e.code(), "ERR_SEGLOG_BATCH_TOO_LARGE");
            prop_assert_eq!(log.next_offset(), model.len() as u64, "a refused batch wrote records");
            return Ok(());
        }
        log.append_batch(payloads.iter().map(|p| p.as_slice()), timestamp).unwrap()
    } else {
        log.append(&payloads[0], timestamp).unwrap()
    };
    let after = now_ms();
    prop_assert_eq!(first, model.len() as u64, "first offset of an append");
    for (i, p) in payloads.iter().enumerate() {
        let stored = log.read(first + i as u64).unwrap().unwrap().timestamp;
        match timestamp {
            Some(t) => prop_assert_eq!(stored, t),
            None => prop_assert!((before..=after).contains(&stored), "defaulted timestamp {} not now", stored),
        }
        model.push((p.clone(), stored));
    }
    Ok(())
}

fn check_read(log: &Log, model: &Model, seed: u64) -> Result<(), TestCaseError> {
    let o = seed % (model.len() as u64 + 1);
    match (log.read(o).unwrap(), model.get(o as usize)) {
        (None, None) => {}
        (Some(rec), Some((p, t))) => {
            prop_assert_eq!(rec.offset, o);
            prop_assert!(rec.payload == &p[..], "payload of offset {}", o);
            prop_assert_eq!(rec.timestamp, *t, "timestamp of offset {}", o);
        }
        (got, want) => {
            prop_assert!(false, "read({}): log has {:?}, model has {:?}", o, got.map(|r| r.offset), want.map(|w| w.1))
        }
    }
    Ok(())
}

fn check_read_frames(
    log: &Log,
    model: &Model,
    seed: u64,
    max_records: u64,
    max_bytes: usize,
) -> Result<(), TestCaseError> {
    let from = seed % (model.len() as u64 + 1);
    let mut buf = vec![0u8; 8192];
    let out = log.read_frames_into(from, max_records, max_bytes, &mut buf).unwrap();
    prop_assert!(out.records <= max_records);
    if from < model.len() as u64 {
        prop_assert!(out.records >= 1, "a record that fits the buffer is always copied");
    }
    let copied = parse_copied_frames(&buf[..out.bytes], from);
    prop_assert_eq!(copied.len() as u64, out.records);
    for c in copied {
        let (p, t) = &model[c.offset as usize];
        prop_assert!(c.payload == *p && c.timestamp == *t, "copied record {}", c.offset);
    }
    Ok(())
}

/// The index files in `dir` and their bytes.
fn index_files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "idx"))
        .map(|p| {
            let bytes = fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect()
}

fn run(dir: &Path, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut log = Log::open(dir, &opts()).unwrap();
    let mut model: Model = Vec::new();
    for op in ops {
        match op {
            Op::Append(p, t) => append(&mut log, &mut model, &[p], t, false)?,
            Op::Batch(b, t) => append(&mut log, &mut model, &b, t, true)?,
            Op::Reopen => {
                log.close().unwrap();
                log = Log::open(dir, &opts()).unwrap();
                prop_assert_eq!(&log.recovery_report().truncation, &None);
            }
            Op::CrashReopen => {
                drop(log);
                log = Log::open(dir, &opts()).unwrap();
                prop_assert_eq!(&log.recovery_report().truncation, &None);
            }
            Op::KillReopen => {
                let before = index_files(dir);
                drop(log);
                for (path, _) in index_files(dir) {
                    fs::remove_file(path).unwrap();
                }
                for (path, bytes) in before {
                    fs::write(path, bytes).unwrap();
                }
                log = Log::open(dir, &opts()).unwrap();
                prop_assert_eq!(&log.recovery_report().truncation, &None);
            }
            Op::Read(seed) => check_read(&log, &model, seed)?,
            Op::ReadFrames(seed, r, b) => check_read_frames(&log, &model, seed, r, b)?,
        }
        prop_assert_eq!(log.next_offset(), model.len() as u64);
    }
    for seed in 0..model.len() as u64 {
        check_read(&log, &model, seed)?;
    }
    let report = log.verify().unwrap();
    prop_assert_eq!(report.problem, None);
    prop_assert_eq!(report.records, model.len() as u64);
    log.close().unwrap();
    let log = Log::open(dir, &opts()).unwrap();
    prop_assert_eq!(log.next_offset(), model.len() as u64);
    for seed in 0..model.len() as u64 {
        check_read(&log, &model, seed)?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn the_log_behaves_like_a_vec_of_records(ops in prop::collection::vec(op(), 1..80)) {
        let dir = tempfile::tempdir().unwrap();
        run(dir.path(), ops)?;
    }
}
