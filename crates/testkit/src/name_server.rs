//! A DNS name server for tests: Debian's `dnsmasq` on a loopback port of its own, answering the
//! SRV records `_ldap._tcp.dc._msdcs.<domain>` with the test DCs, as a domain's own DNS answers
//! them. A watchdog stops it when the test process ends, however it ends.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::domain_controller::{DNS_DOMAIN, DomainController};

#[derive(Debug)]
pub struct NameServer {
    pub address: SocketAddr,
    /// Holds the watchdog's standard input open; closing it stops dnsmasq.
    _watchdog: Mutex<Child>,
}

impl NameServer {
    /// Serves one SRV record per DC, with the priority given (lower is tried first). Each
    /// record's target is the DC's address written as a name, which the agent connects to as
    /// it is, so that no address record is needed.
    pub fn start(domain_controllers: &[(&DomainController, u16)]) -> Result<NameServer> {
        let port = std::net::UdpSocket::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let mut arguments = vec![
            "--keep-in-foreground".to_owned(),
            "--conf-file=/dev/null".to_owned(),
            "--no-resolv".to_owned(),
            "--no-hosts".to_owned(),
            "--bind-interfaces".to_owned(),
            "--listen-address=127.0.0.1".to_owned(),
            format!("--port={port}"),
            "--pid-file=".to_owned(),
            "--user=root".to_owned(),
        ];
        for (dc, priority) in domain_controllers {
            arguments.push(format!(
                "--srv-host=_ldap._tcp.dc._msdcs.{DNS_DOMAIN},{},389,{priority},100",
                dc.address
            ));
        }
        let script = r#"dnsmasq "$@" >/dev/null 2>&1 &
server=$!
trap '' INT HUP TERM
cat >/dev/null
kill "$server" 2>/dev/null
wait "$server""#;
        let watchdog = Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg("watchdog")
            .args(&arguments)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting dnsmasq; is the dnsmasq-base package installed?")?;
        let address = SocketAddr::from(([127, 0, 0, 1], port));
        let server = NameServer {
            address,
            _watchdog: Mutex::new(watchdog),
        };
        server.wait_until_answering()?;
        Ok(server)
    }

    fn wait_until_answering(&self) -> Result<()> {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0")?;
        socket.set_read_timeout(Some(Duration::from_millis(100)))?;
        let query = writeback_directory::discovery::srv_query(
            1,
            &writeback_directory::discovery::dc_record_name(DNS_DOMAIN),
        )?;
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut answer = [0u8; 512];
        loop {
            socket.send_to(&query, self.address)?;
            if socket.recv(&mut answer).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("dnsmasq did not answer on {} within 10 s", self.address);
            }
        }
    }
}
