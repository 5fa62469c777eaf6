//! WAL file names, as PostgreSQL's archiver hands them over, and what is
//! inside a segment's first page that identifies its cluster.
use crate::Error;

pub mod get;
pub mod lsn;
pub mod push;
pub mod segment;

pub use segment::{Segment, SegmentSize};

/// The kinds of files the archiver archives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalKind {
    /// `000000010000000000000001`
    Segment,
    /// `000000010000000000000001.partial`, left at a timeline switch
    Partial,
    /// `000000010000000000000001.00000028.backup`, a backup history file
    BackupHistory,
    /// `00000002.history`, a timeline history file
    TimelineHistory,
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
}

/// Classify a file name from `pg_wal`; anything else is refused.
pub fn classify(name: &str) -> Result<WalKind, Error> {
    let bad = || Error::NotAWalFileName {
        name: name.to_string(),
    };
    if is_hex(name, 24) {
        return Ok(WalKind::Segment);
    }
    if let Some(seg) = name.strip_suffix(".partial") {
        return if is_hex(seg, 24) {
            Ok(WalKind::Partial)
        } else {
            Err(bad())
        };
    }
    if let Some(rest) = name.strip_suffix(".backup") {
        return match rest.split_once('.') {
            Some((seg, off)) if is_hex(seg, 24) && is_hex(off, 8) => Ok(WalKind::BackupHistory),
            _ => Err(bad()),
        };
    }
    if let Some(tli) = name.strip_suffix(".history") {
        return if is_hex(tli, 8) {
            Ok(WalKind::TimelineHistory)
        } else {
            Err(bad())
        };
    }
    Err(bad())
}

/// Where a WAL file lives below a cluster's `wal/` folder: segments (and
/// their .partial and .backup files) are grouped by timeline and log id, the
/// first 16 characters, so no folder grows past 256 segments per log id.
pub fn relative_key(name: &str) -> Result<String, Error> {
    Ok(match classify(name)? {
        WalKind::TimelineHistory => name.to_string(),
        _ => format!("{}/{}", &name[..16], name),
    })
}

/// The system identifier recorded in a WAL segment's first (long) page
/// header, or `None` if `data` does not start with one.
///
/// XLogLongPageHeaderData: the 24-byte short header (xlp_magic u16,
/// xlp_info u16, xlp_tli u32, xlp_pageaddr u64, xlp_rem_len u32, padding),
/// then xlp_sysid u64. xlp_info has XLP_LONG_HEADER (0x0002) set.
pub fn segment_system_identifier(data: &[u8]) -> Option<u64> {
    if data.len() < 32 {
        return None;
    }
    let info = u16::from_le_bytes([data[2], data[3]]);
    if info & 0x0002 == 0 {
        return None;
    }
    let mut sysid = [0u8; 8];
    sysid.copy_from_slice(&data[24..32]);
    Some(u64::from_le_bytes(sysid))
}

/// The segment size recorded in a WAL segment's first (long) page header
/// (`xlp_seg_size`, after `xlp_sysid`), or `None` if `data` does not start
/// with one.
pub fn segment_header_size(data: &[u8]) -> Option<u64> {
    segment_system_identifier(data)?;
    let mut size = [0u8; 4];
    size.copy_from_slice(data.get(32..36)?);
    Some(u64::from(u32::from_le_bytes(size)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(
            classify("000000010000000000000001").unwrap(),
            WalKind::Segment
        );
        assert_eq!(
            classify("000000010000000A000000FF.partial").unwrap(),
            WalKind::Partial
        );
        assert_eq!(
            classify("000000010000000000000002.00000028.backup").unwrap(),
            WalKind::BackupHistory
        );
        assert_eq!(
            classify("00000002.history").unwrap(),
            WalKind::TimelineHistory
        );
        for bad in [
            "",
            "00000001000000000000000",
            "000000010000000000000001.gz",
            "0000000100000000000000zz",
            "../00000002.history",
            "x.history",
            "000000010000000000000001.0000002.backup",
        ] {
            assert!(classify(bad).is_err(), "{bad:?}");
        }
        let e = classify("core").unwrap_err();
        assert_eq!(e.to_string(), "\"core\" is not a WAL file name");
    }

    #[test]
    fn keys_group_by_timeline_and_log() {
        assert_eq!(
            relative_key("000000010000000200000003").unwrap(),
            "0000000100000002/000000010000000200000003"
        );
        assert_eq!(
            relative_key("000000010000000200000003.00000028.backup").unwrap(),
            "0000000100000002/000000010000000200000003.00000028.backup"
        );
        assert_eq!(
            relative_key("00000003.history").unwrap(),
            "00000003.history"
        );
    }

    #[test]
    fn sysid_from_long_header() {
        let mut page = vec![0u8; 8192];
        page[0..2].copy_from_slice(&0xD116u16.to_le_bytes());
        page[2..4].copy_from_slice(&0x0002u16.to_le_bytes());
        page[24..32].copy_from_slice(&7_312_345_678_901_234_567u64.to_le_bytes());
        page[32..36].copy_from_slice(&(64u32 << 20).to_le_bytes());
        assert_eq!(
            segment_system_identifier(&page),
            Some(7_312_345_678_901_234_567)
        );
        assert_eq!(segment_header_size(&page), Some(64 << 20));
        page[2] = 0;
        assert_eq!(segment_system_identifier(&page), None);
        assert_eq!(segment_header_size(&page), None);
        assert_eq!(segment_system_identifier(&page[..10]), None);
    }
}
