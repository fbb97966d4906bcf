//! The status page's HTML: `/` and `/findings/{id}`. Drawn with maud, whose
//! `(...)` splices escape every string, so a task id, droid type or reason
//! from the executor is text, never markup. The only unescaped splice is
//! the chart's SVG, which `chart::svg` escapes itself.
//!
//! No inline script or style (the listener's Content-Security-Policy
//! forbids both): the look is `status.css`, the refresh `status.js`, both
//! served from the binary. Without JavaScript the page is whole and
//! refreshes itself by a `<meta refresh>` in `<noscript>`.

use super::{chart, Status};
use crate::activity::StoredFinding;
use crate::explain::Explanation;
use crate::probe::Probe;
use crate::twin::State;
use chrono::{DateTime, Utc};
use maud::{html, Markup, PreEscaped, DOCTYPE};
use std::time::Duration;

pub const CSS: &str = include_str!("status.css");
pub const JS: &str = include_str!("status.js");

/// How often the page polls itself (and, without JavaScript, reloads),
/// unless `?refresh=SECONDS` asks otherwise (within `REFRESH_RANGE`).
pub const REFRESH_SECONDS: u32 = 15;
pub const REFRESH_RANGE: std::ops::RangeInclusive<u32> = 2..=3600;

/// The page's refresh period from its query string: `refresh=SECONDS`,
/// held within `REFRESH_RANGE`; anything else is the default.
pub fn refresh(query: Option<&str>) -> u32 {
    query
        .unwrap_or("")
        .split('&')
        .filter_map(|p| p.strip_prefix("refresh="))
        .find_map(|v| v.parse::<u32>().ok())
        .map_or(REFRESH_SECONDS, |s| {
            s.clamp(*REFRESH_RANGE.start(), *REFRESH_RANGE.end())
        })
}

pub const FAVICON: &str = include_str!("favicon.svg");

/// Rows of the executing table; the counts per type cover every task.
pub const MAX_EXECUTING_ROWS: usize = 200;
/// Plans listed, least healthy first; `/plans` pages through all.
pub const MAX_PLAN_ROWS: usize = 50;
/// Stalled task ids named per plan.
const MAX_STALLED_NAMED: usize = 5;
/// Droid types listed, those needing a look first; the rest are one row.
pub const MAX_TYPE_ROWS: usize = 50;
/// Characters of an id or name shown (the evidence page shows it whole):
/// an executor's 100 kB task id must not make every row 100 kB.
pub const MAX_NAME_CHARS: usize = 200;
/// Characters of a reason or an error shown.
pub const MAX_TEXT_CHARS: usize = 1000;

/// `s` cut to `max` characters, ending in `…` when cut.
fn cut(s: &str, max: usize) -> std::borrow::Cow<'_, str> {
    match s.char_indices().nth(max) {
        None => std::borrow::Cow::Borrowed(s),
        Some((at, _)) => std::borrow::Cow::Owned(format!("{}…", &s[..at])),
    }
}

/// An id or a name, as the page shows it.
fn name(s: &str) -> std::borrow::Cow<'_, str> {
    cut(s, MAX_NAME_CHARS)
}

/// A reason or an error, as the page shows it.
fn text(s: &str) -> std::borrow::Cow<'_, str> {
    cut(s, MAX_TEXT_CHARS)
}

/// What the listener itself knows of the daemon's last sweep: its age and
/// its one-line summary.
pub struct ThisSweep {
    pub age: Option<Duration>,
    pub summary: Option<String>,
}

fn head(title: &str, refresh: Option<u32>) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            meta name="color-scheme" content="light dark";
            title { (title) }
            link rel="icon" href="/assets/favicon.svg" type="image/svg+xml";
            link rel="stylesheet" href="/assets/status.css";
            @if let Some(every) = refresh {
                noscript { meta http-equiv="refresh" content=(every); }
            }
            script src="/assets/status.js" defer {}
        }
    }
}

/// `2026-12-03T06:39:12.123Z` as `2026-12-03 06:39:12Z`: short, still UTC.
fn when(t: &str) -> String {
    match DateTime::parse_from_rfc3339(t) {
        Ok(t) => t
            .with_timezone(&Utc)
            .format("%Y-%m-%d %H:%M:%SZ")
            .to_string(),
        Err(_) => t.to_string(),
    }
}

/// How long ago `t` was, for people ("3m 12s ago").
fn ago(now: DateTime<Utc>, t: &str) -> String {
    let Ok(t) = DateTime::parse_from_rfc3339(t) else {
        return String::new();
    };
    let secs = (now - t.with_timezone(&Utc)).num_seconds();
    if secs < 0 {
        return "in the future".into();
    }
    format!("{} ago", span(secs as u64))
}

/// A length of time in at most two units: `45s`, `3m 12s`, `2h 5m`, `3d 4h`.
pub fn span(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

fn ms_span(ms: Option<i64>) -> String {
    ms.map_or("-".into(), |ms| {
        span(u64::try_from(ms.max(0) / 1000).unwrap_or(0))
    })
}

fn state_class(s: State) -> &'static str {
    match s {
        State::Ok => "state-ok",
        State::Warning => "state-warning",
        State::Critical => "state-critical",
        State::Unknown => "state-unknown",
    }
}

/// A kind's CSS class: from a fixed list, never from the input.
fn kind_class(kind: &str) -> String {
    format!("k-{}", chart::kind_class(kind))
}

/// `GET /`.
pub fn index(s: &Status, host: &str, live: &ThisSweep, refresh: u32) -> String {
    let t = &s.twin;
    let now = s.generated_at;
    let title = format!("{} · Foreman on {host}", t.state.as_str());
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(&title, Some(refresh)))
            body data-polls="0" {
                header {
                    div.brand { strong { "Foreman" } " on " span.host { (host) } }
                    nav {
                        a href="/twin" { "twin" } " · " a href="/plans" { "plans" } " · "
                        a href="/metrics" { "metrics" } " · " a href="/healthz" { "healthz" }
                    }
                    div.refresh {
                        span #polling { "Reloading every " (refresh) " s" }
                        " "
                        button #pause type="button" aria-pressed="false" hidden { "Pause" }
                    }
                }
                main #status data-generated=(crate::activity::ts(now)) data-refresh=(refresh) {
                    (state(s, live))
                    @if !s.unread.is_empty() {
                        section #unread .card {
                            h2 { "Not shown" }
                            ul { @for u in &s.unread { li.bad { (text(u)) } } }
                        }
                    }
                    (executing(s))
                    (plans(s))
                    (timeline(s))
                    (checks(s, now))
                    (findings(s, now))
                    p.generated { "Generated " (when(&crate::activity::ts(now))) ". Read-only: this page changes nothing." }
                }
            }
        }
    }
    .into_string()
}

fn state(s: &Status, live: &ThisSweep) -> Markup {
    let t = &s.twin;
    let d = &t.daemon;
    let now = s.generated_at;
    html! {
        section #state class=(format!("state {}", state_class(t.state))) {
            h1 { span.word { (t.state.as_str()) } }
            @if t.reasons.is_empty() {
                p { "All RUNNING tasks are alive and making progress; the daemon is sweeping." }
            } @else {
                ul { @for r in &t.reasons { li { (text(r)) } } }
            }
        }
        div.cards {
            section #daemon .card {
                h2 { "Daemon" }
                @match &d.last_sweep_at {
                    Some(at) => {
                        p { "Last sweep " strong { (ago(now, at)) } " (" (when(at)) ")"
                            @if let Some(n) = d.last_sweep_findings { ", " (n) " finding(s)" } "." }
                    }
                    None => { p.bad { "No sweep recorded: is the daemon running?" } }
                }
                @if d.stale { p.bad { "Older than twice the interval." } }
                @if let Some(e) = &d.last_sweep_error { p.bad { "The last sweep could not read the executor: " (text(e)) } }
                @if let Some(summary) = &live.summary {
                    p.muted { "This daemon's last sweep"
                        @if let Some(age) = live.age { ", " (span(age.as_secs())) " ago" }
                        ": " (text(summary)) }
                }
                @if let Some(b) = &t.proc_blindness { p.bad { "/proc cannot show the executor's processes: " (text(b)) } }
            }
            section #deferral .card {
                h2 { "Deferrals" }
                @match &d.deferral {
                    Some(def) => {
                        p class=(if def.exceeded { "bad" } else { "warn" }) {
                            (def.hung_deferred) " hung verdict(s) deferred for starvation for "
                            (span(def.seconds as u64)) " (since " (when(&def.since)) "): " (text(&def.reason))
                        }
                    }
                    None => { p.muted { "None: hung verdicts are acted on." } }
                }
            }
            section #silences .card {
                h2 { "Silences" }
                @if t.silences.is_empty() {
                    p.muted { "None in force." }
                } @else {
                    ul { @for h in &t.silences {
                        li {
                            @if let Some(id) = h.id { "#" (id) " " }
                            (h.scope.as_str()) " "
                            code { (if h.value.is_empty() { "(every type)".into() } else { name(&h.value) }) }
                            " until " (when(&crate::activity::ts(h.until))) ": " (text(&h.reason))
                        }
                    } }
                }
            }
            section #outbox .card {
                h2 { "Outbox" }
                @if s.outbox.is_empty() {
                    p.muted { "Empty: every alert was delivered or closed." }
                } @else {
                    div.scroll { table {
                        thead { tr { th { "sink" } th.num { "queued" } th.num { "failing" } th { "oldest" } th { "last error" } } }
                        tbody { @for o in &s.outbox {
                            tr data-sink=(name(&o.sink)) {
                                td { (name(&o.sink)) } td.num { (o.queued) } td.num { (o.failing) }
                                td { @if let Some(at) = &o.oldest_queued_at { (ago(now, at)) } }
                                td.reason { (text(o.last_error.as_deref().unwrap_or(""))) }
                            }
                        } }
                    } }
                }
            }
        }
    }
}

/// The types to list, those needing a look first then the busiest, at
/// most `MAX_TYPE_ROWS`; and the rest summed in one row.
fn type_rows(types: &[super::TypeRow]) -> (Vec<&super::TypeRow>, Option<super::TypeRow>) {
    let mut rows: Vec<&super::TypeRow> = types.iter().collect();
    let calm = |r: &super::TypeRow| r.stale + r.hung + r.timed_out + r.gone == 0;
    rows.sort_by(|a, b| {
        (calm(a), std::cmp::Reverse(a.running), &a.droid_type).cmp(&(
            calm(b),
            std::cmp::Reverse(b.running),
            &b.droid_type,
        ))
    });
    if rows.len() <= MAX_TYPE_ROWS {
        return (rows, None);
    }
    let rest = rows.split_off(MAX_TYPE_ROWS - 1);
    let mut other = super::TypeRow {
        droid_type: format!("{} other types", rest.len()),
        running: 0,
        stale: 0,
        hung: 0,
        timed_out: 0,
        gone: 0,
    };
    for r in rest {
        other.running += r.running;
        other.stale += r.stale;
        other.hung += r.hung;
        other.timed_out += r.timed_out;
        other.gone += r.gone;
    }
    (rows, Some(other))
}

fn executing(s: &Status) -> Markup {
    let t = &s.twin;
    let (types, other) = type_rows(&s.types);
    let mut rows: Vec<&crate::twin::Executing> = t.executing.iter().collect();
    // What needs a look first; twin already sorted by type and task.
    rows.sort_by_key(|e| e.verdict == crate::model::Kind::Alive);
    let hidden = rows.len().saturating_sub(MAX_EXECUTING_ROWS);
    rows.truncate(MAX_EXECUTING_ROWS);
    html! {
        section #droids {
            h2 { "Executing droids" }
            @if s.types.is_empty() {
                p.muted { "No RUNNING task." }
            } @else {
                div.scroll { table #by-type {
                    thead { tr { th { "droid type" } th.num { "running" } th.num title="alive, no progress for more than half the type's timeout" { "stale heartbeat" }
                        th.num { "hung" } th.num { "past max_runtime" } th.num { "gone, not marked" } } }
                    tbody {
                        @for r in &types {
                            tr data-type=(name(&r.droid_type)) {
                                td { (name(&r.droid_type)) } (type_counts(r))
                            }
                        }
                        @if let Some(r) = &other {
                            tr.other { td.muted { (r.droid_type) } (type_counts(r)) }
                        }
                    }
                } }
                details #executing-details open[t.executing.len() <= 20] {
                    summary { (t.executing.len()) " RUNNING task(s)" }
                    div.scroll { table #executing {
                        thead { tr { th { "task" } th { "type" } th { "plan" } th.num { "pid" } th.num { "age" } th.num { "since progress" }
                            th.num { "cpu" } th.num { "rss" } th { "verdict" } th { "why" } } }
                        tbody { @for e in &rows {
                            tr data-task=(name(&e.task_id)) {
                                td.task { code { (name(&e.task_id)) } } td { (name(&e.droid_type)) } td { (name(e.plan_id.as_deref().unwrap_or("-"))) }
                                td.num { (e.pid.map_or("-".into(), |p| p.to_string())) }
                                td.num { (ms_span(e.age_ms)) } td.num { (ms_span(e.since_progress_ms)) }
                                td.num { (e.cpu_percent.map_or("-".into(), |c| format!("{c:.0}%"))) }
                                td.num { (e.rss_bytes.map_or("-".into(), |b| format!("{:.1} MiB", b as f64 / 1_048_576.0))) }
                                td class=(format!("verdict {}", kind_class(e.verdict.as_str()))) { (e.verdict.as_str()) }
                                td.reason { (text(&e.reason)) }
                            }
                        } }
                    } }
                    @if hidden > 0 { p.muted { (hidden) " more alive task(s) not listed; the counts above cover them all (see /twin)." } }
                }
            }
            @if !t.crashed.is_empty() {
                h3 { "Crashed, not cleaned up" }
                div.scroll { table #crashed {
                    thead { tr { th { "what" } th { "task" } th { "type" } th.num { "pid" } th { "kind" } th { "detail" } } }
                    tbody { @for c in &t.crashed {
                        tr { td { (c.what) } td { code { (name(c.task_id.as_deref().unwrap_or("-"))) } } td { (name(c.droid_type.as_deref().unwrap_or("-"))) }
                             td.num { (c.pid) } td class=(kind_class(&c.kind)) { (name(&c.kind)) } td.reason { (text(&c.detail)) } }
                    } }
                } }
            }
        }
    }
}

fn type_counts(r: &super::TypeRow) -> Markup {
    html! {
        td.num.running { (r.running) }
        td.num.stale.warn[r.stale > 0] { (r.stale) } td.num.hung.warn[r.hung > 0] { (r.hung) }
        td.num.timed_out.warn[r.timed_out > 0] { (r.timed_out) } td.num.gone.bad[r.gone > 0] { (r.gone) }
    }
}

fn plans(s: &Status) -> Markup {
    let mut plans: Vec<&crate::monitor::MonitorView> = s.twin.plans.iter().collect();
    plans.sort_by(|a, b| {
        a.health_score
            .total_cmp(&b.health_score)
            .then(a.plan_id.cmp(&b.plan_id))
    });
    let hidden = plans.len().saturating_sub(MAX_PLAN_ROWS);
    plans.truncate(MAX_PLAN_ROWS);
    html! {
        section #plans-section {
            h2 { "Plans" }
            @if plans.is_empty() {
                p.muted { "No plan in progress or completed within the hour." }
            } @else {
                div.scroll { table #plans {
                    thead { tr { th { "plan" } th.num { "health" } th.num { "running" } th.num { "failed" } th.num { "success" } th.num { "pending" } th { "stalled" } th { "updated" } } }
                    tbody { @for p in &plans {
                        tr data-plan=(name(&p.plan_id)) {
                            td { code { (name(&p.plan_id)) } @if p.is_complete { " " span.muted { "(complete)" } } }
                            td.num.health.bad[p.counts.failed > 0 && p.health_score < 0.5] { (format!("{:.0}%", p.health_score * 100.0)) }
                            td.num { (p.counts.running) } td.num { (p.counts.failed) } td.num { (p.counts.success) } td.num { (p.counts.pending) }
                            td.stalled {
                                @for id in p.stalled.iter().take(MAX_STALLED_NAMED) { code { (name(id)) } " " }
                                @if p.stalled.len() > MAX_STALLED_NAMED { "and " (p.stalled.len() - MAX_STALLED_NAMED) " more" }
                            }
                            td { (when(&crate::activity::ts(p.updated_at))) }
                        }
                    } }
                } }
                @if hidden > 0 { p.muted { (hidden) " healthier plan(s) not listed: see " a href="/plans" { "/plans" } "." } }
            }
        }
    }
}

fn timeline(s: &Status) -> Markup {
    html! {
        section #timeline {
            h2 { "Findings, last 24 h" }
            (PreEscaped(chart::svg(&s.timeline)))
        }
    }
}

fn findings(s: &Status, now: DateTime<Utc>) -> Markup {
    html! {
        section #findings-section {
            h2 { "Latest findings" }
            @if s.latest.is_empty() {
                p.muted { "No finding recorded." }
            } @else {
                div.scroll { table #findings {
                    thead { tr { th.num { "id" } th { "first seen" } th { "kind" } th { "task" } th { "type" } th { "outcome" } th { "why" } } }
                    tbody { @for f in &s.latest { (finding_row(f, now)) } }
                } }
            }
        }
    }
}

fn finding_row(f: &StoredFinding, now: DateTime<Utc>) -> Markup {
    let href = format!("/findings/{}", f.id);
    html! {
        tr data-finding=(f.id) {
            td.num { a href=(href) { (f.id) } }
            td title=(f.first_seen_at) { (ago(now, &f.first_seen_at)) }
            td class=(format!("kind {}", kind_class(&f.kind))) { (name(&f.kind)) }
            td.task { a href=(href) { code { (name(&f.task_id)) } } @if f.attempt != 1 { " #" (f.attempt) } }
            td { (name(f.droid_type.as_deref().unwrap_or("-"))) }
            td.outcome { (name(&f.outcome)) }
            td.reason { (text(f.reason().unwrap_or(""))) }
        }
    }
}

fn checks(s: &Status, now: DateTime<Utc>) -> Markup {
    html! {
        div.cards {
            section #wellbeing .card {
                h2 { "Wellbeing" }
                @match &s.wellbeing {
                    None => { p.muted { "No wellbeing run yet." } }
                    Some(w) => {
                        p { "Latest run " code { (name(&w.id)) } " (" (w.kind) ") " (ago(now, &w.started_at)) ": "
                            strong class=(if w.issues > 0 { "warn" } else { "good" }) {
                                @if w.issues == 0 { "all well" } @else { (w.issues) " issue(s)" } } }
                        @if !w.problems.is_empty() {
                            ul { @for (check, summary) in &w.problems { li { code { (name(check)) } ": " (text(summary)) } } }
                        }
                        @match &w.initiative {
                            Some(i) => { p { "Initiative #" (i.id) " (" (i.severity) "): " strong { (text(&i.title)) } } }
                            None => { p.muted { "No initiative filed." } }
                        }
                    }
                }
            }
            section #review .card {
                h2 { "Review" }
                @match &s.review {
                    None => { p.muted { "No self-test yet: run " code { "foreman review" } "." } }
                    Some(r) => {
                        p { "Latest " (r.kind) " self-test " code { (name(&r.id)) } " " (ago(now, &r.started_at)) ": "
                            strong class=(if r.passed { "good" } else { "bad" }) { @if r.passed { "passed" } @else { "FAILED" } } }
                        div.scroll { table {
                            tbody { @for c in &r.checks {
                                tr data-check=(name(&c.name)) {
                                    td class=(match c.status.as_str() { "fail" => "status bad", "skip" => "status muted", _ => "status good" }) { (c.status) }
                                    td { code { (name(&c.name)) } } td.reason { (text(&c.reason)) }
                                }
                            } }
                        } }
                    }
                }
            }
        }
    }
}

/// `GET /findings/{id}`: what `foreman explain ID` says, for a browser.
pub fn finding(e: &Explanation, text: &str, host: &str) -> String {
    let f = &e.finding;
    let title = format!("Finding {} · {} · Foreman on {host}", f.id, f.kind);
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(&title, None))
            body {
                header {
                    div.brand { a href="/" { "← Foreman" } " on " span.host { (host) } }
                }
                main #finding data-finding=(f.id) {
                    h1 { "Finding " (f.id) ": " span class=(kind_class(&f.kind)) { (f.kind) } }
                    p.reason { (f.reason().unwrap_or("")) }
                    div.scroll { table.facts {
                        tbody {
                            tr { th { "task" } td { code { (f.task_id) } " attempt " (f.attempt) } }
                            tr { th { "droid type" } td { (f.droid_type.as_deref().unwrap_or("-")) } }
                            tr { th { "plan" } td { (f.plan_id.as_deref().unwrap_or("-")) } }
                            tr { th { "host" } td { (f.host.as_deref().unwrap_or("this host")) } }
                            tr { th { "seen" } td { "first " (when(&f.first_seen_at)) " (sweep #" (f.first_sweep_id) "), last " (when(&f.last_seen_at)) " (sweep #" (f.last_sweep_id) "), " (f.times_seen) " time(s)" } }
                            tr { th { "decided" } td { (f.action) " → " strong { (f.outcome) }
                                @if let Some(at) = &f.acted_at { " at " (when(at)) }
                                @if let Some(d) = &f.detail { " (" (d) ")" } } }
                        }
                    } }
                    @match &e.inputs {
                        None => { section #row { h2 { "Inputs" } p.muted { "No judge inputs were kept for this finding; the text below says why." } } }
                        Some(i) => {
                            section #row {
                                h2 { "Snapshot row as read" }
                                (fields(&serde_json::to_value(&i.task).unwrap_or_default()))
                            }
                            section #probe {
                                h2 { "Probe at " (when(&crate::activity::ts(i.now))) " (" (i.sweep.as_str()) " sweep)" }
                                @match &i.probe {
                                    None => { p { "No pid to probe." } }
                                    Some(Probe::Gone) => { p.bad { "The pid does not exist." } }
                                    Some(Probe::Unreadable(why)) => { p.warn { "Unreadable: " (why) } }
                                    Some(Probe::Found(members)) => {
                                        div.scroll { table {
                                            thead { tr { th.num { "pid" } th { "state" } th.num { "ppid" } th.num { "start ticks" } th.num { "cpu ticks" } th.num { "io bytes" } } }
                                            tbody { @for m in members { tr {
                                                td.num { (m.stat.pid) } td { (m.stat.state) } td.num { (m.stat.ppid) }
                                                td.num { (m.stat.start_ticks) } td.num { (m.stat.cpu_ticks) }
                                                td.num { (m.io_bytes.map_or("-".into(), |b| b.to_string())) }
                                            } } }
                                        } }
                                    }
                                }
                            }
                            section #policy {
                                h2 { "Policy in force" }
                                (fields(&serde_json::to_value(&i.policy).unwrap_or_default()))
                                p.muted { "Configuration fingerprint " code { (i.config_fingerprint) }
                                    @if i.config_fingerprint == e.config_fingerprint_now { " (the same as now)." } @else { " (changed since)." } }
                            }
                        }
                    }
                    @if let Some(r) = &e.replay {
                        section #replay {
                            h2 { "Judged again from these inputs" }
                            p class=(if r.same { "good" } else { "bad" }) {
                                strong { (r.kind.as_str()) } ": " (r.reason) " — "
                                @if r.same { "the same verdict." } @else { "A DIFFERENT VERDICT: this Foreman would not decide the same way." }
                            }
                        }
                    }
                    section #actions {
                        h2 { "What was done" }
                        @if e.signals.is_empty() && e.alerts.is_empty() {
                            p.muted { "No signal sent and no alert queued." }
                        }
                        @if !e.signals.is_empty() {
                            div.scroll { table {
                                thead { tr { th { "at" } th { "signal" } th.num { "pid" } th { "result" } } }
                                tbody { @for sg in &e.signals { tr { td { (when(&sg.at)) } td { (sg.signal) } td.num { (sg.pid) } td { (sg.result) } } } }
                            } }
                        }
                        @if !e.alerts.is_empty() {
                            div.scroll { table {
                                thead { tr { th { "sink" } th { "state" } th { "queued" } th.num { "attempts" } th { "last error" } } }
                                tbody { @for a in &e.alerts { tr {
                                    td { (a.sink) } td { (a.state) } td { (when(&a.queued_at)) } td.num { (a.attempts) }
                                    td.reason { (a.last_error.as_deref().unwrap_or("")) }
                                } } }
                            } }
                        }
                    }
                    section #explain-text {
                        h2 { "As " code { "foreman explain " (f.id) } " prints it" }
                        pre #explain { (text) }
                    }
                }
            }
        }
    }
    .into_string()
}

/// A JSON object's fields as a definition table; nested values as JSON.
fn fields(v: &serde_json::Value) -> Markup {
    let Some(map) = v.as_object() else {
        return html! { pre { (v.to_string()) } };
    };
    html! {
        div.scroll { table.facts { tbody {
            @for (k, v) in map {
                tr { th { (k) } td { code { (match v {
                    serde_json::Value::String(s) => s.clone(),
                    serde_json::Value::Null => "-".into(),
                    other => other.to_string(),
                }) } } }
            }
        } } }
    }
}

/// A page for a refusal or an error: what happened, and where to go.
pub fn problem(title: &str, why: &str) -> String {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title, None))
            body {
                header { div.brand { a href="/" { "← Foreman" } } }
                main #problem {
                    h1 { (title) }
                    p { (why) }
                }
            }
        }
    }
    .into_string()
}
