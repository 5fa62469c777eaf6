//! A reader of archived WAL that finds what recovery targets name: commit
//! and abort records (with their transaction and time) and restore points.
//!
//! It walks records the way PostgreSQL's `xlogreader.c` does, for the WAL
//! formats of PostgreSQL 15 and later: page headers are skipped (long at a
//! segment's start, short elsewhere), a record may cross pages and
//! segments, each record's CRC-32C is checked, and `XLOG_SWITCH` moves to
//! the next segment. A page whose address is not its own (a recycled
//! segment's old contents), a zero length or a bad CRC is the end of the
//! valid WAL, as it is for recovery.
//!
//! Only what recovery-target planning needs is decoded: the record header
//! (`XLogRecord`), the block references to find the main data, and the main
//! data of `RM_XACT_ID` commit and abort records (`xact_time`) and of
//! `XLOG_RESTORE_POINT` (`rp_time`, `rp_name`).
use crate::wal::SegmentSize;
use crate::Error;

/// `XLOG_BLCKSZ`: WAL pages are 8 kB in every build pg_ark supports.
const PAGE: u64 = 8192;
const SHORT_HEADER: u64 = 24;
const LONG_HEADER: u64 = 40;
const XLP_FIRST_IS_CONTRECORD: u16 = 0x0001;
const XLP_LONG_HEADER: u16 = 0x0002;
/// The record continued here was aborted by a crash; a new one begins
/// (PostgreSQL 15+, `XLOG_OVERWRITE_CONTRECORD`).
const XLP_FIRST_IS_OVERWRITE_CONTRECORD: u16 = 0x0008;
const RECORD_HEADER: usize = 24;
const RM_XLOG_ID: u8 = 0;
const RM_XACT_ID: u8 = 1;
const XLOG_SWITCH: u8 = 0x40;
const XLOG_RESTORE_POINT: u8 = 0x70;
/// Microseconds between 1970-01-01 and PostgreSQL's epoch, 2000-01-01.
const PG_EPOCH_UNIX_MICROS: i64 = 946_684_800_000_000;

/// What a record means to recovery targets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    /// A transaction's commit (`xid` is the 32-bit top-level id).
    Commit {
        xid: u32,
    },
    Abort {
        xid: u32,
    },
    /// `pg_create_restore_point(name)`.
    RestorePoint {
        name: String,
    },
}

/// A record found by [`scan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Where the record starts.
    pub lsn: u64,
    /// Where the next record starts.
    pub end: u64,
    /// The record's time (Unix microseconds).
    pub time: i64,
    pub kind: EventKind,
}

/// Why a scan ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanEnd {
    /// `visit` asked to stop at the event it was given.
    Stopped,
    /// The next record is not there: its segment (named) is missing.
    MissingSegment { segment: String, at: u64 },
    /// The valid WAL ends at `at` inside a segment that is there (its tail
    /// is zeros, or recycled, or the archive ends mid-record).
    EndOfWal { at: u64 },
    /// The scan reached `until`.
    Reached { at: u64 },
}

/// CRC-32C (Castagnoli), as PostgreSQL's `pg_crc32c`.
fn crc32c(mut crc: u32, data: &[u8]) -> u32 {
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut t = [0u32; 256];
        for (i, slot) in t.iter_mut().enumerate() {
            let mut c = i as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    (c >> 1) ^ 0x82F6_3B78
                } else {
                    c >> 1
                };
            }
            *slot = c;
        }
        t
    });
    for &b in data {
        crc = table[((crc ^ u32::from(b)) & 0xFF) as usize] ^ (crc >> 8);
    }
    crc
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

fn maxalign(n: u64) -> u64 {
    (n + 7) & !7
}

/// Reads a segment's content by file name (`None`: not in the repository).
pub type GetSegment<'a> = dyn FnMut(&str) -> Result<Option<Vec<u8>>, Error> + 'a;

/// Segments by number, loaded on demand, one at a time.
struct Stream<'a> {
    size: SegmentSize,
    name_of: &'a dyn Fn(u64) -> Option<String>,
    get: &'a mut GetSegment<'a>,
    current: Option<(u64, Vec<u8>)>,
}

enum Page<'b> {
    Ok {
        data: &'b [u8],
        header: u64,
        info: u16,
        rem_len: u32,
    },
    Missing(String),
    Invalid,
}

impl Stream<'_> {
    /// The page starting at `page_lsn`, its header checked.
    fn page(&mut self, page_lsn: u64) -> Result<Page<'_>, Error> {
        let segno = self.size.segno_of(page_lsn);
        if self.current.as_ref().is_none_or(|(n, _)| *n != segno) {
            self.current = None;
            let Some(name) = (self.name_of)(segno) else {
                return Ok(Page::Missing(format!("segment number {segno}")));
            };
            match (self.get)(&name)? {
                Some(data) if data.len() as u64 == self.size.bytes() => {
                    self.current = Some((segno, data))
                }
                Some(_) => return Ok(Page::Invalid),
                None => return Ok(Page::Missing(name)),
            }
        }
        let Some((_, seg)) = &self.current else {
            return Ok(Page::Invalid);
        };
        let at = self.size.offset(page_lsn) as usize;
        let data = &seg[at..at + PAGE as usize];
        let info = u16_at(data, 2);
        if u64_at(data, 8) != page_lsn {
            return Ok(Page::Invalid);
        }
        let header = if info & XLP_LONG_HEADER != 0 {
            LONG_HEADER
        } else {
            SHORT_HEADER
        };
        Ok(Page::Ok {
            data,
            header,
            info,
            rem_len: u32_at(data, 16),
        })
    }
}

/// What reading a record gave.
enum Read {
    Record {
        bytes: Vec<u8>,
        start: u64,
        next: u64,
    },
    /// Start over at this page (an overwritten continuation record).
    Restart(u64),
    End(ScanEnd),
}

/// Read the record at `pos` (a record start, or a page start followed by
/// one).
fn read_record(s: &mut Stream<'_>, mut pos: u64) -> Result<Read, Error> {
    let mut want: Option<usize> = None;
    let mut bytes: Vec<u8> = Vec::new();
    let mut start = None;
    loop {
        let page_lsn = pos - pos % PAGE;
        let (data, header, info) = match s.page(page_lsn)? {
            Page::Ok {
                data, header, info, ..
            } => (data, header, info),
            Page::Missing(segment) => {
                return Ok(Read::End(ScanEnd::MissingSegment { segment, at: pos }))
            }
            Page::Invalid => return Ok(Read::End(ScanEnd::EndOfWal { at: pos })),
        };
        if pos == page_lsn {
            // A page boundary: the record (or its continuation) follows the
            // header.
            if start.is_some() && info & XLP_FIRST_IS_CONTRECORD == 0 {
                if info & XLP_FIRST_IS_OVERWRITE_CONTRECORD != 0 {
                    // As xlogreader.c does: the partial record is
                    // dropped and reading starts over at this page.
                    return Ok(Read::Restart(page_lsn));
                }
                return Ok(Read::End(ScanEnd::EndOfWal { at: pos }));
            }
            pos += header;
        } else if pos - page_lsn < header {
            return Ok(Read::End(ScanEnd::EndOfWal { at: pos }));
        }
        let first = start.is_none();
        if first {
            start = Some(pos);
        }
        let off = (pos - page_lsn) as usize;
        let avail = PAGE as usize - off;
        if first {
            // xl_tot_len is always on the record's first page.
            let len = u32_at(data, off) as usize;
            if len < RECORD_HEADER {
                return Ok(Read::End(ScanEnd::EndOfWal { at: pos }));
            }
            if len > 1 << 30 {
                return Ok(Read::End(ScanEnd::EndOfWal { at: pos }));
            }
            want = Some(len);
            bytes.reserve(len);
        }
        let need = want.unwrap_or(0) - bytes.len();
        let take = need.min(avail);
        bytes.extend_from_slice(&data[off..off + take]);
        pos += take as u64;
        if bytes.len() == want.unwrap_or(0) {
            break;
        }
    }
    let start = start.unwrap_or(pos);
    // xl_crc covers the data after the header, then the header up to it.
    let stored = u32_at(&bytes, 20);
    let crc = !crc32c(crc32c(!0, &bytes[RECORD_HEADER..]), &bytes[..20]);
    if crc != stored {
        return Ok(Read::End(ScanEnd::EndOfWal { at: start }));
    }
    let rmid = bytes[17];
    let info = bytes[16];
    let next = if rmid == RM_XLOG_ID && info & 0xF0 == XLOG_SWITCH {
        s.size.round_up(pos)
    } else {
        maxalign(pos)
    };
    Ok(Read::Record { bytes, start, next })
}

/// The main data of a decoded record (`DecodeXLogRecord`'s walk of the
/// block references), or `None` if the record is malformed.
fn main_data(rec: &[u8]) -> Option<&[u8]> {
    let total = rec.len();
    let mut p = RECORD_HEADER;
    let mut datatotal = 0usize;
    let mut main_len = 0usize;
    while total - p > datatotal {
        let id = *rec.get(p)?;
        p += 1;
        match id {
            255 => {
                main_len = usize::from(*rec.get(p)?);
                datatotal += main_len;
                break;
            }
            254 => {
                main_len = u32_at(rec.get(p..p + 4)?, 0) as usize;
                datatotal += main_len;
                break;
            }
            253 => p += 2,
            252 => p += 4,
            0..=32 => {
                let fork_flags = *rec.get(p)?;
                let data_len = usize::from(u16_at(rec.get(p + 1..p + 3)?, 0));
                p += 3;
                if fork_flags & 0x10 != 0 {
                    let b = rec.get(p..p + 5)?;
                    let image_len = usize::from(u16_at(b, 0));
                    let bimg_info = b[4];
                    p += 5;
                    // A compressed image with a hole records the hole's length.
                    if bimg_info & 0x01 != 0 && bimg_info & 0x1C != 0 {
                        p += 2;
                    }
                    datatotal += image_len;
                }
                datatotal += data_len;
                if fork_flags & 0x80 == 0 {
                    p += 12;
                }
                p += 4;
            }
            _ => return None,
        }
    }
    let _ = main_len;
    if p > total || total - p < datatotal {
        return None;
    }
    Some(&rec[total - main_len..])
}

fn event_of(rec: &[u8], start: u64, end: u64) -> Option<Event> {
    let rmid = rec[17];
    let info = rec[16];
    let xid = u32_at(rec, 4);
    let time_at = |d: &[u8]| -> Option<i64> {
        let raw = i64::from_le_bytes(d.get(..8)?.try_into().ok()?);
        Some(raw.saturating_add(PG_EPOCH_UNIX_MICROS))
    };
    match rmid {
        RM_XACT_ID => {
            let kind = match info & 0x70 {
                0x00 | 0x30 => EventKind::Commit { xid },
                0x20 | 0x40 => EventKind::Abort { xid },
                _ => return None,
            };
            let time = time_at(main_data(rec)?)?;
            Some(Event {
                lsn: start,
                end,
                time,
                kind,
            })
        }
        RM_XLOG_ID if info & 0xF0 == XLOG_RESTORE_POINT => {
            let d = main_data(rec)?;
            let time = time_at(d)?;
            let raw = d.get(8..)?;
            let name_len = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
            Some(Event {
                lsn: start,
                end,
                time,
                kind: EventKind::RestorePoint {
                    name: String::from_utf8_lossy(&raw[..name_len]).into_owned(),
                },
            })
        }
        _ => None,
    }
}

/// Read the WAL, in segments of `size`, from the first record at or after
/// `from` (the segment of `from` is read from its first record) until
/// `until` (if given), the end of the valid WAL, or a missing segment.
/// `name_of` gives the file name of a segment number (the timeline that
/// holds it), `get` its content (`None`: not in the repository; a file of
/// another length is the end of the valid WAL). `visit` sees each event in
/// order and returns `true` to stop there.
pub fn scan(
    size: SegmentSize,
    from: u64,
    until: Option<u64>,
    name_of: &dyn Fn(u64) -> Option<String>,
    get: &mut GetSegment<'_>,
    visit: &mut dyn FnMut(&Event) -> bool,
) -> Result<ScanEnd, Error> {
    let mut s = Stream {
        size,
        name_of,
        get,
        current: None,
    };
    // The segment's first record: after the continuation of a record that
    // began in the previous segment, which may fill whole pages.
    let mut page_lsn = size.start_lsn(size.segno_of(from));
    let mut pos = loop {
        match s.page(page_lsn)? {
            Page::Ok {
                header,
                info,
                rem_len,
                ..
            } => {
                if info & XLP_FIRST_IS_CONTRECORD == 0 {
                    break page_lsn + header;
                }
                let room = PAGE - header;
                if u64::from(rem_len) <= room {
                    break maxalign(page_lsn + header + u64::from(rem_len));
                }
                page_lsn += PAGE;
            }
            Page::Missing(segment) => return Ok(ScanEnd::MissingSegment { segment, at: from }),
            Page::Invalid => return Ok(ScanEnd::EndOfWal { at: page_lsn }),
        }
    };
    loop {
        if until.is_some_and(|u| pos >= u) {
            return Ok(ScanEnd::Reached { at: pos });
        }
        match read_record(&mut s, pos)? {
            Read::End(end) => return Ok(end),
            Read::Restart(page) => pos = page,
            Read::Record { bytes, start, next } => {
                if start >= from {
                    if let Some(ev) = event_of(&bytes, start, next) {
                        if visit(&ev) {
                            return Ok(ScanEnd::Stopped);
                        }
                    }
                }
                pos = next;
            }
        }
    }
}

/// Whether a whole, valid record starts at `pos` (a record start, as
/// [`scan`] reports with `ScanEnd::Reached`): where the next one starts, or
/// why there is none.
pub fn record_at(
    size: SegmentSize,
    pos: u64,
    name_of: &dyn Fn(u64) -> Option<String>,
    get: &mut GetSegment<'_>,
) -> Result<Result<u64, ScanEnd>, Error> {
    let mut s = Stream {
        size,
        name_of,
        get,
        current: None,
    };
    let mut pos = pos;
    loop {
        match read_record(&mut s, pos)? {
            Read::Record { next, .. } => return Ok(Ok(next)),
            Read::Restart(page) => pos = page,
            Read::End(end) => return Ok(Err(end)),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The size most tests use, PostgreSQL's default.
    const SIZE: SegmentSize = SegmentSize::DEFAULT;
    const SEGMENT: u64 = 16 * 1024 * 1024;

    #[test]
    fn crc32c_matches_the_standard_check_value() {
        assert_eq!(!crc32c(!0, b"123456789"), 0xE306_9283);
    }

    /// Build WAL pages around records, the way PostgreSQL lays them out.
    pub(crate) struct Writer {
        pub(crate) seg: Vec<u8>,
        pos: u64,
        base: u64,
    }

    impl Writer {
        pub(crate) fn new(segno: u64) -> Writer {
            Writer::sized(SegmentSize::DEFAULT, segno)
        }
        pub(crate) fn sized(size: SegmentSize, segno: u64) -> Writer {
            let mut w = Writer {
                seg: vec![0; size.bytes() as usize],
                pos: 0,
                base: size.start_lsn(segno),
            };
            w.header(0, false, 0);
            w.pos = LONG_HEADER;
            w
        }
        fn header(&mut self, at: u64, cont: bool, rem: u32) {
            let a = at as usize;
            let mut info = if cont { XLP_FIRST_IS_CONTRECORD } else { 0 };
            if at == 0 {
                info |= XLP_LONG_HEADER;
            }
            self.seg[a..a + 2].copy_from_slice(&0xD116u16.to_le_bytes());
            self.seg[a + 2..a + 4].copy_from_slice(&info.to_le_bytes());
            self.seg[a + 8..a + 16].copy_from_slice(&(self.base + at).to_le_bytes());
            self.seg[a + 16..a + 20].copy_from_slice(&rem.to_le_bytes());
        }
        pub(crate) fn record(&mut self, rmid: u8, info: u8, xid: u32, main: &[u8]) -> u64 {
            let rec = encode(rmid, info, xid, main);
            self.place(&rec)
        }

        fn place(&mut self, rec: &[u8]) -> u64 {
            let start = self.base + self.pos;
            let mut left = rec;
            while !left.is_empty() {
                let room = (PAGE - self.pos % PAGE) as usize;
                let n = room.min(left.len());
                let at = self.pos as usize;
                self.seg[at..at + n].copy_from_slice(&left[..n]);
                left = &left[n..];
                self.pos += n as u64;
                if self.pos.is_multiple_of(PAGE) {
                    self.header(self.pos, !left.is_empty(), left.len() as u32);
                    self.pos += SHORT_HEADER;
                }
            }
            self.pos = maxalign(self.pos);
            start
        }
    }

    /// A record's bytes, CRC included.
    pub(crate) fn encode(rmid: u8, info: u8, xid: u32, main: &[u8]) -> Vec<u8> {
        {
            let mut rec = vec![0u8; RECORD_HEADER];
            if main.len() < 256 {
                rec.push(255);
                rec.push(main.len() as u8);
            } else {
                rec.push(254);
                rec.extend_from_slice(&(main.len() as u32).to_le_bytes());
            }
            rec.extend_from_slice(main);
            let len = rec.len() as u32;
            rec[0..4].copy_from_slice(&len.to_le_bytes());
            rec[4..8].copy_from_slice(&xid.to_le_bytes());
            rec[16] = info;
            rec[17] = rmid;
            let crc = !crc32c(crc32c(!0, &rec[RECORD_HEADER..]), &rec[..20]);
            rec[20..24].copy_from_slice(&crc.to_le_bytes());
            rec
        }
    }

    pub(crate) fn commit(w: &mut Writer, xid: u32, time_pg: i64, pad: usize) -> u64 {
        let mut main = time_pg.to_le_bytes().to_vec();
        main.resize(8 + pad, 0);
        w.record(RM_XACT_ID, 0x00, xid, &main)
    }

    pub(crate) fn restore_point(w: &mut Writer, name: &str, time_pg: i64) -> u64 {
        let mut rp = time_pg.to_le_bytes().to_vec();
        let mut raw = [0u8; 64];
        raw[..name.len()].copy_from_slice(name.as_bytes());
        rp.extend_from_slice(&raw);
        w.record(RM_XLOG_ID, XLOG_RESTORE_POINT, 0, &rp)
    }

    /// End the segment with XLOG_SWITCH: the next record is in the next one.
    pub(crate) fn switch(w: &mut Writer) {
        w.record(RM_XLOG_ID, XLOG_SWITCH, 0, &[]);
    }

    pub(crate) const EPOCH: i64 = PG_EPOCH_UNIX_MICROS;

    #[test]
    fn commits_and_restore_points_are_found_across_pages() {
        let mut w = Writer::new(3);
        let mut starts = Vec::new();
        for i in 0..40u32 {
            // Records of varied sizes, some crossing page boundaries.
            starts.push(commit(
                &mut w,
                100 + i,
                i64::from(i) * 1_000_000,
                (i as usize * 997) % 3000,
            ));
        }
        let rp_at = restore_point(&mut w, "before", 1_000_000_000);
        let segs = std::collections::HashMap::from([(3u64, w.seg)]);
        let name_of = |n: u64| Some(format!("00000001000000000000000{n}"));
        let mut get = |name: &str| -> Result<Option<Vec<u8>>, Error> {
            let n = u64::from_str_radix(&name[16..], 16).unwrap_or(0);
            Ok(segs.get(&n).cloned())
        };
        let mut seen = Vec::new();
        let end = scan(SIZE, 3 * SEGMENT, None, &name_of, &mut get, &mut |e| {
            seen.push(e.clone());
            false
        })
        .unwrap();
        assert_eq!(seen.len(), 41);
        for (i, e) in seen.iter().take(40).enumerate() {
            assert_eq!(e.lsn, starts[i]);
            assert_eq!(
                e.kind,
                EventKind::Commit {
                    xid: 100 + i as u32
                }
            );
            assert_eq!(e.time, i as i64 * 1_000_000 + PG_EPOCH_UNIX_MICROS);
        }
        assert_eq!(seen[40].lsn, rp_at);
        assert_eq!(
            seen[40].kind,
            EventKind::RestorePoint {
                name: "before".into()
            }
        );
        // The zeros after the last record end the valid WAL.
        assert!(matches!(end, ScanEnd::EndOfWal { .. }), "{end:?}");
        // Stopping early, and starting in the middle.
        let mut n = 0;
        let end = scan(SIZE, starts[10], None, &name_of, &mut get, &mut |e| {
            n += 1;
            e.kind == EventKind::Commit { xid: 120 }
        })
        .unwrap();
        assert_eq!((end, n), (ScanEnd::Stopped, 11));
        // A damaged record ends the valid WAL there.
        let mut damaged = segs.get(&3).cloned().unwrap();
        let at = (starts[5] % SEGMENT) as usize + RECORD_HEADER + 3;
        damaged[at] ^= 0xFF;
        let mut get2 = |_: &str| -> Result<Option<Vec<u8>>, Error> { Ok(Some(damaged.clone())) };
        let mut n = 0;
        let end = scan(SIZE, 3 * SEGMENT, None, &name_of, &mut get2, &mut |_| {
            n += 1;
            false
        })
        .unwrap();
        assert_eq!((end, n), (ScanEnd::EndOfWal { at: starts[5] }, 5));
    }

    #[test]
    fn an_overwritten_continuation_record_is_skipped_as_postgresql_does() {
        let mut w = Writer::new(3);
        let mut n = 0;
        while w.pos % PAGE < PAGE - 400 {
            commit(&mut w, 100 + n, 0, 0);
            n += 1;
        }
        // A record that crosses into the second page...
        commit(&mut w, 500, 0, 2000);
        commit(&mut w, 501, 0, 0);
        // ...was cut by a crash: the second page now starts with a new
        // record, flagged as overwriting the continuation.
        let page2 = PAGE as usize;
        let info = XLP_FIRST_IS_OVERWRITE_CONTRECORD;
        w.seg[page2 + 2..page2 + 4].copy_from_slice(&info.to_le_bytes());
        w.seg[page2 + 16..page2 + 20].copy_from_slice(&0u32.to_le_bytes());
        let fresh = encode(RM_XACT_ID, 0x00, 999, &7i64.to_le_bytes());
        let at = page2 + SHORT_HEADER as usize;
        w.seg[at..at + fresh.len()].copy_from_slice(&fresh);
        let end = maxalign((at + fresh.len()) as u64) as usize;
        w.seg[end..end + 64].fill(0);
        let seg = w.seg;
        let name_of = |_: u64| Some("000000010000000000000003".to_string());
        let mut get = |_: &str| -> Result<Option<Vec<u8>>, Error> { Ok(Some(seg.clone())) };
        let mut xids = Vec::new();
        scan(SIZE, 3 * SEGMENT, None, &name_of, &mut get, &mut |e| {
            if let EventKind::Commit { xid } = e.kind {
                xids.push(xid);
            }
            false
        })
        .unwrap();
        assert_eq!(xids.len() as u32, n + 1, "{xids:?}");
        assert_eq!(xids.last(), Some(&999), "{xids:?}");
        assert!(!xids.contains(&500) && !xids.contains(&501), "{xids:?}");
    }

    #[test]
    fn a_missing_segment_is_named() {
        let name_of = |n: u64| Some(format!("0000000100000000000000{n:02X}"));
        let mut get = |_: &str| -> Result<Option<Vec<u8>>, Error> { Ok(None) };
        let end = scan(
            SIZE,
            5 * SEGMENT + 100,
            None,
            &name_of,
            &mut get,
            &mut |_| false,
        )
        .unwrap();
        assert_eq!(
            end,
            ScanEnd::MissingSegment {
                segment: "000000010000000000000005".into(),
                at: 5 * SEGMENT + 100
            }
        );
    }

    /// With 1 MiB segments, records are read across a segment switch into
    /// the next log id's first segment, named with 4096 segments per log id.
    #[test]
    fn small_segments_are_read_and_named_with_their_size() {
        let mib = SegmentSize::new(1 << 20).unwrap();
        let last = 0xFFF; // the last segment of log id 0
        let mut w = Writer::sized(mib, last);
        let c1 = commit(&mut w, 700, 1_000_000, 5000);
        switch(&mut w);
        let mut w2 = Writer::sized(mib, last + 1);
        let c2 = commit(&mut w2, 701, 2_000_000, 0);
        let rp = restore_point(&mut w2, "small", 3_000_000);
        let segs = std::collections::HashMap::from([
            (mib.name(1, last), w.seg),
            (mib.name(1, last + 1), w2.seg),
        ]);
        assert!(segs.contains_key("000000010000000000000FFF"));
        assert!(segs.contains_key("000000010000000100000000"));
        let name_of = |n: u64| Some(mib.name(1, n));
        let mut get =
            |name: &str| -> Result<Option<Vec<u8>>, Error> { Ok(segs.get(name).cloned()) };
        let mut seen = Vec::new();
        let end = scan(
            mib,
            mib.start_lsn(last),
            None,
            &name_of,
            &mut get,
            &mut |e| {
                seen.push(e.lsn);
                false
            },
        )
        .unwrap();
        assert_eq!(seen, [c1, c2, rp]);
        assert_eq!(c2, mib.start_lsn(last + 1) + LONG_HEADER);
        assert!(matches!(end, ScanEnd::EndOfWal { .. }), "{end:?}");
        // Read with the wrong size, the files are not segments: the scan
        // finds nothing instead of misreading them.
        let sixteen = SegmentSize::DEFAULT;
        let name16 = |n: u64| Some(sixteen.name(1, n));
        let mut n = 0;
        let end = scan(
            sixteen,
            mib.start_lsn(last),
            None,
            &name16,
            &mut get,
            &mut |_| {
                n += 1;
                false
            },
        )
        .unwrap();
        assert_eq!(n, 0);
        assert!(!matches!(end, ScanEnd::Stopped | ScanEnd::Reached { .. }));
    }
}
