//! Property tests over every parser fed from outside Foreman (issue 15,
//! "Proof"): pushed events (`POST /events`), `/proc` text (stat, io,
//! pid_max, mountinfo and status as `blindness` reads them), the command
//! executor's JSON snapshot, timestamps, and `foreman.toml`. Nothing may
//! panic; what parses keeps its invariants; what is kept is bounded by what
//! was given.

use crate::config::{Config, ConfigError, ExecutorTz};
use crate::executor::command::CommandExecutor;
use crate::executor::{parse_enabled, parse_row, parse_time, Executor};
use crate::model::Row;
use crate::monitor::event::{parse_batch, Event, EventType};
use crate::probe::{
    blindness, parse_io, parse_pid_max, parse_stat, BlindnessOptions, ProcView, Stat,
    INIT_PID_NS_INODE,
};
use chrono::{DateTime, Datelike, FixedOffset, TimeZone, Utc};
use proptest::prelude::*;
use serde_json::{json, Map, Value};
use std::path::Path;
use std::time::Duration;

/// `cases` per property, times `PARSERS_PROPTEST_SCALE` when set (a
/// longer hunt: `PARSERS_PROPTEST_SCALE=20 cargo test … parsers_properties`).
fn config(cases: u32) -> ProptestConfig {
    let scale = std::env::var("PARSERS_PROPTEST_SCALE")
        .ok()
        .and_then(|s| s.parse::<u32>().ok())
        .unwrap_or(1)
        .max(1);
    ProptestConfig {
        cases: cases.saturating_mul(scale),
        // Shrinking a failure is worth more than a fast one here.
        max_shrink_iters: 2000,
        // No proptest-regressions/ file in the tree: a failure prints its
        // minimal input, which belongs in a unit test.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, 10, 0, 0)
        .single()
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

// ------------------------------------------------------------ JSON values

/// Keys a parser looks for, and some it does not.
fn json_key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(vec![
            "type", "task_id", "plan_id", "droid_type", "attempt", "at", "id", "state", "pid",
            "host", "started_at", "last_progress_at", "finished_at", "error",
            "pid_start_ticks", "created_at", "tasks", "droid_types", "name", "enabled",
        ])
        .prop_map(str::to_string),
        1 => ".{0,12}",
    ]
}

fn json_number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        prop::sample::select(vec![0i64, 1, 2, -1, i64::MAX, i64::MIN, i32::MAX as i64])
            .prop_map(|n| json!(n)),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
    ]
}

fn json_string() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => ".{0,24}",
        1 => prop::sample::select(vec![
            "", "RUNNING", "PENDING", "SUCCESS", "FAILED", "SKIPPED", "TASK_STARTED",
            "PLAN_COMPLETED", "2026-11-23T06:00:00Z", "2026-11-23 06:00:00", "1795413600",
            "1e400", "NaN", "-inf", "true", "yes",
        ])
        .prop_map(str::to_string),
        1 => (0usize..3000, any::<char>()).prop_map(|(n, c)| c.to_string().repeat(n)),
    ]
}

/// Any JSON value, nested a few levels.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        json_number(),
        json_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((json_key(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// `depth` arrays inside each other, as text: past serde_json's recursion
/// limit (128) it must refuse, not overflow the stack.
fn nested(depth: usize, inner: &str) -> String {
    format!("{}{inner}{}", "[".repeat(depth), "]".repeat(depth))
}

/// Every byte of a string value kept from `v`.
fn string_bytes(v: &Value) -> usize {
    match v {
        Value::String(s) => s.len(),
        Value::Array(a) => a.iter().map(string_bytes).sum(),
        Value::Object(m) => m.iter().map(|(k, v)| k.len() + string_bytes(v)).sum(),
        _ => 0,
    }
}

// ------------------------------------------------------------ pushed events

const EVENT_NAMES: [&str; 6] = [
    "TASK_STARTED",
    "TASK_COMPLETED",
    "TASK_FAILED",
    "TASK_RETRIED",
    "TASK_SKIPPED",
    "PLAN_COMPLETED",
];

/// What every accepted event promises (event.rs `check`).
fn assert_valid_event(e: &Event) {
    for (key, v) in [
        ("task_id", &e.task_id),
        ("plan_id", &e.plan_id),
        ("droid_type", &e.droid_type),
    ] {
        if let Some(v) = v {
            assert!(
                (1..=256).contains(&v.len()),
                "{key} of {} bytes accepted",
                v.len()
            );
        }
    }
    match e.kind {
        EventType::PlanCompleted => {
            assert!(e.plan_id.is_some(), "PLAN_COMPLETED without plan_id: {e:?}");
            assert!(e.task_id.is_none(), "PLAN_COMPLETED with task_id: {e:?}");
            assert!(e.attempt >= 0, "{e:?}");
        }
        EventType::TaskRetried => {
            assert!(e.task_id.is_some(), "{e:?}");
            assert!(e.attempt >= 2, "TASK_RETRIED at attempt {}", e.attempt);
        }
        _ => {
            assert!(e.task_id.is_some(), "{e:?}");
            assert!(e.attempt >= 1, "{e:?}");
        }
    }
    let key = e.dedupe_key();
    assert!(key.len() <= 300, "dedupe key of {} bytes", key.len());
}

/// `parse_batch` on `body`: no panic, every event valid, and what it keeps
/// bounded by the body (the shortest acceptable event is
/// `{"type":"PLAN_COMPLETED","plan_id":"p"}`, 39 bytes).
fn check_body(body: &[u8]) -> Result<Vec<Event>, String> {
    let got = parse_batch(body, now());
    match &got {
        Ok(events) => {
            assert!(
                events.len() * 39 <= body.len(),
                "{} events from {} bytes",
                events.len(),
                body.len()
            );
            let kept: usize = events
                .iter()
                .map(|e| {
                    [&e.task_id, &e.plan_id, &e.droid_type]
                        .iter()
                        .map(|s| s.as_ref().map_or(0, String::len))
                        .sum::<usize>()
                })
                .sum();
            assert!(kept <= body.len(), "{kept} bytes kept from {}", body.len());
            events.iter().for_each(assert_valid_event);
        }
        Err(e) => {
            assert!(!e.is_empty());
            // The refusal quotes what it refuses (an unknown type, a bad
            // time): never more than the body and a sentence.
            assert!(
                e.len() <= 10 * body.len() + 512,
                "a {}-byte refusal of a {}-byte body",
                e.len(),
                body.len()
            );
        }
    }
    got
}

/// A value for an id field: absent, fine, at and past the 256-byte limit,
/// huge, or not a string at all.
fn id_field() -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        2 => Just(None),
        4 => "[a-z0-9-]{1,16}".prop_map(|s| Some(Value::String(s))),
        1 => prop::sample::select(vec![0usize, 1, 255, 256, 257, 100_000])
            .prop_map(|n| Some(Value::String("é".repeat(n / 2) + &"x".repeat(n % 2)))),
        1 => any_json().prop_map(Some),
    ]
}

fn attempt_field() -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        1 => Just(None),
        3 => (1i64..5).prop_map(|n| Some(json!(n))),
        2 => json_number().prop_map(Some),
        1 => any_json().prop_map(Some),
    ]
}

fn at_field() -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        2 => Just(None),
        2 => rfc3339_like().prop_map(|s| Some(Value::String(s))),
        1 => any_json().prop_map(Some),
    ]
}

/// An event object close to a real one, with absurd fields.
fn plausible_event() -> impl Strategy<Value = Value> {
    (
        prop_oneof![
            4 => prop::sample::select(EVENT_NAMES.to_vec()).prop_map(|s| json!(s)),
            1 => prop::sample::select(EVENT_NAMES.to_vec())
                .prop_map(|s| json!(s.to_ascii_lowercase())),
            1 => any_json(),
        ],
        id_field(),
        id_field(),
        id_field(),
        attempt_field(),
        at_field(),
        prop::option::weighted(0.1, (json_key(), any_json())),
    )
        .prop_map(|(kind, task, plan, droid, attempt, at, extra)| {
            let mut m = Map::new();
            m.insert("type".into(), kind);
            for (k, v) in [
                ("task_id", task),
                ("plan_id", plan),
                ("droid_type", droid),
                ("attempt", attempt),
                ("at", at),
            ] {
                if let Some(v) = v {
                    m.insert(k.into(), v);
                }
            }
            if let Some((k, v)) = extra {
                m.insert(k, v);
            }
            Value::Object(m)
        })
}

/// A valid event, with the JSON that says it.
fn valid_event() -> impl Strategy<Value = (Event, Value)> {
    (
        prop::sample::select(EventType::ALL.to_vec()),
        ".{1,40}",
        prop::option::of("[a-zA-Z0-9_.:-]{1,256}"),
        prop::option::of("[a-z]{1,12}"),
        prop_oneof![Just(None), (1i64..=i64::MAX).prop_map(Some)],
        prop::option::of(any_instant()),
    )
        .prop_map(|(kind, id, plan, droid, attempt, at)| {
            let plan_event = kind == EventType::PlanCompleted;
            let attempt = match (kind, attempt) {
                (EventType::TaskRetried, a) => a.unwrap_or(2).max(2),
                (EventType::PlanCompleted, a) => a.unwrap_or(0),
                (_, a) => a.unwrap_or(1),
            };
            let e = Event {
                kind,
                task_id: (!plan_event).then_some(id.clone()),
                plan_id: if plan_event { plan.or(Some(id)) } else { plan },
                droid_type: droid,
                attempt,
                at: at.unwrap_or_else(now),
            };
            let mut m = Map::new();
            m.insert("type".into(), json!(kind.as_str()));
            for (k, v) in [
                ("task_id", &e.task_id),
                ("plan_id", &e.plan_id),
                ("droid_type", &e.droid_type),
            ] {
                if let Some(v) = v {
                    m.insert(k.into(), json!(v));
                }
            }
            if attempt != 0 {
                m.insert("attempt".into(), json!(attempt));
            }
            if let Some(at) = at {
                m.insert(
                    "at".into(),
                    json!(at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)),
                );
            }
            (e, Value::Object(m))
        })
}

/// JSON-looking bytes: fragments a parser trips on, glued together.
fn jsonish_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![
            prop::sample::select(vec![
                "{",
                "}",
                "[",
                "]",
                ",",
                ":",
                "\"",
                "\\",
                "\\u",
                "\\ud800",
                "\"type\"",
                "\"TASK_STARTED\"",
                "\"PLAN_COMPLETED\"",
                "\"task_id\"",
                "\"plan_id\"",
                "\"attempt\"",
                "\"at\"",
                "1",
                "-1",
                "1e999",
                "0.5",
                "null",
                "true",
                " ",
                "\u{feff}",
                "\u{0}",
                "\"2026-11-23T10:00:00Z\"",
            ])
            .prop_map(|s| s.as_bytes().to_vec()),
            prop::collection::vec(any::<u8>(), 0..4),
        ],
        0..64,
    )
    .prop_map(|parts| parts.concat())
}

proptest! {
    #![proptest_config(config(2500))]

    #[test]
    fn events_from_arbitrary_bytes(body in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = check_body(&body);
    }

    #[test]
    fn events_from_jsonish_bytes(body in jsonish_bytes()) {
        let _ = check_body(&body);
    }

    #[test]
    fn events_from_arbitrary_json(v in any_json()) {
        let body = serde_json::to_vec(&v).unwrap_or_default();
        let _ = check_body(&body);
    }

}

proptest! {
    #![proptest_config(config(800))]

    #[test]
    fn plausible_events_with_absurd_fields(
        events in prop::collection::vec(plausible_event(), 0..6),
        single in any::<bool>(),
    ) {
        let body = match (single, events.first()) {
            (true, Some(e)) => serde_json::to_vec(e),
            _ => serde_json::to_vec(&events),
        }
        .unwrap_or_default();
        if let Ok(got) = check_body(&body) {
            // All or nothing: a batch is taken whole.
            let want = if single && !events.is_empty() { 1 } else { events.len() };
            prop_assert_eq!(got.len(), want);
        }
    }

    #[test]
    fn valid_events_are_taken_as_sent(
        events in prop::collection::vec(valid_event(), 0..8),
        pretty in any::<bool>(),
    ) {
        let values: Vec<Value> = events.iter().map(|(_, v)| v.clone()).collect();
        let body = if pretty {
            serde_json::to_vec_pretty(&values)
        } else {
            serde_json::to_vec(&values)
        }
        .unwrap_or_default();
        let got = check_body(&body).map_err(|e| TestCaseError::fail(format!("{e}: {}", String::from_utf8_lossy(&body))))?;
        let want: Vec<Event> = events.into_iter().map(|(e, _)| e).collect();
        prop_assert_eq!(got, want);
    }
}

proptest! {
    #![proptest_config(config(500))]

    /// An accepted event's `at`, as the activity log writes it
    /// (`activity::ts`), reads back (`activity::parse_ts`). Fails today: RFC
    /// 3339 with an offset reaches past 0000..=9999 in UTC, e.g.
    /// "9999-12-31T23:59:59-23:59" is written "+10000-01-01T23:58:59.000Z"
    /// and "0000-01-01T00:00:00+23:59" "-0001-12-31T00:01:00.000Z", which
    /// parse_ts refuses; event.rs now bounds `at` to 1970..=9999 as
    /// executor::parse_time bounds snapshot times.
    #[test]
    fn pushed_at_reads_back_from_the_activity_log(at in prop_oneof![
        rfc3339_like(),
        // The first and last day of RFC 3339, with any offset.
        (any::<bool>(), 0u32..24, 0u32..60, -1439i32..=1439).prop_map(|(last, h, m, off)| {
            let day = if last { "9999-12-31" } else { "0000-01-01" };
            let sign = if off < 0 { '-' } else { '+' };
            let off = off.unsigned_abs();
            format!("{day}T{h:02}:{m:02}:00{sign}{:02}:{:02}", off / 60, off % 60)
        }),
    ]) {
        let body = format!(r#"{{"type":"TASK_STARTED","task_id":"a","attempt":1,"at":"{at}"}}"#);
        if let Ok(events) = check_body(body.as_bytes()) {
            let written = crate::activity::ts(events[0].at);
            let back = crate::activity::parse_ts(&written).map_err(|e| TestCaseError::fail(format!("{at}: {e}")))?;
            prop_assert_eq!(back.timestamp_millis(), events[0].at.timestamp_millis());
        }
    }
}

proptest! {
    #![proptest_config(config(200))]

    /// Nesting past any sane depth, at the top and inside a field.
    #[test]
    fn deep_nesting_is_refused(depth in 0usize..20_000, inside in any::<bool>()) {
        let body = if inside {
            format!(r#"{{"type":"TASK_STARTED","task_id":{},"attempt":1}}"#, nested(depth, "\"a\""))
        } else {
            nested(depth, "{}")
        };
        let got = check_body(body.as_bytes());
        if depth > 128 {
            prop_assert!(got.is_err());
        }
    }
}

proptest! {
    #![proptest_config(config(6))]

    /// Batches as large as the default body limit (1 MiB) holds.
    #[test]
    fn huge_batches_within_the_body_limit(n in 0usize..26_000, task in any::<bool>()) {
        let one = if task {
            r#"{"type":"TASK_FAILED","task_id":"t","attempt":3}"#
        } else {
            r#"{"type":"PLAN_COMPLETED","plan_id":"p"}"#
        };
        let body = format!("[{}]", vec![one; n].join(","));
        prop_assert!(body.len() <= 1 << 20 || task);
        let got = check_body(body.as_bytes()).map_err(TestCaseError::fail)?;
        prop_assert_eq!(got.len(), n);
    }
}

// ------------------------------------------------------------ /proc text

/// A `/proc/PID/stat` line with these fields (52 fields, as Linux 6 writes).
fn stat_line(s: &Stat, comm: &str, utime: u64, stime: u64) -> String {
    let mut f: Vec<String> = vec![s.state.to_string(), s.ppid.to_string(), s.pgrp.to_string()];
    f.extend(["0", "-1", "4194560", "100", "0", "0", "0", "0"].map(String::from));
    f.push(utime.to_string());
    f.push(stime.to_string());
    f.extend(["0", "0", "20", "0"].map(String::from));
    f.push(s.threads.to_string());
    f.push("0".into());
    f.push(s.start_ticks.to_string());
    f.extend(std::iter::repeat_n("0".to_string(), 52 - 22));
    format!("{} ({comm}) {}\n", s.pid, f.join(" "))
}

fn any_stat() -> impl Strategy<Value = (Stat, String, u64, u64)> {
    (
        any::<i32>(),
        // The state: one character, never `)` (the end of comm is the last `)`).
        any::<char>().prop_filter("a field", |c| !c.is_whitespace() && *c != ')'),
        any::<i32>(),
        any::<i32>(),
        any::<u64>(),
        any::<u64>(),
        any::<u32>(),
        any::<u64>(),
        // comm: up to 15 bytes in the kernel, anything at all here.
        prop_oneof![
            "[^\n]{0,15}",
            ".{0,64}",
            Just(") (".to_string()),
            Just("a) R 1 1 (b".to_string())
        ],
    )
        .prop_map(
            |(pid, state, ppid, pgrp, utime, stime, threads, start, comm)| {
                let s = Stat {
                    pid,
                    state,
                    ppid,
                    pgrp,
                    cpu_ticks: utime.saturating_add(stime),
                    start_ticks: start,
                    threads,
                };
                (s, comm, utime, stime)
            },
        )
}

/// Edits an attacker (or a racing kernel) could make to a line.
#[derive(Debug, Clone)]
enum Edit {
    Truncate(usize),
    Insert(usize, String),
    Delete(usize, usize),
    Replace(usize, String),
}

fn edits() -> impl Strategy<Value = Vec<Edit>> {
    let text = prop_oneof![
        ".{0,8}",
        Just(")".to_string()),
        Just("(".to_string()),
        Just(" ".to_string()),
        Just("\n".to_string()),
        Just("-".to_string()),
        Just("18446744073709551616".to_string()),
        Just("rchar:".to_string()),
        Just("wchar:".to_string()),
    ];
    prop::collection::vec(
        prop_oneof![
            any::<usize>().prop_map(Edit::Truncate),
            (any::<usize>(), text.clone()).prop_map(|(i, s)| Edit::Insert(i, s)),
            (any::<usize>(), 0usize..16).prop_map(|(i, n)| Edit::Delete(i, n)),
            (any::<usize>(), text).prop_map(|(i, s)| Edit::Replace(i, s)),
        ],
        1..4,
    )
}

/// Apply edits at char boundaries (positions taken modulo the length).
fn apply(text: &str, edits: &[Edit]) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for e in edits {
        let at = |i: usize, len: usize| if len == 0 { 0 } else { i % (len + 1) };
        match e {
            Edit::Truncate(i) => {
                let n = at(*i, chars.len());
                chars.truncate(n);
            }
            Edit::Insert(i, s) => {
                let n = at(*i, chars.len());
                chars.splice(n..n, s.chars());
            }
            Edit::Delete(i, k) => {
                let n = at(*i, chars.len());
                let end = (n + k).min(chars.len());
                chars.drain(n..end);
            }
            Edit::Replace(i, s) => {
                let n = at(*i, chars.len());
                let end = (n + s.chars().count()).min(chars.len());
                chars.splice(n..end, s.chars());
            }
        }
    }
    chars.into_iter().collect()
}

fn io_text(rchar: u64, wchar: u64, others: &[(String, u64)], order: bool) -> String {
    let mut lines: Vec<String> = others.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    let (a, b) = (format!("rchar: {rchar}"), format!("wchar: {wchar}"));
    if order {
        lines.insert(0, a);
        lines.insert(1, b);
    } else {
        lines.push(b);
        lines.push(a);
    }
    lines.join("\n") + "\n"
}

fn io_others() -> impl Strategy<Value = Vec<(String, u64)>> {
    prop::collection::vec(
        (
            prop::sample::select(vec![
                "syscr",
                "syscw",
                "read_bytes",
                "write_bytes",
                "cancelled_write_bytes",
            ])
            .prop_map(str::to_string),
            any::<u64>(),
        ),
        0..5,
    )
}

proptest! {
    #![proptest_config(config(3000))]

    #[test]
    fn stat_round_trips((s, comm, utime, stime) in any_stat()) {
        let line = stat_line(&s, &comm, utime, stime);
        prop_assert_eq!(parse_stat(&line), Some(s), "{:?}", line);
    }

    #[test]
    fn stat_of_arbitrary_text_never_panics(text in ".{0,256}") {
        let _ = parse_stat(&text);
    }

    #[test]
    fn stat_of_mutated_lines_never_panics((s, comm, utime, stime) in any_stat(), edits in edits()) {
        let line = apply(&stat_line(&s, &comm, utime, stime), &edits);
        if let Some(got) = parse_stat(&line) {
            // Whatever it read, it read from this line.
            // (digits only: "-007" reads as -7)
            prop_assert!(line.contains(&got.pid.unsigned_abs().to_string()));
            prop_assert!(line.contains(&got.start_ticks.to_string()));
        }
    }

    /// Counters whose sum fits (see `io_sum_never_overflows` for the rest).
    #[test]
    fn io_round_trips(
        rchar in any::<u64>(),
        wchar in any::<u64>(),
        others in io_others(),
        order in any::<bool>(),
    ) {
        let wchar = wchar.min(u64::MAX - rchar);
        let text = io_text(rchar, wchar, &others, order);
        prop_assert_eq!(parse_io(&text), Some(rchar + wchar));
    }

    #[test]
    fn io_of_arbitrary_text_never_panics(text in "((rchar|wchar|syscr): ?[0-9]{0,5}\n|.{0,12}\n?){0,6}") {
        let _ = parse_io(&text);
    }

    #[test]
    fn io_of_mutated_text_never_panics(
        rchar in 0u64..1 << 62,
        wchar in 0u64..1 << 62,
        others in io_others(),
        edits in edits(),
    ) {
        let text = apply(&io_text(rchar, wchar, &others, true), &edits);
        // Edits may grow a counter: keep clear of the overflow reported in
        // `io_sum_never_overflows` (the same reading as parse_io's).
        let (mut r, mut w) = (None, None);
        for line in text.lines() {
            if let Some(v) = line.strip_prefix("rchar:") {
                r = v.trim().parse::<u64>().ok();
            } else if let Some(v) = line.strip_prefix("wchar:") {
                w = v.trim().parse::<u64>().ok();
            }
        }
        prop_assume!(r.zip(w).is_none_or(|(r, w)| r.checked_add(w).is_some()));
        prop_assert_eq!(parse_io(&text), r.zip(w).map(|(r, w)| r + w));
    }

    #[test]
    fn pid_max_round_trips(n in any::<i32>(), pad in "[ \t\n]{0,3}") {
        let got = parse_pid_max(&format!("{pad}{n}{pad}"));
        prop_assert_eq!(got, (n > 0).then_some(n));
    }

    #[test]
    fn pid_max_of_arbitrary_text_never_panics(text in ".{0,32}") {
        if let Some(n) = parse_pid_max(&text) {
            prop_assert!(n > 0);
        }
    }
}

proptest! {
    #![proptest_config(config(1000))]

    /// `/proc/PID/io` whose counters sum past u64 (a forged or corrupt
    /// file): must not panic (the sum saturates).
    #[test]
    fn io_sum_never_overflows(rchar in any::<u64>(), wchar in any::<u64>()) {
        let got = parse_io(&io_text(rchar, wchar, &[], true));
        prop_assert!(got.is_none_or(|n| n >= rchar.max(wchar)));
    }
}

// ------------------------------------------------------------ mountinfo and status

/// mountinfo's escaping of a mount point (space, tab, newline, backslash).
fn escape_mountinfo(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        match c {
            ' ' | '\t' | '\n' | '\\' => out.push_str(&format!("\\{:03o}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

fn mountinfo_line(id: u32, point: &str, fstype: &str, super_options: &str) -> String {
    format!(
        "{id} 1 0:{id} / {} rw,nosuid,nodev,noexec,relatime shared:{id} - {fstype} {fstype} {super_options}",
        escape_mountinfo(point)
    )
}

fn status_text(cap_eff: u64, fsgid: u32, groups: &[u32]) -> String {
    let groups: Vec<String> = groups.iter().map(u32::to_string).collect();
    format!(
        "Name:\tforeman\nUmask:\t0022\nState:\tS (sleeping)\nPid:\t4242\nUid:\t998\t998\t998\t998\nGid:\t997\t997\t997\t{fsgid}\nGroups:\t{}\nCapInh:\t0000000000000000\nCapPrm:\t{cap_eff:016x}\nCapEff:\t{cap_eff:016x}\n",
        groups.join(" ")
    )
}

fn view(mount_point: &str, mountinfo: String, status: String) -> ProcView {
    ProcView {
        mount_point: mount_point.to_string(),
        mountinfo: Ok(mountinfo),
        status: Ok(status),
        pid1: Ok(()),
        self_link: Ok("4242".into()),
        pid: 4242,
        pid_ns: Ok(Some(INIT_PID_NS_INODE)),
    }
}

fn text_or_error() -> impl Strategy<Value = Result<String, String>> {
    prop_oneof![
        4 => prop::collection::vec(
            prop_oneof![
                prop::sample::select(vec![
                    " ", "-", "\n", ",", "=", ":", "/", "\\", "\\040", "\\777", "\\0", "proc",
                    "/proc", "hidepid=", "gid=", "invisible", "CapEff:", "Gid:", "Groups:", "\t",
                    "ffffffffffffffff", "80000", "4026531836",
                ])
                .prop_map(str::to_string),
                "[0-9a-z]{0,6}",
                ".{0,3}",
            ],
            0..48,
        )
        .prop_map(|parts| parts.concat())
        .prop_map(Ok),
        1 => ".{0,20}".prop_map(Err),
    ]
}

/// A mount point a real system could have, spaces and backslashes included.
fn mount_point() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => Just("/proc".to_string()),
        1 => "/[a-z \\\\\t]{1,12}(/[a-z é]{1,8}){0,2}",
    ]
}

proptest! {
    #![proptest_config(config(600))]

    #[test]
    fn blindness_of_arbitrary_facts_never_panics(
        mount_point in ".{0,16}",
        mountinfo in text_or_error(),
        status in text_or_error(),
        pid1 in any::<bool>(),
        self_link in text_or_error(),
        pid in any::<i32>(),
        pid_ns in prop_oneof![Just(Ok(None)), any::<u64>().prop_map(|n| Ok(Some(n))), ".{0,8}".prop_map(Err)],
        shared in any::<bool>(),
    ) {
        let v = ProcView {
            mount_point,
            mountinfo,
            status,
            pid1: if pid1 { Ok(()) } else { Err("gone".into()) },
            self_link,
            pid,
            pid_ns,
        };
        let _ = v.mount();
        if let Some(reason) = blindness(&v, BlindnessOptions { shared_pid_namespace: shared }) {
            prop_assert!(!reason.is_empty());
        }
    }

}

proptest! {
    #![proptest_config(config(2000))]

    /// Real-looking mountinfo lines and status files, then mutated.
    #[test]
    fn blindness_of_mutated_lines_never_panics(
        point in mount_point(),
        options in "(rw|hidepid=[0-9a-z]{0,10}|gid=[0-9]{0,12}|subset=pid)(,(rw|hidepid=[0-9a-z]{0,10}|gid=[0-9]{0,12})){0,3}",
        cap in any::<u64>(),
        fsgid in any::<u32>(),
        groups in prop::collection::vec(any::<u32>(), 0..4),
        edit_mounts in edits(),
        edit_status in edits(),
    ) {
        let mountinfo = apply(&mountinfo_line(22, &point, "proc", &options), &edit_mounts);
        let status = apply(&status_text(cap, fsgid, &groups), &edit_status);
        let _ = blindness(&view(&point, mountinfo, status), BlindnessOptions::default());
    }

    /// A well-formed line is read back: its mount point unescaped, its type
    /// and super options as written; the last mount on a point wins.
    #[test]
    fn mountinfo_round_trips(
        point in mount_point(),
        fstype in "[a-z0-9]{1,10}",
        options in "[a-z0-9=,]{0,24}",
        other_point in mount_point(),
    ) {
        let text = [
            mountinfo_line(20, &point, "tmpfs", "rw"),
            mountinfo_line(21, &other_point, "ext4", "rw"),
            mountinfo_line(22, &point, &fstype, &options),
        ]
        .join("\n");
        let v = view(&point, text, status_text(0, 0, &[]));
        let got = v.mount();
        // The last line naming the point wins, whatever came before.
        prop_assert_eq!(got, Some((fstype, options)));
    }

    /// hidepid over a well-formed status: CAP_SYS_PTRACE exempts, the
    /// mount's group exempts noaccess and invisible (not ptraceable), and
    /// anything else is blind, naming the option.
    #[test]
    fn hidepid_rules_on_well_formed_status(
        hide in prop::sample::select(vec!["0", "off", "1", "noaccess", "2", "invisible", "4", "ptraceable", "7", "weird"]),
        gid in prop::option::of(0u32..5),
        cap in any::<u64>(),
        fsgid in 0u32..5,
        groups in prop::collection::vec(0u32..5, 0..3),
    ) {
        let options = match gid {
            Some(g) => format!("rw,nosuid,hidepid={hide},gid={g}"),
            None => format!("rw,nosuid,hidepid={hide}"),
        };
        let v = view("/proc", mountinfo_line(22, "/proc", "proc", &options), status_text(cap, fsgid, &groups));
        let got = blindness(&v, BlindnessOptions::default());
        let off = matches!(hide, "0" | "off");
        let ptrace = cap & (1 << 19) != 0;
        let group_may = matches!(hide, "1" | "noaccess" | "2" | "invisible");
        let in_group = gid.is_some_and(|g| fsgid == g || groups.contains(&g));
        let exempt = off || ptrace || (group_may && in_group);
        prop_assert_eq!(got.is_some(), !exempt, "{:?}", got);
        if let Some(reason) = got {
            let shown = format!("hidepid={hide}");
            prop_assert!(reason.contains(&shown), "{}", reason);
        }
    }
}

// ------------------------------------------------------------ snapshot rows

/// A row close to a real one, with any field replaced by any value.
fn plausible_row() -> impl Strategy<Value = Map<String, Value>> {
    let base = json!({
        "id": "t1", "plan_id": "p", "droid_type": "builder", "state": "RUNNING",
        "pid": 4121, "host": null, "attempt": 2, "started_at": "2026-11-23 06:00:00",
        "last_progress_at": 1795413600, "finished_at": null, "error": null,
        "pid_start_ticks": 99, "created_at": "2026-11-23T05:00:00Z"
    });
    let base = base.as_object().cloned().unwrap_or_default();
    (
        prop::collection::vec((json_key(), prop::option::of(any_json())), 0..4),
        Just(base),
    )
        .prop_map(|(changes, mut row)| {
            for (k, v) in changes {
                match v {
                    Some(v) => row.insert(k, v),
                    None => row.remove(&k),
                };
            }
            row
        })
}

fn any_tz() -> impl Strategy<Value = ExecutorTz> {
    prop_oneof![
        Just(ExecutorTz::Utc),
        Just(ExecutorTz::Local),
        (-86_399i32..=86_399)
            .prop_filter_map("an offset", FixedOffset::east_opt)
            .prop_map(ExecutorTz::Fixed),
    ]
}

fn check_row(row: &Map<String, Value>, tz: ExecutorTz) {
    let size = serde_json::to_string(&Value::Object(row.clone()))
        .map(|s| s.len())
        .unwrap_or(0);
    match parse_row(row, tz) {
        Row::Task(t) => {
            assert!(!t.id.is_empty() && !t.droid_type.is_empty(), "{t:?}");
            assert!(t.pid.is_none_or(|p| p > 1), "{t:?}");
            for at in [
                t.started_at,
                t.last_progress_at,
                t.finished_at,
                t.created_at,
            ]
            .into_iter()
            .flatten()
            {
                assert!((1970..=9999).contains(&at.year()), "{at}");
            }
        }
        Row::Bad(b) => {
            // An id of "" is kept as given (text, not a description).
            let given_empty = row.get("id") == Some(&Value::String(String::new()));
            assert!(!b.id.is_empty() || given_empty, "{b:?}");
            assert!(!b.reason.is_empty());
            assert!(b.pid.is_none_or(|p| p > 1), "{b:?}");
            assert!(
                b.id.len() <= size + 64,
                "an id of {} from {size}",
                b.id.len()
            );
            assert!(
                b.reason.len() <= 3 * size + 128,
                "a reason of {} from {size}",
                b.reason.len()
            );
        }
    }
}

proptest! {
    #![proptest_config(config(3000))]

    #[test]
    fn rows_from_arbitrary_objects(v in any_json(), tz in any_tz()) {
        let row = match v {
            Value::Object(m) => m,
            other => [("id".to_string(), other)].into_iter().collect(),
        };
        check_row(&row, tz);
    }

    #[test]
    fn rows_close_to_real_ones(row in plausible_row(), tz in any_tz()) {
        check_row(&row, tz);
    }

    #[test]
    fn enabled_of_any_value(v in any_json()) {
        let _ = parse_enabled(&v);
    }
}

/// The command executor end to end: `cat` prints the document.
fn command_executor(doc: &Path) -> Result<CommandExecutor, String> {
    let text = format!(
        "[executor]\nkind = \"command\"\nsnapshot_command = [\"cat\", {:?}]\nmark_failed_command = [\"true\"]\n[http]\nlisten = \"\"\n",
        doc.display().to_string()
    );
    let cfg =
        Config::parse(&text, Path::new("/etc/foreman/foreman.toml")).map_err(|e| e.to_string())?;
    Ok(CommandExecutor::new(&cfg.executor))
}

/// A snapshot document: arbitrary, or shaped like one.
fn snapshot_doc() -> impl Strategy<Value = String> {
    let droid_type = prop_oneof![
        3 => ("[a-z]{1,8}", prop_oneof![any::<bool>().prop_map(Value::Bool), any_json()])
            .prop_map(|(n, e)| json!({"name": n, "enabled": e})),
        1 => any_json(),
    ];
    prop_oneof![
        1 => any_json().prop_map(|v| v.to_string()),
        1 => jsonish_bytes().prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        4 => (
            prop::collection::vec(
                prop_oneof![3 => plausible_row().prop_map(Value::Object), 1 => any_json()],
                0..8
            ),
            prop_oneof![
                Just(None),
                Just(Some(Value::Null)),
                prop::collection::vec(droid_type, 0..4).prop_map(|v| Some(Value::Array(v))),
                any_json().prop_map(Some),
            ],
        )
            .prop_map(|(tasks, types)| {
                let mut doc = Map::new();
                doc.insert("tasks".into(), Value::Array(tasks));
                if let Some(t) = types {
                    doc.insert("droid_types".into(), t);
                }
                Value::Object(doc).to_string()
            }),
        1 => (0usize..5000).prop_map(|d| format!(r#"{{"tasks":{}}}"#, nested(d, ""))),
    ]
}

proptest! {
    #![proptest_config(config(150))]

    #[test]
    fn command_snapshots_never_panic(doc in snapshot_doc()) {
        let dir = tempfile::tempdir().map_err(|e| TestCaseError::fail(e.to_string()))?;
        let path = dir.path().join("snapshot.json");
        std::fs::write(&path, &doc).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let exec = command_executor(&path).map_err(TestCaseError::fail)?;
        let parsed: Option<Value> = serde_json::from_str(&doc).ok();
        match exec.history(Duration::from_secs(60)) {
            // A document nested past serde_json's recursion limit cannot be
            // read whole here; the executor reads it row by row, and a row
            // too deep is a malformed row: nothing to compare it with.
            Ok(_) if parsed.is_none() => {}
            Ok(h) => {
                let tasks = parsed
                    .as_ref()
                    .and_then(|d| d.get("tasks"))
                    .and_then(Value::as_array)
                    .map_or(0, Vec::len);
                prop_assert_eq!(h.snapshot.rows.len(), tasks);
                if let Some(types) = h.droid_types {
                    let given = parsed
                        .as_ref()
                        .and_then(|d| d.get("droid_types"))
                        .and_then(Value::as_array)
                        .map_or(0, Vec::len);
                    prop_assert!(types.len() <= given);
                }
                prop_assert!(string_bytes(parsed.as_ref().unwrap_or(&Value::Null)) <= doc.len());
            }
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }
}

// ------------------------------------------------------------ timestamps

/// An instant parse_time accepts (1970..=9999), to the nanosecond.
fn any_instant() -> impl Strategy<Value = DateTime<Utc>> {
    let max = Utc
        .with_ymd_and_hms(9999, 12, 31, 23, 59, 59)
        .single()
        .map_or(0, |t| t.timestamp());
    (0i64..=max, 0u32..1_000_000_000).prop_map(|(s, ns)| {
        DateTime::<Utc>::from_timestamp(s, ns).unwrap_or(DateTime::<Utc>::MIN_UTC)
    })
}

/// Strings shaped like the accepted formats, valid or not: any year, month
/// 0..13, day 0..32, hour 0..25, fractions of 0 to 12 digits, odd offsets.
fn rfc3339_like() -> impl Strategy<Value = String> {
    (
        prop_oneof![
            0u32..10_000,
            Just(1969),
            Just(1970),
            Just(9999),
            10_000u32..1_000_000
        ],
        0u32..14,
        0u32..33,
        0u32..26,
        0u32..61,
        0u32..62,
        "(\\.[0-9]{0,12})?",
        prop::sample::select(vec!["T", " ", "t", "_", ""]),
        prop::sample::select(vec![
            "", "Z", "z", "+00:00", "-00:00", "+23:59", "-23:59", "+24:00", "+0530", "+05", "UTC",
            " +01:00",
        ]),
        "[ \t]{0,2}",
    )
        .prop_map(|(y, mo, d, h, mi, s, frac, sep, off, pad)| {
            format!("{pad}{y:04}-{mo:02}-{d:02}{sep}{h:02}:{mi:02}:{s:02}{frac}{off}{pad}")
        })
}

proptest! {
    #![proptest_config(config(3000))]

    #[test]
    fn format_shaped_times_never_panic(s in rfc3339_like(), tz in any_tz()) {
        if let Some(t) = parse_time(&Value::String(s.clone()), tz) {
            prop_assert!((1970..=9999).contains(&t.year()), "{} → {}", s, t);
        }
    }

    /// Each format reads back the instant it was written from, to the
    /// nanosecond (9 fraction digits; fewer are a prefix).
    #[test]
    fn times_round_trip_in_every_format(
        t in any_instant(),
        digits in 0usize..=9,
        offset in -86_399i32..=86_399,
    ) {
        let off = FixedOffset::east_opt(offset).ok_or_else(|| TestCaseError::fail("offset"))?;
        let frac = format!("{:09}", t.timestamp_subsec_nanos());
        let frac = &frac[..digits];
        let cut = frac
            .parse::<u32>()
            .map_or(0, |f| f * 10u32.pow(9 - digits as u32));
        let dot = if digits == 0 { "" } else { "." };
        let want = DateTime::<Utc>::from_timestamp(t.timestamp(), cut).ok_or_else(|| TestCaseError::fail("instant"))?;
        let naive = want.naive_utc().format("%Y-%m-%d %H:%M:%S").to_string();
        for s in [
            format!("{naive}{dot}{frac}"),
            format!("{}{dot}{frac}", naive.replace(' ', "T")),
            format!("{}{dot}{frac}Z", naive.replace(' ', "T")),
        ] {
            prop_assert_eq!(parse_time(&json!(s), ExecutorTz::Utc), Some(want), "{}", s);
        }
        // The executor's fixed offset, and an RFC 3339 offset.
        let local = want.with_timezone(&off).naive_local();
        let local_text = format!("{}{dot}{frac}", local.format("%Y-%m-%d %H:%M:%S"));
        let ok_year = |t: &DateTime<Utc>| (1970..=9999).contains(&t.year());
        if (1970..=9999).contains(&local.year()) {
            prop_assert_eq!(parse_time(&json!(local_text), ExecutorTz::Fixed(off)), Some(want).filter(ok_year));
        }
        // RFC 3339 offsets are whole minutes.
        let off_min = FixedOffset::east_opt(offset / 60 * 60).ok_or_else(|| TestCaseError::fail("offset"))?;
        let shown = want.with_timezone(&off_min);
        if (0..=9999).contains(&shown.year()) {
            let s = format!("{}{dot}{frac}{}", shown.format("%Y-%m-%dT%H:%M:%S"), shown.format("%:z"));
            prop_assert_eq!(parse_time(&json!(s), ExecutorTz::Utc), Some(want), "{}", s);
        }
    }

    /// Unix seconds, as numbers and as text, with fractions.
    #[test]
    fn unix_seconds_round_trip(secs in 0i64..253_402_300_800, millis in 0u32..1000) {
        let want = DateTime::<Utc>::from_timestamp(secs, millis * 1_000_000).ok_or_else(|| TestCaseError::fail("instant"))?;
        let whole = DateTime::<Utc>::from_timestamp(secs, 0).ok_or_else(|| TestCaseError::fail("instant"))?;
        prop_assert_eq!(parse_time(&json!(secs), ExecutorTz::Utc), Some(whole));
        prop_assert_eq!(parse_time(&json!(secs.to_string()), ExecutorTz::Utc), Some(whole));
        let f = secs as f64 + f64::from(millis) / 1000.0;
        let got = parse_time(&json!(f), ExecutorTz::Utc).ok_or_else(|| TestCaseError::fail("a float"))?;
        // f64 holds about 16 digits: within a millisecond.
        prop_assert!((got - want).num_milliseconds().abs() <= 1, "{} → {}", f, got);
    }

    #[test]
    fn any_number_or_text_never_panics(
        v in prop_oneof![
            json_number(),
            any::<f64>().prop_map(|f| json!(f.to_string())),
            "[-+]?[0-9]{0,25}(\\.[0-9]{0,25})?([eE][-+]?[0-9]{0,4})?".prop_map(|s| json!(s)),
            any_json(),
        ],
        tz in any_tz(),
    ) {
        if let Some(t) = parse_time(&v, tz) {
            prop_assert!((1970..=9999).contains(&t.year()), "{} → {}", v, t);
        }
    }
}

#[test]
fn the_boundaries_of_parse_time() {
    let utc = ExecutorTz::Utc;
    let year = |s: &str| parse_time(&json!(s), utc).map(|t| t.year());
    assert_eq!(year("1970-01-01T00:00:00Z"), Some(1970));
    assert_eq!(year("1969-12-31T23:59:59Z"), None);
    assert_eq!(year("9999-12-31T23:59:59.999999999Z"), Some(9999));
    assert_eq!(year("0000-01-01T00:00:00+23:59"), None);
    assert_eq!(year("9999-12-31 23:59:59"), Some(9999));
    assert_eq!(parse_time(&json!(253_402_300_800i64), utc), None);
    assert_eq!(parse_time(&json!(1e300), utc), None);
    assert_eq!(parse_time(&json!("1e300"), utc), None);
    assert_eq!(parse_time(&json!("NaN"), utc), None);
    assert_eq!(parse_time(&json!("inf"), utc), None);
    assert_eq!(parse_time(&json!(u64::MAX), utc), None);
}

// ------------------------------------------------------------ foreman.toml

/// The longest value of each duration (config.rs `mod max`; docs/operations.md).
const DAY: u64 = 86_400;

fn assert_bounds(c: &Config) {
    let at_most = |what: &str, d: Duration, secs: u64| {
        assert!(
            d <= Duration::from_secs(secs),
            "{what} = {d:?} is past its maximum of {secs}s"
        );
    };
    let positive = |what: &str, d: Duration| assert!(!d.is_zero(), "{what} is 0");
    positive("interval", c.interval);
    at_most("interval", c.interval, DAY);
    positive("future_tolerance", c.future_tolerance);
    at_most("future_tolerance", c.future_tolerance, DAY);
    positive("executor.timeout", c.executor.timeout);
    at_most("executor.timeout", c.executor.timeout, 3600);
    at_most(
        "executor.history_window",
        c.executor.history_window,
        30 * DAY,
    );
    at_most("activity.retention", c.activity.retention, 10 * 31_557_600);
    assert!((0.0..=100.0).contains(&c.max_cpu_pressure));
    for (name, p) in std::iter::once(("defaults", &c.defaults))
        .chain(c.droid_types.iter().map(|(n, p)| (n.as_str(), p)))
    {
        at_most(name, p.timeout, 30 * DAY);
        assert!(p.timeout > c.interval, "{name}: timeout within interval");
        at_most(name, p.startup_grace, 7 * DAY);
        at_most(name, p.pid_start_tolerance, DAY);
        at_most(name, p.exit_grace, 3600);
        at_most(name, p.kill_grace, 3600);
        at_most(name, p.max_deferral(), 90 * DAY);
        if let Some(d) = p.max_deferral {
            at_most(name, d, 30 * DAY);
        }
        if let Some(d) = p.max_runtime {
            positive("max_runtime", d);
            at_most(name, d, 30 * DAY);
        }
        assert!(!p.progress.is_empty());
        assert_ne!(p.max_actions_per_sweep, Some(0));
        assert_ne!(p.max_actions_per_window, Some(0));
    }
    at_most("twin.window", c.twin.window, 30 * DAY);
    for s in c.alerts.iter().chain(&c.wellbeing.sinks) {
        positive("sink timeout", s.timeout);
        at_most("sink timeout", s.timeout, 60);
        positive("retry_base", s.retry_base);
        at_most("retry_base", s.retry_base, DAY);
        at_most("retry_cap", s.retry_cap, 7 * DAY);
        at_most("max_age", s.max_age, 30 * DAY);
        at_most("realert_after", s.realert_after, 30 * DAY);
        assert!(s.retry_base <= s.retry_cap && s.retry_base <= s.max_age);
    }
    let w = &c.wellbeing;
    for l in std::iter::once(&w.limits).chain(w.droid_types.values()) {
        positive("active_within", l.active_within);
        at_most("active_within", l.active_within, 31_557_600);
        positive("dispatch_timeout", l.dispatch_timeout);
        at_most("dispatch_timeout", l.dispatch_timeout, 30 * DAY);
        if let Some(d) = l.max_median_runtime {
            positive("max_median_runtime", d);
            at_most("max_median_runtime", d, 30 * DAY);
        }
        assert!((0.0..=1.0).contains(&l.max_failure_rate));
        assert!(l.min_finished >= 1);
    }
    positive("plan_stall_timeout", w.plan_stall_timeout);
    at_most("plan_stall_timeout", w.plan_stall_timeout, 30 * DAY);
    positive("max_outbox_age", w.max_outbox_age);
    at_most("max_outbox_age", w.max_outbox_age, 30 * DAY);
    positive("review.ping_timeout", c.review.ping_timeout);
    at_most("review.ping_timeout", c.review.ping_timeout, 60);
    positive("http.request_timeout", c.http.request_timeout);
    at_most("http.request_timeout", c.http.request_timeout, 300);
    assert!((1024..=64 << 20).contains(&c.http.max_body_bytes));
    assert!((1..=10_000).contains(&c.http.max_connections));
    assert!((1..=1_000_000).contains(&c.monitor.queue_capacity));
}

const CONFIG_PATH: &str = "/etc/foreman/foreman.toml";

/// Parse `text`: no panic; an error names file:line:column within the text
/// and a key; a success keeps every bound.
fn check_config(text: &str) -> Result<Config, ConfigError> {
    let got = Config::parse(text, Path::new(CONFIG_PATH));
    match &got {
        Ok(c) => assert_bounds(c),
        Err(
            e @ ConfigError::Invalid {
                file,
                line,
                column,
                key,
                message,
            },
        ) => {
            assert_eq!(file, CONFIG_PATH);
            assert!(!key.is_empty() && !message.is_empty(), "{e}");
            let lines: Vec<&str> = text.split('\n').collect();
            assert!(
                (1..=lines.len()).contains(line),
                "{e}: line {line} of {}",
                lines.len()
            );
            assert!(
                *column >= 1 && *column <= lines[line - 1].len() + 1,
                "{e}: column {column} of a {}-byte line",
                lines[line - 1].len()
            );
            let shown = e.to_string();
            let prefix = format!("{CONFIG_PATH}:{line}:{column}: key `");
            assert!(shown.starts_with(&prefix), "{shown}");
            assert!(
                shown.len() <= 4 * text.len() + 1024,
                "a {}-byte message for a {}-byte file",
                shown.len(),
                text.len()
            );
        }
        Err(e @ ConfigError::Unreadable { .. }) => panic!("parse said unreadable: {e}"),
    }
    got
}

fn shipped() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("foreman.toml"))
        .unwrap_or_default()
}

/// Lines of the shipped file holding `key = value`, commented out or not.
fn key_lines(text: &str) -> Vec<(usize, String, bool)> {
    text.lines()
        .enumerate()
        .filter_map(|(i, l)| {
            let (commented, body) = match l.trim_start().strip_prefix('#') {
                Some(rest) => (true, rest.trim_start()),
                None => (false, l.trim_start()),
            };
            let (key, _) = body.split_once('=')?;
            let key = key.trim();
            (!key.is_empty()
                && key
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.'))
            .then(|| (i, key.to_string(), commented))
        })
        .collect()
}

/// A TOML value an operator might write, or a hostile one.
fn toml_value() -> impl Strategy<Value = String> {
    let unit = prop::sample::select(vec![
        "ns", "us", "ms", "s", "sec", "m", "min", "h", "hr", "d", "days", "w", "weeks", "M",
        "months", "y", "years", "", " ", "x",
    ]);
    let duration = prop_oneof![
        (any::<u64>(), unit.clone()).prop_map(|(n, u)| format!("\"{n}{u}\"")),
        (0u64..100_000_000, unit.clone()).prop_map(|(n, u)| format!("\"{n}{u}\"")),
        (0u64..1000, unit.clone(), 0u64..1000, unit)
            .prop_map(|(a, u, b, v)| format!("\"{a}{u} {b}{v}\"")),
        Just("\"300000years\"".to_string()),
        Just("\"18446744073709551615s\"".to_string()),
        Just("\"18446744073709551616s\"".to_string()),
        Just("\"0s\"".to_string()),
        Just("\"1ns\"".to_string()),
    ];
    let scalar = prop_oneof![
        3 => duration,
        2 => any::<i64>().prop_map(|n| n.to_string()),
        1 => prop::sample::select(vec!["0", "1", "-1", "1024", "67108864", "10000", "1000000", "9223372036854775807", "-9223372036854775808", "9223372036854775808"]).prop_map(str::to_string),
        1 => any::<f64>().prop_map(|f| if f.is_nan() { "nan".to_string() } else if f.is_infinite() { if f > 0.0 { "inf".into() } else { "-inf".into() } } else { format!("{f:?}") }),
        1 => prop::sample::select(vec!["nan", "-inf", "+inf", "0.25", "1.5", "-0.0", "1e308", "true", "false"]).prop_map(str::to_string),
        2 => ".{0,40}".prop_map(|s| format!("{s:?}")),
        1 => prop::sample::select(vec![
            "\"enforce\"", "\"shadow\"", "\"terminate\"", "\"report\"", "\"mark\"", "\"sqlite\"",
            "\"command\"", "\"UTC\"", "\"local\"", "\"+02:00\"", "\"-25:00\"", "\"Europe/Paris\"",
            "\"0 0 6 * * *\"", "\"* * * * * *\"", "\"0 0 31 2 * *\"", "\"61 * * * * *\"", "\"@yearly\"",
            "\"\"", "\"(\"", "\"a{99999999}\"", "\"0.0.0.0:9464\"", "\"[::1]:9464\"", "\"[::1]:99999\"",
            "\"heartbeat\"", "1979-05-27T07:32:00Z", "07:32:00", "1979-05-27",
        ]).prop_map(str::to_string),
        1 => ".{0,20}",
    ];
    scalar.prop_recursive(2, 12, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(|v| format!("[{}]", v.join(", "))),
            prop::collection::vec(("[a-z_]{1,8}", inner), 0..3).prop_map(|kv| {
                let kv: Vec<String> = kv.into_iter().map(|(k, v)| format!("{k} = {v}")).collect();
                format!("{{ {} }}", kv.join(", "))
            }),
        ]
    })
}

/// TOML-ish text: the keys and sections Foreman reads, and noise.
fn tomlish() -> impl Strategy<Value = String> {
    let section = prop::sample::select(vec![
        "[executor]",
        "[activity]",
        "[defaults]",
        "[droid_types.builder]",
        "[droid_types.\"a.b\"]",
        "[[alerts]]",
        "[twin]",
        "[http]",
        "[monitor]",
        "[review]",
        "[wellbeing]",
        "[[wellbeing.sinks]]",
        "[wellbeing.droid_types.x]",
        "[executor",
        "[[alerts]",
        "[]",
    ])
    .prop_map(str::to_string);
    let key = prop::sample::select(vec![
        "interval",
        "future_tolerance",
        "host",
        "mode",
        "max_cpu_pressure",
        "kind",
        "path",
        "timeout",
        "history_window",
        "timezone",
        "snapshot_command",
        "mark_failed_command",
        "retention",
        "startup_grace",
        "progress",
        "pid_start_tolerance",
        "process_match",
        "exit_grace",
        "on_hung",
        "on_stray",
        "kill_grace",
        "enabled",
        "max_deferral",
        "max_runtime",
        "max_actions_per_sweep",
        "max_actions_per_window",
        "name",
        "url",
        "argv",
        "headers",
        "retry_base",
        "retry_cap",
        "max_age",
        "realert_after",
        "kinds",
        "window",
        "listen",
        "max_body_bytes",
        "request_timeout",
        "max_connections",
        "token_env",
        "protect_reads",
        "queue_capacity",
        "schedule",
        "ping_url",
        "ping_timeout",
        "active_within",
        "max_failure_rate",
        "min_finished",
        "max_findings",
        "max_median_runtime",
        "dispatch_timeout",
        "plan_stall_timeout",
        "max_sweep_errors",
        "max_outbox_age",
        "executor.kind",
        "\"quoted key\"",
        "é",
    ]);
    let line = prop_oneof![
        4 => (key, toml_value()).prop_map(|(k, v)| format!("{k} = {v}")),
        1 => section,
        1 => ".{0,30}",
        1 => Just(String::new()),
    ];
    prop::collection::vec(line, 0..16).prop_map(|lines| lines.join("\n"))
}

/// Replace the value on line `at` (uncommenting it) with `value`.
fn with_value(text: &str, at: usize, key: &str, value: &str) -> String {
    text.lines()
        .enumerate()
        .map(|(i, l)| {
            if i == at {
                format!("{key} = {value}")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_shipped_config_parses_within_bounds() {
    let text = shipped();
    assert!(!key_lines(&text).is_empty());
    check_config(&text).unwrap_or_else(|e| panic!("{e}"));
}

proptest! {
    #![proptest_config(config(800))]

    #[test]
    fn tomlish_text_never_panics(text in tomlish()) {
        let _ = check_config(&text);
    }

    /// tomlish text after a minimal `[executor]`, so validation is reached.
    #[test]
    fn tomlish_tail_of_a_valid_head(text in tomlish()) {
        let _ = check_config(&format!("[executor]\nkind = \"sqlite\"\npath = \"x.db\"\n{text}"));
    }

}

proptest! {
    #![proptest_config(config(500))]

    #[test]
    fn the_shipped_config_with_one_value_replaced(
        pick in any::<prop::sample::Index>(),
        value in toml_value(),
    ) {
        let text = shipped();
        let lines = key_lines(&text);
        let (at, key, _) = &lines[pick.index(lines.len())];
        let _ = check_config(&with_value(&text, *at, key, &value));
    }

}

proptest! {
    #![proptest_config(config(300))]

    #[test]
    fn the_shipped_config_mutated(edits in edits()) {
        let _ = check_config(&apply(&shipped(), &edits));
    }
}

/// A sink section for the end of the shipped file, with odd values.
fn sink_section() -> impl Strategy<Value = String> {
    let key = prop::sample::select(vec![
        "name",
        "kind",
        "url",
        "argv",
        "path",
        "headers",
        "bearer_token_env",
        "timeout",
        "retry_base",
        "retry_cap",
        "max_age",
        "realert_after",
        "kinds",
        "droid_types",
    ]);
    (
        prop::sample::select(vec!["[[alerts]]", "[[wellbeing.sinks]]"]),
        prop::sample::select(vec![
            "kind = \"webhook\"\nurl = \"https://a.example/x\"",
            "kind = \"command\"\nargv = [\"/bin/true\"]",
            "kind = \"file\"\npath = \"inbox\"",
            "kind = \"webhook\"",
            "kind = \"carrier-pigeon\"",
        ]),
        prop::collection::vec((key, toml_value()), 0..4),
        any::<bool>(),
    )
        .prop_map(|(header, kind, keys, twice)| {
            let mut s = format!("\n{header}\nname = \"s\"\n{kind}\n");
            for (k, v) in keys {
                s.push_str(&format!("{k} = {v}\n"));
            }
            if twice {
                // A second sink of the same name: the clash is located.
                s.push_str(&format!("\n{header}\nname = \"s\"\n{kind}\n"));
            }
            s
        })
}

proptest! {
    #![proptest_config(config(300))]

    #[test]
    fn the_shipped_config_with_a_sink(sink in sink_section()) {
        let text = shipped() + &sink;
        let _ = check_config(&text);
    }
}
