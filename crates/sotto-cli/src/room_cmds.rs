//! `sotto rooms` and `sotto room ...`: each syncs first (like `inbox`),
//! then calls the client library and prints.

use sotto_client::{Client, RoomChanges};

use crate::args::RoomCommand;
use crate::output::Printer;

/// Fetches what waits on the server; `show_refused` prints refused
/// datagrams on stderr (listings only: a failing change keeps its one line).
async fn sync(client: &mut Client, show_refused: bool) -> sotto_client::Result<()> {
    let report = client.sync().await?;
    if show_refused {
        for line in &report.rejected {
            eprintln!("sotto: refused a datagram: {line}");
        }
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
                    r.title, r.members, r.ttl, r.id
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
                println!("sent to {room} ({})", line.id);
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
            for line in client.room_set(&room, &changes).await? {
                println!("{line}");
            }
        }
        RoomCommand::Leave { room } => {
            for line in client.room_leave(&room).await? {
                println!("{line}");
            }
        }
        RoomCommand::Log { room, verify } => {
            let report = client.room_log(&room, verify)?;
            out.room_log(&report, verify);
            if let Some(broken) = report.broken {
                return Err(sotto_client::Error::RoomRefused(broken));
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
