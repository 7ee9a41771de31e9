//! When the disk dies: a backup taken while the office writes, restored on a fresh machine,
//! brings the office back; it fetches what it wrote after the backup from its parent, and
//! its first writes after the restore are accepted everywhere — it never re-issues an
//! (actor, seq) its parent already holds (which the parent would refuse).

use std::time::Duration;

use amphi_cluster_tests::{County, eventually};

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_during_writes_restores_and_resyncs_with_nothing_lost_or_refused() {
    let mut county = County::new();
    county.status_interval_ms = 0;
    county.start_all(&["county", "chagantolgay", "bayin"]).await;
    let backup = county.root.path().join("bayin-backup.redb");

    let bayin = county.office("bayin");
    let file = bayin.create_member("Saruul").await;
    let mut members = vec![file.clone()];
    let mut activities = Vec::new();
    for n in 0..3 {
        members.push(bayin.create_member(&format!("Before {n}")).await);
        let what = format!("study before the backup {n}");
        assert_eq!(bayin.record_activity(&file, &what).await, 201);
        activities.push(what);
    }
    // The backup runs while another task keeps writing to the same office.
    let writer = {
        let bayin = county.office("bayin");
        let (admin, token) = (bayin.config.admin, bayin.node().token.clone());
        let file = file.clone();
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut done = Vec::new();
            for n in 0..6 {
                let what = format!("study during the backup {n}");
                let r = http
                    .post(format!("http://{admin}/api/v1/members/{file}/activities"))
                    .bearer_auth(&token)
                    .json(&serde_json::json!({"date": "2026-11-02", "kind": "study", "description": what, "points": 1}))
                    .send()
                    .await
                    .expect("API answers");
                assert_eq!(r.status(), 201);
                done.push(what);
            }
            done
        })
    };
    let (code, reply) = bayin
        .post(
            "/api/v1/backup",
            serde_json::json!({ "path": backup.to_str().unwrap() }),
        )
        .await;
    assert_eq!(code, 200, "{reply}");
    let (code, _) = bayin
        .post(
            "/api/v1/backup",
            serde_json::json!({ "path": backup.to_str().unwrap() }),
        )
        .await;
    assert_eq!(code, 400, "a backup never overwrites a file");
    activities.extend(writer.await.unwrap());
    // Written after the backup: only the parent will have these when the disk dies.
    for n in 0..3 {
        members.push(bayin.create_member(&format!("After {n}")).await);
        let what = format!("study after the backup {n}");
        assert_eq!(bayin.record_activity(&file, &what).await, 201);
        activities.push(what);
    }
    let expected = |list: &[String], org: &str| {
        let mut v: Vec<(String, String)> =
            list.iter().map(|a| (a.clone(), org.to_owned())).collect();
        v.sort();
        v
    };
    let bayin_org = bayin.org.to_string();
    let township = county.office("chagantolgay");
    eventually(WAIT, "the township holds every write of Bayin", || async {
        for id in &members {
            township.case_file(id).await?;
        }
        (township.activities(&file).await == expected(&activities, &bayin_org)).then_some(())
    })
    .await;

    // The disk dies. Bayin is set up again from its certificate folder and the backup,
    // while the township is down: the office writes before it can sync.
    county.stop("bayin").await;
    county.stop("chagantolgay").await;
    let bayin_config = county.office("bayin").config.clone();
    std::fs::remove_dir_all(&bayin_config.data_dir).unwrap();
    let restored = amphi_node::backup::restore(&bayin_config, &backup, false).expect("restore");
    assert!(restored.documents >= 4, "{restored:?}");
    assert!(restored.previous.is_none(), "the new machine had no store");
    county.start("bayin").await;
    let bayin = county.office("bayin");
    let (_, found) = bayin.get("/api/v1/verify").await;
    assert_eq!(found["problems"], serde_json::json!([]), "{found}");
    let what = "study after the restore".to_owned();
    assert_eq!(bayin.record_activity(&file, &what).await, 201);
    activities.push(what);

    county.start("chagantolgay").await;
    let (bayin, township) = (county.office("bayin"), county.office("chagantolgay"));
    eventually(
        WAIT,
        "Bayin and its township hold every write, before and after the backup and the restore",
        || async {
            for id in &members {
                bayin.case_file(id).await?;
            }
            let all = expected(&activities, &bayin_org);
            (bayin.activities(&file).await == all && township.activities(&file).await == all)
                .then_some(())
        },
    )
    .await;
    for office in [bayin, township] {
        let status = office.status().await;
        assert_eq!(status["refused_total"], 0, "{}: {status}", office.org);
        assert_eq!(office.quarantine_reasons().await, Vec::<String>::new());
    }
}
