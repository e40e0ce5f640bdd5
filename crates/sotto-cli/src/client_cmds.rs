//! The commands that act as one device: each opens the home's encrypted
//! store, calls the client library and prints.

use std::io::Read;
use std::path::PathBuf;
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
        Command::Link {
            server,
            fingerprint,
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
            let client = pending
                .wait(LINK_WAIT)
                .await
                .map_err(|e| render::error(&e))?;
            println!(
                "linked: this device is now a device of {}",
                client.username()
            );
            Ok(())
        }
        command => {
            let pass = passphrase::existing()?;
            let mut client = Client::open(&home, &pass)
                .await
                .map_err(|e| render::error(&e))?;
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
        Command::Send { to, body } => {
            let body = if body == "-" { read_stdin()? } else { body };
            let sent = client.send(&to, &body).await?;
            if out.json {
                out.message(&sent);
            } else {
                println!("sent to {} ({})", sent.to, hex::encode(sent.id));
            }
        }
        Command::Inbox => {
            let report = client.sync().await?;
            crate::room_cmds::report_problems(&report);
            for m in client.history(None, None)? {
                out.message(&m);
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
        | Command::Register { .. }
        | Command::Link { .. }
        | Command::Rendezvous { .. }
        | Command::P2p { .. } => {
            unreachable!("handled by run")
        }
    }
    Ok(())
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
