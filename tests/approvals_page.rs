//! The approvals page in a real headless browser (Debian's `chromium` and
//! `chromium-driver`, driven over WebDriver): sign in with a token, see an
//! elevation filed after the page loaded appear live with its preview,
//! approve it with the keyboard alone, revoke the grant, read a hostile
//! justification as text, and a viewer without the rights gets no approve
//! button and, calling the API anyway, the refusal. Skips, saying so, when
//! chromium or chromedriver is missing (`CHROMIUM` and `CHROMEDRIVER`
//! override the paths). With `RAMPART_SCREENSHOT=path` it saves a
//! screenshot of the page there.

mod common;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{token, TestServer};
use fantoccini::key::Key;
use fantoccini::{Client, ClientBuilder, Locator};
use rampart::elevation::{Elevation, ElevationState};
use rampart::proto::{self as pb, RequestElevationRequest};
use serde_json::{json, Value};

const RG: &str = "/subscriptions/11111111-1111-1111-1111-111111111111/resourceGroups/rg-app";
const RESTART: &str = "Microsoft.Compute/virtualMachines/restart/action";
const DELETE: &str = "Microsoft.Compute/virtualMachines/delete";
const READ_SECRET: &str = "Microsoft.KeyVault/vaults/secrets/readMetadata/action";
const HOSTILE: &str =
    "<img src=x onerror=\"document.title='pwned'\"><script>document.title='pwned'</script> & \"quoted\"";

fn snapshot() -> String {
    format!(
        "{}resources:\n  - {{ scope: {RG}/providers/Microsoft.Compute/virtualMachines/vm1 }}\n  - {{ scope: {RG}/providers/Microsoft.Compute/virtualMachines/vm2 }}\n  - {{ scope: /subscriptions/11111111-1111-1111-1111-111111111111/resourceGroups/rg-agents/providers/Microsoft.Compute/virtualMachines/tools }}\n",
        include_str!("fixtures/elevation.yaml")
    )
}

fn tool(env: &str, default: &str) -> Option<PathBuf> {
    let path = std::env::var_os(env).map_or_else(|| PathBuf::from(default), PathBuf::from);
    path.is_file().then_some(path)
}

/// A chromedriver process, killed when dropped.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// chromedriver on a free port, and a browser session on it.
struct Browser {
    client: Client,
    _driver: Driver,
    _profile: tempfile::TempDir,
}

impl Browser {
    async fn start() -> Option<Browser> {
        let (Some(chromium), Some(chromedriver)) = (
            tool("CHROMIUM", "/usr/bin/chromium"),
            tool("CHROMEDRIVER", "/usr/bin/chromedriver"),
        ) else {
            eprintln!("SKIPPED: chromium or chromedriver not found (apt-get install chromium chromium-driver, or set CHROMIUM and CHROMEDRIVER)");
            return None;
        };
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let driver = Driver(
            Command::new(chromedriver)
                .arg(format!("--port={port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start chromedriver"),
        );
        let profile = tempfile::tempdir().expect("a browser profile");
        let args = vec![
            "--headless".to_owned(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--window-size=1280,1100".into(),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        let mut capabilities = serde_json::Map::new();
        capabilities.insert("browserName".into(), json!("chrome"));
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({"binary": chromium, "args": args}),
        );
        let mut builder =
            ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new());
        builder.capabilities(capabilities);
        let url = format!("http://127.0.0.1:{port}");
        // chromedriver takes a moment to listen.
        let mut last = None;
        for _ in 0..300 {
            match builder.connect(&url).await {
                Ok(client) => {
                    return Some(Browser {
                        client,
                        _driver: driver,
                        _profile: profile,
                    })
                }
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("cannot start a browser session: {last:?}");
    }

    /// Runs `script` (a function body; `arguments` as given) until it
    /// returns something truthy, and returns that. Bounded, so a broken
    /// page fails the test instead of hanging it.
    async fn until(&self, what: &str, script: &str, args: Vec<Value>) -> Value {
        for _ in 0..600 {
            let v = self
                .client
                .execute(script, args.clone())
                .await
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            let truthy =
                !matches!(&v, Value::Null | Value::Bool(false)) && v != json!(0) && v != json!("");
            if truthy {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let page = self.text("document.body.innerText").await;
        panic!("timed out waiting for {what}; the page reads:\n{page}");
    }

    async fn text(&self, expression: &str) -> String {
        let v = self
            .client
            .execute(&format!("return String({expression});"), vec![])
            .await
            .expect("script runs");
        v.as_str().unwrap_or_default().to_owned()
    }

    /// Presses a key in whatever has focus.
    async fn press(&self, key: Key) {
        self.type_text(&char::from(key).to_string()).await;
    }

    /// Types into whatever has focus.
    async fn type_text(&self, text: &str) {
        self.client
            .active_element()
            .await
            .expect("something has focus")
            .send_keys(text)
            .await
            .expect("typing");
    }

    /// Describes the focused element: tag, name or class, aria-label.
    async fn focused(&self) -> String {
        self.text("(() => { const e = document.activeElement; return e.tagName + ' ' + (e.name || e.className || e.id) + ' ' + (e.getAttribute('aria-label') || ''); })()").await
    }

    /// Signs in through the form, with the keyboard.
    async fn sign_in(&self, page: &str, principal_token: &str, principal: &str) {
        self.client.goto(page).await.expect("open the page");
        self.client
            .wait()
            .for_element(Locator::Css("#token"))
            .await
            .expect("the sign-in form");
        self.until(
            "the sign-in form to show",
            "return !document.getElementById('sign-in').hidden && document.activeElement.id === 'token';",
            vec![],
        )
        .await;
        self.type_text(principal_token).await;
        self.press(Key::Enter).await;
        self.until(
            "signed in and live",
            "return document.getElementById('who').textContent.includes(arguments[0]) && document.getElementById('connection').textContent === 'live';",
            vec![json!(principal)],
        )
        .await;
    }

    /// Calls the page's API from inside the page with this tab's token,
    /// as a script on the page could: `[status, body]`.
    async fn fetch(&self, path: &str, body: Value) -> (u64, Value) {
        let v = self
            .client
            .execute_async(
                "const [path, body, done] = arguments;
                 fetch(path, {method: 'POST', headers: {'X-Rampart-UI': '1', 'Content-Type': 'application/json',
                   'Authorization': 'Bearer ' + sessionStorage.getItem('rampart.token')}, body: JSON.stringify(body)})
                   .then(async r => done([r.status, await r.json()]), e => done([0, String(e)]));",
                vec![json!(path), body],
            )
            .await
            .expect("fetch from the page");
        (v[0].as_u64().unwrap_or(0), v[1].clone())
    }
}

fn ask(principal: &str, action: &str, scope: &str, justification: &str) -> RequestElevationRequest {
    RequestElevationRequest {
        principal_id: principal.into(),
        action: action.into(),
        scope: scope.into(),
        justification: justification.into(),
        ..Default::default()
    }
}

fn spawn_request(
    s: &TestServer,
    req: RequestElevationRequest,
) -> tokio::task::JoinHandle<Result<pb::Elevation, tonic::Status>> {
    let mut client = s.authorizer.clone();
    tokio::spawn(async move { client.request_elevation(req).await.map(|r| r.into_inner()) })
}

async fn pending(s: &TestServer, principal: &str, action: &str) -> Elevation {
    for _ in 0..1000 {
        if let Some(e) = s.broker.list().into_iter().find(|e| {
            e.state == ElevationState::Pending && e.principal_id == principal && e.action == action
        }) {
            return e;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no pending elevation for {principal} {action}");
}

/// The text of the pending card of elevation `id`, or "" while absent.
const CARD_TEXT: &str = "const li = document.querySelector('#pending li[data-id=\"' + arguments[0] + '\"]'); return li ? li.innerText : '';";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approver_works_the_page_with_the_keyboard_and_a_stranger_cannot() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let s = TestServer::start(&snapshot()).await;
    let admin = s.running.as_ref().expect("running").admin_addr;
    let page = format!("http://{admin}/ui/approvals");

    // Sign in as oncall; nothing is pending yet.
    browser.sign_in(&page, &token("oncall"), "oncall").await;
    assert_eq!(
        browser
            .text("document.getElementById('pending-count').textContent")
            .await,
        "0"
    );
    assert_eq!(
        browser
            .text("sessionStorage.getItem('rampart.token')")
            .await,
        token("oncall"),
        "the token lives in this tab's session storage"
    );
    assert_eq!(
        browser.text("document.cookie").await,
        "",
        "and in no cookie"
    );
    assert!(!browser.text("location.href").await.contains("token"));

    // Filed after the page loaded: it appears without a reload.
    let waiting = spawn_request(
        &s,
        ask(
            "agent-r",
            RESTART,
            RG,
            "disk pressure on the app VMs; a restart clears it",
        ),
    );
    let e = pending(&s, "agent-r", RESTART).await;
    let card = browser
        .until("the elevation to appear", CARD_TEXT, vec![json!(e.id)])
        .await;
    let card = card.as_str().unwrap();
    for expected in [
        "reviewer asks for",
        RESTART,
        "agent-r",
        RG,
        "control plane",
        "15m",
        "disk pressure on the app VMs; a restart clears it",
        &format!("{RESTART} at {RG} and every scope below it"),
        "2 resources of the snapshot lie under this scope.",
        "Acts (…/action)",
        "You (oncall) hold this operation here and may approve.",
    ] {
        assert!(
            card.contains(expected),
            "the card lacks {expected:?}:\n{card}"
        );
    }
    assert!(
        !card.contains("Deletes") && !card.contains("Assigns roles"),
        "{card}"
    );
    assert_eq!(
        browser
            .text("document.getElementById('pending-count').textContent")
            .await,
        "1"
    );

    // Approve with the keyboard alone: from the section heading, Tab walks
    // duration, max uses, comment, then the Approve button.
    browser
        .client
        .execute("document.getElementById('pending-title').focus();", vec![])
        .await
        .unwrap();
    browser.press(Key::Tab).await;
    assert!(
        browser.focused().await.starts_with("INPUT duration"),
        "{}",
        browser.focused().await
    );
    browser.type_text("10m").await;
    browser.press(Key::Tab).await;
    assert!(browser.focused().await.starts_with("INPUT maxUses"));
    browser.press(Key::Backspace).await;
    browser.type_text("3").await;
    browser.press(Key::Tab).await;
    assert!(browser
        .focused()
        .await
        .starts_with("INPUT comment Approval comment"));
    browser.type_text("approved from the page").await;
    browser.press(Key::Tab).await;
    let button = browser.focused().await;
    assert!(
        button.starts_with("BUTTON approve-button")
            && button.ends_with(&format!("Approve agent reviewer: {RESTART} at {RG}")),
        "{button}"
    );
    browser.press(Key::Enter).await;

    // The agent's call returns APPROVED, with what the approver chose.
    let answer = tokio::time::timeout(Duration::from_secs(60), waiting)
        .await
        .expect("the agent's call returns")
        .unwrap()
        .expect("answered");
    assert_eq!(answer.state(), pb::ElevationState::Approved);
    assert_eq!(answer.resolved_by, "oncall");
    assert_eq!(answer.comment, "approved from the page");
    let grant = answer.grant.expect("a grant");
    assert_eq!(grant.max_uses, 3);
    let lasts = grant.expires_at.unwrap().seconds - grant.created_at.unwrap().seconds;
    assert!((599..=600).contains(&lasts), "{lasts}");
    // The card leaves; focus stays on the page; history and grants show it.
    browser
        .until(
            "the card to leave",
            "return !document.querySelector('#pending li');",
            vec![],
        )
        .await;
    let focus = browser.focused().await;
    assert!(
        focus.starts_with("H2 "),
        "focus moved to the section: {focus}"
    );
    browser
        .until(
            "the history row",
            "const r = document.querySelector('#history-rows tr'); return r && r.innerText.includes('APPROVED') && r.innerText.includes('oncall');",
            vec![],
        )
        .await;
    browser
        .until(
            "the active grant",
            "const g = document.querySelector('#grants li'); return g && g.innerText.includes('0 of 3');",
            vec![],
        )
        .await;
    assert!(browser
        .text("document.getElementById('announce').textContent")
        .await
        .contains("APPROVED by oncall"));

    // Another elevation waits: the page as the README shows it.
    let deleting = spawn_request(
        &s,
        ask(
            "agent-p",
            DELETE,
            &format!("{RG}/providers/Microsoft.Compute/virtualMachines/vm2"),
            "vm2 was replaced by vm3 last week; delete it to stop the bill",
        ),
    );
    let d = pending(&s, "agent-p", DELETE).await;
    let card = browser
        .until("the delete to appear", CARD_TEXT, vec![json!(d.id)])
        .await;
    assert!(card.as_str().unwrap().contains("Deletes"), "{card}");
    assert!(card
        .as_str()
        .unwrap()
        .contains("1 resource of the snapshot lies under this scope."));
    if let Some(path) = std::env::var_os("RAMPART_SCREENSHOT") {
        browser
            .client
            .execute(
                "document.activeElement.blur(); window.scrollTo(0, 0);",
                vec![],
            )
            .await
            .unwrap();
        browser.client.set_window_size(1280, 1300).await.unwrap();
        let png = browser.client.screenshot().await.expect("a screenshot");
        std::fs::write(&path, png).expect("write the screenshot");
        eprintln!("screenshot saved to {}", PathBuf::from(path).display());
    }

    // Readable on a phone: nothing wider than the screen.
    browser.client.set_window_size(390, 844).await.unwrap();
    browser
        .until(
            "the page to fit a phone",
            "return document.documentElement.scrollWidth <= window.innerWidth;",
            vec![],
        )
        .await;
    browser.client.set_window_size(1280, 1100).await.unwrap();

    // Revoke the grant.
    browser
        .client
        .find(Locator::Css("#grants .revoke-button"))
        .await
        .expect("a revoke button")
        .click()
        .await
        .unwrap();
    browser
        .until(
            "the grant to leave",
            "return document.getElementById('grants-count').textContent === '0';",
            vec![],
        )
        .await;
    let ended = s
        .broker
        .grants()
        .into_iter()
        .find(|g| g.id == grant.id)
        .unwrap();
    assert!(!ended.state.is_active());
    assert_eq!(ended.ended_reason.as_deref(), Some("revoked by oncall"));

    // A hostile justification is shown as text and runs nothing.
    let hostile = spawn_request(&s, ask("agent-r", READ_SECRET, RG, HOSTILE));
    let h = pending(&s, "agent-r", READ_SECRET).await;
    browser
        .until("the hostile elevation", CARD_TEXT, vec![json!(h.id)])
        .await;
    let shown = browser
        .client
        .execute(
            "const li = document.querySelector('#pending li[data-id=\"' + arguments[0] + '\"]');
             const q = li.querySelector('.justification');
             return [q.textContent, q.children.length, document.querySelectorAll('#pending img, #pending script').length, document.title];",
            vec![json!(h.id)],
        )
        .await
        .unwrap();
    assert_eq!(shown, json!([HOSTILE, 0, 0, "rampart approvals"]));

    // viewer may interact but does not hold the operation: no approve
    // button, the reason, a deny form; the API refuses anyway.
    browser
        .client
        .find(Locator::Id("sign-out"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser.sign_in(&page, &token("viewer"), "viewer").await;
    let card = browser
        .until("the elevation, for viewer", CARD_TEXT, vec![json!(d.id)])
        .await;
    let reason = format!(
        "You may not approve: viewer does not hold {DELETE} at {RG}/providers/Microsoft.Compute/virtualMachines/vm2 and cannot lend what it does not hold (rule b)"
    );
    assert!(card.as_str().unwrap().contains(&reason), "{card}");
    let forms = browser
        .client
        .execute(
            "const li = document.querySelector('#pending li[data-id=\"' + arguments[0] + '\"]');
             return [li.querySelectorAll('form.approve, .approve-button').length, li.querySelectorAll('form.deny').length];",
            vec![json!(d.id)],
        )
        .await
        .unwrap();
    assert_eq!(forms, json!([0, 1]));
    let (status, body) = browser
        .fetch(&format!("/ui/api/elevations/{}/approve", d.id), json!({}))
        .await;
    assert_eq!(status, 403);
    assert_eq!(body["code"], "PERMISSION_DENIED");
    assert!(
        body["message"].as_str().unwrap().ends_with("(rule b)"),
        "{body}"
    );

    // outsider may not interact: sees nothing, and is refused.
    browser
        .client
        .find(Locator::Id("sign-out"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser.sign_in(&page, &token("outsider"), "outsider").await;
    assert_eq!(
        browser
            .text("document.getElementById('pending-count').textContent")
            .await,
        "0"
    );
    let (status, body) = browser
        .fetch(&format!("/ui/api/elevations/{}/approve", d.id), json!({}))
        .await;
    assert_eq!(status, 403);
    assert!(
        body["message"].as_str().unwrap().ends_with("(rule a)"),
        "{body}"
    );
    // A wrong token is refused and the page asks again.
    browser
        .client
        .find(Locator::Id("sign-out"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser.type_text("not-a-token").await;
    browser.press(Key::Enter).await;
    browser
        .until(
            "the refusal",
            "return document.getElementById('sign-in-error').textContent.includes('unknown token');",
            vec![],
        )
        .await;
    assert_eq!(
        browser
            .text("sessionStorage.getItem('rampart.token')")
            .await,
        "null"
    );

    let _ = browser.client.clone().close().await;
    s.stop().await;
    for task in [deleting, hostile] {
        let _ = task.await;
    }
}

/// The freeze button: an admin freezes and unfreezes from the page with a
/// reason; an approver sees the state but no button.
#[tokio::test]
async fn an_admin_freezes_and_unfreezes_agents_from_the_page() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let s = TestServer::start(&snapshot()).await;
    let admin = s.running.as_ref().expect("running").admin_addr;
    let page = format!("http://{admin}/ui/approvals");
    browser.sign_in(&page, common::ADMIN_TOKEN, "admin").await;
    browser
        .until(
            "the freeze state and button",
            "return document.getElementById('freeze-state').textContent === 'Agents are not frozen.' && !document.getElementById('freeze-form').hidden;",
            vec![],
        )
        .await;
    let reason = browser
        .client
        .find(Locator::Id("freeze-reason"))
        .await
        .unwrap();
    reason.click().await.unwrap();
    browser.type_text("incident 46").await;
    browser.press(Key::Enter).await;
    browser
        .until(
            "frozen",
            "return document.getElementById('freeze-state').textContent.startsWith('FROZEN: every agent is denied (by admin since ') && document.getElementById('freeze-button').textContent === 'Unfreeze agents';",
            vec![],
        )
        .await;
    assert!(s.engine.is_frozen());
    assert_eq!(s.broker.freeze_state().reason, "incident 46");
    // The page's own API refuses a reasonless unfreeze.
    let (status, body) = browser
        .fetch("/ui/api/freeze", json!({"frozen": false}))
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(s.engine.is_frozen());
    reason.click().await.unwrap();
    browser.type_text("over").await;
    browser.press(Key::Enter).await;
    browser
        .until(
            "unfrozen",
            "return document.getElementById('freeze-state').textContent === 'Agents are not frozen.';",
            vec![],
        )
        .await;
    assert!(!s.engine.is_frozen());

    // An approver sees the state, not the button.
    browser
        .client
        .find(Locator::Id("sign-out"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser.type_text(&token("oncall")).await;
    browser.press(Key::Enter).await;
    browser
        .until(
            "the approver's view",
            "return document.getElementById('who').textContent.includes('oncall') && document.getElementById('freeze-state').textContent === 'Agents are not frozen.' && document.getElementById('freeze-form').hidden;",
            vec![],
        )
        .await;
    assert_eq!(
        browser
            .text("document.getElementById('freeze-form').hidden")
            .await,
        "true"
    );
    let _ = browser.client.clone().close().await;
    s.stop().await;
}

/// An elevation under a two-person policy, for one exact request: the card
/// shows the redacted body and the approvals so far, and stays after the
/// first approval, without that approver's form, until the second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_person_exact_change_shows_its_body_and_the_approvals_so_far() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let s = TestServer::start(include_str!("fixtures/approval_policies.yaml")).await;
    let admin = s.running.as_ref().expect("running").admin_addr;
    browser
        .sign_in(
            &format!("http://{admin}/ui/approvals"),
            &token("oncall"),
            "oncall",
        )
        .await;

    let vm1 = format!("{RG}/providers/Microsoft.Compute/virtualMachines/vm1");
    let mut req = ask("agent-r", RESTART, &vm1, "restart with a new password");
    req.request_method = "POST".into();
    req.request_path = format!("{vm1}/restart");
    req.request_body = br#"{"adminPassword":"hunter2","reason":"wedged"}"#.to_vec();
    let waiting = spawn_request(&s, req);
    let e = pending(&s, "agent-r", RESTART).await;
    let card = browser
        .until("the elevation to appear", CARD_TEXT, vec![json!(e.id)])
        .await;
    let card = card.as_str().unwrap_or_default().to_owned();
    for expected in [
        "0 of 2 distinct approvers",
        "POST",
        "[REDACTED]",
        "wedged",
        "Only this exact request",
    ] {
        assert!(
            card.contains(expected),
            "the card lacks {expected:?}:\n{card}"
        );
    }
    assert!(!card.contains("hunter2"), "{card}");
    let bound = browser
        .text(&format!(
            "document.querySelector('#pending li[data-id=\"{}\"] input[name=bindToRequest]').checked",
            e.id
        ))
        .await;
    assert_eq!(bound, "true", "a write is bound by default");

    browser
        .client
        .execute(
            "document.querySelector('#pending li[data-id=\"' + arguments[0] + '\"] form.approve button').click();",
            vec![json!(e.id)],
        )
        .await
        .expect("click approve");
    let card = browser
        .until(
            "the first approval to show",
            "const li = document.querySelector('#pending li[data-id=\"' + arguments[0] + '\"]'); return li && li.innerText.includes('1 of 2 distinct approvers: oncall') && !li.querySelector('form.approve') ? li.innerText : '';",
            vec![json!(e.id)],
        )
        .await;
    assert!(
        card.as_str()
            .is_some_and(|c| c.contains("You approved; waiting for 1 more approver(s).")),
        "{card}"
    );

    // The second approver, elsewhere: the card leaves the pending list.
    s.approvals
        .clone()
        .approve_elevation(common::authed(
            pb::ApproveElevationRequest {
                id: e.id.clone(),
                ..Default::default()
            },
            &token("oncall2"),
        ))
        .await
        .expect("oncall2 approves");
    browser
        .until(
            "the card to leave",
            "return !document.querySelector('#pending li[data-id=\"' + arguments[0] + '\"]');",
            vec![json!(e.id)],
        )
        .await;
    let answered = waiting.await.expect("joined").expect("answered");
    assert_eq!(answered.state(), pb::ElevationState::Approved);
    assert!(answered
        .grant
        .is_some_and(|g| g.co_lenders == ["oncall2"] && !g.request_digest.is_empty()));

    let _ = browser.client.clone().close().await;
    s.stop().await;
}
