//! Reading a journal without writing to it: while its writer runs, from
//! another process, or after it stopped.

use std::{
    fs::File,
    io::{BufReader, Read, Take},
    path::{Path, PathBuf},
};

use crate::{
    Damage, JournalError, Record,
    format::{Next, SegmentReader},
    journal::list_segments as segments_in,
};

/// A read-only view of a journal's segments as they were when it was
/// opened: records appended later are not read, so a reader always ends.
/// It never changes the files; damage ends the records it gives, and
/// [`Records::damage`] says where.
#[derive(Clone, Debug)]
pub struct Reader {
    segments: Vec<(u64, PathBuf, u64)>,
}

impl Reader {
    /// Lists the segments of the journal in `dir`, with their lengths now.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, JournalError> {
        Ok(Self {
            segments: segments_in(dir.as_ref())?,
        })
    }

    /// The base sequence number of the oldest segment, if any.
    pub fn first_seq(&self) -> Option<u64> {
        self.segments.first().map(|(base, _, _)| *base)
    }

    /// Segment files.
    pub fn segments(&self) -> usize {
        self.segments.len()
    }

    /// Bytes of the segments.
    pub fn bytes(&self) -> u64 {
        self.segments.iter().map(|(_, _, len)| len).sum()
    }

    /// The records with a sequence number of `from` or more, in order.
    pub fn records(&self, from: u64) -> Records<'_> {
        // Skip the segments that end before `from`: those followed by a
        // segment starting at or before it.
        let start = self
            .segments
            .windows(2)
            .take_while(|pair| pair[1].0 <= from)
            .count();
        Records {
            reader: self,
            next_segment: start,
            current: None,
            expected_start: None,
            from,
            damage: None,
            done: false,
        }
    }
}

type Segment = SegmentReader<Take<BufReader<File>>>;

/// The records of a [`Reader`], from a sequence number on.
#[derive(Debug)]
pub struct Records<'a> {
    reader: &'a Reader,
    next_segment: usize,
    current: Option<(u64, PathBuf, Segment)>,
    /// Where the segment read last ended.
    expected_start: Option<u64>,
    from: u64,
    damage: Option<Damage>,
    done: bool,
}

impl std::fmt::Debug for Segment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SegmentReader")
            .field("offset", &self.offset)
            .finish()
    }
}

impl Records<'_> {
    /// Where the records stopped early, if they did. At the end of the
    /// newest segment of a journal being written, a torn record is
    /// usually one being written.
    pub fn damage(&self) -> Option<&Damage> {
        self.damage.as_ref()
    }

    fn stop(
        &mut self,
        path: PathBuf,
        offset: u64,
        kind: crate::DamageKind,
    ) -> Option<Result<Record, JournalError>> {
        self.damage = Some(Damage {
            segment: path,
            offset,
            kind,
        });
        self.done = true;
        None
    }
}

impl Iterator for Records<'_> {
    type Item = Result<Record, JournalError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.done {
                return None;
            }
            if self.current.is_none() {
                let Some((base, path, len)) = self.reader.segments.get(self.next_segment) else {
                    self.done = true;
                    return None;
                };
                self.next_segment += 1;
                let file = match File::open(path) {
                    Ok(file) => file,
                    // Deleted by retention since the reader was opened.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        self.expected_start = None;
                        continue;
                    }
                    Err(e) => {
                        self.done = true;
                        return Some(Err(JournalError::io(path, e)));
                    }
                };
                let inner = BufReader::new(file).take(*len);
                match SegmentReader::open(inner, *len, *base) {
                    Ok(Ok(segment)) => {
                        if self
                            .expected_start
                            .is_some_and(|end| end != segment.previous_end)
                        {
                            return self.stop(path.clone(), 0, crate::DamageKind::Gap);
                        }
                        self.current = Some((*base, path.clone(), segment));
                    }
                    Ok(Err(kind)) => return self.stop(path.clone(), 0, kind),
                    Err(e) => {
                        self.done = true;
                        return Some(Err(JournalError::io(path, e)));
                    }
                }
            }
            let (seq, path, segment) = self.current.as_mut().expect("just set");
            let offset = segment.offset;
            match segment.next() {
                Ok(Next::Record { time_ms, payload }) => {
                    let record = Record {
                        seq: *seq,
                        time_ms,
                        payload,
                    };
                    *seq += 1;
                    if record.seq >= self.from {
                        return Some(Ok(record));
                    }
                }
                Ok(Next::End) => {
                    self.expected_start = Some(*seq);
                    self.current = None;
                }
                Ok(Next::Damaged(kind)) => {
                    let path = path.clone();
                    self.current = None;
                    return self.stop(path, offset, kind);
                }
                Err(e) => {
                    let path = path.clone();
                    self.done = true;
                    return Some(Err(JournalError::io(path, e)));
                }
            }
        }
    }
}
