//! The README documents everything a user can set: every `ark.*` setting a
//! real server has, and every long flag of every `pg_ark` subcommand (as the
//! installed binary's own `--help` lists them). A setting or a flag cannot
//! be added without its documentation.
use pg_ark_tests::{pg_ark, Cluster};

const README: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md");

fn readme() -> String {
    std::fs::read_to_string(README).unwrap_or_else(|e| panic!("read {README}: {e}"))
}

/// Whether `text` holds `word` as a whole word: with no letter, digit, `-`
/// or `_` just before or after it (so `--s3-region` is not found in
/// `--s3-region-x`, nor `--jobs` in `--jobs-max`).
fn mentions(text: &str, word: &str) -> bool {
    let is_word = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    text.match_indices(word).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + word.len()..].chars().next();
        !before.is_some_and(is_word) && !after.is_some_and(is_word)
    })
}

#[test]
fn every_setting_is_in_the_readme() {
    let readme = readme();
    let cluster = Cluster::start();
    let mut c = cluster.client();
    let names: Vec<String> = c
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
    let missing: Vec<&String> = names
        .iter()
        .filter(|name| !readme.contains(&format!("`{name}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "README.md does not document these settings (as `name`, in the Settings table): {missing:?}\n\
         (checked all {} ark.* settings of pg_settings)",
        names.len()
    );
}

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

#[test]
fn every_cli_flag_is_in_the_readme() {
    let readme = readme();
    let top = help_of(&["--help"]);
    let subs = subcommands(&top);
    assert!(
        subs.len() >= 5,
        "pg_ark --help lists only {} subcommands ({subs:?}):\n{top}",
        subs.len()
    );
    // (where, flag) for the top level and each subcommand.
    let mut flags: Vec<(String, String)> = top
        .lines()
        .filter_map(option_flag)
        .map(|f| ("pg_ark".to_string(), f))
        .collect();
    for sub in &subs {
        let help = help_of(&[sub.as_str(), "--help"]);
        let found: Vec<String> = help.lines().filter_map(option_flag).collect();
        assert!(
            found.iter().any(|f| f == "--help"),
            "no option lines found in `pg_ark {sub} --help` (has its format changed?):\n{help}"
        );
        flags.extend(found.into_iter().map(|f| (format!("pg_ark {sub}"), f)));
    }
    let mut distinct: Vec<&str> = flags.iter().map(|(_, f)| f.as_str()).collect();
    distinct.sort_unstable();
    distinct.dedup();
    assert!(
        distinct.len() > 10,
        "only {} distinct long flags found in the help of {subs:?}: {distinct:?}",
        distinct.len()
    );
    let missing: Vec<String> = flags
        .iter()
        .filter(|(_, flag)| !mentions(&readme, flag))
        .map(|(at, flag)| format!("{at} {flag}"))
        .collect();
    assert!(
        missing.is_empty(),
        "README.md does not document these flags: {missing:?}\n\
         (checked {} flags, {} distinct, of pg_ark and its subcommands {subs:?})",
        flags.len(),
        distinct.len()
    );
}

#[test]
fn the_helpers_read_clap_help_as_expected() {
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
    assert!(mentions("| `--jobs N` | files |", "--jobs"));
    assert!(!mentions("`--prefetch-max M`", "--prefetch"));
    assert!(mentions(
        "`--prefetch N` and `--prefetch-max`",
        "--prefetch"
    ));
    assert!(!mentions("---help", "--help"));
}

#[test]
fn every_job_kind_and_option_is_in_the_readme() {
    use pg_ark_core::schedule::jobs::{JobKind, KIND_NAMES};
    let readme = readme();
    let mut checked = 0;
    let mut missing = Vec::new();
    for name in KIND_NAMES.split(", ") {
        let kind = JobKind::parse(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        if !readme.contains(&format!("`{name}`")) {
            missing.push(format!("kind {name}"));
        }
        for option in kind.allowed_options() {
            checked += 1;
            if !readme.contains(&format!("`{option}`")) {
                missing.push(format!("{name} option {option}"));
            }
        }
    }
    assert!(checked > 30, "only {checked} job options checked");
    assert!(
        missing.is_empty(),
        "README.md does not document these job kinds and options (as `name`): {missing:?}"
    );
}
