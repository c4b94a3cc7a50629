//! The one error type of the engine. Each variant has a stable code surfaced to JS.

use std::fmt;
use std::io;
use std::path::PathBuf;

#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system I/O error, with what was being done and to which file.
    Io { op: &'static str, path: PathBuf, source: io::Error },
    /// Bytes on disk that fail their checks where a torn write cannot explain them.
    Corrupt { path: PathBuf, offset: Option<u64>, position: Option<u64>, reason: String },
    /// Another writer holds the log's lock.
    Locked { path: PathBuf },
    Closed,
    /// A write on a log opened with `read_only`.
    ReadOnly,
    /// A write after a sync failed: the log acknowledges nothing more until reopened
    /// (DURABILITY.md rule 7). `source` is the error the failed sync got.
    Poisoned { path: PathBuf, source: io::Error },
    /// A read below the first offset still in the log.
    OffsetOutOfRange { offset: u64, first: u64 },
    RecordTooLarge { size: usize, max: usize },
    BatchTooLarge { bytes: usize, max: usize },
    /// A caller-supplied value outside its allowed range (options, timestamps).
    InvalidArgument(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The stable code JS sees as `error.code`.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Io { source, .. } if is_no_space(source) => "ERR_SEGLOG_NO_SPACE",
            Error::Io { .. } => "ERR_SEGLOG_IO",
            Error::Corrupt { .. } => "ERR_SEGLOG_CORRUPT",
            Error::Locked { .. } => "ERR_SEGLOG_LOCKED",
            Error::Closed => "ERR_SEGLOG_CLOSED",
            Error::ReadOnly => "ERR_SEGLOG_READ_ONLY",
            Error::Poisoned { .. } => "ERR_SEGLOG_IO",
            Error::OffsetOutOfRange { .. } => "ERR_SEGLOG_OFFSET_OUT_OF_RANGE",
            Error::RecordTooLarge { .. } => "ERR_SEGLOG_RECORD_TOO_LARGE",
            Error::BatchTooLarge { .. } => "ERR_SEGLOG_BATCH_TOO_LARGE",
            Error::InvalidArgument(_) => "ERR_SEGLOG_INVALID_ARGUMENT",
        }
    }

    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { op, path, source }
    }

    pub(crate) fn corrupt(path: impl Into<PathBuf>, offset: Option<u64>, position: Option<u64>, reason: impl Into<String>) -> Error {
        Error::Corrupt { path: path.into(), offset, position, reason: reason.into() }
    }
}

fn is_no_space(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io { op, path, source } => write!(f, "{op} failed for {}: {source}", path.display()),
            Error::Corrupt { path, offset, position, reason } => {
                write!(f, "corrupt log data in {}", path.display())?;
                if let Some(o) = offset {
                    write!(f, " at offset {o}")?;
                }
                if let Some(p) = position {
                    write!(f, " (byte position {p})")?;
                }
                write!(f, ": {reason}")
            }
            Error::Locked { path } => write!(f, "log {} is already open for writing (lock held on {})", path.parent().unwrap_or(path).display(), path.display()),
            Error::Closed => write!(f, "the log is closed"),
            Error::ReadOnly => write!(f, "the log was opened read-only"),
            Error::Poisoned { path, source } => write!(
                f,
                "the log takes no more writes because a sync of {} failed: {source}; reopen it to run recovery",
                path.display()
            ),
            Error::OffsetOutOfRange { offset, first } => write!(f, "offset {offset} is below the first offset in the log ({first})"),
            Error::RecordTooLarge { size, max } => write!(f, "record of {size} bytes exceeds maxRecordBytes ({max})"),
            Error::BatchTooLarge { bytes, max } => write!(f, "batch of {bytes} framed bytes does not fit in one segment ({max} bytes); an atomic batch must fit in a segment"),
            Error::InvalidArgument(msg) => f.write_str(msg),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } | Error::Poisoned { source, .. } => Some(source),
            _ => None,
        }
    }
}
