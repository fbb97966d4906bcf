//! One actor at a time: every command that acts holds an exclusive flock on
//! a file beside the activity log. A second one is told who holds it.
//!
//! The lock file is opened without following a symlink (`O_NOFOLLOW`) and
//! without blocking (`O_NONBLOCK`, so a FIFO or device there cannot hang the
//! open), and it must be a regular file with one link: anything else at that
//! path is refused with an error naming it, and nothing is truncated before
//! the file is known to be ours.

use anyhow::{anyhow, bail, Context, Result};
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Held while it lives; the kernel releases the lock if Foreman dies.
pub struct ActorLock {
    _file: File,
    pub path: PathBuf,
}

pub fn lock_path(activity: &Path) -> PathBuf {
    let mut p = activity.as_os_str().to_owned();
    p.push(".lock");
    PathBuf::from(p)
}

/// Open (or create) the lock file itself, never what a symlink there points
/// at, and refuse anything but a regular file with a single link.
fn open_lock_file(path: &Path) -> Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => anyhow!(
                "the lock file {} is a symbolic link; refusing to follow it (remove it, Foreman creates its own)",
                path.display()
            ),
            Some(libc::EISDIR) => anyhow!(
                "the lock file {} is a directory, not a regular file; refusing to use it",
                path.display()
            ),
            _ => anyhow::Error::new(e).context(format!("opening the lock file {}", path.display())),
        })?;
    let meta = file
        .metadata()
        .with_context(|| format!("reading the lock file {}", path.display()))?;
    if !meta.file_type().is_file() {
        bail!(
            "the lock file {} is not a regular file; refusing to use it (remove it, Foreman creates its own)",
            path.display()
        );
    }
    if meta.nlink() != 1 {
        bail!(
            "the lock file {} has {} hard links; refusing to write to it (remove it, Foreman creates its own)",
            path.display(),
            meta.nlink()
        );
    }
    Ok(file)
}

pub fn acquire(activity: &Path, command: &str) -> Result<ActorLock> {
    let path = lock_path(activity);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut file = open_lock_file(&path)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            bail!(
                "another Foreman is acting on this activity log ({}); holder: {}",
                path.display(),
                holder.trim().escape_debug()
            );
        }
        Err(TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("locking {}", path.display()))
        }
    }
    file.set_len(0)
        .with_context(|| format!("truncating the lock file {}", path.display()))?;
    file.seek(SeekFrom::Start(0))?;
    writeln!(
        file,
        "pid {} running `foreman {command}` since {}",
        std::process::id(),
        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    )?;
    file.flush()?;
    Ok(ActorLock { _file: file, path })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch() -> tempfile::TempDir {
        tempfile::Builder::new()
            .prefix("foreman-lock-")
            .tempdir()
            .expect("tempdir")
    }

    #[test]
    fn a_symlink_at_the_lock_path_is_refused_and_its_target_kept() {
        let dir = scratch();
        let activity = dir.path().join("foreman.db");
        let target = dir.path().join("precious");
        std::fs::write(&target, "keep me\n").expect("write");
        std::os::unix::fs::symlink(&target, lock_path(&activity)).expect("symlink");
        let err = acquire(&activity, "sweep").err().expect("refused");
        let text = format!("{err:#}");
        assert!(text.contains("symbolic link"), "{text}");
        assert!(text.contains("foreman.db.lock"), "{text}");
        assert_eq!(std::fs::read_to_string(&target).expect("read"), "keep me\n");
    }

    #[test]
    fn a_dangling_symlink_creates_nothing() {
        let dir = scratch();
        let activity = dir.path().join("foreman.db");
        let target = dir.path().join("elsewhere");
        std::os::unix::fs::symlink(&target, lock_path(&activity)).expect("symlink");
        assert!(acquire(&activity, "sweep").is_err());
        assert!(!target.exists());
    }

    #[test]
    fn a_directory_fifo_or_hard_link_is_refused() {
        let dir = scratch();
        let activity = dir.path().join("a.db");
        std::fs::create_dir(lock_path(&activity)).expect("mkdir");
        assert!(acquire(&activity, "sweep").is_err());

        let activity = dir.path().join("b.db");
        let fifo = std::ffi::CString::new(lock_path(&activity).as_os_str().as_encoded_bytes())
            .expect("no NUL");
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        let err = format!("{:#}", acquire(&activity, "sweep").err().expect("refused"));
        assert!(err.contains("not a regular file"), "{err}");

        let activity = dir.path().join("c.db");
        let other = dir.path().join("other");
        std::fs::write(&other, "theirs\n").expect("write");
        std::fs::hard_link(&other, lock_path(&activity)).expect("link");
        let err = format!("{:#}", acquire(&activity, "sweep").err().expect("refused"));
        assert!(err.contains("hard links"), "{err}");
        assert_eq!(std::fs::read_to_string(&other).expect("read"), "theirs\n");
    }

    #[test]
    fn a_regular_lock_file_is_taken_and_names_its_holder() {
        let dir = scratch();
        let activity = dir.path().join("foreman.db");
        std::fs::write(lock_path(&activity), "stale holder text that is long\n").expect("write");
        let held = acquire(&activity, "sweep").expect("acquired");
        let text = std::fs::read_to_string(&held.path).expect("read");
        assert!(
            text.starts_with(&format!("pid {} ", std::process::id())),
            "{text}"
        );
        let err = format!("{:#}", acquire(&activity, "run").err().expect("busy"));
        assert!(err.contains("another Foreman"), "{err}");
    }
}
