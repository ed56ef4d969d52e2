//! A journal on a disk that fills: what failed to append is not on the
//! disk, what was appended before and after is, and opening it again
//! finds nothing damaged (a small tmpfs; mounting one needs root).

use std::{path::Path, process::Command};

use aether_journal::{FsyncPolicy, Journal, Options, Reader, SNAPSHOT_FILE};

/// A tmpfs mounted on `dir` for the test's life.
struct SmallDisk<'a>(&'a Path);

impl<'a> SmallDisk<'a> {
    fn mount(dir: &'a Path, size: &str) -> Option<Self> {
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(Self(dir))
    }

    fn resize(&self, size: &str) {
        let ok = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(self.0)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "cannot resize the tmpfs");
    }
}

impl Drop for SmallDisk<'_> {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.0).status();
    }
}

fn payload(n: usize) -> Vec<u8> {
    let mut bytes = format!("record {n} ").into_bytes();
    bytes.resize(1500, b'a' + (n % 26) as u8);
    bytes
}

#[test]
fn appends_that_fail_on_a_full_disk_leave_no_trace_and_later_ones_are_whole() {
    let every = FsyncPolicy::Every {
        interval: std::time::Duration::from_millis(200),
        records: 0,
    };
    // Segments that fill the disk in the middle of a record, and small
    // ones that fill it as one is made.
    for (fsync, segment_bytes) in [
        (FsyncPolicy::Always, 1 << 20),
        (every, 1 << 20),
        (FsyncPolicy::Always, 16 * 1024),
        (every, 16 * 1024),
    ] {
        let parent = tempfile::tempdir().unwrap();
        let Some(disk) = SmallDisk::mount(parent.path(), "64k") else {
            eprintln!("skipped: cannot mount a tmpfs here (needs root)");
            return;
        };
        let dir = parent.path().join("journal");
        let options = Options {
            fsync,
            segment_bytes,
            ..Options::default()
        };
        let (mut journal, _) = Journal::open(&dir, options).unwrap();
        let mut held = Vec::new();
        let mut refused = 0;
        for n in 0..200 {
            let appended = journal
                .append(n as u64, &payload(n))
                .and_then(|_| journal.flush());
            match appended {
                Ok(()) => held.push(n),
                Err(_) => refused += 1,
            }
        }
        assert!(refused > 0, "{fsync:?}: the disk never filled");
        // A snapshot that does not fit leaves no half-written copy behind.
        assert!(journal.write_snapshot(0, &vec![7; 200_000]).is_err());
        let names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            names.iter().all(|n| !n.contains("snapshot")),
            "{fsync:?}: a failed snapshot left {names:?}"
        );
        // Room again: the next appends are whole, right after the last
        // held one.
        disk.resize("1m");
        for n in 200..210 {
            journal.append(n as u64, &payload(n)).unwrap();
            held.push(n);
        }
        journal.sync().unwrap();
        drop(journal);
        let (journal, recovery) = Journal::open(&dir, options).unwrap();
        assert!(
            recovery.damage.is_none(),
            "{fsync:?}: opening again found damage: {recovery:?}"
        );
        let read: Vec<Vec<u8>> = Reader::open(&dir)
            .unwrap()
            .records(0)
            .map(|r| r.unwrap().payload)
            .collect();
        let expected: Vec<Vec<u8>> = held.iter().map(|&n| payload(n)).collect();
        assert_eq!(
            read.len(),
            expected.len(),
            "{fsync:?}: {} held, {} read",
            expected.len(),
            read.len()
        );
        assert!(read == expected, "{fsync:?}: the records read differ");
        assert!(!dir.join(SNAPSHOT_FILE).exists());
        drop(journal);
    }
}
