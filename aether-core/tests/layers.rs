//! The layers of `aether-core`, lowest first, and the rule that keeps them:
//! no module uses one of a higher layer. A module found in no layer fails
//! the test too, so a new file has to be placed.
//!
//! | layer | modules |
//! | --- | --- |
//! | 0 | `channel`, `names`, `system`, `error`, `stats`, `secret`, `recent`, `subject` |
//! | 1 | `wave` (with `wire`), `attenuation`, `reflection`, `replay`, `connection` |
//! | 2 | `config`, `rate_limit` |
//! | 3 | `admission`, `inbox`, `offer`, `physics`, `reply`, `security`, `spans`, `diffraction`, `hopping::sequence`, `hopping::gate` |
//! | 4 | `medium` |
//! | 5 | `aether`, `operator`, `report` |
//! | 6 | `vibrator`, `hopping` (its other parts), `reliable`, `lan` (finding a bus's node) |
//! | 7 | `state` (replicated maps, built on vibrators) |
//!
//! And in every crate of the workspace, no file imports another that
//! imports it back, directly or around a circle, inside a layer or not
//! (`aether_testkit::sources::cycles`), and no crate compiles another's
//! source files.
//!
//! What a module uses is read from its source outside tests and comments:
//! `use crate::…` and `crate::…` paths, and names the crate root re-exports
//! (`crate::{Aether, …}`) traced to the module that defines them.

use std::path::Path;

use aether_testkit::sources::{cycles, read_crate, reexports, uses};

const LAYERS: &[(&str, u8)] = &[
    ("channel", 0),
    ("names", 0),
    ("system", 0),
    ("error", 0),
    ("stats", 0),
    ("secret", 0),
    ("recent", 0),
    ("subject", 0),
    ("wave", 1),
    ("attenuation", 1),
    ("reflection", 1),
    ("replay", 1),
    ("connection", 1),
    ("config", 2),
    ("rate_limit", 2),
    ("admission", 3),
    ("inbox", 3),
    ("offer", 3),
    ("physics", 3),
    ("reply", 3),
    ("security", 3),
    ("spans", 3),
    ("diffraction", 3),
    ("hopping::sequence", 3),
    ("hopping::gate", 3),
    ("medium", 4),
    ("aether", 5),
    ("operator", 5),
    ("report", 5),
    ("vibrator", 6),
    ("bustime", 6),
    ("hopping", 6),
    ("reliable", 6),
    ("lan", 6),
    ("state", 7),
];

/// The layer of a module path (`medium::nats`): its longest listed prefix.
fn layer(path: &str) -> Option<u8> {
    LAYERS
        .iter()
        .filter(|(name, _)| path == *name || path.starts_with(&format!("{name}::")))
        .max_by_key(|(name, _)| name.len())
        .map(|(_, layer)| *layer)
}

#[test]
fn no_module_uses_one_of_a_higher_layer() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut violations = Vec::new();
    let mut checked = 0;
    for file in read_crate(&src) {
        let module = &file.module;
        let own = layer(module).unwrap_or_else(|| panic!("{module} is in no layer: place it"));
        for used in &file.uses {
            let Some(theirs) = layer(used) else { continue };
            checked += 1;
            if theirs > own {
                violations.push(format!(
                    "{module} (layer {own}) uses {used} (layer {theirs})"
                ));
            }
        }
    }
    assert!(checked > 100, "the check read the sources ({checked} uses)");
    violations.sort();
    violations.dedup();
    assert!(violations.is_empty(), "{}", violations.join("\n"));
}

/// No two files of any crate of the workspace import each other, directly
/// or around a circle, inside a layer or not: what both need lives in a
/// lower module.
#[test]
fn no_file_imports_itself_around_a_circle_in_any_crate() {
    let core = Path::new(env!("CARGO_MANIFEST_DIR"));
    let crates = [
        core.join("src"),
        core.join("ops/src"),
        core.join("journal/src"),
        core.join("testkit/src"),
        core.join("cli/src"),
        core.join("python/src"),
        core.join("../aether-gateway/src"),
        core.join("../aether-service-alpha/src"),
        core.join("../aether-service-beta/src"),
    ];
    let mut found = Vec::new();
    let mut files = 0;
    for src in &crates {
        let sources = read_crate(src);
        files += sources.len();
        for cycle in cycles(&sources) {
            found.push(format!("{}: {}", src.display(), cycle.join(" <-> ")));
        }
    }
    assert!(files > 100, "the check read the sources ({files} files)");
    assert!(found.is_empty(), "import cycles:\n{}", found.join("\n"));
}

#[test]
fn the_check_sees_an_upward_use() {
    let reexports = reexports("pub use aether::Aether;\npub use vibrator::{Emitter, Vibrator};");
    let found = uses(
        "use crate::{Aether, medium::{Listener, x}, wave::unix_nanos};\nlet v = crate::vibrator::Vibrator;",
        &reexports,
    );
    assert_eq!(found, ["aether", "medium", "wave::unix_nanos", "vibrator"]);
    assert_eq!(layer("medium::nats::durable"), Some(4));
    assert_eq!(layer("hopping::gate"), Some(3));
    assert_eq!(layer("hopping::receiver"), Some(6));
    assert!(layer("aether").unwrap() > layer("wave::wire").unwrap());
}

/// No crate compiles another's source file (`#[path = "../../other/…"]`):
/// code two crates share lives in a crate both depend on.
#[test]
fn no_crate_compiles_another_crates_files() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut found = Vec::new();
    let mut files = 0;
    for dir in [
        "aether-core",
        "aether-gateway",
        "aether-service-alpha",
        "aether-service-beta",
    ] {
        for file in rust_files(&root.join(dir)) {
            files += 1;
            let text = std::fs::read_to_string(&file).unwrap();
            for line in text.lines() {
                let Some(rest) = line.trim().strip_prefix("#[path = \"") else {
                    continue;
                };
                let target = file.parent().unwrap().join(rest.split('"').next().unwrap());
                let (Ok(target), Ok(from)) = (target.canonicalize(), file.canonicalize()) else {
                    continue;
                };
                if crate_of(&target) != crate_of(&from) {
                    found.push(format!("{}: {}", file.display(), line.trim()));
                }
            }
        }
    }
    assert!(files > 100, "the check read the sources ({files} files)");
    assert!(
        found.is_empty(),
        "files of another crate:\n{}",
        found.join("\n")
    );
}

/// Every `.rs` file below `dir`, build output left out.
fn rust_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        let name = entry.file_name();
        if path.is_dir() && name != "target" && name != "node_modules" {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out
}

/// The directory of the crate a file belongs to: its nearest ancestor
/// holding a `Cargo.toml`.
fn crate_of(file: &Path) -> Option<&Path> {
    file.ancestors()
        .skip(1)
        .find(|dir| dir.join("Cargo.toml").is_file())
}

/// Every source file of every crate is on a map: ARCHITECTURE.md names it
/// (`hub.rs`, `keeper/`), or its crate's root documentation does (its
/// module table: [`stem`], or the file's name), so that a maintainer finds
/// each file from one of them.
#[test]
fn every_source_file_is_on_a_map() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let architecture = std::fs::read_to_string(root.join("ARCHITECTURE.md")).unwrap();
    let crates = [
        "aether-core/src",
        "aether-core/ops/src",
        "aether-core/journal/src",
        "aether-core/testkit/src",
        "aether-core/cli/src",
        "aether-core/python/src",
        "aether-core/peers/src",
        "aether-gateway/src",
        "aether-service-alpha/src",
        "aether-service-beta/src",
    ];
    let mut unmapped = Vec::new();
    let mut files = 0;
    for src in crates {
        let src = root.join(src);
        let crate_root = ["lib.rs", "main.rs"]
            .iter()
            .map(|name| src.join(name))
            .find(|path| path.is_file())
            .unwrap();
        let docs: String = std::fs::read_to_string(&crate_root)
            .unwrap()
            .lines()
            .filter(|line| line.starts_with("//!"))
            .collect::<Vec<_>>()
            .join("\n");
        for file in rust_files(&src) {
            files += 1;
            let name = file.file_name().unwrap().to_str().unwrap();
            if name == "lib.rs" || name == "main.rs" {
                continue;
            }
            let stem = if name == "mod.rs" {
                file.parent()
                    .unwrap()
                    .file_name()
                    .unwrap()
                    .to_str()
                    .unwrap()
            } else {
                name.trim_end_matches(".rs")
            };
            let named = |text: &str| {
                text.contains(&format!("{stem}.rs"))
                    || text.contains(&format!("{stem}/"))
                    || text.contains(&format!("`{stem}`"))
            };
            if !named(&architecture) && !named(&docs) {
                unmapped.push(file.strip_prefix(&root).unwrap().display().to_string());
            }
        }
    }
    assert!(files > 150, "the check read the sources ({files} files)");
    let lines = architecture.lines().count();
    assert!(
        lines < 600,
        "ARCHITECTURE.md is a maintainer's map, under 600 lines ({lines}): the detail goes in module docs"
    );
    assert!(
        unmapped.is_empty(),
        "files on no map (name each in ARCHITECTURE.md or its crate's module table):\n{}",
        unmapped.join("\n")
    );
}
