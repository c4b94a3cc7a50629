//! Open logs of this JS thread, by handle. Each Node.js thread (main or worker) has its
//! own registry, so a log never crosses threads. Handles are never reused: a stale
//! handle (after `close`) finds nothing and gets `ERR_SEGLOG_CLOSED`, never another log.

use std::cell::RefCell;

use seglog_core::{Error, Log};

thread_local! {
    static LOGS: RefCell<Vec<Option<Log>>> = const { RefCell::new(Vec::new()) };
}

pub fn insert(log: Log) -> u32 {
    LOGS.with(|logs| {
        let mut logs = logs.borrow_mut();
        logs.push(Some(log));
        (logs.len() - 1) as u32
    })
}

/// Runs `f` on the log behind `handle`. No JS runs during `f`, so the borrow cannot be
/// re-entered.
#[inline]
pub fn with_log<R>(handle: u32, f: impl FnOnce(&mut Log) -> Result<R, Error>) -> Result<R, Error> {
    LOGS.with(|logs| match logs.borrow_mut().get_mut(handle as usize) {
        Some(Some(log)) => f(log),
        _ => Err(Error::Closed),
    })
}

/// Runs `f` with the log behind `handle`, or `None` if it is closed.
pub fn with_log_or_closed<R>(handle: u32, f: impl FnOnce(Option<&mut Log>) -> R) -> R {
    LOGS.with(|logs| f(logs.borrow_mut().get_mut(handle as usize).and_then(Option::as_mut)))
}

/// Closes and forgets the log. Idempotent.
pub fn close(handle: u32) -> Result<(), Error> {
    let log = LOGS.with(|logs| logs.borrow_mut().get_mut(handle as usize).and_then(Option::take));
    match log {
        Some(mut log) => log.close(),
        None => Ok(()),
    }
}
