//! The lost-host rules, table-driven: silence, stale and beating tasks,
//! unwatched hosts, this host, the fleet brake, and the boundaries.

use super::*;
use crate::model::TaskState;
use chrono::TimeZone;

const LOST_AFTER: Duration = Duration::from_secs(600);

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 2, 12, 0, 0)
        .single()
        .expect("time")
}

fn foreman(silent_secs: u64) -> ForemanRow {
    ForemanRow {
        boot_id: "boot".into(),
        version: "0.1.0".into(),
        last_seen: now() - chrono::Duration::seconds(silent_secs as i64),
        last_sweep_at: None,
        silent: Duration::from_secs(silent_secs),
        running_reported: None,
        findings: None,
        actions: None,
        snapshot_error: None,
    }
}

fn host(name: &str, silent: Option<u64>, running: usize) -> HostRow {
    HostRow {
        host: Some(name.into()),
        foreman: silent.map(foreman),
        running,
    }
}

/// A RUNNING task on `host` whose heartbeat is `beat_age` seconds old
/// (`None`: no heartbeat and no start time).
fn task(id: &str, host: &str, beat_age: Option<i64>) -> Row {
    Row::Task(Task {
        id: id.into(),
        plan_id: None,
        droid_type: "builder".into(),
        state: TaskState::Running,
        pid: Some(100),
        host: Some(host.into()),
        attempt: 1,
        started_at: None,
        last_progress_at: beat_age.map(|a| now() - chrono::Duration::seconds(a)),
        finished_at: None,
        error: None,
        pid_start_ticks: None,
        created_at: None,
    })
}

fn view(hosts: Vec<HostRow>) -> View {
    View {
        now: now(),
        leader: Some("a".into()),
        hosts,
    }
}

fn lost_hosts(a: &Assessment) -> Vec<&str> {
    a.lost.iter().map(|l| l.host.as_str()).collect()
}

/// A case: its name, the hosts, the tasks read, the hosts lost, the hosts
/// whose Foreman alone is down, and whether the fleet brake holds.
type Case<'a> = (
    &'a str,
    Vec<HostRow>,
    Vec<Row>,
    Vec<&'a str>,
    Vec<&'a str>,
    bool,
);

#[test]
fn the_rules_of_a_lost_host() {
    let stale = 601;
    // (case, hosts, tasks, lost, foreman_down, brake)
    let cases: Vec<Case> = vec![
        (
            "silent foreman, every task stale: lost",
            vec![
                host("a", Some(5), 1),
                host("b", Some(601), 2),
                host("c", Some(3), 1),
            ],
            vec![task("b1", "b", Some(stale)), task("b2", "b", None)],
            vec!["b"],
            vec![],
            false,
        ),
        (
            "exactly at host_lost_after: not yet silent",
            vec![
                host("a", Some(5), 1),
                host("b", Some(600), 1),
                host("c", Some(3), 1),
            ],
            vec![task("b1", "b", Some(stale))],
            vec![],
            vec![],
            false,
        ),
        (
            "a task's heartbeat exactly at host_lost_after: it still beats",
            vec![
                host("a", Some(5), 1),
                host("b", Some(601), 2),
                host("c", Some(3), 1),
            ],
            vec![task("b1", "b", Some(stale)), task("b2", "b", Some(600))],
            vec![],
            vec!["b"],
            false,
        ),
        (
            "one beating task keeps the host alive: only its Foreman is down",
            vec![
                host("a", Some(5), 1),
                host("b", Some(3600), 2),
                host("c", Some(3), 1),
            ],
            vec![task("b1", "b", Some(stale)), task("b2", "b", Some(10))],
            vec![],
            vec!["b"],
            false,
        ),
        (
            "a heartbeat from the future counts as beating",
            vec![
                host("a", Some(5), 1),
                host("b", Some(3600), 1),
                host("c", Some(3), 1),
            ],
            vec![task("b1", "b", Some(-3600))],
            vec![],
            vec!["b"],
            false,
        ),
        (
            "a host no Foreman ever watched is never lost",
            vec![
                host("a", Some(5), 1),
                host("b", None, 3),
                host("c", Some(3), 1),
            ],
            vec![task("b1", "b", Some(stale))],
            vec![],
            vec![],
            false,
        ),
        (
            "this host is never lost to itself",
            vec![host("a", Some(3600), 1), host("c", Some(3), 1)],
            vec![task("a1", "a", Some(stale))],
            vec![],
            vec![],
            false,
        ),
        (
            "two of three hosts lost at once: the fleet brake",
            vec![
                host("a", Some(5), 1),
                host("b", Some(700), 1),
                host("c", Some(700), 1),
            ],
            vec![task("b1", "b", Some(stale)), task("c1", "c", Some(stale))],
            vec!["b", "c"],
            vec![],
            true,
        ),
        (
            "one of two: exactly half, not more, so no brake",
            vec![host("a", Some(5), 1), host("b", Some(700), 1)],
            vec![task("b1", "b", Some(stale))],
            vec!["b"],
            vec![],
            false,
        ),
        (
            "a decommissioned host (silent, no tasks) does not dilute the brake",
            vec![
                host("a", Some(5), 1),
                host("b", Some(700), 1),
                host("old1", Some(99_999), 0),
                host("old2", Some(99_999), 0),
                host("old3", Some(99_999), 0),
            ],
            vec![task("b1", "b", Some(stale))],
            vec!["b"],
            vec![],
            false,
        ),
        (
            "a silent host whose RUNNING count is stale but whose rows are gone: nothing",
            vec![
                host("a", Some(5), 1),
                host("b", Some(700), 1),
                host("c", Some(3), 1),
            ],
            vec![],
            vec![],
            vec![],
            false,
        ),
    ];
    for (name, hosts, rows, lost, down, brake) in cases {
        let v = view(hosts);
        let a = assess(&v, &Snapshot { rows }, "a", LOST_AFTER);
        assert_eq!(lost_hosts(&a), lost, "{name}: lost");
        assert_eq!(a.foreman_down, down, "{name}: foreman down");
        assert_eq!(a.brake.is_some(), brake, "{name}: brake {:?}", a.brake);
    }
}

#[test]
fn only_silent_watched_hosts_with_running_tasks_are_read() {
    let v = view(vec![
        host("a", Some(9999), 4),
        host("b", Some(601), 2),
        host("c", Some(601), 0),
        host("d", None, 5),
        host("e", Some(10), 5),
        HostRow {
            host: None,
            foreman: None,
            running: 3,
        },
    ]);
    assert_eq!(silent_hosts(&v, "a", LOST_AFTER), vec!["b".to_string()]);
}

#[test]
fn unwatched_hosts_are_named() {
    let v = view(vec![host("a", Some(1), 1), host("d", None, 5)]);
    let a = assess(&v, &Snapshot::default(), "a", LOST_AFTER);
    assert_eq!(a.unwatched, vec!["d".to_string()]);
}

#[test]
fn the_reason_names_the_host_its_silence_and_the_tasks_last_beat() {
    let l = Lost {
        host: "b".into(),
        foreman: foreman(754),
        tasks: Vec::new(),
    };
    let Row::Task(t) = task("b1", "b", Some(900)) else {
        panic!("task")
    };
    let r = reason(&l, &t, now(), LOST_AFTER, "a");
    assert!(r.ends_with("judged by the Foreman of host \"a\""), "{r}");
    assert!(r.contains("host \"b\" is lost"), "{r}");
    assert!(r.contains("silent for 12m 34s"), "{r}");
    assert!(r.contains("15m ago"), "{r}");
    assert!(r.contains("host_lost_after is 10m"), "{r}");
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever the fleet looks like: this host is never lost, no
        /// task with a heartbeat younger than host_lost_after is on a lost
        /// host, a host without a Foreman row is never lost, and the
        /// brake holds exactly when more than half the known hosts are lost.
        #[test]
        fn lost_is_never_this_host_nor_a_beating_one(
            hosts in proptest::collection::vec((0u8..6, proptest::option::of(0u64..2000), 0usize..4), 1..8),
            beats in proptest::collection::vec((0u8..6, proptest::option::of(-100i64..2000)), 0..20),
        ) {
            let mut rows = Vec::new();
            let mut seen = std::collections::BTreeSet::new();
            let mut hs = Vec::new();
            for (h, silent, running) in hosts {
                if seen.insert(h) {
                    hs.push(host(&format!("h{h}"), silent, running));
                }
            }
            for (i, (h, age)) in beats.into_iter().enumerate() {
                rows.push(task(&format!("t{i}"), &format!("h{h}"), age));
            }
            let v = view(hs);
            let snap = Snapshot { rows };
            let a = assess(&v, &snap, "h0", LOST_AFTER);
            for l in &a.lost {
                prop_assert_ne!(l.host.as_str(), "h0");
                let row = v.hosts.iter().find(|h| h.host.as_deref() == Some(&l.host));
                prop_assert!(row.is_some_and(|r| r.foreman.as_ref().is_some_and(|f| f.silent > LOST_AFTER)));
                for r in &snap.rows {
                    if let Row::Task(t) = r {
                        if t.host.as_deref() == Some(&l.host) {
                            let beating = t.last_progress_at.is_some_and(|b| now().signed_duration_since(b) <= chrono::Duration::seconds(600));
                            prop_assert!(!beating, "{} beats on lost host {}", t.id, l.host);
                        }
                    }
                }
            }
            prop_assert_eq!(a.brake.is_some(), !a.lost.is_empty() && a.lost.len() * 2 > a.known);
        }
    }
}
