//! The key-value store (FORMAT.md 10): a model test driven by proptest, snapshots that
//! fail their checks, compaction's space bound and its crash points.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use proptest::prelude::*;
use seglog_core::store::{snapshot_file_name, SNAPSHOT_DIR};
use seglog_core::{Key, Options, OwnedKey, Store, StoreOptions};

fn opts(segment_bytes: usize) -> StoreOptions {
    StoreOptions { log: Options { segment_bytes: Some(segment_bytes), ..Options::default() } }
}

type Model = BTreeMap<OwnedKey, Vec<u8>>;

fn assert_matches(store: &Store, model: &Model, keys: &[OwnedKey]) {
    assert_eq!(store.len(), model.len(), "size");
    for k in keys {
        assert_eq!(store.get(k.as_key()).unwrap(), model.get(k).map(|v| v.as_slice()), "get({k:?})");
        assert_eq!(store.has(k.as_key()).unwrap(), model.contains_key(k), "has({k:?})");
    }
    let mut listed = store.keys().unwrap();
    listed.sort();
    assert_eq!(listed, model.keys().cloned().collect::<Vec<_>>(), "keys()");
}

#[derive(Debug, Clone)]
enum Op {
    Put(usize, Vec<u8>),
    Delete(usize),
    Batch(Vec<(usize, Vec<u8>)>),
    Snapshot,
    Compact,
    Reopen,
    /// Corrupt the newest snapshot file, then reopen.
    CorruptSnapshot(usize),
}

/// A small key space (so keys collide, get overwritten and deleted): integers, and
/// strings that include '1' next to 1.
fn key_space() -> Vec<OwnedKey> {
    let mut keys: Vec<OwnedKey> = (0..12u64).map(OwnedKey::Int).collect();
    keys.push(OwnedKey::Int((1 << 53) - 1));
    for s in ["1", "a", "b", "key-with-a-longer-name", "ü", "0"] {
        keys.push(OwnedKey::Str(s.as_bytes().to_vec()));
    }
    keys.push(OwnedKey::Str(vec![b'k'; 1024]));
    keys
}

fn value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => prop::collection::vec(any::<u8>(), 0..40),
        1 => prop::collection::vec(any::<u8>(), 200..700),
    ]
}

fn op(nkeys: usize) -> impl Strategy<Value = Op> {
    prop_oneof![
        30 => (0..nkeys, value()).prop_map(|(k, v)| Op::Put(k, v)),
        10 => (0..nkeys).prop_map(Op::Delete),
        5 => prop::collection::vec((0..nkeys, value()), 0..6).prop_map(Op::Batch),
        2 => Just(Op::Snapshot),
        2 => Just(Op::Compact),
        2 => Just(Op::Reopen),
        1 => (0..64usize).prop_map(Op::CorruptSnapshot),
    ]
}

fn newest_snapshot(dir: &Path) -> Option<std::path::PathBuf> {
    let mut files: Vec<_> = fs::read_dir(dir.join(SNAPSHOT_DIR)).ok()?.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|e| e == "snap")).collect();
    files.sort();
    files.pop()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Random put/delete/batch/snapshot/compact/reopen sequences against a BTreeMap:
    /// after every step every key reads as the model says.
    #[test]
    fn store_matches_model(ops in prop::collection::vec(op(20), 1..120)) {
        let keys = key_space();
        let dir = tempfile::tempdir().unwrap();
        let o = opts(8192);
        let mut store = Store::open(dir.path(), &o).unwrap();
        let mut model = Model::new();
        // A corrupted snapshot is reported at every open until a newer one replaces it.
        let mut corrupted = false;
        for op in ops {
            match op {
                Op::Put(k, v) => {
                    store.put(keys[k].as_key(), &v).unwrap();
                    model.insert(keys[k].clone(), v);
                }
                Op::Delete(k) => {
                    let existed = store.delete(keys[k].as_key()).unwrap();
                    prop_assert_eq!(existed, model.remove(&keys[k]).is_some());
                }
                Op::Batch(entries) => {
                    let batch: Vec<(Key, &[u8])> = entries.iter().map(|(k, v)| (keys[*k].as_key(), v.as_slice())).collect();
                    store.put_batch(&batch).unwrap();
                    for (k, v) in entries {
                        model.insert(keys[k].clone(), v);
                    }
                }
                Op::Snapshot => {
                    store.snapshot().unwrap();
                    corrupted = false;
                }
                Op::Compact => {
                    store.compact().unwrap();
                    corrupted = false;
                }
                Op::Reopen => {
                    store.close().unwrap();
                    store = Store::open(dir.path(), &o).unwrap();
                    prop_assert_eq!(store.open_report().warnings.is_empty(), !corrupted, "{:?}", store.open_report().warnings);
                }
                Op::CorruptSnapshot(at) => {
                    store.close().unwrap();
                    if let Some(path) = newest_snapshot(dir.path()) {
                        let mut b = fs::read(&path).unwrap();
                        let i = at % b.len();
                        b[i] = b[i].wrapping_add(1); // (XOR twice would restore it)
                        fs::write(&path, b).unwrap();
                        corrupted = true;
                    }
                    store = Store::open(dir.path(), &o).unwrap();
                }
            }
            assert_matches(&store, &model, &keys);
        }
    }
}

#[test]
fn integer_and_string_keys_are_distinct() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::open(dir.path(), &opts(1 << 20)).unwrap();
    s.put(Key::Int(1), b"int").unwrap();
    s.put(Key::Str(b"1"), b"str").unwrap();
    assert_eq!(s.get(Key::Int(1)).unwrap(), Some(&b"int"[..]));
    assert_eq!(s.get(Key::Str(b"1")).unwrap(), Some(&b"str"[..]));
    assert!(s.delete(Key::Int(1)).unwrap());
    assert_eq!(s.get(Key::Int(1)).unwrap(), None);
    assert_eq!(s.get(Key::Str(b"1")).unwrap(), Some(&b"str"[..]));
    assert!(!s.delete(Key::Int(1)).unwrap());
}

#[test]
fn bad_keys_are_refused_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::open(dir.path(), &opts(1 << 20)).unwrap();
    let before = s.log().next_offset();
    for key in [Key::Str(b""), Key::Str(&[b'x'; 1025]), Key::Int(1 << 53)] {
        let err = s.put(key, b"v").unwrap_err();
        assert_eq!(err.code(), "ERR_SEGLOG_INVALID_ARGUMENT", "{err}");
        assert_eq!(s.get(key).unwrap_err().code(), "ERR_SEGLOG_INVALID_ARGUMENT");
    }
    // A batch with one bad key writes none of it.
    let err = s.put_batch(&[(Key::Int(1), b"a"), (Key::Str(b""), b"b")]).unwrap_err();
    assert_eq!(err.code(), "ERR_SEGLOG_INVALID_ARGUMENT");
    let big = vec![0u8; s.log().max_record_bytes()];
    assert_eq!(s.put(Key::Int(1), &big).unwrap_err().code(), "ERR_SEGLOG_RECORD_TOO_LARGE");
    assert_eq!(s.log().next_offset(), before);
    assert!(s.is_empty());
}

#[test]
fn a_log_that_is_not_a_store_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = seglog_core::Log::open(dir.path(), &Options::default()).unwrap();
    log.append(b"\x07 not a store record", None).unwrap();
    log.close().unwrap();
    let err = Store::open(dir.path(), &opts(1 << 20)).err().unwrap();
    assert_eq!(err.code(), "ERR_SEGLOG_CORRUPT", "{err}");
}

#[test]
fn snapshots_make_open_replay_only_the_tail_and_bad_ones_fall_back() {
    let dir = tempfile::tempdir().unwrap();
    let o = opts(1 << 20);
    let mut s = Store::open(dir.path(), &o).unwrap();
    for i in 0..1000u64 {
        s.put(Key::Int(i), &i.to_le_bytes()).unwrap();
    }
    let first = s.snapshot().unwrap();
    for i in 1000..1100u64 {
        s.put(Key::Int(i), &i.to_le_bytes()).unwrap();
    }
    let second = s.snapshot().unwrap();
    s.delete(Key::Int(5)).unwrap();
    s.close().unwrap();

    let s = Store::open(dir.path(), &o).unwrap();
    assert_eq!(s.open_report().snapshot.as_deref(), Some(second.as_path()));
    assert_eq!(s.open_report().records_replayed, 1, "only the delete after the snapshot");
    assert_eq!(s.len(), 1099);
    drop(s);

    // Corrupt the newest: the older one is used, with a warning.
    let mut b = fs::read(&second).unwrap();
    let n = b.len();
    b[n - 3] ^= 1;
    fs::write(&second, b).unwrap();
    let s = Store::open(dir.path(), &o).unwrap();
    assert_eq!(s.open_report().snapshot.as_deref(), Some(first.as_path()));
    assert_eq!(s.open_report().warnings.len(), 1);
    assert!(s.open_report().warnings[0].contains("entries CRC mismatch"), "{:?}", s.open_report().warnings);
    assert_eq!(s.len(), 1099);
    assert_eq!(s.get(Key::Int(5)).unwrap(), None);
    assert_eq!(s.get(Key::Int(1050)).unwrap(), Some(&1050u64.to_le_bytes()[..]));
    drop(s);

    // Delete both: a full replay.
    fs::remove_file(&first).unwrap();
    fs::write(&second, b"short").unwrap();
    let s = Store::open(dir.path(), &o).unwrap();
    assert_eq!(s.open_report().snapshot, None);
    assert_eq!(s.open_report().records_replayed, 1101);
    assert_eq!(s.len(), 1099);
}

#[test]
fn a_snapshot_ahead_of_the_log_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let o = opts(1 << 20);
    let mut s = Store::open(dir.path(), &o).unwrap();
    s.put(Key::Int(1), b"one").unwrap();
    let snap = s.snapshot().unwrap();
    s.close().unwrap();
    // Rename it to claim a later position (the header then disagrees with the name).
    let moved = snap.with_file_name(snapshot_file_name(99));
    fs::rename(&snap, &moved).unwrap();
    let s = Store::open(dir.path(), &o).unwrap();
    assert!(s.open_report().warnings[0].contains("disagrees with the file name"), "{:?}", s.open_report().warnings);
    assert_eq!(s.get(Key::Int(1)).unwrap(), Some(&b"one"[..]));
}

/// Issue 5's space bound: overwrite 10 000 keys 100 times, compact, and the directory
/// holds at most twice the live data.
#[test]
fn compaction_bounds_space_to_twice_the_live_data() {
    let dir = tempfile::tempdir().unwrap();
    let o = opts(1 << 20);
    let mut s = Store::open(dir.path(), &o).unwrap();
    let mut v = [0u8; 100];
    for round in 0..100u32 {
        let batch: Vec<(u64, [u8; 100])> = (0..10_000u64)
            .map(|k| {
                v[..4].copy_from_slice(&round.to_le_bytes());
                v[4..12].copy_from_slice(&k.to_le_bytes());
                (k, v)
            })
            .collect();
        for chunk in batch.chunks(1000) {
            let entries: Vec<(Key, &[u8])> = chunk.iter().map(|(k, v)| (Key::Int(*k), &v[..])).collect();
            s.put_batch(&entries).unwrap();
        }
    }
    let before = dir_bytes(dir.path());
    let report = s.compact().unwrap();
    assert_eq!(report.records_copied, 10_000);
    let live = s.live_bytes();
    let after = dir_bytes(dir.path());
    assert!(after <= 2 * live + (1 << 20), "{after} bytes on disk for {live} live bytes (before: {before})");
    assert!(before > 50 * live);
    s.close().unwrap();
    let s = Store::open(dir.path(), &o).unwrap();
    assert!(s.open_report().warnings.is_empty());
    assert_eq!(s.len(), 10_000);
    for k in [0u64, 4_321, 9_999] {
        let got = s.get(Key::Int(k)).unwrap().unwrap();
        assert_eq!(&got[..4], &99u32.to_le_bytes());
        assert_eq!(&got[4..12], &k.to_le_bytes());
    }
}

fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    for e in fs::read_dir(dir).unwrap().flatten() {
        let m = e.metadata().unwrap();
        total += if m.is_dir() { dir_bytes(&e.path()) } else { m.len() };
    }
    total
}

/// Crash points of compaction (FORMAT.md 10.4): copies made but old segments not yet
/// removed; some of the old segments removed; the old snapshot still there. Each must
/// open to the same contents.
#[test]
fn every_compaction_cut_point_opens_to_the_same_contents() {
    for stop_after in 0..6 {
        let dir = tempfile::tempdir().unwrap();
        let o = opts(8192);
        let mut s = Store::open(dir.path(), &o).unwrap();
        let mut model = Model::new();
        for i in 0..400u64 {
            let k = i % 37;
            if i % 11 == 0 {
                s.delete(Key::Int(k)).unwrap();
                model.remove(&OwnedKey::Int(k));
            } else {
                let v = vec![i as u8; (i % 90) as usize];
                s.put(Key::Int(k), &v).unwrap();
                model.insert(OwnedKey::Int(k), v);
            }
            if i == 200 {
                s.snapshot().unwrap();
            }
        }
        s.begin_compaction().unwrap();
        let mut steps = 0;
        while !s.compact_step(2048).unwrap().done {
            steps += 1;
            // A write in the middle of the compaction.
            if steps == 2 {
                s.put(Key::Int(3), b"during").unwrap();
                model.insert(OwnedKey::Int(3), b"during".to_vec());
                s.delete(Key::Int(4)).unwrap();
                model.remove(&OwnedKey::Int(4));
            }
        }
        s.log_mut().sync().unwrap();
        // Simulate the crash: remove only some of the old segments (oldest first), as an
        // interrupted `finish_compaction` would, and drop the store without its snapshot.
        let end = s.compaction_progress().unwrap().end;
        let segs: Vec<_> = s.log().segments().into_iter().filter(|x| x.next_offset <= end).collect();
        let remove = (stop_after * segs.len() / 5).min(segs.len());
        s.close().unwrap();
        for seg in &segs[..remove] {
            let _ = fs::remove_file(seg.path.with_extension("idx"));
            fs::remove_file(&seg.path).unwrap();
        }
        let s = Store::open(dir.path(), &o).unwrap();
        let keys: Vec<OwnedKey> = (0..37).map(OwnedKey::Int).collect();
        assert_matches(&s, &model, &keys);
    }
}

/// A snapshot ahead of the recovered log (records it covered were cut) is set aside at
/// once: after new writes carry the log past its position it must not be trusted.
#[test]
fn a_snapshot_ahead_of_the_log_never_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let o = opts(1 << 20);
    let mut s = Store::open(dir.path(), &o).unwrap();
    for i in 0..10u64 {
        s.put(Key::Int(i), b"old").unwrap();
    }
    s.snapshot().unwrap();
    // Lose the last five records, as a recovery cut would.
    s.log_mut().truncate(5).unwrap();
    s.close().unwrap();

    let mut s = Store::open(dir.path(), &o).unwrap();
    assert!(s.open_report().warnings[0].contains("renamed to *.rejected"), "{:?}", s.open_report().warnings);
    assert_eq!(s.len(), 5);
    s.delete(Key::Int(1)).unwrap();
    for i in 100..110u64 {
        s.put(Key::Int(i), b"new").unwrap();
    }
    s.close().unwrap();

    let s = Store::open(dir.path(), &o).unwrap();
    assert!(s.open_report().warnings.is_empty(), "{:?}", s.open_report().warnings);
    assert_eq!(s.open_report().snapshot, None);
    assert_eq!(s.len(), 14);
    assert_eq!(s.get(Key::Int(1)).unwrap(), None);
    assert_eq!(s.get(Key::Int(105)).unwrap(), Some(&b"new"[..]));
    assert!(fs::read_dir(dir.path().join(SNAPSHOT_DIR)).unwrap().flatten().any(|e| e.file_name().to_string_lossy().ends_with(".rejected")));
}
