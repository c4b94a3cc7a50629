//! Named, durable consumer positions stored with the log (FORMAT.md 9): one small file
//! per cursor in `<log>/cursors/`, replaced atomically on every commit.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::sys;

pub const CURSOR_DIR: &str = "cursors";
pub const CURSOR_SUFFIX: &str = ".cursor";
pub const CURSOR_MAGIC: [u8; 8] = *b"SEGLOG\0C";
pub const CURSOR_VERSION: u32 = 1;
pub const CURSOR_FILE_LEN: usize = 40;
pub const MAX_CURSOR_NAME: usize = 200;

/// Cursor names are file names: 1 to 200 of `A-Z a-z 0-9 _ . -`, not starting with '.'.
pub fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_CURSOR_NAME
        && !name.starts_with('.')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "cursor name must be 1 to {MAX_CURSOR_NAME} characters of A-Z a-z 0-9 _ . - and not start with '.', got {name:?}"
        )))
    }
}

pub fn cursor_dir(log_dir: &Path) -> PathBuf {
    log_dir.join(CURSOR_DIR)
}

fn cursor_path(log_dir: &Path, name: &str) -> PathBuf {
    cursor_dir(log_dir).join(format!("{name}{CURSOR_SUFFIX}"))
}

/// A committed cursor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CursorState {
    pub name: String,
    pub position: u64,
    pub committed_ms: u64,
}

pub fn encode(position: u64, committed_ms: u64) -> [u8; CURSOR_FILE_LEN] {
    let mut b = [0u8; CURSOR_FILE_LEN];
    b[0..8].copy_from_slice(&CURSOR_MAGIC);
    b[8..12].copy_from_slice(&CURSOR_VERSION.to_le_bytes());
    b[16..24].copy_from_slice(&position.to_le_bytes());
    b[24..32].copy_from_slice(&committed_ms.to_le_bytes());
    let crc = crc32fast::hash(&b[..36]);
    b[36..40].copy_from_slice(&crc.to_le_bytes());
    b
}

pub fn decode(b: &[u8]) -> std::result::Result<(u64, u64), &'static str> {
    if b.len() != CURSOR_FILE_LEN {
        return Err("cursor file has the wrong size");
    }
    if b[0..8] != CURSOR_MAGIC {
        return Err("bad cursor magic");
    }
    if u32::from_le_bytes(b[36..40].try_into().unwrap()) != crc32fast::hash(&b[..36]) {
        return Err("bad cursor checksum");
    }
    if u32::from_le_bytes(b[8..12].try_into().unwrap()) != CURSOR_VERSION {
        return Err("unknown cursor version");
    }
    let position = u64::from_le_bytes(b[16..24].try_into().unwrap());
    let committed_ms = u64::from_le_bytes(b[24..32].try_into().unwrap());
    Ok((position, committed_ms))
}

/// The committed state of cursor `name`, or `None` if it was never committed (or deleted).
pub fn read(log_dir: &Path, name: &str) -> Result<Option<CursorState>> {
    validate_name(name)?;
    let path = cursor_path(log_dir, name);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("read cursor", &path)(e)),
    };
    let (position, committed_ms) = decode(&bytes).map_err(|r| Error::corrupt(&path, None, None, r))?;
    Ok(Some(CursorState { name: name.to_string(), position, committed_ms }))
}

/// Commits `position` for cursor `name` durably: temp file, fsync, rename, fsync the
/// directory. A crash leaves either the old or the new position, never a torn one.
pub fn commit(log_dir: &Path, name: &str, position: u64, committed_ms: u64) -> Result<()> {
    validate_name(name)?;
    let dir = cursor_dir(log_dir);
    if let Err(e) = fs::create_dir(&dir) {
        if e.kind() != io::ErrorKind::AlreadyExists {
            return Err(Error::io("create cursor directory", &dir)(e));
        }
        // A new directory must itself be durable in the log directory.
    } else {
        sys::fsync_dir(log_dir).map_err(Error::io("fsync directory", log_dir))?;
    }
    let path = cursor_path(log_dir, name);
    sys::write_file_atomic(&path, &encode(position, committed_ms), true).map_err(Error::io("write cursor", &path))?;
    sys::fsync_dir(&dir).map_err(Error::io("fsync directory", &dir))
}

/// Deletes cursor `name` durably. Returns whether it existed.
pub fn delete(log_dir: &Path, name: &str) -> Result<bool> {
    validate_name(name)?;
    let path = cursor_path(log_dir, name);
    match fs::remove_file(&path) {
        Ok(()) => {
            let dir = cursor_dir(log_dir);
            sys::fsync_dir(&dir).map_err(Error::io("fsync directory", &dir))?;
            Ok(true)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io("delete cursor", &path)(e)),
    }
}

/// Every committed cursor, by name. A cursor file that fails its checks is corruption.
pub fn list(log_dir: &Path) -> Result<Vec<CursorState>> {
    let dir = cursor_dir(log_dir);
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("list cursors", &dir)(e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(Error::io("list cursors", &dir))?;
        let file_name = entry.file_name();
        let Some(name) = file_name.to_str().and_then(|n| n.strip_suffix(CURSOR_SUFFIX)) else { continue };
        if validate_name(name).is_err() {
            continue;
        }
        if let Some(state) = read(log_dir, name)? {
            out.push(state);
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Removes leftover temp files of interrupted commits (writer open only).
pub fn remove_temp_files(log_dir: &Path, removed: &mut Vec<PathBuf>) -> Result<()> {
    let dir = cursor_dir(log_dir);
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io("list cursors", &dir)(e)),
    };
    let before = removed.len();
    for entry in entries {
        let entry = entry.map_err(Error::io("list cursors", &dir))?;
        if entry.file_name().to_str().is_some_and(|n| n.ends_with(".tmp")) {
            fs::remove_file(entry.path()).map_err(Error::io("remove temp file", entry.path()))?;
            removed.push(entry.path());
        }
    }
    if removed.len() > before {
        sys::fsync_dir(&dir).map_err(Error::io("fsync directory", &dir))?;
    }
    Ok(())
}
