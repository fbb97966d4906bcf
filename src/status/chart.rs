//! The status page's findings timeline: one bounded query over the activity
//! log, folded into hourly counts by droid type and kind, drawn as an inline
//! SVG string.
//!
//! The SVG carries no `style` attributes and no `<style>` element (the page's
//! CSP has no 'unsafe-inline'); colours come from the page's stylesheet through
//! the classes `bar`, `k-<kind>`, `axis`, `grid`, `label`, `key`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use anyhow::{Context, Result};
use chrono::{DateTime, Duration, Timelike, Utc};

/// Findings per bucket over a window ending now, by droid type and kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timeline {
    /// First bucket's start, aligned to a whole hour (UTC).
    pub start: DateTime<Utc>,
    /// One hour.
    pub bucket: Duration,
    /// 24 (start + 24h covers `now`).
    pub buckets: usize,
    /// droid type ("-" for none) → kind → count per bucket (each Vec has len == buckets).
    /// At most MAX_TYPES droid types: the busiest (by total, ties by name); the rest
    /// folded into OTHER_TYPES ("other types"), which is an extra series beside them.
    pub series: BTreeMap<String, BTreeMap<String, Vec<u64>>>,
    pub total: u64,
}

pub const MAX_TYPES: usize = 8;
pub const OTHER_TYPES: &str = "other types";
pub const BUCKETS: usize = 24;

/// The kinds a class name may be made from; anything else is `k-other`, so
/// text from the log never reaches an attribute that selects CSS.
const KINDS: [&str; 9] = [
    "dead",
    "zombie",
    "pid_reused",
    "hung",
    "timed_out",
    "orphan",
    "unverifiable",
    "stray",
    "host_lost",
];

/// Shown for a finding without a droid type.
const NO_TYPE: &str = "-";

/// The start of the 24 hourly buckets whose last one holds `now`.
pub fn window_start(now: DateTime<Utc>) -> DateTime<Utc> {
    // Utc has no gaps, so zeroing the sub-hour fields cannot fail; falling
    // back to `now` only keeps this total.
    let hour = now
        .with_minute(0)
        .and_then(|t| t.with_second(0))
        .and_then(|t| t.with_nanosecond(0))
        .unwrap_or(now);
    hour - Duration::hours(BUCKETS as i64 - 1)
}

// The busiest types are picked in SQLite and the rest renamed there, so
// the rows coming back are at most (MAX_TYPES + 1) × kinds × buckets however
// many distinct types a hostile executor invents. SQLite's BINARY collation
// is byte order, the same as `String`'s, so ties break as `fold` breaks them.
// `strftime('%s')` truncates to whole seconds; `start` is a whole hour, so
// the integer division is the floor and 07:00:00.000 lands in 07:00–08:00.
const TIMELINE_SQL: &str = "
    WITH w AS (
        SELECT COALESCE(droid_type, ?4) AS t, kind,
               (CAST(strftime('%s', first_seen_at) AS INTEGER) - ?3) / 3600 AS b
        FROM findings
        WHERE last_seen_at >= ?1 AND first_seen_at >= ?1 AND first_seen_at <= ?2
    ),
    top AS (
        SELECT t FROM w WHERE t <> ?5 GROUP BY t ORDER BY COUNT(*) DESC, t LIMIT ?6
    )
    SELECT CASE WHEN t IN (SELECT t FROM top) THEN t ELSE ?5 END AS tt, kind, b, COUNT(*)
    FROM w
    GROUP BY tt, kind, b";

/// The last 24 hours of findings, counted by when each was first seen. One bounded query (GROUP BY in SQLite, never a row per finding into Rust); uses the last_seen_at index (first_seen ≤ last_seen, so `last_seen_at >= start AND first_seen_at >= start`).
pub fn timeline(conn: &rusqlite::Connection, now: DateTime<Utc>) -> Result<Timeline> {
    let start = window_start(now);
    let mut stmt = conn
        .prepare_cached(TIMELINE_SQL)
        .context("preparing the findings timeline query")?;
    let rows = stmt
        .query_map(
            rusqlite::params![
                crate::activity::ts(start),
                crate::activity::ts(now),
                start.timestamp(),
                NO_TYPE,
                OTHER_TYPES,
                MAX_TYPES as i64,
            ],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Option<i64>>(2)?,
                    r.get::<_, i64>(3)?,
                ))
            },
        )
        .context("reading the findings timeline")?;
    let mut counts = Vec::new();
    for row in rows {
        let (t, kind, b, n) = row.context("reading the findings timeline")?;
        // A first_seen_at SQLite cannot parse has no bucket; it is not charted.
        let Some(b) = b.and_then(|b| usize::try_from(b).ok()) else {
            continue;
        };
        counts.push((Some(t), kind, b, u64::try_from(n).unwrap_or(0)));
    }
    Ok(fold(start, BUCKETS, counts))
}

/// Build a Timeline from (droid_type, kind, bucket index, count) tuples (pure; `timeline` uses it; tests use it directly).
///
/// Tuples with a bucket index ≥ `buckets` are dropped (they are outside the
/// window). A type named OTHER_TYPES is taken as already folded: it is never
/// ranked and always shown as the catch-all.
pub fn fold(
    start: DateTime<Utc>,
    buckets: usize,
    counts: impl IntoIterator<Item = (Option<String>, String, usize, u64)>,
) -> Timeline {
    let mut raw: BTreeMap<String, BTreeMap<String, Vec<u64>>> = BTreeMap::new();
    for (t, kind, b, n) in counts {
        if b >= buckets || n == 0 {
            continue;
        }
        let t = t.unwrap_or_else(|| NO_TYPE.to_string());
        add(&mut raw, t, kind, b, n, buckets);
    }
    let mut ranked: Vec<(u64, &String)> = raw
        .iter()
        .filter(|(t, _)| t.as_str() != OTHER_TYPES)
        .map(|(t, kinds)| (sum(kinds.values().flatten()), t))
        .collect();
    ranked.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
    let keep: BTreeSet<String> = ranked
        .into_iter()
        .take(MAX_TYPES)
        .map(|(_, t)| t.clone())
        .collect();
    let mut series: BTreeMap<String, BTreeMap<String, Vec<u64>>> = BTreeMap::new();
    let mut total = 0u64;
    for (t, kinds) in raw {
        let name = if keep.contains(&t) {
            t
        } else {
            OTHER_TYPES.to_string()
        };
        for (kind, cells) in kinds {
            for (b, n) in cells.into_iter().enumerate().filter(|(_, n)| *n > 0) {
                total = total.saturating_add(n);
                add(&mut series, name.clone(), kind.clone(), b, n, buckets);
            }
        }
    }
    Timeline {
        start,
        bucket: Duration::hours(1),
        buckets,
        series,
        total,
    }
}

fn add(
    map: &mut BTreeMap<String, BTreeMap<String, Vec<u64>>>,
    t: String,
    kind: String,
    b: usize,
    n: u64,
    buckets: usize,
) {
    let cells = map
        .entry(t)
        .or_default()
        .entry(kind)
        .or_insert_with(|| vec![0; buckets]);
    if let Some(c) = cells.get_mut(b) {
        *c = c.saturating_add(n);
    }
}

fn sum<'a>(it: impl IntoIterator<Item = &'a u64>) -> u64 {
    it.into_iter().fold(0u64, |a, n| a.saturating_add(*n))
}

// Geometry, in viewBox units. 24 columns make it 528 wide: on a 360 px phone
// that scales by ~0.68, so 11-unit text is still ~7.5 px.
const LABEL_X: i64 = 2;
/// Room for a 24-character label at font-size 11.
const PLOT_X: i64 = 156;
const COL_W: i64 = 14;
const BAR_W: i64 = 12;
/// Right of the plot: the max-count and "UTC" labels.
const RIGHT: i64 = 36;
const STRIP_H: i64 = 40;
const STRIP_GAP: i64 = 12;
const TOP: i64 = 8;
/// Characters of a droid type or kind kept in labels and titles.
const NAME_CHARS: usize = 24;
/// Escaped bytes of a name in a bar's title: a bar title is repeated up to
/// strips × 24 × kinds times, and a name of quotes would otherwise escape to
/// 6 bytes a character.
const TITLE_BYTES: usize = 40;
/// Escaped bytes of a strip label, shown once per strip.
const LABEL_BYTES: usize = 96;

/// The chart as an inline `<svg class="timeline" ...>` element, every text escaped.
pub fn svg(t: &Timeline) -> String {
    let cols = i64::try_from(t.buckets).unwrap_or(0);
    let plot_end = PLOT_X + cols * COL_W;
    let width = plot_end + RIGHT;
    let strips: Vec<(&String, &BTreeMap<String, Vec<u64>>)> = order_types(t);
    let n_strips = i64::try_from(strips.len().max(1)).unwrap_or(1);
    let strips_end = TOP + n_strips * (STRIP_H + STRIP_GAP) - STRIP_GAP;
    let axis_y = strips_end + 14;

    // One scale for every strip, so a tall bar means the same in each.
    let max = strips
        .iter()
        .flat_map(|(_, kinds)| {
            (0..t.buckets).map(move |b| sum(kinds.values().filter_map(|c| c.get(b))))
        })
        .max()
        .unwrap_or(0);

    let kinds_present: Vec<&str> = legend_kinds(t);
    let legend_y = axis_y + 16;
    let (legend, legend_rows) = legend(&kinds_present, legend_y, width);
    let height = legend_y + legend_rows * 16 + 4;

    let mut s = String::with_capacity(4096);
    // Writing to a String cannot fail; the results are dropped for that reason.
    let label = format!("{} findings in the last 24 h", t.total);
    let _ = write!(
        s,
        "<svg class=\"timeline\" xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {width} {height}\" \
         width=\"100%\" preserveAspectRatio=\"xMinYMin meet\" role=\"img\" aria-label=\"{}\" \
         font-family=\"sans-serif\" font-size=\"11\" fill=\"currentColor\">",
        esc(&label)
    );

    if strips.is_empty() {
        let base = TOP + STRIP_H;
        let _ = write!(
            s,
            "<line class=\"axis\" x1=\"{PLOT_X}\" y1=\"{base}\" x2=\"{plot_end}\" y2=\"{base}\" stroke=\"currentColor\"/>\
             <text class=\"label empty\" x=\"{}\" y=\"{}\" text-anchor=\"middle\">No findings in the last 24 h</text>",
            (PLOT_X + plot_end) / 2,
            TOP + STRIP_H / 2
        );
    }

    for (i, (name, kinds)) in strips.iter().enumerate() {
        let top = TOP + i64::try_from(i).unwrap_or(0) * (STRIP_H + STRIP_GAP);
        let base = top + STRIP_H;
        let shown = clip_esc(name, NAME_CHARS, LABEL_BYTES);
        let in_title = clip_esc(name, NAME_CHARS, TITLE_BYTES);
        let _ = write!(
            s,
            "<g class=\"strip\"><text class=\"label type\" x=\"{LABEL_X}\" y=\"{}\">{shown}</text>\
             <line class=\"grid\" x1=\"{PLOT_X}\" y1=\"{top}\" x2=\"{plot_end}\" y2=\"{top}\" stroke=\"currentColor\" stroke-opacity=\"0.2\"/>\
             <text class=\"label max\" x=\"{}\" y=\"{}\">{}</text>\
             <line class=\"axis\" x1=\"{PLOT_X}\" y1=\"{base}\" x2=\"{plot_end}\" y2=\"{base}\" stroke=\"currentColor\"/>",
            top + STRIP_H / 2 + 4,
            plot_end + 3,
            top + 4,
            compact(max),
        );
        let ordered = order_kinds(kinds);
        for b in 0..t.buckets {
            let x = PLOT_X + i64::try_from(b).unwrap_or(0) * COL_W + (COL_W - BAR_W) / 2;
            let hours = hour_span(t, b);
            let mut cum = 0u64;
            let mut prev = base;
            for (kind, cells) in &ordered {
                let n = cells.get(b).copied().unwrap_or(0);
                if n == 0 {
                    continue;
                }
                cum = cum.saturating_add(n);
                // Rounding the running total, not each height, keeps a stack
                // as tall as its column's sum; a 1-unit floor (which may
                // overshoot a little) keeps a small count visible and
                // hoverable beside a large one.
                let target = base - scaled(cum, max);
                let y = target.min(prev - 1);
                let h = prev - y;
                prev = y;
                let _ = write!(
                    s,
                    "<rect class=\"bar k-{}\" x=\"{x}\" y=\"{y}\" width=\"{BAR_W}\" height=\"{h}\"><title>{n} {} · {in_title} · {hours}</title></rect>",
                    kind_class(kind),
                    kind_text(kind),
                );
            }
        }
        s.push_str("</g>");
    }

    // Hour ticks on every column boundary, a label every 6 hours.
    s.push_str("<g class=\"x-axis\">");
    for b in 0..=t.buckets {
        let x = PLOT_X + i64::try_from(b).unwrap_or(0) * COL_W;
        let at = bucket_start(t, b);
        let long = at.is_some_and(|at| at.hour().is_multiple_of(6));
        let _ = write!(
            s,
            "<line class=\"axis\" x1=\"{x}\" y1=\"{strips_end}\" x2=\"{x}\" y2=\"{}\" stroke=\"currentColor\"/>",
            strips_end + if long { 5 } else { 3 }
        );
        if let Some(at) = at.filter(|_| long && b < t.buckets) {
            let _ = write!(
                s,
                "<text class=\"label hour\" x=\"{x}\" y=\"{axis_y}\" text-anchor=\"middle\">{}</text>",
                at.format("%H:00")
            );
        }
    }
    let _ = write!(
        s,
        "<text class=\"label\" x=\"{}\" y=\"{axis_y}\">UTC</text></g>",
        plot_end + 3
    );
    s.push_str(&legend);
    s.push_str("</svg>");
    s
}

/// Strips in reading order: busiest first, the catch-all last.
fn order_types(t: &Timeline) -> Vec<(&String, &BTreeMap<String, Vec<u64>>)> {
    let mut v: Vec<_> = t.series.iter().collect();
    v.sort_by(|a, b| {
        let other = |n: &str| n == OTHER_TYPES;
        other(a.0)
            .cmp(&other(b.0))
            .then_with(|| sum(b.1.values().flatten()).cmp(&sum(a.1.values().flatten())))
            .then_with(|| a.0.cmp(b.0))
    });
    v
}

/// Known kinds in their fixed order, so colours stack the same way in every
/// column; unknown kinds after them by name.
fn order_kinds(kinds: &BTreeMap<String, Vec<u64>>) -> Vec<(&String, &Vec<u64>)> {
    let mut v: Vec<_> = kinds.iter().collect();
    v.sort_by_key(|(k, _)| (KINDS.iter().position(|x| x == k).unwrap_or(KINDS.len()), *k));
    v
}

/// Kinds present, with every unknown kind collapsed into one "other" entry,
/// so hostile kind strings cannot grow the legend.
fn legend_kinds(t: &Timeline) -> Vec<&'static str> {
    let present: BTreeSet<&'static str> = t
        .series
        .values()
        .flat_map(|k| k.iter())
        .filter(|(_, cells)| cells.iter().any(|n| *n > 0))
        .map(|(k, _)| kind_class(k))
        .collect();
    KINDS
        .iter()
        .copied()
        .chain(std::iter::once("other"))
        .filter(|k| present.contains(k))
        .collect()
}

fn legend(kinds: &[&str], y0: i64, width: i64) -> (String, i64) {
    let mut s = String::from("<g class=\"legend\">");
    if kinds.is_empty() {
        s.push_str("</g>");
        return (s, 0);
    }
    let (mut x, mut row) = (PLOT_X, 0i64);
    for k in kinds {
        // Roughly 6.5 units a character at font-size 11, plus the swatch.
        let w = 20 + i64::try_from(k.len()).unwrap_or(0) * 7;
        if x + w > width && x > PLOT_X {
            x = PLOT_X;
            row += 1;
        }
        let y = y0 + row * 16;
        let _ = write!(
            s,
            "<rect class=\"key k-{k}\" x=\"{x}\" y=\"{}\" width=\"10\" height=\"10\"/>\
             <text class=\"label\" x=\"{}\" y=\"{y}\">{k}</text>",
            y - 9,
            x + 14
        );
        x += w;
    }
    s.push_str("</g>");
    (s, row + 1)
}

fn scaled(n: u64, max: u64) -> i64 {
    if max == 0 {
        return 0;
    }
    let f = (n as f64 / max as f64).min(1.0);
    (f * STRIP_H as f64).round() as i64
}

/// `None` only for a hand-built Timeline whose buckets run past chrono's range.
fn bucket_start(t: &Timeline, b: usize) -> Option<DateTime<Utc>> {
    let offset = t.bucket.checked_mul(i32::try_from(b).ok()?)?;
    t.start.checked_add_signed(offset)
}

fn hour_span(t: &Timeline, b: usize) -> String {
    let from = bucket_start(t, b);
    let to = bucket_start(t, b.saturating_add(1));
    let hm = |d: Option<DateTime<Utc>>| {
        d.map_or_else(|| "?".to_string(), |d| d.format("%H:%M").to_string())
    };
    format!("{}–{} UTC", hm(from), hm(to))
}

pub fn kind_class(kind: &str) -> &'static str {
    KINDS
        .iter()
        .find(|k| **k == kind)
        .copied()
        .unwrap_or("other")
}

fn kind_text(kind: &str) -> String {
    clip_esc(kind, NAME_CHARS, TITLE_BYTES)
}

/// Max count label: exact while short, then k/M/G so it fits the margin.
fn compact(n: u64) -> String {
    const UNITS: [(u64, &str); 5] = [
        (1_000_000_000_000_000, "E"),
        (1_000_000_000_000, "T"),
        (1_000_000_000, "G"),
        (1_000_000, "M"),
        (1_000, "k"),
    ];
    if n < 10_000 {
        return n.to_string();
    }
    for (u, suffix) in UNITS {
        if n >= u {
            return format!("{}{suffix}", n / u);
        }
    }
    n.to_string()
}

/// `s` escaped, without the characters no XML document may hold (controls,
/// U+FFFE/U+FFFF), cut to at most `max_chars` characters and `max_bytes`
/// escaped bytes (plus the "…" that marks a cut).
fn clip_esc(s: &str, max_chars: usize, max_bytes: usize) -> String {
    let kept: Vec<char> = s.chars().filter(|c| !forbidden(*c)).collect();
    let fits = kept.len() <= max_chars && esc_len(&kept) <= max_bytes;
    let mut out = String::new();
    if fits {
        kept.iter().for_each(|c| push_esc(&mut out, *c));
        return out;
    }
    for (i, c) in kept.iter().enumerate() {
        let before = out.len();
        push_esc(&mut out, *c);
        if i + 1 >= max_chars || out.len() > max_bytes {
            out.truncate(before);
            break;
        }
    }
    out.push('…');
    out
}

fn esc_len(chars: &[char]) -> usize {
    chars
        .iter()
        .map(|c| match c {
            '&' | '\'' => 5,
            '<' | '>' => 4,
            '"' => 6,
            c => c.len_utf8(),
        })
        .sum()
}

fn forbidden(c: char) -> bool {
    c.is_control() || c == '\u{FFFE}' || c == '\u{FFFF}'
}

/// Escapes text for both element content and quoted attribute values.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    s.chars().for_each(|c| push_esc(&mut out, c));
    out
}

fn push_esc(out: &mut String, c: char) {
    match c {
        '&' => out.push_str("&amp;"),
        '<' => out.push_str("&lt;"),
        '>' => out.push_str("&gt;"),
        '"' => out.push_str("&quot;"),
        '\'' => out.push_str("&#39;"),
        c if forbidden(c) => {}
        c => out.push(c),
    }
}

#[cfg(test)]
#[path = "chart_tests.rs"]
mod tests;
