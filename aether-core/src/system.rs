//! The bus's own channels, below everything that names them: their first
//! tokens (all start with `_`, the one rule of
//! [`Channel::is_system`](crate::Channel::is_system)) and the channels
//! derived from a name.

use crate::Channel;

/// The first token of instance reports' channels.
pub(crate) const REPORT_PREFIX: &str = "_report";

/// The report channel of `instance`, `_report.<instance>`, if the instance
/// name is a vibrator name that makes a channel.
pub(crate) fn report_channel(instance: &str) -> Option<Channel> {
    if !crate::names::is_name(instance) {
        return None;
    }
    let channel = Channel::new(format!("{REPORT_PREFIX}.{instance}"));
    channel.validate_concrete().is_ok().then_some(channel)
}
