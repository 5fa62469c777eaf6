//! WAL segment arithmetic, for every segment size PostgreSQL allows: the
//! one home of segment numbers, names and LSNs in pg_ark.
//!
//! A cluster's `wal_segment_size` is fixed by `initdb --wal-segsize` (1 MiB
//! to 1 GiB, a power of two). It decides how LSNs map to segment files:
//! the segment number of an LSN is `lsn / size`, and a segment's file name
//! splits that number into a "log id" (`segno / segments per log id`) and a
//! segment within it (`segno % segments per log id`), where a log id spans
//! 4 GiB of WAL. With 16 MiB segments that is 256 per log id, so the last
//! part of a name runs to `000000FF`; with 1 MiB segments it runs to
//! `00000FFF`, with 1 GiB segments to `00000003`. Names therefore cannot be
//! read, ordered or stepped through without the size.
//!
//! These are PostgreSQL's own formulas (`src/include/access/xlog_internal.h`):
//! `IsValidWalSegSize`, `XLogSegmentsPerXLogId`, `XLByteToSeg`,
//! `XLByteToPrevSeg`, `XLogSegNoOffsetToRecPtr`, `XLogSegmentOffset`,
//! `XLogFileName` and `XLogFromFileName`.
//!
//! The size of a repository's WAL is recorded in its cluster entry
//! (`cluster.info`) and in every backup descriptor; entries and descriptors
//! written before pg_ark recorded it hold 16 MiB segments, PostgreSQL's
//! default, the only size those versions could restore.
use crate::Error;
use serde::{Deserialize, Serialize};

/// A valid WAL segment size, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "u64", into = "u64")]
pub struct SegmentSize(u32);

/// A segment: its timeline and its number (`XLogSegNo`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Segment {
    pub timeline: u32,
    pub segno: u64,
}

const MIB: u64 = 1024 * 1024;

impl SegmentSize {
    /// `WalSegMinSize`.
    pub const MIN: u64 = MIB;
    /// `WalSegMaxSize`.
    pub const MAX: u64 = 1024 * MIB;
    /// PostgreSQL's default (`initdb` without `--wal-segsize`), and what a
    /// repository written before pg_ark recorded the size holds.
    pub const DEFAULT: SegmentSize = SegmentSize(16 * MIB as u32);

    /// `IsValidWalSegSize`: a power of two from 1 MiB to 1 GiB.
    pub fn new(bytes: u64) -> Result<SegmentSize, Error> {
        if bytes.is_power_of_two() && (Self::MIN..=Self::MAX).contains(&bytes) {
            Ok(SegmentSize(bytes as u32))
        } else {
            Err(Error::InvalidSegmentSize { bytes })
        }
    }

    pub fn bytes(self) -> u64 {
        u64::from(self.0)
    }

    /// `XLogSegmentsPerXLogId`: segments per 4 GiB log id.
    pub fn per_xlogid(self) -> u64 {
        0x1_0000_0000 / self.bytes()
    }

    /// `XLByteToSeg`: the segment that holds the byte at `lsn`.
    pub fn segno_of(self, lsn: u64) -> u64 {
        lsn / self.bytes()
    }

    /// `XLByteToPrevSeg`: the segment that holds the byte before `lsn` (a
    /// record that ends at a boundary ends in the earlier segment).
    pub fn segno_before(self, lsn: u64) -> u64 {
        lsn.saturating_sub(1) / self.bytes()
    }

    /// `XLogSegNoOffsetToRecPtr(segno, 0)`: where segment `segno` starts.
    pub fn start_lsn(self, segno: u64) -> u64 {
        segno.saturating_mul(self.bytes())
    }

    /// `XLogSegmentOffset`: the position of `lsn` inside its segment.
    pub fn offset(self, lsn: u64) -> u64 {
        lsn & (self.bytes() - 1)
    }

    /// The first LSN at or after `lsn` that starts a segment.
    pub fn round_up(self, lsn: u64) -> u64 {
        let n = self.segno_of(lsn) + u64::from(self.offset(lsn) != 0);
        self.start_lsn(n)
    }

    /// `XLogFileName`: the file name of segment `segno` on `timeline`.
    pub fn name(self, timeline: u32, segno: u64) -> String {
        let per = self.per_xlogid();
        format!("{timeline:08X}{:08X}{:08X}", segno / per, segno % per)
    }

    /// The file name of `s`.
    pub fn name_of(self, s: Segment) -> String {
        self.name(s.timeline, s.segno)
    }

    /// `XLogFromFileName`: the segment a segment file name stands for, its
    /// name checked: 24 upper-case hex digits whose last eight are below
    /// the number of segments per log id (a name with a larger one comes
    /// from a cluster with smaller segments).
    pub fn parse(self, name: &str) -> Result<Segment, Error> {
        let hex = |s: &str| {
            (s.len() == 8
                && s.bytes()
                    .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b)))
            .then(|| u32::from_str_radix(s, 16).ok())
            .flatten()
        };
        let (Some(t), Some(l), Some(s)) = (
            name.get(..8).and_then(hex),
            name.get(8..16).and_then(hex),
            name.get(16..).and_then(hex),
        ) else {
            return Err(Error::NotAWalFileName { name: name.into() });
        };
        let seg = u64::from(s);
        if seg >= self.per_xlogid() {
            return Err(Error::SegmentNameNotOfSize {
                name: name.into(),
                segment_size: self,
            });
        }
        Ok(Segment {
            timeline: t,
            segno: u64::from(l) * self.per_xlogid() + seg,
        })
    }

    /// The segment of any WAL file but a timeline history file: a segment,
    /// its `.partial`, or a backup history file (`<segment>.<offset>.backup`).
    /// `None` for history files, names that are not WAL, and names
    /// impossible for this size.
    pub fn position(self, name: &str) -> Option<Segment> {
        match super::classify(name).ok()? {
            super::WalKind::TimelineHistory => None,
            _ => self.parse(name.get(..24)?).ok(),
        }
    }

    /// The segment after `name` (`XLogFileName` of its number + 1).
    pub fn next(self, name: &str) -> Result<String, Error> {
        let s = self.parse(name)?;
        Ok(self.name(s.timeline, s.segno + 1))
    }

    /// The segment before `name` on its timeline (`None` for the first).
    pub fn previous(self, name: &str) -> Result<Option<String>, Error> {
        let s = self.parse(name)?;
        Ok(s.segno.checked_sub(1).map(|n| self.name(s.timeline, n)))
    }

    /// Segment names from `start` to `stop`, inclusive, on one timeline.
    pub fn range(self, start: &str, stop: &str) -> Result<Vec<String>, Error> {
        let a = self.parse(start)?;
        let b = self.parse(stop)?;
        if a.timeline != b.timeline || b.segno < a.segno || b.segno - a.segno > 1_000_000 {
            return Err(Error::NotAWalFileName {
                name: format!("{start}..{stop}"),
            });
        }
        Ok((a.segno..=b.segno)
            .map(|n| self.name(a.timeline, n))
            .collect())
    }
}

impl Default for SegmentSize {
    /// PostgreSQL's default, 16 MiB.
    fn default() -> SegmentSize {
        SegmentSize::DEFAULT
    }
}

impl TryFrom<u64> for SegmentSize {
    type Error = Error;
    fn try_from(bytes: u64) -> Result<SegmentSize, Error> {
        SegmentSize::new(bytes)
    }
}

impl From<SegmentSize> for u64 {
    fn from(s: SegmentSize) -> u64 {
        s.bytes()
    }
}

impl std::fmt::Display for SegmentSize {
    /// As PostgreSQL shows it: `16MB`, `1GB`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.bytes() >= 1024 * MIB {
            write!(f, "{}GB", self.bytes() / (1024 * MIB))
        } else {
            write!(f, "{}MB", self.bytes() / MIB)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// PostgreSQL's macros, transcribed as C has them (uint64 arithmetic),
    /// to check the methods against.
    mod pg {
        pub fn is_valid_wal_seg_size(size: u64) -> bool {
            size > 0
                && (size & (size - 1)) == 0
                && (1024 * 1024..=1024 * 1024 * 1024).contains(&size)
        }
        pub fn xlog_segments_per_xlog_id(size: u64) -> u64 {
            0x1_0000_0000u64 / size
        }
        pub fn xl_byte_to_seg(xlrp: u64, size: u64) -> u64 {
            xlrp / size
        }
        pub fn xl_byte_to_prev_seg(xlrp: u64, size: u64) -> u64 {
            (xlrp - 1) / size
        }
        pub fn xlog_seg_no_offset_to_rec_ptr(segno: u64, offset: u64, size: u64) -> u64 {
            segno * size + offset
        }
        /// snprintf(fname, MAXFNAMELEN, "%08X%08X%08X", tli,
        ///   (uint32) (logSegNo / XLogSegmentsPerXLogId(wal_segsz_bytes)),
        ///   (uint32) (logSegNo % XLogSegmentsPerXLogId(wal_segsz_bytes)))
        pub fn xlog_file_name(tli: u32, seg_no: u64, size: u64) -> String {
            let per = xlog_segments_per_xlog_id(size);
            format!(
                "{:08X}{:08X}{:08X}",
                tli,
                (seg_no / per) as u32,
                (seg_no % per) as u32
            )
        }
        /// sscanf(fname, "%08X%08X%08X", tli, &log, &seg);
        /// *logSegNo = (uint64) log * XLogSegmentsPerXLogId(wal_segsz_bytes) + seg;
        pub fn xlog_from_file_name(fname: &str, size: u64) -> (u32, u64) {
            let tli = u32::from_str_radix(&fname[..8], 16).unwrap();
            let log = u64::from_str_radix(&fname[8..16], 16).unwrap();
            let seg = u64::from_str_radix(&fname[16..24], 16).unwrap();
            (tli, log * xlog_segments_per_xlog_id(size) + seg)
        }
    }

    const SIZES: [u64; 4] = [MIB, 16 * MIB, 64 * MIB, 1024 * MIB];

    #[test]
    fn valid_sizes_are_postgresqls() {
        for shift in 0..40u32 {
            let bytes = 1u64 << shift;
            assert_eq!(
                SegmentSize::new(bytes).is_ok(),
                pg::is_valid_wal_seg_size(bytes),
                "{bytes}"
            );
        }
        for bad in [0, 3 * MIB, 16 * MIB + 1, 512 * 1024, 2048 * MIB] {
            let e = SegmentSize::new(bad).unwrap_err();
            assert!(matches!(e, Error::InvalidSegmentSize { bytes } if bytes == bad));
        }
        assert_eq!(SegmentSize::DEFAULT.bytes(), 16 * MIB);
        assert_eq!(SegmentSize::default(), SegmentSize::DEFAULT);
        let shown: Vec<String> = SIZES
            .iter()
            .map(|&b| SegmentSize::new(b).unwrap().to_string())
            .collect();
        assert_eq!(shown, ["1MB", "16MB", "64MB", "1GB"]);
    }

    #[test]
    fn per_xlogid_of_each_size() {
        let per: Vec<u64> = SIZES
            .iter()
            .map(|&b| SegmentSize::new(b).unwrap().per_xlogid())
            .collect();
        assert_eq!(per, [0x1000, 0x100, 0x40, 4]);
        for &b in &SIZES {
            assert_eq!(
                SegmentSize::new(b).unwrap().per_xlogid(),
                pg::xlog_segments_per_xlog_id(b)
            );
        }
    }

    #[test]
    fn lsns_and_names_agree_with_postgresql() {
        let lsns = [
            1u64,
            0x0100_0000,
            0x0100_0028,
            0x0FFF_FFFF,
            0x1000_0000,
            0x1_0000_0000,
            0x1_0000_0001,
            0xAB_3FFF_FFFF,
            0xAB_4000_0000,
            0x7FFF_FFFF_FFFF,
        ];
        for &b in &SIZES {
            let s = SegmentSize::new(b).unwrap();
            for &lsn in &lsns {
                let segno = s.segno_of(lsn);
                assert_eq!(segno, pg::xl_byte_to_seg(lsn, b), "{b} {lsn:X}");
                assert_eq!(s.segno_before(lsn), pg::xl_byte_to_prev_seg(lsn, b));
                assert_eq!(
                    s.start_lsn(segno),
                    pg::xlog_seg_no_offset_to_rec_ptr(segno, 0, b)
                );
                assert_eq!(s.start_lsn(segno) + s.offset(lsn), lsn);
                for tli in [1u32, 2, 0xABCD] {
                    let name = s.name(tli, segno);
                    assert_eq!(name, pg::xlog_file_name(tli, segno, b));
                    assert_eq!(pg::xlog_from_file_name(&name, b), (tli, segno));
                    assert_eq!(
                        s.parse(&name).unwrap(),
                        Segment {
                            timeline: tli,
                            segno
                        }
                    );
                }
            }
        }
    }

    #[test]
    fn names_of_known_positions() {
        let mb = |m| SegmentSize::new(m * MIB).unwrap();
        // LSN 0/10000000, which the 64 MiB cluster of issue 20 needed.
        assert_eq!(
            mb(64).name(1, mb(64).segno_of(0x1000_0000)),
            "000000010000000000000004"
        );
        assert_eq!(
            mb(16).name(1, mb(16).segno_of(0x1000_0000)),
            "000000010000000000000010"
        );
        // The last segment of log id 0 and the first of log id 1.
        assert_eq!(mb(1).name(1, 0xFFF), "000000010000000000000FFF");
        assert_eq!(
            mb(1).next("000000010000000000000FFF").unwrap(),
            "000000010000000100000000"
        );
        assert_eq!(
            mb(16).next("0000000100000000000000FF").unwrap(),
            "000000010000000100000000"
        );
        assert_eq!(
            mb(64).next("00000002000000AB0000003F").unwrap(),
            "00000002000000AC00000000"
        );
        assert_eq!(
            mb(1024).next("000000010000000000000003").unwrap(),
            "000000010000000100000000"
        );
        assert_eq!(
            mb(1024)
                .previous("000000010000000100000000")
                .unwrap()
                .as_deref(),
            Some("000000010000000000000003")
        );
        assert_eq!(
            mb(1)
                .previous("000000010000000100000000")
                .unwrap()
                .as_deref(),
            Some("000000010000000000000FFF")
        );
        assert_eq!(mb(16).previous("000000010000000000000000").unwrap(), None);
        assert_eq!(mb(64).round_up(0x1000_0001), 0x1400_0000);
        assert_eq!(mb(64).round_up(0x1400_0000), 0x1400_0000);
    }

    #[test]
    fn impossible_and_malformed_names_are_refused() {
        let mb = |m| SegmentSize::new(m * MIB).unwrap();
        // 0x40 is no segment of a 64 MiB cluster, 0x100 of a 16 MiB one,
        // 4 of a 1 GiB one.
        for (size, name) in [
            (64, "000000010000000000000040"),
            (16, "000000010000000000000100"),
            (1024, "000000010000000000000004"),
            (1, "000000010000000000001000"),
        ] {
            match mb(size).parse(name) {
                Err(Error::SegmentNameNotOfSize {
                    name: n,
                    segment_size,
                }) => {
                    assert_eq!(n, name);
                    assert_eq!(segment_size, mb(size));
                }
                other => panic!("{size} {name}: {other:?}"),
            }
        }
        for bad in [
            "",
            "00000001000000000000000",
            "0000000100000000000000zz",
            "000000010000000000000001.partial",
            "00000001000000000000000a",
        ] {
            assert!(
                matches!(mb(16).parse(bad), Err(Error::NotAWalFileName { .. })),
                "{bad:?}"
            );
        }
        // A range crosses a log id with the size's own count.
        assert_eq!(
            mb(64)
                .range("00000001000000000000003E", "000000010000000100000001")
                .unwrap(),
            [
                "00000001000000000000003E",
                "00000001000000000000003F",
                "000000010000000100000000",
                "000000010000000100000001"
            ]
        );
        assert!(mb(16)
            .range("000000010000000000000002", "000000010000000000000001")
            .is_err());
        assert!(mb(16)
            .range("000000010000000000000001", "000000020000000000000002")
            .is_err());
    }

    #[test]
    fn positions_of_every_kind_of_wal_file() {
        let s = SegmentSize::new(MIB).unwrap();
        let at = |timeline, segno| Some(Segment { timeline, segno });
        assert_eq!(s.position("00000002000000010000000A"), at(2, 0x100A));
        assert_eq!(
            s.position("00000002000000010000000A.partial"),
            at(2, 0x100A)
        );
        assert_eq!(
            s.position("000000010000000000000003.00000028.backup"),
            at(1, 3)
        );
        assert_eq!(s.position("00000002.history"), None);
        assert_eq!(s.position("junk"), None);
        assert_eq!(s.position("000000010000000000001000"), None);
    }

    #[test]
    fn serialized_as_bytes_and_checked_when_read() {
        let s = SegmentSize::new(64 * MIB).unwrap();
        assert_eq!(serde_json::to_string(&s).unwrap(), "67108864");
        assert_eq!(
            serde_json::from_str::<SegmentSize>("1048576")
                .unwrap()
                .bytes(),
            MIB
        );
        assert!(serde_json::from_str::<SegmentSize>("1000").is_err());
    }
}
