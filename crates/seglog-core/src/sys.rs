//! The only module with `unsafe`: memory maps and the file-system calls std lacks.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::io::AsRawFd;
use std::path::Path;

use memmap2::{Mmap, MmapMut, MmapOptions};

use crate::fault::{self, FaultPoint};

/// A shared mapping of a whole segment file: writable for the writer, read-only for readers.
///
/// Invariants the rest of the engine keeps: the file is never shorter than the mapping
/// (segments are fully preallocated and never shrunk while mapped: zeroing punches holes
/// with `KEEP_SIZE`), and the writer lock means no other seglog writer changes the file.
pub enum Mapping {
    Writable(MmapMut),
    ReadOnly(Mmap),
}

impl Mapping {
    /// `frequent_syncs`: see `Options::frequent_syncs`.
    pub fn map_with(file: &File, len: usize, writable: bool, frequent_syncs: bool) -> io::Result<Mapping> {
        if len == 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "cannot map an empty file"));
        }
        // SAFETY: `len` is the file's size as just read by the caller, so no page of the
        // mapping lies past end of file (no SIGBUS on access). Another process (the writer,
        // when this is a reader's mapping) may store into the file while we read it: every
        // byte read through the map is bounds- and CRC-checked before it is trusted, a
        // frame is published by storing its length last behind a release fence and read
        // behind an acquire fence (format::check_frame_header), so a concurrent store can
        // make a frame look "not yet written" but never causes out-of-bounds access.
        let map = unsafe {
            if writable {
                Mapping::Writable(MmapOptions::new().len(len).map_mut(file)?)
            } else {
                Mapping::ReadOnly(MmapOptions::new().len(len).map(file)?)
            }
        };
        if let (Mapping::Writable(m), true) = (&map, frequent_syncs) {
            // Without it, a write fault after each sync maps a whole large folio of the
            // page cache and dirties all of it, so every group-commit sync writes back up
            // to ~1 MiB for a few KiB appended (measured: 966 KiB per sync at 256
            // callers, 69 KiB with this advice). It costs bulk appends a third of their
            // speed, so only logs that sync often ask for it. Errors are ignored: advice.
            let _ = m.advise(memmap2::Advice::Random);
        }
        Ok(map)
    }

    #[inline]
    pub fn bytes(&self) -> &[u8] {
        match self {
            Mapping::Writable(m) => m,
            Mapping::ReadOnly(m) => m,
        }
    }

    /// The writable bytes. Only the writer calls this; a reader's log never reaches a
    /// write path (`Log` refuses writes on read-only opens before touching a segment).
    #[inline]
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        match self {
            Mapping::Writable(m) => m,
            Mapping::ReadOnly(_) => unreachable!("write through a read-only mapping"),
        }
    }

    /// Writes dirty pages in `[from, to)` to disk and waits (msync MS_SYNC).
    pub fn flush_range(&self, from: usize, to: usize) -> io::Result<()> {
        fault::check(FaultPoint::Sync)?;
        if let (Mapping::Writable(m), true) = (self, to > from) {
            m.flush_range(from, to - from)?;
        }
        Ok(())
    }
}

/// Flushes a file's written data to stable storage (`fdatasync`). Dirty pages of shared
/// mappings of the file are part of its page cache, so this covers appends made through
/// a mapping as `msync` would, without needing the mapping (a sync thread can hold the
/// file while the writer goes on, and the mapping can be dropped meanwhile).
pub fn fdatasync(file: &File) -> io::Result<()> {
    fault::check(FaultPoint::Sync)?;
    file.sync_data()
}

/// Allocates disk blocks for `[0, len)` so later writes through a mapping cannot hit
/// ENOSPC (which a mapping would report as SIGBUS).
pub fn preallocate(file: &File, len: u64) -> io::Result<()> {
    fault::check(FaultPoint::Preallocate)?;
    // SAFETY: plain syscall on a valid, open file descriptor; no memory is passed.
    let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len as libc::off_t) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok(())
}

/// Makes every byte of `[from, to)` read as zero while keeping the file size and the
/// blocks allocated: punch a hole, then allocate it again. Falls back to writing zeros
/// through `map` where the file system cannot punch holes.
pub fn zero_range(file: &File, map: &mut Mapping, from: usize, to: usize) -> io::Result<()> {
    if to <= from {
        return Ok(());
    }
    let len = (to - from) as libc::off_t;
    // SAFETY: plain syscall on a valid descriptor. KEEP_SIZE means the file never gets
    // shorter than the mapping; the pages in the range simply read as zeros afterwards.
    // `map` is borrowed mutably, so no Rust reference into the range is alive.
    let rc = unsafe {
        libc::fallocate(
            file.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            from as libc::off_t,
            len,
        )
    };
    if rc != 0 {
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) => {
                map.bytes_mut()[from..to].fill(0);
                map.flush_range(from, to)?;
                return Ok(());
            }
            _ => return Err(err),
        }
    }
    fault::check(FaultPoint::Preallocate)?;
    // SAFETY: as for `preallocate`.
    let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), from as libc::off_t, len) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok(())
}

/// Takes an exclusive, non-blocking `flock` on `file`. Returns `Ok(false)` if another open
/// file description (this process or another) holds it. The lock dies with the process.
pub fn try_lock_exclusive(file: &File) -> io::Result<bool> {
    // SAFETY: plain syscall on a valid descriptor.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(true);
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(err)
    }
}

/// Moves a file, across file systems if need be (copy, fsync, then delete the source).
/// The caller fsyncs both directories.
pub fn move_file(from: &Path, to: &Path) -> io::Result<()> {
    match fs::rename(from, to) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
            let mut tmp = to.as_os_str().to_owned();
            tmp.push(".tmp");
            let tmp = Path::new(&tmp);
            fs::copy(from, tmp)?;
            File::open(tmp)?.sync_all()?;
            fs::rename(tmp, to)?;
            fs::remove_file(from)
        }
        Err(e) => Err(e),
    }
}

/// Fsyncs a directory so that creations, renames and deletions in it are durable.
pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    fault::check(FaultPoint::Sync)?;
    File::open(dir)?.sync_all()
}

/// `fsync` of a file (data and metadata), with the `Sync` fault point.
pub fn fsync(file: &File) -> io::Result<()> {
    fault::check(FaultPoint::Sync)?;
    file.sync_all()
}

/// Writes `bytes` to `path` atomically: `<path>.tmp`, optional fsync, rename.
/// The caller fsyncs the directory when the rename itself must be durable.
pub fn write_file_atomic(path: &Path, bytes: &[u8], fsync: bool) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = Path::new(&tmp);
    fault::check(FaultPoint::WriteFile)?;
    let mut f = OpenOptions::new().write(true).create(true).truncate(true).open(tmp)?;
    f.write_all(bytes)?;
    if fsync {
        f.sync_all()?;
    }
    drop(f);
    fs::rename(tmp, path)
}

/// `MADV_POPULATE_WRITE` (Linux 5.14): fault pages in writable without touching them.
const MADV_POPULATE_WRITE: libc::c_int = 23;
/// `MADV_POPULATE_READ` (Linux 5.14): fault pages in (readable) without dirtying them.
const MADV_POPULATE_READ: libc::c_int = 22;

/// Work for the prefault thread.
enum Job {
    /// A region of a mapping to fault in ahead of the writer.
    Prefault { addr: usize, len: usize },
    /// Start writing back (not waiting for) a range the writer has finished with, so
    /// the sync at the next roll or group commit finds little left to write.
    Writeback { file: std::sync::Arc<File>, from: u64, len: u64 },
}

/// A background thread that prefaults regions of segment mappings ahead of the writer,
/// so appends do not pay first-touch page faults (~5-10 us per 4 KiB page) on the hot path.
///
/// Owners must call `shutdown` (or drop this) before unmapping any mapping they passed
/// to `request`: it joins the thread, so no prefault can touch an unmapped range.
pub struct Prefaulter {
    tx: Option<std::sync::mpsc::Sender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Prefaulter {
    /// `frequent_syncs`: populate pages without dirtying them (POPULATE_READ), so the
    /// next group-commit sync does not write megabytes of not-yet-used zeros; the first
    /// write to each page then takes a cheap write-protect fault instead of a full one.
    pub fn new(frequent_syncs: bool) -> Prefaulter {
        let advice = if frequent_syncs { MADV_POPULATE_READ } else { MADV_POPULATE_WRITE };
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        let thread = std::thread::Builder::new()
            .name("seglog-prefault".into())
            .spawn(move || {
                for job in rx {
                    match job {
                        // SAFETY: the owner keeps the mapping alive until this thread is
                        // joined (see the type's contract); POPULATE_WRITE on a live shared
                        // file mapping only faults pages in, it does not change their
                        // contents. Errors (an old kernel, EINTR) are ignored: prefaulting
                        // is an optimisation.
                        Job::Prefault { addr, len } => unsafe {
                            libc::madvise(addr as *mut libc::c_void, len, advice);
                        },
                        // SAFETY: plain syscall on a descriptor kept open by the Arc; no
                        // memory is passed. Errors are ignored: durability comes from the
                        // fdatasync/msync that follows, this only starts the I/O early.
                        Job::Writeback { file, from, len } => unsafe {
                            libc::sync_file_range(
                                file.as_raw_fd(),
                                from as libc::off64_t,
                                len as libc::off64_t,
                                libc::SYNC_FILE_RANGE_WRITE,
                            );
                        },
                    }
                }
            })
            .ok();
        Prefaulter { tx: thread.as_ref().map(|_| tx), thread }
    }

    /// A prefaulter without a thread (for readers, which never write).
    pub fn disabled() -> Prefaulter {
        Prefaulter { tx: None, thread: None }
    }

    /// Asks for `[from, to)` of `map` to be faulted in; returns at once.
    pub fn request(&self, map: &Mapping, from: usize, to: usize) {
        let to = to.min(map.bytes().len());
        if let (Some(tx), true) = (&self.tx, to > from) {
            let page = 4096;
            let from = from & !(page - 1);
            let addr = map.bytes().as_ptr() as usize + from;
            let _ = tx.send(Job::Prefault { addr, len: to - from });
        }
    }

    /// Asks for writeback of `[from, to)` of `file` to start; returns at once.
    pub fn writeback(&self, file: std::sync::Arc<File>, from: u64, to: u64) {
        if let (Some(tx), true) = (&self.tx, to > from) {
            let _ = tx.send(Job::Writeback { file, from, len: to - from });
        }
    }

    pub fn shutdown(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Prefaulter {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// This machine's host name (for lock files that name a process and a host).
pub fn hostname() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: `buf` is writable for its length; gethostname writes at most that many bytes.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr() as *mut libc::c_char, buf.len()) };
    if rc != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8(buf[..end].to_vec()).ok()
}

/// Whether a process with this pid exists on this machine (`kill(pid, 0)`; EPERM means
/// it exists but belongs to someone else).
pub fn process_exists(pid: i32) -> bool {
    if pid <= 0 {
        return true;
    }
    // SAFETY: signal 0 only checks that the process exists; nothing is sent.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}
