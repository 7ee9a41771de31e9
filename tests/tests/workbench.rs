//! The office workbench in a real headless Chromium across real nodes: an office clerk at
//! each office does the two-dwelling and transfer workflows by clicking and typing.
//!
//! Bayin (village) creates a case file (first with a wrong ID number, shown beside the field),
//! issues the two-dwelling certificate and prints it; Xingfu (community, under another
//! township) finds the member by the certificate's short code, records the report-in and a
//! comment; Bayin reviews the half year; a refused action shows the gate's reason; a form
//! without its token is refused; township Chagantolgay opens a transfer to Xingfu, which
//! accepts it in its inbox; Bayin's roster then shows the history line. Along the way: two
//! nodes on one host keep their own sessions, and the English-only switch leaves no Chinese.
//!
//! Screenshots at 1366×768 and 390×844 go to `target/workbench-*.png` (copied to
//! `docs/screenshots/` by hand when the page changes).

use std::time::Duration;

use amphi_cluster_tests::browser::{Driver, find_chromedriver, target_dir};
use amphi_cluster_tests::{County, Office, eventually};
use serde_json::json;

const XINGFU: &str = "hoboksar/hoboksar-town/xingfu";
const WAIT: Duration = Duration::from_secs(30);
const NAME: &str = "Bayarmaa Oyun";

/// A signed-in browser on one office's dashboard.
struct Desk<'a> {
    driver: &'a Driver,
    base: String,
}

impl<'a> Desk<'a> {
    /// Signs in at `office` with its admin token, as a clerk pastes it.
    async fn sign_in(driver: &'a Driver, office: &Office) -> Desk<'a> {
        let desk = Desk {
            driver,
            base: format!("http://{}", office.node().admin_addr),
        };
        desk.go("/").await;
        if driver.find("input[name=token]").await.is_some() {
            let field = driver.wait_for("input[name=token]").await;
            driver.type_into(&field, &office.node().token).await;
            driver
                .click(&driver.wait_for("form.login button").await)
                .await;
        }
        driver.wait_for("input[name=q]").await;
        desk
    }

    async fn go(&self, path: &str) {
        self.driver.goto(&format!("{}{path}", self.base)).await;
    }

    /// Types `text` into the field `css`.
    async fn fill(&self, css: &str, text: &str) {
        let field = self.driver.wait_for(css).await;
        self.driver.type_into(&field, text).await;
    }

    /// Clicks the submit button of the form `form`, waits for the next page and returns its
    /// banner (what was done, or why not).
    async fn submit(&self, form: &str) -> String {
        let button = self
            .driver
            .wait_for(&format!("{form} button[type=submit]"))
            .await;
        self.submit_with(|| self.driver.click(&button)).await
    }

    /// Does `post` (something that loads a new page) and returns the new page's banner.
    async fn submit_with<F: std::future::Future<Output = ()>>(
        &self,
        post: impl FnOnce() -> F,
    ) -> String {
        let before = self.driver.wait_for("html").await;
        post().await;
        eventually(WAIT, "the next page loads", || async {
            let now = self.driver.find("html").await?;
            (now != before).then_some(())
        })
        .await;
        let banner = self.driver.wait_for(".done, .refused, .error").await;
        self.driver.text(&banner).await
    }

    /// The text of `css` on `path`, reloading until `ready` holds for it (sync is async).
    async fn wait_until(
        &self,
        path: &str,
        css: &str,
        what: &str,
        ready: impl Fn(&str) -> bool,
    ) -> String {
        eventually(WAIT, what, || async {
            self.go(path).await;
            let element = self.driver.find(css).await?;
            let text = self.driver.text(&element).await;
            ready(&text).then_some(text)
        })
        .await
    }
}

/// Screenshots of the page at an office screen and on a phone (`target/workbench-NAME.png`
/// and `…-NAME-phone.png`); on the phone the page must not be wider than the screen.
async fn shoot(driver: &Driver, name: &str) {
    let shots = target_dir();
    driver
        .screenshot(&shots.join(format!("workbench-{name}.png")))
        .await;
    driver.resize(390, 844).await;
    let overflow = driver
        .execute(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth",
            json!([]),
        )
        .await;
    assert!(
        overflow.as_i64().is_some_and(|o| o <= 0),
        "{name} is {overflow} px wider than a phone"
    );
    driver
        .screenshot(&shots.join(format!("workbench-{name}-phone.png")))
        .await;
    driver.resize(1366, 768).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offices_do_the_two_dwelling_and_transfer_workflows_in_the_page() {
    let chromedriver = find_chromedriver();
    let mut county = County::new();
    county
        .start_all(&["county", "chagantolgay", "hoboksar-town", "bayin", "xingfu"])
        .await;
    let mut driver = Driver::start(&chromedriver).await;

    // Bayin: a new case file. A wrong ID number comes back with its message beside the field.
    let bayin = Desk::sign_in(&driver, county.office("bayin")).await;
    bayin.go("/dashboard/members/new").await;
    bayin.fill("#name", NAME).await;
    bayin.fill("#ethnicity", "蒙古族").await;
    bayin.driver.set_value("#birth_date", "1979-04-12").await;
    bayin.driver.set_value("#joined_at", "2004-07-01").await;
    bayin.fill("#id_number", "65422619").await;
    driver
        .click(&driver.wait_for("input[value=farmer-herder]").await)
        .await;
    let banner = bayin.submit("form.new-member").await;
    assert!(banner.contains("请改正标出的项目"), "{banner}");
    let message = driver
        .text(&driver.wait_for(".field.invalid .field-error").await)
        .await;
    assert!(message.contains("15 or 18 digits"), "{message}");
    let kept = driver
        .execute("return document.getElementById('name').value", json!([]))
        .await;
    assert_eq!(kept, NAME, "the form keeps what was typed");
    shoot(&driver, "new-member").await;
    driver
        .execute("document.getElementById('id_number').value = ''", json!([]))
        .await;
    let done = bayin.submit("form.new-member").await;
    assert!(done.contains("档案已建立"), "{done}");
    let url = driver.current_url().await;
    let id = url
        .split("/dashboard/members/")
        .nth(1)
        .and_then(|rest| rest.split('?').next())
        .expect("the new case file opens")
        .to_owned();

    // Bayin issues the two-dwelling certificate to Xingfu and prints it.
    bayin.fill("form.residence #org", XINGFU).await;
    bayin
        .driver
        .set_value("form.residence #until", "2027-04-30")
        .await;
    let done = bayin.submit("form.residence").await;
    assert!(done.contains("两栖党员活动证已保存"), "{done}");
    bayin
        .fill("form.activity #description", "busy-season branch meeting")
        .await;
    bayin.fill("form.activity #points", "2").await;
    assert!(bayin.submit("form.activity").await.contains("活动已记录"));
    bayin
        .go(&format!("/dashboard/members/{id}/certificate"))
        .await;
    let card = driver.text(&driver.wait_for("#certificate").await).await;
    let code = driver.text(&driver.wait_for("#short-code").await).await;
    for expected in [
        NAME,
        XINGFU,
        "两栖党员活动证",
        "2027-04-30",
        "hoboksar/chagantolgay/bayin",
    ] {
        assert!(
            card.contains(expected),
            "{expected:?} missing from the card: {card}"
        );
    }
    assert_eq!(code.len(), 9, "a short code like 3F2A-9C1B: {code}");
    shoot(&driver, "certificate").await;

    // Xingfu, in the same browser: its own session beside Bayin's. It finds the member by
    // the card's short code, records the report-in and comments on Bayin's activity.
    let xingfu = Desk::sign_in(&driver, county.office("xingfu")).await;
    let found = xingfu
        .wait_until(
            &format!("/?q={code}"),
            "#results",
            "the file reaches Xingfu",
            |t| t.contains(NAME),
        )
        .await;
    assert!(found.contains(NAME), "{found}");
    driver
        .click(
            &driver
                .wait_for(&format!("#results a[href='/dashboard/members/{id}']"))
                .await,
        )
        .await;
    assert!(xingfu.submit("form.report-in").await.contains("报到已登记"));
    xingfu
        .wait_until(
            &format!("/dashboard/members/{id}"),
            "form.comment",
            "Bayin's activity reaches Xingfu",
            |_| true,
        )
        .await;
    xingfu
        .fill(
            "form.comment #text",
            "arrived for the winter; joins Xingfu's study group",
        )
        .await;
    assert!(xingfu.submit("form.comment").await.contains("意见已加注"));
    assert!(
        driver.find("form.review").await.is_none(),
        "the residence office has no review form"
    );
    shoot(&driver, "casefile").await;

    // A refusal shows the gate's reason: Xingfu posts a review (the home office's to write).
    let message = xingfu
        .submit_with(|| async {
            driver
                .execute(
                    "const f = document.querySelector('form.activity'); \
                     f.action = f.action.replace('/activity', '/review'); \
                     f.insertAdjacentHTML('beforeend', \
                       '<input name=period value=2026H2><input name=rating value=good>'); \
                     f.submit();",
                    json!([]),
                )
                .await;
        })
        .await;
    assert!(message.contains("本组织无权办理此事项"), "{message}");

    // A form without this session's token is refused, and writes nothing.
    let cookies = driver.cmd("GET", "/cookie", None).await;
    let session = cookies
        .as_array()
        .unwrap()
        .iter()
        .find(|c| {
            c["name"]
                == amphi_node::dashboard::session_cookie(&county.office("xingfu").node().node_id)
        })
        .expect("Xingfu's session cookie")
        .clone();
    let forged = reqwest::Client::new()
        .post(format!("{}/dashboard/members/{id}/activity", xingfu.base))
        .header(
            "cookie",
            format!(
                "{}={}",
                session["name"].as_str().unwrap(),
                session["value"].as_str().unwrap()
            ),
        )
        .header("content-type", "application/x-www-form-urlencoded")
        .body("date=2026-12-01&kind=study&description=forged")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    // The two-dwelling register (台账) downloads with Chinese headers and the member in it.
    let register = reqwest::Client::new()
        .get(format!(
            "{}/dashboard/ledgers/two-dwelling.csv",
            xingfu.base
        ))
        .header(
            "cookie",
            format!(
                "{}={}",
                session["name"].as_str().unwrap(),
                session["value"].as_str().unwrap()
            ),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(register.status(), 200);
    let register = register.text().await.unwrap();
    assert!(
        register.contains("姓名") && register.contains(NAME) && register.contains(XINGFU),
        "{register}"
    );
    let activities = county.office("xingfu").activities(&id).await;
    assert!(
        activities.iter().all(|(d, _)| d != "forged"),
        "{activities:?}"
    );

    // Bayin is still signed in (its own cookie): it sees the report-in and reviews.
    let bayin = Desk::sign_in(&driver, county.office("bayin")).await;
    bayin
        .wait_until(
            &format!("/dashboard/members/{id}"),
            "#affiliation",
            "the report-in reaches Bayin",
            |t| t.contains("报到") && t.matches("20").count() >= 3,
        )
        .await;
    bayin
        .fill(
            "form.review #review_comment",
            "reported in and active at Xingfu",
        )
        .await;
    assert!(bayin.submit("form.review").await.contains("审核已保存"));
    let reviews = driver.text(&driver.wait_for("#reviews").await).await;
    assert!(
        reviews.contains("reported in and active at Xingfu"),
        "{reviews}"
    );

    // The phone number changes: the home office edits the identity; the rest stays.
    bayin.fill("form.identity #phone", "13899990000").await;
    let done = bayin.submit("form.identity").await;
    assert!(done.contains("基本信息已保存"), "{done}");
    let identity = driver.text(&driver.wait_for("#identity").await).await;
    assert!(
        identity.contains("13899990000") && identity.contains(NAME) && identity.contains("蒙古族"),
        "{identity}"
    );

    // Contact: the list of members nobody has contacted names the one with no activity and
    // no contact; the clerk records a contact person for the two-dwelling member.
    let quiet = county.office("bayin").create_member("Quiet Member").await;
    let list = bayin
        .wait_until(
            "/dashboard/contacts?days=30",
            "#contacts",
            "the contacts list",
            |t| t.contains("Quiet Member"),
        )
        .await;
    assert!(
        !list.contains(NAME),
        "active today, so not on the list: {list}"
    );
    shoot(&driver, "contacts").await;
    bayin.go(&format!("/dashboard/members/{id}")).await;
    bayin
        .fill("form.contact #person", "Batu (village liaison)")
        .await;
    assert!(
        bayin
            .submit("form.contact")
            .await
            .contains("联系情况已保存")
    );
    let affiliation = driver.text(&driver.wait_for("#affiliation").await).await;
    assert!(
        affiliation.contains("Batu (village liaison)"),
        "{affiliation}"
    );
    drop(quiet);

    // The org profile: secretary and grids with their responsible person.
    bayin.go("/dashboard/org").await;
    bayin.fill("form.profile #secretary", "Sarangerel").await;
    bayin
        .fill("form.profile #grids", "一组 = Bold\n二组 = Tuya")
        .await;
    assert!(
        bayin
            .submit("form.profile")
            .await
            .contains("组织名册已保存")
    );
    let grids = driver
        .execute("return document.getElementById('grids').value", json!([]))
        .await;
    assert_eq!(grids, "一组 = Bold\n二组 = Tuya\n");

    // English only: the switch leaves no Chinese on the page (but the link back, which
    // names its language in that language); back to Chinese.
    bayin.go(&format!("/dashboard/members/{id}")).await;
    driver
        .click(&driver.wait_for("a.lang[lang=en]").await)
        .await;
    driver.wait_for("html[lang=en]").await;
    let page = format!(
        "{}\n{}",
        driver.text(&driver.wait_for(".bar .nav").await).await,
        driver.text(&driver.wait_for("main").await).await
    );
    let chinese: String = page
        .chars()
        .filter(|c| ('\u{4e00}'..='\u{9fff}').contains(c))
        .filter(|c| !"蒙古族".contains(*c))
        .collect();
    assert!(chinese.is_empty(), "Chinese left in English: {chinese:?}");
    assert!(page.contains("Half-year review"), "{page}");
    driver
        .click(&driver.wait_for("a.lang[lang=zh-Hans]").await)
        .await;
    driver.wait_for("html[lang=zh-Hans]").await;

    // The township opens a transfer to Tebke by mistake and withdraws it from its inbox.
    let township = Desk::sign_in(&driver, county.office("chagantolgay")).await;
    township.go(&format!("/dashboard/members/{id}")).await;
    township
        .fill("form.transfer #to_org", "hoboksar/chagantolgay/tebke")
        .await;
    township
        .fill("form.transfer #reason", "moving next door")
        .await;
    let done = township.submit("form.transfer").await;
    assert!(done.contains("转接已发起"), "{done}");
    let cancel = driver.wait_for("#sent form.cancel button").await;
    let done = township.submit_with(|| driver.click(&cancel)).await;
    assert!(done.contains("转接已撤回"), "{done}");
    let sent = driver.text(&driver.wait_for("#sent").await).await;
    assert!(
        sent.contains("已撤回"),
        "the withdrawn transfer stays listed: {sent}"
    );

    // The township opens a transfer to Xingfu; Xingfu accepts it in its inbox.
    township.go(&format!("/dashboard/members/{id}")).await;
    township.fill("form.transfer #to_org", XINGFU).await;
    township
        .fill("form.transfer #reason", "settled in town for good")
        .await;
    assert!(
        township
            .submit("form.transfer")
            .await
            .contains("转接已发起")
    );
    let sent = driver.text(&driver.wait_for("#sent").await).await;
    assert!(sent.contains(NAME) && sent.contains("办理中"), "{sent}");
    let xingfu = Desk::sign_in(&driver, county.office("xingfu")).await;
    xingfu
        .wait_until(
            "/dashboard/transfers",
            "#incoming",
            "the transfer reaches Xingfu's inbox",
            |t| t.contains(NAME) && t.contains("办理中"),
        )
        .await;
    shoot(&driver, "inbox").await;
    let accept = driver.wait_for("#incoming form.accept button").await;
    let done = xingfu.submit_with(|| driver.click(&accept)).await;
    assert!(done.contains("转接已接收"), "{done}");

    // The old home's roster keeps the history line.
    let bayin = Desk::sign_in(&driver, county.office("bayin")).await;
    let history = bayin
        .wait_until(
            "/dashboard/org",
            "#roster",
            "Bayin's roster shows the member left",
            |t| t.contains(NAME),
        )
        .await;
    assert!(
        history.contains(XINGFU),
        "the line names where the member went: {history}"
    );
    shoot(&driver, "roster").await;

    // The county sees its subtree: every office below, with Bayin's and Xingfu's activity.
    let county_desk = Desk::sign_in(&driver, county.office("county")).await;
    let tree = county_desk
        .wait_until(
            "/dashboard/fleet",
            "main",
            "the county's subtree lists its offices",
            |t| {
                ["chagantolgay", "bayin", "hoboksar-town", "xingfu"]
                    .iter()
                    .all(|o| t.contains(o))
            },
        )
        .await;
    assert!(tree.contains("下级组织"), "{tree}");
    shoot(&driver, "subtree").await;

    // The overview and the ledgers page, at both sizes.
    county_desk.go("/").await;
    driver.wait_for("#sync").await;
    shoot(&driver, "overview").await;
    county_desk.go("/dashboard/ledgers").await;
    driver.wait_for("main").await;
    shoot(&driver, "ledgers").await;

    driver.quit().await;
    drop(driver);
    county.shutdown().await;
}
