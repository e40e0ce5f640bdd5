//! Three peers in their own network namespaces joined by a bridge (a LAN
//! made for the test): mDNS finds the others. A fourth peer outside that
//! LAN (in the test's own namespace, mDNS off) finds them through a
//! rendezvous point. The test creates and removes the namespaces, veth
//! pairs and bridge; without the rights to (not root, no `ip`), it says so
//! and passes without running.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::*;

/// Everything the test created, removed on drop (also on failure).
struct Lan {
    bridge: String,
    namespaces: Vec<String>,
    children: Vec<Child>,
}

impl Drop for Lan {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in &self.namespaces {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .status();
    }
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Subnet 10.213.0.0/24: the bridge is .1 (the rendezvous point and the
/// outside peer listen there), peer i is .(10 + i).
fn build_lan(tag: &str, lan: &mut Lan) -> Result<(), String> {
    ip(&[
        "link",
        "add",
        &lan.bridge,
        "type",
        "bridge",
        "mcast_snooping",
        "0",
    ])?;
    ip(&["addr", "add", "10.213.0.1/24", "dev", &lan.bridge])?;
    ip(&["link", "set", &lan.bridge, "up"])?;
    for i in 1..=3 {
        let ns = format!("sp{tag}n{i}");
        let (host, inner) = (format!("sp{tag}h{i}"), format!("sp{tag}p{i}"));
        ip(&["netns", "add", &ns])?;
        lan.namespaces.push(ns.clone());
        ip(&["link", "add", &host, "type", "veth", "peer", "name", &inner])?;
        ip(&["link", "set", &inner, "netns", &ns])?;
        ip(&["link", "set", &host, "master", &lan.bridge])?;
        ip(&["link", "set", &host, "up"])?;
        let addr = format!("10.213.0.{}/24", 10 + i);
        for cmd in [
            vec!["addr", "add", &addr, "dev", &inner],
            vec!["link", "set", &inner, "up"],
            vec!["link", "set", "lo", "up"],
            vec!["route", "add", "224.0.0.0/4", "dev", &inner],
        ] {
            let mut args = vec!["-n", &ns];
            args.extend(cmd);
            ip(&args)?;
        }
    }
    Ok(())
}

fn up(home: &Path, ns: Option<&str>, listen: &str, extra: &[&str]) -> Child {
    let mut cmd = match ns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, env!("CARGO_BIN_EXE_sotto")]);
            c.env("SOTTO_PASSPHRASE", PASS).stdin(Stdio::null());
            c
        }
        None => sotto(),
    };
    let mut child = cmd
        .arg("--home")
        .arg(home)
        .args(["p2p", "up", "--listen", listen])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let addr = first_line(&mut child, "peer: ");
    assert!(addr.contains(listen.split(':').next().unwrap()), "{addr}");
    child
}

/// `home`'s peers as (name, via).
fn peers(home: &Path) -> Vec<(String, String)> {
    json_lines(&ok(home, &["--json", "p2p", "peers"]))
        .into_iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap_or("").to_string(),
                p["via"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn describe(homes: &[PathBuf]) -> String {
    homes
        .iter()
        .map(|h| format!("{}: {:?}", h.display(), peers(h)))
        .collect::<Vec<_>>()
        .join("; ")
}

#[test]
fn mdns_on_a_namespace_lan_and_rendezvous_for_a_peer_outside_it() {
    let tag = format!("{}", std::process::id() % 100_000);
    let mut lan = Lan {
        bridge: format!("sp{tag}br"),
        namespaces: Vec::new(),
        children: Vec::new(),
    };
    if let Err(e) = build_lan(&tag, &mut lan) {
        eprintln!(
            "SKIPPED mdns_on_a_namespace_lan_and_rendezvous_for_a_peer_outside_it: \
             cannot build a network-namespace LAN here (needs root and iproute2): {e}"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("srv"));
    let names = ["alice", "bob", "carol", "dave"];
    let homes: Vec<PathBuf> = names
        .iter()
        .map(|n| register(dir.path(), n, &server))
        .collect();
    drop(server);

    let (rz, point) = rendezvous("10.213.0.1:0");
    lan.children.push(rz);
    for (i, home) in homes.iter().enumerate().take(3) {
        let ns = lan.namespaces[i].clone();
        let listen = format!("10.213.0.{}:0", 11 + i);
        let child = up(home, Some(&ns), &listen, &["--rendezvous", &point]);
        lan.children.push(child);
    }
    // dave: not on the bridge's multicast (mDNS off), only the rendezvous.
    let dave = up(
        &homes[3],
        None,
        "10.213.0.1:0",
        &["--no-mdns", "--rendezvous", &point],
    );
    lan.children.push(dave);

    for i in 0..3 {
        let what = format!("{} finding the other two by mDNS", names[i]);
        wait_until(
            &what,
            40,
            || {
                let found = peers(&homes[i]);
                (0..3).filter(|&j| j != i).all(|j| {
                    found
                        .iter()
                        .any(|(n, via)| n == names[j] && via.contains("mdns"))
                })
            },
            || describe(&homes),
        );
    }
    wait_until(
        "dave finding the LAN's three through the rendezvous point",
        40,
        || {
            let found = peers(&homes[3]);
            names[..3]
                .iter()
                .all(|n| found.iter().any(|(m, via)| m == n && !via.contains("mdns")))
                && found.iter().any(|(_, via)| via.contains("rendezvous"))
        },
        || describe(&homes),
    );
}
