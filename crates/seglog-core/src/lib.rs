//! seglog-core: a segmented, memory-mapped, CRC-checked append-only log.
//!
//! The on-disk format is specified in `docs/FORMAT.md`. This crate has no N-API
//! dependency; `seglog-node` only converts between it and JavaScript.

pub mod cursor;
mod error;
pub mod fault;
pub mod format;
mod log;
mod segment;
pub mod store;
mod sys;

pub use error::{Error, Result};
pub use log::{
    now_ms, CopyOutcome, Log, RemovedSegment, Retention, SyncRequest, TruncateReport, Options, Problem, Record, RecoveryReport, SegmentInfo, Truncation, VerifyReport,
    DEFAULT_INDEX_INTERVAL_BYTES, DEFAULT_MAX_RECORD_BYTES, DEFAULT_SEGMENT_BYTES, LOCK_FILE_NAME,
};
pub use store::{Key, OwnedKey, Store, StoreOptions};
pub use segment::{parse_segment_file_name, segment_file_name};
