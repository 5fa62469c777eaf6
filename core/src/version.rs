//! The extension's two versions: the library's ([`crate::VERSION`]) and
//! the catalog's, which `CREATE EXTENSION pg_ark` or `ALTER EXTENSION pg_ark
//! UPDATE` installed in a database (`pg_extension.extversion`).
//!
//! The library reads and writes only a catalog of its own version. Between
//! installing a new library and `ALTER EXTENSION pg_ark UPDATE`, the
//! scheduler runs no schedule or job and the functions of the queue refuse,
//! saying what to run; WAL archiving, which needs no catalog, goes on.

/// Whether version `a` comes before `b`, comparing dot-separated numbers
/// (`0.9.0` before `0.10.0`); a part that is not a number compares as 0.
pub fn is_older(a: &str, b: &str) -> bool {
    let parts = |v: &str| -> Vec<u64> {
        v.split('.')
            .map(|p| p.trim().parse::<u64>().unwrap_or(0))
            .collect()
    };
    let (mut a, mut b) = (parts(a), parts(b));
    let n = a.len().max(b.len());
    a.resize(n, 0);
    b.resize(n, 0);
    a < b
}

/// The catalog in a database is at another version than the library.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogMismatch {
    /// `pg_extension.extversion`.
    pub installed: String,
    /// The library's version.
    pub library: String,
}

impl CatalogMismatch {
    /// `None` when the catalog is at the library's version.
    pub fn check(installed: &str, library: &str) -> Option<CatalogMismatch> {
        (installed != library).then(|| CatalogMismatch {
            installed: installed.to_string(),
            library: library.to_string(),
        })
    }

    pub fn message(&self) -> String {
        format!(
            "extension \"pg_ark\" is at version {}, its library at {}",
            self.installed, self.library
        )
    }

    /// What to do, in lower case (it follows a message in `ark.status()`).
    pub fn remedy(&self) -> String {
        if is_older(&self.installed, &self.library) {
            "run ALTER EXTENSION pg_ark UPDATE; until then no schedule or job runs (WAL archiving goes on)"
                .into()
        } else {
            format!(
                "this library is older than the extension: install pg_ark {}'s library and restart the server; until then no schedule or job runs",
                self.installed
            )
        }
    }

    /// The remedy as a PostgreSQL hint: a sentence.
    pub fn hint(&self) -> String {
        let r = self.remedy();
        let mut c = r.chars();
        match c.next() {
            Some(first) => format!("{}{}.", first.to_uppercase(), c.as_str()),
            None => r,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_by_number() {
        assert!(is_older("0.1.0", "0.2.0"));
        assert!(is_older("0.9.0", "0.10.0"));
        assert!(is_older("0.2", "0.2.1"));
        assert!(!is_older("0.2.0", "0.2"));
        assert!(!is_older("1.0.0", "0.10.0"));
        assert!(!is_older("0.2.0", "0.2.0"));
    }

    #[test]
    fn an_older_catalog_is_updated_and_a_newer_one_needs_its_library() {
        assert_eq!(CatalogMismatch::check("0.2.0", "0.2.0"), None);
        let m = CatalogMismatch::check("0.1.0", "0.2.0").unwrap();
        assert_eq!(
            m.message(),
            "extension \"pg_ark\" is at version 0.1.0, its library at 0.2.0"
        );
        assert_eq!(
            m.hint(),
            "Run ALTER EXTENSION pg_ark UPDATE; until then no schedule or job runs (WAL archiving goes on)."
        );
        let m = CatalogMismatch::check("0.3.0", "0.2.0").unwrap();
        assert!(
            m.hint().starts_with(
                "This library is older than the extension: install pg_ark 0.3.0's library"
            ),
            "{}",
            m.hint()
        );
    }
}
