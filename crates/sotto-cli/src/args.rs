//! The command line: every command, flag and its help text.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use sotto_client::Ttl;

/// sotto: end-to-end encrypted messaging.
///
/// Only the intended devices can read a message; the server stores and
/// forwards ciphertext it cannot open.
///
/// Quick start (two users on one machine):
///
///   sotto server --listen 127.0.0.1:7443 --data ./srv
///   sotto --home ./alice register alice --server https://127.0.0.1:7443
///   sotto --home ./bob   register bob   --server https://127.0.0.1:7443
///   sotto --home ./alice send bob "hello"
///   sotto --home ./bob   inbox
///
/// The local store is encrypted with a passphrase: from SOTTO_PASSPHRASE, or
/// asked for at the terminal.
#[derive(Parser, Debug)]
#[command(name = "sotto", version, verbatim_doc_comment)]
pub struct Cli {
    /// This device's home directory (its encrypted store).
    #[arg(long, global = true, env = "SOTTO_HOME", value_name = "DIR")]
    pub home: Option<PathBuf>,

    /// Print listings as JSON, one object per line.
    #[arg(long, global = true)]
    pub json: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the server (the "security platform") on its embedded defaults.
    ///
    /// The first run creates the SQLite database and a self-signed TLS
    /// certificate in --data, and prints the certificate fingerprint that
    /// clients pin. With --database, several nodes share one PostgreSQL
    /// database instead (README.md, "Several nodes"). GET /metrics gives
    /// the node's counters (Prometheus text). Logs go to standard error,
    /// filtered by RUST_LOG (default "info"; e.g. RUST_LOG=sotto_server=debug).
    Server {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:7443")]
        listen: SocketAddr,
        /// Data directory (database, TLS certificate, server secret).
        #[arg(long, default_value = "./sotto-server-data", value_name = "DIR")]
        data: PathBuf,
        /// A PostgreSQL database (postgres://user@host:port/name) instead
        /// of SQLite in --data: several nodes can share it (give them the
        /// same --secret-file and --cert/--key; README.md, "Several
        /// nodes"). Migrated at start; created if missing.
        #[arg(long, env = "SOTTO_DATABASE", value_name = "URL")]
        database: Option<String>,
        /// PEM certificate chain to serve instead of the self-signed one.
        #[arg(long, requires = "key", value_name = "FILE")]
        cert: Option<PathBuf>,
        /// PEM private key for --cert.
        #[arg(long, requires = "cert", value_name = "FILE")]
        key: Option<PathBuf>,
        /// Days an acknowledged datagram is kept for history recovery;
        /// 0 deletes it on delivery.
        #[arg(long, default_value_t = 30, value_name = "DAYS")]
        retention_days: u64,
        /// The server secret (32 bytes; made there on first start). Keep it
        /// outside --data so that a copy of the data directory does not
        /// reveal usernames. Default: server_secret in --data.
        #[arg(long, env = "SOTTO_SECRET_FILE", value_name = "FILE")]
        secret_file: Option<PathBuf>,
        /// Unacknowledged megabytes (MiB) one device's mailbox may hold;
        /// a user's devices together may hold four times that. A send
        /// over it is refused (409 mailbox_full); nothing stored is lost.
        #[arg(long, default_value_t = 256, value_name = "N")]
        max_mailbox_mb: u64,
        /// Days an unacknowledged datagram waits before it is deleted.
        #[arg(long, default_value_t = 30, value_name = "D")]
        unacked_days: u64,
        /// Seconds a request's headers, or the next piece of its body, may
        /// take to arrive before the connection is closed.
        #[arg(long, default_value_t = 10, value_name = "SECS")]
        read_timeout: u64,
        /// HTTP connections one client address (IPv6: one /64) may hold.
        #[arg(long, default_value_t = 512, value_name = "N")]
        max_connections_per_ip: usize,
        /// Turn every rate limit off (load tests from one address only;
        /// never on a server others use).
        #[arg(long)]
        no_rate_limits: bool,
    },
    /// Create a new user with this device as its first device.
    Register {
        /// The username others will send to.
        username: String,
        /// Server URL, e.g. https://127.0.0.1:7443
        #[arg(long)]
        server: String,
        /// Require this server certificate fingerprint (hex SHA-256) instead
        /// of trusting the first one seen.
        #[arg(long)]
        fingerprint: Option<String>,
    },
    /// Make this home a new device of an existing user.
    ///
    /// Prints "code: <code>"; approve it on a device that holds the user key
    /// with `sotto approve <code>`. Waits until approved (10 minutes).
    Link {
        /// Server URL, e.g. https://127.0.0.1:7443
        #[arg(long)]
        server: String,
        /// Require this server certificate fingerprint (hex SHA-256).
        #[arg(long)]
        fingerprint: Option<String>,
    },
    /// Approve a new device waiting in `sotto link`.
    Approve {
        /// The code the new device printed.
        code: String,
    },
    /// List this user's devices, or remove one.
    Devices {
        #[command(subcommand)]
        command: Option<DevicesCommand>,
    },
    /// Server administration.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Send a message. BODY "-" reads it from standard input.
    Send {
        /// Recipient username.
        to: String,
        /// Message text, or "-" for standard input.
        body: String,
    },
    /// Fetch pending messages from the server, then list the history.
    Inbox,
    /// Stay connected and print each message as it arrives.
    Listen,
    /// Show the safety number to compare with USERNAME out of band.
    Verify {
        username: String,
        /// Accept USERNAME's current key after it changed (do this only
        /// after comparing safety numbers).
        #[arg(long)]
        accept: bool,
    },
    /// Refuse messages from USERNAME.
    Block { username: String },
    /// Accept messages from USERNAME again.
    Unblock { username: String },
    /// List your rooms: title, TTL, member count, id.
    Rooms,
    /// Secure rooms: group chats whose state lives in the members' devices.
    ///
    /// A ROOM is named by its title or by its id (hex, from `sotto rooms`);
    /// a title shared by several rooms asks for the id. Every room command
    /// first fetches what waits on the server, like `inbox`.
    Room {
        #[command(subcommand)]
        command: RoomCommand,
    },
    /// Run a rendezvous point: peers that share no local network register
    /// and find each other there. Prints "rendezvous: <multiaddr>".
    Rendezvous {
        /// Address to listen on (IP:PORT or a multiaddr).
        #[arg(long, default_value = "0.0.0.0:7600")]
        listen: String,
    },
    /// Peer to peer, with no server: sessions, files and group sessions
    /// between devices that can reach each other.
    P2p {
        #[command(subcommand)]
        command: crate::p2p_cmds::P2pCommand,
    },
}

#[derive(Subcommand, Debug)]
pub enum AdminCommand {
    /// Bring a PostgreSQL database to this version's schema (creating the
    /// database if missing). Idempotent; `sotto server --database` does it
    /// at start too. Prints "schema version N (was M)".
    Migrate {
        /// postgres://user@host:port/name
        #[arg(long, env = "SOTTO_DATABASE", value_name = "URL")]
        database: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum DevicesCommand {
    /// Remove a lost or stolen device of your account: the server forgets
    /// it (others stop encrypting to it) and refuses it from then on. Run
    /// it on the device you registered with (it holds the user key).
    Remove {
        /// The device id, as `sotto devices` (or `--json`, "id") lists it.
        device: String,
    },
}

/// TTLs: off, 10m, 1h, 1d, 1w, 30d (or a number with s/m/h/d/w).
fn ttl(s: &str) -> Result<Ttl, String> {
    s.parse()
        .map_err(|_| format!("invalid TTL {s:?}: use off, 10m, 1h, 1d, 1w or 30d"))
}

#[derive(Subcommand, Debug)]
pub enum RoomCommand {
    /// Create a room; you are its admin. Members get it on their devices.
    Create {
        title: String,
        /// What the room is for.
        #[arg(long, default_value = "")]
        description: String,
        /// How long messages live: off, 10m, 1h, 1d, 1w, 30d.
        #[arg(long, default_value = "off", value_parser = ttl)]
        ttl: Ttl,
        /// Members (usernames, comma-separated or repeated).
        #[arg(long, value_delimiter = ',')]
        members: Vec<String>,
        /// Further admins (usernames; made members too).
        #[arg(long, value_delimiter = ',')]
        admins: Vec<String>,
    },
    /// Send a message to every member of ROOM. TEXT "-" reads standard input.
    Send { room: String, text: String },
    /// Title, description, TTL, members (admins first, marked *) and messages.
    Show { room: String },
    /// Messages of ROOM's local history containing TEXT (ignoring case).
    Search { room: String, text: String },
    /// Change a room (admins only; all changes or none).
    Set {
        room: String,
        #[arg(long)]
        title: Option<String>,
        #[arg(long)]
        description: Option<String>,
        /// off, 10m, 1h, 1d, 1w, 30d.
        #[arg(long, value_parser = ttl)]
        ttl: Option<Ttl>,
        /// Add members (usernames, comma-separated or repeated).
        #[arg(long, value_delimiter = ',')]
        add: Vec<String>,
        /// Remove members.
        #[arg(long, value_delimiter = ',')]
        remove: Vec<String>,
        /// Make members admins.
        #[arg(long, value_delimiter = ',')]
        admin: Vec<String>,
        /// Take admin rights away.
        #[arg(long, value_delimiter = ',')]
        unadmin: Vec<String>,
        /// Delete the room for everyone.
        #[arg(long)]
        delete: bool,
    },
    /// Leave ROOM (the other members see it; you receive nothing after).
    Leave { room: String },
    /// The room's log, entry by entry; --verify walks its hash chain and
    /// signatures and reports the first bad link (exit status 1).
    Log {
        room: String,
        #[arg(long)]
        verify: bool,
    },
    /// Recover a room's history on this device (e.g. a newly linked one):
    /// asks a member for the history you are entitled to (what was sent
    /// while you were a member). ROOM is the room id (hex, from `sotto
    /// rooms` on another device) or a title known here. Without --from it
    /// asks your other devices. The answer arrives with the next room
    /// command or `sotto inbox` (within the server's retention window:
    /// older messages can only come as content from a member that kept them).
    Recover {
        room: String,
        /// The member to ask (default: your other devices).
        #[arg(long)]
        from: Option<String>,
    },
}
