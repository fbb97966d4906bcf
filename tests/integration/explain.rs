//! `foreman explain`: the kept inputs of `dead`, `hung` and `pid_reused`
//! findings re-derive their verdicts, and the command shows them.

use crate::common::*;
use foreman::activity::ActivityLog;
use foreman::explain;
use foreman::model::{Kind, Outcome, SweepKind};
use foreman::probe::Probe;

/// A world whose droid type `brief` tolerates a process starting 2s after
/// its task (a reused pid needs no hours-old task, which a freshly booted
/// host cannot have).
fn world() -> World {
    World::with(Cfg {
        tail: "[droid_types.brief]\npid_start_tolerance = \"2s\"\n",
        ..Cfg::default()
    })
}

/// A dead, a hung and a pid_reused finding, each acted on.
fn three_findings(w: &mut World) -> [(String, i64); 3] {
    let gone = w.spawn_exited(&["true"]);
    w.task("dead-1")
        .pid(gone.into())
        .started(before_boot())
        .insert();
    let hung = w.spawn(&["sleep", "300"]);
    let (started, beat) = started_and_beat(600, 300);
    w.task("hung-1")
        .droid("quiet")
        .pid(hung.into())
        .started(started)
        .heartbeat(beat)
        .insert();
    // Its task started (after this boot) at least ten seconds before the
    // process now holding the pid, past its droid type's 2s tolerance:
    // another process holds the pid now.
    let claimed = after_boot(3 * 3600);
    let other = w.spawn(&["sleep", "300"]);
    assert!(
        process_started_at(other) > claimed + chrono::Duration::seconds(5),
        "the process started well after the task"
    );
    w.task("reused-1")
        .droid("brief")
        .pid(other.into())
        .started(claimed)
        .heartbeat(after_boot(5))
        .insert();
    let first = w.sweep(SweepKind::Scheduled);
    // The reused pid waits out exit grace (1s) before it is acted on.
    wait_past(now() + chrono::Duration::milliseconds(1100));
    let second = w.sweep(SweepKind::Scheduled);
    let id = |r: &foreman::sweep::SweepReport, task: &str, kind: Kind| {
        let f = finding(r, task);
        assert_eq!(f.kind, kind, "{f:#?}");
        assert_eq!(f.outcome, Outcome::MarkedFailed, "{f:#?}");
        (task.to_string(), f.id.expect("finding id"))
    };
    [
        id(&first, "dead-1", Kind::Dead),
        id(&first, "hung-1", Kind::Hung),
        id(&second, "reused-1", Kind::PidReused),
    ]
}

#[test]
fn explain_rederives_dead_hung_and_pid_reused_verdicts_from_kept_inputs() {
    let mut w = world();
    let findings = three_findings(&mut w);
    let log = ActivityLog::open_read_only(&w.config.activity.path)
        .unwrap()
        .unwrap();
    for (task, id) in &findings {
        let e = explain::load(&log, *id, &w.config.fingerprint)
            .unwrap()
            .expect("the finding");
        assert_eq!(&e.finding.task_id, task);
        let inputs = e.inputs.as_ref().expect("inputs kept");
        assert_eq!(&inputs.task.id, task, "the snapshot row as read");
        assert_eq!(inputs.task.state, foreman::model::TaskState::Running);
        assert_eq!(inputs.config_fingerprint, w.config.fingerprint);
        let replay = e.replay.as_ref().expect("replayed");
        assert!(replay.same, "{task}: {replay:#?} vs {:#?}", e.finding);
        assert_eq!(replay.kind.as_str(), e.finding.kind);
        assert_eq!(
            Some(replay.reason.as_str()),
            e.finding.evidence["reason"].as_str()
        );
        match task.as_str() {
            "dead-1" => assert_eq!(inputs.probe, Some(Probe::Gone)),
            "hung-1" => {
                assert!(matches!(inputs.probe, Some(Probe::Found(_))));
                assert_eq!(inputs.policy.progress.len(), 1, "quiet: heartbeat only");
                // Terminated, then marked: the signals are part of the story.
                assert!(e.signals.iter().any(|s| s.signal == "SIGTERM"), "{e:#?}");
            }
            "reused-1" => {
                let started = inputs
                    .probe
                    .as_ref()
                    .and_then(|p| p.leader())
                    .map(|s| s.start_ticks);
                assert!(started.is_some(), "the probe shows the other process");
            }
            _ => unreachable!(),
        }
        let text = explain::text(&e);
        for want in [
            "Snapshot row as read",
            "Probe at",
            "Prior observation",
            "Policy in force",
            "the same verdict",
            &e.finding.kind,
        ] {
            assert!(text.contains(want), "{want:?} missing:\n{text}");
        }
    }
}

#[test]
fn explain_notices_a_verdict_it_would_not_reach_again() {
    let mut w = world();
    let [(_, dead), _, _] = three_findings(&mut w);
    // Tamper with the kept inputs: the probe now finds the process alive
    // and heartbeating, so the judge says alive, not dead.
    let log = w.log();
    let inputs: String = log
        .query_row("SELECT inputs FROM findings WHERE id = ?1", [dead], |r| {
            r.get(0)
        })
        .unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&inputs).unwrap();
    // After this boot, or the pre-boot rule would say dead again.
    v["task"]["started_at"] = serde_json::json!(rfc(after_boot(60)));
    v["task"]["last_progress_at"] = serde_json::json!(rfc(after_boot(1)));
    v["probe"] = serde_json::json!({"found": [{"stat": {"pid": v["task"]["pid"], "state": "S", "ppid": 1, "pgrp": 1, "cpu_ticks": 1, "start_ticks": 1}, "io_bytes": 1}]});
    v["prior"] = serde_json::Value::Null;
    v["task"]["pid_start_ticks"] = serde_json::json!(1);
    log.execute(
        "UPDATE findings SET inputs = ?2 WHERE id = ?1",
        rusqlite::params![dead, v.to_string()],
    )
    .unwrap();
    let ro = ActivityLog::open_read_only(&w.config.activity.path)
        .unwrap()
        .unwrap();
    let e = explain::load(&ro, dead, &w.config.fingerprint)
        .unwrap()
        .unwrap();
    let r = e.replay.as_ref().unwrap();
    assert!(!r.same, "{r:#?}");
    assert!(explain::text(&e).contains("A DIFFERENT VERDICT"));
}

#[test]
fn the_explain_command_shows_text_and_json_and_rejects_an_unknown_id() {
    use crate::cli::{before_boot, finding_of, insert_task, reaped_pid, run, World as Cli};
    let _g = crate::spawning();
    let w = Cli::new();
    w.config("");
    insert_task(
        &w.executor(),
        "gone-1",
        "builder",
        Some(reaped_pid()),
        &before_boot(),
        None,
    );
    let out = run(&mut w.foreman(&["sweep", "--json"]));
    assert_eq!(out.code, Some(0), "{out:#?}");
    let id = finding_of(&out.json(), "gone-1")["id"]
        .as_i64()
        .expect("id");

    let out = run(&mut w.foreman(&["explain", &id.to_string()]));
    assert_eq!(out.code, Some(0), "{out:#?}");
    assert!(
        out.stdout.contains(&format!("Finding {id}: task gone-1")),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("the same verdict"), "{}", out.stdout);
    assert!(
        out.stdout.contains("the pid does not exist"),
        "{}",
        out.stdout
    );

    let out = run(&mut w.foreman(&["explain", &id.to_string(), "--json"]));
    assert_eq!(out.code, Some(0), "{out:#?}");
    let v = out.json();
    assert_eq!(v["finding"]["id"], id);
    assert_eq!(v["finding"]["kind"], "dead");
    assert_eq!(v["inputs"]["task"]["id"], "gone-1");
    assert_eq!(v["inputs"]["probe"], "gone");
    assert_eq!(v["replay"]["same"], true);
    assert_eq!(v["replay"]["kind"], "dead");

    let out = run(&mut w.foreman(&["explain", "999999"]));
    assert_eq!(out.code, Some(2), "{out:#?}");
    assert!(out.stderr.contains("no finding 999999"), "{}", out.stderr);
}
