//! The log file on disk: opening it for appending, finding its first and last lines.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// The offset just past the last `\n` before `end`, scanning back a chunk at a time:
/// a line may be longer than any fixed tail.
fn after_last_newline(f: &mut std::fs::File, end: u64) -> std::io::Result<u64> {
    const CHUNK: u64 = 64 * 1024;
    let mut hi = end;
    let mut buf = vec![0u8; CHUNK as usize];
    while hi > 0 {
        let lo = hi.saturating_sub(CHUNK);
        let n = (hi - lo) as usize;
        f.seek(SeekFrom::Start(lo))?;
        f.read_exact(&mut buf[..n])?;
        if let Some(i) = buf[..n].iter().rposition(|b| *b == b'\n') {
            return Ok(lo + i as u64 + 1);
        }
        hi = lo;
    }
    Ok(0)
}

/// The end of a log as it is on disk, read without changing it.
pub(super) struct Tail {
    /// The last complete line, without its `\n`.
    pub(super) line: Option<Vec<u8>>,
    /// Where the complete lines end: short of `len` when the last line is torn.
    pub(super) end: u64,
    /// The file's length when it was read.
    pub(super) len: u64,
}

/// The last complete line of the file at `path`, whatever its length, and where
/// complete lines end. Nothing is changed: `audit head` reads a log in use.
pub(super) fn read_tail(path: &Path) -> std::io::Result<Tail> {
    let mut f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    if len == 0 {
        return Ok(Tail {
            line: None,
            end: 0,
            len,
        });
    }
    let mut end = len;
    let mut last = [0u8; 1];
    f.seek(SeekFrom::Start(len - 1))?;
    f.read_exact(&mut last)?;
    if last[0] != b'\n' {
        end = after_last_newline(&mut f, len)?;
    }
    if end == 0 {
        return Ok(Tail {
            line: None,
            end,
            len,
        });
    }
    let start = after_last_newline(&mut f, end - 1)?;
    let mut line = vec![0u8; (end - 1 - start) as usize];
    f.seek(SeekFrom::Start(start))?;
    f.read_exact(&mut line)?;
    Ok(Tail {
        line: Some(line),
        end,
        len,
    })
}

/// The last complete line of the log (without its `\n`), whatever its length. A last
/// line cut short by a crash was never acknowledged: it is removed first.
pub(super) fn last_complete_line(
    path: &Path,
    file: &std::fs::File,
) -> std::io::Result<Option<Vec<u8>>> {
    let tail = read_tail(path)?;
    if tail.end < tail.len {
        tracing::warn!(path = %path.display(), "audit log ends with an incomplete line (a crash while writing); removing it");
        file.set_len(tail.end)?;
        file.sync_all()?;
    }
    Ok(tail.line)
}

/// The first line of the file (without its `\n`), if it has a complete one.
pub(super) fn first_line(path: &Path) -> std::io::Result<Option<Vec<u8>>> {
    use std::io::BufRead as _;
    let mut reader = std::io::BufReader::new(std::fs::File::open(path)?);
    let mut line = Vec::new();
    reader.read_until(b'\n', &mut line)?;
    Ok(line.pop().filter(|b| *b == b'\n').map(|_| line))
}

pub(super) fn open_append(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)
}
