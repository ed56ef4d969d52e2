//! The keeper's `stamped` file: a bus time past the latest stamp its maps
//! made, kept or took in. A keeper alone on the bus holds the bus's time past it
//! from its start ([`crate::bustime`]), so one started again on a clock set
//! back does not hand writers a time behind the writes it keeps while its
//! maps open one by one. One number, 20 digits wide: rewritten in place
//! each second it moved, on a full disk too.

use std::{path::Path, time::Duration};

/// The file, in the keeper's directory.
const FILE: &str = "stamped";
/// Its length: 20 digits and a newline.
const LENGTH: u64 = 21;
/// How far past the latest stamp it says: it is written each second, so
/// the stamps of the second before a kill are behind it too.
const AHEAD: Duration = Duration::from_secs(2);

/// The time `dir`'s file says, if it has one (a damaged file is said).
pub(super) fn read(dir: &Path) -> Option<u64> {
    let path = dir.join(FILE);
    let text = std::fs::read_to_string(&path).ok()?;
    let time = text.trim().parse::<u64>().ok();
    if time.is_none() {
        tracing::warn!(
            path = %path.display(),
            "the keeper's stamped file is damaged: alone on the bus on a clock set back, it \
             holds the bus's time past its writes only as each map opens"
        );
    }
    time
}

/// Writes the time past `latest` (Unix ns) to `dir`'s file, in place
/// ([`crate::state::coverage::rewrite`]).
pub(super) fn write(dir: &Path, latest: u64) -> std::io::Result<()> {
    let path = dir.join(FILE);
    let ahead = u64::try_from(AHEAD.as_nanos()).unwrap_or(u64::MAX);
    let line = format!("{:020}\n", latest.saturating_add(ahead));
    debug_assert_eq!(line.len() as u64, LENGTH);
    crate::state::coverage::rewrite(&path, &line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_says_a_time_past_the_latest_and_is_rewritten_in_place() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()), None);
        write(dir.path(), 5).unwrap();
        let ahead = AHEAD.as_nanos() as u64;
        assert_eq!(read(dir.path()), Some(5 + ahead));
        write(dir.path(), u64::MAX - ahead).unwrap();
        assert_eq!(read(dir.path()), Some(u64::MAX));
        let length = std::fs::metadata(dir.path().join(FILE)).unwrap().len();
        assert_eq!(length, LENGTH);
        std::fs::write(dir.path().join(FILE), "not a time").unwrap();
        assert_eq!(read(dir.path()), None);
    }
}
