//! `sotto rendezvous` and `sotto p2p ...`: peer to peer with no server.
//! `p2p up` runs this home's device as a peer in the foreground; the other
//! `p2p` commands talk to it through the home's control socket.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::Subcommand;
use serde_json::Value;
use sotto_p2p::control::{self, Daemon, Report, Request};
use sotto_p2p::node::{FileEvent, GroupEvent};
use sotto_p2p::{Event, PeerDevice, ShellConfig, ShellEvent};

use crate::args::Command;
use crate::output::Printer;
use crate::{passphrase, render};

#[derive(Subcommand, Debug)]
pub enum P2pCommand {
    /// Run this device as a peer (foreground): prints "peer: <multiaddr>"
    /// for each address, then what happens (peers, requests, sessions,
    /// files). Other `sotto p2p` commands of this home talk to it.
    Up {
        /// Address to listen on: IP:PORT (port 0 picks one) or a multiaddr.
        #[arg(long, default_value = "0.0.0.0:0")]
        listen: String,
        /// A rendezvous point ("rendezvous: <multiaddr>" as `sotto
        /// rendezvous` printed it); repeatable.
        #[arg(long)]
        rendezvous: Vec<String>,
        /// No local discovery (multicast DNS).
        #[arg(long)]
        no_mdns: bool,
    },
    /// Peers found (mDNS, rendezvous, explicit), with the user each proves
    /// to be: verified (the key you know for that name), first-seen (a
    /// name new to you), MISMATCH (another key than the one you know) or
    /// unverified (no proof).
    Peers,
    /// Connect to a peer by address ("peer: <multiaddr>" as it printed).
    Connect { address: String },
    /// Ask USER for a session; waits for the answer: prints "accepted",
    /// or fails with "rejected by USER".
    Request { user: String },
    /// Session requests waiting for your answer.
    Requests,
    /// Accept USER's session request.
    Accept { user: String },
    /// Reject USER's session request (USER is told).
    Reject { user: String },
    /// Send TEXT inside the session with USER: sealed by this device's
    /// core like any message, it shows in USER's `inbox` (and in yours).
    Send { user: String, text: String },
    /// Send a file inside the session with USER (progress on both sides;
    /// USER finds it under the home's files/ once every byte arrived,
    /// each chunk authenticated under the session's keys).
    SendFile { user: String, path: PathBuf },
    /// End the session with USER; its keys are erased on both sides.
    Close { user: String },
    /// Group sessions: hosted here, joined or invited to.
    Groups,
    /// Group sessions (pairwise sessions around the host).
    Group {
        #[command(subcommand)]
        command: GroupCommand,
    },
}

#[derive(Subcommand, Debug)]
pub enum GroupCommand {
    /// Create a group session hosted here; invites the members (each needs
    /// an open session with you).
    Create {
        title: String,
        #[arg(long, value_delimiter = ',')]
        members: Vec<String>,
    },
    /// Invite USER (with an open session) to GROUP you host.
    Invite { group: String, user: String },
    /// Join GROUP you were invited to.
    Join { group: String },
    /// Leave GROUP (the host leaving ends it for everyone).
    Leave { group: String },
    /// Send TEXT to every member of GROUP (sealed by you for each member;
    /// in their `inbox` as to "#GROUP").
    Send { group: String, text: String },
}

fn multiaddr(s: &str) -> Result<sotto_p2p::Multiaddr, String> {
    if s.starts_with('/') {
        return s.parse().map_err(|e| format!("bad address {s:?}: {e}"));
    }
    let addr: SocketAddr = s
        .parse()
        .map_err(|_| format!("bad address {s:?}: use IP:PORT or a multiaddr"))?;
    let ip = match addr.ip() {
        std::net::IpAddr::V4(ip) => format!("/ip4/{ip}"),
        std::net::IpAddr::V6(ip) => format!("/ip6/{ip}"),
    };
    Ok(format!("{ip}/tcp/{}", addr.port())
        .parse()
        .expect("valid multiaddr"))
}

pub async fn run(home: Option<PathBuf>, json: bool, command: Command) -> Result<(), String> {
    match command {
        Command::Rendezvous { listen } => {
            let point = sotto_p2p::rendezvous::serve(multiaddr(&listen)?)
                .await
                .map_err(|e| e.to_string())?;
            println!("rendezvous: {}", point.address);
            let _ = std::io::stdout().flush();
            let _ = tokio::signal::ctrl_c().await;
            point.stop().await;
            Ok(())
        }
        Command::P2p { command } => {
            let home = home.ok_or("no home directory: pass --home DIR or set SOTTO_HOME")?;
            p2p(&home, json, command).await
        }
        _ => unreachable!("routed by main"),
    }
}

async fn p2p(home: &Path, json: bool, command: P2pCommand) -> Result<(), String> {
    let req = match command {
        P2pCommand::Up {
            listen,
            rendezvous,
            no_mdns,
        } => return up(home, json, &listen, &rendezvous, no_mdns).await,
        P2pCommand::Peers | P2pCommand::Requests | P2pCommand::Groups => {
            let status = call(home, &Request::Status).await?;
            let (key, line): (&str, fn(&Value) -> String) = match command {
                P2pCommand::Peers => ("peers", peer_line),
                P2pCommand::Requests => ("requests", request_line),
                _ => ("groups", group_line),
            };
            for item in status[key].as_array().into_iter().flatten() {
                if json {
                    println!("{item}");
                } else {
                    println!("{}", line(item));
                }
            }
            if key == "peers" {
                // Peers of earlier runs not connected now.
                let connected = |n: &str| {
                    status["peers"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|p| p["name"] == n)
                };
                for r in status["remembered"].as_array().into_iter().flatten() {
                    let name = r["name"].as_str().unwrap_or("?");
                    if connected(name) {
                        continue;
                    }
                    if json {
                        println!("{}", serde_json::json!({"name": name, "remembered": r}));
                    } else {
                        println!(
                            "{name}  remembered (not connected)  last at {}",
                            r["address"].as_str().unwrap_or("?")
                        );
                    }
                }
            }
            return Ok(());
        }
        P2pCommand::Connect { address } => Request::Connect { address },
        P2pCommand::Request { user } => {
            call(home, &Request::Request { name: user }).await?;
            println!("accepted");
            return Ok(());
        }
        P2pCommand::Accept { user } => Request::Accept { name: user },
        P2pCommand::Reject { user } => Request::Reject { name: user },
        P2pCommand::Send { user, text } => Request::Send { name: user, text },
        P2pCommand::SendFile { user, path } => {
            let path =
                std::fs::canonicalize(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            let req = Request::SendFile { name: user, path };
            control::call(home, &req, |p| {
                let (done, total) = (
                    p["done"].as_u64().unwrap_or(0),
                    p["total"].as_u64().unwrap_or(0),
                );
                eprint!("\r{}", progress_bar(done, total));
            })
            .await
            .map_err(|e| e.to_string())?;
            eprintln!();
            println!("sent and checked");
            return Ok(());
        }
        P2pCommand::Close { user } => Request::Close { name: user },
        P2pCommand::Group { command } => match command {
            GroupCommand::Create { title, members } => Request::GroupCreate { title, members },
            GroupCommand::Invite { group, user } => Request::GroupInvite { group, name: user },
            GroupCommand::Join { group } => Request::GroupJoin { group },
            GroupCommand::Leave { group } => Request::GroupLeave { group },
            GroupCommand::Send { group, text } => Request::GroupSend { group, text },
        },
    };
    let answer = call(home, &req).await?;
    match answer {
        Value::String(s) => println!("{s}"),
        other => println!("{other}"),
    }
    Ok(())
}

async fn call(home: &Path, req: &Request) -> Result<Value, String> {
    control::call(home, req, |_| {})
        .await
        .map_err(|e| e.to_string())
}

async fn up(
    home: &Path,
    json: bool,
    listen: &str,
    rendezvous: &[String],
    no_mdns: bool,
) -> Result<(), String> {
    let pass = passphrase::existing()?;
    let device = PeerDevice::open(home, &pass).map_err(|e| match e {
        sotto_p2p::Error::Device(sotto_client::DeviceError::NoAccount) => format!(
            "{} holds no device yet: run `sotto init NAME` (no server) or `sotto register` first",
            home.display()
        ),
        other => other.to_string(),
    })?;
    let known = device.contacts().map_err(|e| e.to_string())?;
    let mut config = ShellConfig::new(home.join("files"));
    config.listen = vec![multiaddr(listen)?];
    config.mdns = !no_mdns;
    config.rendezvous = rendezvous
        .iter()
        .map(|r| multiaddr(r))
        .collect::<Result<_, _>>()?;
    config.node.known.extend(known);
    let daemon = Daemon::start(device, config, control::socket_path(home))
        .await
        .map_err(|e| e.to_string())?;
    for a in daemon.handle.addresses() {
        println!("peer: {a}");
    }
    let _ = std::io::stdout().flush();
    let handle = daemon.handle.clone();
    tokio::select! {
        _ = daemon.run(|r| match r {
            Report::Peer(ev) => print_event(ev, json),
            Report::Device(ev) => print_device_event(ev, json),
        }) => {}
        _ = tokio::signal::ctrl_c() => handle.shutdown().await,
    }
    Ok(())
}

fn progress_bar(done: u64, total: u64) -> String {
    let pct = (done * 100).checked_div(total).unwrap_or(100);
    let filled = (pct / 5) as usize;
    format!(
        "[{}{}] {pct:3}% {} / {} bytes",
        "#".repeat(filled),
        ".".repeat(20 - filled),
        done,
        total
    )
}

fn peer_line(p: &Value) -> String {
    let trust = match p["trust"].as_str() {
        Some("verified") => "verified",
        Some("first_seen") => "first-seen",
        Some("key_mismatch") => "MISMATCH: not the key you know for this name",
        Some(_) => "unverified",
        None => "not identified yet",
    };
    let name = p["name"].as_str().filter(|n| !n.is_empty()).unwrap_or("?");
    format!(
        "{name}  {trust}  via {}  {}",
        p["via"].as_str().unwrap_or("?"),
        p["peer"].as_str().unwrap_or("")
    )
}

fn request_line(r: &Value) -> String {
    format!(
        "{}  ({})  request {}",
        r["name"].as_str().unwrap_or("?"),
        r["trust"].as_str().unwrap_or("?"),
        r["request"]
    )
}

fn group_line(g: &Value) -> String {
    let role = if g["host"].as_bool() == Some(true) {
        "host"
    } else if g["joined"].as_bool() == Some(true) {
        "member"
    } else {
        "invited"
    };
    let members: Vec<&str> = g["members"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m.as_str())
        .collect();
    format!(
        "{}  {role}  members: {}",
        g["title"].as_str().unwrap_or("?"),
        members.join(", ")
    )
}

/// What the device core made of a datagram from a peer: a message as
/// `inbox` shows it, or why it was refused.
fn print_device_event(ev: &sotto_client::DeviceEvent, json: bool) {
    use sotto_client::DeviceEvent as E;
    match ev {
        E::Message(m) => Printer { json }.message(m),
        E::Rejected(r) => eprintln!("sotto: refused a datagram: {}", render::rejection(r)),
        E::Failed(e) => eprintln!("sotto: {e}"),
        _ => return,
    }
    let _ = std::io::stdout().flush();
}

/// One line per event of the running peer (a JSON object with `--json`).
fn print_event(ev: &ShellEvent, json: bool) {
    let line = match ev {
        ShellEvent::Node(Event::PeerFound { identity, .. }) => {
            format!("found {} ({:?})", identity.name, identity.trust)
        }
        ShellEvent::Node(Event::PeerLost { peer }) => format!("lost {peer}"),
        ShellEvent::Node(Event::SessionRequested { from, .. }) => {
            format!(
                "{} asks for a session: sotto p2p accept {0} | sotto p2p reject {0}",
                from.name
            )
        }
        ShellEvent::Node(Event::SessionOpened { name, .. }) => format!("session open with {name}"),
        ShellEvent::Node(Event::SessionRejected { reason, .. }) => {
            format!("request rejected ({})", control::reason_text(*reason))
        }
        ShellEvent::Node(Event::SessionClosed { by_peer, .. }) => {
            format!(
                "session closed{}; its keys are erased",
                if *by_peer { " by the peer" } else { "" }
            )
        }
        ShellEvent::Node(Event::Datagram { data, .. }) => {
            format!("datagram received ({} bytes)", data.len())
        }
        ShellEvent::Node(Event::File(FileEvent::Offered { name, size, .. })) => {
            format!("receiving {name} ({size} bytes)")
        }
        ShellEvent::Node(Event::File(FileEvent::Progress {
            done,
            total,
            incoming: true,
            ..
        })) => {
            format!("receiving {}", progress_bar(*done, *total))
        }
        ShellEvent::Node(Event::File(FileEvent::Complete {
            name, incoming, ok, ..
        })) => format!(
            "{} {name}: {}",
            if *incoming { "received" } else { "sent" },
            if *ok {
                "complete, every chunk checked"
            } else {
                "failed"
            }
        ),
        ShellEvent::FileSaved { path, .. } => format!("saved {}", path.display()),
        ShellEvent::FileRefused { reason, .. } => format!("file refused: {reason}"),
        ShellEvent::Node(Event::Group(GroupEvent::Invited { title, host, .. })) => {
            format!("[{title}] {host} invites you: sotto p2p group join {title}")
        }
        ShellEvent::Node(Event::Group(GroupEvent::Joined { title, name, .. })) => {
            format!("[{title}] {name} joined")
        }
        ShellEvent::Node(Event::Group(GroupEvent::Left { title, name, .. })) => {
            format!("[{title}] {name} left")
        }
        ShellEvent::Node(Event::Group(GroupEvent::Message {
            title, from, data, ..
        })) => {
            format!("[{title}] {from}: message ({} bytes)", data.len())
        }
        ShellEvent::Node(Event::Group(GroupEvent::Closed { title, .. })) => {
            format!("[{title}] ended")
        }
        ShellEvent::DialFailed { address, error } => format!("cannot reach {address}: {error}"),
        _ => return,
    };
    if json {
        println!("{}", serde_json::json!({ "event": line }));
    } else {
        println!("{line}");
    }
    let _ = std::io::stdout().flush();
}
