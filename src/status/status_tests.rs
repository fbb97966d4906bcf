use super::page::{self, span, ThisSweep};
use super::*;
use crate::activity::StoredFinding;
use crate::twin::{Daemon, Failures, State};
use std::time::Duration;

fn config() -> Config {
    let text = r#"
interval = "5s"
[executor]
kind = "sqlite"
path = "executor.db"
[defaults]
timeout = "20s"
[droid_types.slow]
timeout = "10m"
"#;
    Config::parse(text, std::path::Path::new("/tmp/foreman.toml")).expect("config")
}

fn executing(
    task: &str,
    droid_type: &str,
    verdict: Kind,
    since_progress_ms: Option<i64>,
) -> Executing {
    Executing {
        task_id: task.into(),
        plan_id: Some("plan".into()),
        droid_type: droid_type.into(),
        pid: Some(42),
        age_ms: Some(1000),
        since_progress_ms,
        progress_signal: None,
        cpu_percent: None,
        rss_bytes: None,
        verdict,
        reason: "because".into(),
    }
}

#[test]
fn status_a_task_is_stale_only_past_half_its_timeout() {
    let c = config();
    // (droid type, since progress, stale): the default timeout is 20 s,
    // `slow`'s 10 min; exactly half is not stale, a millisecond past is.
    let table: &[(&str, Option<i64>, bool)] = &[
        ("builder", None, false),
        ("builder", Some(-5), false),
        ("builder", Some(0), false),
        ("builder", Some(10_000), false),
        ("builder", Some(10_001), true),
        ("builder", Some(i64::MAX), true),
        ("slow", Some(10_001), false),
        ("slow", Some(300_000), false),
        ("slow", Some(300_001), true),
    ];
    for (t, since, want) in table {
        let e = executing("t", t, Kind::Alive, *since);
        assert_eq!(stale(&e, &c), *want, "{t} {since:?}");
    }
}

#[test]
fn status_counts_per_type_put_each_task_in_one_column() {
    let c = config();
    let tasks = vec![
        executing("a", "builder", Kind::Alive, Some(1_000)),
        executing("b", "builder", Kind::Alive, Some(15_000)),
        executing("c", "builder", Kind::Hung, Some(25_000)),
        executing("d", "builder", Kind::TimedOut, Some(1_000)),
        executing("e", "builder", Kind::Dead, None),
        executing("f", "builder", Kind::Zombie, None),
        executing("g", "slow", Kind::Alive, Some(15_000)),
        executing("h", "<b>x</b>", Kind::Unverifiable, None),
    ];
    let rows = by_type(&tasks, &c);
    let get = |t: &str| rows.iter().find(|r| r.droid_type == t).cloned();
    assert_eq!(
        get("builder"),
        Some(TypeRow {
            droid_type: "builder".into(),
            running: 6,
            stale: 1,
            hung: 1,
            timed_out: 1,
            gone: 2,
        })
    );
    assert_eq!(get("slow").map(|r| (r.running, r.stale)), Some((1, 0)));
    assert_eq!(get("<b>x</b>").map(|r| (r.running, r.gone)), Some((1, 0)));
    // In type order, every task counted once.
    let names: Vec<&str> = rows.iter().map(|r| r.droid_type.as_str()).collect();
    assert_eq!(names, ["<b>x</b>", "builder", "slow"]);
    assert_eq!(rows.iter().map(|r| r.running).sum::<usize>(), tasks.len());
}

#[test]
fn status_spans_are_two_units_at_most() {
    for (secs, want) in [
        (0, "0s"),
        (59, "59s"),
        (60, "1m 0s"),
        (3599, "59m 59s"),
        (3600, "1h 0m"),
        (86_399, "23h 59m"),
        (86_400, "1d 0h"),
        (u64::MAX, "213503982334601d 7h"),
    ] {
        assert_eq!(span(secs), want, "{secs}");
    }
}

const HOSTILE: &str = "<script>document.title='pwned'</script>\"><img src=x onerror=alert(1)>&amp;";

fn hostile_status() -> Status {
    let now = Utc::now();
    let mut twin = Twin {
        state: State::Critical,
        reasons: vec![format!("task {HOSTILE} is dead")],
        generated_at: crate::activity::ts(now),
        proc_blindness: None,
        executing: vec![executing(HOSTILE, HOSTILE, Kind::Dead, Some(1))],
        executing_by_type: BTreeMap::new(),
        failures: Failures {
            window: "1h".into(),
            since: crate::activity::ts(now),
            count: 0,
            by_type: BTreeMap::new(),
            recent: Vec::new(),
            complete: true,
        },
        crashed: vec![crate::twin::Crashed {
            what: "task".into(),
            task_id: Some(HOSTILE.into()),
            droid_type: Some(HOSTILE.into()),
            pid: 7,
            kind: HOSTILE.into(),
            detail: HOSTILE.into(),
        }],
        daemon: Daemon {
            last_sweep_at: Some(crate::activity::ts(now)),
            last_sweep_findings: Some(1),
            stale: false,
            last_sweep_error: Some(HOSTILE.into()),
            deferral: None,
            last_review: None,
        },
        plans: vec![crate::monitor::MonitorView {
            plan_id: HOSTILE.into(),
            counts: Default::default(),
            health_score: 1.0,
            stalled: vec![HOSTILE.into()],
            is_complete: false,
            updated_at: now,
            completed_at: None,
        }],
        silences: vec![crate::silence::Hold {
            id: Some(1),
            scope: crate::silence::Scope::Task,
            value: HOSTILE.into(),
            reason: HOSTILE.into(),
            until: now,
        }],
    };
    twin.executing[0].plan_id = Some(HOSTILE.into());
    twin.executing[0].reason = HOSTILE.into();
    let c = config();
    Status {
        generated_at: now,
        types: by_type(&twin.executing, &c),
        twin,
        outbox: vec![SinkRow {
            sink: HOSTILE.into(),
            queued: 1,
            failing: 1,
            oldest_queued_at: Some(HOSTILE.into()),
            last_error: Some(HOSTILE.into()),
        }],
        wellbeing: Some(WellbeingRun {
            id: HOSTILE.into(),
            kind: "manual".into(),
            started_at: crate::activity::ts(now),
            outcome: "issues".into(),
            issues: 1,
            problems: vec![(HOSTILE.into(), HOSTILE.into())],
            initiative: Some(Initiative {
                id: 3,
                title: HOSTILE.into(),
                severity: HOSTILE.into(),
                created_at: HOSTILE.into(),
            }),
        }),
        review: Some(ReviewRun {
            id: HOSTILE.into(),
            kind: "sandbox".into(),
            started_at: HOSTILE.into(),
            passed: false,
            checks: vec![ReviewCheck {
                name: HOSTILE.into(),
                status: HOSTILE.into(),
                reason: HOSTILE.into(),
                duration_ms: 1,
            }],
        }),
        timeline: chart::fold(
            chart::window_start(now),
            chart::BUCKETS,
            [(Some(HOSTILE.to_string()), HOSTILE.to_string(), 23, 2)],
        ),
        latest: vec![finding(HOSTILE)],
        unread: vec![HOSTILE.into()],
    }
}

fn finding(task: &str) -> StoredFinding {
    StoredFinding {
        id: 17,
        task_id: task.into(),
        attempt: 1,
        kind: "dead".into(),
        droid_type: Some(task.into()),
        plan_id: Some(task.into()),
        pid: Some(5),
        host: Some(task.into()),
        evidence: serde_json::json!({ "reason": task }),
        action: "mark_failed".into(),
        outcome: "marked_failed".into(),
        detail: Some(task.into()),
        first_seen_at: crate::activity::ts(Utc::now()),
        last_seen_at: crate::activity::ts(Utc::now()),
        acted_at: None,
        times_seen: 1,
        first_sweep_id: 1,
        last_sweep_id: 1,
    }
}

/// Markup from the input would show as a tag or an attribute; escaped it
/// is text. The page's own one script tag is the only `<script`.
fn assert_inert(html: &str) {
    assert_eq!(
        html.matches("<script").count(),
        1,
        "only the page's own script: {html}"
    );
    assert!(html.contains("<script src=\"/assets/status.js\" defer>"));
    assert!(!html.contains("<img"), "{html}");
    // The quote that would close an attribute is an entity.
    assert!(html.contains("&quot;&gt;&lt;img"), "{html}");
    assert!(html.contains("&lt;script&gt;document.title='pwned'&lt;/script&gt;"));
    // One class attribute per element (a second is ignored by browsers).
    assert!(
        !regex::Regex::new(r#"class="[^"]*"\s+class="#)
            .expect("regex")
            .is_match(html),
        "{html}"
    );
    // The input's own entity is shown as typed, not decoded.
    assert!(html.contains("&amp;amp;"));
}

#[test]
fn status_every_executor_string_on_the_page_is_escaped() {
    let s = hostile_status();
    let live = ThisSweep {
        age: Some(Duration::from_secs(3)),
        summary: Some(HOSTILE.into()),
    };
    let html = page::index(&s, HOSTILE, &live, 15);
    assert_inert(&html);
    // Ids in attributes too.
    assert!(html.contains("data-task=\"&lt;script&gt;"), "{html}");
    assert!(html.contains("href=\"/findings/17\""));
    // No inline style or script for the CSP to forbid.
    assert!(!html.contains(" style="), "{html}");
    assert!(!html.contains("<style"), "{html}");
    assert!(!html.contains(" onclick="), "{html}");
}

#[test]
fn status_the_evidence_page_escapes_the_finding() {
    let e = crate::explain::Explanation {
        finding: finding(HOSTILE),
        inputs: None,
        signals: Vec::new(),
        alerts: Vec::new(),
        replay: None,
        config_fingerprint_now: "f".into(),
    };
    let text = crate::explain::text(&e);
    let html = page::finding(&e, &text, HOSTILE);
    assert_inert(&html);
    assert!(html.contains("<pre id=\"explain\">"), "{html}");
    assert!(html.contains("data-finding=\"17\""));
}

#[test]
fn status_long_lists_are_cut_and_say_so() {
    let mut s = hostile_status();
    let c = config();
    s.twin.executing = (0..(page::MAX_EXECUTING_ROWS + 30))
        .map(|i| executing(&format!("task-{i:04}"), "builder", Kind::Alive, Some(1)))
        .collect();
    // The last one needs a look: it is listed however far down it sorts.
    s.twin
        .executing
        .push(executing("zz-hung", "builder", Kind::Hung, Some(99_000)));
    s.types = by_type(&s.twin.executing, &c);
    let html = page::index(
        &s,
        "host",
        &ThisSweep {
            age: None,
            summary: None,
        },
        15,
    );
    assert_eq!(
        html.matches("<tr data-task=").count(),
        page::MAX_EXECUTING_ROWS
    );
    assert!(html.contains("data-task=\"zz-hung\""));
    assert!(html.contains("31 more alive task(s) not listed"), "{html}");
    assert!(html.contains(&format!(
        "<td class=\"num running\">{}</td>",
        page::MAX_EXECUTING_ROWS + 31
    )));
}

#[test]
fn status_the_refresh_period_is_asked_for_within_bounds() {
    for (query, want) in [
        (None, page::REFRESH_SECONDS),
        (Some(""), page::REFRESH_SECONDS),
        (Some("refresh=5"), 5),
        (Some("a=1&refresh=60"), 60),
        (Some("refresh=0"), 2),
        (Some("refresh=1"), 2),
        (Some("refresh=99999999"), 3600),
        (Some("refresh=-3"), page::REFRESH_SECONDS),
        (Some("refresh=abc&refresh=7"), 7),
        (Some("refresh=1e3"), page::REFRESH_SECONDS),
    ] {
        assert_eq!(page::refresh(query), want, "{query:?}");
    }
    let s = hostile_status();
    let live = ThisSweep {
        age: None,
        summary: None,
    };
    let html = page::index(&s, "h", &live, 7);
    assert!(html.contains("data-refresh=\"7\""));
    assert!(
        html.contains("<noscript><meta http-equiv=\"refresh\" content=\"7\"></noscript>"),
        "{html}"
    );
}

/// A hostile executor invents a droid type per task: the page's by-type
/// table grows with it (the executing table is cut at MAX_EXECUTING_ROWS
/// and the chart at MAX_TYPES, but not this one).
#[test]
fn status_attack_the_by_type_table_is_bounded_whatever_types_are_invented() {
    let mut s = hostile_status();
    let c = config();
    s.twin.executing = (0..5000)
        .map(|i| {
            executing(
                &format!("task-{i:05}"),
                &format!("type-{i:05}-{}", "t".repeat(200)),
                Kind::Alive,
                Some(1),
            )
        })
        .collect();
    s.types = by_type(&s.twin.executing, &c);
    let html = page::index(
        &s,
        "host",
        &ThisSweep {
            age: None,
            summary: None,
        },
        15,
    );
    let rows = html.matches("<tr data-type=").count();
    assert_eq!(
        rows,
        page::MAX_TYPE_ROWS - 1,
        "{} bytes of page",
        html.len()
    );
    // The rest in one row, every task still counted.
    assert!(html.contains("<tr class=\"other\"><td class=\"muted\">4951 other types</td><td class=\"num running\">4951</td>"), "{html}");
    // Names are cut: 200 tasks and 49 types of 211 characters each.
    assert!(html.len() < 400_000, "{} bytes of page", html.len());
    assert!(!html.contains(&"t".repeat(page::MAX_NAME_CHARS)));
}

/// Times a log row may hold that are not RFC 3339, or at chrono's edges:
/// shown as kept, never a panic; the far future is "in the future".
#[test]
fn status_attack_odd_times_render_without_panicking() {
    let mut s = hostile_status();
    let odd = [
        "garbage",
        "",
        "58000-01-01T00:00:00Z",
        "+262142-12-31T23:59:59Z",
        "-262143-01-01T00:00:00Z",
        "0001-01-01T00:00:00Z",
        "9999-12-31T23:59:59.999999999Z",
        "2026-13-45T99:99:99Z",
        "1970-01-01T00:00:00+23:59",
    ];
    s.latest = odd
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let mut f = finding(&format!("odd-{i}"));
            f.id = i as i64;
            f.first_seen_at = (*t).into();
            f.last_seen_at = (*t).into();
            f.acted_at = Some((*t).into());
            f.evidence = serde_json::Value::Null;
            f
        })
        .collect();
    if let Some(w) = s.wellbeing.as_mut() {
        w.started_at = "0001-01-01T00:00:00Z".into();
    }
    s.twin.daemon.last_sweep_at = Some("9999-12-31T23:59:59Z".into());
    let html = page::index(
        &s,
        "host",
        &ThisSweep {
            age: Some(Duration::MAX),
            summary: None,
        },
        15,
    );
    assert!(html.contains("in the future"), "{html}");
    for (i, _) in odd.iter().enumerate() {
        assert!(html.contains(&format!("data-finding=\"{i}\"")));
    }
    for f in &s.latest {
        let e = crate::explain::Explanation {
            finding: f.clone(),
            inputs: None,
            signals: Vec::new(),
            alerts: Vec::new(),
            replay: None,
            config_fingerprint_now: "f".into(),
        };
        let text = crate::explain::text(&e);
        let html = page::finding(&e, &text, "host");
        assert!(html.contains("<pre id=\"explain\">"));
    }
}

/// Controls and bidi overrides from the executor reach the page as they
/// are (HTML shows them as text); what must never happen is a character
/// that ends the text: NUL and the like must not cut the document.
#[test]
fn status_attack_controls_in_ids_do_not_cut_the_page() {
    let mut s = hostile_status();
    let c = config();
    let id = "a\0b\u{1b}[2J\u{202e}c\u{fffe}\r\n</td></tr></table>";
    s.twin.executing = vec![executing(id, id, Kind::Hung, Some(99_000))];
    s.types = by_type(&s.twin.executing, &c);
    let html = page::index(
        &s,
        "host",
        &ThisSweep {
            age: None,
            summary: None,
        },
        15,
    );
    assert!(html.ends_with("</html>"), "{html}");
    assert!(!html.contains("</td></tr></table>\""), "{html}");
    assert!(html.contains("&lt;/td&gt;&lt;/tr&gt;&lt;/table&gt;"));
}

#[test]
fn status_a_kept_wellbeing_check_names_its_subject_as_the_run_did() {
    for (kept, want) in [
        (
            serde_json::json!({"scope": "droid_type", "name": "builder"}),
            "droid type builder",
        ),
        (
            serde_json::json!({"scope": "plan", "name": "<b>p</b>"}),
            "plan <b>p</b>",
        ),
        (serde_json::json!({"scope": "foreman"}), "Foreman itself"),
        (serde_json::json!({"scope": "galaxy", "name": "x"}), "?"),
        (serde_json::json!("droid_type"), "?"),
        (serde_json::Value::Null, "?"),
    ] {
        assert_eq!(
            subject(&serde_json::json!({ "subject": kept })),
            want,
            "{kept}"
        );
    }
}
