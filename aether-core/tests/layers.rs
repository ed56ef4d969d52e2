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
//! | 5 | `aether`, `report` |
//! | 6 | `vibrator`, `hopping` (its other parts), `reliable`, `lan` (finding a bus's node) |
//! | 7 | `state` (replicated maps, built on vibrators) |
//!
//! What a module uses is read from its source outside tests and comments:
//! `use crate::…` and `crate::…` paths, and names the crate root re-exports
//! (`crate::{Aether, …}`) traced to the module that defines them.

use std::{collections::BTreeMap, fs, path::Path};

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
    ("report", 5),
    ("vibrator", 6),
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

/// The module path of a source file under `src`.
fn module_of(src: &Path, file: &Path) -> String {
    let relative = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts.join("::")
}

/// The source of `text` outside `#[cfg(test)]` (at the end of a file) and
/// comment lines.
fn code(text: &str) -> String {
    let text = text.split("#[cfg(test)]").next().unwrap_or_default();
    text.lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The crate-root names and the modules they come from (`pub use x::{A}`).
fn reexports(lib: &str) -> BTreeMap<String, String> {
    let mut names = BTreeMap::new();
    for statement in lib.split(';') {
        let Some(rest) = statement.trim().strip_prefix("pub use ") else {
            continue;
        };
        let Some((module, items)) = rest.split_once("::") else {
            continue;
        };
        let items = items.trim_start_matches('{').trim_end_matches('}');
        for item in items.split(',') {
            let item = item.trim();
            if item.starts_with(char::is_uppercase) {
                names.insert(item.to_string(), module.to_string());
            }
        }
    }
    names
}

/// Every module path `code` uses, as far as its second token.
fn uses(code: &str, reexports: &BTreeMap<String, String>) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // `use crate::{a::b, C, d::{e, f}}`: the first two tokens of each.
            let mut depth = 0;
            let mut item = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        found.push(item.clone());
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        found.push(std::mem::take(&mut item));
                        continue;
                    }
                    _ => {}
                }
                if depth == 0 {
                    item.push(c);
                }
            }
        } else {
            let path: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            found.push(path);
        }
    }
    found
        .into_iter()
        .filter_map(|item| {
            let item = item.trim().trim_start_matches("self::");
            let tokens: Vec<&str> = item
                .split("::")
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .collect();
            let first = *tokens.first()?;
            if first.starts_with(char::is_uppercase) {
                return reexports.get(first).cloned();
            }
            match tokens.get(1) {
                Some(second) if second.starts_with(char::is_lowercase) => {
                    Some(format!("{first}::{second}"))
                }
                _ => Some(first.to_string()),
            }
        })
        .collect()
}

#[test]
fn no_module_uses_one_of_a_higher_layer() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let lib = fs::read_to_string(src.join("lib.rs")).unwrap();
    let reexports = reexports(&code(&lib));
    let mut files = Vec::new();
    let mut dirs = vec![src.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    let mut violations = Vec::new();
    let mut checked = 0;
    for file in files {
        let module = module_of(&src, &file);
        if module == "lib" {
            continue;
        }
        let own = layer(&module).unwrap_or_else(|| panic!("{module} is in no layer: place it"));
        for used in uses(&code(&fs::read_to_string(&file).unwrap()), &reexports) {
            let Some(theirs) = layer(&used) else { continue };
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
