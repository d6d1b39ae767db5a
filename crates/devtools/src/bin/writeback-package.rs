//! `cargo xtask package`: Debian packages of the cloud (with the `writeback` command line) and of
//! the agent, from the release build, into `target/packages`.

use anyhow::{Context, Result};

fn main() -> Result<()> {
    let root = std::env::current_dir()?;
    let release = root.join("target/release");
    let out = root.join("target/packages");
    let built = writeback_devtools::package::build(&release, &out, env!("CARGO_PKG_VERSION"))
        .context("building the packages")?;
    for package in [&built.cloud, &built.agent] {
        let size = std::fs::metadata(package)?.len();
        println!("{} ({} KiB)", package.display(), size / 1024);
    }
    println!(
        "install with: dpkg --install {} {}",
        built.cloud.display(),
        built.agent.display()
    );
    Ok(())
}
