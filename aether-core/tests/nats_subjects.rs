//! The subject mapping, proven against a real nats-server: for any pattern
//! and channels, the messages NATS delivers to the pattern's subject are
//! exactly those on channels that `Channel::matches` accepts.

#![cfg(feature = "nats")]

use aether_core::{Channel, subject};
use aether_testkit::{NatsServer, RawNats};
use proptest::prelude::*;

const PREFIX: &str = "aether";

fn token() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("a".to_string()),
        Just("b".to_string()),
        Just("orders".to_string()),
        "[A-Za-z0-9_-]{1,4}",
    ]
}

fn channel() -> impl Strategy<Value = Channel> {
    prop::collection::vec(token(), 1..5).prop_map(|t| Channel::new(t.join(".")))
}

fn pattern() -> impl Strategy<Value = Channel> {
    (
        prop::collection::vec(prop_oneof![3 => token(), 1 => Just("*".to_string())], 0..4),
        prop_oneof![
            Just(None),
            Just(Some("*".to_string())),
            Just(Some(">".to_string()))
        ],
    )
        .prop_filter_map("a pattern needs a token", |(mut tokens, tail)| {
            tokens.extend(tail);
            let pattern = Channel::new(tokens.join("."));
            (!tokens.is_empty() && pattern.validate().is_ok()).then_some(pattern)
        })
}

#[test]
fn nats_delivers_exactly_what_channel_matches_says() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let server = runtime
        .block_on(NatsServer::builder().start())
        .expect("nats-server starts");
    let client = std::cell::RefCell::new(
        runtime
            .block_on(RawNats::connect(server.addr()))
            .expect("raw client connects"),
    );
    let next_sid = std::cell::Cell::new(0);
    let config = ProptestConfig {
        cases: 300,
        ..ProptestConfig::default()
    };
    proptest!(config, |(pattern in pattern(), channels in prop::collection::vec(channel(), 1..12))| {
        let sid = next_sid.get() + 1;
        next_sid.set(sid);
        let mut client = client.borrow_mut();
        let delivered = runtime.block_on(async {
            client.subscribe(&subject::pattern_subject(PREFIX, &pattern), sid, None).await?;
            for (i, channel) in channels.iter().enumerate() {
                let subject = subject::channel_subject(PREFIX, channel);
                client.publish(&subject, None, i.to_string().as_bytes()).await?;
            }
            client.unsubscribe(sid).await?;
            // The PONG comes after every message the publishes caused.
            client.ping().await?;
            let mut delivered = Vec::new();
            while let Some(message) = client.next_message(std::time::Duration::ZERO).await? {
                prop_assert_eq!(message.sid, sid);
                let index: usize = String::from_utf8_lossy(&message.payload).parse().unwrap();
                let back = subject::subject_channel(PREFIX, &message.subject).unwrap();
                prop_assert_eq!(&back, &channels[index]);
                delivered.push(index);
            }
            Ok::<_, TestCaseError>(delivered)
        }).map_err(|e| TestCaseError::fail(format!("{e}")))?;
        let expected: Vec<usize> = (0..channels.len())
            .filter(|i| channels[*i].matches(&pattern))
            .collect();
        prop_assert_eq!(delivered, expected, "pattern {} over {:?}", pattern, channels);
    });
}
