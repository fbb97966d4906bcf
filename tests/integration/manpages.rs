//! The man pages as the real binary writes them (`foreman man --dir`, `man
//! SUBCOMMAND`), and `check-config` against the executor's real database.

use crate::cli::{bare_foreman, run};
use rusqlite::Connection;
use std::path::Path;
use std::process::Command;

/// The subcommands as `foreman --help` lists them (clap's `help` aside):
/// learned from the binary, so a new subcommand without a page fails.
fn subcommands() -> Vec<String> {
    let out = run(bare_foreman().arg("--help"));
    assert_eq!(out.code, Some(0), "{out:#?}");
    let mut names = Vec::new();
    let mut inside = false;
    for line in out.stdout.lines() {
        if line.starts_with("Commands:") {
            inside = true;
            continue;
        }
        if inside {
            // Entries are indented two spaces; a wrapped description more.
            if !line.starts_with("  ") {
                break;
            }
            if line.starts_with("   ") {
                continue;
            }
            if let Some(name) = line.split_whitespace().next() {
                if name != "help" {
                    names.push(name.to_owned());
                }
            }
        }
    }
    assert!(names.len() >= 10, "too few subcommands in:\n{}", out.stdout);
    names
}

/// roff escapes a dash in text: `scan\-orphans`.
fn roff(text: &str) -> String {
    text.replace('-', "\\-")
}

/// The line after `.SH NAME`.
fn name_line(page: &str) -> &str {
    let mut lines = page.lines();
    lines
        .by_ref()
        .find(|l| *l == ".SH NAME")
        .unwrap_or_else(|| panic!("no .SH NAME in\n{page}"));
    lines.next().unwrap_or("")
}

#[test]
fn man_dir_writes_the_main_page_and_one_page_per_subcommand_each_named_right() {
    let _g = crate::spawning();
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("man");
    let out = run(bare_foreman().arg("man").arg("--dir").arg(&out_dir));
    assert_eq!(out.code, Some(0), "{out:#?}");
    assert!(out.stderr.is_empty(), "{out:#?}");

    let subs = subcommands();
    assert!(subs.iter().any(|s| s == "scan-orphans"), "{subs:?}");
    let mut want: Vec<String> = subs.iter().map(|s| format!("foreman-{s}.1")).collect();
    want.push("foreman.1".into());
    want.sort();
    let mut got: Vec<String> = std::fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    got.sort();
    assert_eq!(got, want, "the pages written");

    for sub in &subs {
        let path = out_dir.join(format!("foreman-{sub}.1"));
        let page = std::fs::read_to_string(&path).unwrap();
        let th = format!(".TH {} 1 ", format!("FOREMAN-{sub}").to_uppercase());
        assert!(
            page.lines().any(|l| l.starts_with(&th)),
            "{}: no {th:?}:\n{page}",
            path.display()
        );
        let name = name_line(&page);
        assert!(
            name.starts_with(&format!("foreman\\-{} \\- ", roff(sub))),
            "{}: NAME is {name:?}",
            path.display()
        );
        // The synopsis is what one types: `foreman sub`, with the global
        // options a subcommand takes too.
        assert!(
            page.contains(&format!("\\fBforeman {}\\fR", roff(sub))),
            "{}: synopsis:\n{page}",
            path.display()
        );
        assert!(page.contains("\\-\\-config"), "{}", path.display());
        // `foreman man SUB` prints the very page --dir wrote.
        let printed = run(bare_foreman().args(["man", sub]));
        assert_eq!(printed.code, Some(0), "{printed:#?}");
        assert_eq!(printed.stdout, page, "foreman man {sub}");
    }

    let main = std::fs::read_to_string(out_dir.join("foreman.1")).unwrap();
    assert!(
        main.lines().any(|l| l.starts_with(".TH foreman 1 ")),
        "{main}"
    );
    assert!(name_line(&main).starts_with("foreman \\- "), "{main}");
    assert_eq!(
        run(bare_foreman().arg("man")).stdout,
        main,
        "`foreman man` prints foreman.1"
    );
    // Its sections, in order, each once.
    let sections: Vec<&str> = main.lines().filter(|l| l.starts_with(".SH ")).collect();
    let order = [
        ".SH NAME",
        ".SH SYNOPSIS",
        ".SH OPTIONS",
        ".SH SUBCOMMANDS",
        ".SH \"EXIT STATUS\"",
        ".SH FILES",
        ".SH ENVIRONMENT",
        ".SH SIGNALS",
        ".SH \"SEE ALSO\"",
        ".SH VERSION",
    ];
    let found: Vec<&str> = sections
        .iter()
        .copied()
        .filter(|s| order.contains(s))
        .collect();
    assert_eq!(found, order, "sections of foreman.1");
    // The apostrophe preamble clap_mangen writes per part appears once.
    assert_eq!(main.matches(".ds Aq").count(), 2, "{main}");
    let section = |title: &str| -> String {
        let start = main.find(title).unwrap_or_else(|| panic!("no {title}"));
        let rest = &main[start + title.len()..];
        rest[..rest.find("\n.SH ").unwrap_or(rest.len())].to_owned()
    };
    let exit = section(".SH \"EXIT STATUS\"");
    for code in ["0", "1", "2", "3", "130"] {
        assert!(
            exit.contains(&format!(".TP\n\\fB{code}\\fR\n")),
            "EXIT STATUS lacks {code}:\n{exit}"
        );
    }
    let files = section(".SH FILES");
    for f in [
        "/etc/foreman/foreman.toml",
        "/var/lib/foreman/foreman.db",
        "/var/lib/foreman/foreman.db.lock",
    ] {
        assert!(files.contains(&roff(f)), "FILES lacks {f}:\n{files}");
    }
    let env = section(".SH ENVIRONMENT");
    for v in [
        "FOREMAN_CONFIG",
        "RUST_LOG",
        "NO_COLOR",
        "FOREMAN_HTTP_TOKEN",
        "url_env",
        "url_file",
        "CREDENTIALS_DIRECTORY",
    ] {
        assert!(env.contains(v), "ENVIRONMENT lacks {v}:\n{env}");
    }
    let signals = section(".SH SIGNALS");
    for s in ["SIGTERM", "SIGINT", "SIGHUP", "at once", "reload"] {
        assert!(signals.contains(s), "SIGNALS lacks {s}:\n{signals}");
    }
    let see_also = section(".SH \"SEE ALSO\"");
    for sub in &subs {
        let reference = format!("\\fBforeman\\-{}\\fR(1)", roff(sub));
        assert!(
            see_also.contains(&reference),
            "SEE ALSO lacks {reference}:\n{see_also}"
        );
    }

    // Every page typesets without a warning (groff comes with man-db;
    // under CI its absence fails the test rather than skipping the check).
    if Command::new("groff").arg("--version").output().is_err() {
        crate::common::skip_or_fail("groff is missing: the pages were not typeset");
    } else {
        for file in &want {
            let out = Command::new("groff")
                .args(["-man", "-Tutf8", "-ww", "-z"])
                .arg(out_dir.join(file))
                .output()
                .unwrap();
            assert!(
                out.status.success() && out.stderr.is_empty(),
                "groff on {file}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

#[test]
fn man_of_an_unknown_subcommand_is_a_usage_error() {
    let _g = crate::spawning();
    let out = run(bare_foreman().args(["man", "sweeep"]));
    assert_eq!(out.code, Some(2), "{out:#?}");
    assert!(out.stdout.is_empty(), "{out:#?}");
    assert!(out.stderr.contains("no subcommand \"sweeep\""), "{out:#?}");
}

/// An executor's `tasks` with the contract's columns but `plan_id`.
const TASKS_WITHOUT_PLAN_ID: &str = "CREATE TABLE tasks (id TEXT PRIMARY KEY, droid_type TEXT NOT NULL, \
     state TEXT NOT NULL, pid INTEGER, host TEXT, attempt INTEGER NOT NULL DEFAULT 1, started_at TEXT, \
     last_progress_at TEXT, finished_at TEXT, error TEXT)";

fn write_config(dir: &Path, executor_extra: &str) -> std::path::PathBuf {
    let path = dir.join("foreman.toml");
    std::fs::write(
        &path,
        format!(
            "host = \"{}\"\n[executor]\nkind = \"sqlite\"\npath = \"executor.db\"\n{executor_extra}\n[activity]\npath = \"foreman.db\"\n",
            crate::cli::HOST
        ),
    )
    .unwrap();
    path
}

#[test]
fn check_config_names_a_column_the_executors_tasks_table_lacks_and_the_fix() {
    let _g = crate::spawning();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("executor.db");
    let config = write_config(dir.path(), "");

    // No database yet: said, and no failure; nothing created.
    let out = run(bare_foreman()
        .arg("--config")
        .arg(&config)
        .arg("check-config"));
    assert_eq!(out.code, Some(0), "{out:#?}");
    assert!(
        out.stderr.contains("does not exist") && out.stderr.contains(&*db.to_string_lossy()),
        "{out:#?}"
    );
    assert!(!db.exists(), "check-config created the executor's database");

    Connection::open(&db)
        .unwrap()
        .execute_batch(TASKS_WITHOUT_PLAN_ID)
        .unwrap();
    let before = std::fs::read(&db).unwrap();
    let out = run(bare_foreman()
        .arg("--config")
        .arg(&config)
        .arg("check-config"));
    assert_eq!(out.code, Some(3), "{out:#?}");
    assert!(out.stdout.is_empty(), "printed a config: {out:#?}");
    for says in [
        "its tasks table has no column plan_id,",
        "ALTER TABLE tasks ADD COLUMN plan_id TEXT",
        "snapshot_query",
        "NULL AS plan_id",
    ] {
        assert!(out.stderr.contains(says), "stderr lacks {says:?}: {out:#?}");
    }
    // Only plan_id is named: the columns that are there are not.
    assert!(!out.stderr.contains("droid_type"), "{out:#?}");
    assert_eq!(std::fs::read(&db).unwrap(), before, "the database changed");

    // Either fix passes: a snapshot_query that selects NULL AS plan_id ...
    write_config(
        dir.path(),
        "snapshot_query = \"SELECT id, NULL AS plan_id, droid_type, state, pid, host, attempt, started_at, last_progress_at, finished_at, error FROM tasks\"",
    );
    let out = run(bare_foreman()
        .arg("--config")
        .arg(&config)
        .arg("check-config"));
    assert_eq!(out.code, Some(0), "{out:#?}");
    assert!(out.stderr.is_empty(), "{out:#?}");

    // ... or the column added, with the default queries.
    write_config(dir.path(), "");
    Connection::open(&db)
        .unwrap()
        .execute_batch("ALTER TABLE tasks ADD COLUMN plan_id TEXT")
        .unwrap();
    let out = run(bare_foreman()
        .arg("--config")
        .arg(&config)
        .arg("check-config"));
    assert_eq!(out.code, Some(0), "{out:#?}");
    assert!(out.stderr.is_empty(), "{out:#?}");

    // A database without a tasks table at all says so.
    std::fs::remove_file(&db).unwrap();
    Connection::open(&db)
        .unwrap()
        .execute_batch("CREATE TABLE jobs (id TEXT)")
        .unwrap();
    let out = run(bare_foreman()
        .arg("--config")
        .arg(&config)
        .arg("check-config"));
    assert_eq!(out.code, Some(3), "{out:#?}");
    assert!(out.stderr.contains("has no tasks table"), "{out:#?}");
}
