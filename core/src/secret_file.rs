//! Files that hold secrets (S3 keys, the HTTP endpoint's token): outside
//! the data directory, which every physical backup copies, and closed to
//! other OS users. Errors are reasons in words; they never contain the
//! file's contents.
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Who besides the file's owner may read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readers {
    /// The owner and its group (mode 0600 or 0640).
    OwnerAndGroup,
    /// The owner alone (mode 0600).
    Owner,
}

/// The contents of the secret file `path`, after the checks.
pub fn read(path: &Path, data_dir: Option<&Path>, readers: Readers) -> Result<String, String> {
    String::from_utf8(read_bytes(path, data_dir, readers)?)
        .map_err(|_| "it is not text (UTF-8)".to_string())
}

/// A file of public keys (the recipients an encrypted repository's data
/// keys are wrapped to): outside the data directory, and writable by its
/// owner alone, since whoever could add a line would receive every new
/// backup's key. Anyone may read it.
pub fn read_public(path: &Path, data_dir: Option<&Path>) -> Result<String, String> {
    use std::os::unix::fs::MetadataExt;
    let real = checked(path, data_dir)?;
    let meta = std::fs::metadata(&real).map_err(|e| format!("could not open it: {e}"))?;
    // SAFETY: a plain system call without arguments.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me && meta.uid() != 0 {
        return Err(format!(
            "it belongs to OS user {}; only this OS user ({me}) or root may own it",
            meta.uid()
        ));
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(format!(
            "OS users other than its owner can change it (mode {mode:04o}); chmod 644 or 600 it"
        ));
    }
    std::fs::read_to_string(&real).map_err(|e| format!("could not read it: {e}"))
}

/// An absolute path outside `data_dir`, resolved.
fn checked(path: &Path, data_dir: Option<&Path>) -> Result<std::path::PathBuf, String> {
    if !path.is_absolute() {
        return Err("it must be an absolute path".into());
    }
    let real = std::fs::canonicalize(path).map_err(|e| format!("could not open it: {e}"))?;
    if let Some(dd) = data_dir.and_then(|d| std::fs::canonicalize(d).ok()) {
        if real.starts_with(&dd) {
            return Err(format!(
                "it is inside the data directory {}, which every physical backup copies",
                dd.display()
            ));
        }
    }
    Ok(real)
}

/// [`read`], as bytes (an identity file under a passphrase is binary).
pub fn read_bytes(
    path: &Path,
    data_dir: Option<&Path>,
    readers: Readers,
) -> Result<Vec<u8>, String> {
    let real = checked(path, data_dir)?;
    let meta = std::fs::metadata(&real).map_err(|e| format!("could not open it: {e}"))?;
    let mode = meta.permissions().mode() & 0o7777;
    match readers {
        Readers::OwnerAndGroup if mode & 0o007 != 0 => {
            return Err(format!(
                "other OS users can access it (mode {mode:04o}); allow only its owner and group (chmod 600 or 640)"
            ))
        }
        Readers::Owner if mode & 0o077 != 0 => {
            return Err(format!(
                "OS users other than its owner can access it (mode {mode:04o}); chmod 600 it"
            ))
        }
        _ => {}
    }
    std::fs::read(&real).map_err(|e| format!("could not read it: {e}"))
}

/// A bearer token from the file `path`: one line, printable ASCII without
/// spaces, at least 16 characters.
pub fn read_token(path: &Path, data_dir: Option<&Path>) -> Result<String, String> {
    let text = read(path, data_dir, Readers::Owner)?;
    let token = text.trim();
    if token.len() < 16 || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(
            "it must hold one token of at least 16 printable characters without spaces".into(),
        );
    }
    Ok(token.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(dir: &Path, name: &str, text: &str, mode: u32) -> std::path::PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    #[test]
    fn tokens_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let good = file(dir.path(), "t", "abcdefghijklmnop\n", 0o600);
        assert_eq!(read_token(&good, None).unwrap(), "abcdefghijklmnop");
        let group = file(dir.path(), "g", "abcdefghijklmnop\n", 0o640);
        let e = read_token(&group, None).unwrap_err();
        assert!(e.contains("chmod 600") && !e.contains("abcdef"), "{e}");
        let short = file(dir.path(), "s", "abc\n", 0o600);
        assert!(read_token(&short, None).is_err());
        let e = read_token(&good, Some(dir.path())).unwrap_err();
        assert!(e.contains("inside the data directory"), "{e}");
        assert!(read_token(Path::new("relative"), None).is_err());
    }
}
