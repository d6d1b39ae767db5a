//! `writeback-agent doctor` and `writeback-agent grant`, run as the real binary against a Samba DC
//! of their own, for service accounts holding exactly the rights each test gives them.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed step should stop the test"
)]

use std::path::Path;
use std::sync::Arc;

use tokio::sync::{Mutex, OnceCell};
use writeback_testkit::domain_controller::{BASE_DN, DNS_DOMAIN};
use writeback_testkit::logs::{strong_password, unique_user};
use writeback_testkit::stack::{StackOptions, write_agent_config, write_private};
use writeback_testkit::{DomainController, NewUser, Stack};

const DOCTOR_OU: &str = "OU=Doctor,DC=corp,DC=example,DC=test";

/// The four writeback rights of REFERENCE.md as the doctor names them, their ACE for `SID`, and
/// whether it goes on the OU or the domain root.
const RIGHTS: [(&str, &str, bool); 4] = [
    (
        "Reset Password",
        "(OA;CIIO;CR;00299570-246d-11d0-a768-00aa006e0529;bf967aba-0de6-11d0-a285-00aa003049e2;SID)",
        true,
    ),
    (
        "Write lockoutTime",
        "(OA;CIIO;WP;28630ebf-41d5-11d1-a9c1-0000f80367c1;bf967aba-0de6-11d0-a285-00aa003049e2;SID)",
        true,
    ),
    (
        "Write pwdLastSet",
        "(OA;CIIO;WP;bf967a0a-0de6-11d0-a285-00aa003049e2;bf967aba-0de6-11d0-a285-00aa003049e2;SID)",
        true,
    ),
    (
        "Unexpire Password",
        "(OA;CI;CR;ccc2dc7d-a6ad-4a7a-8846-c04e3cc53501;;SID)",
        false,
    ),
];

static DOCTOR_DC: OnceCell<Arc<DomainController>> = OnceCell::const_new();

/// A descriptor is read, changed and written back whole, by `samba-tool` and by `grant` alike: two
/// such changes at once to the domain root would lose one.
static ACL_CHANGES: Mutex<()> = Mutex::const_new(());

/// This binary's DC, with the Doctor OU and one ordinary user in it.
async fn dc() -> Arc<DomainController> {
    DOCTOR_DC
        .get_or_init(|| async {
            let dc = tokio::task::spawn_blocking(DomainController::shared)
                .await
                .unwrap()
                .unwrap();
            let mut admin = dc.admin().await.unwrap();
            admin.add_organizational_unit(DOCTOR_OU).await.unwrap();
            admin
                .create_user(
                    &NewUser::new("doctor-patient", &strong_password()).in_container(DOCTOR_OU),
                )
                .await
                .unwrap();
            dc
        })
        .await
        .clone()
}

/// A new service account holding exactly the rights at `granted` (indexes into [`RIGHTS`]).
async fn account_with(dc: &DomainController, granted: &[usize]) -> (String, String) {
    let name = unique_user("svc-doc");
    let sid = dc.create_service_account(&name).await.unwrap();
    let _exclusive = ACL_CHANGES.lock().await;
    for index in granted {
        let (_, sddl, on_ou) = RIGHTS[*index];
        let target = if on_ou { DOCTOR_OU } else { BASE_DN };
        dc.set_acl(target, &sddl.replace("SID", &sid)).unwrap();
    }
    (name, sid)
}

struct Run {
    success: bool,
    output: String,
}

fn work_directory(account: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("writeback-doctor-{}-{account}", std::process::id()))
}

async fn agent(dc: &DomainController, account: &str, arguments: &[&str]) -> Run {
    agent_with(dc, account, arguments, |config| config).await
}

/// Runs `writeback-agent` for `account` with its configuration passed through `adjust` first.
async fn agent_with(
    dc: &DomainController,
    account: &str,
    arguments: &[&str],
    adjust: impl FnOnce(String) -> String,
) -> Run {
    let work = work_directory(account);
    std::fs::create_dir_all(&work).unwrap();
    let log = writeback_testkit::logs::logs_directory()
        .unwrap()
        .join(format!("doctor-{}-{account}.log", std::process::id()));
    let options = StackOptions {
        allowed_ous: vec![DOCTOR_OU.to_owned()],
        service_account: account.to_owned(),
        ..StackOptions::default()
    };
    let config = write_agent_config(dc, &work, &log, &options).unwrap();
    let adjusted = adjust(std::fs::read_to_string(&config).unwrap());
    std::fs::write(&config, adjusted).unwrap();
    let output =
        tokio::process::Command::new(writeback_testkit::logs::binary("writeback-agent").unwrap())
            .arg("--config")
            .arg(&config)
            .args(arguments)
            .output()
            .await
            .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    eprintln!("writeback-agent {arguments:?} as {account}:\n{text}");
    Run {
        success: output.status.success(),
        output: text,
    }
}

fn line<'a>(output: &'a str, prefix: &str) -> &'a str {
    output
        .lines()
        .find(|line| line.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line starting {prefix:?} in:\n{output}"))
}

#[tokio::test]
async fn with_exactly_the_four_rights_no_check_fails_and_a_minimum_age_warns() {
    let dc = dc().await;
    let (account, _) = account_with(&dc, &[0, 1, 2, 3]).await;
    let run = agent(&dc, &account, &["doctor"]).await;
    assert!(run.success, "{}", run.output);
    for (name, _, _) in RIGHTS {
        line(
            &run.output,
            &format!("PASS  {name} on users in {DOCTOR_OU}: granted by"),
        );
    }
    for passed in [
        "LDAPS",
        "Bind",
        "Minimum password age",
        "Least privilege",
        "Users the rights do not reach",
    ] {
        line(&run.output, &format!("PASS  {passed}:"));
    }
    line(&run.output, "WARN  Replicating Directory Changes: not held");
    assert!(!run.output.contains("FAIL"), "{}", run.output);

    let one_day = "-864000000000";
    let mut admin = dc.admin().await.unwrap();
    admin.replace(BASE_DN, "minPwdAge", one_day).await.unwrap();
    let run = agent(&dc, &account, &["doctor"]).await;
    admin.replace(BASE_DN, "minPwdAge", "0").await.unwrap();
    assert!(run.success, "a warning is not a failure: {}", run.output);
    line(&run.output, "WARN  Minimum password age: 1.0 days");

    let protected = admin
        .create_user(
            &NewUser::new(&unique_user("protected"), &strong_password()).in_container(DOCTOR_OU),
        )
        .await
        .unwrap();
    admin.replace(&protected, "adminCount", "1").await.unwrap();
    let run = agent(&dc, &account, &["doctor"]).await;
    admin.delete(&protected).await.unwrap();
    let listed = line(
        &run.output,
        "WARN  Users the rights do not reach: 1 user(s)",
    );
    assert!(
        listed.contains(&format!("{protected} (adminCount=1)")),
        "{listed}"
    );
}

#[tokio::test]
async fn a_wrong_password_fails_the_bind_and_an_untrusted_certificate_fails_ldaps() {
    let dc = dc().await;
    let (account, _) = account_with(&dc, &[0, 1, 2, 3]).await;
    let work = work_directory(&account);
    let run = agent_with(&dc, &account, &["doctor"], |config| {
        write_private(&work.join("bind-password"), "not-the-password").unwrap();
        config
    })
    .await;
    assert!(!run.success);
    line(&run.output, "PASS  LDAPS:");
    line(&run.output, "FAIL  Bind:");
    line(
        &run.output,
        "      fix: check directory.bind_name and the password",
    );

    let run = agent_with(&dc, &account, &["doctor"], |config| {
        // Without the test CA, the DC's certificate chains to nothing this host trusts.
        config
            .lines()
            .filter(|line| !line.starts_with("ca_file"))
            .collect::<Vec<_>>()
            .join("\n")
    })
    .await;
    assert!(!run.success);
    line(&run.output, "FAIL  LDAPS:");
    assert!(!run.output.contains("Bind:"), "{}", run.output);
}

#[tokio::test]
async fn each_missing_right_fails_its_check_and_names_the_missing_ace() {
    let dc = dc().await;
    for (missing, (name, sddl, _)) in RIGHTS.iter().enumerate() {
        let others: Vec<usize> = (0..RIGHTS.len())
            .filter(|index| *index != missing)
            .collect();
        let (account, sid) = account_with(&dc, &others).await;
        let run = agent(&dc, &account, &["doctor"]).await;
        assert!(!run.success, "doctor must fail without {name}");
        let failed = line(
            &run.output,
            &format!("FAIL  {name} on users in {DOCTOR_OU}"),
        );
        assert!(
            failed.ends_with(&format!("missing ACE {}", sddl.replace("SID", &sid))),
            "{failed}"
        );
        for other in others {
            line(
                &run.output,
                &format!("PASS  {} on users in", RIGHTS[other].0),
            );
        }
        assert_eq!(run.output.matches("FAIL").count(), 1, "{}", run.output);
    }
}

#[tokio::test]
async fn after_grant_is_applied_doctor_passes_and_a_reset_works() {
    let dc = dc().await;
    let (account, sid) = account_with(&dc, &[]).await;
    assert!(!agent(&dc, &account, &["doctor"]).await.success);

    let printed = agent(&dc, &account, &["grant", "--ou", DOCTOR_OU]).await;
    assert!(printed.success, "{}", printed.output);
    for (_, sddl, _) in RIGHTS {
        assert!(
            printed.output.contains(&sddl.replace("SID", &sid)),
            "{}",
            printed.output
        );
    }
    assert!(
        !agent(&dc, &account, &["doctor"]).await.success,
        "printing grants nothing"
    );

    let password_file =
        std::env::temp_dir().join(format!("writeback-doctor-admin-{}", std::process::id()));
    write_private(Path::new(&password_file), &dc.admin_password).unwrap();
    let administrator = format!("Administrator@{DNS_DOMAIN}");
    let exclusive = ACL_CHANGES.lock().await;
    let applied = agent(
        &dc,
        &account,
        &[
            "grant",
            "--ou",
            DOCTOR_OU,
            "--apply",
            "--admin-bind-name",
            &administrator,
            "--admin-password-file",
            password_file.to_str().unwrap(),
        ],
    )
    .await;
    drop(exclusive);
    assert!(applied.success, "{}", applied.output);
    let run = agent(&dc, &account, &["doctor"]).await;
    assert!(run.success, "{}", run.output);
    assert!(!run.output.contains("FAIL"), "{}", run.output);

    // The rights are real: the product resets a user with them.
    let name = unique_user("granted");
    let old_password = strong_password();
    dc.admin()
        .await
        .unwrap()
        .create_user(&NewUser::new(&name, &old_password).in_container(DOCTOR_OU))
        .await
        .unwrap();
    let stack = Stack::start_with(StackOptions {
        allowed_ous: vec![DOCTOR_OU.to_owned()],
        service_account: account.clone(),
        ..StackOptions::default()
    })
    .await
    .unwrap();
    stack.reset_and_prove(&name, &old_password).await.unwrap();
}
