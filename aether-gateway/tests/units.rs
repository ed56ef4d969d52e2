//! The systemd units `config/systemd/` ships pass `systemd-analyze verify`
//! (each program's path replaced by one that exists here), name the
//! programs this workspace builds, stop with SIGTERM and restart on
//! failure.

use std::{path::Path, process::Command};

const UNITS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/systemd");

/// The programs the units may start.
const PROGRAMS: [&str; 4] = [
    "/usr/local/bin/aether ",
    "/usr/local/bin/aether-gateway ",
    "/usr/local/bin/aether-service-alpha ",
    "/usr/local/bin/aether-service-beta ",
];

#[test]
fn the_shipped_units_verify() {
    let mut units: Vec<_> = std::fs::read_dir(UNITS)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "service"))
        .collect();
    units.sort();
    assert!(units.len() >= 5, "{units:?}");
    let analyze = Command::new("systemd-analyze").arg("--version").output();
    let dir = tempfile::tempdir().unwrap();
    for unit in &units {
        let text = std::fs::read_to_string(unit).unwrap();
        let exec = text
            .lines()
            .find_map(|l| l.strip_prefix("ExecStart="))
            .unwrap_or_else(|| panic!("{unit:?} has no ExecStart"));
        assert!(
            PROGRAMS.iter().any(|p| exec.starts_with(p)),
            "{unit:?} starts {exec}"
        );
        for line in [
            "KillSignal=SIGTERM",
            "Restart=on-failure",
            "DynamicUser=yes",
        ] {
            assert!(text.lines().any(|l| l == line), "{unit:?} lacks {line}");
        }
        assert!(text.contains("StateDirectory="), "{unit:?}");
        if analyze.is_err() {
            continue;
        }
        let copy = dir.path().join(unit.file_name().unwrap());
        let program = exec.split(' ').next().unwrap();
        std::fs::write(&copy, text.replace(program, "/bin/true")).unwrap();
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .arg(&copy)
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && said.trim().is_empty(),
            "{}: {said}",
            Path::new(unit).display()
        );
    }
    if analyze.is_err() {
        eprintln!("skipped systemd-analyze verify: systemd-analyze is not installed");
    }
}
