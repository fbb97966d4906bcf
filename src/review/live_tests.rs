//! Table-driven tests of the live checks' `judge`: every check passes on a
//! healthy deployment and fails at its boundary, from facts written by hand.

use super::*;
use crate::model::Signal;
use crate::probe::{boot_facts, BlindnessOptions, BootFacts, Clocks, ProcView};
use crate::review::facts::*;
use crate::review::Status;
use std::collections::BTreeMap;

fn at(s: &str) -> DateTime<Utc> {
    parse_time(s).expect("time")
}

const NOW: &str = "2026-11-23T06:00:00.000Z";
const BOOT: &str = "2026-11-20T06:00:00Z";

fn ns(t: DateTime<Utc>) -> i64 {
    t.timestamp_nanos_opt().expect("in range")
}

fn sweep(id: i64, started: &str, finished: Option<&str>) -> SweepRow {
    SweepRow {
        id,
        kind: "scheduled".into(),
        host: "h".into(),
        started_at: started.into(),
        finished_at: finished.map(str::to_string),
        realtime_ns: Some(ns(at(started))),
    }
}

fn proc(pid: i32) -> ProcFacts {
    ProcFacts {
        task_id: format!("t{pid}"),
        droid_type: "builder".into(),
        pid,
        uid: Some(1000),
        io: Access::Granted,
        signal: Access::Granted,
        terminates: true,
        counts_io: true,
    }
}

/// A healthy deployment: every check passes.
fn healthy() -> Facts {
    let now = at(NOW);
    let boot = at(BOOT);
    let boottime_ns = ns(now) - ns(boot);
    let last = "2026-11-23T05:59:00.000Z";
    Facts {
        config: ConfigFacts {
            source: "/etc/foreman/foreman.toml".into(),
            host: "h".into(),
            interval: Duration::from_secs(60),
            policies: vec![PolicySummary {
                name: "[defaults]".into(),
                mode: Mode::Enforce,
                timeout: Duration::from_secs(600),
                progress: vec![Signal::Heartbeat, Signal::Cpu, Signal::Io],
                on_hung: OnHung::Terminate,
            }],
            executor: ExecutorTarget::Sqlite {
                path: "/var/lib/executor/executor.db".into(),
                entry: Entry::File,
            },
            activity_path: "/var/lib/foreman/foreman.db".into(),
            activity_dir: DirState::Writable,
        },
        executor: ExecutorFacts {
            kind: ExecutorKind::Sqlite,
            timeout: Duration::from_secs(30),
            elapsed: Duration::from_millis(12),
            snapshot: SnapshotFacts::Taken {
                rows: 3,
                running: 1,
                bad: vec![],
            },
            columns: Some(ColumnFacts {
                needed: SNAPSHOT_COLUMNS.to_vec(),
                found: Ok(SNAPSHOT_COLUMNS.iter().map(|c| c.to_string()).collect()),
            }),
        },
        activity: ActivityFacts {
            path: "/var/lib/foreman/foreman.db".into(),
            open: LogOpen::Opened { version: 6 },
            writable: vec![
                ("/var/lib/foreman/foreman.db".into(), Ok(())),
                ("/var/lib/foreman".into(), Ok(())),
            ],
            last_finished: Ok(Some(sweep(7, last, Some(last)))),
            latest: Ok(Some(sweep(7, last, Some(last)))),
        },
        sinks: vec![SinkFacts {
            list: "alerts",
            name: "ops".into(),
            timeout: Duration::from_secs(5),
            probe: SinkProbe::Webhook {
                target: Ok("127.0.0.1:8080".into()),
                connect: Ok("127.0.0.1:8080".parse().expect("addr")),
                proxy_env: None,
                token_env: None,
            },
        }],
        clock: ClockFacts {
            boot: Ok(BootFacts {
                boot_id: "b".repeat(36),
                boot_time: boot,
                clk_tck: 100,
                ticks_at_boot: 0,
            }),
            clocks: Clocks {
                realtime_ns: ns(now),
                // A minute of suspend since boot.
                monotonic_ns: boottime_ns - 60_000_000_000,
                boottime_ns,
            },
        },
        processes: ProcessFacts {
            euid: 1000,
            cap_eff: Some(0),
            tasks: Some(vec![proc(4121)]),
            proc_view: clear_proc(),
            proc_options: BlindnessOptions::default(),
        },
        spent: BTreeMap::new(),
    }
}

/// A /proc that shows everything: no hidepid, pid 1 visible, Foreman
/// pid 4242 in the initial PID namespace.
fn clear_proc() -> ProcView {
    ProcView {
        mount_point: "/proc".into(),
        mountinfo: Ok(
            "22 27 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw\n".into(),
        ),
        status: Ok("Gid:\t998\t998\t998\t998\nGroups:\t998\nCapEff:\t0000000000000000\n".into()),
        pid1: Ok(()),
        self_link: Ok("4242".into()),
        pid: 4242,
        pid_ns: Ok(Some(crate::probe::INIT_PID_NS_INODE)),
    }
}

fn status_of(f: &Facts, name: &str) -> CheckResult {
    judge(f, at(NOW))
        .into_iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no check {name}"))
}

#[test]
fn a_healthy_deployment_passes_every_check_in_order() {
    let checks = judge(&healthy(), at(NOW));
    let names: Vec<&str> = checks.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, CHECKS);
    for c in &checks {
        assert_eq!(c.status, Status::Pass, "{c:?}");
        assert!(c.evidence.is_none(), "{c:?}");
    }
}

type Case = (
    &'static str,
    &'static str,
    fn(&mut Facts),
    Status,
    &'static str,
);

/// (case, check, how the facts differ from healthy, status, a word the reason holds)
const CASES: &[Case] = &[
    // config-coherent
    (
        "executor db missing",
        "config-coherent",
        |f| {
            f.config.executor = ExecutorTarget::Sqlite {
                path: "/x/executor.db".into(),
                entry: Entry::Missing,
            }
        },
        Status::Fail,
        "does not exist",
    ),
    (
        "executor path is a dir",
        "config-coherent",
        |f| {
            f.config.executor = ExecutorTarget::Sqlite {
                path: "/x".into(),
                entry: Entry::Dir,
            }
        },
        Status::Fail,
        "is a directory",
    ),
    (
        "command executor resolves",
        "config-coherent",
        |f| {
            f.config.executor = ExecutorTarget::Command {
                programs: vec![
                    (
                        "snapshot_command",
                        "snap".into(),
                        Ok("/usr/bin/snap".into()),
                    ),
                    (
                        "mark_failed_command",
                        "mark".into(),
                        Ok("/usr/bin/mark".into()),
                    ),
                ],
            }
        },
        Status::Pass,
        "command snap / mark",
    ),
    (
        "command executor missing program",
        "config-coherent",
        |f| {
            f.config.executor = ExecutorTarget::Command {
                programs: vec![
                    (
                        "snapshot_command",
                        "snap".into(),
                        Ok("/usr/bin/snap".into()),
                    ),
                    (
                        "mark_failed_command",
                        "mark".into(),
                        Err("mark is not an executable file".into()),
                    ),
                ],
            }
        },
        Status::Fail,
        "executor.mark_failed_command",
    ),
    (
        "activity dir creatable",
        "config-coherent",
        |f| {
            f.config.activity_dir = DirState::Missing {
                ancestor: "/var/lib".into(),
                creatable: Ok(()),
            }
        },
        Status::Pass,
        "can create it",
    ),
    (
        "activity dir not creatable",
        "config-coherent",
        |f| {
            f.config.activity_dir = DirState::Missing {
                ancestor: "/var/lib".into(),
                creatable: Err("Permission denied".into()),
            }
        },
        Status::Fail,
        "cannot be created",
    ),
    (
        "activity dir not writable",
        "config-coherent",
        |f| f.config.activity_dir = DirState::NotWritable("Permission denied".into()),
        Status::Fail,
        "not writable",
    ),
    (
        "activity dir is a file",
        "config-coherent",
        |f| f.config.activity_dir = DirState::NotADirectory,
        Status::Fail,
        "not a directory",
    ),
    (
        "policies summarised",
        "config-coherent",
        |f| {
            f.config.policies.push(PolicySummary {
                name: "scribe".into(),
                mode: Mode::Shadow,
                timeout: Duration::from_secs(90),
                progress: vec![Signal::Heartbeat],
                on_hung: OnHung::MarkOnly,
            });
        },
        Status::Pass,
        "scribe (shadow, timeout 1m 30s, progress heartbeat, on_hung mark_only)",
    ),
    // executor-reachable
    (
        "snapshot failed",
        "executor-reachable",
        |f| {
            f.executor.snapshot = SnapshotFacts::Failed("unable to open database file".into());
        },
        Status::Fail,
        "unable to open",
    ),
    (
        "snapshot timed out",
        "executor-reachable",
        |f| {
            f.executor.snapshot = SnapshotFacts::TimedOut;
            f.executor.elapsed = Duration::from_secs(32);
        },
        Status::Fail,
        "no snapshot within",
    ),
    (
        "snapshot took exactly the timeout",
        "executor-reachable",
        |f| {
            f.executor.elapsed = Duration::from_secs(30);
        },
        Status::Pass,
        "in 30s",
    ),
    (
        "snapshot took 1 ms more than the timeout",
        "executor-reachable",
        |f| {
            f.executor.elapsed = Duration::from_millis(30_001);
        },
        Status::Fail,
        "longer than executor.timeout",
    ),
    (
        "a malformed row",
        "executor-reachable",
        |f| {
            f.executor.snapshot = SnapshotFacts::Taken {
                rows: 3,
                running: 1,
                bad: vec![("t9".into(), "unknown state \"WEIRD\"".into())],
            };
        },
        Status::Fail,
        "t9: unknown state",
    ),
    (
        "a missing column",
        "executor-reachable",
        |f| {
            f.executor.columns = Some(ColumnFacts {
                needed: SNAPSHOT_COLUMNS.to_vec(),
                found: Ok(SNAPSHOT_COLUMNS
                    .iter()
                    .filter(|c| **c != "last_progress_at")
                    .map(|c| c.to_string())
                    .collect()),
            });
        },
        Status::Fail,
        "last_progress_at",
    ),
    (
        "columns match case-insensitively",
        "executor-reachable",
        |f| {
            f.executor.columns = Some(ColumnFacts {
                needed: SNAPSHOT_COLUMNS.to_vec(),
                found: Ok(SNAPSHOT_COLUMNS.iter().map(|c| c.to_uppercase()).collect()),
            });
        },
        Status::Pass,
        "columns the default queries need",
    ),
    (
        "no tasks table",
        "executor-reachable",
        |f| {
            f.executor.columns = Some(ColumnFacts {
                needed: SNAPSHOT_COLUMNS.to_vec(),
                found: Ok(vec![]),
            });
        },
        Status::Fail,
        "no tasks table",
    ),
    (
        "custom queries",
        "executor-reachable",
        |f| {
            f.executor.columns = None;
        },
        Status::Pass,
        "custom queries",
    ),
    // activity-log
    (
        "log missing",
        "activity-log",
        |f| {
            f.activity.open = LogOpen::Missing;
        },
        Status::Fail,
        "no activity log",
    ),
    (
        "log without schema",
        "activity-log",
        |f| {
            f.activity.open = LogOpen::NoSchema;
        },
        Status::Fail,
        "no schema",
    ),
    (
        "log at another version",
        "activity-log",
        |f| {
            f.activity.open = LogOpen::Failed(
                "the activity log x is at schema version 5, this Foreman expects 6".into(),
            );
        },
        Status::Fail,
        "schema version 5",
    ),
    (
        "log not writable",
        "activity-log",
        |f| {
            f.activity.writable[0].1 = Err("Permission denied (os error 13)".into());
        },
        Status::Fail,
        "cannot write /var/lib/foreman/foreman.db",
    ),
    (
        "log unopenable for want of write access",
        "activity-log",
        |f| {
            f.activity.open = LogOpen::Failed("attempt to write a readonly database".into());
            f.activity.writable[1].1 = Err("Permission denied (os error 13)".into());
        },
        Status::Fail,
        "which a WAL log needs even to be read",
    ),
    (
        "log dir not writable",
        "activity-log",
        |f| {
            f.activity.writable[1].1 = Err("Read-only file system (os error 30)".into());
        },
        Status::Fail,
        "Read-only file system",
    ),
    // daemon-sweeping (interval 60 s: the limit is 120 s)
    (
        "last sweep exactly 2 × interval old",
        "daemon-sweeping",
        |f| {
            f.activity.last_finished = Ok(Some(sweep(
                7,
                "2026-11-23T05:57:59.000Z",
                Some("2026-11-23T05:58:00.000Z"),
            )));
        },
        Status::Pass,
        "2m ago",
    ),
    (
        "last sweep 1 ms older than 2 × interval",
        "daemon-sweeping",
        |f| {
            f.activity.last_finished = Ok(Some(sweep(
                7,
                "2026-11-23T05:57:59.000Z",
                Some("2026-11-23T05:57:59.999Z"),
            )));
        },
        Status::Fail,
        "2m 1ms ago",
    ),
    (
        "no sweep",
        "daemon-sweeping",
        |f| {
            f.activity.last_finished = Ok(None);
        },
        Status::Fail,
        "no finished sweep",
    ),
    (
        "no log, so no sweep",
        "daemon-sweeping",
        |f| {
            f.activity.open = LogOpen::Missing;
            f.activity.last_finished = Ok(None);
        },
        Status::Fail,
        "no activity log",
    ),
    (
        "sweeps unreadable",
        "daemon-sweeping",
        |f| {
            f.activity.last_finished = Err("database is locked".into());
        },
        Status::Fail,
        "database is locked",
    ),
    // sinks-reachable
    (
        "no sinks",
        "sinks-reachable",
        |f| {
            f.sinks.clear();
        },
        Status::Skip,
        "no [[alerts]]",
    ),
    (
        "webhook refused",
        "sinks-reachable",
        |f| {
            f.sinks[0].probe = SinkProbe::Webhook {
                target: Ok("127.0.0.1:9".into()),
                connect: Err("127.0.0.1:9: Connection refused (os error 111)".into()),
                proxy_env: None,
                token_env: None,
            };
        },
        Status::Fail,
        "Connection refused",
    ),
    (
        "webhook reason says no request was sent",
        "sinks-reachable",
        |_| {},
        Status::Pass,
        "no request sent",
    ),
    (
        "proxy and token noted",
        "sinks-reachable",
        |f| {
            if let SinkProbe::Webhook {
                proxy_env,
                token_env,
                ..
            } = &mut f.sinks[0].probe
            {
                *proxy_env = Some("HTTPS_PROXY".into());
                *token_env = Some(("OPS_TOKEN".into(), false));
            }
        },
        Status::Pass,
        "OPS_TOKEN is not set",
    ),
    (
        "command sink missing",
        "sinks-reachable",
        |f| {
            f.sinks.push(SinkFacts {
                list: "alerts",
                name: "pager".into(),
                timeout: Duration::from_secs(5),
                probe: SinkProbe::Command {
                    program: "page".into(),
                    resolved: Err("page is not an executable file on this PATH".into()),
                },
            });
        },
        Status::Fail,
        "1 of 2 sink(s) unreachable",
    ),
    (
        "command sink executable",
        "sinks-reachable",
        |f| {
            f.sinks.push(SinkFacts {
                list: "alerts",
                name: "pager".into(),
                timeout: Duration::from_secs(5),
                probe: SinkProbe::Command {
                    program: "page".into(),
                    resolved: Ok("/usr/bin/page".into()),
                },
            });
        },
        Status::Pass,
        "/usr/bin/page is executable",
    ),
    (
        "file sink not writable",
        "sinks-reachable",
        |f| {
            f.sinks.push(SinkFacts {
                list: "wellbeing.sinks",
                name: "notes".into(),
                timeout: Duration::from_secs(5),
                probe: SinkProbe::File {
                    dir: "/srv/notes".into(),
                    state: DirState::NotWritable("Permission denied".into()),
                },
            });
        },
        Status::Fail,
        "/srv/notes is not writable",
    ),
    (
        "file sink to be created",
        "sinks-reachable",
        |f| {
            f.sinks.push(SinkFacts {
                list: "wellbeing.sinks",
                name: "notes".into(),
                timeout: Duration::from_secs(5),
                probe: SinkProbe::File {
                    dir: "/srv/notes".into(),
                    state: DirState::Missing {
                        ancestor: "/srv".into(),
                        creatable: Ok(()),
                    },
                },
            });
        },
        Status::Pass,
        "the first delivery creates it",
    ),
    // clock-sane
    (
        "boot time unreadable",
        "clock-sane",
        |f| {
            f.clock.boot = Err("reading /proc/sys/kernel/random/boot_id: No such file".into());
        },
        Status::Fail,
        "unreadable",
    ),
    (
        "wall clock before boot",
        "clock-sane",
        |f| {
            if let Ok(b) = &mut f.clock.boot {
                b.boot_time = at("2026-11-24T00:00:00Z");
            }
        },
        Status::Fail,
        "not after the boot time",
    ),
    (
        "realtime − boottime exactly the tolerance from btime",
        "clock-sane",
        |f| {
            f.clock.clocks.boottime_ns -= BOOT_TOLERANCE.as_nanos() as i64;
        },
        Status::Pass,
        "agrees within 2s",
    ),
    (
        "realtime − boottime 1 ms beyond the tolerance",
        "clock-sane",
        |f| {
            f.clock.clocks.boottime_ns -= BOOT_TOLERANCE.as_nanos() as i64 + 1_000_000;
        },
        Status::Fail,
        "2s 1ms away",
    ),
    (
        "monotonic ahead of boottime",
        "clock-sane",
        |f| {
            f.clock.clocks.monotonic_ns = f.clock.clocks.boottime_ns + 1;
        },
        Status::Fail,
        "CLOCK_MONOTONIC",
    ),
    (
        "last sweep recorded exactly now",
        "clock-sane",
        |f| {
            f.activity.latest = Ok(Some(sweep(8, NOW, None)));
        },
        Status::Pass,
        "not in the future",
    ),
    (
        "last sweep recorded 1 ms in the future",
        "clock-sane",
        |f| {
            f.activity.latest = Ok(Some(sweep(8, "2026-11-23T06:00:00.001Z", None)));
        },
        Status::Fail,
        "in the future",
    ),
    (
        "last sweep finished 1 ms in the future",
        "clock-sane",
        |f| {
            f.activity.latest = Ok(Some(sweep(8, NOW, Some("2026-11-23T06:00:00.001Z"))));
        },
        Status::Fail,
        "finished_at",
    ),
    (
        "no sweep to compare",
        "clock-sane",
        |f| {
            f.activity.latest = Ok(None);
        },
        Status::Pass,
        "no sweep recorded",
    ),
    // permissions
    (
        "no snapshot",
        "permissions",
        |f| {
            f.processes.tasks = None;
        },
        Status::Skip,
        "no snapshot",
    ),
    (
        "no RUNNING task",
        "permissions",
        |f| {
            f.processes.tasks = Some(vec![]);
        },
        Status::Pass,
        "no RUNNING task",
    ),
    (
        "only gone processes",
        "permissions",
        |f| {
            let mut p = proc(5);
            p.io = Access::Gone;
            p.signal = Access::Gone;
            f.processes.tasks = Some(vec![p]);
        },
        Status::Pass,
        "no RUNNING task",
    ),
    (
        "signal denied, policy terminates",
        "permissions",
        |f| {
            let mut p = proc(4121);
            p.signal = Access::Denied("Operation not permitted (os error 1)".into());
            p.io = Access::Denied("Permission denied (os error 13)".into());
            f.processes.tasks = Some(vec![p, proc(4122)]);
        },
        Status::Fail,
        "CAP_KILL",
    ),
    (
        "signal denied, policy does not terminate",
        "permissions",
        |f| {
            let mut p = proc(4121);
            p.signal = Access::Denied("Operation not permitted (os error 1)".into());
            p.terminates = false;
            f.processes.tasks = Some(vec![p]);
        },
        Status::Pass,
        "signals are unavailable for 4121",
    ),
    (
        "io unreadable only",
        "permissions",
        |f| {
            let mut p = proc(4121);
            p.io = Access::Denied("Permission denied (os error 13)".into());
            f.processes.tasks = Some(vec![p]);
        },
        Status::Pass,
        "CPU and heartbeat still work",
    ),
    (
        "io unreadable names CAP_SYS_PTRACE",
        "permissions",
        |f| {
            let mut p = proc(4121);
            p.io = Access::Denied("Permission denied (os error 13)".into());
            f.processes.tasks = Some(vec![p]);
        },
        Status::Pass,
        "CAP_SYS_PTRACE",
    ),
    (
        "the user and capabilities are named",
        "permissions",
        |_| {},
        Status::Pass,
        "uid 1000 (without CAP_KILL, without CAP_SYS_PTRACE)",
    ),
    (
        "root",
        "permissions",
        |f| {
            f.processes.euid = 0;
        },
        Status::Pass,
        "runs as root",
    ),
    // proc-visible
    (
        "a plain /proc",
        "proc-visible",
        |_| {},
        Status::Pass,
        "/proc hides no process from Foreman (mounted rw), pid 1 is visible, and Foreman is pid 4242 in the host's PID namespace",
    ),
    (
        "hidepid without CAP_SYS_PTRACE",
        "proc-visible",
        |f| {
            f.processes.proc_view.mountinfo =
                Ok("22 27 0:21 / /proc rw - proc proc rw,hidepid=invisible\n".into());
        },
        Status::Fail,
        "Foreman cannot tell a dead task from a hidden one: /proc is mounted with hidepid=invisible",
    ),
    (
        "hidepid with CAP_SYS_PTRACE",
        "proc-visible",
        |f| {
            f.processes.proc_view.mountinfo =
                Ok("22 27 0:21 / /proc rw - proc proc rw,hidepid=invisible\n".into());
            f.processes.proc_view.status = Ok("CapEff:\t0000000000080000\n".into());
        },
        Status::Pass,
        "mounted rw,hidepid=invisible",
    ),
    (
        "pid 1 hidden",
        "proc-visible",
        |f| {
            f.processes.proc_view.pid1 = Err("No such file or directory".into());
        },
        Status::Fail,
        "pid 1 is not visible",
    ),
    (
        "another PID namespace",
        "proc-visible",
        |f| {
            f.processes.proc_view.pid_ns = Ok(Some(4026532200));
        },
        Status::Fail,
        "PID namespace (pid:[4026532200])",
    ),
    (
        "another PID namespace, shared on the operator's word",
        "proc-visible",
        |f| {
            f.processes.proc_view.pid_ns = Ok(Some(4026532200));
            f.processes.proc_options.shared_pid_namespace = true;
        },
        Status::Pass,
        "shared with the executor",
    ),
];

#[test]
fn every_check_passes_and_fails_at_its_boundary() {
    for (case, check, change, want, says) in CASES {
        let mut f = healthy();
        change(&mut f);
        let c = status_of(&f, check);
        assert_eq!(c.status, *want, "{case}: {c:#?}");
        assert!(
            c.reason.contains(says),
            "{case}: {:?} lacks {says:?}",
            c.reason
        );
        match c.status {
            Status::Fail => {
                let e = c
                    .evidence
                    .as_ref()
                    .unwrap_or_else(|| panic!("{case}: no evidence"));
                assert!(
                    e.get("expected").is_some(),
                    "{case}: evidence without expected: {e}"
                );
            }
            _ => assert!(c.evidence.is_none(), "{case}: evidence on {:?}", c.status),
        }
        // A change to one check's facts leaves the others as they were,
        // except where facts are shared on purpose.
        for other in judge(&f, at(NOW)) {
            if other.name != *check {
                // No log at all is also no sweep.
                let shared = *case == "no log, so no sweep" && other.name == "activity-log";
                if !shared {
                    assert_ne!(
                        other.status,
                        Status::Fail,
                        "{case} failed {}: {other:#?}",
                        other.name
                    );
                }
            }
        }
    }
}

#[test]
fn malformed_rows_are_listed_up_to_the_limit_and_counted() {
    let mut f = healthy();
    let bad: Vec<(String, String)> = (0..25)
        .map(|i| (format!("t{i}"), "missing droid_type".into()))
        .collect();
    f.executor.snapshot = SnapshotFacts::Taken {
        rows: 30,
        running: 0,
        bad,
    };
    let c = status_of(&f, "executor-reachable");
    assert_eq!(c.status, Status::Fail);
    let e = c.evidence.expect("evidence");
    assert_eq!(e["malformed_rows"], 25);
    assert_eq!(
        e["malformed"].as_array().expect("list").len(),
        EVIDENCE_LIMIT
    );
    assert!(
        c.reason.contains("25 of 30 row(s) malformed"),
        "{}",
        c.reason
    );
}

#[test]
fn a_stale_sweep_gives_its_age_and_the_limit() {
    let mut f = healthy();
    f.activity.last_finished = Ok(Some(sweep(
        3,
        "2026-11-23T05:00:00.000Z",
        Some("2026-11-23T05:00:00.000Z"),
    )));
    let c = status_of(&f, "daemon-sweeping");
    assert_eq!(c.status, Status::Fail);
    let e = c.evidence.expect("evidence");
    assert_eq!(e["found"]["age_ms"], 3_600_000);
    assert_eq!(e["limit_ms"], 120_000);
    assert!(c.reason.contains("1h ago"), "{}", c.reason);
}

#[test]
fn a_sweep_in_the_future_is_clock_sanes_failure_not_the_daemons() {
    let mut f = healthy();
    let future = Some(sweep(
        9,
        "2026-11-23T07:00:00.000Z",
        Some("2026-11-23T07:00:00.000Z"),
    ));
    f.activity.last_finished = Ok(future.clone());
    f.activity.latest = Ok(future);
    assert_eq!(status_of(&f, "daemon-sweeping").status, Status::Pass);
    assert_eq!(status_of(&f, "clock-sane").status, Status::Fail);
}

#[test]
fn the_snapshot_time_boundary_is_inclusive() {
    for (ms, want) in [
        (29_999, Status::Pass),
        (30_000, Status::Pass),
        (30_001, Status::Fail),
    ] {
        let mut f = healthy();
        f.executor.elapsed = Duration::from_millis(ms);
        assert_eq!(status_of(&f, "executor-reachable").status, want, "{ms} ms");
    }
}

#[test]
fn the_real_clocks_are_sane_here() {
    let mut f = healthy();
    f.clock = ClockFacts {
        boot: boot_facts().map_err(|e| e.to_string()),
        clocks: Clocks::now(),
    };
    f.activity.latest = Ok(None);
    // Judged at the real now, not the test's fixed one.
    let c = judge(&f, Utc::now())
        .into_iter()
        .find(|c| c.name == "clock-sane")
        .expect("check");
    assert_eq!(c.status, Status::Pass, "{c:#?}");
}
