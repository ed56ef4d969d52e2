//! The bytes on disk: segment headers, records and their checks. Every
//! integer is little-endian. See the crate guide for the layout.

use std::io::{self, Read};

/// The first four bytes of a segment file.
pub const SEGMENT_MAGIC: [u8; 4] = *b"AEJL";
/// The format version written in each segment header.
pub const SEGMENT_VERSION: u8 = 1;
/// Bytes of a segment header: magic, version, three zero bytes, base
/// sequence number, the previous segment's end.
pub const SEGMENT_HEADER_LEN: usize = 24;
/// Bytes of a record header: checksum, payload length, time.
pub const RECORD_HEADER_LEN: usize = 16;
/// The largest payload of one record, in bytes (64 MiB). A length field
/// above it marks the record as damaged.
pub const MAX_RECORD_LEN: usize = 64 * 1024 * 1024;

/// Why the records of a segment stop before its end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DamageKind {
    /// The file ends inside a header or a record: a write cut short.
    Torn,
    /// The segment header is not `AEJL`, version 1, zeros and the base
    /// sequence number of the file's name.
    BadHeader,
    /// A record's length field is larger than [`MAX_RECORD_LEN`].
    BadLength,
    /// A record's checksum does not match its bytes.
    Checksum,
    /// A segment does not start where the segment before it ends (as its
    /// header says it should): records between them are missing.
    Gap,
}

impl DamageKind {
    /// A word for logs and metrics: `torn`, `bad_header`, `bad_length`,
    /// `checksum`, `gap`.
    pub fn as_str(self) -> &'static str {
        match self {
            DamageKind::Torn => "torn",
            DamageKind::BadHeader => "bad_header",
            DamageKind::BadLength => "bad_length",
            DamageKind::Checksum => "checksum",
            DamageKind::Gap => "gap",
        }
    }
}

impl std::fmt::Display for DamageKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The segment header for `base`, created when the journal ended at
/// `previous_end`.
pub(crate) fn segment_header(base: u64, previous_end: u64) -> [u8; SEGMENT_HEADER_LEN] {
    let mut header = [0u8; SEGMENT_HEADER_LEN];
    header[..4].copy_from_slice(&SEGMENT_MAGIC);
    header[4] = SEGMENT_VERSION;
    header[8..16].copy_from_slice(&base.to_le_bytes());
    header[16..].copy_from_slice(&previous_end.to_le_bytes());
    header
}

/// The checksum of a record: CRC-32C of its length, time and payload
/// fields (bytes 4 to the end of the record).
pub(crate) fn record_crc(len_and_time: &[u8], payload: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(len_and_time), payload)
}

/// Appends the record (`time_ms`, `payload`) to `out`.
pub(crate) fn encode_record(out: &mut Vec<u8>, time_ms: u64, payload: &[u8]) {
    let mut header = [0u8; RECORD_HEADER_LEN];
    // The caller checked the length against MAX_RECORD_LEN.
    header[4..8].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    header[8..16].copy_from_slice(&time_ms.to_le_bytes());
    let crc = record_crc(&header[4..16], payload);
    header[..4].copy_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(payload);
}

/// One record read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Its sequence number: its position in the journal.
    pub seq: u64,
    /// The time given when it was appended, Unix milliseconds.
    pub time_ms: u64,
    /// Its bytes.
    pub payload: Vec<u8>,
}

/// What reading the next record of a segment gave.
#[derive(Debug)]
pub(crate) enum Next {
    /// A valid record, `len` bytes on disk with its header.
    Record { time_ms: u64, payload: Vec<u8> },
    /// The segment ends cleanly here.
    End,
    /// The segment is damaged here.
    Damaged(DamageKind),
}

/// Reads the records of one segment in order, checking each; never
/// panics and never allocates more than what is left of the segment.
pub(crate) struct SegmentReader<R> {
    inner: R,
    /// Bytes of the segment still unread.
    remaining: u64,
    /// Offset of the next record, from the start of the file.
    pub(crate) offset: u64,
    /// Where the journal ended when this segment was made.
    pub(crate) previous_end: u64,
}

/// Reads exactly `buf.len()` bytes, or returns how many could be read
/// before the end.
fn read_full<R: Read>(inner: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match inner.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

impl<R: Read> SegmentReader<R> {
    /// Checks the header of a segment of `len` bytes that should start at
    /// `base`; on success the reader is at the first record.
    pub(crate) fn open(mut inner: R, len: u64, base: u64) -> io::Result<Result<Self, DamageKind>> {
        let mut header = [0u8; SEGMENT_HEADER_LEN];
        let got = read_full(&mut inner, &mut header)?;
        if got < SEGMENT_HEADER_LEN || len < SEGMENT_HEADER_LEN as u64 {
            return Ok(Err(DamageKind::Torn));
        }
        let mut previous_end = [0u8; 8];
        previous_end.copy_from_slice(&header[16..]);
        let previous_end = u64::from_le_bytes(previous_end);
        if previous_end > base || header != segment_header(base, previous_end) {
            return Ok(Err(DamageKind::BadHeader));
        }
        Ok(Ok(Self {
            inner,
            remaining: len - SEGMENT_HEADER_LEN as u64,
            offset: SEGMENT_HEADER_LEN as u64,
            previous_end,
        }))
    }

    /// The next record; after `End` or `Damaged` it must not be called
    /// again.
    pub(crate) fn next(&mut self) -> io::Result<Next> {
        if self.remaining == 0 {
            return Ok(Next::End);
        }
        if self.remaining < RECORD_HEADER_LEN as u64 {
            return Ok(Next::Damaged(DamageKind::Torn));
        }
        let mut header = [0u8; RECORD_HEADER_LEN];
        if read_full(&mut self.inner, &mut header)? < RECORD_HEADER_LEN {
            return Ok(Next::Damaged(DamageKind::Torn));
        }
        let crc = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        let len = u32::from_le_bytes([header[4], header[5], header[6], header[7]]) as usize;
        let time_ms = u64::from_le_bytes([
            header[8], header[9], header[10], header[11], header[12], header[13], header[14],
            header[15],
        ]);
        if len > MAX_RECORD_LEN {
            return Ok(Next::Damaged(DamageKind::BadLength));
        }
        let left = self.remaining - RECORD_HEADER_LEN as u64;
        if len as u64 > left {
            return Ok(Next::Damaged(DamageKind::Torn));
        }
        let mut payload = vec![0u8; len];
        if read_full(&mut self.inner, &mut payload)? < len {
            return Ok(Next::Damaged(DamageKind::Torn));
        }
        if record_crc(&header[4..16], &payload) != crc {
            return Ok(Next::Damaged(DamageKind::Checksum));
        }
        let size = (RECORD_HEADER_LEN + len) as u64;
        self.remaining -= size;
        self.offset += size;
        Ok(Next::Record { time_ms, payload })
    }
}

/// The file name of the segment starting at `base`: 20 decimal digits and
/// `.log`, so names sort in sequence order.
pub(crate) fn segment_name(base: u64) -> String {
    format!("{base:020}.log")
}

/// The base sequence number of a segment file name, if it is one.
pub(crate) fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".log")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_is_its_header_then_its_payload() {
        let mut out = Vec::new();
        encode_record(&mut out, 7, b"abc");
        assert_eq!(out.len(), RECORD_HEADER_LEN + 3);
        assert_eq!(&out[4..8], &3u32.to_le_bytes());
        assert_eq!(&out[8..16], &7u64.to_le_bytes());
        assert_eq!(&out[16..], b"abc");
        let crc = crc32c::crc32c(&out[4..]);
        assert_eq!(&out[..4], &crc.to_le_bytes());
        // The values the crate guide gives for other implementations.
        assert_eq!(crc32c::crc32c(b"123456789"), 0xE306_9283);
        let mut empty = Vec::new();
        encode_record(&mut empty, 0, b"");
        assert_eq!(empty[..4], [0x5d, 0xb5, 0x60, 0x2b]);
        assert_eq!(empty[4..], [0; 12]);
    }

    #[test]
    fn names_sort_by_sequence() {
        assert_eq!(segment_name(42), "00000000000000000042.log");
        assert_eq!(parse_segment_name("00000000000000000042.log"), Some(42));
        assert_eq!(parse_segment_name("42.log"), None);
        assert_eq!(parse_segment_name("0000000000000000004x.log"), None);
        assert_eq!(parse_segment_name("99999999999999999999.log"), None);
    }
}
