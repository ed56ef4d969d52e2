//! `state get|set|delete|list|watch|peers`: a replica of the map for the
//! command's time, which takes the map from a live peer before it answers
//! and says goodbye when it is done.

use std::time::Duration;

use aether_core::state::{Change, HeldBy, StateErrorKind, StateMap};
use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::{
    Failure,
    cli::{Connection, HeldArgs, StateCommand},
    connect::connect,
    show,
};

/// A value for people: pretty JSON, or text.
fn value_text(bytes: &[u8]) -> String {
    show::payload_text(bytes)
}

/// A value for JSON output: itself when JSON, else text.
fn value_json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()))
}

fn change_json(change: &Change) -> Value {
    json!({
        "key": change.key,
        "value": change.new.as_deref().map(value_json),
        "old": change.old.as_deref().map(value_json),
        "deleted": change.new.is_none(),
        "writer": change.writer,
        "stamp": change.stamp.to_string(),
    })
}

fn change_text(change: &Change) -> String {
    let what = match &change.new {
        Some(value) => format!("= {}", value_text(value)),
        None => "deleted".into(),
    };
    format!(
        "[{}] {} {}  (by {})",
        show::clock(),
        show::safe(&change.key),
        what,
        show::safe(&change.writer)
    )
}

/// Waits as `held` says for the write to be held elsewhere: what to add
/// to the line that reports it.
async fn wait_held(map: &StateMap, held: HeldArgs) -> Result<String, Failure> {
    if held.no_wait {
        return Ok(", held here only".to_string());
    }
    // A keeper when the map has one: another one-shot command that holds
    // the write for an instant, then exits, is no one to trust with it.
    let keeper_known = map.peer_roles().iter().any(|(_, keeper)| *keeper);
    let want = match held.keepers {
        Some(n) => HeldBy::keepers(usize::from(n)),
        None if keeper_known => HeldBy::keepers(1),
        None => HeldBy::ONE,
    };
    let by = map.flush_to(want, held.wait).await.map_err(|e| {
        if e.kind() == StateErrorKind::NotHeld {
            Failure::runtime(format!(
                "{e} (--wait DURATION waits longer; --no-wait returns without waiting, and \
                 the write is lost when this command exits with no other replica running)"
            ))
        } else {
            Failure::runtime(e.to_string())
        }
    })?;
    let names: Vec<String> = by.by.iter().map(|n| show::safe(n)).collect();
    Ok(format!(", held by {}", names.join(", ")))
}

/// The least time a command waits for the map's other replicas to give it
/// the map (`[aether.state] ready_timeout` when longer).
const COMMAND_READY_TIMEOUT: Duration = Duration::from_secs(6);

pub async fn run(connection: &Connection, command: StateCommand) -> Result<(), Failure> {
    let name = match &command {
        StateCommand::Get { map, .. }
        | StateCommand::Set { map, .. }
        | StateCommand::Delete { map, .. }
        | StateCommand::List { map, .. }
        | StateCommand::Watch { map, .. }
        | StateCommand::Peers { map } => map.clone(),
    };
    let aether = connect(connection).await?;
    // A command has one chance to take the map from the replicas that hold
    // it: it waits for a slow one (a loaded Raspberry Pi, a keeper busy
    // writing) longer than a long-running program's default. Alone on the
    // bus it does not wait at all (no one is there to answer).
    let mut config = aether.config().state.clone();
    config.ready_timeout = config.ready_timeout.max(COMMAND_READY_TIMEOUT);
    // A command that exits when done acknowledges no other writer's hold,
    // which would be lost with it; `watch` stays, as a program's replica.
    let stays = matches!(command, StateCommand::Watch { .. });
    let map = StateMap::builder(name.as_str())
        .node(format!("{}-{}", connection.name, std::process::id()))
        .acknowledges(stays)
        .config(config)
        .open(&aether)
        .await
        .map_err(|e| Failure::usage(format!("map {name:?}: {e}")))?;
    let heartbeat = aether.config().state.heartbeat_interval;
    let urls = aether.config().nats.redacted_urls().join(", ");
    let result = act(&map, command, heartbeat, &urls).await;
    map.close().await;
    result
}

/// What this replica refused from the others for their stamps, said: a
/// clock off here or there (none refused: `None`).
fn clock_note(map: &StateMap) -> Option<String> {
    use aether_core::state::Refusal;
    let stats = map.stats();
    let (future, old) = (
        stats.refused(Refusal::Future),
        stats.refused(Refusal::TooOld),
    );
    (future + old > 0).then(|| {
        format!(
            "{future} entries from other replicas were refused as stamped more than max_drift \
             ahead of this machine's clock (future), {old} as older than the tombstone horizon \
             (too_old); this machine's clock or theirs is off: compare `date` on each"
        )
    })
}

async fn act(
    map: &StateMap,
    command: StateCommand,
    heartbeat: Duration,
    urls: &str,
) -> Result<(), Failure> {
    // Said when the map came back with nothing and no peer was heard: an
    // empty map with no peer (a peer's catch-up answer brings its keys).
    let alone = || {
        (map.peers().is_empty() && map.is_empty()).then(|| crate::connect::alone_note(map, urls))
    };
    let failed = |e: aether_core::state::StateError| {
        use aether_core::state::StateErrorKind::*;
        match e.kind() {
            InvalidKey | TooLarge | NotOwner | InvalidName => Failure::usage(e.to_string()),
            _ => Failure::runtime(e.to_string()),
        }
    };
    match command {
        StateCommand::Get { key, .. } => match map.get(&key) {
            Some(value) => {
                println!("{}", value_text(&value));
                // A later write of the key may be among those refused.
                if let Some(note) = clock_note(map) {
                    eprintln!("a later write may be missing: {note}");
                }
                Ok(())
            }
            None => Err(Failure::runtime(match (clock_note(map), alone()) {
                (Some(note), _) => format!(
                    "{key:?} is not set in map {:?} as this replica sees it: {note}",
                    map.name()
                ),
                (None, Some(note)) => {
                    format!("{key:?} is not set in map {:?}; {note}", map.name())
                }
                (None, None) => format!("{key:?} is not set in map {:?}", map.name()),
            })),
        },
        StateCommand::Set {
            key, value, held, ..
        } => {
            let stamp = map
                .set(&key, show::payload_of(&value))
                .await
                .map_err(failed)?;
            let by = wait_held(map, held).await?;
            eprintln!("set {} (stamp {stamp}){by}", show::safe(&key));
            Ok(())
        }
        StateCommand::Delete { key, held, .. } => {
            let stamp = map.delete(&key).await.map_err(failed)?;
            let by = wait_held(map, held).await?;
            eprintln!("deleted {} (stamp {stamp}){by}", show::safe(&key));
            Ok(())
        }
        StateCommand::List { json, .. } => {
            let entries = map.entries();
            if json {
                let object: serde_json::Map<String, Value> = entries
                    .iter()
                    .map(|(k, v)| (k.clone(), value_json(v)))
                    .collect();
                println!("{}", show::json_line(&Value::Object(object)));
            } else {
                let width = entries
                    .iter()
                    .map(|(k, _)| k.len())
                    .max()
                    .unwrap_or(0)
                    .min(40);
                for (key, value) in &entries {
                    // One line each: JSON compact, text with its line
                    // breaks shown as spaces.
                    let value = match serde_json::from_slice::<Value>(value) {
                        Ok(json) => show::json_line(&json),
                        Err(_) => value_text(value).replace('\n', " "),
                    };
                    println!("{:<width$}  {value}", show::safe(key));
                }
                eprintln!("{} keys in map {}", entries.len(), map.name());
            }
            if let Some(note) = clock_note(map) {
                eprintln!("not every entry is listed: {note}");
            } else if entries.is_empty()
                && let Some(note) = alone()
            {
                eprintln!("{note}");
            }
            Ok(())
        }
        StateCommand::Watch {
            pattern,
            json,
            count,
            ..
        } => {
            let mut watch = map.watch(&pattern);
            eprintln!(
                "watching {} in map {} (Ctrl-C stops)",
                show::safe(&pattern),
                map.name()
            );
            let mut seen = 0;
            while count.is_none_or(|n| seen < n) {
                let Some(change) = watch.next().await else {
                    return Err(Failure::runtime("the map closed"));
                };
                seen += 1;
                if json {
                    println!("{}", show::json_line(&change_json(&change)));
                } else {
                    println!("{}", change_text(&change));
                }
            }
            Ok(())
        }
        StateCommand::Peers { .. } => {
            // The catch-up brought the members the answering peer knows:
            // wait a heartbeat for hellos and pings, then list.
            tokio::time::sleep(
                heartbeat.max(Duration::from_millis(200)) + Duration::from_millis(200),
            )
            .await;
            let peers = map.peers();
            for peer in &peers {
                println!("{}", show::safe(peer));
            }
            eprintln!(
                "{} live replicas of map {} besides this one",
                peers.len(),
                map.name()
            );
            Ok(())
        }
    }
}
