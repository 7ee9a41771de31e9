//! The operator CLI against a real node process: members, activities, transfers, status and
//! fleet tables, and a clear message when the node is down.

mod common;

use std::process::Command;

use common::{AMPHI, KillOnDrop, office, run};

fn cli(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(AMPHI).args(args).output().expect("amphi runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `amphi member add` of a member homed at the office of config `c`; must succeed.
fn add_member(c: &str, name: &str) {
    let (ok, _, err) = cli(&[
        "member",
        "add",
        "--config",
        c,
        "--name",
        name,
        "--gender",
        "female",
        "--ethnicity",
        "Mongol",
        "--birth-date",
        "1971-03-02",
        "--joined-at",
        "1996-07-01",
    ]);
    assert!(ok, "{err}");
}

#[test]
fn operators_work_from_the_command_line() {
    let tmp = tempfile::tempdir().unwrap();
    let config = office(tmp.path(), "hoboksar/chagantolgay/bayin");
    let c = config.to_str().unwrap();
    let mut node = KillOnDrop(run(&config).0);

    let (ok, out, err) = cli(&[
        "member",
        "add",
        "--config",
        c,
        "--name",
        "Bayar",
        "--gender",
        "male",
        "--ethnicity",
        "Mongol",
        "--birth-date",
        "1971-03-02",
        "--joined-at",
        "1996-07-01",
    ]);
    assert!(ok, "{err}");
    let id = out.trim().to_owned();
    assert!(id.starts_with("m-"), "{out}");
    let (ok, _, err) = cli(&[
        "activity",
        "add",
        "--config",
        c,
        "--member",
        &id,
        "--date",
        "2026-11-02",
        "--kind",
        "study",
        "--description",
        "branch study",
    ]);
    assert!(ok, "{err}");
    let (ok, out, _) = cli(&["member", "show", "--config", c, &id]);
    assert!(ok);
    let case: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (
            case["name"].as_str(),
            case["activities"][0]["description"].as_str()
        ),
        (Some("Bayar"), Some("branch study"))
    );
    let (_, out, _) = cli(&["member", "list", "--config", c]);
    assert!(out.contains(&id) && out.contains("Bayar"), "{out}");

    let (ok, out, err) = cli(&[
        "transfer",
        "open",
        "--config",
        c,
        "--member",
        &id,
        "--to",
        "hoboksar/hoboksar-town/xingfu",
        "--reason",
        "moved",
    ]);
    assert!(ok, "{err}");
    let tid = out.split_whitespace().next().unwrap().to_owned();
    assert!(out.contains("open"), "{out}");
    let (ok, _, err) = cli(&["transfer", "accept", "--config", c, &tid]);
    assert!(
        !ok && err.contains("target org"),
        "only the target accepts: {err}"
    );
    let (ok, out, err) = cli(&["transfer", "cancel", "--config", c, &tid]);
    assert!(ok && out.contains("cancelled"), "{out}{err}");

    let (ok, out, _) = cli(&["status", "--config", c]);
    assert!(
        ok && out.contains("hoboksar/chagantolgay/bayin") && out.contains("members 1"),
        "{out}"
    );
    let (ok, out, _) = cli(&["status", "--config", c, "--json"]);
    assert!(ok);
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(status["org"], "hoboksar/chagantolgay/bayin");
    let (ok, out, _) = cli(&["fleet", "--config", c]);
    assert!(
        ok && out.contains("hoboksar/chagantolgay/bayin"),
        "the office lists itself: {out}"
    );

    node.0.kill().unwrap();
    node.0.wait().unwrap();
    let (ok, _, err) = cli(&["status", "--config", c]);
    assert!(!ok, "status of a stopped node fails");
    assert!(
        err.contains("not answering") && err.contains("amphi run"),
        "{err}"
    );
}

#[test]
fn backup_verify_and_restore_from_the_command_line() {
    let tmp = tempfile::tempdir().unwrap();
    let config = office(tmp.path(), "hoboksar/chagantolgay/bayin");
    let c = config.to_str().unwrap();
    let backup = tmp.path().join("bayin.backup");
    let b = backup.to_str().unwrap();
    let mut node = KillOnDrop(run(&config).0);
    let add = |name: &str| add_member(c, name);
    add("Saruul");

    // While the node runs: backup and verify go through it; restore is refused.
    let (ok, out, err) = cli(&["backup", "--config", c, "--out", b]);
    assert!(ok && out.contains("backup of"), "{out}{err}");
    let (ok, _, err) = cli(&["backup", "--config", c, "--out", b]);
    assert!(!ok && err.contains("already exists"), "{err}");
    let (ok, out, err) = cli(&["verify", "--config", c]);
    assert!(ok && out.contains("no problems"), "{out}{err}");
    let (ok, _, err) = cli(&["restore", "--config", c, b]);
    assert!(!ok && err.contains("node is running"), "{err}");
    add("Bold"); // after the backup

    // Stopped: the backup verifies and restores; the replaced store is kept aside.
    node.0.kill().unwrap();
    node.0.wait().unwrap();
    let (ok, out, err) = cli(&["verify", "--config", c, "--store", b]);
    assert!(ok && out.contains("no problems"), "{out}{err}");
    let (ok, out, err) = cli(&["restore", "--config", c, b]);
    assert!(
        ok && out.contains("restored") && out.contains("before-restore"),
        "{out}{err}"
    );
    let _node = KillOnDrop(run(&config).0);
    let (ok, out, _) = cli(&["member", "list", "--config", c]);
    assert!(
        ok && out.contains("Saruul") && !out.contains("Bold"),
        "{out}"
    );

    // A file that is not a store of this office is refused, and nothing is replaced.
    std::fs::write(tmp.path().join("junk"), b"not a store").unwrap();
    let (ok, _, err) = cli(&[
        "verify",
        "--config",
        c,
        "--store",
        tmp.path().join("junk").to_str().unwrap(),
    ]);
    assert!(!ok, "{err}");
}

#[test]
fn bundles_from_the_command_line_with_the_node_running_or_stopped() {
    let tmp = tempfile::tempdir().unwrap();
    let bayin = office(tmp.path(), "hoboksar/chagantolgay/bayin");
    let township = office(tmp.path(), "hoboksar/chagantolgay");
    let (b, t) = (bayin.to_str().unwrap(), township.to_str().unwrap());
    let file = tmp.path().join("for-township.bundle");
    let f = file.to_str().unwrap();
    // The township's node ran once (its store exists) and is stopped now.
    let mut first = KillOnDrop(run(&township).0);
    first.0.kill().unwrap();
    first.0.wait().unwrap();

    let _node = KillOnDrop(run(&bayin).0);
    add_member(b, "Saruul");
    let (ok, out, err) = cli(&[
        "bundle",
        "export",
        "--config",
        b,
        "--for",
        "hoboksar/chagantolgay",
        "--out",
        f,
    ]);
    assert!(
        ok && out.contains("bundle for hoboksar/chagantolgay"),
        "{out}{err}"
    );
    let (ok, _, err) = cli(&[
        "bundle",
        "export",
        "--config",
        b,
        "--for",
        "hoboksar/other",
        "--out",
        tmp.path().join("x").to_str().unwrap(),
    ]);
    assert!(!ok && err.contains("not a neighbour"), "{err}");

    let (ok, out, err) = cli(&["bundle", "import", "--config", t, f]);
    assert!(ok && out.contains("changes applied"), "{out}{err}");
    let (ok, out, err) = cli(&["bundle", "import", "--config", t, f]);
    assert!(ok && out.contains("nothing new"), "{out}{err}");
    std::fs::write(&file, b"AMPHIBD1 but then nothing").unwrap();
    let (ok, _, err) = cli(&["bundle", "import", "--config", t, f]);
    assert!(!ok && err.contains("refused whole"), "{err}");
}
