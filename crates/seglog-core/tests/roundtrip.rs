//! Round trips through the public API and through `docs/FORMAT.md`: every record that is
//! appended (empty, tiny, exactly `max_record_bytes`, in batches, across many segments)
//! reads back byte for byte through `read`, `read_frame`, `read_frames_into` and `iter`,
//! before and after a reopen, and a log built byte by byte from the spec reads back too.
//! Guards against framing, alignment, offset and segment-rotation bugs, and against the
//! engine drifting from the spec.

mod common;

use std::fs;

use common::*;
use seglog_core::format::{
    self, put_frame_len, write_frame_body, Frame, IndexEntry, IndexFile, SegmentHeader, FLAG_BATCH_CONTINUES,
    FRAME_HEADER_LEN, MAX_TIMESTAMP, SEGMENT_HEADER_LEN,
};
use seglog_core::{now_ms, Log, Options};

/// Checks `expected` through every read path of the log.
#[track_caller]
fn assert_every_read_path(log: &Log, expected: &[(Vec<u8>, u64)]) {
    let n = expected.len() as u64;
    assert_records(log, expected);

    for (offset, (payload, timestamp)) in expected.iter().enumerate() {
        let offset = offset as u64;
        let frame = log.read_frame(offset).unwrap().expect("frame");
        assert_eq!(frame.len(), FRAME_HEADER_LEN + payload.len(), "read_frame({offset}) length");
        match format::check_frame(frame, 0, offset, frame.len()) {
            Frame::Valid(info) => {
                assert_eq!(info.timestamp, *timestamp);
                assert_eq!(info.flags & !FLAG_BATCH_CONTINUES, 0);
                assert!(format::frame_payload(frame, 0, &info) == &payload[..], "read_frame({offset}) payload");
            }
            other => panic!("read_frame({offset}) is not a valid frame: {other:?}"),
        }
    }
    assert!(log.read_frame(n).unwrap().is_none());

    // Everything at once.
    let total: usize = expected.iter().map(|(p, _)| format::framed_len(p.len())).sum();
    let mut buf = vec![0u8; total + 64];
    let out = log.read_frames_into(0, u64::MAX, usize::MAX, &mut buf).unwrap();
    assert_eq!(out.records, n);
    assert_eq!(out.bytes, total);
    let copied = parse_copied_frames(&buf[..out.bytes], 0);
    for (c, (payload, timestamp)) in copied.iter().zip(expected) {
        assert!(c.payload == *payload && c.timestamp == *timestamp, "read_frames_into record {}", c.offset);
    }

    // Page through with a byte budget smaller than most records and a record cap.
    let mut buf = vec![0u8; 40_000];
    let mut from = 0;
    while from < n {
        let out = log.read_frames_into(from, 5, 3000, &mut buf).unwrap();
        assert!(out.records >= 1 && out.records <= 5, "page at {from} copied {} records", out.records);
        let first = format::framed_len(expected[from as usize].0.len());
        assert!(out.bytes <= 3000.max(first), "page at {from} exceeded the byte budget: {}", out.bytes);
        for c in parse_copied_frames(&buf[..out.bytes], from) {
            let (payload, timestamp) = &expected[c.offset as usize];
            assert!(c.payload == *payload && c.timestamp == *timestamp, "paged record {}", c.offset);
        }
        from += out.records;
    }
    let out = log.read_frames_into(n, 10, usize::MAX, &mut buf).unwrap();
    assert_eq!((out.records, out.bytes), (0, 0), "copy past the end");

    let all: Vec<_> = log.iter(0, n).map(|r| r.unwrap()).collect();
    assert_eq!(all.len() as u64, n);
    for (rec, (payload, timestamp)) in all.iter().zip(expected) {
        assert!(rec.payload == &payload[..] && rec.timestamp == *timestamp, "iter record {}", rec.offset);
    }
    if n > 4 {
        let some: Vec<u64> = log.iter(2, n - 1).map(|r| r.unwrap().offset).collect();
        assert_eq!(some, (2..n - 1).collect::<Vec<_>>());
    }
    assert_eq!(log.iter(n, n + 10).count(), 0);
}

#[test]
fn records_of_varied_sizes_read_back_through_every_read_path() {
    let dir = tempfile::tempdir().unwrap();
    let opts = options(16384, 512);
    let mut log = Log::open(dir.path(), &opts).unwrap();
    let max = log.max_record_bytes();
    assert!(max > 16000, "max_record_bytes {max} should nearly fill a 16 KiB segment");

    let mut sizes = vec![0, 1, 2, 7, 8, 9, 27, 28, 29, 36, 100, 255, 256, 1000, max, 0, max - 1, 3, max, 4096, 0];
    let mut rng = Rng::new(1);
    sizes.extend((0..60).map(|_| rng.below(3000) as usize));
    let mut expected = Vec::new();
    for (i, &size) in sizes.iter().enumerate() {
        let data = payload(i as u64, size);
        let timestamp = match i % 4 {
            0 => None,
            1 => Some(0),
            2 => Some(MAX_TIMESTAMP - i as u64),
            _ => Some(1_700_000_000_000 + rng.below(1 << 30)),
        };
        let before = now_ms();
        let offset = log.append(&data, timestamp).unwrap();
        let after = now_ms();
        assert_eq!(offset, i as u64, "offsets are dense from 0");
        let stored = log.read(offset).unwrap().unwrap().timestamp;
        match timestamp {
            Some(t) => assert_eq!(stored, t),
            None => {
                assert!((before..=after).contains(&stored), "defaulted timestamp {stored} not in [{before}, {after}]")
            }
        }
        expected.push((data, stored));
    }
    assert!(log.segments().len() >= 3, "max-size records must have rolled segments");
    assert_every_read_path(&log, &expected);
    assert!(log.verify().unwrap().problem.is_none());
    log.close().unwrap();

    let log = Log::open(dir.path(), &opts).unwrap();
    assert_eq!(log.recovery_report().truncation, None);
    assert_every_read_path(&log, &expected);
}

#[test]
fn record_of_exactly_a_configured_max_record_bytes_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options { max_record_bytes: Some(1000), ..options(8192, 256) };
    let mut log = Log::open(dir.path(), &opts).unwrap();
    assert_eq!(log.max_record_bytes(), 1000);
    let expected: Vec<_> = (0..20).map(|i| (payload(i, if i % 2 == 0 { 1000 } else { 0 }), i)).collect();
    for (p, t) in &expected {
        log.append(p, Some(*t)).unwrap();
    }
    assert_every_read_path(&log, &expected);
    drop(log);
    let log = Log::open(dir.path(), &opts).unwrap();
    assert_every_read_path(&log, &expected);
}

#[test]
fn append_batch_and_append_packed_return_the_first_offset_and_keep_offsets_dense() {
    let dir = tempfile::tempdir().unwrap();
    let opts = options(4096, 256);
    let mut log = Log::open(dir.path(), &opts).unwrap();
    let mut expected: Vec<(Vec<u8>, u64)> = Vec::new();

    let batch: Vec<Vec<u8>> = (0..3).map(|i| payload(100 + i, 10 * i as usize)).collect();
    assert_eq!(log.append_batch(batch.iter().map(|p| p.as_slice()), Some(11)).unwrap(), 0);
    expected.extend(batch.into_iter().map(|p| (p, 11)));

    assert_eq!(log.append(b"single", Some(12)).unwrap(), 3);
    expected.push((b"single".to_vec(), 12));

    let parts = [payload(200, 5), Vec::new(), payload(201, 7), payload(202, 300)];
    let lengths: Vec<u32> = parts.iter().map(|p| p.len() as u32).collect();
    assert_eq!(log.append_packed(&parts.concat(), &lengths, Some(13)).unwrap(), 4);
    expected.extend(parts.iter().map(|p| (p.clone(), 13)));

    assert_eq!(log.append_batch(std::iter::empty(), Some(14)).unwrap(), 8, "an empty batch returns next_offset");
    assert_eq!(log.append_packed(&[], &[], Some(14)).unwrap(), 8);
    assert_eq!(log.next_offset(), 8, "an empty batch appends nothing");

    // Batches that force rolls: each must land whole in one segment.
    for round in 0..12u64 {
        let batch: Vec<Vec<u8>> = (0..4).map(|i| payload(300 + round * 4 + i, 200 + 37 * i as usize)).collect();
        let first = log.append_batch(batch.iter().map(|p| p.as_slice()), Some(round)).unwrap();
        assert_eq!(first, expected.len() as u64);
        expected.extend(batch.into_iter().map(|p| (p, round)));
        let segs = log.segments();
        let holder = segs.iter().find(|s| s.base_offset <= first && first < s.next_offset).unwrap();
        assert!(holder.next_offset >= first + 4, "batch at {first} split across segments");
    }
    assert!(log.segments().len() > 2);
    assert_every_read_path(&log, &expected);

    // The last record of each batch has BATCH_CONTINUES clear, the others set (FORMAT.md 2.2).
    log.close().unwrap();
    let log = Log::open(dir.path(), &opts).unwrap();
    let frame_flags = |o: u64| match format::check_frame(log.read_frame(o).unwrap().unwrap(), 0, o, usize::MAX) {
        Frame::Valid(info) => info.flags,
        other => panic!("{other:?}"),
    };
    assert_eq!([0, 1, 2, 3].map(frame_flags), [FLAG_BATCH_CONTINUES, FLAG_BATCH_CONTINUES, 0, 0]);
    assert_eq!([4, 5, 6, 7].map(frame_flags), [FLAG_BATCH_CONTINUES, FLAG_BATCH_CONTINUES, FLAG_BATCH_CONTINUES, 0]);
    assert_every_read_path(&log, &expected);
}

#[test]
fn rotation_across_many_segments_keeps_offsets_contiguous_and_reads_span_segments() {
    let dir = tempfile::tempdir().unwrap();
    let opts = options(4096, 256);
    let mut log = Log::open(dir.path(), &opts).unwrap();
    let mut rng = Rng::new(3);
    let mut expected = Vec::new();
    while log.segments().len() < 24 {
        let data = payload(expected.len() as u64, rng.below(600) as usize);
        let t = 1_000 + expected.len() as u64;
        log.append(&data, Some(t)).unwrap();
        expected.push((data, t));
    }

    let check_segments = |log: &Log| {
        let segs = log.segments();
        assert!(segs.len() >= 24);
        assert_eq!(segs[0].base_offset, 0);
        for pair in segs.windows(2) {
            assert_eq!(pair[1].base_offset, pair[0].next_offset, "segments must be contiguous");
            assert!(pair[0].records > 0);
        }
        assert_eq!(segs.last().unwrap().next_offset, log.next_offset());
        assert_eq!(segs.iter().map(|s| s.records).sum::<u64>(), log.next_offset());
        for s in &segs {
            assert_eq!(s.path, seg_path(dir.path(), s.base_offset), "segment file name (FORMAT.md 1)");
            assert_eq!(s.records, s.next_offset - s.base_offset);
            assert_eq!(s.file_bytes, 4096);
            assert!(s.data_bytes <= s.file_bytes && s.data_bytes % 8 == 0);
            assert!(s.index_entries >= 1);
        }
        let bases: Vec<u64> = segs.iter().map(|s| s.base_offset).collect();
        assert_eq!(segment_bases(dir.path()), bases, "segment files on disk");
        for s in &segs[..segs.len() - 1] {
            assert!(idx_path(dir.path(), s.base_offset).exists(), "sealed segment {} has no index", s.base_offset);
        }
        segs
    };
    let segs = check_segments(&log);

    // Records on both sides of every boundary.
    for s in &segs[1..] {
        for o in [s.base_offset - 1, s.base_offset] {
            let rec = log.read(o).unwrap().unwrap();
            assert!(rec.payload == &expected[o as usize].0[..], "record {o} at a segment boundary");
        }
    }

    // A copy from the middle of one segment through several others.
    let from = segs[3].base_offset + 1;
    let to = segs[9].base_offset + 2;
    let mut buf = vec![0u8; 64 * 1024];
    let out = log.read_frames_into(from, to - from, usize::MAX, &mut buf).unwrap();
    assert_eq!(out.records, to - from);
    let copied = parse_copied_frames(&buf[..out.bytes], from);
    for c in &copied {
        assert!(c.payload == expected[c.offset as usize].0, "spanning copy, record {}", c.offset);
    }

    // A destination too small for the first record copies nothing and says what it needs.
    let big = expected.iter().position(|(p, _)| p.len() > 300).unwrap() as u64;
    let need = format::framed_len(expected[big as usize].0.len());
    let out = log.read_frames_into(big, 10, usize::MAX, &mut buf[..need - 8]).unwrap();
    assert_eq!((out.records, out.bytes, out.needed), (0, 0, need));
    let out = log.read_frames_into(big, 10, 1, &mut buf[..need]).unwrap();
    assert_eq!((out.records, out.bytes), (1, need), "one record always fits a destination that can hold it");

    assert_every_read_path(&log, &expected);
    log.close().unwrap();

    let log = Log::open(dir.path(), &opts).unwrap();
    let reopened = check_segments(&log);
    assert_eq!(
        reopened.iter().map(|s| (s.base_offset, s.next_offset, s.data_bytes)).collect::<Vec<_>>(),
        segs.iter().map(|s| (s.base_offset, s.next_offset, s.data_bytes)).collect::<Vec<_>>()
    );
    assert_every_read_path(&log, &expected);
    let report = log.verify().unwrap();
    assert_eq!(report.problem, None);
    assert_eq!(report.segments, segs.len());
    assert_eq!(report.records, expected.len() as u64);
}

#[test]
fn reopen_resumes_at_next_offset_after_close_and_after_drop() {
    let dir = tempfile::tempdir().unwrap();
    let opts = options(4096, 128);
    let mut expected: Vec<(Vec<u8>, u64)> = Vec::new();
    fn append(log: &mut Log, expected: &mut Vec<(Vec<u8>, u64)>, count: usize) {
        for _ in 0..count {
            let o = expected.len() as u64;
            let data = payload(o, (o as usize * 37) % 500);
            assert_eq!(log.append(&data, Some(o * 10)).unwrap(), o);
            expected.push((data, o * 10));
        }
    }

    let mut log = Log::open(dir.path(), &opts).unwrap();
    assert_eq!(log.next_offset(), 0);
    append(&mut log, &mut expected, 30);
    log.close().unwrap();

    let mut log = Log::open(dir.path(), &opts).unwrap();
    assert_eq!(log.next_offset(), 30, "close then reopen keeps next_offset");
    assert_eq!(log.recovery_report().truncation, None);
    append(&mut log, &mut expected, 25);
    assert_records(&log, &expected);
    drop(log); // The Drop path, without close.

    let mut log = Log::open(dir.path(), &opts).unwrap();
    assert_eq!(log.next_offset(), 55, "drop then reopen keeps next_offset");
    assert_eq!(log.recovery_report().truncation, None);
    assert_records(&log, &expected);
    append(&mut log, &mut expected, 5);
    log.close().unwrap();

    let log = Log::open(dir.path(), &opts).unwrap();
    assert_records(&log, &expected);
    assert_eq!(log.verify().unwrap().problem, None);
    assert!(log.segments().len() > 3);
}

#[test]
fn a_smaller_max_record_bytes_on_reopen_still_reads_larger_records() {
    let dir = tempfile::tempdir().unwrap();
    let big = payload(1, 3000);
    let mut log = Log::open(dir.path(), &options(16384, 512)).unwrap();
    for _ in 0..8 {
        log.append(&big, Some(1)).unwrap();
    }
    log.close().unwrap();

    // FORMAT.md 5: the length bound on disk comes from the segment size, not the setting.
    let opts = Options { max_record_bytes: Some(100), ..options(16384, 512) };
    let mut log = Log::open(dir.path(), &opts).unwrap();
    assert_eq!(log.recovery_report().truncation, None);
    assert_eq!(log.next_offset(), 8);
    for o in 0..8 {
        assert!(log.read(o).unwrap().unwrap().payload == &big[..]);
    }
    expect_code(log.append(&big, None), "ERR_SEGLOG_RECORD_TOO_LARGE");
    assert_eq!(log.append(&big[..100], None).unwrap(), 8);
}

/// Writes frames for `records` (offset, timestamp, flags, payload) into a fresh segment image.
fn build_segment(base: u64, segment_bytes: usize, records: &[(u64, u64, u32, Vec<u8>)]) -> (Vec<u8>, Vec<usize>) {
    let mut seg = vec![0u8; segment_bytes];
    let header =
        SegmentHeader { base_offset: base, created_ms: 1_700_000_000_000, segment_bytes: segment_bytes as u64 };
    seg[..SEGMENT_HEADER_LEN].copy_from_slice(&header.encode());
    let mut pos = SEGMENT_HEADER_LEN;
    let mut positions = Vec::new();
    for (offset, ts, flags, p) in records {
        let n = FRAME_HEADER_LEN + p.len();
        let len = write_frame_body(&mut seg[pos..pos + n], *offset, *ts, *flags, p);
        put_frame_len(&mut seg[pos..pos + n], len);
        positions.push(pos);
        pos = (pos + n + 7) & !7;
    }
    (seg, positions)
}

#[test]
fn a_log_built_byte_by_byte_from_format_md_opens_and_reads() {
    let dir = tempfile::tempdir().unwrap();
    let opts = options(4096, 256);
    let rec = |o: u64, flags: u32, len: usize| (o, 5_000 + o, flags, payload(o, len));
    let sealed = vec![rec(0, 0, 0), rec(1, 0, 13), rec(2, FLAG_BATCH_CONTINUES, 300), rec(3, 0, 40)];
    let active = vec![rec(4, 0, 1), rec(5, FLAG_BATCH_CONTINUES, 64), rec(6, FLAG_BATCH_CONTINUES, 2), rec(7, 0, 99)];
    let (seg0, pos0) = build_segment(0, 4096, &sealed);
    let (seg4, _) = build_segment(4, 4096, &active);
    let end0 = {
        let last = pos0[3] + FRAME_HEADER_LEN + 40;
        (last + 7) & !7
    };
    let idx0 = IndexFile {
        base_offset: 0,
        next_offset: 4,
        end_position: end0 as u32,
        min_timestamp: 5_000,
        max_timestamp: 5_003,
        entries: vec![
            IndexEntry { relative_offset: 0, position: pos0[0] as u32, max_timestamp: 5_000 },
            IndexEntry { relative_offset: 3, position: pos0[3] as u32, max_timestamp: 5_003 },
        ],
    };
    fs::write(seg_path(dir.path(), 0), &seg0).unwrap();
    fs::write(idx_path(dir.path(), 0), idx0.encode()).unwrap();
    fs::write(seg_path(dir.path(), 4), &seg4).unwrap();

    let mut log = Log::open(dir.path(), &opts).unwrap();
    assert_eq!(log.recovery_report().truncation, None);
    let expected: Vec<_> = sealed.iter().chain(&active).map(|(_, t, _, p)| (p.clone(), *t)).collect();
    assert_every_read_path(&log, &expected);
    assert_eq!(log.verify().unwrap().problem, None);
    assert_eq!(log.append(b"next", Some(1)).unwrap(), 8);
}

/// FORMAT.md 3 and 5: a payload may be up to `segmentBytes - 64 - 28`, and a reader bounds
/// lengths by exactly that. A frame of that size, written by any conforming writer (the
/// pure-JS engine for one), fills a 4096-byte segment to the last byte and must be read,
/// neither declared corrupt (sealed) nor cut as a torn tail (active).
#[test]
fn a_frame_of_the_largest_payload_format_md_allows_is_read() {
    let s = 4096;
    let largest = s - SEGMENT_HEADER_LEN - FRAME_HEADER_LEN;
    assert_eq!(SEGMENT_HEADER_LEN + format::framed_len(largest), s, "such a frame fills the segment exactly");

    // In the active segment: recovery must keep it.
    let dir = tempfile::tempdir().unwrap();
    let (seg, _) = build_segment(0, s, &[(0, 7, 0, payload(0, largest))]);
    fs::write(seg_path(dir.path(), 0), &seg).unwrap();
    let log = Log::open(dir.path(), &options(s, 256)).unwrap();
    assert_eq!(log.recovery_report().truncation, None, "a valid frame was cut as a torn tail");
    assert_records(&log, &[(payload(0, largest), 7)]);
    drop(log);

    // In a sealed segment: the open must succeed.
    let dir = tempfile::tempdir().unwrap();
    let (seg0, _) = build_segment(0, s, &[(0, 7, 0, payload(0, largest))]);
    let (seg1, _) = build_segment(1, s, &[(1, 8, 0, payload(1, 10))]);
    fs::write(seg_path(dir.path(), 0), &seg0).unwrap();
    fs::write(seg_path(dir.path(), 1), &seg1).unwrap();
    let log = Log::open(dir.path(), &options(s, 256)).unwrap();
    assert_records(&log, &[(payload(0, largest), 7), (payload(1, 10), 8)]);
    drop(log);

    // And this engine accepts the setting and writes such a record itself.
    let dir = tempfile::tempdir().unwrap();
    let opts = Options { max_record_bytes: Some(largest), ..options(s, 256) };
    let mut log = Log::open(dir.path(), &opts).unwrap();
    log.append(&payload(2, largest), Some(9)).unwrap();
    log.close().unwrap();
    let log = Log::open(dir.path(), &opts).unwrap();
    assert_records(&log, &[(payload(2, largest), 9)]);
}

/// FORMAT.md 3 allows any `segmentBytes` from 4096, not only multiples of 8. A record of
/// exactly the default `max_record_bytes` must then still fit an empty segment and read
/// back through every path, and `verify` must not trip over the segment's last bytes.
#[test]
fn segment_sizes_that_are_not_multiples_of_8_hold_max_size_records() {
    for s in [4097usize, 4100, 4101, 4103, 5005] {
        let dir = tempfile::tempdir().unwrap();
        let opts = options(s, 256);
        let mut log = Log::open(dir.path(), &opts).unwrap();
        let max = log.max_record_bytes();
        assert!(
            SEGMENT_HEADER_LEN + FRAME_HEADER_LEN + max <= s,
            "segment_bytes {s}: max_record_bytes {max} does not fit an empty segment"
        );
        let mut expected = Vec::new();
        for i in 0..3u64 {
            for len in [max, 10] {
                let data = payload(i * 2 + len as u64, len);
                log.append(&data, Some(i)).unwrap_or_else(|e| panic!("segment_bytes {s}: append of {len} bytes: {e}"));
                expected.push((data, i));
            }
        }
        assert_every_read_path(&log, &expected);
        assert_eq!(log.verify().unwrap().problem, None, "segment_bytes {s}");
        log.close().unwrap();
        let log = Log::open(dir.path(), &opts).unwrap();
        assert_eq!(log.recovery_report().indexes_rebuilt, Vec::<std::path::PathBuf>::new(), "segment_bytes {s}");
        assert_every_read_path(&log, &expected);
        assert_eq!(log.verify().unwrap().problem, None, "segment_bytes {s}");
    }
}

/// `segment_bytes` applies to new segments; existing ones keep their size, including an
/// empty active segment too small for the next record, which is replaced.
#[test]
fn segment_bytes_can_change_between_opens() {
    let dir = tempfile::tempdir().unwrap();
    let small = options(4096, 256);
    let large = options(65536, 1024);
    let mut expected = Vec::new();

    // An empty log made with small segments, reopened with large ones and a large record.
    Log::open(dir.path(), &small).unwrap().close().unwrap();
    let mut log = Log::open(dir.path(), &large).unwrap();
    let big = payload(0, 20_000);
    assert_eq!(log.append(&big, Some(1)).unwrap(), 0);
    expected.push((big, 1));
    log.close().unwrap();

    let mut log = Log::open(dir.path(), &small).unwrap();
    assert_records(&log, &expected);
    // 130 records of 728 framed bytes: past the 64 KiB active segment into small ones.
    for i in 1..130u64 {
        let data = payload(i, 700);
        assert_eq!(log.append(&data, Some(i)).unwrap(), i);
        expected.push((data, i));
    }
    let sizes: Vec<u64> = log.segments().iter().map(|s| s.file_bytes).collect();
    assert_eq!(sizes[0], 65536, "the first segment keeps its size");
    assert!(sizes.len() > 2 && sizes[1..].iter().all(|&s| s == 4096), "new segments are small: {sizes:?}");
    assert_every_read_path(&log, &expected);
    log.close().unwrap();

    let log = Log::open(dir.path(), &large).unwrap();
    assert_eq!(log.recovery_report().indexes_rebuilt, Vec::<std::path::PathBuf>::new());
    assert_every_read_path(&log, &expected);
    assert_eq!(log.verify().unwrap().problem, None);
}
