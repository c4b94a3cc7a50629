//! Fault injection for tests: make the Nth I/O operation of a kind fail with a chosen
//! errno, once or from then on (DURABILITY.md, "Fault injection"). Nothing is armed in
//! normal use; checking costs one relaxed atomic load on cold paths (syncs, segment
//! creation, index writes), never on an append.
//!
//! The state is process-wide: tests that arm faults run in their own process.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// Where a fault can be injected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultPoint {
    /// `fdatasync` / `msync` / `fsync` of segment data, and `fsync` of directories.
    Sync,
    /// `posix_fallocate` of a new segment (or of a zeroed tail).
    Preallocate,
    /// Writing an index (or any other small file written atomically).
    WriteFile,
}

impl FaultPoint {
    pub fn parse(name: &str) -> Option<FaultPoint> {
        match name {
            "sync" => Some(FaultPoint::Sync),
            "preallocate" => Some(FaultPoint::Preallocate),
            "writeFile" => Some(FaultPoint::WriteFile),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Rule {
    point: FaultPoint,
    /// Operations of this kind still to let through before failing.
    skip: u32,
    errno: i32,
    /// Keep failing after the first failure (a dead disk) rather than once (a glitch).
    persistent: bool,
}

static ARMED: AtomicBool = AtomicBool::new(false);
static RULES: Mutex<Vec<Rule>> = Mutex::new(Vec::new());

/// Makes the operation at `point` fail with `errno` after letting `skip` of them through.
pub fn inject(point: FaultPoint, skip: u32, errno: i32, persistent: bool) {
    let mut rules = RULES.lock().unwrap_or_else(|p| p.into_inner());
    rules.retain(|r| r.point != point);
    rules.push(Rule { point, skip, errno, persistent });
    ARMED.store(true, Ordering::Release);
}

/// Disarms every injected fault.
pub fn clear() {
    RULES.lock().unwrap_or_else(|p| p.into_inner()).clear();
    ARMED.store(false, Ordering::Release);
}

/// Called by `sys` before each operation of kind `point`.
#[inline]
pub(crate) fn check(point: FaultPoint) -> io::Result<()> {
    if !ARMED.load(Ordering::Relaxed) {
        return Ok(());
    }
    let mut rules = RULES.lock().unwrap_or_else(|p| p.into_inner());
    let Some(i) = rules.iter().position(|r| r.point == point) else { return Ok(()) };
    let rule = &mut rules[i];
    if rule.skip > 0 {
        rule.skip -= 1;
        return Ok(());
    }
    let errno = rule.errno;
    if !rule.persistent {
        rules.remove(i);
    }
    Err(io::Error::from_raw_os_error(errno))
}
