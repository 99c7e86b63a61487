//! Atomic file writes: a file is either its old self, absent, or whole; never half written.
//!
//! The one durability rule of the workspace: the parent folders are created; the bytes go
//! to a fresh temporary file beside the target (same folder, so the rename cannot cross
//! file systems; `.NAME.tmp-PID-NONCE-N.EXT`, unique per process and call, so concurrent writers
//! of one folder, on one machine or several, never share a temporary file); the temporary file is flushed to disk
//! (`fsync`) and only then renamed over the target; on any failure the temporary file is
//! removed. A crash at any point leaves the old file or the new one, whole.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use crate::{Error, Result};

/// A fresh temporary path beside `path` (same folder, so that a rename into place is
/// atomic): `.NAME.tmp-PID-NONCE-N.EXT`, hidden, unique per process and call (the nonce,
/// drawn once per process from the host name and the start time, keeps processes with the
/// same pid on different machines or containers sharing a folder apart), and keeping the
/// target's extension for encoders that choose the format by it (PNG, JPEG).
pub fn temp_beside(path: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    static NONCE: OnceLock<u32> = OnceLock::new();
    let nonce = *NONCE.get_or_init(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .or_else(|_| std::env::var("HOSTNAME").map_err(|_| ()))
            .unwrap_or_default();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        (crate::rng::mix64(crate::hash::fnv1a64(host.as_bytes()) ^ nanos) >> 32) as u32
    });
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let ext = path
        .extension()
        .map(|e| format!(".{}", e.to_string_lossy()))
        .unwrap_or_default();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    parent_of(path).join(format!(
        ".{name}.tmp-{}-{nonce:08x}-{n}{ext}",
        std::process::id()
    ))
}

fn parent_of(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Creates the parent folders of `path`.
pub fn create_parent(path: &Path) -> Result<()> {
    let parent = parent_of(path);
    std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))
}

/// Writes `bytes` to `path` atomically (see the module docs for the rule).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |tmp| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(tmp)
            .map_err(|e| Error::io(tmp, e))?;
        f.write_all(bytes).map_err(|e| Error::io(tmp, e))
    })
}

/// Atomic write through a writer that needs a path (an image encoder, a safetensors
/// saver, a plot backend): `write` creates the file at the temporary path it is given;
/// then the file is flushed to disk and renamed over `path`. Its error type only needs a
/// conversion from this crate's [`Error`].
pub fn write_atomic_with<E: From<Error>>(
    path: &Path,
    write: impl FnOnce(&Path) -> Result<(), E>,
) -> Result<(), E> {
    if path.file_name().is_none() {
        return Err(Error::io(
            path,
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file path"),
        )
        .into());
    }
    create_parent(path)?;
    let tmp = temp_beside(path);
    let done = write(&tmp).and_then(|()| commit(&tmp, path).map_err(E::from));
    if done.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    done
}

/// Flushes the finished temporary file `tmp` to disk and renames it over `path`.
fn commit(tmp: &Path, path: &Path) -> Result<()> {
    let f = std::fs::File::open(tmp).map_err(|e| Error::io(tmp, e))?;
    f.sync_all().map_err(|e| Error::io(tmp, e))?;
    drop(f);
    std::fs::rename(tmp, path).map_err(|e| Error::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn replaces_creates_parents_and_leaves_no_temporaries() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a/b/x.txt");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(names(p.parent().unwrap()), vec!["x.txt"]);
    }

    #[test]
    fn a_failed_writer_leaves_the_old_file_and_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.bin");
        write_atomic(&p, b"old").unwrap();
        let r: Result<()> = write_atomic_with(&p, |tmp| {
            std::fs::write(tmp, b"half").unwrap();
            Err(Error::io(tmp, std::io::Error::other("encoder failed")))
        });
        assert!(r.unwrap_err().to_string().contains("encoder failed"));
        assert_eq!(std::fs::read(&p).unwrap(), b"old");
        assert_eq!(names(dir.path()), vec!["x.bin"]);
    }

    #[test]
    fn temporaries_are_unique_and_hidden_beside_the_target() {
        let p = Path::new("dir/f.json");
        let (a, b) = (temp_beside(p), temp_beside(p));
        assert_ne!(a, b);
        assert_eq!(a.parent(), Some(Path::new("dir")));
        let name = a.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            name.starts_with(".f.json.tmp-") && name.ends_with(".json"),
            "{name}"
        );
        assert_eq!(temp_beside(Path::new("g")).parent(), Some(Path::new(".")));
    }

    #[test]
    fn errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("file");
        std::fs::write(&blocker, b"").unwrap();
        let e = write_atomic(&blocker.join("x"), b"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("file"), "{e}");
    }
}
