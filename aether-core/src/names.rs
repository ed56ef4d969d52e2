//! Names of vibrators and groups: the one rule, below every module that
//! uses it (vibrators, the envelope's source, settings, instance reports).

use crate::channel::is_token_char;

/// Longest vibrator or group name, in bytes.
pub const MAX_NAME_BYTES: usize = 64;

/// Whether `name` is a vibrator name: 1 to [`MAX_NAME_BYTES`] bytes of
/// `A-Z a-z 0-9 _ -` in tokens separated by single dots. The one
/// definition of the rule: settings (ACL sources, signing keys, report
/// instances) use it too.
pub(crate) fn is_name(name: &str) -> bool {
    check_name(name, (), "").is_ok()
}

pub(crate) fn check_name<K: Copy>(name: &str, kind: K, what: &str) -> Result<(), crate::Error<K>> {
    let problem = if name.is_empty() {
        Some("is empty".to_string())
    } else if name.len() > MAX_NAME_BYTES {
        Some(format!(
            "is {} bytes, the limit is {MAX_NAME_BYTES}",
            name.len()
        ))
    } else if let Some(c) = name.chars().find(|c| !(is_token_char(*c) || *c == '.')) {
        Some(format!("contains {c:?}; use A-Z a-z 0-9 _ - ."))
    } else if name.split('.').any(str::is_empty) {
        // Its own channels (replies, reflections) are named after it.
        Some("has an empty token between dots, or a dot at an end".to_string())
    } else {
        None
    };
    match problem {
        None => Ok(()),
        Some(problem) => Err(crate::Error::new(
            kind,
            format!("{what} {name:?} {problem}"),
        )),
    }
}
