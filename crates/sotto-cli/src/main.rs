//! `sotto`: parses the command line, wires it to the client and server
//! libraries, and prints. No protocol logic lives here.

mod admin_cmds;
mod args;
mod client_cmds;
mod output;
mod p2p_cmds;
mod passphrase;
mod render;
mod room_cmds;

use std::process::ExitCode;

use clap::Parser;

use args::{AdminCommand, Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&format!("cannot start the async runtime: {e}")),
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => fail(&message),
    }
}

fn fail(message: &str) -> ExitCode {
    eprintln!("sotto: {message}");
    ExitCode::FAILURE
}

async fn run(cli: Cli) -> Result<(), String> {
    match cli.command {
        Command::Server {
            listen,
            data,
            database,
            cert,
            key,
            retention_days,
            secret_file,
            max_mailbox_mb,
            unacked_days,
            read_timeout,
            max_connections_per_ip,
            no_rate_limits,
            sms_sink,
            twilio_account_sid,
            twilio_from,
            twilio_base_url,
            sms_inbound_url,
            otp_ttl,
            hold_key_file,
            public_url,
            outgoing_ca,
        } => {
            logs();
            let mut config = sotto_server::Config::new(listen, data);
            config.database = database;
            if let (Some(cert), Some(key)) = (cert, key) {
                config.tls = sotto_server::Tls::Files { cert, key };
            }
            config.retention =
                std::time::Duration::from_secs(retention_days.saturating_mul(86_400));
            config.secret_file = secret_file;
            let limits = &mut config.limits;
            limits.set_mailbox_mb(max_mailbox_mb);
            limits.set_unacked_days(unacked_days);
            limits.header_timeout = std::time::Duration::from_secs(read_timeout.max(1));
            limits.body_timeout = limits.header_timeout;
            limits.connections_per_address = max_connections_per_ip.max(1);
            if no_rate_limits {
                limits.rates = None;
            }
            let phone = &mut config.phone;
            phone.otp_ttl = otp_ttl;
            phone.hold_key_file = hold_key_file;
            phone.public_url = public_url;
            phone.outgoing_ca = outgoing_ca;
            if let Some(sink) = sms_sink {
                phone.sms = sotto_server::phone::sms::SmsConfig::Sink(sink);
            } else if let Some(account_sid) = twilio_account_sid {
                let auth_token = std::env::var("SOTTO_TWILIO_AUTH_TOKEN").map_err(|_| {
                    "--twilio-account-sid needs the auth token in SOTTO_TWILIO_AUTH_TOKEN"
                        .to_string()
                })?;
                phone.sms = sotto_server::phone::sms::SmsConfig::Twilio(
                    sotto_server::phone::sms::TwilioConfig {
                        account_sid,
                        auth_token,
                        from: twilio_from.unwrap_or_default(),
                        base_url: twilio_base_url,
                        inbound_url: sms_inbound_url.unwrap_or_default(),
                    },
                );
            }
            let running = sotto_server::start(config)
                .await
                .map_err(|e| e.to_string())?;
            println!("listening on https://{}", running.addr);
            println!("fingerprint: {}", running.fingerprint);
            let shutdown = tokio::signal::ctrl_c();
            tokio::select! {
                r = running.wait() => r.map_err(|e| e.to_string()),
                _ = shutdown => Ok(()),
            }
        }
        Command::Admin {
            command: AdminCommand::Migrate { database },
            ..
        } => {
            logs();
            let (before, after) = tokio::task::spawn_blocking(move || {
                sotto_store::server::migrate_postgres(&database)
            })
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("cannot migrate the database: {e}"))?;
            println!("{}", render::schema_version(before, after));
            Ok(())
        }
        Command::Admin {
            data,
            secret_file,
            hold_key_file,
            database,
            command,
        } => {
            // The PostgreSQL store blocks on its own runtime: a plain thread.
            let json = cli.json;
            tokio::task::spawn_blocking(move || {
                admin_cmds::run(&data, secret_file, hold_key_file, database, json, command)
            })
            .await
            .map_err(|e| e.to_string())?
        }
        command @ (Command::Rendezvous { .. } | Command::P2p { .. }) => {
            p2p_cmds::run(cli.home, cli.json, command).await
        }
        command => client_cmds::run(cli.home, cli.json, command).await,
    }
}

/// The server's log: one line per event on standard error, filtered by
/// RUST_LOG (default: info).
fn logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}
