//! The reference in `docs/reference/` documents everything a user can set
//! or call, in its tables, and nothing that does not exist:
//!
//! - every `ark.*` setting a real server has is a row of the settings table,
//!   and every row is a setting of that server;
//! - every function, table and view of schema `ark` (but the internal
//!   `ark._*`) is a row of the SQL tables;
//! - every job kind is a row of the kinds table, and each kind's options are
//!   the rows of its options table (with the options of every kind);
//! - every subcommand of the installed `pg_ark` is a row of the subcommands
//!   table, and every long flag its `--help` lists is a row of that
//!   subcommand's table or of the options of every subcommand.
//!
//! The lists come from the code: `pg_settings` and the catalog of a real
//! server, `JobKind`, the binary's own `--help`. A setting, a function, a
//! kind, an option or a flag cannot be added without its row.
//!
//! And every relative link in `README.md` and `docs/` points to a file that
//! exists, and to a heading of it that exists.
use pg_ark_tests::{pg_ark, Cluster};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .to_path_buf()
}

/// The text of `rel`, a path from the workspace root.
fn doc(rel: &str) -> String {
    let path = root().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

// ---------------------------------------------------------------- markdown

/// The lines of `text` outside fenced code blocks (```), with their index.
fn prose_lines(text: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut fenced = false;
    for (i, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if !fenced {
            out.push((i, line));
        }
    }
    out
}

/// A heading line's level and text: `## Settings` is (2, "Settings").
fn heading(line: &str) -> Option<(usize, &str)> {
    let level = line.bytes().take_while(|&b| b == b'#').count();
    (1..=6)
        .contains(&level)
        .then(|| line[level..].strip_prefix(' '))
        .flatten()
        .map(|text| (level, text.trim()))
}

/// The part of `text` under the heading written `title` (`## Settings`),
/// up to the next heading of the same or a higher level.
fn section(text: &str, file: &str, title: &str) -> String {
    let (want_level, want) = heading(title).expect("a heading such as \"## Settings\"");
    let lines = prose_lines(text);
    let all: Vec<&str> = text.lines().collect();
    let start = lines
        .iter()
        .find(|(_, l)| heading(l) == Some((want_level, want)))
        .map(|(i, _)| *i)
        .unwrap_or_else(|| panic!("{file} has no heading \"{title}\""));
    let end = lines
        .iter()
        .find(|(i, l)| *i > start && heading(l).is_some_and(|(lv, _)| lv <= want_level))
        .map_or(all.len(), |(i, _)| *i);
    all[start + 1..end].join("\n")
}

/// The level-`level` headings of `text`, with the text under each (up to
/// the next heading of that level or higher).
fn subsections(text: &str, level: usize) -> Vec<(String, String)> {
    let all: Vec<&str> = text.lines().collect();
    let heads: Vec<(usize, usize, &str)> = prose_lines(text)
        .into_iter()
        .filter_map(|(i, l)| heading(l).map(|(lv, t)| (i, lv, t)))
        .collect();
    heads
        .iter()
        .enumerate()
        .filter(|(_, (_, lv, _))| *lv == level)
        .map(|(n, (i, _, t))| {
            let end = heads[n + 1..]
                .iter()
                .find(|(_, lv, _)| *lv <= level)
                .map_or(all.len(), |(j, _, _)| *j);
            (t.to_string(), all[i + 1..end].join("\n"))
        })
        .collect()
}

/// The cells of a table row (`| a | b |`), split at `|` outside code spans
/// (and not escaped as `\|`).
fn cells(row: &str) -> Vec<String> {
    let row = row.trim();
    let inner = row.strip_prefix('|').unwrap_or(row);
    let inner = inner.strip_suffix('|').unwrap_or(inner);
    let mut out = Vec::new();
    let mut cell = String::new();
    let mut in_code = false;
    let mut prev = ' ';
    for c in inner.chars() {
        match c {
            '`' => in_code = !in_code,
            '|' if !in_code && prev != '\\' => {
                out.push(cell.trim().to_string());
                cell.clear();
                prev = c;
                continue;
            }
            _ => {}
        }
        cell.push(c);
        prev = c;
    }
    out.push(cell.trim().to_string());
    out
}

fn is_separator(row: &str) -> bool {
    let cs = cells(row);
    !cs.is_empty()
        && cs
            .iter()
            .all(|c| !c.is_empty() && c.chars().all(|ch| matches!(ch, '-' | ':' | ' ')))
}

/// The body rows of every table in `text` (header and separator rows left
/// out), as cells.
fn table_rows(text: &str) -> Vec<Vec<String>> {
    let lines: Vec<&str> = prose_lines(text).into_iter().map(|(_, l)| l).collect();
    let mut rows = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if lines[i].trim_start().starts_with('|')
            && lines.get(i + 1).is_some_and(|l| is_separator(l))
        {
            i += 2;
            while i < lines.len() && lines[i].trim_start().starts_with('|') {
                rows.push(cells(lines[i]));
                i += 1;
            }
        } else {
            i += 1;
        }
    }
    rows
}

/// The code spans of `text`: "`a`, `b c`" gives ["a", "b c"].
fn code_spans(text: &str) -> Vec<String> {
    text.split('`')
        .enumerate()
        .filter(|(n, _)| n % 2 == 1)
        .map(|(_, s)| s.to_string())
        .collect()
}

/// The code spans of the first cell of every table row in `text`.
fn first_column(text: &str) -> Vec<String> {
    table_rows(text)
        .iter()
        .filter_map(|r| r.first())
        .flat_map(|c| code_spans(c))
        .collect()
}

/// The flags in the first column of the tables in `text`: "`--repo URL`"
/// gives `--repo`, "`-h`, `--host HOST`" gives `-h` and `--host`.
fn flags_in(text: &str) -> BTreeSet<String> {
    first_column(text)
        .iter()
        .filter_map(|s| s.split_whitespace().next())
        .filter(|w| w.starts_with('-'))
        .map(str::to_string)
        .collect()
}

/// GitHub's anchor of a heading: lower case, spaces to `-`, every character
/// but letters, digits, `-` and `_` dropped.
fn slug(heading: &str) -> String {
    heading
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// The anchors of every heading of `text` (a repeated heading gets `-1`,
/// `-2`, ... as on GitHub).
fn anchors(text: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    for (_, line) in prose_lines(text) {
        if let Some((_, t)) = heading(line) {
            let base = slug(t);
            let mut anchor = base.clone();
            let mut n = 0;
            while seen.contains(&anchor) {
                n += 1;
                anchor = format!("{base}-{n}");
            }
            seen.insert(anchor);
        }
    }
    seen
}

/// The targets of the inline links (`[text](target)`) of `text`, outside
/// code blocks and code spans.
fn link_targets(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (_, line) in prose_lines(text) {
        // Drop code spans: what is inside them is not a link.
        let prose: String = line
            .split('`')
            .enumerate()
            .filter(|(n, _)| n % 2 == 0)
            .map(|(_, s)| s)
            .collect::<Vec<_>>()
            .join(" ");
        let mut rest = prose.as_str();
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            match after.find(')') {
                Some(end) => {
                    out.push(after[..end].trim().to_string());
                    rest = &after[end + 1..];
                }
                None => break,
            }
        }
    }
    out
}

/// `README.md` and every `.md` file under `docs/`, as paths from the root.
fn markdown_files() -> Vec<String> {
    fn walk(dir: &Path, rel: &str, out: &mut Vec<String>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
            .map(|e| e.expect("a directory entry"))
            .collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let name = e.file_name().to_string_lossy().into_owned();
            let path = e.path();
            let rel = format!("{rel}/{name}");
            if path.is_dir() {
                walk(&path, &rel, out);
            } else if name.ends_with(".md") {
                out.push(rel);
            }
        }
    }
    let mut files = vec!["README.md".to_string()];
    walk(&root().join("docs"), "docs", &mut files);
    files
}

/// `path` with `.` and `..` components resolved, without touching the disk.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

fn set(items: impl IntoIterator<Item = impl Into<String>>) -> BTreeSet<String> {
    items.into_iter().map(Into::into).collect()
}

/// Panic with `what` if either list is not empty.
fn assert_same(
    what: &str,
    file: &str,
    undocumented: &BTreeSet<String>,
    unknown: &BTreeSet<String>,
) {
    assert!(
        undocumented.is_empty() && unknown.is_empty(),
        "{file}: {what}\n  missing from the docs: {undocumented:?}\n  documented but not in the code: {unknown:?}"
    );
}

// ---------------------------------------------------------------- settings

#[test]
fn every_setting_is_in_the_settings_table() {
    const FILE: &str = "docs/reference/settings.md";
    let table = section(&doc(FILE), FILE, "## All settings");
    let documented = set(first_column(&table)
        .into_iter()
        .filter(|s| s.starts_with("ark.")));
    let cluster = Cluster::start();
    let mut c = cluster.client();
    let names: BTreeSet<String> = c
        .query(
            "SELECT name FROM pg_settings WHERE name LIKE 'ark.%' ORDER BY name",
            &[],
        )
        .expect("the ark.* settings from pg_settings")
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect();
    assert!(
        names.len() > 10,
        "a server with pg_ark preloaded lists only {} ark.* settings: {names:?}",
        names.len()
    );
    // pg_settings leaves out the settings hidden from SHOW ALL
    // (ark.s3_secret_access_key): a documented name it lacks must still be
    // a setting of the server.
    let unknown: BTreeSet<String> = documented
        .difference(&names)
        .filter(|name| {
            let value: Option<String> = c
                .query_one("SELECT current_setting($1, true)", &[name])
                .expect("current_setting")
                .get(0);
            value.is_none()
        })
        .cloned()
        .collect();
    assert_same(
        &format!(
            "the rows of \"## All settings\" are not the {} ark.* settings of pg_settings",
            names.len()
        ),
        FILE,
        &names.difference(&documented).cloned().collect(),
        &unknown,
    );
}

// ---------------------------------------------------------------- SQL

#[test]
fn every_function_table_and_view_is_in_the_sql_tables() {
    const FILE: &str = "docs/reference/sql.md";
    let text = doc(FILE);
    let name_of = |span: &str| -> Option<String> {
        let end = span.find(['(', ' ']).unwrap_or(span.len());
        span.starts_with("ark.").then(|| span[..end].to_string())
    };
    let doc_functions = set(first_column(&section(&text, FILE, "## Functions"))
        .iter()
        .filter_map(|s| name_of(s)));
    let doc_relations = set(first_column(&section(&text, FILE, "## Tables and views"))
        .iter()
        .filter_map(|s| name_of(s)));

    let cluster = Cluster::start();
    let mut c = cluster.client();
    c.batch_execute("CREATE EXTENSION pg_ark")
        .expect("CREATE EXTENSION pg_ark");
    let names = |c: &mut postgres::Client, sql: &str| -> BTreeSet<String> {
        c.query(sql, &[])
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .iter()
            .map(|r| format!("ark.{}", r.get::<_, String>(0)))
            .collect()
    };
    let functions = names(
        &mut c,
        "SELECT DISTINCT proname::text FROM pg_proc
          WHERE pronamespace = 'ark'::regnamespace AND left(proname, 1) <> '_'",
    );
    let relations = names(
        &mut c,
        "SELECT relname::text FROM pg_class
          WHERE relnamespace = 'ark'::regnamespace AND relkind IN ('r', 'p', 'v', 'm')",
    );
    assert!(
        functions.len() > 10 && relations.len() >= 5,
        "schema ark has only {functions:?} and {relations:?}"
    );
    assert_same(
        "the rows of \"## Functions\" are not the functions of schema ark",
        FILE,
        &functions.difference(&doc_functions).cloned().collect(),
        &doc_functions.difference(&functions).cloned().collect(),
    );
    assert_same(
        "the rows of \"## Tables and views\" are not the tables and views of schema ark",
        FILE,
        &relations.difference(&doc_relations).cloned().collect(),
        &doc_relations.difference(&relations).cloned().collect(),
    );
}

// ---------------------------------------------------------------- jobs

#[test]
fn every_job_kind_and_option_is_in_the_jobs_tables() {
    use pg_ark_core::schedule::jobs::{kind_names, JobKind};
    const FILE: &str = "docs/reference/jobs.md";
    let text = doc(FILE);
    let names = kind_names();
    let kinds = set(names.split(", "));
    let doc_kinds = set(first_column(&section(&text, FILE, "## Kinds")));
    assert_same(
        "the rows of \"## Kinds\" are not the job kinds",
        FILE,
        &kinds.difference(&doc_kinds).cloned().collect(),
        &doc_kinds.difference(&kinds).cloned().collect(),
    );

    // "### Every kind", and one "### `kind`, ..." per kind or group.
    let options = section(&text, FILE, "## Options");
    let mut common = BTreeSet::new();
    let mut own: Vec<(BTreeSet<String>, BTreeSet<String>)> = Vec::new();
    for (title, body) in subsections(&options, 3) {
        let listed = set(first_column(&body));
        if title == "Every kind" {
            common = listed;
        } else {
            let covers = set(code_spans(&title));
            let stray: Vec<&String> = covers.difference(&kinds).collect();
            assert!(
                stray.is_empty(),
                "{FILE}: \"### {title}\" names {stray:?}, which are not job kinds"
            );
            own.push((covers, listed));
        }
    }
    assert!(!common.is_empty(), "{FILE} has no \"### Every kind\" table");

    let mut checked = 0;
    let mut problems = Vec::new();
    for name in &kinds {
        let kind = JobKind::parse(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        let allowed = set(kind.allowed_options());
        let mut documented = common.clone();
        for (covers, listed) in &own {
            if covers.contains(name) {
                documented.extend(listed.iter().cloned());
            }
        }
        checked += allowed.len();
        for option in allowed.difference(&documented) {
            problems.push(format!("{name}: option {option} is not in its table"));
        }
        for option in documented.difference(&allowed) {
            problems.push(format!(
                "{name}: the docs list option {option}, which it refuses"
            ));
        }
    }
    assert!(checked > 30, "only {checked} job options checked");
    assert!(problems.is_empty(), "{FILE}:\n  {}", problems.join("\n  "));
}

// ---------------------------------------------------------------- CLI

/// The subcommands `pg_ark --help` lists under "Commands:" (without `help`).
fn subcommands(top_help: &str) -> Vec<String> {
    let mut subs = Vec::new();
    let mut in_commands = false;
    for line in top_help.lines() {
        if line.trim_end() == "Commands:" {
            in_commands = true;
            continue;
        }
        if in_commands {
            if line.trim().is_empty() || !line.starts_with(' ') {
                break;
            }
            let name = line.split_whitespace().next().expect("a command name");
            if name != "help" {
                subs.push(name.to_string());
            }
        }
    }
    subs
}

/// The long flag an option line of clap's help defines: `--repo <URL>`,
/// `-h, --help`, `-q, --quiet`; `None` for any other line.
fn option_flag(line: &str) -> Option<String> {
    let line = line.trim_start();
    let b = line.as_bytes();
    let long = if line.starts_with("--") {
        line
    } else if b.len() > 6
        && b[0] == b'-'
        && b[1].is_ascii_alphanumeric()
        && b[2..].starts_with(b", --")
    {
        &line[4..]
    } else {
        return None;
    };
    let end = long[2..]
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .map_or(long.len(), |i| i + 2);
    (end > 2).then(|| long[..end].to_string())
}

fn help_of(args: &[&str]) -> String {
    let (ok, out, err) = pg_ark(args);
    assert!(ok, "pg_ark {args:?} failed:\n{out}{err}");
    out
}

fn long_flags(help: &str) -> BTreeSet<String> {
    help.lines().filter_map(option_flag).collect()
}

#[test]
fn every_cli_subcommand_and_flag_is_in_the_cli_tables() {
    const FILE: &str = "docs/reference/cli.md";
    let text = doc(FILE);
    let top = help_of(&["--help"]);
    let subs = subcommands(&top);
    assert!(
        subs.len() >= 5,
        "pg_ark --help lists only {} subcommands ({subs:?}):\n{top}",
        subs.len()
    );

    let doc_subs = set(first_column(&section(&text, FILE, "## Subcommands"))
        .iter()
        .filter_map(|s| s.strip_prefix("pg_ark ").map(str::to_string)));
    let real_subs = set(subs.iter().cloned());
    assert_same(
        "the rows of \"## Subcommands\" are not the subcommands of pg_ark --help",
        FILE,
        &real_subs.difference(&doc_subs).cloned().collect(),
        &doc_subs.difference(&real_subs).cloned().collect(),
    );

    let mut problems = Vec::new();
    let mut checked = 0;
    // pg_ark itself.
    let top_flags = long_flags(&top);
    let doc_top = flags_in(&section(&text, FILE, "## Options of `pg_ark` itself"));
    for flag in &top_flags {
        checked += 1;
        if !doc_top.contains(flag) {
            problems.push(format!(
                "pg_ark {flag}: not in \"Options of `pg_ark` itself\""
            ));
        }
    }
    // Each subcommand: its own table, or the options of every subcommand.
    let common = flags_in(&section(&text, FILE, "## Options of every subcommand"));
    let mut distinct = top_flags.clone();
    for sub in &subs {
        let help = help_of(&[sub.as_str(), "--help"]);
        let found = long_flags(&help);
        assert!(
            found.contains("--help"),
            "no option lines found in `pg_ark {sub} --help` (has its format changed?):\n{help}"
        );
        let own = flags_in(&section(&text, FILE, &format!("## `pg_ark {sub}`")));
        for flag in &found {
            checked += 1;
            if !own.contains(flag) && !common.contains(flag) {
                problems.push(format!("pg_ark {sub} {flag}: not in its table"));
            }
        }
        for flag in own.iter().filter(|f| f.starts_with("--")) {
            if !found.contains(flag) {
                problems.push(format!(
                    "pg_ark {sub}: the docs list {flag}, which its --help does not"
                ));
            }
        }
        for flag in common.iter().filter(|f| f.starts_with("--")) {
            if !found.contains(flag) {
                problems.push(format!(
                    "pg_ark {sub}: {flag} is listed for every subcommand, but its --help does not have it"
                ));
            }
        }
        distinct.extend(found);
    }
    assert!(
        distinct.len() > 10,
        "only {} distinct long flags found in the help of {subs:?}: {distinct:?}",
        distinct.len()
    );
    assert!(
        problems.is_empty(),
        "{FILE} (checked {checked} flags, {} distinct, of pg_ark and {subs:?}):\n  {}",
        distinct.len(),
        problems.join("\n  ")
    );
}

// ---------------------------------------------------------------- links

#[test]
fn every_relative_link_points_to_a_file_and_heading_that_exist() {
    let root = root();
    let mut checked = 0;
    let mut broken = Vec::new();
    for file in markdown_files() {
        let text = doc(&file);
        let dir = Path::new(&file)
            .parent()
            .unwrap_or(Path::new(""))
            .to_path_buf();
        for target in link_targets(&text) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            checked += 1;
            let (path, anchor) = match target.split_once('#') {
                Some((p, a)) => (p, Some(a)),
                None => (target.as_str(), None),
            };
            let rel = if path.is_empty() {
                PathBuf::from(&file)
            } else {
                normalize(&dir.join(path))
            };
            let full = root.join(&rel);
            if !full.exists() {
                broken.push(format!(
                    "{file}: ({target}): {} does not exist",
                    rel.display()
                ));
                continue;
            }
            if let Some(anchor) = anchor {
                if full.extension().is_some_and(|e| e == "md")
                    && !anchors(&std::fs::read_to_string(&full).unwrap_or_default())
                        .contains(anchor)
                {
                    broken.push(format!(
                        "{file}: ({target}): {} has no heading #{anchor}",
                        rel.display()
                    ));
                }
            }
        }
    }
    assert!(checked > 50, "only {checked} relative links found");
    assert!(
        broken.is_empty(),
        "broken links:\n  {}",
        broken.join("\n  ")
    );
}

// ---------------------------------------------------------------- helpers

#[test]
fn the_helpers_read_clap_help_and_markdown_as_expected() {
    assert_eq!(
        option_flag("      --repo <URL>   Repository URL"),
        Some("--repo".into())
    );
    assert_eq!(
        option_flag("  -h, --help  Print help"),
        Some("--help".into())
    );
    assert_eq!(
        option_flag("  -U, --username <ROLE>"),
        Some("--username".into())
    );
    assert_eq!(
        option_flag("      --prefetch-max <N>"),
        Some("--prefetch-max".into())
    );
    assert_eq!(option_flag("          Print help (see a summary)"), None);
    assert_eq!(option_flag("Usage: pg_ark restore [OPTIONS]"), None);
    assert_eq!(
        subcommands("Usage: pg_ark <COMMAND>\n\nCommands:\n  location  Check\n  wal-get   Fetch\n  help      Print\n\nOptions:\n  -h, --help\n"),
        vec!["location".to_string(), "wal-get".to_string()]
    );

    let md = "# T\n\n## A\n\n| flag | meaning |\n| --- | ---: |\n| `--jobs N` | a `x|y` cell |\n\
              | `-h`, `--host HOST` | b |\n\n```\n| `--not` | in code |\n## Not a heading\n```\n\
              ### Sub `k1`, `k2`\n\n| o | m |\n| --- | --- |\n| `opt` | c |\n\n## B\n\ntext [l](x.md#a-b) `[n](no.md)`\n";
    let a = section(md, "md", "## A");
    assert_eq!(flags_in(&a), set(["--jobs", "-h", "--host"]));
    assert_eq!(table_rows(&a)[0], vec!["`--jobs N`", "a `x|y` cell"]);
    let subs = subsections(&a, 3);
    assert_eq!(subs.len(), 1);
    assert_eq!(code_spans(&subs[0].0), vec!["k1", "k2"]);
    assert_eq!(first_column(&subs[0].1), vec!["opt"]);
    assert!(!section(md, "md", "## B").contains("opt"));
    assert_eq!(link_targets(md), vec!["x.md#a-b"]);
    assert_eq!(slug("`pg_ark info --json`"), "pg_ark-info---json");
    assert_eq!(slug("`ark.archive_status()`"), "arkarchive_status");
    assert_eq!(
        slug("`pg_ark restore`, with the server down"),
        "pg_ark-restore-with-the-server-down"
    );
    assert_eq!(anchors("## X\n## X\n"), set(["x", "x-1"]));
    assert!(!anchors(md).contains("not-a-heading"));
    assert_eq!(
        normalize(Path::new("docs/reference/../guide.md")),
        PathBuf::from("docs/guide.md")
    );
}
