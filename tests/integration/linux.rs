//! Linux as it really is, against the probe: a process whose main thread
//! called `pthread_exit` (a C program compiled here), a /proc mounted with
//! `hidepid=` in scratch mount and PID namespaces, seen by root and by
//! `nobody`, and the test-only override of the boot time.
//!
//! Some checks must run in another process (another user, other
//! namespaces, another environment): this test binary runs itself there,
//! with `helper_process` as the only test and `LINUX_HELPER` saying what to
//! print.

use crate::common::{is_root, skip_or_fail, wait_until, PATIENCE};
use foreman::probe::{blindness, BlindnessOptions, Probe, ProcTable, ProcView, Stat};
use serde_json::{json, Value};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use tempfile::TempDir;
use wait_timeout::ChildExt;

/// Main starts a thread and calls `pthread_exit`: the leader is a zombie
/// while the thread works (burning CPU half the time) until `argv[1]`
/// exists; then the thread returns, the last one, and the process exits 0.
const THREAD_LEADER_EXITS: &str = r#"
#include <pthread.h>
#include <time.h>
#include <unistd.h>

static const char *stop;

static long elapsed_ns(const struct timespec *a, const struct timespec *b) {
    return (b->tv_sec - a->tv_sec) * 1000000000L + (b->tv_nsec - a->tv_nsec);
}

static void *work(void *arg) {
    (void)arg;
    while (access(stop, F_OK) != 0) {
        struct timespec start, now;
        clock_gettime(CLOCK_MONOTONIC, &start);
        do {
            clock_gettime(CLOCK_MONOTONIC, &now);
        } while (elapsed_ns(&start, &now) < 20000000L);
        usleep(20000);
    }
    return 0;
}

int main(int argc, char **argv) {
    pthread_t t;
    if (argc < 2) return 2;
    stop = argv[1];
    if (pthread_create(&t, 0, work, 0) != 0) return 3;
    pthread_exit(0);
}
"#;

/// What the helper process is asked to do.
const LINUX_HELPER: &str = "FOREMAN_LINUX_HELPER";
/// The procfs mount point the blindness helper judges.
const HELPER_PROC: &str = "FOREMAN_LINUX_HELPER_PROC";
/// The line the helper prints its answer on.
const ANSWER: &str = "LINUX-HELPER-ANSWER ";

/// Compile `source` with `cc` into `dir`; `None` (skipped, or failed under
/// CI) without a C compiler.
fn compile(dir: &Path, name: &str, source: &str) -> Option<PathBuf> {
    let src = dir.join(format!("{name}.c"));
    let exe = dir.join(name);
    std::fs::write(&src, source).expect("write the C source");
    match Command::new("cc")
        .args(["-O1", "-pthread", "-o"])
        .arg(&exe)
        .arg(&src)
        .output()
    {
        Ok(out) => {
            assert!(
                out.status.success(),
                "cc failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            Some(exe)
        }
        Err(e) => {
            skip_or_fail(&format!("no C compiler (cc: {e})"));
            None
        }
    }
}

/// A child killed and reaped however the test ends.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The probe's view of `pid`'s leader.
fn leader(pid: i32) -> Option<Stat> {
    match ProcTable::scan().expect("scan /proc").probe(pid) {
        Probe::Found(m) => m.first().map(|m| m.stat),
        _ => None,
    }
}

fn status_threads(pid: i32) -> Option<u32> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("Threads:"))?
        .trim()
        .parse()
        .ok()
}

/// utime + stime of one thread (`/proc/PID/task/TID/stat`).
fn thread_cpu(pid: i32, tid: i32) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).expect("task stat");
    let after = &text[text.rfind(')').expect("comm") + 1..];
    let f: Vec<&str> = after.split_whitespace().collect();
    // Index 0 is field 3; utime and stime are fields 14 and 15.
    f[11].parse::<u64>().expect("utime") + f[12].parse::<u64>().expect("stime")
}

/// What the kernel shows for a process whose main thread called
/// `pthread_exit` while another works, and what the probe makes of it: the
/// leader `Z`, but `num_threads` 2 (not a zombie), and `/proc/PID/stat`'s
/// CPU is the whole group's, rising with the live thread's. Once the last
/// thread has exited it is a real zombie: `Z` with 1 thread.
#[test]
fn a_leader_that_called_pthread_exit_is_z_while_its_threads_work() {
    let _g = crate::spawning();
    let dir = TempDir::new().expect("tempdir");
    let Some(exe) = compile(dir.path(), "leader_exits", THREAD_LEADER_EXITS) else {
        return;
    };
    let stop = dir.path().join("stop");
    let child = Reaped(
        Command::new(&exe)
            .arg(&stop)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn the helper"),
    );
    let pid = child.0.id() as i32;

    let mut seen = None;
    assert!(
        wait_until(PATIENCE, || {
            seen = leader(pid);
            seen.is_some_and(|s| s.state == 'Z' && s.threads >= 2)
        }),
        "the leader never showed Z with live threads: {seen:?}"
    );
    let first = seen.expect("seen");
    assert_eq!(first.threads, 2, "{first:?}");
    assert!(!first.is_zombie(), "a live thread group: {first:?}");
    assert_eq!(status_threads(pid), Some(2));
    let mut tids: Vec<i32> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("task dir")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    tids.sort_unstable();
    assert_eq!(tids.len(), 2, "{tids:?}");
    assert_eq!(tids[0], pid, "the leader is a task of its own");
    // The thread is no member of its own in the probe's tree.
    match ProcTable::scan().expect("scan").probe(pid) {
        Probe::Found(m) => assert_eq!(m.len(), 1, "{m:?}"),
        other => panic!("{other:?}"),
    }

    // The group's CPU rises with the live thread's (half a CPU: 5 ticks
    // take about 0.1 s).
    let mut now = first;
    assert!(
        wait_until(PATIENCE, || {
            now = leader(pid).expect("still there");
            now.cpu_ticks >= first.cpu_ticks + 5
        }),
        "cpu_ticks did not rise: {first:?} then {now:?}"
    );
    assert_eq!((now.state, now.threads), ('Z', 2));
    // It is the live thread's CPU: the leader's own task has next to none.
    let worker = tids[1];
    let (own, theirs) = (thread_cpu(pid, pid), thread_cpu(pid, worker));
    let group = leader(pid).expect("there").cpu_ticks;
    assert!(own <= 2, "the leader thread ran {own} ticks");
    assert!(
        group >= theirs && group <= own + theirs + 2,
        "group {group}, leader {own}, worker {theirs}"
    );
    assert!(
        group >= now.cpu_ticks,
        "group {group} < earlier {}",
        now.cpu_ticks
    );

    // The last thread exits: now a real zombie, waiting to be reaped.
    std::fs::write(&stop, "").expect("stop file");
    let mut last = None;
    assert!(
        wait_until(PATIENCE, || {
            last = leader(pid);
            last.is_some_and(|s| s.threads == 1)
        }),
        "the thread never exited: {last:?}"
    );
    let last = last.expect("seen");
    assert_eq!(last.state, 'Z', "{last:?}");
    assert!(last.is_zombie(), "{last:?}");
    let mut child = child;
    let status = child.0.wait().expect("reap");
    assert!(status.success(), "exit status {status:?}");
}

// ------------------------------------------------------- /proc blindness

/// Root, `unshare` and `setpriv`: what the namespace tests need. Prints
/// "skipped" (or fails under CI) and says false without them.
pub(crate) fn can_make_namespaces() -> bool {
    if !is_root() {
        skip_or_fail("needs root to mount a procfs in scratch namespaces");
        return false;
    }
    for tool in ["unshare", "setpriv", "mount"] {
        let found = Command::new(tool)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            skip_or_fail(&format!("{tool} (util-linux) is not installed"));
            return false;
        }
    }
    true
}

/// `cmd` (its program, arguments, environment and working directory) run
/// in new PID and mount namespaces where a procfs with `options` is
/// mounted at `at`, by a shell that stays pid 1 there (root's, as on a
/// host); `as_user` goes before the program (e.g. a `setpriv` call). The
/// mount lives and dies with the namespace: nothing changes on the host.
pub(crate) fn in_new_namespaces(
    cmd: &Command,
    at: &Path,
    options: &str,
    as_user: &[&str],
) -> Command {
    let mut wrapped = Command::new("unshare");
    wrapped
        .args([
            "--pid",
            "--fork",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            // Not `exec`: the shell stays pid 1 of the new namespace.
            r#"mount -t proc -o "$1" proc "$2" && shift 2 && "$@""#,
            "sh",
            options,
        ])
        .arg(at)
        .args(as_user)
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (key, value) in cmd.get_envs() {
        match value {
            Some(v) => wrapped.env(key, v),
            None => wrapped.env_remove(key),
        };
    }
    if let Some(dir) = cmd.get_current_dir() {
        wrapped.current_dir(dir);
    }
    wrapped
}

/// `setpriv` arguments: `nobody`, no groups but `gid`, no capabilities.
const NOBODY: &[&str] = &[
    "setpriv",
    "--reuid=65534",
    "--regid=65534",
    "--clear-groups",
    "--inh-caps=-all",
    "--bounding-set=-all",
];

/// `setpriv` arguments: still uid 0, but no capability at all.
pub(crate) const ROOT_WITHOUT_CAPS: &[&str] =
    &["setpriv", "--inh-caps=-all", "--bounding-set=-all"];

/// This test binary, run as the helper for `what` with `env`.
fn helper(what: &str, env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(std::env::current_exe().expect("current exe"));
    cmd.args([
        "linux::helper_process",
        "--exact",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(LINUX_HELPER, what)
    .env_remove("FOREMAN_TEST_BOOT_TIME")
    .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

fn output(mut cmd: Command) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    // Both pipes are small (a line of JSON, the harness's lines): the child
    // cannot block on them before it exits.
    if child
        .wait_timeout(PATIENCE)
        .expect("wait for the helper")
        .is_none()
    {
        let _ = child.kill();
        let _ = child.wait();
        panic!("{cmd:?} took longer than {PATIENCE:?}");
    }
    child.wait_with_output().expect("helper output")
}

/// The helper's answer: the JSON after `ANSWER`.
fn answer(out: &Output) -> Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        // The harness may print on the same line ("test ... ").
        .find_map(|l| l.split_once(ANSWER).map(|(_, json)| json))
        .unwrap_or_else(|| {
            panic!(
                "no answer from the helper ({:?}):\n{stdout}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )
        });
    serde_json::from_str(line).expect("the answer is JSON")
}

/// Not a test of its own: this binary's entry point when a test runs it as
/// a helper process (`LINUX_HELPER` set); otherwise it does nothing.
#[test]
fn helper_process() {
    let Ok(what) = std::env::var(LINUX_HELPER) else {
        return;
    };
    let value = match what.as_str() {
        "blindness" => {
            let mount = std::env::var(HELPER_PROC).expect("the procfs to judge");
            let view = ProcView::read(Path::new(&mount));
            let shared = BlindnessOptions {
                shared_pid_namespace: true,
            };
            json!({
                "strict": blindness(&view, BlindnessOptions::default()),
                "shared": blindness(&view, shared),
                "pid": view.pid,
                "self": view.self_link,
                "pid1": view.pid1,
                "mount": view.mount(),
            })
        }
        "boot" => {
            let me = foreman::probe::read_stat(Path::new("/proc"), std::process::id() as i32)
                .expect("own stat")
                .expect("exists");
            match foreman::probe::boot_facts() {
                Ok(b) => json!({
                    "facts": b,
                    "start_ticks": me.start_ticks,
                    "started_at": b.started_at(me.start_ticks),
                }),
                Err(e) => json!({"error": format!("{e:#}")}),
            }
        }
        other => panic!("no helper {other:?}"),
    };
    println!("{ANSWER}{value}");
}

/// A scratch directory `nobody` may enter, with an empty `proc/` in it.
fn mount_dir() -> (TempDir, PathBuf) {
    let dir = TempDir::new().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let at = dir.path().join("proc");
    std::fs::create_dir(&at).expect("mkdir proc");
    let at = std::fs::canonicalize(&at).expect("canonical");
    (dir, at)
}

/// The blindness helper's answer for a procfs mounted with `options` in
/// scratch namespaces, seen by the user `as_user` makes it.
fn judged(options: &str, as_user: &[&str]) -> Value {
    let (_dir, at) = mount_dir();
    let at_text = at.to_string_lossy().into_owned();
    let cmd = helper("blindness", &[(HELPER_PROC, &at_text)]);
    let v = answer(&output(in_new_namespaces(&cmd, &at, options, as_user)));
    // The helper judged the mount it was given, by its own pid there.
    assert_eq!(v["mount"][0], "proc", "{v:#}");
    assert_eq!(v["self"]["Ok"], v["pid"].to_string(), "{v:#}");
    v
}

fn reason(v: &Value, key: &str) -> String {
    v[key].as_str().unwrap_or_default().to_string()
}

/// A real procfs with `hidepid=invisible`: root sees everything (only
/// the namespace the test had to make is reported, and only when nothing
/// is taken on the operator's word); `nobody` is blind (the options, and
/// pid 1, root's shell, really hidden); `nobody` on a plain mount, or in
/// the mount's `gid=` group, is not; root without capabilities is blind
/// (another user's droid would be hidden, however visible root's own
/// processes are).
#[test]
fn a_proc_mounted_with_hidepid_blinds_whoever_it_hides_processes_from() {
    let _g = crate::spawning();
    if !can_make_namespaces() {
        return;
    }
    let hidden = "rw,hidepid=invisible";

    let root = judged(hidden, &[]);
    assert!(root["shared"].is_null(), "root sees everything: {root:#}");
    assert!(
        reason(&root, "strict").contains("PID namespace (pid:["),
        "a Foreman in a child PID namespace is blind unless told otherwise: {root:#}"
    );
    assert!(!reason(&root, "strict").contains("hidepid"), "{root:#}");

    let nobody = judged(hidden, NOBODY);
    let why = reason(&nobody, "shared");
    assert!(
        why.contains("is mounted with hidepid=invisible")
            && why.contains("no CAP_SYS_PTRACE")
            && why.contains("pid 1 is not visible"),
        "{nobody:#}"
    );
    assert!(nobody["pid1"]["Err"].is_string(), "{nobody:#}");

    let plain = judged("rw", NOBODY);
    assert!(plain["shared"].is_null(), "{plain:#}");

    let in_group = judged("rw,hidepid=invisible,gid=65534", NOBODY);
    assert!(
        in_group["shared"].is_null(),
        "the gid= group is exempt: {in_group:#}"
    );
    assert!(in_group["pid1"].get("Ok").is_some(), "{in_group:#}");

    let ptraceable = judged("rw,hidepid=ptraceable,gid=65534", NOBODY);
    assert!(
        reason(&ptraceable, "shared").contains("hidepid=ptraceable"),
        "gid= exempts no one from ptraceable: {ptraceable:#}"
    );

    let capless = judged(hidden, ROOT_WITHOUT_CAPS);
    assert!(
        reason(&capless, "shared").contains("no CAP_SYS_PTRACE"),
        "{capless:#}"
    );
}

// ---------------------------------------------------- boot time override

/// `FOREMAN_TEST_BOOT_TIME` (builds with `failpoints` only) moves the boot
/// and nothing else: the same boot id and tick rate, `ticks_at_boot` the
/// ticks between the two boots, and a process's start time unchanged. A
/// boot before the real one, or garbage, is an error naming the variable.
#[cfg(feature = "failpoints")]
#[test]
fn the_boot_time_override_moves_the_boot_and_no_process() {
    use foreman::probe::BootFacts;
    let _g = crate::spawning();
    // This run may itself be under the override: the real boot is where
    // tick 0 falls.
    let here: BootFacts = foreman::probe::boot_facts().expect("boot facts");
    let real = here.started_at(0).timestamp();
    let emulated = (chrono::Utc::now().timestamp() - 30).max(real);
    let v = answer(&output(helper(
        "boot",
        &[("FOREMAN_TEST_BOOT_TIME", &emulated.to_string())],
    )));
    let facts: BootFacts = serde_json::from_value(v["facts"].clone()).expect("facts");
    assert_eq!(facts.boot_time.timestamp(), emulated, "{v:#}");
    assert_eq!(facts.boot_id, here.boot_id);
    assert_eq!(facts.clk_tck, here.clk_tck);
    let ticks = (emulated - real) as u64 * here.clk_tck;
    assert_eq!(facts.ticks_at_boot, ticks, "{v:#}");
    let start_ticks = v["start_ticks"].as_u64().expect("ticks");
    let started: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(v["started_at"].clone()).expect("started_at");
    assert_eq!(started, here.started_at(start_ticks), "{v:#}");
    assert!(
        started >= facts.boot_time && started <= chrono::Utc::now(),
        "{v:#}"
    );

    for (value, says) in [
        ((real - 10).to_string(), "before the real boot"),
        ("soon".to_string(), "not unix seconds"),
    ] {
        let v = answer(&output(helper(
            "boot",
            &[("FOREMAN_TEST_BOOT_TIME", &value)],
        )));
        let e = v["error"].as_str().unwrap_or_default();
        assert!(
            e.contains("FOREMAN_TEST_BOOT_TIME") && e.contains(says),
            "{value}: {v:#}"
        );
    }
}
