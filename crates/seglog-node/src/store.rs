//! `NativeStore`: the key-value store's handle. get/put/has/delete go through the raw
//! callbacks in `hot.rs`; this class opens, batches, syncs, snapshots and compacts.

use napi::bindgen_prelude::{AsyncTask, Either, Uint8Array};
use napi::{Env, Task};
use napi_derive::napi;
use seglog_core as engine;
use seglog_core::store::{SnapshotJob, StoreOptions};
use seglog_core::{Key, OwnedKey};

use crate::{guard, js_error, js_number_to_u64, opt_usize, path_string, registry, removed_to_js, JsFailure, NativeRemovedSegment, Result, SyncTask};

#[napi(object)]
pub struct NativeStoreOptions {
    pub segment_bytes: Option<f64>,
    pub max_record_bytes: Option<f64>,
    pub frequent_syncs: Option<bool>,
}

#[napi(object)]
pub struct NativeStoreOpenReport {
    pub snapshot: Option<String>,
    pub replayed_from: f64,
    pub records_replayed: f64,
    pub warnings: Vec<String>,
}

#[napi(object)]
pub struct NativeCompactProgress {
    pub done: bool,
    pub end: f64,
    pub next: f64,
}

#[napi(object)]
pub struct NativeCompactReport {
    pub records_copied: f64,
    pub bytes_copied: f64,
    pub records_dropped: f64,
    pub segments_removed: Vec<NativeRemovedSegment>,
}

#[napi(object)]
pub struct NativeStoreStats {
    pub keys: f64,
    pub live_bytes: f64,
    /// Bytes of record data in the log's segments.
    pub log_bytes: f64,
    /// Bytes of the segment files (preallocated).
    pub file_bytes: f64,
    pub segments: u32,
    pub first_offset: f64,
    pub next_offset: f64,
    pub durable_offset: f64,
    pub bytes_since_snapshot: f64,
    pub last_snapshot: Option<f64>,
    pub compaction: Option<NativeCompactProgress>,
    pub poisoned: Option<String>,
}

/// How a snapshot ended: its `position` and `path`, or the error's code and message.
#[napi(object)]
pub struct NativeSnapshotOutcome {
    pub position: Option<f64>,
    pub path: Option<String>,
    pub code: Option<String>,
    pub message: Option<String>,
}

pub struct SnapshotTask {
    handle: u32,
    job: Option<SnapshotJob>,
}

impl Task for SnapshotTask {
    type Output = ();
    type JsValue = NativeSnapshotOutcome;

    fn compute(&mut self) -> napi::Result<()> {
        if let Some(job) = self.job.as_mut() {
            job.run();
        }
        Ok(())
    }

    fn resolve(&mut self, _env: Env, _: ()) -> napi::Result<NativeSnapshotOutcome> {
        let job = self.job.take().expect("resolved once");
        let position = job.position;
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            registry::with_store_or_closed(self.handle, |store| match store {
                Some(store) => store.complete_snapshot(job),
                None => Err(engine::Error::Closed),
            })
        }));
        Ok(match outcome {
            Ok(Ok(path)) => NativeSnapshotOutcome { position: Some(position as f64), path: Some(path_string(&path)), code: None, message: None },
            Ok(Err(e)) => NativeSnapshotOutcome { position: None, path: None, code: Some(e.code().to_string()), message: Some(e.to_string()) },
            Err(_) => NativeSnapshotOutcome {
                position: None,
                path: None,
                code: Some("ERR_SEGLOG_INTERNAL".into()),
                message: Some("internal error (a panic in seglog) while completing a snapshot".into()),
            },
        })
    }
}

fn progress_to_js(p: engine::store::CompactProgress) -> NativeCompactProgress {
    NativeCompactProgress { done: p.done, end: p.end as f64, next: p.next as f64 }
}

/// A JS key (string or number) to an owned key, checked by the engine later.
fn owned_key(k: Either<String, f64>) -> std::result::Result<OwnedKey, JsFailure> {
    match k {
        Either::A(s) => Ok(OwnedKey::Str(s.into_bytes())),
        Either::B(n) => Ok(OwnedKey::Int(js_number_to_u64("key", n)?)),
    }
}

#[napi]
pub struct NativeStore {
    handle: u32,
}

impl NativeStore {
    fn with<R>(&self, f: impl FnOnce(&mut engine::Store) -> engine::Result<R>) -> Result<R> {
        guard(|| registry::with_store(self.handle, f).map_err(js_error))
    }
}

#[napi]
impl NativeStore {
    #[napi(factory)]
    pub fn open(dir: String, options: Option<NativeStoreOptions>) -> Result<NativeStore> {
        let o = options.unwrap_or(NativeStoreOptions { segment_bytes: None, max_record_bytes: None, frequent_syncs: None });
        let options = StoreOptions {
            log: engine::Options {
                segment_bytes: opt_usize("segmentBytes", o.segment_bytes)?,
                max_record_bytes: opt_usize("maxRecordBytes", o.max_record_bytes)?,
                frequent_syncs: o.frequent_syncs.unwrap_or(false),
                ..engine::Options::default()
            },
        };
        let store = guard(|| engine::Store::open(&dir, &options).map_err(js_error))?;
        Ok(NativeStore { handle: registry::insert_store(store) })
    }

    #[napi(getter)]
    pub fn handle(&self) -> u32 {
        self.handle
    }

    #[napi(getter)]
    pub fn size(&self) -> Result<f64> {
        self.with(|s| {
            if s.log().is_closed() {
                return Err(engine::Error::Closed);
            }
            Ok(s.len() as f64)
        })
    }

    #[napi(getter)]
    pub fn next_offset(&self) -> Result<f64> {
        self.with(|s| Ok(s.log().next_offset() as f64))
    }

    #[napi(getter)]
    pub fn max_record_bytes(&self) -> Result<f64> {
        self.with(|s| Ok(s.log().max_record_bytes() as f64))
    }

    #[napi(getter)]
    pub fn durable_offset(&self) -> Result<f64> {
        self.with(|s| Ok(s.log().durable_offset() as f64))
    }

    #[napi(getter)]
    pub fn poisoned(&self) -> Result<Option<String>> {
        self.with(|s| Ok(s.log().poisoned().map(|e| e.to_string())))
    }

    /// Sets every entry atomically; returns the first record's offset.
    #[napi]
    pub fn put_batch(&self, keys: Vec<Either<String, f64>>, values: Vec<Uint8Array>) -> Result<f64> {
        if keys.len() != values.len() {
            return Err(JsFailure::Engine(engine::Error::InvalidArgument("putBatch: keys and values differ in length".into())).into());
        }
        let keys = keys.into_iter().map(owned_key).collect::<std::result::Result<Vec<_>, _>>()?;
        let entries: Vec<(Key, &[u8])> = keys.iter().zip(values.iter()).map(|(k, v)| (k.as_key(), &v[..])).collect();
        self.with(|s| s.put_batch(&entries)).map(|o| o as f64)
    }

    /// Every live key (strings and numbers).
    #[napi(ts_return_type = "Array<string | number>")]
    pub fn keys(&self) -> Result<Vec<Either<String, f64>>> {
        let keys = self.with(|s| s.keys())?;
        Ok(keys
            .into_iter()
            .map(|k| match k {
                OwnedKey::Int(v) => Either::B(v as f64),
                OwnedKey::Str(b) => Either::A(String::from_utf8_lossy(&b).into_owned()),
            })
            .collect())
    }

    /// Starts a sync of everything written so far on a libuv worker.
    #[napi(ts_return_type = "Promise<NativeSyncOutcome>")]
    pub fn sync(&self) -> Result<AsyncTask<SyncTask>> {
        let request = self.with(|s| s.log_mut().begin_sync())?;
        Ok(AsyncTask::new(SyncTask { handle: self.handle, request }))
    }

    /// Serializes the index now; syncs the log and writes the file on a libuv worker.
    #[napi(ts_return_type = "Promise<NativeSnapshotOutcome>")]
    pub fn snapshot(&self) -> Result<AsyncTask<SnapshotTask>> {
        let job = self.with(|s| s.begin_snapshot())?;
        Ok(AsyncTask::new(SnapshotTask { handle: self.handle, job: Some(job) }))
    }

    #[napi]
    pub fn begin_compaction(&self) -> Result<NativeCompactProgress> {
        self.with(|s| s.begin_compaction()).map(progress_to_js)
    }

    #[napi]
    pub fn compact_step(&self, budget_bytes: f64) -> Result<NativeCompactProgress> {
        let budget = js_number_to_u64("budgetBytes", budget_bytes)? as usize;
        self.with(|s| s.compact_step(budget)).map(progress_to_js)
    }

    #[napi]
    pub fn finish_compaction(&self) -> Result<NativeCompactReport> {
        let r = self.with(|s| s.finish_compaction())?;
        Ok(NativeCompactReport {
            records_copied: r.records_copied as f64,
            bytes_copied: r.bytes_copied as f64,
            records_dropped: r.records_dropped as f64,
            segments_removed: removed_to_js(r.segments_removed),
        })
    }

    #[napi]
    pub fn abort_compaction(&self) -> Result<()> {
        self.with(|s| {
            s.abort_compaction();
            Ok(())
        })
    }

    /// The snapshot that ends a compaction (it replaces every older one).
    #[napi(ts_return_type = "Promise<NativeSnapshotOutcome>")]
    pub fn compaction_snapshot(&self) -> Result<AsyncTask<SnapshotTask>> {
        let job = self.with(|s| s.begin_compaction_snapshot())?;
        Ok(AsyncTask::new(SnapshotTask { handle: self.handle, job: Some(job) }))
    }

    #[napi]
    pub fn open_report(&self) -> Result<NativeStoreOpenReport> {
        self.with(|s| {
            let r = s.open_report();
            Ok(NativeStoreOpenReport {
                snapshot: r.snapshot.as_deref().map(path_string),
                replayed_from: r.replayed_from as f64,
                records_replayed: r.records_replayed as f64,
                warnings: r.warnings.clone(),
            })
        })
    }

    #[napi]
    pub fn stats(&self) -> Result<NativeStoreStats> {
        self.with(|s| {
            let log = s.log();
            if log.is_closed() {
                return Err(engine::Error::Closed);
            }
            let segments = log.segments();
            Ok(NativeStoreStats {
                keys: s.len() as f64,
                live_bytes: s.live_bytes() as f64,
                log_bytes: segments.iter().map(|x| x.data_bytes.saturating_sub(engine::format::SEGMENT_HEADER_LEN as u64)).sum::<u64>() as f64,
                file_bytes: segments.iter().map(|x| x.file_bytes).sum::<u64>() as f64,
                segments: segments.len() as u32,
                first_offset: log.first_offset() as f64,
                next_offset: log.next_offset() as f64,
                durable_offset: log.durable_offset() as f64,
                bytes_since_snapshot: s.bytes_since_snapshot() as f64,
                last_snapshot: s.last_snapshot().map(|p| p as f64),
                compaction: s.compaction_progress().map(progress_to_js),
                poisoned: log.poisoned().map(|e| e.to_string()),
            })
        })
    }

    /// Syncs, writes the index files and releases the lock. Idempotent.
    #[napi]
    pub fn close(&self) -> Result<()> {
        guard(|| registry::close(self.handle).map_err(js_error))
    }
}

impl Drop for NativeStore {
    /// The JS object was garbage-collected without `close()`: release the store.
    fn drop(&mut self) {
        let _ = registry::close(self.handle);
    }
}
