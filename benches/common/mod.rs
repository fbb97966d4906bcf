//! What the benchmarks share: the release binary, the host's process
//! limits, sleeping processes that die with the bench, and the floor (a bare
//! read of `/proc/PID/stat` and `/proc/PID/io`).

use anyhow::{bail, ensure, Context, Result};
use std::fmt::Write as _;
use std::fs::File;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

/// Processes left free for everyone else on the host when checking limits.
pub const HEADROOM: usize = 500;
pub const BINARY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/target/release/foreman");

/// The release binary, which must exist (and should be newer than src/).
pub fn check_binary() -> Result<PathBuf> {
    let binary = PathBuf::from(BINARY);
    let built = std::fs::metadata(&binary)
        .and_then(|m| m.modified())
        .with_context(|| {
            format!(
                "the release binary {BINARY} is missing: build it first with `cargo build --release` \
                 (in the default target directory, CARGO_TARGET_DIR unset)"
            )
        })?;
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    if let Some(newest) = newest_mtime(&src) {
        if newest > built {
            println!(
                "warning: {BINARY} is older than a file in src/; its RSS is of an older build \
                 (run `cargo build --release`)"
            );
        }
    }
    Ok(binary)
}

/// The newest modification time of any file under `dir`.
pub fn newest_mtime(dir: &Path) -> Option<SystemTime> {
    let mut newest = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let t = if path.is_dir() {
            newest_mtime(&path)
        } else {
            entry.metadata().and_then(|m| m.modified()).ok()
        };
        newest = newest.max(t);
    }
    newest
}

/// How many more processes this host lets us start.
pub struct Limits {
    pid_max: usize,
    threads_max: usize,
    nproc: Option<u64>,
    root: bool,
    cgroup_pids_max: Option<(String, usize)>,
    running_tasks: usize,
    user_procs: usize,
}

impl Limits {
    pub fn read() -> Result<Limits> {
        let num = |p: &str| -> Result<usize> {
            let t = std::fs::read_to_string(p).with_context(|| format!("reading {p}"))?;
            t.trim().parse().with_context(|| format!("parsing {p}"))
        };
        let pid_max = num("/proc/sys/kernel/pid_max")?;
        let threads_max = num("/proc/sys/kernel/threads-max")?;
        // SAFETY: an all-zero rlimit is valid; getrlimit only writes into it.
        let mut rl: libc::rlimit = unsafe { std::mem::zeroed() };
        // SAFETY: rl is a valid, writable rlimit.
        let nproc = if unsafe { libc::getrlimit(libc::RLIMIT_NPROC, &mut rl) } == 0
            && rl.rlim_cur != libc::RLIM_INFINITY
        {
            Some(rl.rlim_cur)
        } else {
            None
        };
        // SAFETY: getuid has no preconditions.
        let uid = unsafe { libc::getuid() };
        // Field 4 of loadavg: runnable/total scheduling entities (threads).
        let loadavg = std::fs::read_to_string("/proc/loadavg")?;
        let running_tasks = loadavg
            .split_ascii_whitespace()
            .nth(3)
            .and_then(|f| f.split('/').nth(1))
            .and_then(|t| t.parse().ok())
            .context("parsing /proc/loadavg")?;
        let mut user_procs = 0;
        for e in std::fs::read_dir("/proc")?.flatten() {
            use std::os::unix::fs::MetadataExt;
            if e.file_name()
                .to_str()
                .is_some_and(|s| s.parse::<u32>().is_ok())
                && e.metadata().is_ok_and(|m| m.uid() == uid)
            {
                user_procs += 1;
            }
        }
        Ok(Limits {
            pid_max,
            threads_max,
            nproc,
            root: uid == 0,
            cgroup_pids_max: cgroup_pids_max(),
            running_tasks,
            user_procs,
        })
    }

    pub fn check(&self, n: usize) -> Result<()> {
        println!(
            "limits: pid_max {}, threads-max {}, RLIMIT_NPROC {}{}, cgroup pids.max {}; {} threads exist, {} processes are this user's",
            self.pid_max,
            self.threads_max,
            self.nproc.map_or("unlimited".into(), |n| n.to_string()),
            if self.root { " (not enforced for root)" } else { "" },
            self.cgroup_pids_max
                .as_ref()
                .map_or("none".into(), |(p, n)| format!("{n} ({p})")),
            self.running_tasks,
            self.user_procs,
        );
        let mut problems = Vec::new();
        let want = n + HEADROOM;
        // pid_max: pids run from 300 (after wrap) to pid_max - 1.
        let pids_free = self.pid_max.saturating_sub(300 + self.running_tasks);
        if want > pids_free {
            problems.push(format!(
                "kernel.pid_max is {} and {} threads exist: {} pids free, {n} + {HEADROOM} headroom wanted (raise with `sysctl kernel.pid_max=...`)",
                self.pid_max, self.running_tasks, pids_free
            ));
        }
        if want > self.threads_max.saturating_sub(self.running_tasks) {
            problems.push(format!(
                "kernel.threads-max is {} and {} threads exist",
                self.threads_max, self.running_tasks
            ));
        }
        if let (Some(limit), false) = (self.nproc, self.root) {
            if (self.user_procs + want) as u64 > limit {
                problems.push(format!(
                    "`ulimit -u` is {limit} and this user already has {} processes (raise with `ulimit -u`)",
                    self.user_procs
                ));
            }
        }
        if let Some((path, limit)) = &self.cgroup_pids_max {
            if self.running_tasks + want > *limit {
                problems.push(format!(
                    "{path} is {limit} and up to {} tasks may already be in it",
                    self.running_tasks
                ));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            bail!("{}", problems.join("; "))
        }
    }
}

/// The pids.max of this process's cgroup (v1 `pids` controller or v2),
/// when it is a number.
fn cgroup_pids_max() -> Option<(String, usize)> {
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    for line in cgroups.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let file = if controllers.split(',').any(|c| c == "pids") {
            format!("/sys/fs/cgroup/pids{path}/pids.max")
        } else if controllers.is_empty() {
            format!("/sys/fs/cgroup{path}/pids.max")
        } else {
            continue;
        };
        if let Ok(text) = std::fs::read_to_string(&file) {
            if let Ok(n) = text.trim().parse() {
                return Some((file, n));
            }
        }
    }
    None
}

/// The sleeping processes; all are killed and reaped on drop.
pub struct Sleepers(pub Vec<Child>);

impl Drop for Sleepers {
    fn drop(&mut self) {
        for c in &self.0 {
            // SAFETY: signalling our own child's process group (it leads one).
            unsafe { libc::kill(-(c.id() as i32), libc::SIGKILL) };
        }
        for c in &mut self.0 {
            let _ = c.wait();
        }
    }
}

impl Sleepers {
    pub fn spawn(&mut self) -> Result<i32> {
        let mut cmd = Command::new("sleep");
        cmd.arg("3600")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        // SAFETY: prctl is async-signal-safe; it makes the sleeper die with
        // this bench even if the bench is killed before its Drop guard runs.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn()?;
        let pid = child.id() as i32;
        self.0.push(child);
        Ok(pid)
    }
}

/// The floor: `/proc/PID/stat` and `/proc/PID/io` of every pid into one
/// reused buffer; only the end of the command name is located.
pub fn floor(pids: &[i32], path: &mut String, buf: &mut Vec<u8>) -> Result<usize> {
    let mut total = 0;
    for pid in pids {
        for file in ["stat", "io"] {
            path.clear();
            let _ = write!(path, "/proc/{pid}/{file}");
            buf.clear();
            File::open(&*path)
                .and_then(|mut f| f.read_to_end(buf))
                .with_context(|| format!("reading {path}"))?;
            total += buf.iter().rposition(|b| *b == b')').unwrap_or(buf.len());
        }
    }
    Ok(total)
}

/// min, median, max of one series.
pub struct Stats(pub f64, pub f64, pub f64);

impl Stats {
    pub fn of(mut v: Vec<f64>) -> Stats {
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let med = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Stats(v[0], med, v[n - 1])
    }
}

/// The bench's arguments: task counts (else `default_ns`) and `--reps R`
/// (else `default_reps`). `cargo bench` adds `--bench`, which is skipped.
pub fn args(default_ns: &[usize], default_reps: usize) -> Result<(Vec<usize>, usize)> {
    let (mut ns, mut reps) = (Vec::new(), default_reps);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--reps" {
            let v = args.next().context("--reps needs a number")?;
            reps = v.parse().with_context(|| format!("--reps {v:?}"))?;
        } else if let Some(v) = a.strip_prefix("--reps=") {
            reps = v.parse().with_context(|| format!("--reps {v:?}"))?;
        } else if !a.starts_with('-') {
            ns.push(
                a.parse::<usize>()
                    .with_context(|| format!("task count {a:?} is not a number"))?,
            );
        }
    }
    if ns.is_empty() {
        ns = default_ns.to_vec();
    }
    anyhow::ensure!(reps > 0, "--reps must be at least 1");
    Ok((ns, reps))
}

/// `foreman --config X run`, our child, killed and reaped on drop.
pub struct Daemon {
    pub child: Child,
    pub pid: i32,
    pub stderr: PathBuf,
    pub reaped: bool,
}

impl Daemon {
    pub fn start(binary: &Path, config: &Path, dir: &Path) -> Result<Daemon> {
        let stderr = dir.join("daemon.stderr");
        let mut cmd = Command::new(binary);
        cmd.arg("--config")
            .arg(config)
            .arg("run")
            .current_dir(dir)
            .env_remove("RUST_LOG")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("FOREMAN_HTTP_TOKEN")
            .stdin(Stdio::null())
            .stdout(File::create(dir.join("daemon.stdout"))?)
            .stderr(File::create(&stderr)?);
        // SAFETY: prctl is async-signal-safe; the daemon dies with the bench.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let pid = child.id() as i32;
        Ok(Daemon {
            child,
            pid,
            stderr,
            reaped: false,
        })
    }

    /// Fail if the daemon has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            self.reaped = true;
            bail!(
                "the daemon exited ({status}); its stderr:\n{}",
                tail(&self.stderr, 20)
            );
        }
        Ok(())
    }

    /// SIGTERM, wait (then SIGKILL); the child's total CPU seconds.
    pub fn stop(&mut self) -> Result<f64> {
        ensure!(!self.reaped, "the daemon was already reaped");
        // SAFETY: signalling our own unreaped child.
        unsafe { libc::kill(self.pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut status = 0;
        // SAFETY: an all-zero rusage is valid; wait4 only writes into it.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        loop {
            // SAFETY: pid is our child; status and ru are writable.
            let got = unsafe { libc::wait4(self.pid, &mut status, libc::WNOHANG, &mut ru) };
            if got == self.pid {
                break;
            }
            ensure!(got == 0, "wait4: {}", std::io::Error::last_os_error());
            if Instant::now() > deadline {
                println!("the daemon did not stop within 20 s of SIGTERM: SIGKILL");
                // SAFETY: as above.
                unsafe { libc::kill(self.pid, libc::SIGKILL) };
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.reaped = true;
        let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
        Ok(tv(ru.ru_utime) + tv(ru.ru_stime))
    }

    /// WARN/ERROR lines of its stderr: a count and the first one.
    pub fn complaints(&self) -> String {
        let text = std::fs::read_to_string(&self.stderr).unwrap_or_default();
        let bad: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            .collect();
        match bad.first() {
            None => "none".into(),
            Some(first) => {
                let mut s: String = first.chars().take(220).collect();
                if bad.len() > 1 {
                    let _ = write!(s, " (+{} more)", bad.len() - 1);
                }
                format!("{}: {s}", bad.len())
            }
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if !self.reaped {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The last `lines` lines of a file.
pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// What `wait4` says of a child that ended.
pub struct Reaped {
    /// The raw wait status (`WIFEXITED`, `WEXITSTATUS`).
    pub status: libc::c_int,
    pub rusage: libc::rusage,
}

impl Reaped {
    /// User + system CPU, in ms.
    pub fn cpu_ms(&self) -> f64 {
        let ms = |t: libc::timeval| t.tv_sec as f64 * 1e3 + t.tv_usec as f64 * 1e-3;
        ms(self.rusage.ru_utime) + ms(self.rusage.ru_stime)
    }

    /// The exit code, or `otherwise` when a signal ended it.
    pub fn code_or(&self, otherwise: i32) -> i32 {
        if libc::WIFEXITED(self.status) {
            libc::WEXITSTATUS(self.status)
        } else {
            otherwise
        }
    }
}

/// Wait for `child` with `wait4`, for its rusage (std's `wait` drops it).
pub fn reap(child: Child) -> Result<Reaped> {
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid; wait4 only writes into it.
    let mut rusage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: pid is our child, not yet waited for; status and rusage are writable.
    let got = unsafe { libc::wait4(pid, &mut status, 0, &mut rusage) };
    // The child is reaped; std's Child would only close handles on drop.
    drop(child);
    ensure!(
        got == pid,
        "wait4 on {pid}: {}",
        std::io::Error::last_os_error()
    );
    Ok(Reaped { status, rusage })
}
