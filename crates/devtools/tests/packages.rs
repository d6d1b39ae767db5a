//! The Debian packages, installed with dpkg on this machine as an administrator would: their
//! files land where Debian expects them, each service starts as its own system user from its
//! unit's `ExecStart` (through systemd where it runs, directly otherwise), the agent registers
//! with the cloud, and one reset through the installed programs reaches the real DC. Purging
//! takes the services' users and data away again.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed step should stop the test"
)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use secrecy::SecretString;
use writeback_cli::ApiClient;
use writeback_devtools::package;
use writeback_proto::api::ResetPasswordRequest;
use writeback_proto::result::ResultCode;
use writeback_testkit::domain_controller::{BASE_DN, SERVICE_ACCOUNT, STAFF_OU};
use writeback_testkit::logs::{self, strong_password, unique_user};
use writeback_testkit::stack::enrol_administrator;
use writeback_testkit::{DomainController, NewUser};
use writeback_tls::{Fingerprint, Trust};

fn run(command: &mut Command) -> String {
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{command:?}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// `program` run as the service user `user`, as its unit would run it.
fn as_user(user: &str, program: &str) -> Command {
    let mut command = Command::new("setpriv");
    command.args([
        &format!("--reuid={user}"),
        &format!("--regid={user}"),
        "--init-groups",
        "--",
        program,
    ]);
    command
}

/// Kills the services started by hand and purges the packages, whatever the test's outcome.
struct Installed {
    services: Vec<std::process::Child>,
}

impl Drop for Installed {
    fn drop(&mut self) {
        for service in &mut self.services {
            let _ = service.kill();
            let _ = service.wait();
        }
        let _ = Command::new("dpkg")
            .args(["--purge", "writeback-agent", "writeback-cloud"])
            .stdout(Stdio::null())
            .status();
    }
}

/// Starts the installed unit `name` from its `ExecStart`, as its `User`, logging into the test
/// logs; or through systemd where systemd runs.
fn start_service(name: &str, installed: &mut Installed) {
    if Path::new("/run/systemd/system").exists() {
        run(Command::new("systemctl").args(["restart", name]));
        return;
    }
    let unit = std::fs::read_to_string(format!("/lib/systemd/system/{name}.service")).unwrap();
    let user = package::unit_user(&unit).unwrap();
    let command = package::exec_start(&unit).unwrap();
    let log = std::fs::File::create(
        logs::logs_directory()
            .unwrap()
            .join(format!("{name}-package-{}.log", std::process::id())),
    )
    .unwrap();
    let child = as_user(user, &command[0])
        .args(&command[1..])
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    installed.services.push(child);
}

#[tokio::test]
async fn the_packages_install_start_register_and_reset_a_password() {
    logs::init();
    let dc = tokio::task::spawn_blocking(DomainController::shared)
        .await
        .unwrap()
        .unwrap();
    let work = std::env::temp_dir().join(format!("writeback-packages-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    let binaries = logs::binary("writeback-cloud")
        .unwrap()
        .parent()
        .unwrap()
        .to_owned();
    let built = package::build(&binaries, &work, "0.1.0").unwrap();
    let mut installed = Installed {
        services: Vec::new(),
    };
    run(Command::new("dpkg")
        .arg("--install")
        .arg(&built.cloud)
        .arg(&built.agent));

    // Where Debian keeps each kind of file, generated from the programs themselves.
    for path in [
        "/usr/bin/writeback-cloud",
        "/usr/bin/writeback",
        "/usr/bin/writeback-agent",
        "/etc/writeback/cloud.toml",
        "/etc/writeback/agent.toml",
        "/usr/share/bash-completion/completions/writeback-agent",
        "/usr/share/zsh/vendor-completions/_writeback",
        "/usr/share/fish/vendor_completions.d/writeback-cloud.fish",
        "/usr/share/man/man1/writeback-cloud.1.gz",
        "/usr/share/man/man1/writeback-agent.1.gz",
    ] {
        assert!(Path::new(path).exists(), "{path} is not installed");
    }
    let manual =
        run(Command::new("sh").args(["-c", "zcat /usr/share/man/man1/writeback-agent.1.gz"]));
    assert!(manual.contains(".TH writeback-agent 1") && manual.contains("doctor"));
    let completion =
        std::fs::read_to_string("/usr/share/bash-completion/completions/writeback").unwrap();
    assert!(completion.contains("reset") && completion.contains("unlock"));
    for user in ["writeback-cloud", "writeback-agent"] {
        let passwd = run(Command::new("getent").args(["passwd", user]));
        assert!(passwd.contains("/usr/sbin/nologin"), "{passwd}");
        let unit = std::fs::read_to_string(format!("/lib/systemd/system/{user}.service")).unwrap();
        assert!(unit.contains("ProtectSystem=strict") && unit.contains("NoNewPrivileges=yes"));
    }

    // The cloud as installed, on a port of its own.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::write(
        "/etc/writeback/cloud.toml",
        format!("listen = \"127.0.0.1:{port}\"\ndata_dir = \"/var/lib/writeback-cloud\"\n"),
    )
    .unwrap();
    start_service("writeback-cloud", &mut installed);
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "the installed cloud did not listen"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let cloud = |arguments: &[&str]| {
        run(as_user("writeback-cloud", "/usr/bin/writeback-cloud")
            .args(["--config", "/etc/writeback/cloud.toml"])
            .args(arguments))
    };
    let fingerprint: Fingerprint = cloud(&["fingerprint"]).trim().parse().unwrap();
    let admin_password = strong_password();
    let admin_password_file = work.join("admin-password");
    std::fs::write(&admin_password_file, &admin_password).unwrap();
    run(Command::new("chmod").arg("0644").arg(&admin_password_file));
    cloud(&[
        "admin",
        "create",
        "--email",
        "admin@package.test",
        "--password-file",
        &admin_password_file.display().to_string(),
    ]);
    let token = cloud(&["token", "create", "--directory", "corp"]);
    logs::remember_secret(token.trim());

    // The agent: its configuration and bind password readable by its user only, then
    // registration as that user, then the service.
    std::fs::write(
        "/etc/writeback/agent-bind-password",
        &dc.service_account_password,
    )
    .unwrap();
    std::fs::copy(&dc.ca_file, "/etc/writeback/dc-ca.pem").unwrap();
    run(Command::new("chown").args(["root:writeback-agent", "/etc/writeback/agent-bind-password"]));
    run(Command::new("chmod").args(["0640", "/etc/writeback/agent-bind-password"]));
    run(Command::new("chmod").args(["0644", "/etc/writeback/dc-ca.pem"]));
    std::fs::write(
        "/etc/writeback/agent.toml",
        format!(
            "data_dir = \"/var/lib/writeback-agent\"\n\n[directory]\nurl = \"{}\"\nca_file = \"/etc/writeback/dc-ca.pem\"\nbind_name = \"{}\"\nbind_password_file = \"/etc/writeback/agent-bind-password\"\nbase_dn = \"{BASE_DN}\"\nallowed_ous = [\"{STAFF_OU}\"]\n",
            dc.ldaps_url(),
            dc.user_principal_name(SERVICE_ACCOUNT)
        ),
    )
    .unwrap();
    let url = format!("https://127.0.0.1:{port}");
    run(
        as_user("writeback-agent", "/usr/bin/writeback-agent").args([
            "--config",
            "/etc/writeback/agent.toml",
            "register",
            "--cloud",
            &url,
            "--token",
            token.trim(),
            "--pin",
            &fingerprint.to_string(),
            "--name",
            "packaged-agent",
        ]),
    );
    start_service("writeback-agent", &mut installed);

    // One reset through the installed cloud and agent, proven at the DC.
    let name = unique_user("pkg-");
    let old_password = strong_password();
    dc.admin()
        .await
        .unwrap()
        .create_user(&NewUser::new(&name, &old_password))
        .await
        .unwrap();
    let client = ApiClient::new(&url, &Trust::Pinned(fingerprint)).unwrap();
    let (session, _) = enrol_administrator(&client, "admin@package.test", &admin_password)
        .await
        .unwrap();
    let client = client.with_token(session.token);
    let new_password = strong_password();
    let request = ResetPasswordRequest {
        new_password: SecretString::from(new_password.clone()),
        must_change: false,
        unlock: false,
    };
    let directory = "corp".parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let answer = loop {
        let answer = client
            .reset_password(&directory, &name, &request, None)
            .await
            .unwrap();
        // Until the agent is connected and has synced the new user.
        if answer.result == ResultCode::Success || Instant::now() > deadline {
            break answer;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(answer.result, ResultCode::Success, "{}", answer.message);
    assert_eq!(dc.bind_as(&name, &new_password).await.unwrap(), Ok(()));
    assert!(dc.bind_as(&name, &old_password).await.unwrap().is_err());

    drop(installed);
    assert!(!Path::new("/usr/bin/writeback-cloud").exists());
    assert!(!Path::new("/var/lib/writeback-agent").exists());
    let gone = Command::new("getent")
        .args(["passwd", "writeback-cloud"])
        .output()
        .unwrap();
    assert!(!gone.status.success(), "purging removes the service user");
}
