//! The web front ends in a real browser: headless Chromium driven through
//! chromedriver (WebDriver, via fantoccini) against real `keqing ui` and
//! `keqing-server dashboard` processes over real SQLite files. A call is
//! typed into the office form, its dossier and due follow-up appear, the
//! follow-up is recorded, the office syncs, and headquarters' dashboard
//! shows the new figures, equal to `keqing-server report`. Screenshots of
//! the main pages are saved under target/screenshots/.

use fantoccini::{Client, ClientBuilder, Locator};
use keqing_tests::{Office, Server, WebProcess, keqing_bin, server_bin};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// chromedriver on a free loopback port, killed on drop.
struct Driver {
    child: Child,
    url: String,
    /// TMPDIR of chromedriver and its Chromium: each Chromium start leaves
    /// an `org.chromium.Chromium.*` directory there, which would otherwise
    /// pile up in /tmp run after run.
    _scratch: tempfile::TempDir,
}

impl Driver {
    fn start() -> Driver {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let scratch = tempfile::tempdir().expect("chromium scratch dir");
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .env("TMPDIR", scratch.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start chromedriver ({e}): the browser tests need Debian's chromium and \
                     chromium-driver (`apt-get install chromium chromium-driver`; scripts/test installs them)"
                )
            });
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Driver {
            child,
            url: format!("http://127.0.0.1:{port}"),
            _scratch: scratch,
        }
    }

    async fn browser(&self) -> Client {
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,1600", "--lang=zh-CN"],
            }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&self.url)
            .await
            .expect("open a headless Chromium session")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn screenshots_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("target")
        .join("screenshots");
    std::fs::create_dir_all(&dir).expect("make target/screenshots");
    dir
}

async fn screenshot(c: &Client, name: &str) {
    let png = c.screenshot().await.expect("screenshot");
    std::fs::write(screenshots_dir().join(name), png).expect("save screenshot");
}

async fn text_of(c: &Client, css: &str) -> String {
    c.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no `{css}` on the page: {e}"))
        .text()
        .await
        .expect("element text")
}

async fn click(c: &Client, css: &str) {
    c.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no `{css}`: {e}"))
        .click()
        .await
        .expect("click");
}

async fn fill(c: &Client, css: &str, value: &str) {
    let e = c
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no `{css}`: {e}"));
    e.clear().await.expect("clear");
    e.send_keys(value).await.expect("type");
}

/// Waits (up to 10 s) until the page's HTML satisfies `ok`.
async fn wait_for_page(c: &Client, what: &str, ok: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let html = c.source().await.expect("page source");
        if ok(&html) {
            return html;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}:\n{html}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The national total of one figure, as `keqing-server report` reads it.
fn reported_total(server_dir: &Path, day: &str, figure: &[&str]) -> u64 {
    let r = Server::admin(
        server_dir,
        &["report", "national", "--from", day, "--to", day, "--json"],
    );
    assert!(r.ok, "{}", r.stderr);
    let mut v = &r.json()["total"];
    for k in figure {
        v = &v[*k];
    }
    v.as_u64().expect("a count")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_typed_at_an_office_reaches_the_headquarters_dashboard() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path().join("server"), "127.0.0.1:0");
    let office = Office::new(tmp.path().join("gd"));
    office.enroll_on(&server, Some("44"), "广东前台1");
    office.ok(&["staff", "add", "--name", "李敏", "--role", "consultant"]);
    office.ok(&["sync"]);
    let hq_token = server.add_device(None, "看板");
    let server_dir = server.dir.to_string_lossy().into_owned();
    let ui = office.workstation();
    let dash = WebProcess::start(
        &server_bin(),
        &[
            "--data",
            &server_dir,
            "dashboard",
            "--listen",
            "127.0.0.1:0",
        ],
    );
    let driver = Driver::start();
    let c = driver.browser().await;
    let today = (chrono::Utc::now() + chrono::Duration::hours(8)).date_naive();
    let day = today.format("%Y-%m-%d").to_string();
    let tomorrow = (today + chrono::Duration::days(1))
        .format("%Y-%m-%d")
        .to_string();

    // Headquarters signs in; a wrong token is refused.
    c.goto(&format!("{}/", dash.url())).await.unwrap();
    assert!(c.current_url().await.unwrap().path().ends_with("/login"));
    fill(&c, "#token", "not-a-token").await;
    click(&c, "#login").await;
    wait_for_page(&c, "the refusal", |h| h.contains("此令牌不能打开看板")).await;
    fill(&c, "#token", &hq_token).await;
    click(&c, "#login").await;
    let national = format!("{}/?from={day}&to={day}", dash.url());
    c.goto(&national).await.unwrap();
    let calls_before: u64 = text_of(&c, "#line-total td.calls").await.parse().unwrap();
    assert_eq!(calls_before, reported_total(&server.dir, &day, &["calls"]));

    // A bad phone number: the error shows next to the field, nothing is saved.
    c.goto(&format!("{}/call", ui.url())).await.unwrap();
    fill(&c, "#phone", "12345").await;
    fill(&c, "#name", "王芳").await;
    fill(&c, "#source", "报纸").await;
    c.find(Locator::Css("#staff"))
        .await
        .unwrap()
        .select_by_value("李敏")
        .await
        .unwrap();
    click(&c, "#save-call").await;
    let err = text_of(&c, "#phone-err").await;
    assert!(err.contains("12345"), "{err}");
    screenshot(&c, "office-call-error.png").await;
    let found = office.ok(&["search", "王芳", "--json"]).json();
    assert_eq!(found.as_array().map(Vec::len), Some(0), "nothing saved");

    // The right number: the live lookup says it is new; the call is saved
    // and the dossier shows its due follow-up.
    fill(&c, "#phone", "138-0013-8000").await;
    wait_for_page(&c, "the lookup of the number", |h| {
        h.contains("13800138000 尚无档案")
    })
    .await;
    fill(&c, "#age", "66").await;
    fill(&c, "#disease", "冠心病").await;
    screenshot(&c, "office-call-form.png").await;
    click(&c, "#save-call").await;
    let page = wait_for_page(&c, "the dossier page", |h| h.contains("病历档案 王芳")).await;
    assert!(page.contains("未到堂三日内回访"), "the due follow-up");
    assert!(page.contains("已登记来电"));
    let dossier_url = c.current_url().await.unwrap();
    let dossier_id = dossier_url
        .path()
        .strip_prefix("/patient/")
        .expect("a dossier page")
        .to_string();
    screenshot(&c, "office-dossier.png").await;

    // Typing the same number again finds the dossier. Her husband calls
    // from the same phone: a second dossier, on purpose.
    c.goto(&format!("{}/call", ui.url())).await.unwrap();
    fill(&c, "#phone", "13800138000").await;
    wait_for_page(&c, "the existing dossier", |h| {
        h.contains(&format!("data-dossier=\"{dossier_id}\""))
    })
    .await;
    fill(&c, "#name", "李强").await;
    fill(&c, "#source", "报纸").await;
    click(&c, "#force_new").await;
    click(&c, "#save-call").await;
    wait_for_page(&c, "the second dossier", |h| h.contains("病历档案 李强")).await;
    // Now the number has two dossiers: the form asks which one, and the
    // call goes to the one picked.
    c.goto(&format!("{}/call", ui.url())).await.unwrap();
    fill(&c, "#phone", "13800138000").await;
    wait_for_page(&c, "the choice of dossiers", |h| h.contains("有多份档案")).await;
    click(&c, &format!("#pick-{dossier_id}")).await;
    fill(&c, "#name", "王芳").await;
    fill(&c, "#source", "电视").await;
    click(&c, "#save-call").await;
    wait_for_page(&c, "the picked dossier", |h| h.contains("病历档案 王芳")).await;
    assert_eq!(
        c.current_url().await.unwrap().path(),
        format!("/patient/{dossier_id}")
    );
    let calls = office.ok(&["patient", &dossier_id, "--json"]).json()["dossier"]["calls"]
        .as_array()
        .map(Vec::len);
    assert_eq!(calls, Some(2), "the second call joined 王芳's dossier");

    // Tomorrow's list holds the patient; one step records the follow-up.
    c.goto(&format!("{}/?date={tomorrow}", ui.url()))
        .await
        .unwrap();
    let entry = format!("#due-{dossier_id}");
    assert!(text_of(&c, &entry).await.contains("王芳"));
    screenshot(&c, "office-followups.png").await;
    fill(
        &c,
        &format!("{entry} [name=outcome]"),
        "已服药一周，血压平稳",
    )
    .await;
    fill(&c, &format!("{entry} [name=next]"), "询问复查结果").await;
    click(&c, &format!("{entry} button[type=submit]")).await;
    let page = wait_for_page(&c, "the follow-up saved", |h| h.contains("已登记回访")).await;
    assert!(
        !page.contains(&format!("id=\"due-{dossier_id}\"")),
        "done: off the list"
    );
    // The indicator counts the changes waiting in the outbox (a new
    // dossier's creation, the call, the follow-up), as `keqing status` does.
    let waiting: u64 = text_of(&c, "#waiting").await.parse().unwrap();
    let outbox = office.ok(&["status", "--json"]).json()["outbox"].as_u64();
    assert_eq!(Some(waiting), outbox);
    assert!(waiting >= 2, "the call and the follow-up wait for sync");

    // The sync button pushes them.
    click(&c, "#sync-now").await;
    wait_for_page(&c, "the sync", |h| h.contains("同步完成")).await;
    assert_eq!(text_of(&c, "#waiting").await, "0");

    // Headquarters sees the call and the follow-up, the same figures as
    // `keqing-server report`; drill down to 广东 and its staff.
    c.goto(&national).await.unwrap();
    let calls: u64 = text_of(&c, "#line-total td.calls").await.parse().unwrap();
    assert_eq!(calls, calls_before + 3, "王芳's two calls and 李强's");
    assert_eq!(calls, reported_total(&server.dir, &day, &["calls"]));
    let followups: u64 = text_of(&c, "#total-followups").await.parse().unwrap();
    assert_eq!(followups, 1);
    assert_eq!(
        followups,
        reported_total(&server.dir, &day, &["followups", "done"])
    );
    assert_eq!(text_of(&c, "#line-44 td.calls").await, "3");
    screenshot(&c, "dashboard-national.png").await;
    click(&c, "#line-44 a").await;
    let page = wait_for_page(&c, "the province page", |h| h.contains("广东咨询处")).await;
    assert!(page.contains("客情岗位评定") && page.contains("李敏"));
    screenshot(&c, "dashboard-province.png").await;

    c.close().await.unwrap();
}

/// What a newcomer does after `keqing demo --keep DIR`: open the office
/// workstation on a kept office and the dashboard on the kept server, and
/// see the week's work, the same figures the demo printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kept_demo_opens_in_the_workstation_and_the_dashboard() {
    let tmp = tempfile::tempdir().unwrap();
    let kept = tmp.path().join("demo");
    let kept_s = kept.to_string_lossy().into_owned();
    // KEQING_BROWSER_DEMO_OFFICES=27 makes the README's screenshots.
    let offices = std::env::var("KEQING_BROWSER_DEMO_OFFICES").unwrap_or_else(|_| "3".into());
    let out = Command::new(keqing_bin())
        .args([
            "demo",
            "--offices",
            &offices,
            "--days",
            "7",
            "--patients",
            "12",
            "--keep",
            &kept_s,
            "--json",
        ])
        .output()
        .expect("run the demo");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary: serde_json::Value =
        serde_json::from_str(stdout.lines().last().expect("summary line")).expect("JSON summary");
    let national_calls = summary["national"]["calls"].as_u64().expect("calls");
    let national_purchases = summary["national"]["purchases"]
        .as_u64()
        .expect("purchases");
    assert!(national_calls > 0);

    let server_dir = kept.join("server");
    let token = Server::admin(&server_dir, &["device", "add", "--hq", "--name", "看板"]);
    assert!(token.ok, "{}", token.stderr);
    let token = token.last_line().to_string();
    let office_dir = kept.join("11").join("北京前台1");
    let office = Office::new(&office_dir);
    let server_s = server_dir.to_string_lossy().into_owned();
    let ui = office.workstation();
    let dash = WebProcess::start(
        &server_bin(),
        &["--data", &server_s, "dashboard", "--listen", "127.0.0.1:0"],
    );
    let driver = Driver::start();
    let c = driver.browser().await;

    // The dashboard opens on the last week with calls: the demo's week.
    c.goto(&format!("{}/login", dash.url())).await.unwrap();
    fill(&c, "#token", &token).await;
    click(&c, "#login").await;
    wait_for_page(&c, "the national page", |h| h.contains("全国客情报表")).await;
    let calls: u64 = text_of(&c, "#line-total td.calls").await.parse().unwrap();
    assert_eq!(
        calls, national_calls,
        "the dashboard shows the demo's national calls"
    );
    let purchases: u64 = text_of(&c, "#total-purchases").await.parse().unwrap();
    assert_eq!(purchases, national_purchases);
    screenshot(&c, "demo-dashboard-national.png").await;
    click(&c, "#line-11 a").await;
    wait_for_page(&c, "北京", |h| h.contains("北京咨询处")).await;
    screenshot(&c, "demo-dashboard-province.png").await;

    // The office's list on the demo's last day is the CLI's list.
    let last_day = summary["to"]
        .as_str()
        .expect("the demo's last day")
        .to_string();
    let due = office.ok(&["due", "--date", &last_day, "--json"]).json();
    let due = due.as_array().expect("a list");
    c.goto(&format!("{}/?date={last_day}", ui.url()))
        .await
        .unwrap();
    assert_eq!(text_of(&c, "#due-count").await, due.len().to_string());
    screenshot(&c, "demo-office-followups.png").await;

    // A buyer's dossier: purchases with their run-out dates in red.
    let with_purchase = due
        .iter()
        .find(|e| {
            e["slots"]
                .as_array()
                .is_some_and(|s| s.iter().any(|s| s["cadence"] == "after_purchase"))
        })
        .or_else(|| due.first())
        .expect("someone to call");
    let id = with_purchase["dossier_id"].as_str().unwrap();
    c.goto(&format!("{}/patient/{id}", ui.url())).await.unwrap();
    let page = wait_for_page(&c, "the dossier", |h| h.contains("病历档案")).await;
    assert!(page.contains("来电"), "the timeline shows the calls");
    screenshot(&c, "demo-office-dossier.png").await;

    c.close().await.unwrap();
}
