//! The kanban board, the notebook and the page of any map in headless
//! Chromium, served by the gateway: two pages of each board are replicas of
//! their map through the bridge, beside a Rust replica. Concurrent edits are made in both pages in one
//! turn (neither has seen the other's), and every replica must end as the
//! higher stamp says. Needs Debian's `chromium`; without it the tests say
//! so and pass.

mod support;

use std::time::Duration;

use aether_core::{Aether, state::StateMap};
use aether_gateway::{BridgeConfig, GatewayConfig};
use serde_json::{Value, json};
use support::{
    cdp::{Browser, Page},
    config, start,
};

const TOKEN: &str = "a-token-of-the-page-tests-1234";

async fn gateway(aether: &Aether) -> aether_gateway::Gateway {
    start(
        aether,
        GatewayConfig {
            bridge: BridgeConfig {
                token: Some(TOKEN.into()),
                maps: vec!["kanban".into(), "notebook".into(), "home".into()],
                ..Default::default()
            },
            ..config()
        },
    )
    .await
}

/// Two pages of `page`, live.
async fn two<'b>(
    browser: &'b Browser,
    gateway: &aether_gateway::Gateway,
    page: &str,
) -> (Page<'b>, Page<'b>) {
    let url = format!("http://{}/{page}#token={TOKEN}", gateway.addr());
    let a = browser.open(&url).await;
    let b = browser.open(&url).await;
    for (name, p) in [("a", &a), ("b", &b)] {
        p.wait_for(
            &format!("page {name} of {page} is live"),
            &format!("globalThis.{page}?.client.status === 'live'"),
            20,
        )
        .await;
    }
    (a, b)
}

/// `x` in page `a` and `y` in page `b` at once (neither waits for the
/// other's answer): their values.
async fn both(a: &Page<'_>, x: String, b: &Page<'_>, y: String) -> (Value, Value) {
    tokio::join!(a.eval(&x), b.eval(&y))
}

/// Waits (up to 5 s) until `condition` holds in both pages; `what` is said
/// of the page that fails it.
async fn both_show(pages: [&Page<'_>; 2], what: &str, condition: &str) {
    for (name, page) in ["a", "b"].into_iter().zip(pages) {
        page.wait_for(&format!("page {name}: {what}"), condition, 5)
            .await;
    }
}

/// A string as a JavaScript literal.
fn js(text: &str) -> String {
    serde_json::to_string(text).unwrap()
}

/// Waits (up to 15 s) until the service's replica holds what `check` wants.
async fn settle(what: &str, mut check: impl FnMut() -> bool) {
    support::eventually(what, Duration::from_secs(15), || {
        let ok = check();
        async move { ok.then_some(()) }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kanban_pages_move_cycle_and_delete_cards_and_settle_races_by_stamps() {
    let Some(browser) = Browser::launch().await else {
        return;
    };
    let aether = Aether::default();
    let gateway = gateway(&aether).await;
    let service = StateMap::builder("kanban")
        .node("service")
        .open(&aether)
        .await
        .unwrap();
    let (a, b) = two(&browser, &gateway, "kanban").await;

    let todo = a.eval("kanban.addColumn('todo')").await;
    let done = a.eval("kanban.addColumn('done')").await;
    let (todo, done) = (todo.as_str().unwrap(), done.as_str().unwrap());
    let card = a
        .eval(&format!("kanban.addCard({}, 'milk')", js(todo)))
        .await;
    let card = card.as_str().unwrap();
    b.wait_for(
        "page b draws the card in its column",
        &format!(
            "document.querySelector('[data-key=\"column/{todo}\"] [data-key=\"card/{card}\"] input')?.value === 'milk'"
        ),
        5,
    )
    .await;

    // Someone typing in a field of page a does not stop it drawing what
    // page b does, nor lose the field: a card added in b shows in a while
    // a's "New card" field keeps the focus and what is typed in it, and a
    // card a adds with Enter shows at once.
    a.eval(&format!(
        "(() => {{ const f = document.querySelector('[data-focus=\"new-card/{todo}\"]'); \
         f.focus(); f.value = 'half typed'; return true; }})()"
    ))
    .await;
    let from_b = b
        .eval(&format!("kanban.addCard({}, 'from b')", js(todo)))
        .await;
    let from_b = from_b.as_str().unwrap();
    a.wait_for(
        "page a draws b's card under a focused field",
        &format!(
            "!!document.querySelector('[data-key=\"card/{from_b}\"]') \
             && document.activeElement?.dataset.focus === 'new-card/{todo}' \
             && document.activeElement.value === 'half typed'"
        ),
        5,
    )
    .await;
    a.eval(
        "(() => { const f = document.activeElement; f.value = 'solo'; \
         f.form.requestSubmit(); return true; })()",
    )
    .await;
    a.wait_for(
        "page a draws the card it added with Enter",
        &format!(
            "[...document.querySelectorAll('[data-key=\"column/{todo}\"] .card input')] \
             .some((i) => i.value === 'solo') \
             && document.activeElement?.dataset.focus === 'new-card/{todo}'"
        ),
        5,
    )
    .await;

    // Moved in b, cycled in a: both show it in "done", priority "med".
    b.eval(&format!("kanban.move({}, {})", js(card), js(done)))
        .await;
    a.wait_for(
        "page a draws the card moved",
        &format!(
            "!!document.querySelector('[data-key=\"column/{done}\"] [data-key=\"card/{card}\"]')"
        ),
        5,
    )
    .await;
    a.eval(&format!("kanban.cycle({})", js(card))).await;
    b.wait_for(
        "page b draws the new priority",
        &format!(
            "document.querySelector('[data-key=\"card/{card}\"]')?.dataset.priority === 'med'"
        ),
        5,
    )
    .await;
    settle("the service has the card in done", || {
        service
            .get_json::<Value>(&format!("card/{card}"))
            .ok()
            .flatten()
            .is_some_and(|c| c["column"] == json!(done) && c["priority"] == json!("med"))
    })
    .await;

    // A move in one page and a delete in the other, in one turn: every
    // replica ends as the higher stamp left it, whichever that is.
    for round in 0..4 {
        let card = a
            .eval(&format!("kanban.addCard({}, 'race {round}')", js(todo)))
            .await;
        let card = card.as_str().unwrap().to_string();
        let key = format!("card/{card}");
        b.wait_for(
            "b has the new card",
            &format!("kanban.client.has({})", js(&key)),
            5,
        )
        .await;
        // Which page moves and which deletes alternates.
        let (mover, deleter) = if round % 2 == 0 { (&a, &b) } else { (&b, &a) };
        let (moved, deleted) = both(
            mover,
            format!(
                "(kanban.move({}, {}), kanban.client.stampOf({}))",
                js(&card),
                js(done),
                js(&key)
            ),
            deleter,
            format!(
                "(kanban.remove({}), kanban.client.stampOf({}))",
                js(&card),
                js(&key)
            ),
        )
        .await;
        let (moved, deleted) = (moved.as_str().unwrap(), deleted.as_str().unwrap());
        let survives = moved > deleted;
        let expect = if survives {
            format!("kanban.client.get({})?.column === {}", js(&key), js(done))
        } else {
            format!("!kanban.client.has({})", js(&key))
        };
        both_show(
            [&a, &b],
            &format!("round {round}: settles on the higher stamp (survives: {survives})"),
            &expect,
        )
        .await;
        settle("the service settles on the higher stamp", || {
            service.get(&key).is_some() == survives
        })
        .await;
    }

    // A column deleted in one page while the other moves a card into it:
    // the card is kept, under "No column", in both.
    let late = a
        .eval(&format!("kanban.addCard({}, 'eggs')", js(todo)))
        .await;
    let late = late.as_str().unwrap();
    b.wait_for(
        "b has eggs",
        &format!("kanban.client.has('card/{late}')"),
        5,
    )
    .await;
    both(
        &a,
        format!("kanban.removeColumn({})", js(done)),
        &b,
        format!("kanban.move({}, {})", js(late), js(done)),
    )
    .await;
    both_show(
        [&a, &b],
        "keeps the card under No column",
        &format!("!!document.querySelector('[data-orphans] [data-key=\"card/{late}\"]')"),
    )
    .await;
    both_show(
        [&a, &b],
        "has no column done",
        &format!("!kanban.client.has('column/{done}')"),
    )
    .await;
    // The cards that were in "done" when it was deleted went with it.
    assert_eq!(
        a.eval(&format!("kanban.client.has('card/{card}')")).await,
        json!(false)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notebook_pages_edit_lines_apart_settle_one_line_by_stamps_and_escape_the_preview() {
    let Some(browser) = Browser::launch().await else {
        return;
    };
    let aether = Aether::default();
    let gateway = gateway(&aether).await;
    let service = StateMap::builder("notebook")
        .node("service")
        .open(&aether)
        .await
        .unwrap();
    let (a, b) = two(&browser, &gateway, "notebook").await;

    let title = a.eval("notebook.insertAfter(null, '# Shopping')").await;
    let title = title.as_str().unwrap();
    let first = a
        .eval(&format!("notebook.insertAfter({}, '- milk')", js(title)))
        .await;
    let first = first.as_str().unwrap();
    b.wait_for(
        "page b renders the heading and the list",
        "document.querySelector('#preview h1')?.textContent === 'Shopping' \
         && document.querySelector('#preview li')?.textContent === 'milk'",
        5,
    )
    .await;

    // Two lines edited at once, one in each page: both edits stay.
    both(
        &a,
        format!("notebook.edit({}, '# Groceries')", js(title)),
        &b,
        format!("notebook.edit({}, '- oat milk')", js(first)),
    )
    .await;
    both_show(
        [&a, &b],
        "has both edits",
        "notebook.text() === '# Groceries\\n- oat milk'",
    )
    .await;

    // One line edited in both at once: every replica ends with the
    // higher stamp's text.
    let key = format!("line/{first}");
    let (x, y) = both(
        &a,
        format!(
            "(notebook.edit({}, '- from a'), notebook.client.stampOf({}))",
            js(first),
            js(&key)
        ),
        &b,
        format!(
            "(notebook.edit({}, '- from b'), notebook.client.stampOf({}))",
            js(first),
            js(&key)
        ),
    )
    .await;
    let winner = if x.as_str().unwrap() > y.as_str().unwrap() {
        "- from a"
    } else {
        "- from b"
    };
    both_show(
        [&a, &b],
        &format!("settles on {winner}"),
        &format!("notebook.client.get({})?.text === {}", js(&key), js(winner)),
    )
    .await;
    settle("the service settles on the same line", || {
        service
            .get_json::<Value>(&key)
            .ok()
            .flatten()
            .is_some_and(|l| l["text"] == json!(winner))
    })
    .await;

    // Lines added at one place in both pages at once: both kept, in one
    // order everywhere.
    both(
        &a,
        format!("notebook.insertAfter({}, 'from a')", js(title)),
        &b,
        format!("notebook.insertAfter({}, 'from b')", js(title)),
    )
    .await;
    a.wait_for("a has four lines", "notebook.lines().length === 4", 5)
        .await;
    b.wait_for("b has four lines", "notebook.lines().length === 4", 5)
        .await;
    assert_eq!(
        a.eval("notebook.text()").await,
        b.eval("notebook.text()").await
    );

    // A collaborator's markup is shown as text, never run.
    b.eval(&format!(
        "notebook.insertAfter({}, {})",
        js(first),
        js("<img src=x onerror=\"window.owned = true\"> **bold** `code`")
    ))
    .await;
    a.wait_for(
        "page a shows the line escaped",
        "document.querySelector('#preview strong')?.textContent === 'bold' \
         && document.querySelector('#preview code')?.textContent === 'code' \
         && document.querySelector('#preview').textContent.includes('<img src=x')",
        5,
    )
    .await;
    assert_eq!(
        a.eval("document.querySelector('#preview img') === null && window.owned !== true")
            .await,
        json!(true)
    );
}

/// `/map` shows any bridged map, a row per key with its value as JSON,
/// live: a key a service writes, changes and deletes; markup in a value is
/// shown as text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_map_page_shows_each_key_of_a_map_live() {
    let Some(browser) = Browser::launch().await else {
        return;
    };
    let aether = Aether::default();
    let gateway = gateway(&aether).await;
    let service = StateMap::builder("home")
        .node("service")
        .open(&aether)
        .await
        .unwrap();
    service.set_json("living.temp", &json!(24.5)).await.unwrap();
    let url = format!("http://{}/map#token={TOKEN}&map=home", gateway.addr());
    let page = browser.open(&url).await;
    let cell = |key: &str| {
        format!("document.querySelector('tr[data-key=\"{key}\"] td.value')?.textContent")
    };
    page.wait_for(
        "the page shows the key",
        &format!("{} === '24.5'", cell("living.temp")),
        10,
    )
    .await;
    service
        .set_json("door", &json!({"open": "<b>yes</b>"}))
        .await
        .unwrap();
    service.set_json("living.temp", &json!(25)).await.unwrap();
    page.wait_for(
        "the page shows a change and a new key, markup as text",
        &format!(
            "{} === '25' && {} === '{{\"open\":\"<b>yes</b>\"}}' \
             && !document.querySelector('#entries b')",
            cell("living.temp"),
            cell("door")
        ),
        10,
    )
    .await;
    service.delete("door").await.unwrap();
    page.wait_for(
        "the page drops a deleted key",
        "document.getElementById('entries').dataset.count === '1'",
        10,
    )
    .await;
    assert_eq!(
        page.eval("document.getElementById('map-name').textContent")
            .await,
        json!("home")
    );
}
