//! N-API binding for seglog-core. It only converts: JS numbers to u64 offsets, typed
//! arrays to slices, engine errors to JS errors with a stable `code`. Log semantics live
//! in seglog-core; argument validation with TypeError/RangeError lives in the TS layer,
//! and the checks here are a second line of defence that throws coded errors.

mod hot;
mod registry;
mod store;

use napi::bindgen_prelude::{AsyncTask, Object};
use napi::{Env, JsValue, Task};
use napi_derive::napi;
use seglog_core as engine;

type Result<T> = napi::Result<T, String>;

/// Why a binding call failed, before it becomes a JS error.
pub(crate) enum JsFailure {
    /// A wrong argument type: thrown as a `TypeError`.
    Type(String),
    Engine(engine::Error),
    Internal(String),
}

impl From<engine::Error> for JsFailure {
    fn from(e: engine::Error) -> Self {
        JsFailure::Engine(e)
    }
}

impl JsFailure {
    pub(crate) fn code_and_message(&self) -> (&'static str, String) {
        match self {
            JsFailure::Type(m) => ("ERR_INVALID_ARG_TYPE", m.clone()),
            JsFailure::Engine(e) => (e.code(), e.to_string()),
            JsFailure::Internal(m) => ("ERR_SEGLOG_INTERNAL", m.clone()),
        }
    }
}

impl From<JsFailure> for napi::Error<String> {
    fn from(f: JsFailure) -> Self {
        let (code, msg) = f.code_and_message();
        napi::Error::new(code.to_string(), msg)
    }
}

fn js_error(e: engine::Error) -> napi::Error<String> {
    JsFailure::Engine(e).into()
}

/// Runs a binding call, turning a panic into an `ERR_SEGLOG_INTERNAL` error (napi-rs's own
/// `catch_unwind` would report it as `GenericFailure`, a code the API does not list).
pub(crate) fn guard<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|_| {
        Err(JsFailure::Internal("internal error (a panic in seglog); the log handle may be unusable".into()).into())
    })
}

/// A JS number that must be a safe non-negative integer (offsets, timestamps, sizes).
pub(crate) fn js_number_to_u64(name: &str, v: f64) -> std::result::Result<u64, JsFailure> {
    if v.is_finite() && v >= 0.0 && v.fract() == 0.0 && v <= 9_007_199_254_740_991.0 {
        Ok(v as u64)
    } else {
        Err(JsFailure::Engine(engine::Error::InvalidArgument(format!(
            "{name} must be a safe non-negative integer, got {v}"
        ))))
    }
}

fn opt_usize(name: &str, v: Option<f64>) -> Result<Option<usize>> {
    Ok(v.map(|v| js_number_to_u64(name, v).map(|v| v as usize)).transpose()?)
}

#[napi(module_exports)]
pub fn register_hot_path(exports: Object, env: Env) -> napi::Result<()> {
    hot::register(env.raw(), exports.raw())
}

#[napi(object)]
pub struct NativeOpenOptions {
    pub segment_bytes: Option<f64>,
    pub index_interval_bytes: Option<f64>,
    pub max_record_bytes: Option<f64>,
    pub read_only: Option<bool>,
    pub retention_bytes: Option<f64>,
    pub retention_ms: Option<f64>,
    pub retention_records: Option<f64>,
    pub retain_for_cursors: Option<bool>,
    pub archive_dir: Option<String>,
    pub frequent_syncs: Option<bool>,
}

#[napi(object)]
pub struct NativeRemovedSegment {
    pub path: String,
    pub base_offset: f64,
    pub next_offset: f64,
    pub file_bytes: f64,
    pub archived_to: Option<String>,
}

fn removed_to_js(v: Vec<engine::RemovedSegment>) -> Vec<NativeRemovedSegment> {
    v.into_iter()
        .map(|r| NativeRemovedSegment {
            path: path_string(&r.path),
            base_offset: r.base_offset as f64,
            next_offset: r.next_offset as f64,
            file_bytes: r.file_bytes as f64,
            archived_to: r.archived_to.as_deref().map(path_string),
        })
        .collect()
}

#[napi(object)]
pub struct NativeTruncateReport {
    pub previous_next_offset: f64,
    pub next_offset: f64,
    pub records_removed: f64,
    pub segments_removed: Vec<NativeRemovedSegment>,
}

#[napi(object)]
pub struct NativeCursor {
    pub name: String,
    pub position: f64,
    pub committed_ms: f64,
}

fn cursor_to_js(c: engine::cursor::CursorState) -> NativeCursor {
    NativeCursor { name: c.name, position: c.position as f64, committed_ms: c.committed_ms as f64 }
}

/// A cursor commit (temp file, fsync, rename, fsync directory) on a libuv worker.
pub struct CommitCursorTask {
    dir: std::path::PathBuf,
    name: String,
    position: u64,
}

impl Task for CommitCursorTask {
    type Output = Option<engine::Error>;
    type JsValue = NativeSyncOutcome;

    fn compute(&mut self) -> napi::Result<Self::Output> {
        Ok(engine::cursor::commit(&self.dir, &self.name, self.position, engine::now_ms()).err())
    }

    fn resolve(&mut self, _env: Env, failed: Self::Output) -> napi::Result<Self::JsValue> {
        Ok(match failed {
            None => NativeSyncOutcome { durable: Some(self.position as f64), code: None, message: None },
            Some(e) => NativeSyncOutcome { durable: None, code: Some(e.code().to_string()), message: Some(e.to_string()) },
        })
    }
}

/// How a sync ended: `durable` (records below it are on stable storage) on success,
/// else the error's `code` and `message` (the promise itself always resolves, so the
/// error keeps seglog's code; the TS layer turns it into a rejection).
#[napi(object)]
pub struct NativeSyncOutcome {
    pub durable: Option<f64>,
    pub code: Option<String>,
    pub message: Option<String>,
}

/// One group-commit sync: `fdatasync` on a libuv worker thread, then the outcome is
/// recorded in the log on the JS thread (which may poison it).
pub struct SyncTask {
    handle: u32,
    request: engine::SyncRequest,
}

impl Task for SyncTask {
    type Output = Option<std::io::Error>;
    type JsValue = NativeSyncOutcome;

    fn compute(&mut self) -> napi::Result<Self::Output> {
        Ok(self.request.run().err())
    }

    fn resolve(&mut self, _env: Env, failed: Self::Output) -> napi::Result<Self::JsValue> {
        let result = match failed {
            None => Ok(()),
            Some(e) => Err(e),
        };
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            registry::with_log_or_closed(self.handle, |log| match log {
                Some(log) => log.complete_sync(&self.request, result),
                // Closed meanwhile: close synced everything itself (or reported why not).
                None => match result {
                    Ok(()) => Ok(self.request.target),
                    Err(source) => Err(engine::Error::Poisoned { path: self.request.path().to_path_buf(), source }),
                },
            })
        }));
        Ok(match outcome {
            Ok(Ok(durable)) => NativeSyncOutcome { durable: Some(durable as f64), code: None, message: None },
            Ok(Err(e)) => NativeSyncOutcome { durable: None, code: Some(e.code().to_string()), message: Some(e.to_string()) },
            Err(_) => NativeSyncOutcome {
                durable: None,
                code: Some("ERR_SEGLOG_INTERNAL".into()),
                message: Some("internal error (a panic in seglog) while completing a sync".into()),
            },
        })
    }
}

#[napi(object)]
pub struct NativeSegmentInfo {
    pub path: String,
    pub base_offset: f64,
    pub next_offset: f64,
    pub records: f64,
    pub data_bytes: f64,
    pub file_bytes: f64,
    pub created_ms: f64,
    pub min_timestamp: Option<f64>,
    pub max_timestamp: Option<f64>,
    pub index_entries: u32,
}

#[napi(object)]
pub struct NativeProblem {
    pub segment: String,
    pub offset: Option<f64>,
    pub position: Option<f64>,
    pub reason: String,
}

#[napi(object)]
pub struct NativeVerifyReport {
    pub ok: bool,
    pub segments: u32,
    pub records: f64,
    pub bytes: f64,
    pub index_entries: f64,
    pub first_offset: f64,
    pub next_offset: f64,
    pub problem: Option<NativeProblem>,
}

#[napi(object)]
pub struct NativeTruncation {
    pub segment: String,
    pub position: f64,
    pub first_dropped_offset: f64,
    pub bytes_dropped: f64,
    pub records_dropped: f64,
    pub reason: String,
}

#[napi(object)]
pub struct NativeRecoveryReport {
    pub truncation: Option<NativeTruncation>,
    pub indexes_rebuilt: Vec<String>,
    pub temp_files_removed: Vec<String>,
}

fn path_string(p: &std::path::Path) -> String {
    p.display().to_string()
}

/// The native log handle. The TS `Log` class wraps it and keeps it private; hot-path
/// calls go through the `hot*` functions with `handle`.
#[napi]
pub struct NativeLog {
    handle: u32,
}

impl NativeLog {
    fn with<R>(&self, f: impl FnOnce(&mut engine::Log) -> engine::Result<R>) -> Result<R> {
        guard(|| registry::with_log(self.handle, f).map_err(js_error))
    }
}

#[napi]
impl NativeLog {
    #[napi(factory)]
    pub fn open(dir: String, options: Option<NativeOpenOptions>) -> Result<NativeLog> {
        let o = options.unwrap_or(NativeOpenOptions {
            segment_bytes: None,
            index_interval_bytes: None,
            max_record_bytes: None,
            read_only: None,
            retention_bytes: None,
            retention_ms: None,
            retention_records: None,
            retain_for_cursors: None,
            archive_dir: None,
            frequent_syncs: None,
        });
        let opt_u64 = |name: &str, v: Option<f64>| -> Result<Option<u64>> { Ok(v.map(|v| js_number_to_u64(name, v)).transpose()?) };
        let options = engine::Options {
            segment_bytes: opt_usize("segmentBytes", o.segment_bytes)?,
            index_interval_bytes: opt_usize("indexIntervalBytes", o.index_interval_bytes)?,
            max_record_bytes: opt_usize("maxRecordBytes", o.max_record_bytes)?,
            read_only: o.read_only.unwrap_or(false),
            retention: engine::Retention {
                bytes: opt_u64("retentionBytes", o.retention_bytes)?,
                ms: opt_u64("retentionMs", o.retention_ms)?,
                records: opt_u64("retentionRecords", o.retention_records)?,
                retain_for_cursors: o.retain_for_cursors.unwrap_or(false),
            },
            archive_dir: o.archive_dir.map(std::path::PathBuf::from),
            frequent_syncs: o.frequent_syncs.unwrap_or(false),
        };
        let log = guard(|| engine::Log::open(&dir, &options).map_err(js_error))?;
        Ok(NativeLog { handle: registry::insert(log) })
    }

    #[napi(getter)]
    pub fn handle(&self) -> u32 {
        self.handle
    }

    #[napi(getter)]
    pub fn first_offset(&self) -> Result<f64> {
        self.with(|l| Ok(l.first_offset() as f64))
    }

    #[napi(getter)]
    pub fn next_offset(&self) -> Result<f64> {
        self.with(|l| Ok(l.next_offset() as f64))
    }

    #[napi(getter)]
    pub fn max_record_bytes(&self) -> Result<f64> {
        self.with(|l| Ok(l.max_record_bytes() as f64))
    }

    /// Writes all appended data to stable storage (msync) on the JS thread.
    #[napi]
    pub fn flush(&self) -> Result<()> {
        self.with(|l| l.flush())
    }

    /// Starts a sync of everything appended so far on a libuv worker. Throws at once if
    /// the log cannot sync (closed, read-only, poisoned).
    #[napi(ts_return_type = "Promise<NativeSyncOutcome>")]
    pub fn sync(&self) -> Result<AsyncTask<SyncTask>> {
        let request = self.with(|l| l.begin_sync())?;
        Ok(AsyncTask::new(SyncTask { handle: self.handle, request }))
    }

    /// Records below this offset are on stable storage.
    #[napi(getter)]
    pub fn durable_offset(&self) -> Result<f64> {
        self.with(|l| Ok(l.durable_offset() as f64))
    }

    /// A reader's catch-up with the writer; returns the next offset.
    #[napi]
    pub fn refresh(&self) -> Result<f64> {
        self.with(|l| l.refresh().map(|n| n as f64))
    }

    /// The error of a failed sync that poisoned the log, if any.
    #[napi(getter)]
    pub fn poisoned(&self) -> Result<Option<String>> {
        self.with(|l| Ok(l.poisoned().map(|e| e.to_string())))
    }

    #[napi(getter)]
    pub fn read_only(&self) -> Result<bool> {
        self.with(|l| Ok(l.is_read_only()))
    }

    #[napi]
    pub fn delete_before(&self, offset: f64) -> Result<Vec<NativeRemovedSegment>> {
        let offset = js_number_to_u64("offset", offset)?;
        self.with(|l| l.delete_before(offset)).map(removed_to_js)
    }

    #[napi]
    pub fn enforce_retention(&self) -> Result<Vec<NativeRemovedSegment>> {
        self.with(|l| l.enforce_retention()).map(removed_to_js)
    }

    /// The last error of automatic retention at a segment roll.
    #[napi(getter)]
    pub fn retention_error(&self) -> Result<Option<String>> {
        self.with(|l| Ok(l.retention_error().map(str::to_string)))
    }

    #[napi]
    pub fn truncate(&self, next_offset: f64) -> Result<NativeTruncateReport> {
        let next = js_number_to_u64("nextOffset", next_offset)?;
        let r = self.with(|l| l.truncate(next))?;
        Ok(NativeTruncateReport {
            previous_next_offset: r.previous_next_offset as f64,
            next_offset: r.next_offset as f64,
            records_removed: r.records_removed as f64,
            segments_removed: removed_to_js(r.segments_removed),
        })
    }

    /// The first offset whose timestamp is >= `timestamp`, or null.
    #[napi]
    pub fn offset_for_timestamp(&self, timestamp: f64) -> Result<Option<f64>> {
        let ts = js_number_to_u64("timestamp", timestamp)?;
        self.with(|l| {
            l.refresh()?;
            l.offset_for_timestamp(ts)
        })
        .map(|o| o.map(|o| o as f64))
    }

    #[napi]
    pub fn cursor(&self, name: String) -> Result<Option<NativeCursor>> {
        self.with(|l| l.cursor(&name)).map(|c| c.map(cursor_to_js))
    }

    #[napi]
    pub fn cursors(&self) -> Result<Vec<NativeCursor>> {
        self.with(|l| l.cursors()).map(|v| v.into_iter().map(cursor_to_js).collect())
    }

    /// Checks the commit on the JS thread (name, position within the log), then writes
    /// the cursor file on a libuv worker.
    #[napi(ts_return_type = "Promise<NativeSyncOutcome>")]
    pub fn commit_cursor(&self, name: String, position: f64) -> Result<AsyncTask<CommitCursorTask>> {
        let position = js_number_to_u64("position", position)?;
        let dir = self.with(|l| {
            l.check_cursor_commit(&name, position)?;
            Ok(l.dir().to_path_buf())
        })?;
        Ok(AsyncTask::new(CommitCursorTask { dir, name, position }))
    }

    #[napi]
    pub fn delete_cursor(&self, name: String) -> Result<bool> {
        self.with(|l| l.delete_cursor(&name))
    }

    #[napi]
    pub fn segments(&self) -> Result<Vec<NativeSegmentInfo>> {
        let segments = self.with(|l| Ok(l.segments()))?;
        Ok(segments
            .into_iter()
            .map(|s| NativeSegmentInfo {
                path: path_string(&s.path),
                base_offset: s.base_offset as f64,
                next_offset: s.next_offset as f64,
                records: s.records as f64,
                data_bytes: s.data_bytes as f64,
                file_bytes: s.file_bytes as f64,
                created_ms: s.created_ms as f64,
                min_timestamp: s.timestamps.map(|t| t.0 as f64),
                max_timestamp: s.timestamps.map(|t| t.1 as f64),
                index_entries: s.index_entries as u32,
            })
            .collect())
    }

    #[napi]
    pub fn verify(&self) -> Result<NativeVerifyReport> {
        let r = self.with(|l| {
            l.refresh()?;
            l.verify()
        })?;
        Ok(NativeVerifyReport {
            ok: r.problem.is_none(),
            segments: r.segments as u32,
            records: r.records as f64,
            bytes: r.bytes as f64,
            index_entries: r.index_entries as f64,
            first_offset: r.first_offset as f64,
            next_offset: r.next_offset as f64,
            problem: r.problem.map(|p| NativeProblem {
                segment: path_string(&p.segment),
                offset: p.offset.map(|o| o as f64),
                position: p.position.map(|o| o as f64),
                reason: p.reason,
            }),
        })
    }

    #[napi]
    pub fn recovery_report(&self) -> Result<NativeRecoveryReport> {
        let r = self.with(|l| Ok(l.recovery_report().clone()))?;
        Ok(NativeRecoveryReport {
            truncation: r.truncation.map(|t| NativeTruncation {
                segment: path_string(&t.segment),
                position: t.position as f64,
                first_dropped_offset: t.first_dropped_offset as f64,
                bytes_dropped: t.bytes_dropped as f64,
                records_dropped: t.records_dropped as f64,
                reason: t.reason,
            }),
            indexes_rebuilt: r.indexes_rebuilt.iter().map(|p| path_string(p)).collect(),
            temp_files_removed: r.temp_files_removed.iter().map(|p| path_string(p)).collect(),
        })
    }

    /// Idempotent.
    #[napi]
    pub fn close(&self) -> Result<()> {
        guard(|| registry::close(self.handle).map_err(js_error))
    }

    /// Test hook: makes an I/O operation fail (process-wide): `point` is "sync",
    /// "preallocate" or "writeFile"; the (skip+1)th such operation fails with `errno`.
    #[napi]
    pub fn inject_fault_for_test(point: String, skip: u32, errno: i32, persistent: bool) -> Result<()> {
        let Some(p) = engine::fault::FaultPoint::parse(&point) else {
            return Err(JsFailure::Engine(engine::Error::InvalidArgument(format!("unknown fault point {point}"))).into());
        };
        engine::fault::inject(p, skip, errno, persistent);
        Ok(())
    }

    #[napi]
    pub fn clear_faults_for_test() {
        engine::fault::clear();
    }

    /// Test hook: panics inside a binding call, to prove panics become JS errors.
    #[napi]
    pub fn panic_for_test(&self) -> Result<()> {
        guard(|| panic!("seglog test panic"))
    }
}

impl Drop for NativeLog {
    /// The JS object was garbage-collected without `close()`: release the log.
    fn drop(&mut self) {
        let _ = registry::close(self.handle);
    }
}
