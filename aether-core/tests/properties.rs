//! Property tests of the rules: channel grammar and matching, effective
//! amplitude, shedding order, and no panic on any input.

use std::{f64::consts::PI, time::Duration};

use aether_core::{
    Aether, AetherConfig, Amplitude, Channel, DropReason, Phase, Vibrator, Wave,
    attenuation::{decay_for_ttl, effective_amplitude, time_to_live},
    channel::{MAX_BYTES, MAX_TOKENS},
};
use proptest::prelude::*;

/// Reference model of matching, on token lists, written independently of the
/// library: recursion over the pattern.
fn model_matches(channel: &[&str], pattern: &[&str]) -> bool {
    match (pattern, channel) {
        ([], []) => true,
        ([], _) => false,
        ([last], rest) if *last == "*" || *last == ">" => !rest.is_empty(),
        ([p, ps @ ..], [c, cs @ ..]) => (*p == "*" || p == c) && model_matches(cs, ps),
        (_, []) => false,
    }
}

/// Reference model of validity.
fn model_valid(name: &str) -> bool {
    let tokens: Vec<&str> = name.split('.').collect();
    !name.is_empty()
        && name.len() <= MAX_BYTES
        && tokens.len() <= MAX_TOKENS
        && tokens.iter().enumerate().all(|(i, t)| {
            *t == "*"
                || (*t == ">" && i + 1 == tokens.len())
                || (!t.is_empty()
                    && t.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'))
        })
}

/// Tokens from a small alphabet, so that channels and patterns often meet.
fn token() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("a".to_string()),
        Just("b".to_string()),
        Just("orders".to_string()),
        "[A-Za-z0-9_-]{1,6}",
    ]
}

fn channel_tokens() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(token(), 1..6)
}

fn pattern_tokens() -> impl Strategy<Value = Vec<String>> {
    (
        prop::collection::vec(prop_oneof![3 => token(), 1 => Just("*".to_string())], 1..6),
        prop_oneof![Just(None), Just(Some("*")), Just(Some(">"))],
    )
        .prop_map(|(mut tokens, tail)| {
            if let Some(tail) = tail {
                *tokens.last_mut().unwrap() = tail.to_string();
            }
            tokens
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn matching_agrees_with_the_model(c in channel_tokens(), p in pattern_tokens()) {
        let channel = Channel::parse(c.join(".")).unwrap();
        let pattern = Channel::parse(p.join(".")).unwrap();
        let c: Vec<&str> = c.iter().map(String::as_str).collect();
        let p: Vec<&str> = p.iter().map(String::as_str).collect();
        prop_assert_eq!(channel.matches(&pattern), model_matches(&c, &p), "{} ~ {}", channel, pattern);
    }

    #[test]
    fn a_channel_matches_itself_and_star(c in channel_tokens()) {
        let channel = Channel::parse(c.join(".")).unwrap();
        prop_assert!(channel.matches(&channel));
        prop_assert!(channel.matches(&Channel::new("*")));
        prop_assert!(channel.matches(&Channel::new(">")));
        if let Some(parent) = channel.parent() {
            let below = Channel::new(format!("{}.*", parent));
            prop_assert!(channel.matches(&below));
            prop_assert!(!parent.matches(&below));
        }
    }

    #[test]
    fn parse_display_and_serde_round_trip(p in pattern_tokens()) {
        let name = p.join(".");
        let channel = Channel::parse(&name).unwrap();
        prop_assert_eq!(channel.to_string(), name.clone());
        prop_assert_eq!(channel.as_str().parse::<Channel>().unwrap(), channel.clone());
        let json = serde_json::to_string(&channel).unwrap();
        prop_assert_eq!(serde_json::from_str::<Channel>(&json).unwrap(), channel);
    }

    #[test]
    fn validity_agrees_with_the_model(name in "[a-c.*> _\\-]{0,12}") {
        prop_assert_eq!(Channel::new(&name).is_valid(), model_valid(&name), "{:?}", name);
    }

    #[test]
    fn any_string_is_handled_without_panic(name in any::<String>(), pattern in any::<String>()) {
        let channel = Channel::new(&name);
        let pattern = Channel::new(&pattern);
        let _ = channel.matches(&pattern);
        if let Err(e) = channel.validate() {
            prop_assert!(e.to_string().starts_with("invalid channel"));
            prop_assert!(!channel.matches(&Channel::new("*")));
        }
        let _ = channel.validate_concrete();
        let _ = channel.parent();
        let _ = format!("{channel:?}");
        prop_assert_eq!(model_valid(&name), channel.is_valid());
    }

    #[test]
    fn effective_amplitude_never_rises(
        a0 in 0.0f64..=1.0,
        decay in 0.0f64..50.0,
        factor in 0.01f64..=1.0,
        age_ms in 0u64..100_000,
        more_ms in 0u64..100_000,
        hops in 0u32..20,
        more_hops in 0u32..20,
    ) {
        let age = Duration::from_millis(age_ms);
        let a = effective_amplitude(a0, decay, age, factor, hops);
        prop_assert!((0.0..=a0).contains(&a), "{a} not in [0, {a0}]");
        let older = effective_amplitude(a0, decay, age + Duration::from_millis(more_ms), factor, hops);
        prop_assert!(older <= a);
        let further = effective_amplitude(a0, decay, age, factor, hops + more_hops);
        prop_assert!(further <= a);
        if decay == 0.0 && hops == 0 {
            prop_assert_eq!(a, a0);
        }
    }

    #[test]
    fn ttl_is_when_the_wave_dies(a0 in 0.02f64..=1.0, min in 0.001f64..0.01, ttl_ms in 1u64..100_000) {
        let ttl = Duration::from_millis(ttl_ms);
        let decay = decay_for_ttl(a0, min, ttl);
        let back = time_to_live(a0, min, decay).unwrap();
        prop_assert!((back.as_secs_f64() - ttl.as_secs_f64()).abs() < 1e-6);
        let at_death = effective_amplitude(a0, decay, ttl, 0.95, 0);
        prop_assert!((at_death - min).abs() < 1e-9);
    }

    #[test]
    fn amplitude_is_refused_outside_unit_range(v in any::<f64>()) {
        prop_assert_eq!(Amplitude::new(v).is_ok(), (0.0..=1.0).contains(&v));
        prop_assert_eq!(Wave::builder("a").amplitude(v).build().is_ok(), (0.0..=1.0).contains(&v));
    }

    #[test]
    fn phase_is_normalized(v in any::<f64>()) {
        match Phase::new(v) {
            Ok(p) => {
                prop_assert!(v.is_finite());
                prop_assert!((0.0..2.0 * PI).contains(&p.radians()));
                let back = p.inverted().inverted().radians();
                prop_assert!((back - p.radians()).abs() < 1e-9 || (back - p.radians()).abs() > 2.0 * PI - 1e-9);
            }
            Err(_) => prop_assert!(!v.is_finite()),
        }
    }
}

/// The shedding rule, as a model: when full, drop the incoming wave if it is
/// no stronger than the weakest queued one, else drop the oldest weakest.
fn model_shed(capacity: usize, amplitudes: &[f64]) -> (Vec<usize>, usize) {
    let mut queue: Vec<usize> = Vec::new();
    let mut shed = 0;
    for (i, a) in amplitudes.iter().enumerate() {
        if queue.len() < capacity {
            queue.push(i);
            continue;
        }
        let min = queue
            .iter()
            .map(|j| amplitudes[*j])
            .fold(f64::INFINITY, f64::min);
        shed += 1;
        if *a > min {
            let at = queue.iter().position(|j| amplitudes[*j] == min).unwrap();
            queue.remove(at);
            queue.push(i);
        }
    }
    (queue, shed)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn full_queues_shed_the_weakest_first(
        capacity in 1usize..8,
        amplitudes in prop::collection::vec(prop_oneof![Just(0.5), 0.0f64..=1.0], 0..40),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let (kept, shed_count) = runtime.block_on(async {
            // No minimum amplitude: every wave is alive, only the queue sheds.
            let config = AetherConfig { min_amplitude: 0.0, ..Default::default() };
            let aether = Aether::new(config).unwrap();
            let mut rx = Vibrator::builder("rx").queue_capacity(capacity).build(&aether).unwrap();
            rx.resonate_on("p").await.unwrap();
            let tx = Vibrator::new("tx", &aether).unwrap();
            for (i, a) in amplitudes.iter().enumerate() {
                let wave = Wave::builder("p")
                    .amplitude(*a)
                    .payload((i as u32).to_be_bytes().to_vec())
                    .build()
                    .unwrap();
                tx.emit(wave).await.unwrap();
            }
            let kept: Vec<usize> = std::iter::from_fn(|| rx.try_receive())
                .map(|w| u32::from_be_bytes(w.payload_bytes()[..4].try_into().unwrap()) as usize)
                .collect();
            (kept, rx.stats().dropped(DropReason::QueueFull) as usize)
        });
        let (model, model_shed_count) = model_shed(capacity, &amplitudes);
        prop_assert_eq!(&kept, &model);
        prop_assert_eq!(shed_count, model_shed_count);
        // What is kept is the strongest `capacity` amplitudes, in emission order.
        let mut kept_values: Vec<f64> = kept.iter().map(|i| amplitudes[*i]).collect();
        let mut all = amplitudes.clone();
        all.sort_by(|a, b| b.total_cmp(a));
        all.truncate(capacity);
        kept_values.sort_by(|a, b| b.total_cmp(a));
        prop_assert_eq!(kept_values, all);
        prop_assert!(kept.windows(2).all(|w| w[0] < w[1]));
    }
}
