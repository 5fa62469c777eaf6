//! The repository's layout: every key pg_ark stores is built here, and
//! nowhere else.
//!
//! ```text
//! pg_ark.repo(.copy)                                repository descriptor: format version
//! clusters/<system id>/cluster.info(.copy)          the cluster: system id, major, WAL segment size
//! clusters/<system id>/wal/<timeline+log>/<segment> WAL segments (and .partial, .backup)
//! clusters/<system id>/wal/<timeline>.history       timeline history files
//! clusters/<system id>/backup/<id>/                 a physical backup: backup.info(.copy),
//!                                                   manifest(.copy), files and bundles,
//!                                                   lease/<seq>, drill.json
//! clusters/<system id>/backup.index                 the list of complete physical backups
//! clusters/<system id>/logical/<database>/<label>/  a logical dump: backup.info, its data
//! ```
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
/// Physical backups, inside a cluster entry.
pub const BACKUP: &str = "backup/";
/// Logical dumps, inside a cluster entry.
pub const LOGICAL: &str = "logical/";

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
