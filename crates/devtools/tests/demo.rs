//! The README's five minutes with the demo, driven against the demo itself (`writeback-demo`,
//! what `./scripts/demo.sh` runs) in headless Chromium: reset alice's forgotten password with
//! the code the demo prints, unlock bob, and an administrator reset of carol with must-change
//! through the CLI; each proven by binding to the demo's DC.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed step should stop the test"
)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ldap3::{LdapConnAsync, LdapConnSettings};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use writeback_testkit::browser::Browser;
use writeback_testkit::domain_controller::refusal_code;
use writeback_testkit::logs;
use writeback_testkit::mail::code_in;
use writeback_testkit::stack::{Authenticator, write_private};

/// The demo, its printed lines as they come.
struct Demo {
    process: Child,
    printed: Arc<Mutex<Vec<String>>>,
}

impl Demo {
    async fn start(work: &std::path::Path, port: u16) -> Demo {
        let mut process = Command::new(logs::binary("writeback-demo").unwrap())
            .args(["--listen", &format!("127.0.0.1:{port}"), "--work"])
            .arg(work)
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let printed = Arc::new(Mutex::new(Vec::new()));
        let mut lines = BufReader::new(process.stdout.take().unwrap()).lines();
        let sink = printed.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                sink.lock().unwrap().push(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(300);
        while !printed
            .lock()
            .unwrap()
            .iter()
            .any(|line| line.contains("Press Ctrl-C"))
        {
            if let Some(status) = process.try_wait().unwrap() {
                panic!(
                    "the demo stopped ({status}) before it was ready:\n{}",
                    printed.lock().unwrap().join("\n")
                );
            }
            assert!(Instant::now() < deadline, "the demo was not ready in 300 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Demo { process, printed }
    }

    fn lines(&self) -> Vec<String> {
        self.printed.lock().unwrap().clone()
    }

    /// What follows `label` on the line that starts with it, up to the first double space.
    fn value(&self, label: &str) -> String {
        self.lines()
            .iter()
            .find_map(|line| line.trim_start().strip_prefix(label).map(str::trim))
            .map(|rest| rest.split("  ").next().unwrap_or(rest).to_owned())
            .unwrap_or_else(|| panic!("the demo printed no {label:?}"))
    }

    /// The code in the first mail to `to` the demo printed after line `after`.
    async fn code_mailed_to(&self, to: &str, after: usize) -> String {
        let start = self
            .wait_for_line_after(after, |line| line.contains(&format!("mail to {to}")))
            .await;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let body = self.lines()[start + 1..]
                .iter()
                .take_while(|line| !line.contains("── mail to"))
                .cloned()
                .collect::<Vec<_>>()
                .join("\n");
            if let Some(code) = code_in(&body) {
                return code;
            }
            assert!(Instant::now() < deadline, "no code in the mail: {body}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn wait_for_line_after(&self, after: usize, wanted: impl Fn(&str) -> bool) -> usize {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(index) = self
                .lines()
                .iter()
                .skip(after)
                .position(|line| wanted(line))
            {
                return after + index;
            }
            assert!(
                Instant::now() < deadline,
                "the demo printed no such mail:\n{}",
                self.lines().join("\n")
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Binds to the demo's DC as `name`: `Ok` or the DC's `data` code (773: must change).
async fn bind(dc_url: &str, name: &str, password: &str) -> Result<(), String> {
    let settings = LdapConnSettings::new().set_no_tls_verify(true);
    let (driver, mut ldap) = LdapConnAsync::with_settings(settings, dc_url)
        .await
        .unwrap();
    ldap3::drive!(driver);
    let result = ldap
        .simple_bind(&format!("{name}@corp.example.test"), password)
        .await
        .unwrap();
    let _ = ldap.unbind().await;
    if result.rc == 0 {
        return Ok(());
    }
    Err(refusal_code(&result.text))
}

async fn title(browser: &Browser) -> String {
    browser.text("#title").await.unwrap().unwrap_or_default()
}

#[tokio::test]
async fn the_readme_walkthrough_works_against_the_demo_itself() {
    logs::init();
    let work = std::env::temp_dir().join(format!("writeback-demo-test-{}", std::process::id()));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let started = Instant::now();
    let mut demo = Demo::start(&work, port).await;
    println!(
        "the demo printed its portal address {:.0} s after it started",
        started.elapsed().as_secs_f64()
    );
    let portal = demo.value("Self-service portal:");
    assert_eq!(portal, format!("https://127.0.0.1:{port}/portal"));
    let dc_url = demo
        .value("Directory:")
        .split(" at ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap()
        .to_owned();
    let browser = Browser::launch("demo").await.unwrap();

    // 1. Forgot password: alice, a code mailed and printed, a new password.
    browser.goto(&portal).await.unwrap();
    browser.press("#forgot").await.unwrap();
    browser.fill("#account", "alice").await.unwrap();
    browser.press("#next").await.unwrap();
    let before = demo.lines().len();
    browser.press("#method-email").await.unwrap();
    let code = demo.code_mailed_to("alice", before).await;
    browser.fill("#code", &code).await.unwrap();
    browser.press("#verify").await.unwrap();
    assert_eq!(title(&browser).await, "Choose a new password");
    let alice_password = logs::remember_secret("Lantern-Harbour-Quay-61");
    browser
        .fill("#new_password", &alice_password)
        .await
        .unwrap();
    browser
        .fill("#confirm_password", &alice_password)
        .await
        .unwrap();
    browser.press("#submit").await.unwrap();
    assert_eq!(title(&browser).await, "Your password was changed");
    browser.screenshot("demo-alice-reset").await.unwrap();
    assert_eq!(bind(&dc_url, "alice", &alice_password).await, Ok(()));
    assert!(bind(&dc_url, "alice", "Alice-Start-2026!").await.is_err());

    // 2. Unlock: bob, locked out by the demo, proves it with a mailed code.
    assert_eq!(
        bind(&dc_url, "bob", "Bob-Start-2026!").await,
        Err("775".into()),
        "the demo locks bob out"
    );
    browser.goto(&portal).await.unwrap();
    browser.press("#unlock").await.unwrap();
    browser.fill("#account", "bob").await.unwrap();
    browser.press("#next").await.unwrap();
    let before = demo.lines().len();
    browser.press("#method-email").await.unwrap();
    let code = demo.code_mailed_to("bob", before).await;
    browser.fill("#code", &code).await.unwrap();
    browser.press("#verify").await.unwrap();
    assert_eq!(title(&browser).await, "Unlock your account");
    browser.press("#submit").await.unwrap();
    assert_eq!(title(&browser).await, "Your account is unlocked");
    browser.screenshot("demo-bob-unlocked").await.unwrap();
    assert_eq!(bind(&dc_url, "bob", "Bob-Start-2026!").await, Ok(()));

    // 3. An administrator resets carol with must-change, through the CLI as printed.
    let key = demo.value("Authenticator key:");
    let authenticator =
        Authenticator::new(writeback_cloud::service::totp::decode_base32(&key).unwrap());
    let administrator = demo.value("Administrator:");
    let (email, admin_password) = administrator.split_once(" / ").unwrap();
    let session = work.join("cli-session.json");
    let password_file = work.join("cli-password");
    write_private(&password_file, admin_password).unwrap();
    let pin = demo.value("Certificate pin:");
    let cli = |arguments: Vec<String>| {
        let session = session.clone();
        async move {
            Command::new(logs::binary("writeback").unwrap())
                .arg("--session-file")
                .arg(&session)
                .args(arguments)
                .output()
                .await
                .unwrap()
        }
    };
    let login = cli(vec![
        "login".into(),
        "--url".into(),
        format!("https://127.0.0.1:{port}"),
        "--pin".into(),
        pin,
        "--email".into(),
        email.to_owned(),
        "--password-file".into(),
        password_file.display().to_string(),
        "--totp-code".into(),
        authenticator.fresh_code().await,
    ])
    .await;
    assert!(login.status.success(), "{login:?}");
    let carol_password = logs::remember_secret("Meadow-Copper-Kite-47");
    let carol_file = work.join("carol-password");
    write_private(&carol_file, &carol_password).unwrap();
    let reset = cli(vec![
        "reset".into(),
        "corp".into(),
        "carol".into(),
        "--must-change".into(),
        "--password-file".into(),
        carol_file.display().to_string(),
    ])
    .await;
    let told = String::from_utf8_lossy(&reset.stdout).into_owned();
    assert!(reset.status.success(), "{told}");
    assert!(told.contains("The password was reset"), "{told}");
    // The DC asks carol for a new password at her next sign-in.
    assert_eq!(
        bind(&dc_url, "carol", &carol_password).await,
        Err("773".into())
    );

    let _ = Command::new("kill")
        .args(["-INT", &demo.process.id().unwrap().to_string()])
        .status()
        .await;
    let stopped = tokio::time::timeout(Duration::from_secs(60), demo.process.wait())
        .await
        .expect("the demo stops on Ctrl-C")
        .unwrap();
    assert!(stopped.success(), "{stopped:?}");
    assert!(
        !work.join("cloud").exists(),
        "the demo removes what it made"
    );
}
