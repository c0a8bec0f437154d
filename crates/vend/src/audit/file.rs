//! The log file on disk: opening it for appending, finding its last line.

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

/// The last complete line of the log (without its `\n`), whatever its length. A last
/// line cut short by a crash was never acknowledged: it is removed first.
pub(super) fn last_complete_line(
    path: &Path,
    file: &std::fs::File,
    len: u64,
) -> std::io::Result<Option<Vec<u8>>> {
    if len == 0 {
        return Ok(None);
    }
    let mut f = std::fs::File::open(path)?;
    let mut end = len;
    let mut last = [0u8; 1];
    f.seek(SeekFrom::Start(len - 1))?;
    f.read_exact(&mut last)?;
    if last[0] != b'\n' {
        end = after_last_newline(&mut f, len)?;
        tracing::warn!(path = %path.display(), "audit log ends with an incomplete line (a crash while writing); removing it");
        file.set_len(end)?;
        file.sync_all()?;
    }
    if end == 0 {
        return Ok(None);
    }
    let start = after_last_newline(&mut f, end - 1)?;
    let mut line = vec![0u8; (end - 1 - start) as usize];
    f.seek(SeekFrom::Start(start))?;
    f.read_exact(&mut line)?;
    Ok(Some(line))
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
