//! Open logs and stores of this JS thread, by handle. Each Node.js thread (main or
//! worker) has its own registry, so a log never crosses threads. Handles are never
//! reused: a stale handle (after `close`) finds nothing and gets `ERR_SEGLOG_CLOSED`,
//! never another log.

use std::cell::RefCell;

use seglog_core::{Error, Log, Store};

enum Slot {
    Log(Log),
    Store(Store),
}

thread_local! {
    static SLOTS: RefCell<Vec<Option<Slot>>> = const { RefCell::new(Vec::new()) };
}

fn insert_slot(slot: Slot) -> u32 {
    SLOTS.with(|slots| {
        let mut slots = slots.borrow_mut();
        slots.push(Some(slot));
        (slots.len() - 1) as u32
    })
}

pub fn insert(log: Log) -> u32 {
    insert_slot(Slot::Log(log))
}

pub fn insert_store(store: Store) -> u32 {
    insert_slot(Slot::Store(store))
}

/// Runs `f` on the log behind `handle` (a `Log`'s, not a store's: appending to a
/// store's log directly would add records the store cannot read). No JS runs during
/// `f`, so the borrow cannot be re-entered.
#[inline]
pub fn with_log<R>(handle: u32, f: impl FnOnce(&mut Log) -> Result<R, Error>) -> Result<R, Error> {
    SLOTS.with(|slots| match slots.borrow_mut().get_mut(handle as usize) {
        Some(Some(Slot::Log(log))) => f(log),
        _ => Err(Error::Closed),
    })
}

/// Runs `f` on the store behind `handle`.
#[inline]
pub fn with_store<R>(handle: u32, f: impl FnOnce(&mut Store) -> Result<R, Error>) -> Result<R, Error> {
    SLOTS.with(|slots| match slots.borrow_mut().get_mut(handle as usize) {
        Some(Some(Slot::Store(store))) => f(store),
        _ => Err(Error::Closed),
    })
}

/// Runs `f` with the log behind `handle` (a log's or a store's, for completing syncs),
/// or `None` if it is closed.
pub fn with_log_or_closed<R>(handle: u32, f: impl FnOnce(Option<&mut Log>) -> R) -> R {
    SLOTS.with(|slots| {
        let mut slots = slots.borrow_mut();
        let log = match slots.get_mut(handle as usize) {
            Some(Some(Slot::Log(log))) => Some(log),
            Some(Some(Slot::Store(store))) => Some(store.log_mut()),
            _ => None,
        };
        f(log)
    })
}

/// Runs `f` with the store behind `handle`, or `None` if it is closed.
pub fn with_store_or_closed<R>(handle: u32, f: impl FnOnce(Option<&mut Store>) -> R) -> R {
    SLOTS.with(|slots| match slots.borrow_mut().get_mut(handle as usize) {
        Some(Some(Slot::Store(store))) => f(Some(store)),
        _ => f(None),
    })
}

/// Closes and forgets the log or store. Idempotent.
pub fn close(handle: u32) -> Result<(), Error> {
    let slot = SLOTS.with(|slots| slots.borrow_mut().get_mut(handle as usize).and_then(Option::take));
    match slot {
        Some(Slot::Log(mut log)) => log.close(),
        Some(Slot::Store(mut store)) => store.close(),
        None => Ok(()),
    }
}
