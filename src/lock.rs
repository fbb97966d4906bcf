//! One actor at a time: every command that acts holds an exclusive flock on
//! a file beside the activity log. A second one is told who holds it.

use anyhow::{bail, Context, Result};
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
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

pub fn acquire(activity: &Path, command: &str) -> Result<ActorLock> {
    let path = lock_path(activity);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("opening the lock file {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            bail!(
                "another Foreman is acting on this activity log ({}); holder: {}",
                path.display(),
                holder.trim()
            );
        }
        Err(TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("locking {}", path.display()))
        }
    }
    file.set_len(0)?;
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
