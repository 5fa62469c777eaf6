//! Compression of stored files: zstd (the default), lz4, gzip or none.
//!
//! The algorithm is recorded in each object's envelope header, so changing
//! `ark.compression` never makes older objects unreadable.
use std::fmt;
use std::io::{Read, Write};
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Zstd,
    Lz4,
    Gzip,
}

impl Compression {
    pub const ALL: [Compression; 4] = [
        Compression::None,
        Compression::Zstd,
        Compression::Lz4,
        Compression::Gzip,
    ];

    /// The byte stored in the envelope header.
    pub fn code(self) -> u8 {
        match self {
            Compression::None => 0,
            Compression::Zstd => 1,
            Compression::Lz4 => 2,
            Compression::Gzip => 3,
        }
    }

    pub fn from_code(code: u8) -> Option<Compression> {
        Compression::ALL.into_iter().find(|c| c.code() == code)
    }

    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Zstd => "zstd",
            Compression::Lz4 => "lz4",
            Compression::Gzip => "gzip",
        }
    }

    /// The level used when none is configured. zstd's is 1, not its usual
    /// 3: on WAL, level 1 stores about 11% more bytes but compresses several
    /// times faster, which is what keeps archiving ahead (see `make bench`).
    pub fn default_level(self) -> i32 {
        match self {
            Compression::Zstd => 1,
            Compression::Gzip => 6,
            Compression::None | Compression::Lz4 => 0,
        }
    }

    /// Levels accepted for this algorithm (lz4 and none have no levels).
    pub fn level_range(self) -> std::ops::RangeInclusive<i32> {
        match self {
            Compression::Zstd => 1..=19,
            Compression::Gzip => 1..=9,
            Compression::None | Compression::Lz4 => 0..=0,
        }
    }

    /// Compress `data` at `level` (0 means the algorithm's default).
    pub fn compress(self, data: &[u8], level: i32) -> std::io::Result<Vec<u8>> {
        let level = if level == 0 {
            self.default_level()
        } else {
            level
        };
        match self {
            Compression::None => Ok(data.to_vec()),
            Compression::Zstd => zstd::bulk::compress(data, level),
            Compression::Lz4 => Ok(lz4_flex::block::compress(data)),
            Compression::Gzip => {
                let mut enc = flate2::write::GzEncoder::new(
                    Vec::with_capacity(data.len() / 2),
                    flate2::Compression::new(level.clamp(1, 9) as u32),
                );
                enc.write_all(data)?;
                enc.finish()
            }
        }
    }

    /// Decompress `data`, which must expand to exactly `original_len` bytes.
    pub fn decompress(self, data: &[u8], original_len: usize) -> std::io::Result<Vec<u8>> {
        let out = match self {
            Compression::None => data.to_vec(),
            Compression::Zstd => zstd::bulk::decompress(data, original_len)?,
            Compression::Lz4 => lz4_flex::block::decompress(data, original_len)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?,
            Compression::Gzip => {
                let mut out = Vec::with_capacity(original_len);
                flate2::read::GzDecoder::new(data).read_to_end(&mut out)?;
                out
            }
        };
        if out.len() != original_len {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "decompressed to {} bytes, expected {original_len}",
                    out.len()
                ),
            ));
        }
        Ok(out)
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Compression {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Compression::ALL
            .into_iter()
            .find(|c| c.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| {
                format!("unknown compression \"{s}\" (expected zstd, lz4, gzip or none)")
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let mut v = Vec::new();
        for i in 0..50_000u32 {
            v.extend_from_slice(format!("row {i} some repetitive text {}\n", i % 17).as_bytes());
        }
        v
    }

    #[test]
    fn every_algorithm_round_trips_and_compresses() {
        let data = sample();
        for c in Compression::ALL {
            let packed = c.compress(&data, 0).unwrap();
            if c != Compression::None {
                assert!(
                    packed.len() < data.len() / 3,
                    "{c} should compress text well"
                );
            }
            assert_eq!(c.decompress(&packed, data.len()).unwrap(), data, "{c}");
        }
    }

    #[test]
    fn wrong_length_or_garbage_is_an_error() {
        let data = sample();
        for c in Compression::ALL {
            let packed = c.compress(&data, 0).unwrap();
            assert!(
                c.decompress(&packed, data.len() + 1).is_err(),
                "{c}: wrong length"
            );
        }
        assert!(Compression::Zstd
            .decompress(b"not zstd at all", 10)
            .is_err());
        assert!(Compression::Gzip
            .decompress(b"not gzip at all", 10)
            .is_err());
    }

    #[test]
    fn names_and_codes() {
        for c in Compression::ALL {
            assert_eq!(c.name().parse::<Compression>().unwrap(), c);
            assert_eq!(Compression::from_code(c.code()), Some(c));
        }
        assert_eq!("ZSTD".parse::<Compression>().unwrap(), Compression::Zstd);
        assert_eq!(
            "brotli".parse::<Compression>().unwrap_err(),
            "unknown compression \"brotli\" (expected zstd, lz4, gzip or none)"
        );
        assert_eq!(Compression::from_code(9), None);
    }
}
