//! Channel families: the label a wave is counted under, with bounded
//! cardinality.
//!
//! A channel's family is its first `depth` tokens (`orders.created.eu`
//! counts as `orders.created` with depth 2). System channels, whose first
//! token starts with `_` (`_INBOX.…` replies, `_reflect.…` reflections),
//! count under that first token, since the rest is an instance id. A
//! hopping wire channel (`_hop.<hex>`) counts under its base's family when
//! [`HopAttribution`] recognizes it, else under [`HOPPING`].
//!
//! [`Families`] keeps at most `max` families apart; waves of any further
//! family count under [`OTHER`], so a metric labelled by family never has
//! more than `max + 1` label values, whatever the traffic.

use std::collections::{HashMap, VecDeque};

use aether_core::{
    Channel,
    hopping::{HopKey, HopSequence, HopSettingsError, is_hop_channel},
};

use crate::settings::HoppingBase;

/// The family of every wave past the bound.
pub const OTHER: &str = "other";

/// The family of hopping waves whose base is not known.
pub const HOPPING: &str = "hopping";

/// The family of `channel` at `depth` tokens (at least 1): a slice of it,
/// nothing allocated.
///
/// ```
/// use aether_gateway::family::family_of;
///
/// assert_eq!(family_of("orders.created.eu", 2), "orders.created");
/// assert_eq!(family_of("orders", 2), "orders");
/// assert_eq!(family_of("_INBOX.00ab.7", 2), "_INBOX");
/// ```
pub fn family_of(channel: &str, depth: usize) -> &str {
    let depth = if channel.starts_with('_') {
        1
    } else {
        depth.max(1)
    };
    match channel.match_indices('.').nth(depth - 1) {
        Some((end, _)) => &channel[..end],
        None => channel,
    }
}

/// Families counted apart, at most `max`, each with a value `T`; the rest
/// share the value of [`OTHER`].
#[derive(Debug)]
pub struct Families<T> {
    index: HashMap<Box<str>, usize>,
    entries: Vec<(Box<str>, T)>,
    max: usize,
    other: Option<usize>,
}

impl<T> Families<T> {
    /// An empty table that keeps at most `max` families apart.
    pub fn new(max: usize) -> Self {
        Self {
            index: HashMap::new(),
            entries: Vec::new(),
            max,
            other: None,
        }
    }

    /// The value of `family`, made with `make` (given the label: the family,
    /// or [`OTHER`] once the table is full) the first time.
    pub fn get_or_insert_with(&mut self, family: &str, make: impl FnOnce(&str) -> T) -> &mut T {
        if let Some(&i) = self.index.get(family) {
            return &mut self.entries[i].1;
        }
        let slot = if self.index.len() < self.max {
            let i = self.entries.len();
            self.entries.push((family.into(), make(family)));
            self.index.insert(family.into(), i);
            i
        } else {
            match self.other {
                Some(i) => i,
                None => {
                    let i = self.entries.len();
                    self.entries.push((OTHER.into(), make(OTHER)));
                    self.other = Some(i);
                    i
                }
            }
        };
        &mut self.entries[slot].1
    }

    /// Every label and its value, in the order they were first seen.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &T)> + '_ {
        self.entries.iter().map(|(name, value)| (&**name, value))
    }

    /// Every label and its value, mutable.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&str, &mut T)> + '_ {
        self.entries
            .iter_mut()
            .map(|(name, value)| (&**name, value))
    }

    /// How many labels are in use ([`OTHER`] included): at most `max + 1`.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no wave was counted yet.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether some waves were folded into [`OTHER`].
    pub fn folded(&self) -> bool {
        self.other.is_some()
    }
}

/// Slots whose wire channels are kept: a wave's stamp is within a slot or
/// two of the gateway's clock.
const CACHED_SLOTS: usize = 4;

/// Tells which configured base a hopping wire channel belongs to, from the
/// hopping key and the wave's emission slot.
#[derive(Debug)]
pub struct HopAttribution {
    bases: Vec<(HopSequence, Box<str>)>,
    interval_ms: u64,
    /// (slot, wire channel → index in `bases`), newest last.
    slots: VecDeque<(u64, HashMap<String, usize>)>,
}

impl HopAttribution {
    /// Recognizes the hops of `bases`, with `key` (the aether's hopping
    /// secret) and slots of `interval_ms`; each base counts under its
    /// family at `depth`.
    pub fn new(
        key: &HopKey,
        bases: &[HoppingBase],
        interval_ms: u64,
        depth: usize,
    ) -> Result<Self, HopSettingsError> {
        let bases = bases
            .iter()
            .map(|b| {
                let sequence = HopSequence::new(
                    key.clone(),
                    Channel::new(b.base.as_str()),
                    b.hop_count,
                    interval_ms,
                )?;
                Ok((sequence, family_of(&b.base, depth).into()))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            bases,
            interval_ms,
            slots: VecDeque::with_capacity(CACHED_SLOTS),
        })
    }

    /// The family of the base whose hop `wire` is at Unix time `stamp_ms`
    /// (the wave's emission), if any. Computes each base's hop once per
    /// slot.
    pub fn family(&mut self, wire: &Channel, stamp_ms: u64) -> Option<&str> {
        self.base(wire, stamp_ms).map(|(family, _)| family)
    }

    /// The family and the base channel whose hop `wire` is at `stamp_ms`.
    pub fn base(&mut self, wire: &Channel, stamp_ms: u64) -> Option<(&str, &Channel)> {
        if self.bases.is_empty() || !is_hop_channel(wire) {
            return None;
        }
        let slot = aether_core::hopping::slot(stamp_ms, self.interval_ms);
        let position = match self.slots.iter().position(|(s, _)| *s == slot) {
            Some(position) => position,
            None => {
                let wires = self
                    .bases
                    .iter()
                    .enumerate()
                    .map(|(i, (sequence, _))| (sequence.channel_at_slot(slot).to_string(), i))
                    .collect();
                if self.slots.len() == CACHED_SLOTS {
                    self.slots.pop_front();
                }
                self.slots.push_back((slot, wires));
                self.slots.len() - 1
            }
        };
        let &i = self.slots[position].1.get(wire.as_str())?;
        let (sequence, family) = &self.bases[i];
        Some((family, sequence.base()))
    }

    /// The family a hopping wave counts under: its base's, if `allowed` (the
    /// aether's ACL lets its source emit on that base), or [`HOPPING`].
    pub fn family_or_hopping(
        &mut self,
        wire: &Channel,
        stamp_ms: u64,
        allowed: impl FnOnce(&Channel) -> bool,
    ) -> &str {
        match self.base(wire, stamp_ms) {
            Some((family, base)) if allowed(base) => family,
            _ => HOPPING,
        }
    }
}

#[cfg(test)]
mod tests {
    use aether_core::Secret;

    use super::*;

    #[test]
    fn family_is_the_first_tokens() {
        assert_eq!(family_of("orders.created.eu", 1), "orders");
        assert_eq!(family_of("orders.created.eu", 2), "orders.created");
        assert_eq!(family_of("orders.created.eu", 3), "orders.created.eu");
        assert_eq!(family_of("orders.created.eu", 9), "orders.created.eu");
        assert_eq!(family_of("orders.created", 0), "orders");
        assert_eq!(family_of("_reflect.00000000000000ab", 3), "_reflect");
        assert_eq!(family_of("_hop.abcdef", 2), "_hop");
    }

    #[test]
    fn families_past_the_bound_fold_into_other() {
        let mut families = Families::new(3);
        for n in 0..500 {
            *families.get_or_insert_with(&format!("f{n}"), |_| 0u64) += 1;
        }
        assert_eq!(families.len(), 4);
        assert!(families.folded());
        let counts: HashMap<&str, u64> = families.iter().map(|(k, v)| (k, *v)).collect();
        assert_eq!(counts["f0"], 1);
        assert_eq!(counts[OTHER], 497);
        // A family seen before the bound keeps its own label.
        *families.get_or_insert_with("f2", |_| 0) += 1;
        assert_eq!(families.iter().nth(2).map(|(_, v)| *v), Some(2));
    }

    #[test]
    fn hops_are_attributed_to_their_base() {
        let secret = Secret::new("sixteen byte key");
        let key = HopKey::new(Some(&secret));
        let bases = [
            HoppingBase {
                base: "orders.created".into(),
                hop_count: 4,
            },
            HoppingBase {
                base: "payments".into(),
                hop_count: 2,
            },
        ];
        let mut attribution = HopAttribution::new(&key, &bases, 200, 1).unwrap();
        let orders = HopSequence::new(key.clone(), Channel::new("orders.created"), 4, 200).unwrap();
        let payments = HopSequence::new(key, Channel::new("payments"), 2, 200).unwrap();
        let t = 1_700_000_000_000u64;
        for step in 0..20 {
            let at = t + step * 150;
            let wire = orders.channel_at(at);
            assert_eq!(attribution.family(&wire, at), Some("orders"));
            assert_eq!(
                attribution.family(&payments.channel_at(at), at),
                Some("payments")
            );
        }
        // Another secret's hops, or a hop of another slot, are unknown.
        let stranger = HopKey::new(Some(&Secret::new("another sixteen b")));
        let foreign = HopSequence::new(stranger, Channel::new("orders.created"), 4, 200).unwrap();
        assert_eq!(attribution.family(&foreign.channel_at(t), t), None);
        assert_eq!(
            attribution.family_or_hopping(&foreign.channel_at(t), t, |_| true),
            HOPPING
        );
        // A known hop counts under its base only where its source may emit.
        let wire = orders.channel_at(t);
        assert_eq!(attribution.family_or_hopping(&wire, t, |_| true), "orders");
        assert_eq!(
            attribution.family_or_hopping(&wire, t, |base| base.as_str() != "orders.created"),
            HOPPING
        );
        assert_eq!(attribution.family(&Channel::new("orders.created"), t), None);
        assert!(attribution.slots.len() <= CACHED_SLOTS);
    }
}
