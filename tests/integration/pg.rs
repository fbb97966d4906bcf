//! The tests' own PostgreSQL: real servers from the distribution's
//! binaries, each in a temp dir on a free loopback port, that never outlive
//! the test process; and a TCP proxy that cuts the clients going through it
//! off from a server.
//!
//! A test asks `Pg::available()` first (a missing server skips the test
//! elsewhere, and fails it under CI, where .ci/run installs one), then takes
//! the shared cluster and a database of its own, or a private cluster when it
//! stops or restarts the server. The servers run as the `postgres` OS user
//! when the tests run as root: initdb and postgres refuse root.
//!
//! A server is not a descendant of the test process (see `spawn_server`):
//! the review tests watch every process of ours outside our process group
//! and require each to be gone when their review ends, and postgres's own
//! processes lead groups of their own, while the shared cluster outlives
//! every test. Instead of a parent-death signal, a watcher beside the server
//! holds a pipe from us and stops the server when the pipe closes: when the
//! `Pg` is dropped or the test process dies, however it dies.
//!
//! Every connection forks a backend: hold the process lock (a `World`, or
//! `crate::spawning()`) while using a cluster, as for any process a test
//! starts, so an exclusive test that forces a pid does not lose it to one.

use crate::common::{is_root, skip_or_fail, wait_until};
use postgres::{Client, NoTls};
use rustls::pki_types::{pem::PemObject, CertificateDer};
use rustls::RootCertStore;
use std::any::Any;
use std::collections::HashMap;
use std::ffi::{CString, OsStr};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio_postgres_rustls::MakeRustlsConnect;
use wait_timeout::ChildExt;

/// initdb and a first start on a loaded two-core machine take seconds; the
/// usual `PATIENCE` is for conditions that should hold at once.
const PG_PATIENCE: Duration = Duration::from_secs(30);

/// How often a starting server is asked whether it accepts connections.
const POLL: Duration = Duration::from_millis(20);

/// The contract's `tasks` table, as an executor on PostgreSQL declares it.
const TASKS_SQL: &str = "
CREATE TABLE tasks (
  id TEXT PRIMARY KEY, plan_id TEXT, droid_type TEXT NOT NULL, state TEXT NOT NULL,
  pid INTEGER, host TEXT, attempt INTEGER NOT NULL DEFAULT 1,
  started_at TIMESTAMPTZ, last_progress_at TIMESTAMPTZ, finished_at TIMESTAMPTZ,
  error TEXT, pid_start_ticks BIGINT);
CREATE INDEX tasks_host_state ON tasks (host, state);
";

// ---- the installation ----

/// What running a server here takes, found once per process.
struct Install {
    /// The newest major's bin directory (initdb, postgres).
    bin: PathBuf,
    /// The `postgres` OS user's (uid, gid) when we are root, who must not
    /// run the server; `None` runs it as ourselves.
    user: Option<(u32, u32)>,
}

fn install() -> Result<&'static Install, String> {
    static INSTALL: OnceLock<Result<Install, String>> = OnceLock::new();
    INSTALL
        .get_or_init(find_install)
        .as_ref()
        .map_err(Clone::clone)
}

fn find_install() -> Result<Install, String> {
    let bin = server_bin().ok_or(
        "no PostgreSQL server in /usr/lib/postgresql/*/bin (Debian's `postgresql`, which .ci/run installs)",
    )?;
    let user = if is_root() {
        Some(os_user("postgres").ok_or(
            "running as root and there is no `postgres` OS user to run the server as (Debian's `postgresql` creates it)",
        )?)
    } else {
        None
    };
    let openssl = Command::new("openssl")
        .arg("version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !openssl.is_ok_and(|s| s.success()) {
        return Err("no `openssl` command to make the TLS cluster's certificates".into());
    }
    Ok(Install { bin, user })
}

/// Globbed, not fixed to 15: the machine image may move to another major.
fn server_bin() -> Option<PathBuf> {
    let major =
        |name: &str| -> Option<Vec<u32>> { name.split('.').map(|p| p.parse().ok()).collect() };
    fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| Some((major(e.file_name().to_str()?)?, e.path().join("bin"))))
        .filter(|(_, bin)| bin.join("postgres").is_file() && bin.join("initdb").is_file())
        .max()
        .map(|(_, bin)| bin)
}

fn os_user(name: &str) -> Option<(u32, u32)> {
    let name = std::ffi::CString::new(name).ok()?;
    // SAFETY: a zeroed passwd is a valid out-parameter; getpwnam_r fills it
    // with pointers into `buf`, which outlives every read of them here.
    unsafe {
        let mut pwd: libc::passwd = std::mem::zeroed();
        let mut buf = vec![0 as libc::c_char; 16 * 1024];
        let mut found = std::ptr::null_mut();
        let rc = libc::getpwnam_r(
            name.as_ptr(),
            &mut pwd,
            buf.as_mut_ptr(),
            buf.len(),
            &mut found,
        );
        (rc == 0 && !found.is_null()).then_some((pwd.pw_uid, pwd.pw_gid))
    }
}

impl Install {
    /// initdb, as the server's user, with nothing of our environment (a
    /// developer's PGDATA must not steer it), killed if the thread waiting
    /// for it dies. A child in our process group: the review tests' watch
    /// leaves our group's processes alone.
    fn initdb(&self, cwd: &Path) -> Command {
        let mut cmd = Command::new(self.bin.join("initdb"));
        cmd.env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("LC_ALL", "C")
            .current_dir(cwd)
            .stdin(Stdio::null());
        if let Some((uid, gid)) = self.user {
            cmd.uid(uid).gid(gid);
        }
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: prctl and getppid are async-signal-safe and nothing here
        // allocates. std runs this after the uid switch, which would
        // otherwise clear the death signal.
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                    return Err(io::Error::last_os_error());
                }
                // The parent died before the death signal was armed.
                if libc::getppid() != parent {
                    return Err(io::Error::from_raw_os_error(libc::ESRCH));
                }
                Ok(())
            })
        };
        cmd
    }

    /// Hand a path to the server's user (a no-op when that is us).
    fn give(&self, path: &Path) {
        if let Some((uid, gid)) = self.user {
            std::os::unix::fs::chown(path, Some(uid), Some(gid))
                .unwrap_or_else(|e| panic!("chown {} to postgres: {e}", path.display()));
        }
    }
}

// ---- the clusters ----

/// A PostgreSQL cluster of the tests': its data dir, its log and (for
/// `start_tls`) its certificates in one temp dir, removed on drop.
pub struct Pg {
    install: &'static Install,
    dir: tempfile::TempDir,
    data: PathBuf,
    socket_dir: PathBuf,
    log: PathBuf,
    port: u16,
    ca: Option<PathBuf>,
    /// The postmaster while it runs (`None` between `stop` and
    /// `start_again`); behind a lock because tests share `&Pg`.
    server: Mutex<Option<Server>>,
    /// The shared cluster is never stopped: other tests use it.
    shared: bool,
}

/// Ok once started; the panic that stopped it otherwise, kept so every test
/// that asks sees why, rather than each trying again for `PG_PATIENCE`.
static SHARED: OnceLock<Result<Pg, String>> = OnceLock::new();

/// The server could not bind its port: another process took it after it
/// was picked.
#[derive(Debug)]
struct PortTaken;

impl Pg {
    /// Whether this machine can run the tests' servers. The constructors
    /// return servers, not options, so a test asks first and returns when
    /// this is false: elsewhere that skips the test, under CI (which
    /// installs PostgreSQL) it fails it.
    pub fn available() -> bool {
        match install() {
            Ok(_) => true,
            Err(why) => {
                skip_or_fail(&why);
                false
            }
        }
    }

    /// The process-wide shared cluster (started once, lazily; each test
    /// makes its own database in it). One initdb for the whole run keeps
    /// the tests that only need a database fast.
    pub fn shared() -> &'static Pg {
        let shared = SHARED.get_or_init(|| {
            let booted = std::panic::catch_unwind(|| {
                let mut pg = Pg::boot(false);
                pg.shared = true;
                pg
            })
            .map_err(panic_text);
            if booted.is_ok() {
                // Statics are never dropped: stop it and remove its data
                // when the test process exits normally (its watcher stops
                // it on the other ways out).
                // SAFETY: registering a handler that does not unwind.
                unsafe { libc::atexit(stop_shared_at_exit) };
            }
            booted
        });
        match shared {
            Ok(pg) => pg,
            Err(why) => panic!("the shared PostgreSQL cluster did not start: {why}"),
        }
    }

    /// A private cluster of this test's own (for tests that restart or stop
    /// the server), stopped and removed when dropped.
    pub fn start() -> Pg {
        Pg::boot(false)
    }

    /// A private cluster with ssl = on, a self-signed CA and a server
    /// certificate for "localhost" and 127.0.0.1 (made with the openssl
    /// CLI): the source's TLS must verify a real chain, both by name and by
    /// address.
    pub fn start_tls() -> Pg {
        Pg::boot(true)
    }

    /// The server's TCP port on 127.0.0.1, for configs that name host and
    /// port apart from a URL; it stays the same across `restart`.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// PEM of the CA that signed the server certificate (start_tls only),
    /// for a client's trust store.
    pub fn ca_path(&self) -> Option<&Path> {
        self.ca.as_deref()
    }

    /// A fresh, uniquely named database (CREATE DATABASE), returning its
    /// libpq URL: postgres://postgres@127.0.0.1:PORT/NAME. A database per
    /// test keeps tests on the shared cluster from seeing each other's rows.
    pub fn create_db(&self, prefix: &str) -> String {
        static SEQ: AtomicU64 = AtomicU64::new(1);
        let mut stem: String = prefix
            .chars()
            .map(|c| match c.to_ascii_lowercase() {
                c @ ('a'..='z' | '0'..='9' | '_') => c,
                _ => '_',
            })
            .take(40)
            .collect();
        if stem.is_empty() {
            stem = "db".into();
        }
        let name = format!("{stem}_{}", SEQ.fetch_add(1, Ordering::Relaxed));
        self.admin()
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .unwrap_or_else(|e| {
                panic!(
                    "CREATE DATABASE {name} on port {}: {}",
                    self.port,
                    chain(&e)
                )
            });
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// A connected client on that database (NoTls).
    pub fn client(&self, url: &str) -> Client {
        Client::connect(url, NoTls).unwrap_or_else(|e| panic!("connecting to {url}: {}", chain(&e)))
    }

    /// The contract's `tasks` table with PostgreSQL types, in the database
    /// at `url`, as an executor on PostgreSQL would have made it.
    pub fn create_tasks_table(&self, url: &str) {
        self.client(url)
            .batch_execute(TASKS_SQL)
            .unwrap_or_else(|e| panic!("creating tasks in {url}: {}", chain(&e)));
    }

    /// Stop fast (pg_ctl-like fast shutdown, wait until the port refuses),
    /// start again on the same port and data dir, wait until it accepts:
    /// what a source sees when the executor's database restarts under it.
    pub fn restart(&self) {
        self.stop();
        self.start_again();
    }

    /// Fast shutdown (sessions are ended, the server exits), waiting until
    /// the port refuses connections: the database is down, not slow.
    pub fn stop(&self) {
        assert!(
            !self.shared,
            "the shared cluster is not to be stopped: Pg::start() makes a private one"
        );
        let server = self
            .server()
            .take()
            .expect("stop: the server is not running");
        if let Err(why) = server.shut_down(PG_PATIENCE) {
            panic!("{why}; its log:\n{}", self.log_since(0));
        }
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        assert!(
            wait_until(PG_PATIENCE, || TcpStream::connect(addr)
                .is_err_and(|e| e.kind() == io::ErrorKind::ConnectionRefused)),
            "port {} still accepts connections after the server exited",
            self.port
        );
    }

    /// Start the stopped server again on its port, waiting until it accepts
    /// connections (the URLs handed out stay valid).
    pub fn start_again(&self) {
        assert!(!self.shared, "the shared cluster is never stopped");
        let mut server = self.server();
        assert!(server.is_none(), "start_again: the server is running");
        let started = self
            .launch(Instant::now() + PG_PATIENCE)
            .unwrap_or_else(|PortTaken| {
                panic!(
                    "port {} was taken by another process while the server was stopped; its log:\n{}",
                    self.port,
                    self.log_since(0)
                )
            });
        *server = Some(started);
    }

    fn boot(tls: bool) -> Pg {
        let install = install().unwrap_or_else(|why| {
            panic!("PostgreSQL is not available here ({why}): a test asks Pg::available() first")
        });
        let deadline = Instant::now() + PG_PATIENCE;
        let mut builder = tempfile::Builder::new();
        builder.prefix("foreman-pg-");
        // The server's user must reach the directory, and TMPDIR may be
        // one of root's own.
        let dir = match install.user {
            Some(_) => builder.tempdir_in("/tmp"),
            None => builder.tempdir(),
        }
        .expect("a temp dir for a PostgreSQL cluster");
        install.give(dir.path());
        let data = dir.path().join("data");
        let socket_dir = dir.path().join("sock");
        fs::create_dir(&socket_dir).unwrap();
        install.give(&socket_dir);
        let log = dir.path().join("server.log");
        File::create(&log).unwrap();

        let initdb_log = dir.path().join("initdb.log");
        let out = File::create(&initdb_log).unwrap();
        let mut initdb = install
            .initdb(dir.path())
            .arg("-D")
            .arg(&data)
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"])
            .arg("--locale=C")
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("starting initdb from {}: {e}", install.bin.display()));
        let left = deadline.saturating_duration_since(Instant::now());
        let status = initdb.wait_timeout(left).unwrap();
        let said = || tail(&fs::read(&initdb_log).unwrap_or_default());
        match status {
            Some(s) if s.success() => {}
            Some(s) => panic!("initdb failed ({s}):\n{}", said()),
            None => {
                let _ = initdb.kill();
                let _ = initdb.wait();
                panic!("initdb did not finish within {PG_PATIENCE:?}:\n{}", said());
            }
        }

        let ca = tls.then(|| make_certs(install, dir.path()));
        let mut pg = Pg {
            install,
            dir,
            data,
            socket_dir,
            log,
            port: 0,
            ca,
            server: Mutex::new(None),
            shared: false,
        };
        // The port is free when picked, not when the server binds it:
        // another test may take it in between. Pick again then.
        let mut taken = Vec::new();
        loop {
            pg.port = free_port();
            match pg.launch(deadline) {
                Ok(server) => {
                    *pg.server() = Some(server);
                    return pg;
                }
                Err(PortTaken) if taken.len() < 5 => taken.push(pg.port),
                Err(PortTaken) => panic!("every port picked for PostgreSQL was taken: {taken:?}"),
            }
        }
    }

    /// Start the postmaster itself (not pg_ctl, which would leave it to
    /// nobody) and wait until it accepts connections.
    fn launch(&self, deadline: Instant) -> Result<Server, PortTaken> {
        let from = fs::metadata(&self.log).map(|m| m.len()).unwrap_or(0);
        let log = OpenOptions::new().append(true).open(&self.log).unwrap();
        let mut args: Vec<String> = vec![
            "-D".into(),
            self.data.display().to_string(),
            "-p".into(),
            self.port.to_string(),
            "-k".into(),
            self.socket_dir.display().to_string(),
        ];
        let mut settings = vec![
            "listen_addresses=127.0.0.1".to_string(),
            "fsync=off".into(),
            "max_connections=200".into(),
            "logging_collector=off".into(),
            // An idle cluster forks nothing of its own (a pid an exclusive
            // test forces stays free).
            "autovacuum=off".into(),
        ];
        if self.ca.is_some() {
            let d = self.dir.path();
            settings.push("ssl=on".into());
            settings.push(format!("ssl_cert_file={}", d.join("server.crt").display()));
            settings.push(format!("ssl_key_file={}", d.join("server.key").display()));
        }
        for s in settings {
            args.push("-c".into());
            args.push(s);
        }
        let server = spawn_server(
            self.install,
            &self.install.bin.join("postgres"),
            &args,
            self.dir.path(),
            &log,
        );
        loop {
            if server.exited(Duration::ZERO) {
                let said = self.log_since(from);
                if said.contains("Address already in use") {
                    return Err(PortTaken);
                }
                panic!(
                    "PostgreSQL exited before accepting connections on port {}; its log:\n{said}",
                    self.port
                );
            }
            if self.answers() {
                return Ok(server);
            }
            if Instant::now() >= deadline {
                let _ = server.shut_down(Duration::from_secs(5));
                panic!(
                    "PostgreSQL did not accept connections on port {} within {PG_PATIENCE:?}; its log:\n{}",
                    self.port,
                    self.log_since(from)
                );
            }
            std::thread::sleep(POLL);
        }
    }

    /// Whether our server accepts connections: a server that answers on the
    /// port but has another data dir is someone else's, and ours is about
    /// to exit for want of the port.
    fn answers(&self) -> bool {
        let Ok(mut c) = self.admin_config().connect(NoTls) else {
            return false;
        };
        let Ok(row) = c.query_one("SELECT current_setting('data_directory')", &[]) else {
            return false;
        };
        let theirs: String = row.get(0);
        fs::canonicalize(theirs).ok() == fs::canonicalize(&self.data).ok()
    }

    fn admin_config(&self) -> postgres::Config {
        let mut c = postgres::Config::new();
        c.host("127.0.0.1")
            .port(self.port)
            .user("postgres")
            .dbname("postgres")
            .connect_timeout(Duration::from_secs(5));
        c
    }

    fn admin(&self) -> Client {
        self.admin_config().connect(NoTls).unwrap_or_else(|e| {
            panic!(
                "connecting to PostgreSQL on port {}: {}",
                self.port,
                chain(&e)
            )
        })
    }

    fn server(&self) -> MutexGuard<'_, Option<Server>> {
        self.server.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The end of the server's log from byte `from` (a failure's evidence).
    fn log_since(&self, from: u64) -> String {
        let mut bytes = Vec::new();
        if let Ok(mut f) = File::open(&self.log) {
            let _ = f.seek(SeekFrom::Start(from));
            let _ = f.read_to_end(&mut bytes);
        }
        tail(&bytes)
    }
}

impl Drop for Pg {
    /// Fast shutdown and reap; the temp dir (a field) is removed after.
    fn drop(&mut self) {
        let server = self
            .server
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(server) = server {
            if let Err(why) = server.shut_down(PG_PATIENCE) {
                eprintln!("{why}; its log:\n{}", self.log_since(0));
            }
        }
    }
}

// ---- the server process ----

/// A running postmaster. Not our child (see `spawn_server`): held by a
/// pidfd, which names this process and no other even after it exits.
struct Server {
    pid: libc::pid_t,
    pidfd: OwnedFd,
    /// The write end of the watcher's pipe. When it closes (dropped, or
    /// with the test process), the watcher sends the server SIGQUIT.
    _tie: OwnedFd,
}

impl Server {
    fn signal(&self, sig: libc::c_int) {
        // SAFETY: a pidfd we own; no siginfo.
        unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.pidfd.as_raw_fd(),
                sig,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
    }

    /// Whether the server has exited, waiting up to `limit` for it (a
    /// pidfd becomes readable when its process exits).
    fn exited(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            let mut fd = libc::pollfd {
                fd: self.pidfd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            let left = deadline.saturating_duration_since(Instant::now());
            let ms = left.as_millis().min(i32::MAX as u128) as libc::c_int;
            // SAFETY: one valid pollfd.
            let n = unsafe { libc::poll(&mut fd, 1, ms) };
            if n > 0 {
                return true;
            }
            if n == 0 || io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                return false;
            }
        }
    }

    /// Fast shutdown (SIGINT: sessions ended, a checkpoint, exit), waiting
    /// for the exit; killed if it takes longer than `limit`.
    fn shut_down(self, limit: Duration) -> Result<(), String> {
        self.signal(libc::SIGINT);
        if self.exited(limit) {
            return Ok(());
        }
        self.signal(libc::SIGKILL);
        self.exited(Duration::from_secs(5));
        Err(format!(
            "PostgreSQL (pid {}) did not finish a fast shutdown within {limit:?}: killed",
            self.pid
        ))
    }
}

fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: room for the two fds pipe2 writes.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(rc, 0, "pipe2: {}", io::Error::last_os_error());
    // SAFETY: both fds are new and ours alone.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

fn c_string(s: impl AsRef<OsStr>) -> CString {
    CString::new(s.as_ref().as_bytes()).expect("no NUL in a server argument")
}

/// Everything the forked processes use, made before the fork: after it
/// they may only make async-signal-safe calls (no allocation, no locks).
struct Launch {
    program: CString,
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
    cwd: CString,
    user: Option<(u32, u32)>,
    stdin: RawFd,
    log: RawFd,
    tie: RawFd,
    report: RawFd,
    go: RawFd,
}

/// Start `program` as the server's user so that it is not our descendant,
/// with a watcher beside it that stops it when we go. We fork a middle
/// process, which forks the server (and execs it) and the watcher, reports
/// the server's pid, and exits once we hold a pidfd for it: until then the
/// server is its child, so the pid cannot name anyone else. The server and
/// the watcher are then orphans (init's, or a subreaper's).
fn spawn_server(
    install: &Install,
    program: &Path,
    args: &[String],
    cwd: &Path,
    log: &File,
) -> Server {
    let argv_owned: Vec<CString> = std::iter::once(c_string(program))
        .chain(args.iter().map(c_string))
        .collect();
    let env_owned = [c_string("PATH=/usr/bin:/bin"), c_string("LC_ALL=C")];
    let null_terminated = |v: &[CString]| -> Vec<*const libc::c_char> {
        v.iter()
            .map(|c| c.as_ptr())
            .chain(std::iter::once(std::ptr::null()))
            .collect()
    };
    let stdin = File::open("/dev/null").unwrap();
    let (tie_read, tie_write) = pipe();
    let (report_read, report_write) = pipe();
    let (go_read, go_write) = pipe();
    for fd in [&tie_read, &report_write, &go_read] {
        // The middle process moves its stdio onto 0..=2.
        assert!(fd.as_raw_fd() > 2, "the test process has no stdio open");
    }
    let launch = Launch {
        program: c_string(program),
        argv: null_terminated(&argv_owned),
        envp: null_terminated(&env_owned),
        cwd: c_string(cwd),
        user: install.user,
        stdin: stdin.as_raw_fd(),
        log: log.as_raw_fd(),
        tie: tie_read.as_raw_fd(),
        report: report_write.as_raw_fd(),
        go: go_read.as_raw_fd(),
    };
    // SAFETY: the child only runs `middle`, which makes async-signal-safe
    // calls on `launch` (built above, alive in the copied address space)
    // and never returns.
    let middle_pid = unsafe { libc::fork() };
    if middle_pid == 0 {
        // SAFETY: as above.
        unsafe { middle(&launch) }
    }
    assert!(
        middle_pid > 0,
        "fork for PostgreSQL: {}",
        io::Error::last_os_error()
    );
    drop((tie_read, report_write, go_read, stdin));
    let reap_middle = || {
        let mut status = 0;
        // SAFETY: our child, not reaped yet.
        while unsafe { libc::waitpid(middle_pid, &mut status, 0) } < 0
            && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted
        {}
    };
    let mut pid = [0u8; 4];
    if let Err(e) = File::from(report_read).read_exact(&mut pid) {
        reap_middle();
        panic!(
            "starting {} as its user: the middle process reported no pid ({e})",
            program.display()
        );
    }
    let pid = libc::pid_t::from_ne_bytes(pid);
    // SAFETY: the server is the middle process's child until we let that
    // go, so the pid is the server's.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as RawFd;
    let opened = io::Error::last_os_error();
    drop(go_write);
    reap_middle();
    assert!(fd >= 0, "pidfd_open({pid}): {opened}");
    Server {
        pid,
        // SAFETY: a new fd, ours alone.
        pidfd: unsafe { OwnedFd::from_raw_fd(fd) },
        _tie: tie_write,
    }
}

/// The middle process (a fork of the multi-threaded test process: only
/// async-signal-safe calls from here on).
unsafe fn middle(l: &Launch) -> ! {
    if let Some((uid, gid)) = l.user {
        if libc::setgroups(0, std::ptr::null()) != 0
            || libc::setgid(gid) != 0
            || libc::setuid(uid) != 0
        {
            libc::_exit(126);
        }
    }
    if libc::chdir(l.cwd.as_ptr()) != 0
        || libc::dup2(l.stdin, 0) < 0
        || libc::dup2(l.log, 1) < 0
        || libc::dup2(l.log, 2) < 0
    {
        libc::_exit(126);
    }
    // Close what the fork copied of the test process's other fds: another
    // cluster's `go` write end held here while we wait for ours would make
    // two of these wait for each other, and its tie's would keep that
    // cluster's watcher from ever seeing the test process go.
    let mut keep = [l.tie, l.report, l.go];
    keep.sort_unstable();
    let mut from = 3;
    for fd in keep {
        close_range(from, fd - 1);
        from = fd + 1;
    }
    close_range(from, libc::c_int::MAX);
    // As a fresh process: no handler or mask of the test process's, and
    // nothing ignored (an ignored SIGQUIT would survive exec).
    for sig in [
        libc::SIGINT,
        libc::SIGQUIT,
        libc::SIGTERM,
        libc::SIGPIPE,
        libc::SIGCHLD,
    ] {
        libc::signal(sig, libc::SIG_DFL);
    }
    let mut none: libc::sigset_t = std::mem::zeroed();
    libc::sigemptyset(&mut none);
    libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());

    let server = libc::fork();
    if server == 0 {
        libc::execve(l.program.as_ptr(), l.argv.as_ptr(), l.envp.as_ptr());
        libc::_exit(127);
    }
    if server < 0 {
        libc::_exit(125);
    }
    // Opened while the server is our child: it cannot be anyone else.
    let pidfd = libc::syscall(libc::SYS_pidfd_open, server, 0) as RawFd;
    if pidfd < 0 {
        libc::kill(server, libc::SIGKILL);
        libc::_exit(125);
    }
    let watcher = libc::fork();
    if watcher == 0 {
        watch(pidfd, l.tie);
    }
    if watcher < 0 {
        libc::kill(server, libc::SIGKILL);
        libc::_exit(125);
    }
    let bytes = server.to_ne_bytes();
    libc::write(l.report, bytes.as_ptr().cast(), bytes.len());
    // Until the test process holds its own pidfd (or is gone: EOF too).
    let mut byte = 0u8;
    while libc::read(l.go, (&mut byte as *mut u8).cast(), 1) < 0
        && *libc::__errno_location() == libc::EINTR
    {}
    libc::_exit(0)
}

/// Close fds `first..=last` (async-signal-safe).
unsafe fn close_range(first: RawFd, last: RawFd) {
    if first > last {
        return;
    }
    if libc::syscall(libc::SYS_close_range, first as u32, last as u32, 0u32) != 0 {
        // Before Linux 5.9: one by one, as far as fds plausibly go here.
        for fd in first..=last.min(65535) {
            libc::close(fd);
        }
    }
}

/// The watcher: waits for the server to exit (then has nothing to do) or
/// for the tie to close (the test process let go or died: stop the
/// server).
unsafe fn watch(pidfd: RawFd, tie: RawFd) -> ! {
    // Keep only these two (nothing else of the middle's is ours to hold).
    if libc::dup2(tie, 0) < 0 || libc::dup2(pidfd, 1) < 0 {
        libc::_exit(1);
    }
    close_range(2, libc::c_int::MAX);
    // A signal to our process group (Ctrl-C, a kill of the whole run) must
    // not take the watcher before it has stopped the server.
    for sig in [libc::SIGHUP, libc::SIGINT, libc::SIGQUIT, libc::SIGTERM] {
        libc::signal(sig, libc::SIG_IGN);
    }
    loop {
        let mut fds = [
            libc::pollfd {
                fd: 0,
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: 1,
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        if libc::poll(fds.as_mut_ptr(), 2, -1) < 0 {
            if *libc::__errno_location() == libc::EINTR {
                continue;
            }
            libc::_exit(1);
        }
        if fds[1].revents != 0 {
            libc::_exit(0);
        }
        if fds[0].revents != 0 {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                1,
                libc::SIGQUIT,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            );
            libc::_exit(0);
        }
    }
}

extern "C" fn stop_shared_at_exit() {
    let Some(Ok(pg)) = SHARED.get() else { return };
    // Every test is over; a lock still held would be a test's that never
    // returned: leave the server to its watcher then.
    let Ok(mut server) = pg.server.try_lock() else {
        return;
    };
    if let Some(server) = server.take() {
        let _ = server.shut_down(Duration::from_secs(5));
    }
    let _ = fs::remove_dir_all(pg.dir.path());
}

/// A loopback port nobody listens on right now.
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// The last lines of a log, for a panic message.
fn tail(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// An error and its causes: a postgres error's own text is only its kind
/// ("error connecting to server").
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text = format!("{text}: {c}");
        cause = c.source();
    }
    text
}

fn panic_text(payload: Box<dyn Any + Send>) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "(a panic without a message)".into())
}

/// A CA and a server certificate it signed, for "localhost" and 127.0.0.1
/// (the names a client may verify), in `dir`; returns the CA's PEM path.
/// EC P-256 keys: quick to make, and every client supports them.
fn make_certs(install: &Install, dir: &Path) -> PathBuf {
    fs::write(
        dir.join("ca.cnf"),
        "[req]\ndistinguished_name = dn\nx509_extensions = v3_ca\nprompt = no\n\
         [dn]\nCN = Foreman test CA\n\
         [v3_ca]\nbasicConstraints = critical,CA:TRUE\nkeyUsage = critical,keyCertSign,cRLSign\n\
         subjectKeyIdentifier = hash\n",
    )
    .unwrap();
    fs::write(
        dir.join("server.cnf"),
        "[req]\ndistinguished_name = dn\nprompt = no\n\
         [dn]\nCN = localhost\n\
         [ext]\nbasicConstraints = critical,CA:FALSE\nkeyUsage = critical,digitalSignature\n\
         extendedKeyUsage = serverAuth\nsubjectAltName = DNS:localhost,IP:127.0.0.1\n\
         subjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid\n",
    )
    .unwrap();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("running openssl: {e}"));
        assert!(
            out.status.success(),
            "openssl {args:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let days = ["-days", "2"];
    openssl(
        &[
            &["req", "-x509", "-new", "-config", "ca.cnf"],
            &ec[..],
            &days,
            &["-keyout", "ca.key", "-out", "ca.crt"],
        ]
        .concat(),
    );
    openssl(
        &[
            &["req", "-new", "-config", "server.cnf"],
            &ec[..],
            &["-keyout", "server.key", "-out", "server.csr"],
        ]
        .concat(),
    );
    openssl(
        &[
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
            ][..],
            &[
                "-set_serial",
                "2",
                "-extfile",
                "server.cnf",
                "-extensions",
                "ext",
            ],
            &days,
            &["-out", "server.crt"],
        ]
        .concat(),
    );
    // PostgreSQL refuses a key that others may read, or that is not its
    // user's own.
    for file in ["server.key", "server.crt"] {
        install.give(&dir.join(file));
    }
    fs::set_permissions(dir.join("server.key"), fs::Permissions::from_mode(0o600)).unwrap();
    dir.join("ca.crt")
}

// ---- the proxy ----

/// A TCP forwarder on 127.0.0.1:<its own port> to a Pg's port, to simulate
/// a network partition of one client: the clients that go through it lose
/// the server while every other client keeps it.
pub struct Proxy {
    port: u16,
    inner: Arc<ProxyInner>,
    acceptor: Option<JoinHandle<()>>,
}

struct ProxyInner {
    listener: TcpListener,
    upstream: SocketAddr,
    state: Mutex<ProxyState>,
    /// Wakes the acceptor when healed or dropped.
    changed: Condvar,
}

#[derive(Default)]
struct ProxyState {
    cut: bool,
    closing: bool,
    next_id: u64,
    /// Both ends of every forwarded connection, to close them all at once.
    conns: HashMap<u64, [TcpStream; 2]>,
    pumps: Vec<JoinHandle<()>>,
}

impl ProxyInner {
    fn state(&self) -> MutexGuard<'_, ProxyState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Stop listening but keep the port: on Linux a listening socket shut
    /// down for reading goes back to closed and, bound by number, stays
    /// bound, so a connect is refused at once (no listener: RST), no port 0
    /// bind is handed the port meanwhile, and `listen` opens it again. It
    /// also wakes a blocked accept.
    fn unlisten(&self) {
        // SAFETY: the listener's fd is open for the proxy's whole life.
        let rc = unsafe { libc::shutdown(self.listener.as_raw_fd(), libc::SHUT_RD) };
        assert_eq!(
            rc,
            0,
            "shutting the proxy's listener: {}",
            io::Error::last_os_error()
        );
    }
}

impl Proxy {
    /// Forwarding at once, on a port of its own, until dropped (which
    /// closes every forwarded connection and joins its threads).
    pub fn to(pg: &Pg) -> Proxy {
        // Bound to a port by number, not to port 0: only a socket bound
        // by number keeps its port when `cut` stops it listening.
        let mut tries = 0;
        let listener = loop {
            match TcpListener::bind((Ipv4Addr::LOCALHOST, free_port())) {
                Ok(l) => break l,
                Err(e) if e.kind() == io::ErrorKind::AddrInUse && tries < 5 => tries += 1,
                Err(e) => panic!("a loopback port for the proxy: {e}"),
            }
        };
        let port = listener.local_addr().unwrap().port();
        let inner = Arc::new(ProxyInner {
            listener,
            upstream: SocketAddr::from((Ipv4Addr::LOCALHOST, pg.port())),
            state: Mutex::new(ProxyState::default()),
            changed: Condvar::new(),
        });
        let acceptor = {
            let inner = inner.clone();
            std::thread::Builder::new()
                .name(format!("pg-proxy-{port}"))
                .spawn(move || accept_loop(&inner))
                .expect("the proxy's thread")
        };
        Proxy {
            port,
            inner,
            acceptor: Some(acceptor),
        }
    }

    /// The proxy's own port, which the cut closes (the server's stays open).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// URL like Pg's but through the proxy, for database `db_url`'s
    /// database name.
    pub fn url(&self, db_url: &str) -> String {
        let name = db_url
            .rsplit('/')
            .next()
            .and_then(|last| last.split('?').next())
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| panic!("no database name in {db_url:?}"));
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// Partition: close every forwarded connection at once and refuse new
    /// ones (connection refused, not a hang) until heal(). A hang would
    /// test the client's timeouts instead of its handling of a lost server.
    pub fn cut(&self) {
        let mut st = self.inner.state();
        if st.cut {
            return;
        }
        st.cut = true;
        self.inner.unlisten();
        for [a, b] in st.conns.drain().map(|(_, c)| c) {
            let _ = a.shutdown(Shutdown::Both);
            let _ = b.shutdown(Shutdown::Both);
        }
    }

    /// The network is back: new connections go through again (the cut
    /// ones stay lost, as after a real partition).
    pub fn heal(&self) {
        let mut st = self.inner.state();
        if !st.cut {
            return;
        }
        // SAFETY: the listener's fd is open for the proxy's whole life.
        let rc = unsafe { libc::listen(self.inner.listener.as_raw_fd(), 128) };
        assert_eq!(
            rc,
            0,
            "listening again on {}: {}",
            self.port,
            io::Error::last_os_error()
        );
        st.cut = false;
        self.inner.changed.notify_all();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let pumps = {
            let mut st = self.inner.state();
            st.closing = true;
            if !st.cut {
                self.inner.unlisten();
            }
            for [a, b] in st.conns.drain().map(|(_, c)| c) {
                let _ = a.shutdown(Shutdown::Both);
                let _ = b.shutdown(Shutdown::Both);
            }
            std::mem::take(&mut st.pumps)
        };
        self.inner.changed.notify_all();
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        for pump in pumps {
            let _ = pump.join();
        }
    }
}

fn accept_loop(inner: &Arc<ProxyInner>) {
    loop {
        let accepted = inner.listener.accept();
        let upstream = accepted
            .as_ref()
            .ok()
            .map(|_| TcpStream::connect(inner.upstream));
        let mut st = inner.state();
        if st.closing {
            return;
        }
        match (accepted, upstream) {
            (Ok((client, _)), Some(Ok(server))) => {
                // Accepted just before a cut: dropped, as the cut would have.
                if st.cut {
                    continue;
                }
                let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else {
                    continue;
                };
                let id = st.next_id;
                st.next_id += 1;
                st.conns.insert(id, [c2, s2]);
                let (Ok(c3), Ok(s3)) = (client.try_clone(), server.try_clone()) else {
                    st.conns.remove(&id);
                    continue;
                };
                st.pumps.retain(|p| !p.is_finished());
                for (from, to) in [(client, s3), (server, c3)] {
                    let inner = inner.clone();
                    st.pumps
                        .push(std::thread::spawn(move || pump(from, to, id, &inner)));
                }
            }
            // The server is down: the client sees its connection closed.
            (Ok(_), _) => {}
            // Cut (no longer listening), or a transient error.
            (Err(_), _) => {
                while st.cut && !st.closing {
                    st = inner
                        .changed
                        .wait(st)
                        .unwrap_or_else(PoisonError::into_inner);
                }
                if st.closing {
                    return;
                }
            }
        }
    }
}

/// One direction of a forwarded connection; its end closes both.
fn pump(mut from: TcpStream, mut to: TcpStream, id: u64, inner: &ProxyInner) {
    let _ = io::copy(&mut from, &mut to);
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
    inner.state().conns.remove(&id);
}

// ---- the harness's own tests ----

/// Whether a connection failed because nothing listens (not a timeout,
/// not an error from a server).
fn refused(e: &postgres::Error) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if c.downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::ConnectionRefused)
        {
            return true;
        }
        cause = c.source();
    }
    false
}

/// Whether `pid` is a descendant of this process (what the review tests'
/// /proc watch would count as ours).
fn descends_from_us(pid: libc::pid_t) -> bool {
    let me = std::process::id() as libc::pid_t;
    let mut p = pid;
    for _ in 0..64 {
        match foreman::probe::read_stat(Path::new("/proc"), p) {
            Ok(Some(stat)) if stat.ppid == me => return true,
            Ok(Some(stat)) if stat.ppid > 1 => p = stat.ppid,
            _ => return false,
        }
    }
    false
}

fn server_pid(pg: &Pg) -> libc::pid_t {
    pg.server().as_ref().expect("the server runs").pid
}

fn one(c: &mut Client, sql: &str) -> i64 {
    c.query_one(sql, &[]).unwrap().get(0)
}

fn rustls(roots: RootCertStore) -> MakeRustlsConnect {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    MakeRustlsConnect::new(config)
}

fn on_tls(c: &mut Client) -> bool {
    c.query_one(
        "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
        &[],
    )
    .unwrap()
    .get(0)
}

#[test]
fn pg_shared_cluster_databases_are_isolated() {
    let _g = crate::spawning();
    if !Pg::available() {
        return;
    }
    // Asked first from a thread that ends at once: the server must not die
    // with it (a parent-death signal would follow the thread that forked).
    let pg = std::thread::spawn(Pg::shared).join().unwrap();
    assert!(std::ptr::eq(pg, Pg::shared()), "one shared cluster");
    assert!(!descends_from_us(server_pid(pg)), "the server is ours");
    assert!(pg.ca_path().is_none());
    let a = pg.create_db("isolated");
    let b = pg.create_db("isolated");
    assert_ne!(a, b);
    assert!(a.starts_with(&format!(
        "postgres://postgres@127.0.0.1:{}/isolated_",
        pg.port()
    )));

    pg.create_tasks_table(&a);
    let mut ca = pg.client(&a);
    ca.execute(
        "INSERT INTO tasks (id, droid_type, state, pid, started_at, pid_start_ticks)
         VALUES ('t1', 'worker', 'RUNNING', 42, now(), 12345678901)",
        &[],
    )
    .unwrap();
    assert_eq!(
        one(
            &mut ca,
            "SELECT count(*) FROM tasks WHERE attempt = 1 AND host IS NULL"
        ),
        1
    );
    let types: Vec<(String, String)> = ca
        .query(
            "SELECT column_name::text, data_type::text FROM information_schema.columns
             WHERE table_name = 'tasks' AND column_name IN ('pid', 'started_at', 'pid_start_ticks')
             ORDER BY column_name",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        types,
        [
            ("pid".into(), "integer".into()),
            ("pid_start_ticks".into(), "bigint".into()),
            ("started_at".into(), "timestamp with time zone".into()),
        ]
    );
    assert_eq!(
        one(
            &mut ca,
            "SELECT count(*) FROM pg_indexes WHERE indexname = 'tasks_host_state'"
        ),
        1
    );

    let mut cb = pg.client(&b);
    let none: Option<String> = cb
        .query_one("SELECT to_regclass('tasks')::text", &[])
        .unwrap()
        .get(0);
    assert_eq!(none, None, "the other database has no tasks table");
    pg.create_tasks_table(&b);
    assert_eq!(one(&mut cb, "SELECT count(*) FROM tasks"), 0);
    assert_eq!(one(&mut ca, "SELECT count(*) FROM tasks"), 1);
}

#[test]
fn pg_restart_keeps_data_and_a_client_reconnects() {
    let _g = crate::spawning();
    if !Pg::available() {
        return;
    }
    let pg = Pg::start();
    assert!(pg.ca_path().is_none());
    let url = pg.create_db("restart");
    pg.create_tasks_table(&url);
    let mut before = pg.client(&url);
    before
        .execute(
            "INSERT INTO tasks (id, droid_type, state) VALUES ('t1', 'worker', 'RUNNING')",
            &[],
        )
        .unwrap();
    let port = pg.port();

    let first = server_pid(&pg);
    pg.restart();
    assert_eq!(pg.port(), port);
    assert_ne!(server_pid(&pg), first);
    assert!(!descends_from_us(server_pid(&pg)), "the server is ours");
    assert!(
        before.query("SELECT 1", &[]).is_err(),
        "a session survived the fast shutdown"
    );
    let mut after = pg.client(&url);
    assert_eq!(
        one(&mut after, "SELECT count(*) FROM tasks WHERE id = 't1'"),
        1
    );
}

#[test]
fn pg_stop_refuses_connections_until_started_again() {
    let _g = crate::spawning();
    if !Pg::available() {
        return;
    }
    let pg = Pg::start();
    let url = pg.create_db("stop");
    pg.stop();
    let began = Instant::now();
    let e = Client::connect(&url, NoTls)
        .err()
        .expect("connected to a stopped server");
    assert!(refused(&e), "not refused: {}", chain(&e));
    assert!(
        began.elapsed() < Duration::from_secs(2),
        "{:?}",
        began.elapsed()
    );

    pg.start_again();
    assert_eq!(one(&mut pg.client(&url), "SELECT 1::bigint"), 1);
}

#[test]
fn pg_proxy_partitions_one_client_until_healed() {
    let _g = crate::spawning();
    if !Pg::available() {
        return;
    }
    let pg = Pg::shared();
    let url = pg.create_db("proxy");
    let proxy = Proxy::to(pg);
    assert_ne!(proxy.port(), pg.port());
    let through = proxy.url(&url);
    let name = url.rsplit('/').next().unwrap();
    assert_eq!(
        through,
        format!("postgres://postgres@127.0.0.1:{}/{name}", proxy.port())
    );

    let mut client = pg.client(&through);
    let mut direct = pg.client(&url);
    assert_eq!(one(&mut client, "SELECT 1::bigint"), 1);

    proxy.cut();
    let began = Instant::now();
    assert!(
        client.query("SELECT 1", &[]).is_err(),
        "a query through a cut proxy"
    );
    let e = Client::connect(&through, NoTls)
        .err()
        .expect("connected through a cut proxy");
    assert!(refused(&e), "not refused: {}", chain(&e));
    assert!(
        began.elapsed() < Duration::from_secs(2),
        "{:?}",
        began.elapsed()
    );
    assert_eq!(
        one(&mut direct, "SELECT 1::bigint"),
        1,
        "only the proxied client is cut off"
    );

    proxy.heal();
    let mut again = pg.client(&through);
    assert_eq!(one(&mut again, "SELECT 2::bigint"), 2);
}

#[test]
fn pg_tls_cluster_serves_plain_and_verified_rustls_clients() {
    let _g = crate::spawning();
    if !Pg::available() {
        return;
    }
    let pg = Pg::start_tls();
    let ca = pg.ca_path().expect("a TLS cluster has a CA");
    let url = pg.create_db("tls");
    assert!(!on_tls(&mut pg.client(&url)), "NoTls is plain");

    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let trusting = rustls(roots);
    // By address (the certificate's IP SAN)...
    let mut by_ip = Client::connect(&format!("{url}?sslmode=require"), trusting.clone())
        .unwrap_or_else(|e| panic!("TLS to 127.0.0.1: {}", chain(&e)));
    assert!(on_tls(&mut by_ip));
    // ... and by name (its DNS SAN), still over IPv4.
    let name = url.rsplit('/').next().unwrap();
    let mut by_name = postgres::Config::new()
        .host("localhost")
        .hostaddr(Ipv4Addr::LOCALHOST.into())
        .port(pg.port())
        .user("postgres")
        .dbname(name)
        .ssl_mode(postgres::config::SslMode::Require)
        .connect(trusting)
        .unwrap_or_else(|e| panic!("TLS to localhost: {}", chain(&e)));
    assert!(on_tls(&mut by_name));

    // The chain is verified: the public roots do not trust our CA.
    let public = rustls(webpki_roots::TLS_SERVER_ROOTS.iter().cloned().collect());
    let e = Client::connect(&format!("{url}?sslmode=require"), public)
        .err()
        .expect("TLS with a CA nobody trusts");
    let why = chain(&e);
    assert!(why.contains("invalid peer certificate"), "{why}");
}

const HELPER: &str = "FOREMAN_TEST_PG_HELPER";

/// The helper process, killed when the test ends however it ends.
struct Helper(std::process::Child);

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A test process that dies by SIGKILL (no destructor, no atexit) leaves
/// no server behind: the watchers stop the shared cluster's and a private
/// one's. The helper is this test binary running `pg_helper_holding_clusters`.
#[test]
fn pg_servers_stop_when_the_test_process_is_killed() {
    let _g = crate::spawning();
    if !Pg::available() {
        return;
    }
    let mut cmd = Command::new(std::env::current_exe().expect("current exe"));
    // SAFETY: prctl is async-signal-safe. The helper must not outlive this
    // test's thread (the whole run may be killed with no destructor).
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        })
    };
    let child = cmd
        .args([
            "pg::pg_helper_holding_clusters",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(HELPER, "1")
        .env_remove("FOREMAN_TEST_BOOT_TIME")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the helper");
    let mut helper = Helper(child);
    let mut out = io::BufReader::new(helper.0.stdout.take().unwrap());
    // Each server: "cluster PID PORT DIR".
    let mut servers = Vec::new();
    let mut line = String::new();
    while servers.len() < 2 {
        line.clear();
        let n = io::BufRead::read_line(&mut out, &mut line).unwrap();
        assert!(n > 0, "the helper ended before it reported two clusters");
        // (The first shares its line with the harness's "test ... ".)
        if let Some((_, rest)) = line.trim().split_once("cluster ") {
            let f: Vec<&str> = rest.split(' ').collect();
            let pid: libc::pid_t = f[0].parse().unwrap();
            let port: u16 = f[1].parse().unwrap();
            servers.push((pid, port, PathBuf::from(f[2])));
        }
    }
    for (_, port, _) in &servers {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, *port));
        assert!(TcpStream::connect(addr).is_ok(), "port {port} is closed");
    }

    // SAFETY: not reaped yet, so the pid is still the helper's.
    unsafe { libc::kill(helper.0.id() as libc::pid_t, libc::SIGKILL) };
    let _ = helper.0.wait();
    for (pid, port, dir) in &servers {
        let gone = || {
            !matches!(
                foreman::probe::read_stat(Path::new("/proc"), *pid),
                Ok(Some(s)) if s.state != 'Z'
            )
        };
        assert!(
            wait_until(PG_PATIENCE, gone),
            "the server (pid {pid}, port {port}) outlived its test process"
        );
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, *port));
        assert!(TcpStream::connect(addr).is_err(), "port {port} still open");
        // What its destructors would have removed.
        assert!(dir.starts_with(std::env::temp_dir()) || dir.starts_with("/tmp"));
        fs::remove_dir_all(dir).unwrap();
    }
}

/// Run by `pg_servers_stop_when_the_test_process_is_killed` only: starts
/// the shared cluster and a private one, reports them, and waits to be
/// killed.
#[test]
fn pg_helper_holding_clusters() {
    if std::env::var_os(HELPER).is_none() {
        return;
    }
    let private = Pg::start();
    for pg in [Pg::shared(), &private] {
        println!(
            "cluster {} {} {}",
            server_pid(pg),
            pg.port(),
            pg.dir.path().display()
        );
    }
    loop {
        std::thread::park();
    }
}
