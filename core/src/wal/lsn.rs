//! LSNs: the one home of their text form, as PostgreSQL prints and parses
//! it (`pg_lsn`'s `%X/%X`: the high and low 32 bits in hexadecimal). Segment
//! arithmetic is in [`super::segment`].

/// Parse an LSN written as PostgreSQL prints it (`16/B374D848`).
pub fn parse(text: &str) -> Option<u64> {
    let (hi, lo) = text.split_once('/')?;
    let hi = u32::from_str_radix(hi, 16).ok()?;
    let lo = u32::from_str_radix(lo, 16).ok()?;
    Some((u64::from(hi) << 32) | u64::from(lo))
}

/// An LSN as PostgreSQL prints it.
pub fn format(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsns_read_and_print_as_postgresql_does() {
        assert_eq!(parse("16/B374D848"), Some(0x16_B374_D848));
        assert_eq!(parse("0/2000028"), Some(0x200_0028));
        assert_eq!(format(0x16_B374_D848), "16/B374D848");
        assert_eq!(format(0), "0/0");
        for text in ["", "16", "16/", "/1", "G/1", "1/100000000"] {
            assert_eq!(parse(text), None, "{text}");
        }
        assert_eq!(parse(&format(u64::MAX)), Some(u64::MAX));
    }
}
