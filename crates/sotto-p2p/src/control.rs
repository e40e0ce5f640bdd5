//! The daemon behind `sotto p2p up`, and the local control socket the other
//! `sotto p2p` commands of the same home talk to.
//!
//! The socket is `<home>/p2p.sock` (mode 0600: only the home's owner). One
//! request per connection, one JSON line; the daemon answers with JSON
//! lines: zero or more `{"progress": {...}}` then one `{"ok": ...}` or
//! `{"error": "..."}`. Commands name peers by the username they proved,
//! groups by title (or hex id).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{broadcast, Mutex};

use crate::error::{Error, Result};
use crate::node::{Event, FileEvent};
use crate::peer_device::PeerDevice;
use crate::shell::{peer_of, spawn, Handle, ShellConfig, ShellEvent, Status};
use crate::wire::{Id, RejectReason};

/// A request line is at most this long (a text message or a path).
const MAX_REQUEST: usize = 1 << 20;
/// How long `connect` waits for the peer to identify itself.
const CONNECT_WAIT: Duration = Duration::from_secs(15);

/// The socket of the daemon of `home`.
pub fn socket_path(home: &Path) -> PathBuf {
    home.join("p2p.sock")
}

/// What a `sotto p2p` command asks the daemon.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    Status,
    Connect {
        address: String,
    },
    /// Waits for the answer.
    Request {
        name: String,
    },
    Accept {
        name: String,
    },
    Reject {
        name: String,
    },
    Send {
        name: String,
        text: String,
    },
    /// Streams progress until the receiver checked the file.
    SendFile {
        name: String,
        path: PathBuf,
    },
    Close {
        name: String,
    },
    GroupCreate {
        title: String,
        members: Vec<String>,
    },
    GroupInvite {
        group: String,
        name: String,
    },
    GroupJoin {
        group: String,
    },
    GroupLeave {
        group: String,
    },
    GroupSend {
        group: String,
        text: String,
    },
}

/// What the daemon reports as it runs: the node's events, and what the
/// device core made of the datagrams peers sent (messages, refusals).
pub enum Report<'a> {
    Peer(&'a ShellEvent),
    Device(&'a sotto_device::Event),
}

/// The device and the node, as the socket's connections share them.
#[derive(Clone)]
struct Shared {
    handle: Handle,
    device: Arc<Mutex<PeerDevice>>,
}

/// A running daemon: the node, the device core over it, its socket and the
/// fan-out of its events.
pub struct Daemon {
    pub handle: Handle,
    device: Arc<Mutex<PeerDevice>>,
    listener: UnixListener,
    socket: PathBuf,
    events: tokio::sync::mpsc::Receiver<ShellEvent>,
    fanout: broadcast::Sender<ShellEvent>,
}

impl Daemon {
    /// Starts the node for `device` and binds `socket`; refuses when
    /// another daemon answers there.
    pub async fn start(
        mut device: PeerDevice,
        config: ShellConfig,
        socket: PathBuf,
    ) -> Result<Daemon> {
        if UnixStream::connect(&socket).await.is_ok() {
            return Err(Error::Control(format!(
                "a peer daemon already runs on {}",
                socket.display()
            )));
        }
        let _ = std::fs::remove_file(&socket);
        let listener = UnixListener::bind(&socket)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600))?;
        }
        let (handle, events) = spawn(device.identity(), config).await?;
        device.attach(handle.clone());
        // Peers of earlier runs: dialled again (failures are reported as
        // events, like any dial).
        device.redial().await?;
        let (fanout, _) = broadcast::channel(4096);
        Ok(Daemon {
            handle,
            device: Arc::new(Mutex::new(device)),
            listener,
            socket,
            events,
            fanout,
        })
    }

    /// Serves the socket and reports every event to `on_report` until the
    /// node stops. Each event goes to the device core first (sessions it
    /// may seal for, datagrams it opens and stores), in order.
    pub async fn run(mut self, mut on_report: impl FnMut(Report<'_>)) {
        loop {
            tokio::select! {
                ev = self.events.recv() => match ev {
                    Some(ev) => {
                        on_report(Report::Peer(&ev));
                        let done = self.device.lock().await.on_event(&ev).await;
                        for e in &done {
                            on_report(Report::Device(e));
                        }
                        let _ = self.fanout.send(ev);
                    }
                    None => break,
                },
                conn = self.listener.accept() => {
                    if let Ok((stream, _)) = conn {
                        let shared = Shared {
                            handle: self.handle.clone(),
                            device: self.device.clone(),
                        };
                        let events = self.fanout.subscribe();
                        tokio::spawn(serve(stream, shared, events));
                    }
                }
            }
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.socket);
    }
}

async fn write_line(w: &mut (impl AsyncWriteExt + Unpin), v: &Value) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(v).expect("JSON values serialize");
    line.push(b'\n');
    w.write_all(&line).await
}

async fn serve(stream: UnixStream, shared: Shared, events: broadcast::Receiver<ShellEvent>) {
    let (r, mut w) = stream.into_split();
    let mut line = Vec::new();
    let mut reader = BufReader::new(r).take(MAX_REQUEST as u64);
    if reader.read_until(b'\n', &mut line).await.is_err() {
        return;
    }
    let answer = match serde_json::from_slice::<Request>(&line) {
        Ok(req) => execute(req, &shared, events, &mut w).await,
        Err(e) => Err(Error::Control(format!("bad request: {e}"))),
    };
    let v = match answer {
        Ok(v) => json!({ "ok": v }),
        Err(e) => json!({ "error": e.to_string() }),
    };
    let _ = write_line(&mut w, &v).await;
}

fn find_peer(status: &Status, name: &str) -> Result<libp2p::PeerId> {
    status
        .peers
        .iter()
        .find(|p| p.name == name && p.trust.is_some_and(|t| t.may_request()))
        .and_then(|p| p.peer.parse().ok())
        .ok_or_else(|| Error::UnknownPeer(name.to_string()))
}

fn find_session(status: &Status, name: &str) -> Result<Id> {
    status
        .sessions
        .iter()
        .find(|s| s.name == name)
        .and_then(|s| parse_id(&s.session))
        .ok_or_else(|| Error::NoSession(name.to_string()))
}

fn find_group(status: &Status, group: &str) -> Result<Id> {
    status
        .groups
        .iter()
        .find(|g| g.title == group || g.id == group)
        .and_then(|g| parse_id(&g.id))
        .ok_or_else(|| Error::NoGroup(group.to_string()))
}

fn parse_id(s: &str) -> Option<Id> {
    hex::decode(s).ok()?.try_into().ok()
}

/// The status as JSON (what `p2p peers`, `requests` and `groups` show).
pub fn status_json(status: &Status) -> Value {
    let requests: Vec<Value> = status
        .requests
        .iter()
        .map(|r| {
            json!({
                "peer": r.peer.to_string(),
                "request": r.request,
                "name": r.from.name,
                "trust": r.from.trust,
                "user": r.from.user.map(|u| hex::encode(u.0)),
                "expires_at": r.deadline,
            })
        })
        .collect();
    json!({
        "addresses": status.addresses.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
        "peers": status.peers,
        "requests": requests,
        "sessions": status.sessions,
        "groups": status.groups,
    })
}

async fn execute(
    req: Request,
    shared: &Shared,
    mut events: broadcast::Receiver<ShellEvent>,
    w: &mut (impl AsyncWriteExt + Unpin),
) -> Result<Value> {
    let handle = &shared.handle;
    let status = handle.status().await?;
    match req {
        Request::Status => {
            let mut v = status_json(&status);
            let remembered = shared.device.lock().await.remembered()?;
            v["remembered"] = json!(remembered
                .iter()
                .map(|p| json!({"name": p.name, "address": p.address, "seen_at": p.seen_at}))
                .collect::<Vec<_>>());
            Ok(v)
        }
        Request::Connect { address } => {
            let addr: libp2p::Multiaddr = address
                .parse()
                .map_err(|e| Error::Address(address.clone(), format!("{e}")))?;
            let want = peer_of(&addr);
            handle.dial(addr).await?;
            let found = tokio::time::timeout(CONNECT_WAIT, async {
                loop {
                    match events.recv().await {
                        Ok(ShellEvent::Node(Event::PeerFound { peer, identity }))
                            if want.is_none_or(|w| w == peer) =>
                        {
                            return Ok(json!({"peer": peer.to_string(), "name": identity.name, "trust": identity.trust}));
                        }
                        Ok(ShellEvent::DialFailed { error, .. }) => {
                            return Err(Error::Address(address.clone(), error))
                        }
                        Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                        Err(_) => return Err(Error::Stopped),
                    }
                }
            })
            .await;
            found.unwrap_or_else(|_| {
                Err(Error::Address(
                    address,
                    "the peer did not identify itself in time".into(),
                ))
            })
        }
        Request::Request { name } => {
            let peer = find_peer(&status, &name)?;
            let prekey = shared.device.lock().await.prekey().await?;
            let request = handle.request(peer, Some(prekey)).await?;
            loop {
                match events.recv().await {
                    Ok(ShellEvent::Node(Event::SessionOpened {
                        session,
                        peer: p,
                        requester: true,
                        ..
                    })) if p == peer => return Ok(json!({"session": hex::encode(session)})),
                    Ok(ShellEvent::Node(Event::SessionRejected {
                        request: q,
                        peer: p,
                        reason,
                    })) if q == request && p == peer => {
                        return Err(Error::Rejected {
                            request,
                            by: name,
                            reason,
                        })
                    }
                    Ok(ShellEvent::Node(Event::RequestFailed {
                        request: q,
                        peer: p,
                        why,
                    })) if q == request && p == peer => {
                        return Err(Error::Control(format!("request to {name} failed: {why}")))
                    }
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(_) => return Err(Error::Stopped),
                }
            }
        }
        Request::Accept { name } => {
            let r = status
                .requests
                .iter()
                .find(|r| r.from.name == name)
                .ok_or_else(|| Error::NoRequestFrom(name.clone()))?;
            let prekey = shared.device.lock().await.prekey().await?;
            let session = handle.accept(r.peer, r.request, Some(prekey)).await?;
            Ok(json!({"session": hex::encode(session)}))
        }
        Request::Reject { name } => {
            let r = status
                .requests
                .iter()
                .find(|r| r.from.name == name)
                .ok_or_else(|| Error::NoRequestFrom(name.clone()))?;
            handle.reject(r.peer, r.request).await?;
            Ok(json!("rejected"))
        }
        Request::Send { name, text } => {
            find_session(&status, &name)?;
            let mut device = shared.device.lock().await;
            if !device.reachable(&name) {
                return Err(Error::NoSession(name));
            }
            device.send_text(&name, &text).await?;
            Ok(json!("sent"))
        }
        Request::SendFile { name, path } => {
            let session = find_session(&status, &name)?;
            let file = handle.send_file(session, path).await?;
            loop {
                match events.recv().await {
                    Ok(ShellEvent::Node(Event::File(FileEvent::Progress {
                        file: f,
                        done,
                        total,
                        incoming: false,
                    }))) if f == file => {
                        let _ = write_line(w, &json!({"progress": {"done": done, "total": total}}))
                            .await;
                    }
                    Ok(ShellEvent::Node(Event::File(FileEvent::Complete {
                        file: f, ok, ..
                    }))) if f == file => {
                        return if ok {
                            Ok(json!({"file": hex::encode(file)}))
                        } else {
                            Err(Error::NoFile(format!(
                                "{} (not received whole)",
                                hex::encode(file)
                            )))
                        };
                    }
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(_) => return Err(Error::Stopped),
                }
            }
        }
        Request::Close { name } => {
            let session = find_session(&status, &name)?;
            handle.close(session).await?;
            Ok(json!({"closed": hex::encode(session)}))
        }
        Request::GroupCreate { title, members } => {
            let sessions = members
                .iter()
                .map(|m| find_session(&status, m))
                .collect::<Result<Vec<_>>>()?;
            let g = handle.group_create(title, sessions).await?;
            Ok(json!({"group": hex::encode(g)}))
        }
        Request::GroupInvite { group, name } => {
            handle
                .group_invite(find_group(&status, &group)?, find_session(&status, &name)?)
                .await?;
            Ok(json!("invited"))
        }
        Request::GroupJoin { group } => {
            handle.group_join(find_group(&status, &group)?).await?;
            Ok(json!("join requested"))
        }
        Request::GroupLeave { group } => {
            handle.group_leave(find_group(&status, &group)?).await?;
            Ok(json!("left"))
        }
        Request::GroupSend { group, text } => {
            let group = find_group(&status, &group)?;
            shared
                .device
                .lock()
                .await
                .send_group_text(group, &text)
                .await?;
            Ok(json!("sent"))
        }
    }
}

/// Sends `req` to the daemon of `home`; `progress` sees each progress line.
pub async fn call(home: &Path, req: &Request, mut progress: impl FnMut(&Value)) -> Result<Value> {
    let socket = socket_path(home);
    let stream = UnixStream::connect(&socket)
        .await
        .map_err(|_| Error::NoDaemon(home.to_path_buf()))?;
    let (r, mut w) = stream.into_split();
    write_line(
        &mut w,
        &serde_json::to_value(req).expect("requests serialize"),
    )
    .await?;
    let mut lines = BufReader::new(r).lines();
    while let Some(line) = lines.next_line().await? {
        let v: Value = serde_json::from_str(&line).map_err(|e| Error::Control(e.to_string()))?;
        if let Some(p) = v.get("progress") {
            progress(p);
        } else if let Some(ok) = v.get("ok") {
            return Ok(ok.clone());
        } else if let Some(e) = v.get("error").and_then(|e| e.as_str()) {
            return Err(Error::Control(e.to_string()));
        }
    }
    Err(Error::Stopped)
}

/// Words for a rejection reason, as a person reads them.
pub fn reason_text(reason: RejectReason) -> &'static str {
    match reason {
        RejectReason::Declined => "declined",
        RejectReason::Unverified => "your identity was not verified",
        RejectReason::IdentityMismatch => "your key is not the one known for your name",
        RejectReason::TooManyPending => "too many pending requests",
        RejectReason::Expired => "no answer in time",
    }
}
