//! The repository's layout: every key pg_ark stores is built here, and
//! nowhere else.
//!
//! ```text
//! pg_ark.repo(.copy)                                repository descriptor: format version
//! clusters/<system id>/cluster.info(.copy)          the cluster: system id, major, WAL segment size
//! clusters/<system id>/wal/<timeline+log>/<segment> WAL segments (and .partial, .backup)
//! clusters/<system id>/wal/<timeline>.history       timeline history files
//! clusters/<system id>/wal/…/<file>.repair-<time>   a good copy of a WAL file stored damaged
//! clusters/<system id>/backup/<id>/                 a physical backup: backup.info(.copy),
//!                                                   manifest(.copy), files and bundles,
//!                                                   lease/<seq>, drill/<seq>
//! clusters/<system id>/backup.index.d/<seq>         the list of complete physical backups
//! clusters/<system id>/locks.d/<seq>                 until when what retention keeps is locked
//! clusters/<system id>/logical/<database>/<label>/  a logical dump: backup.info, its data
//! keys/<data key>/<generation>                      an encrypted repository's key objects
//! ```
//!
//! No object is ever written twice, overwritten or renamed (a repository
//! under S3 Object Lock keeps every version): what changes is written as
//! numbered generations (`<seq>`, see [`crate::repo::generations`]), and a
//! WAL file stored damaged stays, beside its repair.
//!
//! In an encrypted repository ([`crate::crypto::layer`]) every object is
//! encrypted except the metadata [`stored_in_clear`] names: descriptors,
//! indexes, leases and key objects, which hold no table data, and the
//! damaged copies pg_ark keeps aside as they were found.
//!
//! Keys inside a cluster entry are given relative to it (`wal/…`); the entry
//! ([`crate::repo::ClusterRepo::key`]) puts `clusters/<system id>/` before
//! them.

/// The repository descriptor (and `.copy`).
pub const DESCRIPTOR: &str = "pg_ark.repo";
/// Where the cluster entries are.
pub const CLUSTERS: &str = "clusters/";
/// A cluster entry's descriptor, inside the entry.
pub const CLUSTER_INFO: &str = "cluster.info";
/// WAL, inside a cluster entry.
pub const WAL: &str = "wal/";
/// What follows a WAL object's key in the key of its repair
/// (`<key>.repair-<unix time>[-<n>]`), stored when the object was found
/// damaged (see `ClusterRepo::push_wal`).
pub const WAL_REPAIR: &str = ".repair-";
/// Physical backups, inside a cluster entry.
pub const BACKUP: &str = "backup/";
/// Logical dumps, inside a cluster entry.
pub const LOGICAL: &str = "logical/";

/// Key objects of an encrypted repository (see `crypto::layer`).
pub const KEYS: &str = "keys/";

/// The folder of the key objects of data key `id` (`age:<hex>`), with its
/// trailing `/`.
pub fn key_objects(id: &str) -> String {
    format!("{KEYS}{}/", id.replace(':', "-"))
}

/// Whether `key` is one of the metadata objects an encrypted repository
/// keeps in the clear (everything else is encrypted, so an object kind
/// added later is encrypted unless it is named here).
pub fn stored_in_clear(key: &str) -> bool {
    let key = key.strip_suffix(".copy").unwrap_or(key);
    let c: Vec<&str> = key.split('/').collect();
    // By position, never by a name alone: a data file may be called
    // anything (a file named backup.info in PGDATA is data).
    match c[..] {
        [d] => d == DESCRIPTOR,
        ["keys", _, _] => true,
        ["clusters", _, name] => name == CLUSTER_INFO || name == "backup.index",
        ["clusters", _, "backup.index.d" | "locks.d", _] => true,
        ["clusters", _, "backup", _, name] => name == "backup.info",
        ["clusters", _, "backup", _, "lease", _] => true,
        ["clusters", _, "logical", _, _, name] => name == "backup.info",
        ["clusters", _, "wal", _, name] | ["clusters", _, "wal", name] => {
            name.contains(".damaged-")
        }
        _ => false,
    }
}

/// Whether `key` is a WAL file (or history file) of a cluster entry.
pub fn is_wal(key: &str) -> bool {
    let c: Vec<&str> = key.split('/').collect();
    matches!(c[..], ["clusters", _, "wal", ..])
}

/// Whether `key` is an object the writing server reads back without an
/// identity: a physical backup's manifest (its root or a segment), which
/// the next incremental reads, and its drill record. An encrypted
/// repository encrypts these to the server's own key as well.
pub fn read_back_by_writer(key: &str) -> bool {
    let key = key.strip_suffix(".copy").unwrap_or(key);
    let c: Vec<&str> = key.split('/').collect();
    matches!(
        c[..],
        ["clusters", _, "backup", _, "manifest" | "drill.json"]
            | ["clusters", _, "backup", _, "manifest.d" | "drill", _]
    )
}

/// The prefix of cluster `sysid`'s entry, with its trailing `/`.
pub fn cluster_entry(sysid: u64) -> String {
    format!("{CLUSTERS}{sysid}/")
}

/// The key of cluster `sysid`'s descriptor.
pub fn cluster_info(sysid: u64) -> String {
    format!("{}{CLUSTER_INFO}", cluster_entry(sysid))
}

/// The system identifier whose descriptor `key` is, if it is one.
pub fn cluster_of_info(key: &str) -> Option<u64> {
    key.strip_prefix(CLUSTERS)?
        .strip_suffix(&format!("/{CLUSTER_INFO}"))?
        .parse()
        .ok()
}

/// The folder of WAL whose names begin with `group` (timeline and log, the
/// first 16 hex digits), inside an entry, with its trailing `/`.
pub fn wal_group(group: &str) -> String {
    format!("{WAL}{group}/")
}

/// The key of WAL file `name` inside an entry, given its key relative to
/// the WAL folder ([`crate::wal::relative_key`]).
pub fn wal_file(relative: &str) -> String {
    format!("{WAL}{relative}")
}

/// The folder of physical backup `id` inside an entry, without the
/// trailing `/`.
pub fn backup(id: &str) -> String {
    format!("{BACKUP}{id}")
}

/// The folder of logical dump `label` of the database whose encoded name is
/// `database`, inside an entry, without the trailing `/`.
pub fn logical(database: &str, label: &str) -> String {
    format!("{LOGICAL}{database}/{label}")
}

/// The folder of the logical dumps of the database whose encoded name is
/// `database`, inside an entry, with its trailing `/`.
pub fn logical_database(database: &str) -> String {
    format!("{LOGICAL}{database}/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_metadata_is_stored_in_the_clear() {
        for k in [
            "pg_ark.repo",
            "pg_ark.repo.copy",
            "keys/age-0011223344556677/000001",
            "clusters/42/cluster.info",
            "clusters/42/cluster.info.copy",
            "clusters/42/backup.index",
            "clusters/42/backup.index.d/000000000001",
            "clusters/42/backup.index.d/000000000001.copy",
            "clusters/42/backup/20261205T000000Z-F/backup.info",
            "clusters/42/backup/20261205T000000Z-F/lease/000000000001",
            "clusters/42/logical/db/label/backup.info",
            "clusters/42/wal/0000000100000000/000000010000000000000001.damaged-1700000000",
            "clusters/42/wal/00000002.history.damaged-1700000000",
        ] {
            assert!(stored_in_clear(k), "{k}");
        }
        for k in [
            "clusters/42/wal/0000000100000000/000000010000000000000001",
            "clusters/42/wal/00000002.history",
            "clusters/42/backup/20261205T000000Z-F/manifest",
            "clusters/42/backup/20261205T000000Z-F/manifest.copy",
            "clusters/42/backup/20261205T000000Z-F/manifest.d/000001",
            "clusters/42/backup/20261205T000000Z-F/data/base/5/16384",
            "clusters/42/backup/20261205T000000Z-F/data/base/5/backup.info",
            "clusters/42/logical/db/label/dump.custom",
            "clusters/42/logical/db/label/dump.dir/toc.dat",
            "clusters/42/logical/lease/x/dump.sql",
            "clusters/42/backup/20261205T000000Z-F/data/backup.info",
            "clusters/42/backup/20261205T000000Z-F/data/lease/x",
            "clusters/42/logical/db/label/dump.dir/backup.info",
            "keys/age-00/1/2",
            "clusters/42/backup/20261205T000000Z-F/drill.json",
            "clusters/42/backup/20261205T000000Z-F/drill/000000000001",
            "clusters/42/wal/0000000100000000/000000010000000000000001.repair-1700000000",
        ] {
            assert!(!stored_in_clear(k), "{k}");
        }
        assert_eq!(
            key_objects("age:0011223344556677"),
            "keys/age-0011223344556677/"
        );
    }

    #[test]
    fn keys_are_where_the_format_says() {
        assert_eq!(cluster_entry(42), "clusters/42/");
        assert_eq!(cluster_info(42), "clusters/42/cluster.info");
        assert_eq!(cluster_of_info("clusters/42/cluster.info"), Some(42));
        assert_eq!(cluster_of_info("clusters/42/cluster.info.copy"), None);
        assert_eq!(cluster_of_info("clusters/x/cluster.info"), None);
        assert_eq!(wal_group("0000000100000000"), "wal/0000000100000000/");
        assert_eq!(
            wal_file(&crate::wal::relative_key("000000010000000000000002").unwrap()),
            "wal/0000000100000000/000000010000000000000002"
        );
        assert_eq!(
            wal_file(&crate::wal::relative_key("00000002.history").unwrap()),
            "wal/00000002.history"
        );
        assert_eq!(
            backup("20261201T120000Z-F-j1"),
            "backup/20261201T120000Z-F-j1"
        );
        assert_eq!(logical("app", "l1"), "logical/app/l1");
        assert_eq!(logical_database("app"), "logical/app/");
    }
}
