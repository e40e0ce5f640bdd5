//! `sotto`: parses the command line, wires it to the client and server
//! libraries, and prints. No protocol logic lives here.

mod args;
mod client_cmds;
mod output;
mod p2p_cmds;
mod passphrase;
mod render;
mod room_cmds;

use std::process::ExitCode;

use clap::Parser;

use args::{Cli, Command};

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
            cert,
            key,
            retention_days,
        } => {
            let mut config = sotto_server::Config::new(listen, data);
            if let (Some(cert), Some(key)) = (cert, key) {
                config.tls = sotto_server::Tls::Files { cert, key };
            }
            config.retention =
                std::time::Duration::from_secs(retention_days.saturating_mul(86_400));
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
        command @ (Command::Rendezvous { .. } | Command::P2p { .. }) => {
            p2p_cmds::run(cli.home, cli.json, command).await
        }
        command => client_cmds::run(cli.home, cli.json, command).await,
    }
}
