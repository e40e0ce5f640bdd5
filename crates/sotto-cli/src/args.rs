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
        /// Development SMS gateway: append each SMS to FILE as one JSON line
        /// {"to": "+1...", "text": "..."}; inbound SMS are accepted unsigned.
        /// Never on a server others use.
        #[arg(long, value_name = "FILE", conflicts_with = "twilio_account_sid")]
        sms_sink: Option<PathBuf>,
        /// Send SMS through Twilio with this account SID (auth token from
        /// SOTTO_TWILIO_AUTH_TOKEN); inbound SMS must carry Twilio's
        /// signature. Needs --twilio-from and --sms-inbound-url.
        #[arg(long, value_name = "SID", requires_all = ["twilio_from", "sms_inbound_url"])]
        twilio_account_sid: Option<String>,
        /// The Twilio number SMS come from (and handsets text codes to).
        #[arg(long, value_name = "NUMBER")]
        twilio_from: Option<String>,
        /// Twilio's API base URL.
        #[arg(long, value_name = "URL", default_value = "https://api.twilio.com")]
        twilio_base_url: String,
        /// The public URL of this server's /v1/sms/inbound exactly as
        /// configured at the provider (its signature covers it).
        #[arg(long, value_name = "URL")]
        sms_inbound_url: Option<String>,
        /// How long a one-time password is valid: e.g. 30s, 10m.
        #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = duration)]
        otp_ttl: std::time::Duration,
        /// The hold key (32 bytes) that seals messages held for phone
        /// numbers and the senders' keys; made there on first start.
        /// SOTTO_HOLD_KEY (64 hex digits) overrides it. Default: hold_key
        /// in --data; keep it elsewhere so a copy of --data reveals nothing.
        #[arg(long, env = "SOTTO_HOLD_KEY_FILE", value_name = "FILE")]
        hold_key_file: Option<PathBuf>,
        /// The URL handsets are told to register at (in the invitation
        /// SMS). Default: https://<--listen>.
        #[arg(long, value_name = "URL")]
        public_url: Option<String>,
        /// CA certificates (PEM) trusted for outgoing HTTPS (webhooks, the
        /// SMS provider) besides the public web roots built in: a sender
        /// whose webhook has a certificate from a private CA.
        #[arg(long, value_name = "FILE")]
        outgoing_ca: Option<PathBuf>,
    },
    /// Operate on a server's data directory: sender accounts (organisations
    /// sending to phone numbers) and the messages held for numbers.
    ///
    ///   sotto admin --data ./srv sender add acme --name "Acme Clinic" --webhook http://127.0.0.1:9000/replies
    ///   sotto admin --data ./srv held --json
    #[command(verbatim_doc_comment)]
    Admin {
        /// The server's data directory.
        #[arg(long, default_value = "./sotto-server-data", value_name = "DIR")]
        data: PathBuf,
        /// The server secret, if not in --data (as `sotto server`).
        #[arg(long, env = "SOTTO_SECRET_FILE", value_name = "FILE")]
        secret_file: Option<PathBuf>,
        /// The hold key, if not in --data (as `sotto server`).
        #[arg(long, env = "SOTTO_HOLD_KEY_FILE", value_name = "FILE")]
        hold_key_file: Option<PathBuf>,
        /// The PostgreSQL database the server nodes share (as `sotto server
        /// --database`), instead of the SQLite store in --data.
        #[arg(long, env = "SOTTO_DATABASE", value_name = "URL")]
        database: Option<String>,
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Register this new device for a phone number. The server texts a
    /// code to the number; finish with `sotto verify-phone CODE`. With
    /// --by-sms the app makes the code and prints the SMS to send from the
    /// handset; it finishes by itself when the server receives that SMS.
    RegisterPhone {
        /// The number in international form, e.g. +15551234567.
        number: String,
        /// Server URL, e.g. https://127.0.0.1:7443
        #[arg(long)]
        server: String,
        /// Require this server certificate fingerprint (hex SHA-256).
        #[arg(long)]
        fingerprint: Option<String>,
        /// The handset sends the code by SMS instead of receiving one.
        #[arg(long)]
        by_sms: bool,
    },
    /// Finish `sotto register-phone` with the code the server texted.
    VerifyPhone {
        /// The code from the SMS.
        otp: String,
    },
    /// Create a new user with this device as its first device, with no
    /// server at all (for peer to peer). A later `sotto register USERNAME
    /// --server URL` on this home publishes the same identity: contacts
    /// keep your key and safety number.
    Init {
        /// The username peers will know you by.
        username: String,
    },
    /// Create a new user with this device as its first device (or publish
    /// the user made here by `sotto init`).
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
    /// with `sotto approve <code>`. Waits until approved (10 minutes), checks
    /// the approval was made with this code by the user the directory lists
    /// under the approving key, and prints that user and its safety
    /// fingerprint. The code is a secret: show it only to yourself.
    Link {
        /// Server URL, e.g. https://127.0.0.1:7443
        #[arg(long)]
        server: String,
        /// Require this server certificate fingerprint (hex SHA-256).
        #[arg(long)]
        fingerprint: Option<String>,
        /// Join only this user's account: an approval by anyone else is
        /// refused and nothing is stored.
        #[arg(long)]
        user: Option<String>,
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
    /// Send a message. BODY "-" reads it from standard input.
    Send {
        /// Recipient username.
        to: String,
        /// Message text, or "-" for standard input.
        body: String,
    },
    /// Fetch pending messages from the server, then list the history
    /// (messages received peer to peer included). With no server, or when
    /// it cannot be reached, lists the history this device holds.
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
    /// Sender accounts and their API keys.
    Sender {
        #[command(subcommand)]
        command: SenderCommand,
    },
    /// Messages held for numbers that have not registered: id, sender,
    /// status, created, expires (never the body or the number).
    Held,
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
pub enum SenderCommand {
    /// Add an organisation that sends to phone numbers; prints its API key
    /// and webhook signing secret once.
    Add {
        /// The handle users see and reply to (taken in the directory).
        handle: String,
        /// Display name shown with its messages.
        #[arg(long)]
        name: String,
        /// Where replies and status changes are posted.
        #[arg(long)]
        webhook: String,
    },
    /// Make another API key for HANDLE (printed once).
    AddKey { handle: String },
    /// Revoke an API key of HANDLE: calls with it are refused at once.
    RevokeKey { handle: String, key: String },
    /// List sender accounts.
    List,
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

/// A duration: a number with s, m, h or d (e.g. 30s, 10m).
fn duration(s: &str) -> Result<std::time::Duration, String> {
    let bad = || format!("invalid duration {s:?}: use e.g. 30s, 10m, 1h");
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?);
    let n: u64 = n.parse().map_err(|_| bad())?;
    let secs = match unit {
        "s" => n,
        "m" => n.saturating_mul(60),
        "h" => n.saturating_mul(3600),
        "d" => n.saturating_mul(86_400),
        _ => return Err(bad()),
    };
    if secs == 0 {
        return Err(bad());
    }
    Ok(std::time::Duration::from_secs(secs))
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
