//! Silences and maintenance windows through the real binary and the real
//! sweep: what they cover is recorded `silenced`, not marked, not alerted;
//! what they do not cover is acted on; ending a silence lets the next
//! sweep act; twin, `--list` and /healthz-facing JSON show them.

use crate::common::*;
use foreman::model::{Outcome, SweepKind};

const SINK: &str = "[[alerts]]\nname = \"pager\"\nkind = \"command\"\nargv = [\"true\"]\n";

fn dead(w: &mut World, id: &str, droid: &str) {
    let pid = w.spawn_exited(&["true"]);
    w.task(id)
        .droid(droid)
        .pid(pid.into())
        .started(before_boot())
        .insert();
}

fn foreman(w: &World, args: &[&str]) -> std::process::Output {
    w.foreman(args).output().expect("foreman")
}

#[test]
fn a_silenced_type_is_recorded_not_marked_nor_alerted_until_the_silence_ends() {
    let mut w = World::with(Cfg {
        tail: SINK,
        ..Cfg::default()
    });
    dead(&mut w, "quiet-dead", "quiet");
    dead(&mut w, "other-dead", "cruncher");
    // The log must exist for the command to write into it.
    let _ = w.sweep(SweepKind::Manual);
    // (both were just marked: add fresh ones after silencing)
    let out = foreman(
        &w,
        &[
            "silence",
            "--type",
            "quiet",
            "--for",
            "1h",
            "--reason",
            "deploy in progress",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.starts_with("silence #1: droid type \"quiet\" until "),
        "{said}"
    );
    dead(&mut w, "quiet-2", "quiet");
    dead(&mut w, "other-2", "cruncher");
    let r = w.sweep(SweepKind::Manual);
    let f = finding(&r, "quiet-2");
    assert_eq!(f.outcome, Outcome::Silenced, "{f:#?}");
    assert!(
        f.detail
            .as_deref()
            .unwrap_or("")
            .contains("deploy in progress"),
        "{f:#?}"
    );
    assert_eq!(w.task_state("quiet-2"), "RUNNING");
    assert_eq!(finding(&r, "other-2").outcome, Outcome::MarkedFailed);
    assert_eq!(w.task_state("other-2"), "FAILED");
    let alerts_for = |task: &str| {
        w.count(&format!(
            "SELECT COUNT(*) FROM alerts a JOIN findings f ON f.id = a.finding_id WHERE f.task_id = '{task}'"
        ))
    };
    assert_eq!(
        alerts_for("quiet-2"),
        0,
        "a silenced finding queues no alert"
    );
    assert_eq!(alerts_for("other-2"), 1);

    // Listed, and in twin.
    let list = String::from_utf8_lossy(&foreman(&w, &["silence", "--list"]).stdout).into_owned();
    assert!(
        list.contains("#1") && list.contains("quiet") && list.contains("deploy in progress"),
        "{list}"
    );
    let twin = foreman(&w, &["twin", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&twin.stdout).expect("twin json");
    assert_eq!(v["silences"][0]["scope"], "type", "{v:#}");
    assert_eq!(v["silences"][0]["value"], "quiet", "{v:#}");

    // Ended: the next sweep acts.
    assert!(foreman(&w, &["silence", "--clear", "1"]).status.success());
    let r = w.sweep(SweepKind::Manual);
    assert_eq!(finding(&r, "quiet-2").outcome, Outcome::MarkedFailed);
    assert_eq!(w.task_state("quiet-2"), "FAILED");
    assert_eq!(alerts_for("quiet-2"), 1);
    // Clearing it again is a usage error.
    assert_eq!(
        foreman(&w, &["silence", "--clear", "1"]).status.code(),
        Some(2)
    );
}

#[test]
fn task_and_host_silences_cover_what_they_name() {
    let mut w = World::new();
    let _ = w.sweep(SweepKind::Manual);
    assert!(
        foreman(&w, &["silence", "--task", "t-held", "--for", "10m"])
            .status
            .success()
    );
    dead(&mut w, "t-held", "quiet");
    dead(&mut w, "t-free", "quiet");
    let r = w.sweep(SweepKind::Manual);
    assert_eq!(finding(&r, "t-held").outcome, Outcome::Silenced);
    assert_eq!(finding(&r, "t-free").outcome, Outcome::MarkedFailed);
    assert!(foreman(&w, &["silence", "--host", HOST, "--for", "90"])
        .status
        .success());
    dead(&mut w, "t-host", "cruncher");
    let r = w.sweep(SweepKind::Manual);
    assert_eq!(finding(&r, "t-host").outcome, Outcome::Silenced);
    assert_eq!(w.task_state("t-host"), "RUNNING");
    assert!(foreman(&w, &["silence", "--clear-all"]).status.success());
    let r = w.sweep(SweepKind::Manual);
    assert_eq!(finding(&r, "t-host").outcome, Outcome::MarkedFailed);
    // Usage errors: no duration, two targets, a duration that is not one.
    for args in [
        &["silence", "--type", "quiet"][..],
        &["silence", "--type", "quiet", "--task", "x", "--for", "1h"],
        &["silence", "--type", "quiet", "--for", "soon"],
    ] {
        assert_eq!(foreman(&w, args).status.code(), Some(2), "{args:?}");
    }
}

#[test]
fn a_maintenance_window_in_force_holds_its_types_and_one_that_is_not_holds_nothing() {
    // Every minute for an hour: always open. Once a year for a second:
    // closed (unless the test runs on New Year's midnight).
    let tail = "[[maintenance]]\nschedule = \"0 * * * * *\"\nduration = \"1h\"\ndroid_types = [\"quiet\"]\nreason = \"nightly upgrade\"\n\
                [[maintenance]]\nschedule = \"0 0 0 1 1 *\"\nduration = \"1s\"\n";
    let mut w = World::with(Cfg {
        tail,
        ..Cfg::default()
    });
    dead(&mut w, "in-window", "quiet");
    dead(&mut w, "outside", "cruncher");
    let r = w.sweep(SweepKind::Manual);
    let f = finding(&r, "in-window");
    assert_eq!(f.outcome, Outcome::Silenced, "{f:#?}");
    assert!(
        f.detail
            .as_deref()
            .unwrap_or("")
            .contains("maintenance window"),
        "{f:#?}"
    );
    assert!(
        f.detail
            .as_deref()
            .unwrap_or("")
            .contains("nightly upgrade"),
        "{f:#?}"
    );
    assert_eq!(finding(&r, "outside").outcome, Outcome::MarkedFailed);
    let list =
        String::from_utf8_lossy(&foreman(&w, &["silence", "--list", "--json"]).stdout).into_owned();
    let v: serde_json::Value = serde_json::from_str(&list).expect("json");
    assert_eq!(v.as_array().map(Vec::len), Some(1), "{v:#}");
    assert_eq!(v[0]["scope"], "maintenance");
}
