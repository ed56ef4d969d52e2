//! Channels: the frequencies waves travel on.
//!
//! A channel is a dot-separated list of tokens, `<domain>.<entity>.<action>`.
//! Tokens are non-empty and made of `A-Z a-z 0-9 _ -`; a channel has at most
//! [`MAX_TOKENS`] tokens and [`MAX_BYTES`] bytes.
//!
//! A *pattern* is a channel that may contain wildcards, used to resonate:
//!
//! | pattern          | matches                                         |
//! |------------------|-------------------------------------------------|
//! | `orders.created` | exactly `orders.created`                        |
//! | `orders.*.done`  | `orders.<one token>.done`                       |
//! | `orders.*`       | `orders.` followed by **one or more** tokens    |
//! | `orders.>`       | the same as `orders.*`                          |
//! | `*`              | every channel                                   |
//!
//! [`Channel::matches`] is the single definition of routing: every medium
//! delivers exactly the waves it says match.
//!
//! ```
//! use aether_core::Channel;
//!
//! let channel = Channel::new("orders.payment.completed");
//! assert!(channel.matches(&Channel::new("orders.*")));
//! assert!(channel.matches(&Channel::new("orders.*.completed")));
//! assert!(!channel.matches(&Channel::new("orders.*.created")));
//!
//! // Invalid names are kept with the reason, and refused wherever they are used.
//! let bad = Channel::new("orders..created");
//! assert!(bad.validate().is_err());
//! assert!("orders created".parse::<Channel>().is_err());
//! ```

use std::{fmt, hash, str::FromStr};

use smol_str::SmolStr;

/// The most tokens a channel may have.
pub const MAX_TOKENS: usize = 16;
/// The most bytes a channel may have.
pub const MAX_BYTES: usize = 256;

/// A channel (frequency) or channel pattern.
///
/// Cloning is cheap (names up to 23 bytes are stored inline, longer ones
/// behind a reference count). [`Channel::new`] never fails: an
/// invalid name is kept together with the reason it is invalid, so that the
/// call that uses it (emit, resonate) returns a typed error and sends nothing.
/// Use [`Channel::parse`] (or [`str::parse`]) to get the error at once.
#[derive(Clone)]
pub struct Channel {
    name: SmolStr,
    /// One byte: the reason of an invalid name is worked out again when asked.
    shape: Shape,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shape {
    /// No wildcards: can be emitted on.
    Concrete,
    /// Has wildcards: can only be resonated on.
    Pattern,
    /// Breaks the grammar.
    Invalid,
}

/// Why a channel name is invalid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Invalid {
    /// The name is empty.
    Empty,
    /// The name is longer than [`MAX_BYTES`].
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// The name has more than [`MAX_TOKENS`] tokens.
    TooManyTokens {
        /// How many tokens it has.
        count: usize,
    },
    /// A token is empty (two dots in a row, or a leading or trailing dot).
    EmptyToken {
        /// Zero-based index of the token.
        index: usize,
    },
    /// A token holds a character outside `A-Z a-z 0-9 _ -`.
    BadCharacter {
        /// Zero-based index of the token.
        index: usize,
        /// The offending character.
        character: char,
    },
    /// A wildcard is mixed with other characters in one token (`ord*`).
    PartialWildcard {
        /// Zero-based index of the token.
        index: usize,
    },
    /// `>` appears before the last token.
    MisplacedTail {
        /// Zero-based index of the token.
        index: usize,
    },
    /// A wildcard was used where a concrete channel is required (emitting).
    WildcardNotAllowed,
}

/// A channel name was refused. Says which name and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelError {
    name: SmolStr,
    reason: Invalid,
}

impl ChannelError {
    /// The name that was refused.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Why it was refused.
    pub fn reason(&self) -> Invalid {
        self.reason
    }
}

impl fmt::Display for ChannelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut shown: String = self.name.chars().take(64).collect();
        if shown.len() < self.name.len() {
            shown.push('…');
        }
        write!(f, "invalid channel {shown:?}: ")?;
        match self.reason {
            Invalid::Empty => write!(f, "the name is empty"),
            Invalid::TooLong { len } => {
                write!(f, "{len} bytes long, the limit is {MAX_BYTES}")
            }
            Invalid::TooManyTokens { count } => {
                write!(f, "{count} tokens, the limit is {MAX_TOKENS}")
            }
            Invalid::EmptyToken { index } => write!(
                f,
                "token {index} is empty (no leading, trailing or doubled dots)"
            ),
            Invalid::BadCharacter { index, character } => write!(
                f,
                "token {index} contains {character:?}; tokens may only use A-Z a-z 0-9 _ -"
            ),
            Invalid::PartialWildcard { index } => write!(
                f,
                "token {index} mixes a wildcard with other characters; `*` and `>` must be whole tokens"
            ),
            Invalid::MisplacedTail { index } => {
                write!(f, "`>` at token {index} may only be the last token")
            }
            Invalid::WildcardNotAllowed => write!(
                f,
                "a wave is emitted on a concrete channel; wildcards are only for resonating"
            ),
        }
    }
}

impl std::error::Error for ChannelError {}

impl Channel {
    /// Makes a channel from a name. Never fails; see [`Channel::validate`].
    pub fn new(name: impl AsRef<str>) -> Self {
        let name = name.as_ref();
        Self {
            shape: classify(name).unwrap_or(Shape::Invalid),
            name: SmolStr::new(name),
        }
    }

    /// Makes a channel, refusing an invalid name with the reason.
    pub fn parse(name: impl AsRef<str>) -> Result<Self, ChannelError> {
        let channel = Self::new(name);
        channel.validate()?;
        Ok(channel)
    }

    /// The name, as given.
    pub fn as_str(&self) -> &str {
        &self.name
    }

    /// `Ok` if the name follows the channel grammar (wildcards allowed).
    pub fn validate(&self) -> Result<(), ChannelError> {
        match classify_cached(self) {
            Ok(_) => Ok(()),
            Err(reason) => Err(self.error(reason)),
        }
    }

    /// `Ok` if the channel can be emitted on: valid and without wildcards.
    pub fn validate_concrete(&self) -> Result<(), ChannelError> {
        match classify_cached(self) {
            Ok(Shape::Concrete) => Ok(()),
            Ok(_) => Err(self.error(Invalid::WildcardNotAllowed)),
            Err(reason) => Err(self.error(reason)),
        }
    }

    /// Whether the name follows the grammar.
    pub fn is_valid(&self) -> bool {
        self.shape != Shape::Invalid
    }

    /// Whether the channel holds a wildcard (and so can only be resonated on).
    pub fn is_pattern(&self) -> bool {
        self.shape == Shape::Pattern
    }

    /// Whether it is one of the bus's own channels (request replies
    /// `_INBOX`, reflections `_reflect`, delivery probes `_probe`, hopping
    /// `_hop`): its first token starts with `_`. Applications neither emit
    /// on them nor name them in access rules; the aether's own paths use
    /// them. This is the one definition of the rule.
    ///
    /// ```
    /// use aether_core::Channel;
    /// assert!(Channel::new("_INBOX.alpha.1").is_system());
    /// assert!(!Channel::new("orders._created").is_system());
    /// ```
    #[inline]
    pub fn is_system(&self) -> bool {
        self.name.starts_with('_')
    }

    /// The tokens of the name.
    pub fn tokens(&self) -> impl Iterator<Item = &str> + '_ {
        self.name.split('.')
    }

    /// The channel one token up (`orders.created` → `orders`), if any.
    pub fn parent(&self) -> Option<Channel> {
        self.name.rsplit_once('.').map(|(up, _)| Channel::new(up))
    }

    /// Whether a wave on this (concrete) channel is heard by `pattern`.
    ///
    /// This is the one definition of routing. An invalid channel or pattern
    /// matches nothing.
    pub fn matches(&self, pattern: &Channel) -> bool {
        match (self.shape, pattern.shape) {
            (Shape::Invalid, _) | (_, Shape::Invalid) => false,
            (_, Shape::Concrete) => self.name == pattern.name,
            (_, Shape::Pattern) => matches_tokens(&self.name, &pattern.name),
        }
    }

    fn error(&self, reason: Invalid) -> ChannelError {
        ChannelError {
            name: self.name.clone(),
            reason,
        }
    }
}

/// The shape, or the reason it is invalid (worked out again only then).
fn classify_cached(channel: &Channel) -> Result<Shape, Invalid> {
    match channel.shape {
        Shape::Invalid => classify(&channel.name),
        shape => Ok(shape),
    }
}

/// Token-by-token matching of a channel against a valid pattern.
fn matches_tokens(channel: &str, pattern: &str) -> bool {
    let mut channel_tokens = channel.split('.');
    let mut pattern_tokens = pattern.split('.').peekable();
    while let Some(want) = pattern_tokens.next() {
        let Some(got) = channel_tokens.next() else {
            return false;
        };
        let last = pattern_tokens.peek().is_none();
        if last && (want == "*" || want == ">") {
            // A trailing wildcard takes this token and any that follow.
            return true;
        }
        if want != "*" && want != got {
            return false;
        }
    }
    channel_tokens.next().is_none()
}

fn classify(name: &str) -> Result<Shape, Invalid> {
    if name.is_empty() {
        return Err(Invalid::Empty);
    }
    if name.len() > MAX_BYTES {
        return Err(Invalid::TooLong { len: name.len() });
    }
    let count = name.split('.').count();
    if count > MAX_TOKENS {
        return Err(Invalid::TooManyTokens { count });
    }
    let mut shape = Shape::Concrete;
    for (index, token) in name.split('.').enumerate() {
        match token {
            "" => return Err(Invalid::EmptyToken { index }),
            "*" => shape = Shape::Pattern,
            ">" if index + 1 == count => shape = Shape::Pattern,
            ">" => return Err(Invalid::MisplacedTail { index }),
            _ => {
                if let Some(character) = token.chars().find(|c| !is_token_char(*c)) {
                    return Err(if character == '*' || character == '>' {
                        Invalid::PartialWildcard { index }
                    } else {
                        Invalid::BadCharacter { index, character }
                    });
                }
            }
        }
    }
    Ok(shape)
}

/// Whether `c` may appear in a channel token.
pub(crate) fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

impl fmt::Debug for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Channel({:?})", &*self.name)
    }
}

impl PartialEq for Channel {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for Channel {}

impl hash::Hash for Channel {
    fn hash<H: hash::Hasher>(&self, state: &mut H) {
        self.name.hash(state)
    }
}

impl PartialEq<str> for Channel {
    fn eq(&self, other: &str) -> bool {
        &*self.name == other
    }
}

impl PartialEq<&str> for Channel {
    fn eq(&self, other: &&str) -> bool {
        &*self.name == *other
    }
}

impl FromStr for Channel {
    type Err = ChannelError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl From<&str> for Channel {
    fn from(name: &str) -> Self {
        Self::new(name)
    }
}

impl From<String> for Channel {
    fn from(name: String) -> Self {
        Self::new(name)
    }
}

impl From<&String> for Channel {
    fn from(name: &String) -> Self {
        Self::new(name)
    }
}

impl From<&Channel> for Channel {
    fn from(channel: &Channel) -> Self {
        channel.clone()
    }
}

impl AsRef<str> for Channel {
    fn as_ref(&self) -> &str {
        &self.name
    }
}

impl serde::Serialize for Channel {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.name)
    }
}

impl<'de> serde::Deserialize<'de> for Channel {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Channel::parse(name).map_err(serde::de::Error::custom)
    }
}

/// Whether every channel `inner` matches is matched by `outer` (both valid
/// channels or patterns): the rule that lets a resonance within an allowed
/// pattern, and nothing wider.
pub(crate) fn covers(outer: &Channel, inner: &Channel) -> bool {
    if !outer.is_valid() || !inner.is_valid() {
        return false;
    }
    let (outer_fixed, outer_tail) = split_tail(outer.as_str());
    let (inner_fixed, inner_tail) = split_tail(inner.as_str());
    if outer_tail {
        // `inner`'s shortest channel must reach past `outer`'s fixed tokens,
        // and those tokens must hold for every channel `inner` matches.
        if inner_fixed.len() < outer_fixed.len() + usize::from(!inner_tail) {
            return false;
        }
    } else if inner_tail || inner_fixed.len() != outer_fixed.len() {
        return false;
    }
    outer_fixed
        .iter()
        .zip(&inner_fixed)
        .all(|(o, i)| *o == "*" || o == i)
}

/// The tokens of a pattern before a trailing wildcard (`*` or `>` in the
/// last place: one or more tokens), and whether it has one.
fn split_tail(pattern: &str) -> (Vec<&str>, bool) {
    let mut tokens: Vec<&str> = pattern.split('.').collect();
    let tail = matches!(tokens.last(), Some(&"*") | Some(&">"));
    if tail {
        tokens.pop();
    }
    (tokens, tail)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(channel: &str, pattern: &str) -> bool {
        Channel::new(channel).matches(&Channel::new(pattern))
    }

    #[test]
    fn design_examples() {
        assert!(m("orders.created", "orders.created"));
        assert!(m("orders.created", "orders.*"));
        assert!(m("orders.payment.completed", "orders.*"));
        assert!(m("orders.payment.completed", "orders.>"));
        assert!(!m("orders", "orders.*"));
        assert!(m("orders", "*"));
        assert!(m("a.b.c.d", "*"));
        assert!(m("a.b.c", "a.*.c"));
        assert!(!m("a.b.x.c", "a.*.c"));
        assert!(!m("orders.created", "orders"));
        assert!(!m("orders", "orders.created"));
    }

    #[test]
    fn invalid_names_say_why() {
        let cases = [
            ("", Invalid::Empty),
            ("a..b", Invalid::EmptyToken { index: 1 }),
            (".a", Invalid::EmptyToken { index: 0 }),
            ("a.", Invalid::EmptyToken { index: 1 }),
            (
                "a b",
                Invalid::BadCharacter {
                    index: 0,
                    character: ' ',
                },
            ),
            ("a.ord*", Invalid::PartialWildcard { index: 1 }),
            ("a.>.b", Invalid::MisplacedTail { index: 1 }),
        ];
        for (name, reason) in cases {
            let err = Channel::parse(name).unwrap_err();
            assert_eq!(err.reason(), reason, "{name:?}");
            assert!(err.to_string().contains("invalid channel"), "{err}");
        }
        let long = "a".repeat(MAX_BYTES + 1);
        assert_eq!(
            Channel::parse(&long).unwrap_err().reason(),
            Invalid::TooLong { len: MAX_BYTES + 1 }
        );
        let many = vec!["a"; MAX_TOKENS + 1].join(".");
        assert_eq!(
            Channel::parse(&many).unwrap_err().reason(),
            Invalid::TooManyTokens {
                count: MAX_TOKENS + 1
            }
        );
        assert!(Channel::parse(vec!["a"; MAX_TOKENS].join(".")).is_ok());
    }

    #[test]
    fn invalid_matches_nothing() {
        assert!(!m("a..b", "*"));
        assert!(!m("a.b", "a.>.b"));
    }

    #[test]
    fn concrete_and_patterns() {
        assert!(Channel::new("a.b").validate_concrete().is_ok());
        assert_eq!(
            Channel::new("a.*")
                .validate_concrete()
                .unwrap_err()
                .reason(),
            Invalid::WildcardNotAllowed
        );
        assert!(Channel::new("a.*").is_pattern());
        assert_eq!(Channel::new("a.b.c").parent(), Some(Channel::new("a.b")));
        assert_eq!(Channel::new("a").parent(), None);
    }
}
