//! The pidfds `foreman run` holds for the bound RUNNING tasks of this host,
//! in one epoll set.
//!
//! A pidfd names one process, not a pid: while Foreman holds it, the pid
//! cannot silently become another process for it, and the pidfd turns
//! readable when that process (its whole thread group) has exited. So a
//! held pidfd that is not readable says "alive, and the same process"
//! without a `/proc` read, and the epoll set, registered once with the
//! runtime, says which task to look at the moment its process exits.
//!
//! Each pidfd is opened *before* the start ticks are read back from
//! `/proc/PID/stat`: when they match the identity the sweep bound, the fd
//! refers to exactly that process (a pid reused between the probe and the
//! open would show other ticks, and is not held).

use crate::model::Task;
use crate::probe::read_stat;
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

/// One held pidfd: the row it was opened for and the process it names.
struct Held {
    fd: OwnedFd,
    attempt: i64,
    pid: i32,
    /// The row's `pid_start_ticks` when it was held: a row that changes them
    /// is looked at again (the judge compares them with the process).
    pid_start_ticks: Option<u64>,
    token: u64,
    /// When the task's observation was last written: a held task is still
    /// judged in full once in a while, so its observation stays fresh (and
    /// is not pruned as a task no longer seen).
    observed_at: DateTime<Utc>,
    /// The last `keep_running` pass that found its row still RUNNING.
    pass: u64,
}

#[derive(Default)]
struct Inner {
    /// By task id; the token map shares the id (one allocation a task).
    held: HashMap<Arc<str>, Held>,
    tokens: HashMap<u64, Arc<str>>,
    next_token: u64,
    /// Set once the limit was reached or opening a pidfd failed for lack
    /// of descriptors: no more are opened until one is released (the rest
    /// are read from `/proc`).
    full: bool,
    /// Whether running out was said (once per daemon).
    said: bool,
    /// `keep_running` passes so far.
    pass: u64,
}

/// The held pidfds and the epoll set they are in.
pub struct Watch {
    epoll: OwnedFd,
    inner: Mutex<Inner>,
    /// At most this many held: the open-file limit less `RESERVE`.
    limit: usize,
}

/// Descriptors kept free of pidfds for Foreman's own work: SQLite's files
/// and journals, the listener's connections, the commands it runs. Pidfds
/// that took them all would stop the sweeps they serve.
pub const RESERVE: u64 = 256;

/// The soft limit on open files now.
fn nofile() -> Option<u64> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit we own.
    (unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } == 0).then_some(r.rlim_cur)
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch").field("held", &self.len()).finish()
    }
}

/// What the sweep needs of a held task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Holding {
    pub observed_at: DateTime<Utc>,
}

/// Whether this host can hold pidfds: `pidfd_open(2)` (Linux 5.3) on
/// Foreman's own pid. The error says why not (an old kernel, a seccomp
/// filter that refuses the call).
pub fn available() -> Result<(), String> {
    // The tests' stand-in for a kernel before 5.3 or a seccomp filter.
    fail::fail_point!("watch::no_pidfd", |_| Err(
        "pidfd_open: Function not implemented (os error 38)".into()
    ));
    match pidfd_open(std::process::id() as i32) {
        Ok(_) => Ok(()),
        Err(e) => Err(format!("pidfd_open: {e}")),
    }
}

fn pidfd_open(pid: i32) -> std::io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags; it returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the fd was just returned to us and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Whether the pidfd's process has exited (the fd is readable).
fn readable(fd: &OwnedFd) -> bool {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, no wait.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    // An error is not "alive": the caller reads /proc instead.
    n != 0
}

impl Watch {
    pub fn new() -> Result<Watch, String> {
        available()?;
        // SAFETY: epoll_create1 with a valid flag returns a new fd or -1.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(format!(
                "epoll_create1: {}",
                std::io::Error::last_os_error()
            ));
        }
        let limit = nofile().map_or(0, |n| n.saturating_sub(RESERVE));
        Ok(Watch {
            // SAFETY: the fd was just returned to us.
            epoll: unsafe { OwnedFd::from_raw_fd(fd) },
            inner: Mutex::new(Inner::default()),
            limit: usize::try_from(limit).unwrap_or(usize::MAX),
        })
    }

    /// How many pidfds it will hold at most.
    pub fn limit(&self) -> usize {
        self.limit
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic elsewhere while holding the lock leaves plain maps behind:
        // still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The epoll set: readable when a held process has exited.
    pub fn fd(&self) -> RawFd {
        self.epoll.as_raw_fd()
    }

    /// How many pidfds are held.
    pub fn len(&self) -> usize {
        self.lock().held.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The holding of this task's row, if Foreman holds a pidfd for exactly
    /// this (task, attempt, pid, pid_start_ticks) and its process has not
    /// exited.
    /// A pidfd found readable is closed: its task is read now.
    pub fn holding(&self, task: &Task) -> Option<Holding> {
        let mut inner = self.lock();
        let h = inner.held.get(task.id.as_str())?;
        if readable(&h.fd) {
            release_locked(&mut inner, &task.id);
            return None;
        }
        let same = Some(h.pid) == task.pid
            && h.attempt == task.attempt
            && h.pid_start_ticks == task.pid_start_ticks;
        same.then_some(Holding {
            observed_at: h.observed_at,
        })
    }

    /// Hold a pidfd for `task`'s process, whose identity the sweep bound as
    /// `start_ticks`; or, if one is held for this row already, note that
    /// its observation was written `now`. `Ok(false)` when the process is
    /// not (or no longer) that identity, or descriptors ran out.
    pub fn hold(&self, task: &Task, start_ticks: u64, now: DateTime<Utc>) -> Result<bool, String> {
        let Some(pid) = task.pid else {
            return Ok(false);
        };
        let mut inner = self.lock();
        if let Some(h) = inner.held.get_mut(task.id.as_str()) {
            if h.pid == pid
                && h.attempt == task.attempt
                && h.pid_start_ticks == task.pid_start_ticks
            {
                h.observed_at = now;
                return Ok(true);
            }
        }
        // Another attempt or pid of the same task: that pidfd goes.
        release_locked(&mut inner, &task.id);
        if inner.held.len() >= self.limit {
            inner.full = true;
        }
        if inner.full {
            return out_of_room(
                &mut inner,
                self.limit,
                "the open-file limit less the reserve",
            );
        }
        let fd = match pidfd_open(pid) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return Ok(false),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
                inner.full = true;
                return out_of_room(&mut inner, self.limit, &format!("pidfd_open: {e}"));
            }
            Err(e) => return Err(format!("pidfd_open({pid}): {e}")),
        };
        // Opened first, verified second: matching ticks now mean the fd
        // names the bound process.
        match read_stat(Path::new("/proc"), pid) {
            Ok(Some(s)) if s.start_ticks == start_ticks => {}
            _ => return Ok(false),
        }
        let token = inner.next_token;
        inner.next_token += 1;
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: token,
        };
        // SAFETY: both fds are valid; ev is a valid event.
        let rc = unsafe {
            libc::epoll_ctl(
                self.epoll.as_raw_fd(),
                libc::EPOLL_CTL_ADD,
                fd.as_raw_fd(),
                &mut ev,
            )
        };
        if rc != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENOSPC) {
                inner.full = true;
            }
            return Err(format!("epoll_ctl: {e}"));
        }
        let id: Arc<str> = Arc::from(task.id.as_str());
        let pass = inner.pass;
        inner.tokens.insert(token, id.clone());
        inner.held.insert(
            id,
            Held {
                fd,
                attempt: task.attempt,
                pid,
                pid_start_ticks: task.pid_start_ticks,
                token,
                observed_at: now,
                pass,
            },
        );
        Ok(true)
    }

    /// Close the pidfd held for a task, if any.
    pub fn release(&self, task_id: &str) {
        release_locked(&mut self.lock(), task_id);
    }

    /// Keep only the pidfds of tasks still RUNNING (in `running`) with the
    /// attempt and pid they were held for: the rest are closed. Marks in
    /// place, so it allocates nothing for a steady fleet.
    pub fn keep_running(&self, running: &[&Task]) {
        let mut inner = self.lock();
        inner.pass += 1;
        let pass = inner.pass;
        for t in running {
            if let Some(h) = inner.held.get_mut(t.id.as_str()) {
                if h.attempt == t.attempt && Some(h.pid) == t.pid {
                    h.pass = pass;
                }
            }
        }
        let gone: Vec<Arc<str>> = inner
            .held
            .iter()
            .filter(|(_, h)| h.pass != pass)
            .map(|(id, _)| id.clone())
            .collect();
        for id in gone {
            release_locked(&mut inner, &id);
        }
    }

    /// The tasks whose processes exited since the last call; their pidfds
    /// are closed (a sweep reads them from `/proc` now). Empty when none.
    pub fn exited(&self) -> Vec<String> {
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; 256];
        let mut out = Vec::new();
        loop {
            // SAFETY: the buffer holds `events.len()` events; no wait.
            let n = unsafe {
                libc::epoll_wait(
                    self.epoll.as_raw_fd(),
                    events.as_mut_ptr(),
                    events.len() as i32,
                    0,
                )
            };
            if n <= 0 {
                break;
            }
            let mut inner = self.lock();
            for ev in &events[..n as usize] {
                let token = ev.u64;
                if let Some(id) = inner.tokens.get(&token).cloned() {
                    release_locked(&mut inner, &id);
                    out.push(id.to_string());
                }
            }
            if (n as usize) < events.len() {
                break;
            }
        }
        out
    }
}

/// No room for another pidfd: said once, as an error; `Ok(false)` after.
fn out_of_room(inner: &mut Inner, limit: usize, why: &str) -> Result<bool, String> {
    if std::mem::replace(&mut inner.said, true) {
        return Ok(false);
    }
    Err(format!(
        "holding {} pidfds ({why}; at most {limit}, keeping {RESERVE} files for Foreman's own work): the rest of this host's tasks are read from /proc each sweep, and their deaths seen at the next sweep; raise LimitNOFILE",
        inner.held.len()
    ))
}

fn release_locked(inner: &mut Inner, task_id: &str) {
    if let Some(h) = inner.held.remove(task_id) {
        inner.tokens.remove(&h.token);
        inner.full = false;
        // Closing the fd takes it out of the epoll set.
        drop(h.fd);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::TaskState;
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    fn task(id: &str, pid: u32) -> Task {
        Task {
            id: id.into(),
            plan_id: None,
            droid_type: "t".into(),
            state: TaskState::Running,
            pid: Some(pid as i32),
            host: None,
            attempt: 1,
            started_at: None,
            last_progress_at: None,
            finished_at: None,
            error: None,
            pid_start_ticks: None,
            created_at: None,
        }
    }

    fn ticks(pid: u32) -> u64 {
        read_stat(Path::new("/proc"), pid as i32)
            .ok()
            .flatten()
            .map(|s| s.start_ticks)
            .expect("the child's stat")
    }

    fn wait_exited(w: &Watch) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let e = w.exited();
            if !e.is_empty() || Instant::now() > deadline {
                return e;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn a_held_process_is_alive_until_it_exits_then_the_set_says_which() {
        let w = Watch::new().expect("pidfds on this kernel");
        let mut a = Command::new("sleep")
            .arg("30")
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let mut b = Command::new("sleep")
            .arg("30")
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let (ta, tb) = (task("a", a.id()), task("b", b.id()));
        assert!(w.hold(&ta, ticks(a.id()), Utc::now()).unwrap());
        assert!(w.hold(&tb, ticks(b.id()), Utc::now()).unwrap());
        assert_eq!(w.len(), 2);
        assert!(w.holding(&ta).is_some());
        assert!(w.exited().is_empty(), "nothing exited yet");
        a.kill().unwrap();
        // Not reaped yet: a zombie has exited, and the pidfd says so.
        assert_eq!(wait_exited(&w), vec!["a".to_string()]);
        assert!(w.holding(&ta).is_none(), "its pidfd was closed");
        // A sweep that finds an exited one before the drain closes it too.
        let mut c = Command::new("sleep").arg("30").spawn().unwrap();
        let tc = task("c", c.id());
        assert!(w.hold(&tc, ticks(c.id()), Utc::now()).unwrap());
        c.kill().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while w.holding(&tc).is_some() {
            assert!(Instant::now() < deadline, "never seen exited");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(w.len(), 1, "only b is left");
        assert!(w.exited().is_empty(), "closed: nothing left to drain");
        c.wait().unwrap();
        assert!(w.holding(&tb).is_some());
        a.wait().unwrap();
        b.kill().unwrap();
        b.wait().unwrap();
        assert_eq!(wait_exited(&w), vec!["b".to_string()]);
        assert!(w.is_empty());
    }

    #[test]
    fn a_row_that_changed_is_not_held() {
        let w = Watch::new().unwrap();
        let mut c = Command::new("sleep").arg("30").spawn().unwrap();
        let t = task("c", c.id());
        assert!(w.hold(&t, ticks(c.id()), Utc::now()).unwrap());
        let mut next = t.clone();
        next.attempt = 2;
        assert!(w.holding(&next).is_none(), "another attempt");
        let mut ticked = t.clone();
        ticked.pid_start_ticks = Some(1);
        assert!(
            w.holding(&ticked).is_none(),
            "the row's start ticks changed"
        );
        let mut other = t.clone();
        other.pid = Some(1);
        assert!(w.holding(&other).is_none(), "another pid");
        w.keep_running(&[&t]);
        assert_eq!(w.len(), 1, "still RUNNING as held");
        w.keep_running(&[&next]);
        assert!(w.is_empty(), "the task moved on: its pidfd is closed");
        c.kill().unwrap();
        c.wait().unwrap();
    }

    #[test]
    fn another_identity_is_never_held() {
        let w = Watch::new().unwrap();
        let mut c = Command::new("sleep").arg("30").spawn().unwrap();
        let t = task("d", c.id());
        // The sweep bound other start ticks: this process is not it.
        assert!(!w.hold(&t, ticks(c.id()) + 1, Utc::now()).unwrap());
        assert!(w.is_empty());
        c.kill().unwrap();
        c.wait().unwrap();
        // Gone before it could be held.
        assert!(!w.hold(&t, 0, Utc::now()).unwrap());
    }

    #[test]
    fn a_leader_that_exits_while_its_threads_run_stays_held() {
        // The thread group is alive while any thread runs: the pidfd turns
        // readable only when the last one exits (a leader that called
        // pthread_exit is not dead).
        let w = Watch::new().unwrap();
        let script = "import threading,time,os\nthreading.Thread(target=lambda: time.sleep(1.5)).start()\nimport ctypes\nctypes.CDLL(None).pthread_exit(None)\n";
        let mut c = match Command::new("python3").arg("-c").arg(script).spawn() {
            Ok(c) => c,
            Err(e) => panic!("python3 is on this machine kind: {e}"),
        };
        let pid = c.id();
        let t = task("e", pid);
        // Bind whatever it is now; the leader may already be Z.
        let deadline = Instant::now() + Duration::from_secs(5);
        while read_stat(Path::new("/proc"), pid as i32)
            .ok()
            .flatten()
            .is_none_or(|s| s.state != 'Z')
        {
            assert!(
                Instant::now() < deadline,
                "the leader never called pthread_exit"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(w.hold(&t, ticks(pid), Utc::now()).unwrap());
        assert!(w.holding(&t).is_some(), "threads still run: alive");
        assert_eq!(wait_exited(&w), vec!["e".to_string()]);
        c.wait().unwrap();
    }
}
