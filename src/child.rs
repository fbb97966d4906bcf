//! Commands Foreman starts (executor commands, alert and wellbeing command
//! sinks): `run` is the one way they are run.
//!
//! - They never inherit the capabilities an operator granted Foreman
//!   (`AmbientCapabilities=CAP_KILL CAP_SYS_PTRACE …` in a drop-in): those
//!   are for signalling droids and reading their /proc, not for a pager
//!   script.
//! - Each runs in its own process group: a signal to Foreman's group
//!   (systemd's stop, Ctrl-C) lets it finish rather than fail. Once it has
//!   exited, timed out or printed too much, the whole group is SIGKILLed:
//!   nothing it started in the background (`sleep 45 &`) outlives it or
//!   holds its pipes open.
//! - One deadline bounds everything: the wait and the reads of stdout and
//!   stderr. The pipes are read with poll(2) in the calling thread, so no
//!   thread is started and none can outlive the command.
//! - What is read is bounded: stdout up to a cap (more is an error), of
//!   stderr only its head and tail.

use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStderr, ChildStdout, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How long the pipes are still read once the command has exited and its
/// group is killed: enough for the kernel to close them. Only a process that
/// left the group (setsid) can hold them open longer, and it is not waited for.
const DRAIN_AFTER_EXIT: Duration = Duration::from_millis(500);
/// Without a pidfd (kernel < 5.3), how often the command's exit is checked.
const EXIT_TICK: Duration = Duration::from_millis(20);

/// Clear the ambient capability set in the child before it runs the
/// program: a non-root program then starts with no capabilities at all.
pub fn without_capabilities(command: &mut Command) -> &mut Command {
    let nofile = NOFILE.get().copied();
    // SAFETY: the closure runs between fork and exec and only calls
    // prctl(2) and setrlimit(2), which are async-signal-safe; it allocates
    // nothing. A kernel without ambient capabilities (EINVAL) has nothing
    // to clear.
    unsafe {
        command.pre_exec(move || {
            libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
                0,
                0,
                0,
            );
            // The daemon raised its own soft limit for its pidfds; a
            // command gets the one Foreman was started with (programs using
            // select(2) break above 1024).
            if let Some(soft) = nofile {
                let mut r = libc::rlimit {
                    rlim_cur: 0,
                    rlim_max: 0,
                };
                if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 {
                    r.rlim_cur = soft.min(r.rlim_max);
                    libc::setrlimit(libc::RLIMIT_NOFILE, &r);
                }
            }
            Ok(())
        })
    }
}

/// The soft `RLIMIT_NOFILE` Foreman was started with, before the daemon
/// raised it.
static NOFILE: std::sync::OnceLock<libc::rlim_t> = std::sync::OnceLock::new();

/// Remember the soft limit on open files before raising it, so commands
/// Foreman starts get it back.
pub fn remember_nofile(soft: libc::rlim_t) {
    let _ = NOFILE.set(soft);
}

/// The bounds of one run.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// From the start to the end of the last read.
    pub timeout: Duration,
    /// `None`: stdout goes to /dev/null. `Some(max)`: it is captured, and
    /// more than `max` bytes kill the command (`Failure::TooMuchOutput`).
    pub stdout: Option<usize>,
    /// Of stderr, the first and the last `stderr` bytes are kept; what lies
    /// between is read and dropped.
    pub stderr: usize,
}

/// A command that ran to its exit.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    /// Its head and tail (`Limits::stderr`), joined by a line "…" when
    /// something between them was dropped.
    pub stderr: Vec<u8>,
}

#[derive(Debug)]
pub enum Failure {
    /// It could not be started (spawn's error).
    Start(std::io::Error),
    /// The deadline passed before it exited; its group was killed. What it
    /// had printed on stderr so far (head and tail, as in `Finished`).
    TimedOut { stderr: Vec<u8> },
    /// It printed more than this many bytes on stdout; its group was killed.
    TooMuchOutput(usize),
    /// Waiting for it or reading its pipes failed; its group was killed.
    Io(std::io::Error),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Start(e) => write!(f, "cannot start it: {e}"),
            Failure::TimedOut { .. } => write!(f, "timed out"),
            Failure::TooMuchOutput(max) => {
                write!(f, "printed more than {max} bytes on stdout (killed it)")
            }
            Failure::Io(e) => write!(f, "cannot wait for it: {e} (killed it)"),
        }
    }
}

/// Run `command` (argv, environment and stdin set by the caller) within
/// `limits`: without capabilities, in a process group of its own, stdout and
/// stderr piped and read here until both are closed, its group SIGKILLed
/// once it has exited (or on any failure), then reaped.
pub fn run(command: &mut Command, limits: Limits) -> Result<Finished, Failure> {
    let started = Instant::now();
    let deadline = started + limits.timeout;
    without_capabilities(command)
        .process_group(0)
        .stdout(if limits.stdout.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stderr(Stdio::piped());
    let child = command.spawn().map_err(Failure::Start)?;
    let mut group = Group {
        pid: child.id() as libc::pid_t,
        child,
        reaped: false,
    };
    let mut out = group.child.stdout.take().map(Pipe::<ChildStdout>::new);
    let mut err = group.child.stderr.take().map(Pipe::<ChildStderr>::new);
    let mut stdout = Vec::new();
    let mut stderr = Kept::new(limits.stderr);
    // Becomes readable when the command exits; without it, poll ticks.
    let pidfd = pidfd_open(group.pid);
    let mut exited_at: Option<Instant> = None;
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        if exited_at.is_none() && group.exited()? {
            // Not reaped yet: while it is a zombie its pid, the group's id,
            // cannot be reused, so this reaches only what it started.
            group.kill();
            exited_at = Some(Instant::now());
        }
        // With both pipes closed before it exited (it closed them), only
        // its exit is left to wait for.
        if out.is_none() && err.is_none() && exited_at.is_some() {
            break;
        }
        let now = Instant::now();
        let stop = match exited_at {
            Some(at) => deadline.min(at + DRAIN_AFTER_EXIT),
            None => deadline,
        };
        if now >= stop {
            if exited_at.is_some() {
                // Exited: what was read is what it printed; a process that
                // left its group keeps the pipe open, not us.
                break;
            }
            return Err(Failure::TimedOut {
                stderr: stderr.into_bytes(),
            });
        }
        let mut wait = stop - now;
        let mut fds: Vec<libc::pollfd> = Vec::with_capacity(3);
        for fd in [
            out.as_ref().map(|p| p.fd()),
            err.as_ref().map(|p| p.fd()),
            pidfd
                .as_ref()
                .filter(|_| exited_at.is_none())
                .map(|p| p.as_raw_fd()),
        ]
        .into_iter()
        .flatten()
        {
            fds.push(libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            });
        }
        if pidfd.is_none() && exited_at.is_none() {
            wait = wait.min(EXIT_TICK);
        }
        let ms = wait.as_millis().clamp(1, i32::MAX as u128) as libc::c_int;
        // SAFETY: `fds` is a valid array of `fds.len()` pollfd structs.
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        if rc < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(Failure::Io(e));
        }
        let ready = |fd: RawFd| {
            fds.iter().any(|p| {
                p.fd == fd && p.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0
            })
        };
        if let Some(pipe) = out.as_mut().filter(|p| ready(p.fd())) {
            match pipe.read(&mut chunk)? {
                None => out = None,
                Some(n) => {
                    let max = limits.stdout.unwrap_or(0);
                    if stdout.len() + n > max {
                        return Err(Failure::TooMuchOutput(max));
                    }
                    if stdout.capacity() - stdout.len() < n {
                        // Doubling, but never past the cap: the buffer stays
                        // within `max` bytes.
                        let want = (2 * stdout.capacity()).clamp(stdout.len() + n, max);
                        stdout.reserve_exact(want - stdout.len());
                    }
                    stdout.extend_from_slice(&chunk[..n]);
                }
            }
        }
        if let Some(pipe) = err.as_mut().filter(|p| ready(p.fd())) {
            match pipe.read(&mut chunk)? {
                None => err = None,
                Some(n) => stderr.push(&chunk[..n]),
            }
        }
    }
    let status = group.reap()?;
    Ok(Finished {
        status,
        stdout,
        stderr: stderr.into_bytes(),
    })
}

/// The started command. Until it is reaped, dropping this kills its group
/// and reaps it: no early return leaves anything running.
struct Group {
    pid: libc::pid_t,
    child: Child,
    reaped: bool,
}

impl Group {
    /// Whether it has exited, without reaping it.
    fn exited(&self) -> Result<bool, Failure> {
        loop {
            // SAFETY: siginfo_t is plain data; waitid only writes into it.
            let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
            // SAFETY: waitid on our own child with a valid siginfo pointer.
            let rc = unsafe {
                libc::waitid(
                    libc::P_PID,
                    self.pid as libc::id_t,
                    &mut info,
                    libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
                )
            };
            if rc == 0 {
                // SAFETY: filled in by waitid (zero when nothing has exited).
                return Ok(unsafe { info.si_pid() } != 0);
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(Failure::Io(e));
            }
        }
    }

    /// SIGKILL to the whole group. ESRCH (nothing left) is fine.
    fn kill(&self) {
        // SAFETY: kill(2) has no memory effects.
        unsafe { libc::kill(-self.pid, libc::SIGKILL) };
    }

    fn reap(&mut self) -> Result<ExitStatus, Failure> {
        self.reaped = true;
        self.child.wait().map_err(Failure::Io)
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        if !self.reaped {
            self.kill();
            let _ = self.child.wait();
        }
    }
}

/// One end of a pipe from the command, read only when poll says so.
struct Pipe<R: Read + AsRawFd>(R);

impl<R: Read + AsRawFd> Pipe<R> {
    fn new(r: R) -> Self {
        Pipe(r)
    }

    fn fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }

    /// One read: `None` at the end, else how many bytes (0 after EINTR).
    fn read(&mut self, buf: &mut [u8]) -> Result<Option<usize>, Failure> {
        match self.0.read(buf) {
            Ok(0) => Ok(None),
            Ok(n) => Ok(Some(n)),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => Ok(Some(0)),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(Some(0)),
            Err(e) => Err(Failure::Io(e)),
        }
    }
}

/// The first and the last `keep` bytes of a stream.
struct Kept {
    keep: usize,
    head: Vec<u8>,
    tail: Vec<u8>,
    dropped: bool,
}

impl Kept {
    fn new(keep: usize) -> Kept {
        Kept {
            keep,
            head: Vec::new(),
            tail: Vec::new(),
            dropped: false,
        }
    }

    fn push(&mut self, mut bytes: &[u8]) {
        let room = self.keep.saturating_sub(self.head.len()).min(bytes.len());
        self.head.extend_from_slice(&bytes[..room]);
        bytes = &bytes[room..];
        self.tail.extend_from_slice(bytes);
        if self.tail.len() > 2 * self.keep {
            self.tail.drain(..self.tail.len() - self.keep);
            self.dropped = true;
        }
    }

    fn into_bytes(mut self) -> Vec<u8> {
        if self.tail.len() > self.keep {
            self.tail.drain(..self.tail.len() - self.keep);
            self.dropped = true;
        }
        if self.dropped {
            self.head.extend_from_slice("\n…\n".as_bytes());
        }
        self.head.extend_from_slice(&self.tail);
        self.head
    }
}

/// A pidfd for `pid`, readable once it exits; `None` where the kernel has none.
fn pidfd_open(pid: libc::pid_t) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags; it returns an fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as RawFd;
    // SAFETY: a new descriptor that nothing else owns.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::Kept;

    #[test]
    fn child_kept_holds_head_and_tail() {
        let mut k = Kept::new(4);
        k.push(b"ab");
        assert_eq!(k.into_bytes(), b"ab");
        let mut k = Kept::new(4);
        k.push(b"abcdef");
        assert_eq!(k.into_bytes(), b"abcdef");
        let mut k = Kept::new(4);
        for _ in 0..100 {
            k.push(b"xyz");
        }
        k.push(b"1234");
        assert_eq!(k.into_bytes(), "xyzx\n…\n1234".as_bytes());
    }
}
