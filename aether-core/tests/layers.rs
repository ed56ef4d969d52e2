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
