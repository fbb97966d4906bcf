//! One Foreman per host on a PostgreSQL executor: several real daemons on
//! this machine, each with its own `host`, processes and activity log, on a
//! private PostgreSQL cluster. Each judges and marks its own host's rows
//! only; a host whose Foreman and tasks fall silent is failed exactly once,
//! by one survivor (the advisory lock's holder), after `host_lost_after`;
//! a PostgreSQL restart and a cut connection cost sweeps, not the daemons;
//! more than half of the hosts lost at once fails nothing.

use crate::cli::Running;
use crate::common::*;
use crate::pg::{Pg, Proxy};
use rusqlite::OptionalExtension;
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};

/// How long a Foreman may be silent: at least 3 intervals (500 ms each).
const LOST_AFTER: &str = "3s";
const LOST_AFTER_SECS: u64 = 3;

/// One host: its world (activity log, processes, foreman.toml) and daemon.
struct Host {
    name: String,
    world: World,
    daemon: Option<Running>,
}

impl Host {
    /// A world whose foreman.toml reads the PostgreSQL URL from `url_file`
    /// (written by the test: the password never lives in foreman.toml).
    fn new(name: &str, url: &str, dir: &Path) -> Host {
        let url_file = dir.join(format!("{name}.url"));
        std::fs::write(&url_file, format!("{url}\n")).expect("url file");
        let alerts = dir.join(format!("{name}-alerts.jsonl"));
        let tail = format!(
            "[droid_types.worker]\ntimeout = \"1h\"\nprogress = [\"heartbeat\"]\n\
             [fleet]\nhost_lost_after = \"{LOST_AFTER}\"\n\
             [[alerts]]\nname = \"pager\"\nkind = \"command\"\n\
             argv = [\"sh\", \"-c\", \"cat >> \\\"$0\\\"; echo >> \\\"$0\\\"\", {alerts:?}]\n",
            alerts = alerts.display().to_string()
        );
        let executor = format!(
            "kind = \"postgres\"\nurl_file = {:?}\ntimeout = \"5s\"",
            url_file.display().to_string()
        );
        let mut world = World::under_lock(Cfg {
            executor: Some(executor),
            tail: &tail,
            ..Cfg::default()
        });
        world.edit_config(|t| {
            t.replace(&format!("host = \"{HOST}\""), &format!("host = \"{name}\""))
        });
        Host {
            name: name.to_string(),
            world,
            daemon: None,
        }
    }

    /// `foreman run`, awaited until its startup scan is recorded.
    fn start(&mut self) {
        self.start_with(&[]);
    }

    fn start_with(&mut self, env: &[(&str, &str)]) {
        let mut cmd = self.world.foreman(&["run"]);
        cmd.envs(env.iter().copied());
        let mut d = Running::start(&mut cmd);
        let w = &self.world;
        wait_for(&format!("{}'s startup scan", self.name), || {
            assert!(d.still_running(), "{}", d.stderr());
            count_in(
                w,
                "SELECT COUNT(*) FROM sweeps WHERE kind = 'startup' AND finished_at IS NOT NULL",
            ) > 0
        });
        self.daemon = Some(d);
    }

    fn kill9(&mut self) {
        let mut d = self.daemon.take().expect("a daemon to kill");
        d.signal(libc::SIGKILL);
        let _ = d.finish(PATIENCE);
    }

    fn running(&mut self) -> bool {
        self.daemon.as_mut().is_some_and(|d| d.still_running())
    }

    fn stderr(&self) -> String {
        self.daemon.as_ref().map(|d| d.stderr()).unwrap_or_default()
    }

    /// A real sleeping process and its RUNNING row on this host.
    fn live_task(&mut self, db: &mut postgres::Client, id: &str) -> i32 {
        let pid = self.world.spawn(&["sleep", "300"]);
        wait_sleeping(pid, "sleep");
        insert(db, id, &self.name, pid, process_started_at(pid));
        pid
    }

    /// Full sweeps recorded so far.
    fn sweeps(&self) -> i64 {
        count_in(
            &self.world,
            "SELECT COUNT(*) FROM sweeps WHERE kind NOT IN ('event', 'fleet') AND finished_at IS NOT NULL",
        )
    }

    /// Wait until this daemon has finished `n` more full sweeps.
    fn await_sweeps(&mut self, n: i64) {
        let target = self.sweeps() + n;
        let name = self.name.clone();
        wait_until_or_panic(
            &format!("{n} more sweeps by {name}"),
            Duration::from_secs(30),
            || {
                assert!(self.running(), "{name} died: {}", self.stderr());
                self.sweeps() >= target
            },
        );
    }

    /// Findings this host recorded about `task`: (kind, outcome).
    fn findings(&self, task: &str) -> Vec<(String, String)> {
        let log = self.world.log();
        let mut stmt = log
            .prepare("SELECT kind, outcome FROM findings WHERE task_id = ?1 ORDER BY id")
            .expect("findings");
        stmt.query_map([task], |r| Ok((r.get(0)?, r.get(1)?)))
            .expect("query")
            .map(|r| r.expect("row"))
            .collect()
    }
}

fn count_in(w: &World, sql: &str) -> i64 {
    // The log may not exist yet (the daemon creates it).
    if !w.path("foreman.db").exists() {
        return 0;
    }
    w.log()
        .query_row(sql, [], |r| r.get::<_, i64>(0))
        .optional()
        .ok()
        .flatten()
        .unwrap_or(0)
}

fn wait_until_or_panic(what: &str, limit: Duration, cond: impl FnMut() -> bool) {
    assert!(wait_until(limit, cond), "timed out waiting for {what}");
}

fn insert(
    db: &mut postgres::Client,
    id: &str,
    host: &str,
    pid: i32,
    started: chrono::DateTime<chrono::Utc>,
) {
    db.execute(
        "INSERT INTO tasks (id, droid_type, state, pid, host, attempt, started_at, last_progress_at) \
         VALUES ($1, 'worker', 'RUNNING', $2, $3, 1, $4, now())",
        &[&id, &pid, &host, &started],
    )
    .expect("insert a task");
}

fn state(db: &mut postgres::Client, id: &str) -> (String, Option<String>) {
    let r = db
        .query_one("SELECT state, error FROM tasks WHERE id = $1", &[&id])
        .expect("a task row");
    (r.get(0), r.get(1))
}

/// The tasks' heartbeats written now, as a worker that still reaches the
/// database does.
fn beat(db: &mut postgres::Client, ids: &[&str]) {
    let ids: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
    db.execute(
        "UPDATE tasks SET last_progress_at = now() WHERE id = ANY($1)",
        &[&ids],
    )
    .expect("heartbeat");
}

fn fleet_rows(db: &mut postgres::Client) -> i64 {
    db.query_one("SELECT COUNT(*) FROM foreman.foreman_hosts", &[])
        .map(|r| r.get(0))
        .unwrap_or(0)
}

/// The host names of the Foremen holding the fleet's advisory lock, by
/// their application name (`foreman@HOST`).
fn leaders(db: &mut postgres::Client) -> Vec<String> {
    db.query(
        "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
         WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2 AND l.classid::int8 = 1181708909 \
         AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        &[],
    )
    .expect("pg_locks")
    .into_iter()
    .map(|r| r.get::<_, String>(0))
    .collect()
}

fn setup(
    pg: &Pg,
    names: &[&str],
    url_of: impl Fn(&str, &str) -> String,
) -> (tempfile::TempDir, String, Vec<Host>) {
    let url = pg.create_db("fleet");
    pg.create_tasks_table(&url);
    let dir = tempfile::tempdir().expect("tempdir");
    let hosts = names
        .iter()
        .map(|n| Host::new(n, &url_of(n, &url), dir.path()))
        .collect();
    (dir, url, hosts)
}

/// `setup`, a live task `{host}-{suffix}` per host and suffix, and every
/// daemon started and beating in the fleet table.
fn running_fleet(
    pg: &Pg,
    names: &[&str],
    suffixes: &[&str],
) -> (tempfile::TempDir, String, Vec<Host>, postgres::Client) {
    let (dir, url, mut hosts) = setup(pg, names, |_, u| u.to_string());
    let mut db = pg.client(&url);
    for h in hosts.iter_mut() {
        for s in suffixes {
            h.live_task(&mut db, &format!("{}-{s}", h.name));
        }
    }
    for h in hosts.iter_mut() {
        h.start();
    }
    let n = names.len() as i64;
    wait_for("every Foreman in the fleet table", || {
        fleet_rows(&mut db) == n
    });
    (dir, url, hosts, db)
}

#[test]
fn three_hosts_each_mark_their_own_dead_task_and_nothing_of_the_others() {
    let _lock = crate::spawning();
    if !Pg::available() {
        return;
    }
    let pg = Pg::shared();
    let (_dir, url, mut hosts) = setup(pg, &["a", "b", "c"], |_, u| u.to_string());
    let mut db = pg.client(&url);
    for h in hosts.iter_mut() {
        h.live_task(&mut db, &format!("{}-live", h.name));
        let dead = h.live_task(&mut db, &format!("{}-dead", h.name));
        h.world.kill(dead);
    }
    for h in hosts.iter_mut() {
        h.start();
    }
    wait_for("every dead task marked", || {
        ["a", "b", "c"]
            .iter()
            .all(|n| state(&mut db, &format!("{n}-dead")).0 == "FAILED")
    });
    // A few more sweeps each: nobody comes back to anything.
    for h in hosts.iter_mut() {
        h.await_sweeps(2);
    }
    for h in &hosts {
        for other in ["a", "b", "c"] {
            let dead = h.findings(&format!("{other}-dead"));
            let live = h.findings(&format!("{other}-live"));
            assert!(
                live.is_empty(),
                "{} recorded {other}-live: {live:?}",
                h.name
            );
            if other == h.name {
                assert!(
                    dead.iter()
                        .any(|(k, o)| ["dead", "orphan"].contains(&k.as_str())
                            && o == "marked_failed"),
                    "{} did not mark its own dead task: {dead:?}",
                    h.name
                );
            } else {
                assert!(
                    dead.is_empty(),
                    "{} judged {other}'s task: {dead:?}",
                    h.name
                );
            }
        }
        // Other hosts' rows are not this Foreman's: no finding of any kind
        // names them (not even unverifiable).
        let foreign = count_in(
            &h.world,
            &format!(
                "SELECT COUNT(*) FROM findings WHERE task_id NOT LIKE '{}-%'",
                h.name
            ),
        );
        assert_eq!(foreign, 0, "{} has findings about other hosts", h.name);
        let (st, err) = state(&mut db, &format!("{}-dead", h.name));
        assert_eq!(st, "FAILED");
        assert!(
            err.as_deref().is_some_and(|e| e.starts_with("foreman: ")),
            "{err:?}"
        );
        assert_eq!(state(&mut db, &format!("{}-live", h.name)).0, "RUNNING");
    }
    assert_eq!(
        fleet_rows(&mut db),
        3,
        "each Foreman beats in the fleet table"
    );
    let lead = leaders(&mut db);
    assert_eq!(lead.len(), 1, "exactly one leader: {lead:?}");
}

#[test]
fn a_lost_host_is_failed_once_by_one_survivor_and_never_again_when_it_comes_back() {
    let _lock = crate::spawning();
    if !Pg::available() {
        return;
    }
    let (dir, _url, mut hosts, mut db) = running_fleet(Pg::shared(), &["a", "b", "c"], &["1", "2"]);
    // Host b dies: its Foreman is killed and its tasks stop beating (their
    // processes stay: a partition looks like that, and whatever is left
    // must not be re-marked when the host returns). a and c keep beating.
    hosts[1].kill9();
    let killed = Instant::now();
    let mut lost_at = None;
    wait_until_or_panic(
        "b's tasks failed by a survivor",
        Duration::from_secs(30),
        || {
            beat(&mut db, &["a-1", "a-2", "c-1", "c-2"]);
            let done = ["b-1", "b-2"]
                .iter()
                .all(|t| state(&mut db, t).0 == "FAILED");
            if done {
                lost_at = Some(Instant::now());
            }
            done
        },
    );
    let after = lost_at.expect("failed") - killed;
    assert!(
        after >= Duration::from_secs(LOST_AFTER_SECS),
        "failed {after:?} after the Foreman died, before host_lost_after"
    );
    // Several more sweeps of both survivors, then count.
    for _ in 0..2 {
        beat(&mut db, &["a-1", "a-2", "c-1", "c-2"]);
        hosts[0].await_sweeps(2);
        hosts[2].await_sweeps(2);
    }
    for t in ["b-1", "b-2"] {
        let (st, err) = state(&mut db, t);
        assert_eq!(st, "FAILED");
        let err = err.unwrap_or_default();
        assert!(
            err.starts_with("foreman: host_lost: host \"b\" is lost"),
            "{err}"
        );
        assert!(err.contains("silent for"), "{err}");
        let by_a = hosts[0].findings(t);
        let by_c = hosts[2].findings(t);
        let all: Vec<_> = by_a.iter().chain(&by_c).collect();
        assert_eq!(
            all,
            vec![&("host_lost".to_string(), "marked_failed".to_string())],
            "exactly one host_lost finding in total, marked: a {by_a:?}, c {by_c:?}"
        );
    }
    // The survivors' own tasks are untouched.
    for t in ["a-1", "a-2", "c-1", "c-2"] {
        assert_eq!(state(&mut db, t).0, "RUNNING", "{t}");
    }
    // Recovery heard of it with `recover`, from the survivor that acted.
    let acted_by = if hosts[0].findings("b-1").is_empty() {
        "c"
    } else {
        "a"
    };
    let alerts = dir.path().join(format!("{acted_by}-alerts.jsonl"));
    wait_for("the host_lost alerts delivered", || {
        std::fs::read_to_string(&alerts).is_ok_and(|s| s.matches("host_lost").count() >= 2)
    });
    let text = std::fs::read_to_string(&alerts).expect("alerts");
    for line in text.lines().filter(|l| l.contains("host_lost")) {
        let v: Value = serde_json::from_str(line).expect("an alert payload");
        assert_eq!(v["kind"], "host_lost", "{v}");
        assert_eq!(v["next_step"], "recover", "{v}");
    }
    // b comes back: its tasks are FAILED (the executor moved on); it
    // re-marks nothing and records nothing about them.
    hosts[1].start();
    hosts[1].await_sweeps(3);
    for t in ["b-1", "b-2"] {
        assert!(
            hosts[1].findings(t).is_empty(),
            "b judged {t} again: {:?}",
            hosts[1].findings(t)
        );
        let (st, err) = state(&mut db, t);
        assert_eq!(st, "FAILED");
        assert!(err.unwrap_or_default().starts_with("foreman: host_lost"));
    }
    // And the fleet view says b is back.
    let out = hosts[0]
        .world
        .foreman(&["twin", "--fleet", "--json"])
        .output()
        .expect("twin --fleet");
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    let b = v["hosts"]
        .as_array()
        .expect("hosts")
        .iter()
        .find(|h| h["host"] == "b")
        .expect("b in the fleet");
    assert_eq!(b["status"], "ok", "{v}");
    assert_eq!(v["state"], "OK", "{v}");
}

#[test]
fn a_postgres_restart_costs_sweeps_not_the_daemons() {
    let _lock = crate::spawning();
    if !Pg::available() {
        return;
    }
    let pg = Pg::start();
    let (_dir, url, mut hosts) = setup(&pg, &["a", "c"], |_, u| u.to_string());
    let mut pids = Vec::new();
    {
        let mut db = pg.client(&url);
        for h in hosts.iter_mut() {
            pids.push(h.live_task(&mut db, &format!("{}-1", h.name)));
        }
    }
    for h in hosts.iter_mut() {
        h.start();
    }
    {
        let mut db = pg.client(&url);
        wait_for("both in the fleet table", || fleet_rows(&mut db) == 2);
    }
    pg.restart();
    // Both carry on: each records a sweep that read the executor after
    // the restart (a snapshot_error sweep or two is the price).
    for h in hosts.iter_mut() {
        h.await_sweeps(3);
        assert!(
            h.running(),
            "{} died with PostgreSQL: {}",
            h.name,
            h.stderr()
        );
    }
    // And a death afterwards is marked, each by its own Foreman.
    for (h, pid) in hosts.iter_mut().zip(&pids) {
        h.world.kill(*pid);
    }
    let mut db = pg.client(&url);
    wait_for("both new deaths marked", || {
        ["a-1", "c-1"]
            .iter()
            .all(|t| state(&mut db, t).0 == "FAILED")
    });
    for h in &hosts {
        let f = h.findings(&format!("{}-1", h.name));
        assert!(
            f.iter().any(|(_, o)| o == "marked_failed"),
            "{}: {f:?}",
            h.name
        );
    }
    // The lock was lost with the connections and taken again by one.
    wait_for("a leader again", || leaders(&mut db).len() == 1);
}

#[test]
fn an_observer_cut_off_marks_nothing_and_the_fleet_does_not_fail_its_beating_tasks() {
    let _lock = crate::spawning();
    if !Pg::available() {
        return;
    }
    let pg = Pg::shared();
    let proxy = Proxy::to(pg);
    let (_dir, url, mut hosts) = setup(pg, &["a", "b", "c"], |name, u| {
        if name == "a" {
            proxy.url(u)
        } else {
            u.to_string()
        }
    });
    let mut db = pg.client(&url);
    let mut a_pid = 0;
    for h in hosts.iter_mut() {
        let pid = h.live_task(&mut db, &format!("{}-1", h.name));
        if h.name == "a" {
            a_pid = pid;
        }
    }
    for h in hosts.iter_mut() {
        h.start();
    }
    wait_for("three Foremen in the fleet table", || {
        fleet_rows(&mut db) == 3
    });
    proxy.cut();
    // a's workers still reach the database (their heartbeats go on); a
    // does not. Well past host_lost_after, nothing of a's is failed: its
    // host lives, only its Foreman is cut off.
    let until = Instant::now() + Duration::from_secs(LOST_AFTER_SECS * 2 + 1);
    while Instant::now() < until {
        beat(&mut db, &["a-1", "b-1", "c-1"]);
        hosts[1].await_sweeps(1);
    }
    for t in ["a-1", "b-1", "c-1"] {
        assert_eq!(state(&mut db, t).0, "RUNNING", "{t}");
    }
    for h in &hosts {
        let n = count_in(&h.world, "SELECT COUNT(*) FROM findings");
        assert_eq!(n, 0, "{} recorded findings while a was cut off", h.name);
    }
    assert!(
        hosts[0].running(),
        "a died of the partition: {}",
        hosts[0].stderr()
    );
    let errors = count_in(
        &hosts[0].world,
        "SELECT COUNT(*) FROM sweeps WHERE error LIKE 'snapshot_error%'",
    );
    assert!(
        errors > 0,
        "a's sweeps while cut off are snapshot_error sweeps"
    );
    // Healed: a carries on and marks a new death of its own.
    proxy.heal();
    hosts[0].world.kill(a_pid);
    wait_for("a marks its task after the partition", || {
        beat(&mut db, &["b-1", "c-1"]);
        state(&mut db, "a-1").0 == "FAILED"
    });
    let f = hosts[0].findings("a-1");
    assert!(
        f.iter().any(|(k, o)| k == "dead" && o == "marked_failed"),
        "{f:?}"
    );
}

#[test]
fn more_than_half_the_hosts_lost_at_once_fails_none_and_says_why() {
    let _lock = crate::spawning();
    if !Pg::available() {
        return;
    }
    let (dir, _url, mut hosts, mut db) = running_fleet(Pg::shared(), &["a", "b", "c"], &["1"]);
    hosts[1].kill9();
    hosts[2].kill9();
    // a is the only one left, so it leads; it sees two of three hosts lost.
    wait_until_or_panic(
        "a braked host_lost findings",
        Duration::from_secs(30),
        || {
            beat(&mut db, &["a-1"]);
            ["b-1", "c-1"].iter().all(|t| {
                hosts[0]
                    .findings(t)
                    .iter()
                    .any(|(k, o)| k == "host_lost" && o == "braked")
            })
        },
    );
    hosts[0].await_sweeps(3);
    for t in ["b-1", "c-1"] {
        assert_eq!(
            state(&mut db, t).0,
            "RUNNING",
            "{t} was failed through the fleet brake"
        );
        let f = hosts[0].findings(t);
        assert!(f.iter().all(|(_, o)| o == "braked"), "{f:?}");
    }
    let detail: String = hosts[0]
        .world
        .log()
        .query_row(
            "SELECT outcome_detail FROM findings WHERE kind = 'host_lost' ORDER BY id LIMIT 1",
            [],
            |r| r.get(0),
        )
        .expect("a braked finding's note");
    assert!(
        detail.contains("fleet brake: 2 of 3 known hosts look lost"),
        "{detail}"
    );
    // An alert says so.
    let alerts = dir.path().join("a-alerts.jsonl");
    wait_for("the braked alerts delivered", || {
        std::fs::read_to_string(&alerts).is_ok_and(|s| s.contains("fleet brake"))
    });
}

#[test]
fn two_hosts_with_one_name_stop_judging_and_say_why() {
    let _lock = crate::spawning();
    if !Pg::available() {
        return;
    }
    let pg = Pg::shared();
    let url = pg.create_db("fleet");
    pg.create_tasks_table(&url);
    let dir = tempfile::tempdir().expect("tempdir");
    // Two machines cloned with one foreman.toml: both say host "a".
    let mut one = Host::new("a", &url, dir.path());
    let mut two = Host::new("a", &url, &dir.path().join("."));
    let mut db = pg.client(&url);
    one.live_task(&mut db, "a-1");
    one.start();
    two.start();
    let said = "two hosts share one `host` name";
    for h in [&mut one, &mut two] {
        wait_until_or_panic("both refuse to judge", Duration::from_secs(30), || {
            assert!(h.running(), "{}", h.stderr());
            count_in(
                &h.world,
                &format!("SELECT COUNT(*) FROM sweeps WHERE error LIKE '%{said}%'"),
            ) > 0
        });
    }
    assert!(
        one.stderr().contains("another Foreman beats as this host")
            || two.stderr().contains("another Foreman beats as this host")
    );
    assert_eq!(state(&mut db, "a-1").0, "RUNNING");
}

#[test]
fn a_leader_that_crashes_between_record_and_mark_leaves_the_marking_to_the_next() {
    let _lock = crate::spawning();
    if !Pg::available() {
        return;
    }
    let pg = Pg::shared();
    let (_dir, url, mut hosts) = setup(pg, &["a", "b", "c"], |_, u| u.to_string());
    let mut db = pg.client(&url);
    for h in hosts.iter_mut() {
        h.live_task(&mut db, &format!("{}-1", h.name));
    }
    // a first, so that it leads; it will stop dead after recording its
    // host_lost findings and before marking.
    hosts[0].start_with(&[("FAILPOINTS", "fleet::before_act=panic")]);
    wait_for("a leads", || {
        leaders(&mut db) == vec!["foreman@a".to_string()]
    });
    hosts[1].start();
    hosts[2].start();
    wait_for("three Foremen in the fleet table", || {
        fleet_rows(&mut db) == 3
    });
    hosts[1].kill9();
    wait_until_or_panic(
        "a crashes at the failpoint",
        Duration::from_secs(30),
        || {
            beat(&mut db, &["a-1", "c-1"]);
            !hosts[0].running()
        },
    );
    let pending = count_in(
        &hosts[0].world,
        "SELECT COUNT(*) FROM findings WHERE kind = 'host_lost' AND outcome = 'pending'",
    );
    assert_eq!(
        pending, 1,
        "a recorded b-1 lost, then crashed before marking"
    );
    // c takes the lock and marks.
    wait_until_or_panic("c marks b-1", Duration::from_secs(30), || {
        beat(&mut db, &["a-1", "c-1"]);
        state(&mut db, "b-1").0 == "FAILED"
    });
    let (_, err) = state(&mut db, "b-1");
    assert!(
        err.as_deref()
            .is_some_and(|e| e.contains("judged by the Foreman of host \"c\"")),
        "{err:?}"
    );
    // a comes back (no failpoint): it does not lead, and settles its open
    // finding as the other's doing, with no second mark or `recover`.
    hosts[0].daemon = None;
    hosts[0].start();
    wait_until_or_panic(
        "a settles its open host_lost finding",
        Duration::from_secs(30),
        || {
            beat(&mut db, &["a-1", "c-1"]);
            hosts[0].findings("b-1") != vec![("host_lost".to_string(), "pending".to_string())]
        },
    );
    assert_eq!(
        hosts[0].findings("b-1"),
        vec![("host_lost".to_string(), "already_finished".to_string())]
    );
    assert_eq!(
        hosts[2].findings("b-1"),
        vec![("host_lost".to_string(), "marked_failed".to_string())]
    );
}
