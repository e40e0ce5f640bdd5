//! `sotto rooms` and `sotto room ...`: each syncs first (like `inbox`),
//! then calls the client library and prints.

use sotto_client::{Client, RoomChanges, SyncReport};

use crate::args::RoomCommand;
use crate::output::Printer;
use crate::render;

/// Prints refused datagrams and failed background work on stderr.
pub fn report_problems(report: &SyncReport) {
    for r in &report.rejected {
        eprintln!("sotto: refused a datagram: {}", render::rejection(r));
    }
    for e in &report.failures {
        eprintln!("sotto: {e}");
    }
}

/// Fetches what waits on the server; `show_refused` prints refused
/// datagrams on stderr (listings only: a failing change keeps its one line).
async fn sync(client: &mut Client, show_refused: bool) -> sotto_client::Result<()> {
    let report = client.sync().await?;
    if show_refused {
        report_problems(&report);
    }
    Ok(())
}

pub async fn rooms(client: &mut Client, out: &Printer) -> sotto_client::Result<()> {
    sync(client, true).await?;
    for r in client.rooms()? {
        out.room(&r);
    }
    Ok(())
}

pub async fn room(
    client: &mut Client,
    out: &Printer,
    command: RoomCommand,
) -> sotto_client::Result<()> {
    let listing = matches!(
        command,
        RoomCommand::Show { .. } | RoomCommand::Search { .. } | RoomCommand::Log { .. }
    );
    sync(client, listing).await?;
    match command {
        RoomCommand::Create {
            title,
            description,
            ttl,
            members,
            admins,
        } => {
            let r = client
                .room_create(&title, &description, ttl, &members, &admins)
                .await?;
            if out.json {
                out.room(&r);
            } else {
                println!(
                    "created room \"{}\" ({} members, messages disappear: {}) id {}",
                    r.title,
                    r.members,
                    r.ttl,
                    hex::encode(r.group.0)
                );
            }
        }
        RoomCommand::Send { room, text } => {
            let text = if text == "-" {
                crate::client_cmds::read_stdin()?
            } else {
                text
            };
            let line = client.room_send(&room, &text).await?;
            if out.json {
                out.room_line(&line);
            } else {
                println!("sent to {room} ({})", hex::encode(line.message_id));
            }
        }
        RoomCommand::Show { room } => out.room_view(&client.room_show(&room)?),
        RoomCommand::Search { room, text } => {
            for l in client.room_search(&room, &text)? {
                out.room_line(&l);
            }
        }
        RoomCommand::Set {
            room,
            title,
            description,
            ttl,
            add,
            remove,
            admin,
            unadmin,
            delete,
        } => {
            let changes = RoomChanges {
                title,
                description,
                ttl,
                add,
                remove,
                admin,
                unadmin,
                delete,
            };
            for e in client.room_set(&room, &changes).await? {
                println!("{}", render::room_event(&e));
            }
        }
        RoomCommand::Leave { room } => {
            for e in client.room_leave(&room).await? {
                println!("{}", render::room_event(&e));
            }
        }
        RoomCommand::Log { room, verify } => {
            let report = client.room_log(&room, verify)?;
            out.room_log(&report, verify);
            if let Some(broken) = report.broken {
                return Err(
                    sotto_client::DeviceError::Room(sotto_client::RoomRefusal::Broken(broken))
                        .into(),
                );
            }
        }
        RoomCommand::Recover { room, from } => {
            client.room_recover(&room, from.as_deref()).await?;
            println!("asked {} for the history of {room}; it arrives with the next `sotto room show` or `sotto inbox`",
                from.as_deref().unwrap_or("your other devices"));
        }
    }
    Ok(())
}
