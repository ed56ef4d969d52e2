//! The keeper's unit tests.

use super::*;
use crate::{Wave, state::HeldBy};

fn config(dir: &std::path::Path) -> StateConfig {
    let mut config = StateConfig {
        dir: Some(dir.into()),
        heartbeat_interval: Duration::from_millis(50),
        presence_timeout: Duration::from_millis(300),
        anti_entropy_interval: Duration::from_millis(100),
        ..Default::default()
    };
    config.keeper.maps = vec!["*".into()];
    config.keeper.max_maps = 16;
    config.keeper.max_maps_per_writer = 4;
    config
}

/// A write of `key` at a fixed stamp: `value`, or a delete.
fn entry(value: Option<&str>) -> (SmolStr, super::super::Entry) {
    let entry = super::super::Entry {
        stamp: crate::state::Stamp {
            physical_ns: crate::state::hlc::wall_ns(),
            logical: 0,
            node: 7,
        },
        value: value.map(|v| bytes::Bytes::copy_from_slice(v.as_bytes())),
        writer: "flooder".into(),
    };
    (SmolStr::new("key"), entry)
}

/// Holds and knocks of nothing, or of deletes alone, open no map, and
/// a writer's hold is answered: a writer sending them every second
/// takes no slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holds_without_a_value_open_no_map() {
    let dir = tempfile::tempdir().unwrap();
    let aether = Aether::default();
    let keeper = Keeper::start_with(&aether, "keeper", config(dir.path()))
        .await
        .unwrap();
    let writer = Vibrator::create("writer", &aether).await.unwrap();
    let mut told = Vibrator::create("told", &aether).await.unwrap();
    told.resonate_on("_state.*.r.0000000000000007")
        .await
        .unwrap();
    let holds = [
        (KNOCK_TOKEN, Vec::new()),
        (KNOCK_TOKEN, vec![entry(None)]),
        (3, Vec::new()),
        (5, vec![entry(None)]),
    ];
    for (n, (token, entries)) in holds.into_iter().enumerate() {
        let hold = Message::Hold {
            node: 7,
            token,
            entries,
        };
        let channel = format!("_state.empty-{n}.k");
        writer
            .emitter()
            .emit_own(Wave::new(channel.as_str(), hold.encode()))
            .await
            .unwrap();
    }
    // The two writers' holds are answered: this keeper keeps nothing
    // of those maps; the knocks are not answered.
    let mut tokens = Vec::new();
    for _ in 0..2 {
        let wave = tokio::time::timeout(Duration::from_secs(5), told.receive())
            .await
            .expect("answered")
            .unwrap();
        let limits = Limits {
            max_key_bytes: 64,
            max_value_bytes: 64,
        };
        let Ok(Message::Held {
            token,
            keeper: true,
            refused: HELD_NOTHING,
            ..
        }) = Message::decode(wave.payload_bytes().clone(), &limits)
        else {
            panic!("not a keeper's held: {wave:?}");
        };
        tokens.push(token);
    }
    tokens.sort_unstable();
    assert_eq!(tokens, [3, 5]);
    // A hold of a value is kept.
    let hold = Message::Hold {
        node: 7,
        token: 7,
        entries: vec![entry(Some("on"))],
    };
    writer
        .emitter()
        .emit_own(Wave::new("_state.valued.k", hold.encode()))
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), async {
        while keeper.maps() != ["valued"] {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the valued map is kept");
    assert_eq!(keeper.stats().maps, 1);
    keeper.close().await;
}

/// Hellos for made-up maps open nothing; holds for made-up maps by one
/// writer take at most its share, and are forgotten once their keys
/// are deleted; a real writer's map is kept throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_made_up_maps_leaves_room_for_real_ones() {
    let dir = tempfile::tempdir().unwrap();
    let aether = Aether::default();
    let keeper = Keeper::start_with(&aether, "keeper", config(dir.path()))
        .await
        .unwrap();
    let flooder = Vibrator::create("flooder", &aether).await.unwrap();
    for n in 0..200 {
        let hello = Message::Hello {
            node: 7,
            leaving: false,
            owned: 0,
        };
        let hold = Message::Hold {
            node: 7,
            token: 1,
            entries: vec![entry(Some("x"))],
        };
        for (kind, message) in [("p", hello), ("k", hold)] {
            let channel = format!("_state.junk-{n}.{kind}");
            flooder
                .emitter()
                .emit_own(Wave::new(channel.as_str(), message.encode()))
                .await
                .unwrap();
        }
    }
    let real = StateMap::builder("real")
        .node("script")
        .config(StateConfig {
            dir: None,
            keeper: Default::default(),
            ..config(dir.path())
        })
        .open(&aether)
        .await
        .unwrap();
    real.set("hall.light", "on").await.unwrap();
    let held = real
        .flush_to(HeldBy::keepers(1), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(held.keepers, 1);
    // The keeper's replica acknowledges as it opens; the map is listed
    // once its open returns, as are the flooder's four.
    tokio::time::timeout(Duration::from_secs(5), async {
        while keeper.maps().len() < 5 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the flooder's share and the real map opened");
    let stats = keeper.stats();
    assert_eq!(
        stats.maps, 5,
        "the flooder's share and the real map: {stats:?}"
    );
    assert!(keeper.maps().contains(&"real".to_string()));
    assert_eq!(stats.refused_writer_maps, 196, "{stats:?}");
    assert_eq!(stats.refused_maps, 0, "{stats:?}");
    // The flooder deletes what it wrote: maps of deletes alone are
    // forgotten, their directories gone.
    for n in 0..200 {
        let hold = Message::Hold {
            node: 7,
            token: 3,
            entries: vec![entry(None)],
        };
        let channel = format!("_state.junk-{n}.k");
        flooder
            .emitter()
            .emit_own(Wave::new(channel.as_str(), hold.encode()))
            .await
            .unwrap();
    }
    // (A map leaves the keeper's list as it starts closing; it is
    // counted forgotten once its directory is gone.)
    let left = || -> Vec<String> {
        kept_in(dir.path(), &config(dir.path()))
            .into_iter()
            .collect()
    };
    tokio::time::timeout(EMPTY_FOR + Duration::from_secs(5), async {
        while keeper.maps() != ["real"] || keeper.stats().forgotten_maps < 4 || left() != ["real"] {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the empty maps are forgotten");
    assert_eq!(keeper.stats().forgotten_maps, 4);
    assert_eq!(left(), ["real"]);
    real.close().await;
    keeper.close().await;
}

/// The maps a keeper keeps hold at most `max_bytes` together: a write
/// past it is refused as full, the writer told why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keepers_maps_share_one_budget() {
    let dir = tempfile::tempdir().unwrap();
    let aether = Aether::default();
    let mut config = config(dir.path());
    config.max_value_bytes = 1000;
    // Each entry costs its key, its value and ENTRY_BYTES: three of 900
    // bytes fit, not four.
    config.keeper.max_bytes = 4000;
    let keeper = Keeper::start_with(&aether, "keeper", config.clone())
        .await
        .unwrap();
    let mut writers = Vec::new();
    for name in ["a", "b"] {
        let map = StateMap::builder(name)
            .node(format!("writer-{name}"))
            .config(StateConfig {
                dir: None,
                keeper: Default::default(),
                ..config.clone()
            })
            .open(&aether)
            .await
            .unwrap();
        map.set("one", vec![b'x'; 900]).await.unwrap();
        map.flush_to(HeldBy::keepers(1), Duration::from_secs(5))
            .await
            .unwrap();
        writers.push(map);
    }
    writers[0].set("two", vec![b'y'; 900]).await.unwrap();
    writers[0]
        .flush_to(HeldBy::keepers(1), Duration::from_secs(5))
        .await
        .unwrap();
    writers[1].set("two", vec![b'z'; 900]).await.unwrap();
    let full = writers[1]
        .flush_to(HeldBy::keepers(1), Duration::from_secs(5))
        .await
        .unwrap_err();
    assert_eq!(full.kind(), StateErrorKind::Full, "{full}");
    let stats = keeper.stats();
    assert_eq!(
        stats.bytes,
        3 * (3 + 900 + crate::config::ENTRY_BYTES),
        "{stats:?}"
    );
    // Its live change and its hold refused: one write, counted once.
    assert_eq!(stats.full_writes, 1, "{stats:?}");
    // A delete makes room.
    writers[0].delete("two").await.unwrap();
    writers[0]
        .flush_to(HeldBy::keepers(1), Duration::from_secs(5))
        .await
        .unwrap();
    writers[1].set("two", vec![b'z'; 900]).await.unwrap();
    writers[1]
        .flush_to(HeldBy::keepers(1), Duration::from_secs(5))
        .await
        .unwrap();
    keeper.close().await;
    // Its maps closed, their counts stay in the keeper's.
    assert_eq!(keeper.stats().full_writes, 1);
    // Opened again, its maps count what they hold at once.
    let again = Keeper::start_with(&aether, "keeper", config).await.unwrap();
    assert_eq!(again.maps(), ["a", "b"]);
    // b's second key in, a's a tombstone.
    assert_eq!(
        again.stats().bytes,
        stats.bytes + 3 + crate::config::ENTRY_BYTES
    );
    again.close().await;
}
