//! A crate's sources read as a graph of files: which module each file is,
//! which modules its code uses (`use crate::…` and `crate::…` paths, and
//! names the crate root re-exports traced to their module), and the
//! cycles among files. The layers tests of the crates are built on it.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
};

/// One source file: its module path (`medium::nats`) and what its code
/// uses, as module paths to their second token (`wave::wire`).
#[derive(Clone, Debug)]
pub struct SourceFile {
    /// Its module path.
    pub module: String,
    /// The file.
    pub path: PathBuf,
    /// The modules its code uses.
    pub uses: Vec<String>,
}

/// Every `.rs` file under `src` but the crate root (`lib.rs`, `main.rs`),
/// with what it uses.
pub fn read_crate(src: &Path) -> Vec<SourceFile> {
    let root = ["lib.rs", "main.rs"]
        .iter()
        .map(|name| src.join(name))
        .find(|p| p.is_file())
        .expect("a crate root");
    let reexports = reexports(&code(&fs::read_to_string(&root).unwrap()));
    let mut files = Vec::new();
    let mut dirs = vec![src.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") && path != root {
                files.push(path);
            }
        }
    }
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let module = module_of(src, &path);
            let text = in_crate_terms(&code(&fs::read_to_string(&path).unwrap()), &module);
            SourceFile {
                uses: uses(&text, &reexports),
                module,
                path,
            }
        })
        .collect()
}

/// `code` of module `module` with its `super::` paths written from the
/// crate root (`super::bus` in `physics::follow` is `crate::physics::bus`),
/// so that a file's uses of its siblings are seen too.
pub fn in_crate_terms(code: &str, module: &str) -> String {
    let parent = module.rsplit_once("::").map_or("", |(parent, _)| parent);
    let from_root = if parent.is_empty() {
        "crate::".to_string()
    } else {
        format!("crate::{parent}::")
    };
    code.replace("super::", &from_root)
}

/// The module path of a source file under `src`.
pub fn module_of(src: &Path, file: &Path) -> String {
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
pub fn code(text: &str) -> String {
    let text = text.split("#[cfg(test)]").next().unwrap_or_default();
    text.lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The crate-root names and the modules they come from (`pub use x::{A}`).
pub fn reexports(root: &str) -> BTreeMap<String, String> {
    let mut names = BTreeMap::new();
    for statement in root.split(';') {
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
pub fn uses(code: &str, reexports: &BTreeMap<String, String>) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        // `crate::{a::b, C, d::{e, f}}`, or a group under a path,
        // `crate::a::b::{c, d::e}`: each item, under the path.
        let head: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
            .collect();
        if (head.is_empty() || head.ends_with("::")) && rest[head.len()..].starts_with('{') {
            let group = &rest[head.len() + 1..];
            let mut depth = 0;
            let mut item = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        found.push(format!("{head}{}", item.trim()));
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        found.push(format!("{head}{}", std::mem::take(&mut item).trim()));
                        continue;
                    }
                    _ => {}
                }
                if depth == 0 {
                    item.push(c);
                }
            }
        } else {
            found.push(head);
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

/// The import cycles among `files`, each as the files around it: an edge
/// goes from a file to the file of each module it uses (`a::b` to the file
/// of `a::b` if there is one, else of `a`), a file's uses of itself and of
/// its own submodules left out.
pub fn cycles(files: &[SourceFile]) -> Vec<Vec<String>> {
    let modules: BTreeSet<&str> = files.iter().map(|f| f.module.as_str()).collect();
    let mut edges: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for file in files {
        let from = file.module.as_str();
        let targets = edges.entry(from).or_default();
        for used in &file.uses {
            let to = if modules.contains(used.as_str()) {
                modules.get(used.as_str())
            } else {
                used.split("::").next().and_then(|first| modules.get(first))
            };
            let Some(&to) = to else { continue };
            let own = to == from || to.starts_with(&format!("{from}::"));
            if !own {
                targets.insert(to);
            }
        }
    }
    // Strongly connected components (Tarjan), those of more than one file.
    struct Search<'a> {
        edges: &'a BTreeMap<&'a str, BTreeSet<&'a str>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        found: Vec<Vec<String>>,
    }
    impl<'a> Search<'a> {
        fn visit(&mut self, v: &'a str) {
            let n = self.index.len();
            self.index.insert(v, n);
            self.low.insert(v, n);
            self.stack.push(v);
            self.on_stack.insert(v);
            for &w in self.edges.get(v).into_iter().flatten() {
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let low = self.low[v].min(self.low[w]);
                    self.low.insert(v, low);
                } else if self.on_stack.contains(w) {
                    let low = self.low[v].min(self.index[w]);
                    self.low.insert(v, low);
                }
            }
            if self.low[v] == self.index[v] {
                let mut component = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack.remove(w);
                    component.push(w.to_string());
                    if w == v {
                        break;
                    }
                }
                if component.len() > 1 {
                    component.sort();
                    self.found.push(component);
                }
            }
        }
    }
    let mut search = Search {
        edges: &edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for &v in &modules {
        if !search.index.contains_key(v) {
            search.visit(v);
        }
    }
    search.found.sort();
    search.found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(module: &str, uses: &[&str]) -> SourceFile {
        SourceFile {
            module: module.into(),
            path: PathBuf::new(),
            uses: uses.iter().map(|u| u.to_string()).collect(),
        }
    }

    #[test]
    fn a_cycle_through_three_files_is_found_and_a_child_using_its_parent_is_not() {
        let files = [
            file("a", &["b::x"]),
            file("b", &["c"]),
            file("c", &["a::thing"]),
            file("d", &["d::e", "a"]),
            file("d::e", &["d"]),
        ];
        assert_eq!(cycles(&files), [["a", "b", "c"]]);
        assert!(cycles(&files[3..]).is_empty(), "a parent and its child");
    }

    #[test]
    fn a_use_of_a_sibling_through_super_is_seen() {
        let code = in_crate_terms(
            "use super::{Event, bus::{Hub, Handle}};\nlet x = super::window::Window::new();",
            "physics::follow",
        );
        let found = uses(&code, &BTreeMap::new());
        assert_eq!(found, ["physics", "physics::bus", "physics::window"]);
        assert_eq!(
            in_crate_terms("use super::wave;", "admission"),
            "use crate::wave;"
        );
    }
}
