//! What a plan says to run: the steps of a restore as commands, the
//! repository's words for `pg_ark` (never keys), shell quoting.
use super::*;

/// A plan as the rows `ark.restore_plan()` returns and `pg_ark restore
/// --dry-run` prints: (step, action, command, detail). `restore_command`
/// is the one the restored cluster gets; `command_line` the `pg_ark
/// restore` invocation that carries the plan out.
pub fn steps(
    plan: &Plan,
    restore_command: &str,
    command_line: &str,
) -> Vec<(i32, String, String, String)> {
    let mut rows = Vec::new();
    let mut n = 0;
    let mut push = |action: &str, command: String, detail: String| {
        n += 1;
        rows.push((n, action.to_string(), command, detail));
    };
    for b in &plan.chain {
        push(
            "fetch backup",
            String::new(),
            format!(
                "{} backup \"{}\" (timeline {}, LSN {} to {}, finished {}): {} files, {} stored, {} original",
                b.kind,
                b.backup_id,
                b.timeline,
                b.start_lsn,
                b.stop_lsn,
                b.finished_at,
                b.files,
                human_bytes(b.stored_bytes),
                human_bytes(b.original_bytes)
            ),
        );
    }
    let total: u64 = plan.chain.iter().map(|b| b.stored_bytes).sum();
    push(
        "rebuild data directory",
        String::new(),
        format!(
            "{} files of backup \"{}\" rebuilt in place from {} backup(s), at most {} downloaded",
            plan.backup().files,
            plan.backup().backup_id,
            plan.chain.len(),
            human_bytes(total)
        ),
    );
    push(
        "set",
        format!(
            "restore_command = '{}'",
            restore_command.replace('\'', "''")
        ),
        "written to postgresql.auto.conf, with recovery.signal".into(),
    );
    for (k, v) in &plan.settings {
        push("set", format!("{k} = {v}"), String::new());
    }
    let tlis: Vec<String> = plan.path.iter().map(|s| s.timeline.to_string()).collect();
    push(
        "replay WAL",
        String::new(),
        format!(
            "{} segment(s), {} to {}, on timeline(s) {}; recovery stops {}",
            plan.segments,
            plan.first_segment,
            plan.last_segment,
            tlis.join(", "),
            plan.stop
        ),
    );
    for note in &plan.notes {
        push("note", String::new(), note.clone());
    }
    push(
        "restore",
        command_line.to_string(),
        "run with the server stopped; the directory must be empty or absent".into(),
    );
    push(
        "start",
        "pg_ctl -D <DIR> start".into(),
        "as the OS user that owns the directory".into(),
    );
    rows
}

/// Quote a word for the shell (restore_command runs through one).
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-:=@%+,".contains(&b))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// The target as `pg_ark restore` options.
pub fn target_words(req: &Request) -> Vec<String> {
    let mut w: Vec<String> = match &req.target {
        Target::Latest => vec![],
        Target::Immediate => vec!["--immediate".into()],
        Target::Time(t) => vec!["--target-time".into(), format_time(*t)],
        Target::Lsn(l) => vec!["--target-lsn".into(), format_lsn(*l)],
        Target::Xid(x) => vec!["--target-xid".into(), x.to_string()],
        Target::Name(n) => vec!["--target-name".into(), n.clone()],
    };
    match req.timeline {
        TimelineChoice::Latest => {}
        TimelineChoice::Current => w.extend(["--target-timeline".into(), "current".into()]),
        TimelineChoice::Id(n) => w.extend(["--target-timeline".into(), n.to_string()]),
    }
    w
}

/// `pg_ark restore` for `plan`, and the restore_command it writes, both
/// for a shell. `exe` is the pg_ark binary's path.
pub fn command_lines(
    plan: &Plan,
    req: &Request,
    repo: &crate::repo::config::RepoConfig,
    exe: &str,
    pgdata: &str,
    action: &str,
) -> (String, String) {
    let join = |w: &[String]| {
        w.iter()
            .map(|x| shell_quote(x))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut get = vec![exe.to_string(), "wal-get".into()];
    get.extend(repo.words());
    let restore_command = format!("{} %f %p", join(&get));
    let mut words = vec![exe.to_string(), "restore".into()];
    words.extend(repo.words());
    words.extend(["--pgdata".into(), pgdata.to_string()]);
    words.extend(target_words(req));
    if action != "promote" && req.target != Target::Latest {
        words.extend(["--target-action".into(), action.to_string()]);
    }
    words.extend(["--backup".into(), plan.backup().backup_id.clone()]);
    (join(&words), restore_command)
}

/// Bytes for people (binary units).
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}
