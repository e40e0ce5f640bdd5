//! The commands that act as one device: each opens the home's encrypted
//! store, calls the client library and prints.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sotto_client::{Client, Event};

use crate::args::{Command, DevicesCommand};
use crate::output::Printer;
use crate::{passphrase, render};

/// How long `sotto link` waits for approval.
const LINK_WAIT: Duration = Duration::from_secs(600);

pub async fn run(home: Option<PathBuf>, json: bool, command: Command) -> Result<(), String> {
    let home = home.ok_or("no home directory: pass --home DIR or set SOTTO_HOME")?;
    let out = Printer { json };
    match command {
        Command::Register {
            username,
            server,
            fingerprint,
        } => {
            let pass = passphrase::new()?;
            let (client, pinned) =
                Client::register(&home, &pass, &username, &server, fingerprint.as_deref())
                    .await
                    .map_err(|e| render::error(&e))?;
            println!(
                "registered {} on {} (server certificate {pinned})",
                client.username(),
                client.server_url()
            );
            Ok(())
        }
        Command::Init { username } => {
            let pass = passphrase::new()?;
            let client = Client::init(&home, &pass, &username).map_err(|e| render::error(&e))?;
            println!(
                "created {} on this device, with no server (user key {})",
                client.username(),
                client.user_key()
            );
            Ok(())
        }
        Command::Link {
            server,
            fingerprint,
            user,
        } => {
            let pass = passphrase::new()?;
            let pending = Client::link_start(&home, &pass, &server, fingerprint.as_deref())
                .await
                .map_err(|e| render::error(&e))?;
            if let Some(fp) = pending.fingerprint() {
                println!("server certificate {fp}");
            }
            println!("code: {}", pending.code());
            println!(
                "approve it on a device of yours with: sotto approve {}",
                pending.code()
            );
            let approved = pending
                .wait_approval(LINK_WAIT)
                .await
                .map_err(|e| render::error(&e))?;
            println!(
                "approved by {} (safety fingerprint {})",
                approved.username(),
                approved.fingerprint()
            );
            let client = approved
                .finish(user.as_deref())
                .await
                .map_err(|e| render::error(&e))?;
            println!(
                "linked: this device is now a device of {}",
                client.username()
            );
            Ok(())
        }
        Command::RegisterPhone {
            number,
            server,
            fingerprint,
            by_sms,
        } => {
            let pass = passphrase::new()?;
            let started = Client::phone_register(
                &home,
                &pass,
                &number,
                &server,
                fingerprint.as_deref(),
                by_sms,
            )
            .await
            .map_err(|e| render::error(&e))?;
            println!("server certificate {}", started.fingerprint);
            match started.sms {
                None => {
                    println!(
                        "a code was texted to {number}; it expires in {} minutes",
                        started.expires_in.div_ceil(60)
                    );
                    println!(
                        "finish with: sotto --home {} verify-phone <code>",
                        home.display()
                    );
                    Ok(())
                }
                Some((text, to)) => {
                    println!("send SMS: {text} to {to}");
                    println!("waiting for the server to receive it...");
                    let wait = Duration::from_secs(started.expires_in.max(1));
                    let (client, delivered) = Client::phone_verify(&home, &pass, None, wait)
                        .await
                        .map_err(|e| render::error(&e))?;
                    println!(
                        "registered {number} on this device (user {}); {delivered} held messages delivered: run `sotto inbox`",
                        client.username()
                    );
                    Ok(())
                }
            }
        }
        Command::VerifyPhone { otp } => {
            let pass = passphrase::existing()?;
            let (client, delivered) =
                Client::phone_verify(&home, &pass, Some(&otp), Duration::ZERO)
                    .await
                    .map_err(|e| render::error(&e))?;
            println!(
                "registered this device for the number (user {}); {delivered} held messages delivered: run `sotto inbox`",
                client.username()
            );
            Ok(())
        }
        command => {
            let pass = passphrase::existing()?;
            let mut client = Client::open(&home, &pass)
                .await
                .map_err(|e| render::error(&e))?;
            if let Command::Send { to, body } = command {
                return send(&mut client, &home, &out, &to, body).await;
            }
            device_command(&mut client, &out, command)
                .await
                .map_err(|e| render::error(&e))
        }
    }
}

async fn device_command(
    client: &mut Client,
    out: &Printer,
    command: Command,
) -> sotto_client::Result<()> {
    match command {
        Command::Approve { code } => {
            let device = client.approve(&code).await?;
            println!("approved device {}", hex::encode(device.id.0));
        }
        Command::Devices { command: None } => {
            for d in client.devices().await? {
                out.device(&d);
            }
        }
        Command::Devices {
            command: Some(DevicesCommand::Remove { device }),
        } => {
            client.remove_device(&device).await?;
            println!("removed device {device}");
        }
        Command::Inbox => {
            if client.has_server() {
                match client.sync().await {
                    Ok(report) => crate::room_cmds::report_problems(&report),
                    Err(e @ sotto_client::Error::ServerUnreachable { .. }) => eprintln!(
                        "sotto: {}; showing the history this device holds",
                        render::error(&e)
                    ),
                    Err(e) => return Err(e),
                }
            }
            let organisations = client.organisations()?;
            for m in client.history(None, None)? {
                let org = (!m.outgoing).then(|| organisations.get(&m.from)).flatten();
                out.message_from(&m, org.map(String::as_str));
            }
        }
        Command::Listen => {
            client
                .listen(|event| match event {
                    Event::Message(m) => out.message(&m),
                    Event::Rejected(r) => {
                        eprintln!("sotto: refused a datagram: {}", render::rejection(&r))
                    }
                    Event::Room(e) => println!("{}", render::room_event(&e)),
                    Event::Failed(e) => eprintln!("sotto: {}", render::error(&e.into())),
                    Event::Connected => {
                        if !out.json {
                            eprintln!("connected; waiting for messages (Ctrl-C to stop)");
                        }
                    }
                    Event::Disconnected { reason, retry_in } => {
                        eprintln!(
                            "disconnected ({reason}); retrying in {}s",
                            retry_in.as_secs()
                        )
                    }
                })
                .await?;
        }
        Command::Verify { username, accept } => {
            let number = if accept {
                client.trust(&username).await?
            } else {
                match client.verify(&username).await {
                    Err(
                        e @ sotto_client::Error::Device(sotto_client::DeviceError::KeyChanged {
                            ..
                        }),
                    ) => {
                        // Show the number for the new key, so it can be
                        // compared before it is accepted; still exit non-zero.
                        out.safety(&username, &client.presented_safety_number(&username).await?);
                        return Err(e);
                    }
                    other => other?,
                }
            };
            out.safety(&username, &number);
        }
        Command::Block { username } => {
            client.block(&username).await?;
            println!("blocked {username}");
        }
        Command::Unblock { username } => {
            client.unblock(&username).await?;
            println!("unblocked {username}");
        }
        Command::Rooms => crate::room_cmds::rooms(client, out).await?,
        Command::Room { command } => crate::room_cmds::room(client, out, command).await?,
        Command::Server { .. }
        | Command::Admin { .. }
        | Command::RegisterPhone { .. }
        | Command::VerifyPhone { .. }
        | Command::Register { .. }
        | Command::Init { .. }
        | Command::Send { .. }
        | Command::Link { .. }
        | Command::Rendezvous { .. }
        | Command::P2p { .. } => {
            unreachable!("handled by run")
        }
    }
    Ok(())
}

/// `sotto send`: through the server; when the server cannot be reached
/// (or this device has none) and this home's peer (`sotto p2p up`) has a
/// session open with the recipient, the message goes peer to peer instead,
/// and the output says so. The history is one either way.
async fn send(
    client: &mut Client,
    home: &Path,
    out: &Printer,
    to: &str,
    body: String,
) -> Result<(), String> {
    let body = if body == "-" {
        read_stdin().map_err(|e| render::error(&e))?
    } else {
        body
    };
    let why = match client.send(to, &body).await {
        Ok(sent) => {
            if out.json {
                out.message(&sent);
            } else {
                println!("sent to {} ({})", sent.to, hex::encode(sent.id));
            }
            return Ok(());
        }
        Err(
            e @ (sotto_client::Error::ServerUnreachable { .. } | sotto_client::Error::NoServer),
        ) => render::error(&e),
        Err(e) => return Err(render::error(&e)),
    };
    let req = sotto_p2p::control::Request::Send {
        name: to.to_string(),
        text: body,
    };
    match sotto_p2p::control::call(home, &req, |_| {}).await {
        Ok(_) => {
            eprintln!("sotto: {why}");
            println!("sent to {to} peer to peer (the server could not be used)");
            Ok(())
        }
        Err(p2p) => Err(format!("{why}; and not peer to peer either: {p2p}")),
    }
}

pub fn read_stdin() -> sotto_client::Result<String> {
    let mut body = String::new();
    std::io::stdin().read_to_string(&mut body)?;
    // A trailing newline from `echo` or a terminal is not part of the message.
    if body.ends_with('\n') {
        body.pop();
        if body.ends_with('\r') {
            body.pop();
        }
    }
    Ok(body)
}
