//! The environment a program gets: never pg_ark's whole environment, but
//! an allow-list of what any program needs (the search path, the home
//! directory, the locale, the time zone, the library path), the groups the
//! caller asks for, and the caller's own additions.
//!
//! Inside the server, pg_ark's environment is the postmaster's: `PGDATA`,
//! `PGPORT` and the rest name the primary, and nothing may lead a child
//! there. A group is therefore asked for by name:
//!
//! - [`Env::libpq`]: libpq's variables (`PGHOST`, `PGPASSFILE`, `PGSSLMODE`,
//!   ...; every `PG<letter>...` but `PGDATA`), for a client of the user's
//!   choosing (the CLI's psql and pg_restore);
//! - [`Env::repository`]: what `pg_ark wal-get` needs to reach the
//!   repository (`AWS_*`, `PG_ARK_*`, the proxies and the CA bundle), for a
//!   server whose `restore_command` runs it;
//! - [`Env::inherit_all`]: everything, for the one program that starts the
//!   user's own server from the user's shell (`pg_ark restore --start`).
use std::ffi::{OsStr, OsString};

/// Always passed on when set.
const BASE: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "TMPDIR",
    "TZ",
    "TZDIR",
    "LANG",
    "LANGUAGE",
    "LD_LIBRARY_PATH",
];

/// Passed on by [`Env::repository`]: the S3 client's configuration.
const REPOSITORY: &[&str] = &[
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "all_proxy",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
];

/// Which variables of pg_ark's environment a program gets, and what is set
/// or removed on top.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Env {
    libpq: bool,
    repository: bool,
    all: bool,
    /// Set (`Some`) or removed (`None`), in order; the last word wins.
    changes: Vec<(OsString, Option<OsString>)>,
}

impl Env {
    /// The allow-list only.
    pub fn clean() -> Env {
        Env::default()
    }

    /// Pass libpq's variables on too (never `PGDATA`).
    pub fn libpq(mut self) -> Env {
        self.libpq = true;
        self
    }

    /// Pass what reaches the repository on too (`AWS_*`, `PG_ARK_*`, the
    /// proxies, the CA bundle).
    pub fn repository(mut self) -> Env {
        self.repository = true;
        self
    }

    /// Pass everything on.
    pub fn inherit_all(mut self) -> Env {
        self.all = true;
        self
    }

    pub fn set(&mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) {
        self.changes
            .push((key.as_ref().to_owned(), Some(value.as_ref().to_owned())));
    }

    pub fn remove(&mut self, key: impl AsRef<OsStr>) {
        self.changes.push((key.as_ref().to_owned(), None));
    }

    /// What was set on top, in order (removals as `None`).
    pub fn changes(&self) -> &[(OsString, Option<OsString>)] {
        &self.changes
    }

    /// Whether a variable of pg_ark's environment is passed on.
    pub fn passes(&self, key: &OsStr) -> bool {
        if self.all {
            return true;
        }
        let Some(k) = key.to_str() else {
            return false;
        };
        BASE.contains(&k)
            || k.starts_with("LC_")
            || (self.libpq && is_libpq(k))
            || (self.repository
                && (k.starts_with("AWS_") || k.starts_with("PG_ARK_") || REPOSITORY.contains(&k)))
    }

    /// The child's whole environment, from `parent` (pg_ark's).
    pub fn resolve(
        &self,
        parent: impl IntoIterator<Item = (OsString, OsString)>,
    ) -> Vec<(OsString, OsString)> {
        let mut out: Vec<(OsString, OsString)> =
            parent.into_iter().filter(|(k, _)| self.passes(k)).collect();
        for (k, v) in &self.changes {
            out.retain(|(name, _)| name != k);
            if let Some(v) = v {
                out.push((k.clone(), v.clone()));
            }
        }
        out
    }
}

/// libpq's variables: `PG` and a capital letter (`PGHOST`, `PGSSLMODE`;
/// not `PG_ARK_...`), but `PGDATA`, which is the server's.
fn is_libpq(k: &str) -> bool {
    let b = k.as_bytes();
    b.len() > 2 && k.starts_with("PG") && b[2].is_ascii_uppercase() && k != "PGDATA"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(v: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        v.iter().map(|(k, v)| (k.into(), v.into())).collect()
    }

    fn names(v: &[(OsString, OsString)]) -> Vec<String> {
        v.iter().map(|(k, _)| k.to_string_lossy().into()).collect()
    }

    #[test]
    fn only_the_allow_list_and_the_groups_asked_for_pass() {
        let parent = vars(&[
            ("PATH", "/bin"),
            ("HOME", "/home/pg"),
            ("LC_MESSAGES", "de_DE"),
            ("PGDATA", "/primary"),
            ("PGPORT", "5432"),
            ("PGSSLMODE", "require"),
            ("PG_ARK_REPOSITORY", "s3://b"),
            ("AWS_SECRET_ACCESS_KEY", "s"),
            ("https_proxy", "http://proxy"),
            ("SECRET_TOKEN", "x"),
            ("LD_PRELOAD", "/evil.so"),
        ]);
        assert_eq!(
            names(&Env::clean().resolve(parent.clone())),
            ["PATH", "HOME", "LC_MESSAGES"]
        );
        assert_eq!(
            names(&Env::clean().libpq().resolve(parent.clone())),
            ["PATH", "HOME", "LC_MESSAGES", "PGPORT", "PGSSLMODE"]
        );
        assert_eq!(
            names(&Env::clean().repository().resolve(parent.clone())),
            [
                "PATH",
                "HOME",
                "LC_MESSAGES",
                "PG_ARK_REPOSITORY",
                "AWS_SECRET_ACCESS_KEY",
                "https_proxy"
            ]
        );
        assert_eq!(Env::clean().inherit_all().resolve(parent.clone()), parent);
    }

    #[test]
    fn changes_apply_in_order_on_top() {
        let mut env = Env::clean().libpq();
        env.set("LC_ALL", "C");
        env.remove("LC_MESSAGES");
        env.set("PGDATA", "/scratch/data");
        env.set("PGPORT", "1");
        env.set("PGPORT", "2");
        let out = env.resolve(vars(&[("LC_MESSAGES", "de"), ("PGPORT", "5432")]));
        assert_eq!(
            out,
            vars(&[
                ("LC_ALL", "C"),
                ("PGDATA", "/scratch/data"),
                ("PGPORT", "2")
            ])
        );
    }
}
