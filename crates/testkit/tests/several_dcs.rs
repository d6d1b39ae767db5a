//! One agent, two domain controllers of one domain: the second joined to the first with
//! `samba-tool domain join … DC` on its own loopback address. The agent is given the first and
//! finds both in DNS (`dnsmasq` answering the domain's SRV records). When the first stops, resets
//! go on through the second, and the doctor reports each DC on its own. This binary has its own pair
//! of DCs, the first started joinable.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed step should stop the test"
)]

use std::sync::Arc;

use writeback_proto::result::ResultCode;
use writeback_testkit::logs::{binary, strong_password};
use writeback_testkit::name_server::NameServer;
use writeback_testkit::stack::StackOptions;
use writeback_testkit::{DomainController, Stack};

#[tokio::test]
async fn resets_go_on_through_the_second_dc_when_the_first_stops() {
    let first = tokio::task::spawn_blocking(DomainController::shared_joinable)
        .await
        .unwrap()
        .unwrap();
    let stack_options = |second: &Arc<DomainController>, name_server: &NameServer| StackOptions {
        more_domain_controllers: vec![second.clone()],
        name_server: Some(name_server.address),
        ..StackOptions::default()
    };
    // Made before the join, so the second DC has them: the test DCs do not replicate afterwards.
    let second_dc_user = {
        let scratch = Stack::start().await.unwrap();
        scratch.user_with_password("twodc").await.unwrap()
    };
    let second = Arc::new(
        tokio::task::spawn_blocking({
            let first = first.clone();
            move || first.join_second()
        })
        .await
        .unwrap()
        .unwrap(),
    );
    let name_server = NameServer::start(&[(&first, 0), (&second, 10)]).unwrap();
    let stack = Stack::start_with(stack_options(&second, &name_server))
        .await
        .unwrap();
    assert!(
        stack
            .agent_log()
            .contains("domain controllers found in DNS"),
        "the agent found the DCs in DNS"
    );
    let (name, old_password) = second_dc_user;

    let through_first = strong_password();
    let response = stack
        .reset(&name, &through_first, false, false)
        .await
        .unwrap();
    assert_eq!(response.result, ResultCode::Success, "{}", response.message);
    assert_eq!(first.bind_as(&name, &through_first).await.unwrap(), Ok(()));
    assert!(first.bind_as(&name, &old_password).await.unwrap().is_err());

    // Off the runtime: the cloud runs in this process, and its heartbeats must go on meanwhile.
    tokio::task::spawn_blocking({
        let first = first.clone();
        move || first.stop()
    })
    .await
    .unwrap()
    .unwrap();
    let through_second = strong_password();
    let response = stack
        .reset(&name, &through_second, false, false)
        .await
        .unwrap();
    assert_eq!(response.result, ResultCode::Success, "{}", response.message);
    // The second DC took the write: it binds there, and the password it replaced does not (the
    // first write never reached the second DC, so that is the user's original password).
    assert_eq!(
        second.bind_as(&name, &through_second).await.unwrap(),
        Ok(())
    );
    assert!(second.bind_as(&name, &old_password).await.unwrap().is_err());
    assert!(
        stack
            .agent_log()
            .contains("moved to another domain controller"),
        "the agent says it moved"
    );

    // The doctor checks each DC on its own: the stopped one cannot be reached, the other can (the
    // test domain's Restricted OU fails its rights checks on purpose, on every DC).
    let doctor = tokio::process::Command::new(binary("writeback-agent").unwrap())
        .arg("--config")
        .arg(stack.agent_config_path())
        .arg("doctor")
        .output()
        .await
        .unwrap();
    let report = String::from_utf8_lossy(&doctor.stdout);
    assert!(!doctor.status.success(), "{report}");
    let (first_part, second_part) = report
        .split_once(&format!("Domain controller {}", second.ldaps_url()))
        .unwrap_or_else(|| panic!("no section for the second DC in:\n{report}"));
    assert!(
        first_part.contains(&format!("Domain controller {}", first.ldaps_url())),
        "{report}"
    );
    assert!(first_part.contains("FAIL  LDAPS"), "{report}");
    assert!(second_part.contains("PASS  LDAPS"), "{report}");
    assert!(second_part.contains("PASS  Bind"), "{report}");
}
