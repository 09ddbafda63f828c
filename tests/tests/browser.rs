//! The web front ends in a real browser: headless Chromium driven through
//! chromedriver (WebDriver, via fantoccini) against real `keqing ui` and
//! `keqing-server dashboard` processes over real SQLite files. A call is
//! typed into the office form, its dossier and due follow-up appear, the
//! follow-up is recorded, the office syncs, and headquarters' dashboard
//! shows the new figures, equal to `keqing-server report`. Screenshots of
//! the main pages are saved under target/screenshots/.

use fantoccini::{Client, ClientBuilder, Locator};
use keqing_tests::{Office, Server, WebProcess, keqing_bin, server_bin};
use std::os::unix::process::CommandExt;
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
        // Its own process group: dropping the driver ends chromedriver and
        // the Chromium it started, even when a test panics.
        let child = Command::new("chromedriver")
            .process_group(0)
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
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where the clock of every office process these tests start begins: one
/// "today" for the test and the processes, whenever the test runs (near
/// Beijing midnight "today" would change under it).
const CLOCK: &str = "2026-11-20T10:00";

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

/// Waits (up to 30 s: the suite runs beside crash and fault tests on two
/// cores, and a debug build's page can take seconds then) until the page's
/// HTML satisfies `ok`.
async fn wait_for_page(c: &Client, what: &str, ok: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
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
    let office = Office::new(tmp.path().join("gd")).with_clock(CLOCK);
    office.enroll_on(&server, Some("44"), "广东前台1");
    office.ok(&["staff", "add", "--name", "李敏", "--role", "consultant"]);
    office.ok(&["sync"]);
    Server::add_user_in(&server.dir, "钱分析", "analyst", "总部-2026-看板");
    let ui = office.workstation();
    let dash = server.dashboard();
    let driver = Driver::start();
    let c = driver.browser().await;
    let today = keqing_shared::when::parse_datetime(CLOCK).unwrap().date();
    let day = today.format("%Y-%m-%d").to_string();
    let tomorrow = (today + chrono::Duration::days(1))
        .format("%Y-%m-%d")
        .to_string();

    // Headquarters' analyst signs in; a wrong password is refused.
    c.goto(&format!("{}/", dash.url())).await.unwrap();
    assert!(c.current_url().await.unwrap().path().ends_with("/login"));
    fill(&c, "#name", "钱分析").await;
    fill(&c, "#password", "not-the-password").await;
    click(&c, "#login").await;
    wait_for_page(&c, "the refusal", |h| h.contains("姓名或密码不对")).await;
    fill(&c, "#name", "钱分析").await;
    fill(&c, "#password", "总部-2026-看板").await;
    click(&c, "#login").await;
    wait_for_page(&c, "the signed-in dashboard", |h| {
        h.contains("钱分析 · 数据分析员")
    })
    .await;
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
    // The demo's staff have accounts: its supervisor signs in at the
    // workstation (a wrong password first, refused).
    let staff = office.ok(&["staff", "list", "--json"]).json();
    let supervisor = staff
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["role"] == "supervisor" && s["password"] == true)
        .expect("a supervisor with an account")["name"]
        .as_str()
        .unwrap()
        .to_string();
    c.goto(&format!("{}/", ui.url())).await.unwrap();
    assert!(c.current_url().await.unwrap().path().ends_with("/login"));
    fill(&c, "#name", &supervisor).await;
    fill(&c, "#password", "not-the-password").await;
    click(&c, "#login").await;
    wait_for_page(&c, "the refusal", |h| h.contains("姓名或密码不对")).await;
    fill(&c, "#name", &supervisor).await;
    fill(&c, "#password", keqing_demo::DEMO_PASSWORD).await;
    click(&c, "#login").await;
    wait_for_page(&c, "the signed-in workstation", |h| {
        h.contains(&format!("id=\"signed-in\">{supervisor}"))
    })
    .await;
    screenshot(&c, "demo-workstation-signed-in.png").await;

    // The dashboard opens on the last week with calls: the demo's week.
    // The demo's headquarters administrator signs in there.
    let (admin, _) = keqing_demo::DEMO_HQ_USERS[0];
    c.goto(&format!("{}/login", dash.url())).await.unwrap();
    fill(&c, "#name", admin).await;
    fill(&c, "#password", keqing_demo::DEMO_PASSWORD).await;
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

/// Sets an input's value as the page would hold it (date and time inputs
/// take keys in the browser's locale order; their value is ISO).
async fn set_value(c: &Client, css: &str, value: &str) {
    c.execute(
        "document.querySelector(arguments[0]).value = arguments[1];",
        vec![css.into(), value.into()],
    )
    .await
    .unwrap_or_else(|e| panic!("set `{css}`: {e}"));
}

async fn choose(c: &Client, css: &str, value: &str) {
    c.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no `{css}`: {e}"))
        .select_by_value(value)
        .await
        .unwrap_or_else(|e| panic!("no option `{value}` in `{css}`: {e}"));
}

/// Opens a collapsed form of the dossier page (`#PREFIXform`).
async fn open_form(c: &Client, prefix: &str) {
    c.execute(
        "document.getElementById(arguments[0]).open = true;",
        vec![format!("{prefix}form").into()],
    )
    .await
    .unwrap_or_else(|e| panic!("no form `{prefix}form`: {e}"));
}

/// The dossier as `keqing patient --json` reads it, and the outbox: what a
/// refused form must leave as it was.
fn saved_state(office: &Office, id: &str) -> (serde_json::Value, serde_json::Value) {
    (
        office.ok(&["patient", id, "--json"]).json(),
        office.ok(&["status", "--json"]).json()["outbox"].clone(),
    )
}

/// Submits the form of `prefix`, expects its error next to `field` (and
/// nothing saved), then lets `fix` correct it and expects `saved`.
async fn refused_then_saved<F, Fut>(
    c: &Client,
    office: &Office,
    id: &str,
    prefix: &str,
    field: &str,
    fix: F,
    saved: &str,
) where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let before = saved_state(office, id);
    click(c, &format!("#{prefix}save")).await;
    let err = format!("#{prefix}{field}-err");
    wait_for_page(c, &err, |h| h.contains(&format!("id=\"{}\"", &err[1..]))).await;
    assert!(!text_of(c, &err).await.is_empty());
    assert_eq!(saved_state(office, id), before, "{prefix}: nothing saved");
    fix().await;
    click(c, &format!("#{prefix}save")).await;
    wait_for_page(c, saved, |h| h.contains(saved)).await;
    assert_ne!(saved_state(office, id).0, before.0, "{prefix}: saved");
}

/// Every record of the office's day from the workstation: each form
/// refuses a bad value with its error next to the field and saves nothing,
/// then saves the corrected one; the lists, the deliveries, the staff and
/// the register's non-patient calls work as the command line does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_day_is_done_in_the_workstation() {
    let tmp = tempfile::tempdir().unwrap();
    let office = Office::new(tmp.path().join("gd")).with_clock(CLOCK);
    office.ok(&["init", "--office", "44", "--device", "前台1"]);
    for (name, role) in [("李娜", "consultant"), ("王芳", "followup")] {
        office.ok(&["staff", "add", "--name", name, "--role", role]);
    }
    let now = keqing_shared::when::parse_datetime(CLOCK).unwrap();
    let t = |days: i64, h: u32| {
        (now.date() - chrono::Duration::days(days))
            .and_hms_opt(h, 0, 0)
            .unwrap()
            .format("%Y-%m-%dT%H:%M")
            .to_string()
    };
    let d = |days: i64| {
        (now.date() - chrono::Duration::days(days))
            .format("%Y-%m-%d")
            .to_string()
    };
    let next_year = (now + chrono::Duration::days(366))
        .format("%Y-%m-%dT%H:%M")
        .to_string();
    let id = office
        .ok(&[
            "call",
            "--phone",
            "13800138000",
            "--name",
            "张三",
            "--source",
            "电视",
            "--staff",
            "李娜",
            "--at",
            &t(10, 9),
        ])
        .last_line()
        .to_string();
    office.ok(&[
        "purchase",
        "--patient",
        &id,
        "--staff",
        "李娜",
        "--product",
        "脑心通",
        "--amount",
        "300",
        "--quantity",
        "3",
        "--at",
        &t(9, 10),
    ]);
    let ui = office.workstation();
    let driver = Driver::start();
    let c = driver.browser().await;
    let page = format!("{}/patient/{id}", ui.url());
    c.goto(&page).await.unwrap();

    // 住院: a discharge before the admission, then a stay without one.
    open_form(&c, "hospital-").await;
    choose(&c, "#hospital-staff", "李娜").await;
    set_value(&c, "#hospital-admitted", &d(5)).await;
    set_value(&c, "#hospital-discharged", &d(7)).await;
    refused_then_saved(
        &c,
        &office,
        &id,
        "hospital-",
        "discharged",
        || async {
            open_form(&c, "hospital-").await;
            set_value(&c, "#hospital-discharged", "").await;
        },
        "已登记住院",
    )
    .await;
    // 出院, later, on the stay's own form.
    let stay = saved_state(&office, &id).0["dossier"]["hospital_stays"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let p = format!("discharge-{stay}-");
    open_form(&c, &p).await;
    choose(&c, &format!("#{p}staff"), "李娜").await;
    set_value(&c, &format!("#{p}discharged"), &d(6)).await;
    refused_then_saved(
        &c,
        &office,
        &id,
        &p,
        "discharged",
        || async {
            set_value(&c, &format!("#{p}discharged"), &d(2)).await;
        },
        "已登记出院",
    )
    .await;
    let stays = saved_state(&office, &id).0["dossier"]["hospital_stays"].clone();
    assert_eq!(stays[0]["discharged"], d(2).as_str());

    // 问题: opened without saying what, then handled to resolution.
    open_form(&c, "problem-").await;
    choose(&c, "#problem-staff", "李娜").await;
    refused_then_saved(
        &c,
        &office,
        &id,
        "problem-",
        "description",
        || async {
            open_form(&c, "problem-").await;
            fill(&c, "#problem-description", "送药太慢").await;
        },
        "已更新问题记录",
    )
    .await;
    let problem = saved_state(&office, &id).0["dossier"]["problems"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let p = format!("problem-{problem}-");
    open_form(&c, &p).await;
    choose(&c, &format!("#{p}staff"), "王芳").await;
    choose(&c, &format!("#{p}step"), "resolve").await;
    refused_then_saved(
        &c,
        &office,
        &id,
        &p,
        "resolution",
        || async {
            open_form(&c, &p).await;
            choose(&c, &format!("#{p}step"), "resolve").await;
            fill(&c, &format!("#{p}resolution"), "已道歉并补送").await;
        },
        "已更新问题记录",
    )
    .await;
    assert_eq!(
        saved_state(&office, &id).0["dossier"]["problems"][0]["state"],
        "resolved"
    );

    // 典型, 问候, 家访: a time a year ahead is refused.
    for (prefix, saved) in [
        ("typical-", "已更新典型病例"),
        ("greeting-", "已登记问候"),
        ("homevisit-", "已登记家访"),
    ] {
        open_form(&c, prefix).await;
        choose(&c, &format!("#{prefix}staff"), "李娜").await;
        if prefix == "typical-" {
            click(&c, "#typical-flagged").await;
        }
        fill(&c, &format!("#{prefix}notes"), "春节问候").await;
        set_value(&c, &format!("#{prefix}at"), &next_year).await;
        refused_then_saved(
            &c,
            &office,
            &id,
            prefix,
            "at",
            || async {
                open_form(&c, prefix).await;
                set_value(&c, &format!("#{prefix}at"), &t(1, 15)).await;
            },
            saved,
        )
        .await;
    }
    let dossier = saved_state(&office, &id).0;
    assert_eq!(dossier["dossier"]["typical"]["flagged"], true);
    assert_eq!(
        dossier["dossier"]["greetings"].as_array().map(Vec::len),
        Some(1)
    );
    assert_eq!(
        dossier["dossier"]["home_visits"].as_array().map(Vec::len),
        Some(1)
    );

    // 外送: a negative quantity, then the purchase's delivery; its result
    // without a reason for 未送达 is refused; it is settled on the list.
    open_form(&c, "delivery-").await;
    choose(&c, "#delivery-staff", "李娜").await;
    let purchase = dossier["dossier"]["purchases"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    choose(&c, "#delivery-purchase", &purchase).await;
    fill(&c, "#delivery-address", "广州市越秀区").await;
    set_value(&c, "#delivery-due", &d(1)).await;
    fill(&c, "#delivery-quantity", "-2").await;
    refused_then_saved(
        &c,
        &office,
        &id,
        "delivery-",
        "quantity",
        || async {
            open_form(&c, "delivery-").await;
            fill(&c, "#delivery-quantity", "3").await;
        },
        "已登记外送",
    )
    .await;
    let delivery = saved_state(&office, &id).0["dossier"]["deliveries"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    c.goto(&format!("{}/deliveries", ui.url())).await.unwrap();
    assert_eq!(text_of(&c, "#delivery-count").await, "1");
    let row = text_of(&c, &format!("#delivery-{delivery}")).await;
    assert!(row.contains("脑心通") && row.contains("逾期"), "{row}");
    let p = format!("deliver-{delivery}-");
    choose(&c, &format!("#{p}staff"), "王芳").await;
    choose(&c, &format!("#{p}result"), "failed").await;
    refused_then_saved(
        &c,
        &office,
        &id,
        &p,
        "failed",
        || async {
            choose(&c, &format!("#{p}result"), "delivered").await;
        },
        "已登记送达结果",
    )
    .await;
    assert_eq!(text_of(&c, "#delivery-count").await, "0");
    assert_eq!(
        office.ok(&["deliveries", "--json"]).json(),
        serde_json::json!([])
    );

    // 到堂: 其他 needs its text.
    c.goto(&page).await.unwrap();
    open_form(&c, "visit-").await;
    choose(&c, "#visit-staff", "李娜").await;
    choose(&c, "#visit-reason", "其他").await;
    refused_then_saved(
        &c,
        &office,
        &id,
        "visit-",
        "reason_text",
        || async {
            open_form(&c, "visit-").await;
            choose(&c, "#visit-reason", "其他").await;
            fill(&c, "#visit-reason_text", "要和子女商量").await;
        },
        "已登记到堂",
    )
    .await;

    // 资料: an age no one has; only the field changed is written.
    open_form(&c, "details-").await;
    fill(&c, "#details-age", "200").await;
    choose(&c, "#details-staff", "李娜").await;
    refused_then_saved(
        &c,
        &office,
        &id,
        "details-",
        "age",
        || async {
            open_form(&c, "details-").await;
            fill(&c, "#details-age", "67").await;
            fill(&c, "#details-address", "广州市越秀区中山路").await;
        },
        "已更新资料",
    )
    .await;
    let p = saved_state(&office, &id).0["dossier"]["patient"].clone();
    assert_eq!(
        (p["age"].as_i64(), p["address"].as_str()),
        (Some(67), Some("广州市越秀区中山路"))
    );

    // 回访计划: an extra call without its day; then a stop, and who calls.
    open_form(&c, "plan-").await;
    choose(&c, "#plan-staff", "李娜").await;
    choose(&c, "#plan-step", "add").await;
    refused_then_saved(
        &c,
        &office,
        &id,
        "plan-",
        "date",
        || async {
            open_form(&c, "plan-").await;
            choose(&c, "#plan-step", "add").await;
            set_value(&c, "#plan-date", &d(0)).await;
            fill(&c, "#plan-notes", "家属要求今天再打").await;
        },
        "已修改回访计划",
    )
    .await;
    open_form(&c, "plan-").await;
    choose(&c, "#plan-step", "assign").await;
    choose(&c, "#plan-to", "王芳").await;
    click(&c, "#plan-save").await;
    wait_for_page(&c, "the assignee", |h| {
        h.contains("id=\"plan-assignee\">王芳")
    })
    .await;
    let due = office.ok(&["due", "--staff", "王芳", "--json"]).json();
    assert_eq!(due[0]["dossier_id"], id.as_str(), "王芳's list: {due}");
    open_form(&c, "plan-").await;
    choose(&c, "#plan-step", "stop").await;
    choose(&c, "#plan-reason", "拒访").await;
    click(&c, "#plan-save").await;
    let html = wait_for_page(&c, "the stop", |h| h.contains("id=\"plan-stopped\"")).await;
    assert!(html.contains("已停访：拒访"));
    c.execute("document.getElementById('plan').scrollIntoView();", vec![])
        .await
        .unwrap();
    screenshot(&c, "office-plan.png").await;
    assert_eq!(
        office.ok(&["due", "--json"]).json(),
        serde_json::json!([]),
        "stopped: off the list"
    );

    // 客户分类: the counts and the 停访 list, as `keqing list` says.
    c.goto(&format!("{}/lists", ui.url())).await.unwrap();
    let counts = office.ok(&["list", "--json"]).json();
    assert_eq!(text_of(&c, "#count-停访").await, counts["停访"].to_string());
    assert_eq!(counts["停访"], 1);
    click(&c, "#list-counts a[href*='category=%E5%81%9C%E8%AE%BF']").await;
    wait_for_page(&c, "the 停访 list", |h| {
        h.contains(&format!("listed-{id}"))
    })
    .await;
    assert!(text_of(&c, &format!("#listed-{id}")).await.contains("王芳"));
    screenshot(&c, "office-lists.png").await;

    // 非正常咨询 from the register form: no staff, then a bad number; no
    // dossier either way, and the report counts it apart from calls.
    let calls_before = office.ok(&["report", "daily", "--json"]).json()["total"]["calls"].clone();
    c.goto(&format!("{}/call", ui.url())).await.unwrap();
    choose(&c, "#kind", "推销").await;
    assert!(
        !c.find(Locator::Css("#patient-fields"))
            .await
            .unwrap()
            .is_displayed()
            .await
            .unwrap(),
        "the patient's fields are hidden for a non-patient call"
    );
    fill(&c, "#phone", "12345").await;
    c.execute("document.getElementById('staff').value = '';", vec![])
        .await
        .unwrap();
    click(&c, "#save-call").await;
    wait_for_page(&c, "the staff error", |h| h.contains("id=\"staff-err\"")).await;
    choose(&c, "#staff", "李娜").await;
    click(&c, "#save-call").await;
    wait_for_page(&c, "the phone error", |h| h.contains("id=\"phone-err\"")).await;
    let report = office.ok(&["report", "daily", "--json"]).json();
    let sales = |r: &serde_json::Value| r["nonpatient_calls"][1]["counts"][4]["count"].clone();
    assert_eq!(sales(&report), 0, "nothing saved");
    fill(&c, "#phone", "020-8888 0000").await;
    fill(&c, "#outcome", "推销保健品").await;
    click(&c, "#save-call").await;
    wait_for_page(&c, "the non-patient call", |h| {
        h.contains("已登记非正常咨询")
    })
    .await;
    let report = office.ok(&["report", "daily", "--json"]).json();
    assert_eq!(report["nonpatient_calls"][1]["counts"][4]["label"], "推销");
    assert_eq!(sales(&report), 1);
    assert_eq!(report["total"]["calls"], calls_before, "not a consultation");
    assert_eq!(
        office.ok(&["search", "0208888", "--json"]).json(),
        serde_json::json!([])
    );

    // 员工: a name taken is refused next to it; a new one is added, then
    // goes on leave: kept on the list, gone from the forms' pick lists.
    c.goto(&format!("{}/staff", ui.url())).await.unwrap();
    fill(&c, "#staff-name", "李娜").await;
    click(&c, "#staff-add").await;
    wait_for_page(&c, "the name error", |h| {
        h.contains("id=\"staff-name-err\"")
    })
    .await;
    fill(&c, "#staff-name", "赵敏").await;
    choose(&c, "#staff-role", "followup").await;
    click(&c, "#staff-add").await;
    let html = wait_for_page(&c, "赵敏 added", |h| h.contains("已更新员工名单")).await;
    assert!(html.contains("赵敏"));
    let zhao = office.ok(&["staff", "list", "--json"]).json();
    let zhao = zhao
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "赵敏")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    click(&c, &format!("#staff-{zhao} button")).await;
    // Every active member's button already says 离岗: the page after the
    // click is the one offering 返岗 (waiting for 离岗 passed on the old page,
    // whose row went stale under the read below when the new one came).
    wait_for_page(&c, "赵敏 on leave", |h| h.contains("返岗")).await;
    assert!(
        text_of(&c, &format!("#staff-{zhao}"))
            .await
            .contains("离岗")
    );
    c.goto(&format!("{}/call", ui.url())).await.unwrap();
    let options = text_of(&c, "#staff").await;
    assert!(
        options.contains("李娜") && !options.contains("赵敏"),
        "{options}"
    );

    c.close().await.unwrap();
}

/// Staff of an office with accounts in Chromium: a 回访人员 is neither
/// offered nor let into the register and the staff page; what she records
/// is hers; a member marked 离岗 at another device is signed out and
/// refused here once the sync brings it; an idle session ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staff_sign_in_roles_leaving_and_idle_in_chromium() {
    const PASSWORD: &str = "心脑通 2026-冬";
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path().join("server"), "127.0.0.1:0");
    let a = Office::new(tmp.path().join("a")).with_clock(CLOCK);
    let b = Office::new(tmp.path().join("b")).with_clock(CLOCK);
    a.enroll_on(&server, Some("44"), "广东前台1");
    b.enroll_on(&server, Some("44"), "广东前台2");
    for (name, role) in [
        ("李娜", "supervisor"),
        ("赵敏", "followup"),
        ("王芳", "consultant"),
    ] {
        a.add_staff_with_password(name, role, PASSWORD);
    }
    let patient = a.call("13800138000", "张三", "王芳", "2026-11-20T09:00");
    a.ok(&["sync"]);
    b.ok(&["sync"]);
    let ui = b.workstation();
    let driver = Driver::start();
    let c = driver.browser().await;
    let sign_in = async |name: &str| {
        c.goto(&format!("{}/login", ui.url())).await.unwrap();
        fill(&c, "#name", name).await;
        fill(&c, "#password", PASSWORD).await;
        click(&c, "#login").await;
        wait_for_page(&c, "signed in", |h| {
            h.contains(&format!("id=\"signed-in\">{name}"))
        })
        .await;
    };

    // 赵敏 (回访人员): no register or staff page offered, both refused.
    sign_in("赵敏").await;
    let home = c.source().await.unwrap();
    assert!(!home.contains("href=\"/staff\"") && !home.contains("href=\"/call\""));
    for page in ["/staff", "/call"] {
        c.goto(&format!("{}{page}", ui.url())).await.unwrap();
        wait_for_page(&c, "the refusal", |h| {
            h.contains("你的岗位（回访人员）没有此职责")
        })
        .await;
    }
    screenshot(&c, "office-role-refused.png").await;
    // Her follow-up is hers: her name on the form, no pick list.
    c.goto(&format!("{}/patient/{patient}", ui.url()))
        .await
        .unwrap();
    let page = c.source().await.unwrap();
    assert!(page.contains("class=\"me\"") && !page.contains("name=\"staff\" required"));
    fill(&c, "#followup-outcome", "服药正常，血压平稳").await;
    click(&c, "#followup-save").await;
    wait_for_page(&c, "the follow-up saved", |h| h.contains("已登记回访")).await;
    let saved = b.ok(&["patient", &patient, "--json"]).json();
    assert_eq!(saved["dossier"]["followups"][0]["staff"], "赵敏", "{saved}");
    click(&c, "#logout").await;
    wait_for_page(&c, "the sign-in page", |h| h.contains("id=\"login\"")).await;

    // 王芳 is signed in here when the 主管 marks her 离岗 at the other
    // device: after the sync her next page is the sign-in page, and she
    // cannot sign in again.
    sign_in("王芳").await;
    a.ok(&["staff", "leave", "--name", "王芳"]);
    a.ok(&["sync"]);
    b.ok(&["sync"]);
    c.goto(&format!("{}/", ui.url())).await.unwrap();
    wait_for_page(&c, "signed out", |h| h.contains("id=\"login\"")).await;
    fill(&c, "#name", "王芳").await;
    fill(&c, "#password", PASSWORD).await;
    click(&c, "#login").await;
    wait_for_page(&c, "the refusal", |h| h.contains("离岗")).await;

    // A workstation whose sessions end after 6 idle seconds.
    let idle = b.workstation_with(&["--idle-minutes", "0.1"]);
    c.goto(&format!("{}/login", idle.url())).await.unwrap();
    fill(&c, "#name", "李娜").await;
    fill(&c, "#password", PASSWORD).await;
    click(&c, "#login").await;
    wait_for_page(&c, "signed in", |h| h.contains("id=\"signed-in\">李娜")).await;
    tokio::time::sleep(Duration::from_secs(7)).await;
    c.goto(&format!("{}/staff", idle.url())).await.unwrap();
    wait_for_page(&c, "signed out when idle", |h| h.contains("id=\"login\"")).await;
    c.close().await.unwrap();
}
