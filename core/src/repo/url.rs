//! Parsing of repository URLs (`ark.repository`, the CLI's `--repo`).
//!
//! Two forms are accepted:
//! - `file:///absolute/path`: a repository on a local (or mounted) file system;
//! - `s3://bucket[/prefix]`: an S3 bucket, optionally under a key prefix.
//!
//! Anything else is refused here, where the value is first seen, so that a
//! typo never reaches the archiver or a restore.
use crate::Error;
use std::fmt;
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RepoUrl {
    File { path: PathBuf },
    S3 { bucket: String, prefix: String },
}

impl RepoUrl {
    pub fn parse(url: &str) -> Result<RepoUrl, Error> {
        let bad = |reason: &str| Error::InvalidRepositoryUrl {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        let url_trimmed = url.trim();
        if url_trimmed.is_empty() {
            return Err(bad("the URL is empty"));
        }
        if let Some(rest) = url_trimmed.strip_prefix("file://") {
            if !rest.starts_with('/') {
                return Err(bad(
                    "a file URL needs an absolute path, as in file:///var/lib/pg_ark",
                ));
            }
            let trimmed = rest.trim_end_matches('/');
            let path = if trimmed.is_empty() { "/" } else { trimmed };
            if path.split('/').any(|c| c == "..") {
                return Err(bad("the path may not contain \"..\""));
            }
            return Ok(RepoUrl::File {
                path: PathBuf::from(path),
            });
        }
        if let Some(rest) = url_trimmed.strip_prefix("s3://") {
            let (bucket, prefix) = match rest.split_once('/') {
                Some((b, p)) => (b, p.trim_matches('/')),
                None => (rest, ""),
            };
            if !valid_bucket(bucket) {
                return Err(bad(
                    "the bucket name must be 3 to 63 characters of lowercase letters, digits, dots and hyphens",
                ));
            }
            if prefix.split('/').any(|c| c == ".." || c == ".") || prefix.contains("//") {
                return Err(bad(
                    "the prefix may not contain empty, \".\" or \"..\" components",
                ));
            }
            return Ok(RepoUrl::S3 {
                bucket: bucket.to_string(),
                prefix: prefix.to_string(),
            });
        }
        match url_trimmed.split_once("://") {
            Some((scheme, _)) => Err(bad(&format!(
                "unknown scheme \"{scheme}\" (expected \"file\" or \"s3\")"
            ))),
            None => Err(bad(
                "not a URL (expected file:///path or s3://bucket/prefix)",
            )),
        }
    }
}

impl RepoUrl {
    /// How the storage of this URL names itself (`Storage::location`), as
    /// `ark.backups.repository` records it.
    pub fn location(&self) -> String {
        match self {
            RepoUrl::File { path } => format!("file://{}", path.display()),
            RepoUrl::S3 { bucket, prefix } if prefix.is_empty() => format!("s3://{bucket}"),
            RepoUrl::S3 { bucket, prefix } => format!("s3://{bucket}/{prefix}"),
        }
    }
}

fn valid_bucket(b: &str) -> bool {
    (3..=63).contains(&b.len())
        && b.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'.' || c == b'-')
        && b.as_bytes()
            .first()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && b.as_bytes()
            .last()
            .is_some_and(|c| c.is_ascii_alphanumeric())
}

impl fmt::Display for RepoUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RepoUrl::File { path } => write!(f, "file://{}", path.display()),
            RepoUrl::S3 { bucket, prefix } if prefix.is_empty() => write!(f, "s3://{bucket}"),
            RepoUrl::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_urls() {
        assert_eq!(
            RepoUrl::parse("file:///var/lib/ark/").unwrap(),
            RepoUrl::File {
                path: PathBuf::from("/var/lib/ark")
            }
        );
        assert_eq!(
            RepoUrl::parse("file:///").unwrap(),
            RepoUrl::File {
                path: PathBuf::from("/")
            }
        );
    }

    #[test]
    fn locations_are_the_storages_own() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}/", dir.path().display());
        let storage = crate::storage::local::LocalStorage::open(dir.path()).unwrap();
        use crate::storage::Storage;
        assert_eq!(RepoUrl::parse(&url).unwrap().location(), storage.location());
        assert_eq!(
            RepoUrl::parse("s3://b-1/p/q/").unwrap().location(),
            "s3://b-1/p/q"
        );
        assert_eq!(RepoUrl::parse("s3://b-1").unwrap().location(), "s3://b-1");
    }

    #[test]
    fn s3_urls() {
        assert_eq!(
            RepoUrl::parse("s3://my-bucket/a/b/").unwrap(),
            RepoUrl::S3 {
                bucket: "my-bucket".into(),
                prefix: "a/b".into()
            }
        );
        assert_eq!(
            RepoUrl::parse("s3://my-bucket").unwrap(),
            RepoUrl::S3 {
                bucket: "my-bucket".into(),
                prefix: String::new()
            }
        );
    }

    #[test]
    fn display_round_trips() {
        for u in ["file:///var/lib/ark", "s3://bkt/x/y", "s3://bkt"] {
            assert_eq!(RepoUrl::parse(u).unwrap().to_string(), u);
        }
    }

    #[test]
    fn errors_name_the_value_and_the_reason() {
        let e = RepoUrl::parse("ftp://host/x").unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid repository URL \"ftp://host/x\": unknown scheme \"ftp\" (expected \"file\" or \"s3\")"
        );
        assert!(e.hint().unwrap().contains("file:///"));
        let e = RepoUrl::parse("file://relative/path").unwrap_err();
        assert!(e.to_string().contains("absolute path"), "{e}");
        let e = RepoUrl::parse("s3://Bad_Bucket/x").unwrap_err();
        assert!(e.to_string().contains("bucket name"), "{e}");
        let e = RepoUrl::parse("/just/a/path").unwrap_err();
        assert!(e.to_string().contains("not a URL"), "{e}");
        assert!(RepoUrl::parse("").is_err());
        assert!(RepoUrl::parse("file:///a/../b").is_err());
        assert!(RepoUrl::parse("s3://bkt/a//b").is_err());
    }
}
