//! `sotto admin --data DIR ...`: sender accounts and held messages, on the
//! server's data directory.

use std::path::{Path, PathBuf};

use sotto_server::phone::admin::Admin;

use crate::args::{AdminCommand, SenderCommand};
use crate::output;

pub fn run(
    data: &Path,
    secret_file: Option<PathBuf>,
    hold_key_file: Option<PathBuf>,
    database: Option<String>,
    json: bool,
    command: AdminCommand,
) -> Result<(), String> {
    let admin = Admin::open(
        data,
        secret_file.as_deref(),
        hold_key_file.as_deref(),
        database.as_deref(),
    )
    .map_err(|e| match &database {
        None => format!("{}: {e}", data.display()),
        Some(_) => format!("the database: {e}"),
    })?;
    let err = |e: sotto_server::phone::admin::AdminError| e.to_string();
    match command {
        AdminCommand::Sender { command } => {
            match command {
                SenderCommand::Add {
                    handle,
                    name,
                    webhook,
                } => {
                    let keys = admin.sender_add(&handle, &name, &webhook).map_err(err)?;
                    println!("api key: {}", keys.api_key);
                    if let Some(secret) = keys.webhook_secret {
                        println!("webhook secret: {secret}");
                    }
                    eprintln!("both are shown only now: store them where the sender's systems can read them");
                }
                SenderCommand::AddKey { handle } => {
                    let keys = admin.add_key(&handle).map_err(err)?;
                    println!("api key: {}", keys.api_key);
                }
                SenderCommand::RevokeKey { handle, key } => {
                    if admin.revoke_key(&handle, &key).map_err(err)? {
                        println!("revoked the key of {handle}");
                    } else {
                        return Err(format!("{handle} has no such active API key"));
                    }
                }
                SenderCommand::List => {
                    for s in admin.senders().map_err(err)? {
                        if json {
                            println!(
                                "{}",
                                serde_json::json!({"handle": s.handle, "name": s.name, "webhook": s.webhook, "created": s.created_at})
                            );
                        } else {
                            println!("{}  {:?}  {}", s.handle, s.name, s.webhook);
                        }
                    }
                }
            }
        }
        // Handled before the data directory is opened (main.rs).
        AdminCommand::Migrate { .. } => {
            return Err("`sotto admin migrate` takes --database URL, not --data".into())
        }
        AdminCommand::Held => {
            for m in admin.held().map_err(err)? {
                if json {
                    println!(
                        "{}",
                        serde_json::json!({
                            "id": m.id,
                            "sender": m.sender,
                            "status": m.status.as_str(),
                            "created": m.created_at,
                            "expires": m.expires_at,
                        })
                    );
                } else {
                    println!(
                        "{}  {}  {}  created {}  expires {}",
                        m.id,
                        m.sender,
                        m.status.as_str(),
                        output::time(m.created_at),
                        output::time(m.expires_at)
                    );
                }
            }
        }
    }
    Ok(())
}
