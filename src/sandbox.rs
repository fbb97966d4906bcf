//! Real processes for the scratch executors of `foreman demo` and `foreman
//! review`: each in its own process group, all killed and reaped when the
//! sandbox is dropped, and an interrupt flag so Ctrl-C ends the run through
//! that drop instead of leaving them behind.

use anyhow::{Context, Result};
use chrono::{SecondsFormat, Utc};
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_interrupt(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Catch SIGINT and SIGTERM into a flag the run checks between steps.
pub fn catch_interrupts() {
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        libc::signal(
            libc::SIGINT,
            on_interrupt as *const () as libc::sighandler_t,
        );
        libc::signal(
            libc::SIGTERM,
            on_interrupt as *const () as libc::sighandler_t,
        );
    }
}

pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Sleep `d`, waking early when interrupted. False when interrupted.
pub fn pause(d: Duration) -> bool {
    let until = Instant::now() + d;
    while Instant::now() < until {
        if interrupted() {
            return false;
        }
        std::thread::sleep(
            until
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(50)),
        );
    }
    !interrupted()
}

/// A timestamp as executors write it.
pub fn now_text() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The processes a sandbox started; each leads its own process group, and
/// every group is SIGKILLed and its leader reaped on drop.
#[derive(Default)]
pub struct Droids(pub Vec<(String, Child)>, Vec<u32>);

impl Drop for Droids {
    fn drop(&mut self) {
        for (_, child) in &mut self.0 {
            // Only a child not yet reaped: a reaped one's pid (and group id)
            // may already be another process's. An unreaped child cannot be
            // reused even if it exits right after this check: only we can
            // reap it.
            if matches!(child.try_wait(), Ok(None)) {
                // SAFETY: signalling the group our live child leads.
                unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            }
            let _ = child.wait();
        }
    }
}

impl Droids {
    fn command(argv: &[&str]) -> Result<Command> {
        let (program, args) = argv.split_first().context("empty argv")?;
        let mut c = Command::new(program);
        c.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Own process group: Foreman never signals its own group, and
            // the drop kills what each one started.
            .process_group(0);
        // SAFETY: prctl and getppid are async-signal-safe; nothing else runs
        // between fork and exec. A sandbox that dies without its drop (a
        // kill -9, the daemon's second signal) takes its droids with it.
        unsafe {
            c.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The parent may already be gone.
                if libc::getppid() == 1 {
                    return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
                }
                Ok(())
            });
        }
        Ok(c)
    }

    /// Start `argv` for `task`; its pid.
    pub fn spawn(&mut self, task: &str, argv: &[&str]) -> Result<i32> {
        let child = Self::command(argv)?
            .spawn()
            .with_context(|| format!("starting {argv:?}"))?;
        let pid = child.id() as i32;
        self.0.push((task.to_string(), child));
        Ok(pid)
    }

    /// Start `argv` and read the first line it prints (a pid it started).
    pub fn spawn_reading(&mut self, task: &str, argv: &[&str]) -> Result<(i32, String)> {
        let mut child = Self::command(argv)?
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {argv:?}"))?;
        let pid = child.id() as i32;
        let out = child.stdout.take();
        self.0.push((task.to_string(), child));
        let mut line = String::new();
        if let Some(out) = out {
            BufReader::new(out)
                .read_line(&mut line)
                .with_context(|| format!("reading what {argv:?} printed"))?;
        }
        Ok((pid, line.trim().to_string()))
    }

    /// Start `argv` as a child `reap` leaves alone: once it exits it stays
    /// a zombie until the sandbox is dropped.
    pub fn spawn_unreaped(&mut self, task: &str, argv: &[&str]) -> Result<i32> {
        let pid = self.spawn(task, argv)?;
        self.1.push(pid as u32);
        Ok(pid)
    }

    /// Reap children that exited, as the executor would.
    pub fn reap(&mut self) {
        for (_, child) in &mut self.0 {
            if !self.1.contains(&child.id()) {
                let _ = child.try_wait();
            }
        }
    }
}
