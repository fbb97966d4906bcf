use super::*;
use crate::config::SinkTarget;

fn sink(base: u64, cap: u64) -> Sink {
    Sink {
        name: "s".into(),
        target: SinkTarget::Command {
            argv: vec!["true".into()],
        },
        timeout: Duration::from_secs(10),
        kinds: Vec::new(),
        droid_types: Vec::new(),
        retry_base: Duration::from_secs(base),
        retry_cap: Duration::from_secs(cap),
        max_age: Duration::from_secs(86400),
        realert_after: Duration::from_secs(3600),
    }
}

#[test]
fn backoff_doubles_from_the_base_up_to_the_cap() {
    let s = sink(10, 600);
    // (attempts, jitter, expected seconds)
    let table: &[(u32, f64, u64)] = &[
        (1, 1.0, 10),
        (2, 1.0, 20),
        (3, 1.0, 40),
        (6, 1.0, 320),
        (7, 1.0, 600), // 640 capped
        (8, 1.0, 600),
        (1000, 1.0, 600), // no overflow
        (0, 1.0, 10),     // treated as the first retry
        (1, 0.0, 5),      // jitter keeps the upper half
        (7, 0.0, 300),
        (3, 0.5, 30),
        (3, 7.0, 40),  // clamped
        (3, -1.0, 20), // clamped
    ];
    for &(attempts, jitter, want) in table {
        assert_eq!(
            backoff(&s, attempts, jitter),
            Duration::from_secs(want),
            "attempts {attempts}, jitter {jitter}"
        );
    }
}

#[test]
fn jitter_is_in_range_and_varies() {
    let values: Vec<f64> = (0..200).map(|i| jitter(i, 1)).collect();
    assert!(values.iter().all(|j| (0.0..1.0).contains(j)));
    let distinct: std::collections::HashSet<u64> = values.iter().map(|j| j.to_bits()).collect();
    assert!(distinct.len() > 190, "jitter barely varies: {distinct:?}");
}

#[test]
fn the_budget_is_a_quarter_interval_within_1_to_30_seconds() {
    let text = |interval: &str| {
        format!("interval = \"{interval}\"\n[executor]\nkind = \"sqlite\"\npath = \"x.db\"\n[defaults]\ntimeout = \"3h\"\n")
    };
    for (interval, want) in [("2s", 1), ("8s", 2), ("2m", 30), ("1h", 30), ("40s", 10)] {
        let c = Config::parse(&text(interval), std::path::Path::new("/x/foreman.toml"))
            .expect("config");
        assert_eq!(budget(&c), Duration::from_secs(want), "interval {interval}");
    }
}
