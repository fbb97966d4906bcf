use super::*;
use chrono::TimeZone;
use proptest::prelude::*;
use rusqlite::Connection;

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 3, 6, 39, 12).unwrap() + Duration::milliseconds(123)
}

fn ms(n: i64) -> Duration {
    Duration::milliseconds(n)
}

/// A real activity-log file with the findings table's relevant columns.
fn db() -> (tempfile::TempDir, Connection) {
    let dir = tempfile::tempdir().expect("tempdir");
    let conn = Connection::open(dir.path().join("activity.db")).expect("open");
    conn.execute_batch(
        "CREATE TABLE findings (id INTEGER PRIMARY KEY, task_id TEXT NOT NULL,
             attempt INTEGER NOT NULL, kind TEXT NOT NULL, droid_type TEXT,
             first_seen_at TEXT NOT NULL, last_seen_at TEXT NOT NULL);
         CREATE INDEX findings_last_seen ON findings(last_seen_at);",
    )
    .expect("schema");
    (dir, conn)
}

fn insert(conn: &Connection, droid: Option<&str>, kind: &str, first: DateTime<Utc>) {
    // last_seen trails first_seen, as in the log.
    let last = first + Duration::minutes(5);
    conn.execute(
        "INSERT INTO findings (task_id, attempt, kind, droid_type, first_seen_at, last_seen_at)
         VALUES ('t', 1, ?1, ?2, ?3, ?4)",
        rusqlite::params![
            kind,
            droid,
            crate::activity::ts(first),
            crate::activity::ts(last)
        ],
    )
    .expect("insert");
}

/// (droid type, kind, bucket) → count for every non-zero cell.
fn cells(t: &Timeline) -> BTreeMap<(String, String, usize), u64> {
    let mut out = BTreeMap::new();
    for (ty, kinds) in &t.series {
        for (k, v) in kinds {
            assert_eq!(v.len(), t.buckets, "{ty}/{k} has the wrong length");
            for (b, n) in v.iter().enumerate().filter(|(_, n)| **n > 0) {
                out.insert((ty.clone(), k.clone(), b), *n);
            }
        }
    }
    out
}

#[test]
fn status_chart_window_is_24_whole_hours_covering_now() {
    let start = window_start(now());
    assert_eq!(start, Utc.with_ymd_and_hms(2026, 12, 2, 7, 0, 0).unwrap());
    assert!(start + Duration::hours(24) > now());
    // Exactly on the hour: the hour just begun is the last bucket.
    let on = Utc.with_ymd_and_hms(2026, 12, 3, 6, 0, 0).unwrap();
    assert_eq!(
        window_start(on),
        Utc.with_ymd_and_hms(2026, 12, 2, 7, 0, 0).unwrap()
    );
}

#[test]
fn status_chart_timeline_bucket_boundaries() {
    let start = window_start(now());
    let h = Duration::hours(1);
    // (first_seen_at, the bucket it is counted in, None when outside the window)
    let cases: [(&str, DateTime<Utc>, Option<usize>); 8] = [
        ("1 ms before start", start - ms(1), None),
        ("at start", start, Some(0)),
        (
            "1 ms before the first hour ends",
            start + h - ms(1),
            Some(0),
        ),
        ("on the hour boundary", start + h, Some(1)),
        ("on the last boundary", start + h * 23, Some(23)),
        ("at now", now(), Some(23)),
        ("1 ms after now", now() + ms(1), None),
        ("a day ago", now() - Duration::hours(25), None),
    ];
    for (what, first, want) in cases {
        let (_dir, conn) = db();
        insert(&conn, Some("builder"), "dead", first);
        let t = timeline(&conn, now()).expect("timeline");
        assert_eq!(t.start, start, "{what}");
        assert_eq!(t.buckets, 24, "{what}");
        assert_eq!(t.bucket, h, "{what}");
        let got: Vec<usize> = cells(&t).keys().map(|(_, _, b)| *b).collect();
        assert_eq!(got, want.into_iter().collect::<Vec<_>>(), "{what}");
        assert_eq!(t.total, u64::from(want.is_some()), "{what}");
    }
}

#[test]
fn status_chart_timeline_counts_by_first_seen_not_last_seen() {
    let (_dir, conn) = db();
    // Seen before the window, still being seen now: not a finding of these 24 h.
    conn.execute(
        "INSERT INTO findings (task_id, attempt, kind, droid_type, first_seen_at, last_seen_at)
         VALUES ('t', 1, 'hung', 'x', ?1, ?2)",
        rusqlite::params![
            crate::activity::ts(now() - Duration::hours(30)),
            crate::activity::ts(now())
        ],
    )
    .expect("insert");
    let t = timeline(&conn, now()).expect("timeline");
    assert_eq!(t.total, 0);
    assert!(t.series.is_empty());
}

#[test]
fn status_chart_timeline_skips_unparsable_times() {
    let (_dir, conn) = db();
    // Sorts inside the window as text, but SQLite cannot read it as a time.
    conn.execute(
        "INSERT INTO findings (task_id, attempt, kind, droid_type, first_seen_at, last_seen_at)
         VALUES ('t', 1, 'dead', 'x', '2026-12-03 junk', '2026-12-03 junk')",
        [],
    )
    .expect("insert");
    insert(&conn, Some("x"), "dead", now());
    let t = timeline(&conn, now()).expect("timeline");
    assert_eq!(t.total, 1);
    assert_eq!(t.series["x"]["dead"][23], 1);
}

#[test]
fn status_chart_timeline_null_type_and_grouping() {
    let (_dir, conn) = db();
    let start = window_start(now());
    insert(&conn, None, "zombie", start + Duration::minutes(1));
    insert(&conn, None, "zombie", start + Duration::minutes(59));
    insert(&conn, None, "dead", start + Duration::minutes(61));
    insert(&conn, Some("builder"), "hung", now());
    let t = timeline(&conn, now()).expect("timeline");
    let want: BTreeMap<(String, String, usize), u64> = [
        (("-".to_string(), "zombie".to_string(), 0), 2),
        (("-".to_string(), "dead".to_string(), 1), 1),
        (("builder".to_string(), "hung".to_string(), 23), 1),
    ]
    .into_iter()
    .collect();
    assert_eq!(cells(&t), want);
    assert_eq!(t.total, 4);
}

#[test]
fn status_chart_timeline_folds_beyond_max_types() {
    let (_dir, conn) = db();
    let start = window_start(now());
    // t00 busiest (12 findings) … t09 (3), and two more with 3 each: only
    // the eight busiest keep a strip.
    let mut rows = 0u64;
    let mut types: Vec<(String, u64)> = (0..10u64).map(|i| (format!("t{i:02}"), 12 - i)).collect();
    types.push(("z-tie".into(), 3));
    types.push(("a-tie".into(), 3));
    for (ty, n) in &types {
        for j in 0..*n {
            let at = start + Duration::minutes(i64::try_from(j).unwrap() * 7);
            insert(
                &conn,
                Some(ty),
                if j % 2 == 0 { "dead" } else { "hung" },
                at,
            );
            rows += 1;
        }
    }
    let t = timeline(&conn, now()).expect("timeline");
    let mut kept: Vec<&str> = t.series.keys().map(String::as_str).collect();
    kept.sort_unstable();
    // Busiest eight: t00..t07 (12..5); then t08 = 4, t09 = 3, a-tie = 3,
    // z-tie = 3 are folded.
    let mut want: Vec<&str> = vec![
        "t00",
        "t01",
        "t02",
        "t03",
        "t04",
        "t05",
        "t06",
        "t07",
        OTHER_TYPES,
    ];
    want.sort_unstable();
    assert_eq!(kept, want);
    let other: u64 = t.series[OTHER_TYPES].values().flatten().sum();
    assert_eq!(other, 4 + 3 + 3 + 3);
    assert_eq!(t.total, rows);
    let charted: u64 = cells(&t).values().sum();
    assert_eq!(charted, rows);
}

#[test]
fn status_chart_timeline_tie_at_the_cut_breaks_by_name() {
    let (_dir, conn) = db();
    let at = window_start(now()) + Duration::minutes(3);
    for i in 0..7 {
        for _ in 0..3 {
            insert(&conn, Some(&format!("busy{i}")), "dead", at);
        }
    }
    insert(&conn, Some("zeta"), "dead", at);
    insert(&conn, Some("alpha"), "dead", at);
    let t = timeline(&conn, now()).expect("timeline");
    assert!(t.series.contains_key("alpha"));
    assert!(!t.series.contains_key("zeta"));
    assert_eq!(t.series[OTHER_TYPES]["dead"][0], 1);
    // fold breaks the tie the same way as the query.
    let f = fold(
        t.start,
        24,
        (0..7)
            .map(|i| (Some(format!("busy{i}")), "dead".to_string(), 0, 3))
            .chain([
                (Some("zeta".to_string()), "dead".to_string(), 0, 1),
                (Some("alpha".to_string()), "dead".to_string(), 0, 1),
            ]),
    );
    assert_eq!(f, t);
}

#[test]
fn status_chart_timeline_query_uses_last_seen_index() {
    let (_dir, conn) = db();
    let mut stmt = conn
        .prepare(&format!("EXPLAIN QUERY PLAN {TIMELINE_SQL}"))
        .expect("explain");
    let plan: Vec<String> = stmt
        .query_map(rusqlite::params!["a", "b", 0, "-", OTHER_TYPES, 8], |r| {
            r.get::<_, String>(3)
        })
        .expect("plan")
        .collect::<rusqlite::Result<_>>()
        .expect("rows");
    let scans: Vec<&String> = plan.iter().filter(|p| p.contains("findings")).collect();
    assert!(!scans.is_empty(), "{plan:?}");
    for p in scans {
        assert!(p.contains("findings_last_seen"), "{plan:?}");
    }
}

/// (droid type, kind, bucket, count), as `fold` takes them but borrowed.
type Cell<'a> = (Option<&'a str>, &'a str, usize, u64);

fn tl(cells: &[Cell]) -> Timeline {
    fold(
        window_start(now()),
        24,
        cells
            .iter()
            .map(|(t, k, b, n)| (t.map(str::to_string), k.to_string(), *b, *n)),
    )
}

/// A small well-formedness check: tags balance, attribute values are quoted
/// and free of `<`, and every `&` in text or attributes starts an entity.
/// Returns the text content (outside tags), entities left as they are.
fn well_formed(s: &str) -> Result<String, String> {
    let mut stack: Vec<&str> = Vec::new();
    let mut text = String::new();
    let mut rest = s;
    let entity_ok = |t: &str| -> bool {
        t.match_indices('&').all(|(i, _)| {
            ["&amp;", "&lt;", "&gt;", "&quot;", "&#39;"]
                .iter()
                .any(|e| t[i..].starts_with(e))
        })
    };
    while let Some(open) = rest.find('<') {
        text.push_str(&rest[..open]);
        if rest[..open].contains('>') {
            return Err(format!("raw > in text near {:?}", &rest[..open]));
        }
        let close = rest[open..].find('>').ok_or("unterminated tag")? + open;
        let tag = &rest[open + 1..close];
        if tag.contains('<') {
            return Err(format!("< inside tag {tag:?}"));
        }
        if !tag.matches('"').count().is_multiple_of(2) || tag.contains('\'') {
            return Err(format!("unbalanced quotes in {tag:?}"));
        }
        if !entity_ok(tag) {
            return Err(format!("bare & in {tag:?}"));
        }
        if let Some(name) = tag.strip_prefix('/') {
            match stack.pop() {
                Some(top) if top == name => {}
                other => return Err(format!("</{name}> closes {other:?}")),
            }
        } else {
            let name = tag
                .split(|c: char| c.is_whitespace() || c == '/')
                .next()
                .unwrap_or("");
            if name.is_empty() {
                return Err(format!("empty tag name in {tag:?}"));
            }
            if !tag.ends_with('/') {
                stack.push(name);
            }
        }
        rest = &rest[close + 1..];
    }
    text.push_str(rest);
    if !stack.is_empty() {
        return Err(format!("unclosed {stack:?}"));
    }
    if !entity_ok(&text) {
        return Err("bare & in text".into());
    }
    if !s.starts_with("<svg class=\"timeline\"") || !s.ends_with("</svg>") {
        return Err("not one svg element".into());
    }
    Ok(text)
}

#[test]
fn status_chart_svg_escapes_hostile_types() {
    let t = tl(&[
        (Some("<script>alert(1)</script>"), "dead", 3, 2),
        (Some("\"onload=\"x"), "hung", 4, 1),
        (Some("a&b'c"), "zombie", 5, 1),
        (Some("bell\u{7}\u{0}\u{1b}[31mred\u{9f}"), "stray", 6, 1),
    ]);
    let s = svg(&t);
    well_formed(&s).expect("well formed");
    assert!(!s.contains("<script"), "{s}");
    assert!(!s.contains("\"onload"), "{s}");
    // 25 characters: cut to 24 with the ellipsis.
    assert!(s.contains("&lt;script&gt;alert(1)&lt;/scrip…"), "{s}");
    assert!(s.contains("&quot;onload=&quot;x"));
    assert!(s.contains("a&amp;b&#39;c"));
    assert!(s.contains("bell[31mred"), "controls stripped: {s}");
    assert!(!s.chars().any(|c| c.is_control()));
    // No inline styles: the page's CSP forbids them.
    assert!(!s.contains("style="));
    assert!(!s.contains("<style"));
}

#[test]
fn status_chart_svg_long_type_is_truncated() {
    let long = "é<".repeat(5_000);
    let s = svg(&tl(&[(Some(&long), "dead", 0, 1)]));
    well_formed(&s).expect("well formed");
    let shown = format!("{}…", "é&lt;".repeat(11) + "é");
    assert!(s.contains(&format!(">{shown}</text>")), "{s}");
    assert!(s.len() < 10_000, "{}", s.len());
}

#[test]
fn status_chart_clip_esc_bounds_chars_and_bytes() {
    // (input, max chars, max escaped bytes, expected)
    let cases: [(&str, usize, usize, &str); 8] = [
        ("builder", 24, 40, "builder"),
        ("", 24, 40, ""),
        ("abcdef", 4, 40, "abc…"),
        ("abcd", 4, 40, "abcd"),
        ("a<b", 24, 40, "a&lt;b"),
        ("\"\"\"\"", 24, 12, "&quot;&quot;…"),
        ("x\u{0}y\u{1b}z\u{ffff}", 24, 40, "xyz"),
        ("ééééé", 24, 6, "ééé…"),
    ];
    for (input, chars, bytes, want) in cases {
        assert_eq!(clip_esc(input, chars, bytes), want, "{input:?}");
    }
}

#[test]
fn status_chart_svg_kind_classes_come_from_the_allowlist() {
    let cases: [(&str, &str); 5] = [
        ("dead", "bar k-dead"),
        ("pid_reused", "bar k-pid_reused"),
        ("host_lost", "bar k-host_lost"),
        ("x\" onclick=\"y", "bar k-other"),
        ("Dead", "bar k-other"),
    ];
    for (kind, class) in cases {
        let s = svg(&tl(&[(Some("builder"), kind, 0, 1)]));
        well_formed(&s).unwrap_or_else(|e| panic!("{kind}: {e}"));
        assert!(
            s.contains(&format!("<rect class=\"{class}\"")),
            "{kind}: {s}"
        );
        assert_eq!(s.matches("<rect class=\"bar").count(), 1, "{kind}");
    }
    let s = svg(&tl(&[(Some("b"), "x\" onclick=\"y", 0, 1)]));
    assert!(!s.contains("onclick=\"y"));
    assert!(s.contains("x&quot; onclick=&quot;y"));
}

#[test]
fn status_chart_svg_one_bar_per_nonzero_cell() {
    let cases: Vec<(&str, Vec<Cell>)> = vec![
        ("empty", vec![]),
        ("zero counts", vec![(Some("a"), "dead", 0, 0)]),
        ("one", vec![(Some("a"), "dead", 0, 1)]),
        (
            "stacked",
            vec![
                (Some("a"), "dead", 0, 1),
                (Some("a"), "hung", 0, 100),
                (None, "hung", 0, 1),
            ],
        ),
        (
            "merged duplicates",
            vec![(Some("a"), "dead", 5, 1), (Some("a"), "dead", 5, 2)],
        ),
        ("outside the window", vec![(Some("a"), "dead", 24, 1)]),
        (
            "folded",
            (0..12)
                .map(|i| {
                    (
                        Some(["a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l"][i]),
                        "dead",
                        i,
                        1,
                    )
                })
                .collect(),
        ),
    ];
    for (what, input) in cases {
        let t = tl(&input);
        let s = svg(&t);
        well_formed(&s).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(
            s.matches("<rect class=\"bar").count(),
            cells(&t).len(),
            "{what}"
        );
        assert_eq!(s.matches("<title>").count(), cells(&t).len(), "{what}");
    }
}

#[test]
fn status_chart_svg_titles_labels_and_legend() {
    let t = tl(&[
        (Some("builder"), "dead", 7, 3),
        (Some("builder"), "hung", 7, 2),
        (Some("tester"), "dead", 0, 1),
    ]);
    let s = svg(&t);
    well_formed(&s).expect("well formed");
    // start is 07:00 on the day before, so bucket 7 is 14:00–15:00.
    assert!(
        s.contains("<title>3 dead · builder · 14:00–15:00 UTC</title>"),
        "{s}"
    );
    assert!(s.contains("<title>2 hung · builder · 14:00–15:00 UTC</title>"));
    assert!(s.contains("<title>1 dead · tester · 07:00–08:00 UTC</title>"));
    assert!(s.contains("aria-label=\"6 findings in the last 24 h\""));
    assert!(s.contains("role=\"img\""));
    assert!(s.contains("viewBox=\"0 0 "));
    assert!(s.contains("width=\"100%\""));
    // Common scale: the max stacked column (5) is labelled on each strip.
    assert_eq!(s.matches("<text class=\"label max\"").count(), 2);
    assert_eq!(s.matches(">5</text>").count(), 2);
    // Hour labels every 6 hours: 12:00, 18:00, 00:00, 06:00.
    for h in ["12:00", "18:00", "00:00", "06:00"] {
        assert!(s.contains(&format!(">{h}</text>")), "{h}");
    }
    assert!(!s.contains(">07:00</text>"));
    // Legend: the kinds present, in the fixed order.
    let dead = s.find("<rect class=\"key k-dead\"").expect("dead key");
    let hung = s.find("<rect class=\"key k-hung\"").expect("hung key");
    assert!(dead < hung);
    assert!(!s.contains("key k-zombie"));
    // Busiest strip first.
    assert!(s.find(">builder</text>") < s.find(">tester</text>"));
    for class in ["class=\"axis\"", "class=\"grid\"", "class=\"label"] {
        assert!(s.contains(class), "{class}");
    }
}

#[test]
fn status_chart_svg_empty_timeline() {
    let t = tl(&[]);
    let s = svg(&t);
    well_formed(&s).expect("well formed");
    assert!(s.starts_with("<svg class=\"timeline\""));
    assert!(s.contains("No findings in the last 24 h"));
    assert!(s.contains("aria-label=\"0 findings in the last 24 h\""));
    assert!(s.contains("class=\"axis\""));
    assert!(!s.contains("<rect class=\"bar"));
}

#[test]
fn status_chart_svg_size_is_capped() {
    // Every strip full: MAX_TYPES types plus the catch-all, every kind in
    // every hour, names that escape worst (each `"` becomes 6 bytes), huge counts.
    let mut input = Vec::new();
    for i in 0..(MAX_TYPES + 3) {
        let name = format!("{i}{}", "\"".repeat(10_000));
        for kind in KINDS {
            for b in 0..24 {
                input.push((Some(name.clone()), kind.to_string(), b, u64::MAX / 2));
            }
        }
    }
    let t = fold(window_start(now()), 24, input);
    assert_eq!(t.series.len(), MAX_TYPES + 1);
    let s = svg(&t);
    well_formed(&s).expect("well formed");
    assert_eq!(
        s.matches("<rect class=\"bar").count(),
        (MAX_TYPES + 1) * 24 * KINDS.len()
    );
    eprintln!("full chart, hostile names: {} bytes", s.len());
    assert!(s.len() < 400_000, "{} bytes", s.len());
    // Typical names: the same density stays small.
    let mut input = Vec::new();
    for i in 0..MAX_TYPES {
        for kind in KINDS {
            for b in 0..24 {
                input.push((Some(format!("droid-{i}")), kind.to_string(), b, 40));
            }
        }
    }
    let s = svg(&fold(window_start(now()), 24, input));
    eprintln!("full chart, typical names: {} bytes", s.len());
    assert!(s.len() < 300_000, "{} bytes", s.len());
}

fn hostile() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[<>&\"' a-z\\x00-\\x1f\u{85}\u{FFFF}]{0,40}",
        Just("<script>alert(1)</script>".to_string()),
        Just("\"onload=\"x".to_string()),
        Just(OTHER_TYPES.to_string()),
        Just("-".to_string()),
    ]
}

fn kind() -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::sample::select(KINDS.to_vec()).prop_map(str::to_string),
        hostile(),
    ]
}

fn tuples() -> impl Strategy<Value = Vec<(Option<String>, String, usize, u64)>> {
    proptest::collection::vec(
        (
            proptest::option::of(prop_oneof![hostile(), "t[0-9]{1,2}"]),
            kind(),
            0usize..30,
            prop_oneof![0u64..5, 0u64..=u64::MAX / 1_000_000],
        ),
        0..64,
    )
}

proptest! {
    #[test]
    fn status_chart_fold_preserves_counts(input in tuples()) {
        let t = fold(window_start(now()), 24, input.clone());
        prop_assert!(t.series.len() <= MAX_TYPES + 1);
        // Expected cells per input type (None → "-").
        let mut by_type: BTreeMap<String, BTreeMap<(String, usize), u64>> = BTreeMap::new();
        let mut total = 0u64;
        for (ty, k, b, n) in &input {
            if *b < 24 && *n > 0 {
                let ty = ty.clone().unwrap_or_else(|| "-".into());
                *by_type.entry(ty).or_default().entry((k.clone(), *b)).or_default() += n;
                total += n;
            }
        }
        prop_assert_eq!(t.total, total);
        let got = cells(&t);
        prop_assert_eq!(got.values().sum::<u64>(), total);
        let mut folded: BTreeMap<(String, usize), u64> = BTreeMap::new();
        let mut folded_max = 0u64;
        for (ty, want) in &by_type {
            if ty != OTHER_TYPES && t.series.contains_key(ty) {
                let mine: BTreeMap<(String, usize), u64> = got
                    .iter()
                    .filter(|((t2, _, _), _)| t2 == ty)
                    .map(|((_, k, b), n)| ((k.clone(), *b), *n))
                    .collect();
                prop_assert_eq!(&mine, want);
            } else {
                if ty != OTHER_TYPES {
                    folded_max = folded_max.max(want.values().sum());
                }
                for (key, n) in want {
                    *folded.entry(key.clone()).or_default() += n;
                }
            }
        }
        let other: BTreeMap<(String, usize), u64> = got
            .iter()
            .filter(|((t2, _, _), _)| t2 == OTHER_TYPES)
            .map(|((_, k, b), n)| ((k.clone(), *b), *n))
            .collect();
        prop_assert_eq!(other, folded);
        // Every kept type is at least as busy as every folded one.
        for (ty, kinds) in &t.series {
            if ty != OTHER_TYPES {
                prop_assert!(kinds.values().flatten().sum::<u64>() >= folded_max);
            }
        }
    }

    #[test]
    fn status_chart_svg_never_leaks_markup(input in tuples(), big in any::<bool>()) {
        let input: Vec<_> = input
            .into_iter()
            .map(|(t, k, b, n)| (t, k, b, if big { n.saturating_mul(1_000_000) } else { n }))
            .collect();
        let t = fold(window_start(now()), 24, input.clone());
        let s = svg(&t);
        let text = well_formed(&s).map_err(TestCaseError::fail)?;
        prop_assert!(!text.contains('<'));
        prop_assert!(!s.contains("<script"));
        prop_assert!(!s.chars().any(|c| c.is_control()));
        prop_assert_eq!(s.matches("<rect class=\"bar").count(), cells(&t).len());
    }
}

/// A droid type or kind made to break out of the chart's attributes or
/// element: quotes, `onload=`, `</svg>`, CDATA ends, comments, controls.
#[test]
fn status_attack_chart_hostile_type_and_kind_stay_text() {
    let start = window_start(now());
    let hostile = [
        "x\" onload=\"alert(1)\" y=\"",
        "x' onload='alert(1)' y='",
        "</svg><script>alert(1)</script>",
        "]]><![CDATA[<script>",
        "<!--",
        "\0\u{1b}[31m\u{202e}\u{fffe}",
    ];
    let counts: Vec<_> = hostile
        .iter()
        .enumerate()
        .map(|(i, h)| (Some(h.to_string()), h.to_string(), i, 3))
        .collect();
    let svg = svg(&fold(start, BUCKETS, counts));
    assert_eq!(svg.matches("<svg").count(), 1, "{svg}");
    assert_eq!(svg.matches("</svg>").count(), 1, "{svg}");
    assert!(svg.ends_with("</svg>"));
    // As text `onload=` is harmless; a quote after it would open a value.
    for bad in [
        "onload=\"",
        "onload='",
        "<script",
        "<!--",
        "<![CDATA[",
        "]]>",
        "\0",
        "\u{1b}",
        "\u{fffe}",
    ] {
        assert!(!svg.contains(bad), "{bad:?} in {svg}");
    }
    // Every attribute value is quoted and holds no quote.
    let tags = regex::Regex::new(r"<[^>]*>").expect("re");
    let attrs = regex::Regex::new(r#"\s([a-z-]+)=("[^"]*"|'[^']*'|[^\s>]+)"#).expect("re");
    for tag in tags.find_iter(&svg) {
        for c in attrs.captures_iter(tag.as_str()) {
            assert!(c[2].starts_with('"'), "unquoted {}: {svg}", &c[0]);
            assert!(!c[1].starts_with("on"), "a handler {}: {svg}", &c[0]);
        }
    }
}

/// A 100 kB droid type is cut in the label and in every bar's title: the
/// chart's size does not follow the input's.
#[test]
fn status_attack_chart_a_huge_type_is_cut() {
    let start = window_start(now());
    let long = "\"".repeat(100_000);
    let counts: Vec<_> = (0..BUCKETS)
        .map(|b| (Some(long.clone()), long.clone(), b, 1))
        .collect();
    let small = svg(&fold(
        start,
        BUCKETS,
        (0..BUCKETS).map(|b| (Some("t".to_string()), "dead".to_string(), b, 1)),
    ));
    let big = svg(&fold(start, BUCKETS, counts));
    assert!(
        big.len() < small.len() + 10_000,
        "{} bytes vs {} for a short name",
        big.len(),
        small.len()
    );
}
