//! Page checksums (`data_checksums = on`), verified while a backup reads.
//!
//! The algorithm is PostgreSQL's (`src/include/storage/checksum_impl.h`):
//! 32 parallel FNV-1a-like sums over the page read as 32-bit words, with
//! `pd_checksum` taken as zero, two extra rounds of zeros, the sums folded
//! by xor, the block number mixed in, and the result taken modulo 65535
//! plus one (never 0).
//!
//! The rules are base backup's (`src/backend/backup/basebackup.c`):
//! every fork of a relation is checked; a new page (`pd_upper == 0`) must
//! be all zeros; a page whose LSN is at or after the backup's start was
//! written during the backup (WAL replay restores it) and is not judged;
//! a page that fails is read again once, since it may have been read while
//! being written, and only a failure on the second read is reported.
use std::fs;
use std::os::unix::fs::FileExt;
use std::sync::Mutex;

use super::increment::{page_lsn, BLOCK};

const N_SUMS: usize = 32;
const FNV_PRIME: u32 = 16_777_619;
/// Blocks per 1 GiB segment file (`RELSEG_SIZE`).
pub const RELSEG_BLOCKS: u64 = 131_072;
const BASE_OFFSETS: [u32; N_SUMS] = [
    0x5B1F36E9, 0xB8525960, 0x02AB50AA, 0x1DE66D2A, 0x79FF467A, 0x9BB9F8A3, 0x217E7CD2, 0x83E13D2C,
    0xF8D4474F, 0xE39EB970, 0x42C6AE16, 0x993216FA, 0x7B093B5D, 0x98DAFF3C, 0xF718902A, 0x0B1C9CDB,
    0xE58F764B, 0x187636BC, 0x5D7B3BB1, 0xE73DE7DE, 0x92BEC979, 0xCCA6C0B2, 0x304A0979, 0x85AA43D4,
    0x783125BB, 0x6CA8EAA2, 0xE407EAC6, 0x4B5CFC3E, 0x9FBF8C76, 0x15CA20BE, 0xF2CA9FD3, 0x959BD756,
];

fn round(sum: u32, value: u32) -> u32 {
    let t = sum ^ value;
    t.wrapping_mul(FNV_PRIME) ^ (t >> 17)
}

/// The checksum PostgreSQL stores in `pd_checksum` for `page` (8 KiB) at
/// block `blkno` of its relation fork.
pub fn page_checksum(page: &[u8], blkno: u32) -> u16 {
    let mut sums = BASE_OFFSETS;
    let rows = BLOCK as usize / (4 * N_SUMS);
    for i in 0..rows {
        for (j, sum) in sums.iter_mut().enumerate() {
            let at = (i * N_SUMS + j) * 4;
            // pd_checksum (bytes 8..10) counts as zero.
            let mut word = [page[at], page[at + 1], page[at + 2], page[at + 3]];
            if at == 8 {
                word[0] = 0;
                word[1] = 0;
            }
            *sum = round(*sum, u32::from_ne_bytes(word));
        }
    }
    for _ in 0..2 {
        for sum in sums.iter_mut() {
            *sum = round(*sum, 0);
        }
    }
    let folded = sums.iter().fold(0u32, |a, s| a ^ s) ^ blkno;
    ((folded % 65_535) + 1) as u16
}

fn stored_checksum(page: &[u8]) -> u16 {
    u16::from_ne_bytes([page[8], page[9]])
}

/// `pd_upper` 0: a new page, never initialized.
fn is_new(page: &[u8]) -> bool {
    u16::from_ne_bytes([page[14], page[15]]) == 0
}

/// A relation fork whose pages carry checksums: any fork of a relation
/// under `base/<db>/` or `global/`.
pub fn is_checksummed(path: &str) -> bool {
    super::increment::is_relation_file(path)
}

/// The segment number of a relation file (`16384.3` is 3).
fn segment_number(path: &str) -> u64 {
    path.rsplit('/')
        .next()
        .and_then(|name| name.split_once('.'))
        .and_then(|(_, seg)| seg.parse().ok())
        .unwrap_or(0)
}

/// A page that failed its checksum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadPage {
    pub path: String,
    /// Block number within the file.
    pub block: u64,
    pub expected: u16,
    pub found: u16,
}

/// Checks pages for one backup.
#[derive(Debug)]
pub struct PageCheck {
    /// The backup's start LSN: pages at or after it are not judged.
    pub start_lsn: u64,
    pub checked: std::sync::atomic::AtomicU64,
    pub bad: Mutex<Vec<BadPage>>,
}

impl PageCheck {
    pub fn new(start_lsn: u64) -> PageCheck {
        PageCheck {
            start_lsn,
            checked: Default::default(),
            bad: Mutex::new(Vec::new()),
        }
    }

    /// The verdict on `page`, true if it is good or not to be judged.
    fn good(&self, page: &[u8], blkno: u32) -> Result<(), (u16, u16)> {
        if page.len() != BLOCK as usize {
            return Ok(());
        }
        if is_new(page) {
            return if page.iter().all(|&b| b == 0) {
                Ok(())
            } else {
                Err((0, stored_checksum(page)))
            };
        }
        if page_lsn(page) >= self.start_lsn {
            return Ok(());
        }
        let expected = page_checksum(page, blkno);
        let found = stored_checksum(page);
        if expected == found {
            Ok(())
        } else {
            Err((expected, found))
        }
    }

    /// Check block `block` of file `path`, as read into `page`; on a
    /// failure, read it again from `file` before reporting it.
    pub fn check(&self, file: &fs::File, path: &str, block: u64, page: &[u8]) {
        self.checked
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let blkno = (segment_number(path) * RELSEG_BLOCKS + block) as u32;
        if self.good(page, blkno).is_ok() {
            return;
        }
        let mut again = vec![0u8; BLOCK as usize];
        let verdict = match file.read_exact_at(&mut again, block * BLOCK) {
            Ok(()) => self.good(&again, blkno),
            // Truncated meanwhile: the page is gone, WAL replay decides.
            Err(_) => Ok(()),
        };
        if let Err((expected, found)) = verdict {
            self.bad
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(BadPage {
                    path: path.to_string(),
                    block,
                    expected,
                    found,
                });
        }
    }

    /// The bad pages found, in file and block order.
    pub fn bad_pages(&self) -> Vec<BadPage> {
        let mut v = self.bad.lock().unwrap_or_else(|p| p.into_inner()).clone();
        v.sort_by(|a, b| (&a.path, a.block).cmp(&(&b.path, b.block)));
        v
    }
}

/// A reader that checks each whole page passing through it.
pub(super) struct Checking<'a, R> {
    pub inner: R,
    pub file: &'a fs::File,
    pub path: &'a str,
    pub check: &'a PageCheck,
    pub page: Vec<u8>,
    pub block: u64,
}

impl<R: std::io::Read> std::io::Read for Checking<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut rest = &buf[..n];
        while !rest.is_empty() {
            let take = (BLOCK as usize - self.page.len()).min(rest.len());
            self.page.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if self.page.len() == BLOCK as usize {
                self.check
                    .check(self.file, self.path, self.block, &self.page);
                self.page.clear();
                self.block += 1;
            }
        }
        Ok(n)
    }
}
