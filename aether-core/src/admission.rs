//! Admission: the rules a wave is judged by wherever it is measured (at
//! emit, on arrival, leaving a durable outbox, bending to a parent channel,
//! as a reply), and what judging made of it. Below the mediums, so that
//! every path, on every medium, asks the same rules.

use crate::{DropReason, Wave};

/// What the checks every emit passes made of a wave.
#[cfg_attr(not(feature = "nats"), allow(dead_code))]
pub(crate) enum Admitted {
    /// Measured and ready to route.
    Ready(Wave),
    /// Accepted but dropped, counted for this reason (it may reflect).
    Dropped(DropReason, Wave),
}

impl Admitted {
    /// What `Aether::check` made of `wave`: dropped for a reason, or not.
    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    pub(crate) fn of(wave: Wave, dropped: Option<DropReason>) -> Self {
        match dropped {
            None => Admitted::Ready(wave),
            Some(reason) => Admitted::Dropped(reason, wave),
        }
    }
}

/// The life rules a wave is judged by wherever it is measured: at emit, on
/// arrival from the network, when it leaves a durable outbox, when it bends
/// to a parent channel, and when a reply arrives. One definition, so every
/// path drops the same waves for the same reasons.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Life {
    /// Most hops; past it, [`DropReason::PropagationLimit`](crate::DropReason::PropagationLimit).
    pub(crate) max_propagation: u32,
    /// Amplitude kept per hop.
    pub(crate) attenuation_factor: f64,
    /// Under it a wave is dead: [`DropReason::Expired`](crate::DropReason::Expired).
    pub(crate) min_amplitude: f64,
}

impl Life {
    /// The rules of an aether's settings.
    pub(crate) fn of(config: &crate::AetherConfig) -> Self {
        Self {
            max_propagation: config.max_propagation,
            attenuation_factor: config.attenuation_factor,
            min_amplitude: config.min_amplitude,
        }
    }

    /// Judges `wave` at `now_ns` (0: the clock is read if it is needed):
    /// past the hop limit, or dead once measured, is `Err` with the reason
    /// (the caller counts it). A wave that has hopped or decays is measured
    /// (its amplitude set by the attenuation rule); a fresh wave that does
    /// not decay keeps the amplitude it carries.
    #[inline]
    pub(crate) fn judge(
        &self,
        wave: &mut crate::Wave,
        now_ns: u64,
    ) -> Result<(), crate::DropReason> {
        if wave.propagation_count() > self.max_propagation {
            return Err(crate::DropReason::PropagationLimit);
        }
        if wave.propagation_count() > 0 || wave.decay_per_s() > 0.0 {
            let now = if now_ns == 0 {
                crate::wave::unix_nanos()
            } else {
                now_ns
            };
            wave.measure(now, self.attenuation_factor);
        }
        if wave.amplitude().value() < self.min_amplitude {
            return Err(crate::DropReason::Expired);
        }
        Ok(())
    }
}
