//! Printing: one human line per item, or one JSON object per line with
//! `--json`. The JSON shapes are part of the command-line contract; they
//! are built here from the library's typed values.

use serde::Serialize;
use sotto_client::{
    DeviceInfo, LineContent, Message, RoomLine, RoomLogReport, RoomSummary, RoomView, Safety,
};

use crate::render;

pub struct Printer {
    pub json: bool,
}

#[derive(Serialize)]
struct MessageJson<'a> {
    id: String,
    conversation: String,
    from: &'a str,
    to: &'a str,
    sent_at: u64,
    received_at: u64,
    body: &'a str,
    ttl: u32,
    outgoing: bool,
    /// The sender's display name when it is an organisation.
    #[serde(skip_serializing_if = "Option::is_none")]
    organisation: Option<&'a str>,
}

#[derive(Serialize)]
struct DeviceJson {
    id: String,
    created_at: u64,
    this_device: bool,
}

#[derive(Serialize)]
struct RoomJson<'a> {
    id: String,
    title: &'a str,
    ttl: String,
    ttl_seconds: u32,
    members: usize,
    member: bool,
    deleted: bool,
}

#[derive(Serialize)]
struct LineJson<'a> {
    id: String,
    at: u64,
    from: &'a str,
    kind: &'static str,
    text: String,
}

#[derive(Serialize)]
struct MemberJson<'a> {
    name: &'a str,
    admin: bool,
}

#[derive(Serialize)]
struct ViewJson<'a> {
    id: String,
    title: &'a str,
    description: &'a str,
    ttl: String,
    ttl_seconds: u32,
    members: Vec<MemberJson<'a>>,
    deleted: bool,
    head: String,
    entries: usize,
    lines: Vec<LineJson<'a>>,
}

#[derive(Serialize)]
struct LogLineJson<'a> {
    position: usize,
    entry: String,
    message_id: String,
    from: &'a str,
    at: u64,
    kind: &'static str,
    event: String,
}

#[derive(Serialize)]
struct LogJson<'a> {
    id: String,
    head: String,
    entries: Vec<LogLineJson<'a>>,
    broken: Option<String>,
}

fn line_json(l: &RoomLine) -> LineJson<'_> {
    LineJson {
        id: hex::encode(l.message_id),
        at: l.at,
        from: &l.from,
        kind: match l.content {
            LineContent::Message(_) => "message",
            LineContent::Notice(_) => "notice",
        },
        text: render::line_text(l),
    }
}

fn log_json(r: &RoomLogReport) -> LogJson<'_> {
    LogJson {
        id: hex::encode(r.group.0),
        head: r.head.map(|h| hex::encode(h.0)).unwrap_or_default(),
        entries: r
            .entries
            .iter()
            .map(|e| LogLineJson {
                position: e.position,
                entry: hex::encode(e.entry.0),
                message_id: hex::encode(e.message_id),
                from: &e.from,
                at: e.at,
                kind: match e.kind {
                    sotto_proto::room::EntryKind::Authoritative => "authoritative",
                    sotto_proto::room::EntryKind::NonAuthoritative => "non-authoritative",
                    sotto_proto::room::EntryKind::Standard => "standard",
                },
                event: e
                    .event
                    .as_ref()
                    .map_or_else(|| "message".into(), |n| render::notice(&e.from, n)),
            })
            .collect(),
        broken: r.broken.as_ref().map(render::broken),
    }
}

impl Printer {
    fn json_line<T: Serialize>(&self, value: &T) {
        match serde_json::to_string(value) {
            Ok(line) => println!("{line}"),
            Err(e) => eprintln!("sotto: cannot print as JSON: {e}"),
        }
    }

    pub fn message(&self, m: &Message) {
        self.message_from(m, None)
    }

    /// A message; `organisation`: the display name of its sender, an
    /// organisation, shown as `acme ("Acme Clinic")`.
    pub fn message_from(&self, m: &Message, organisation: Option<&str>) {
        if self.json {
            self.json_line(&MessageJson {
                id: hex::encode(m.id),
                conversation: hex::encode(m.conversation),
                from: &m.from,
                to: &m.to,
                sent_at: m.sent_at,
                received_at: m.received_at,
                body: &m.body,
                ttl: m.ttl,
                outgoing: m.outgoing,
                organisation,
            });
        } else if let Some(name) = organisation {
            println!(
                "{}  {} ({name:?}) -> {}: {}",
                time(m.sent_at),
                m.from,
                m.to,
                m.body
            );
        } else {
            println!("{}  {} -> {}: {}", time(m.sent_at), m.from, m.to, m.body);
        }
    }

    pub fn device(&self, d: &DeviceInfo) {
        if self.json {
            self.json_line(&DeviceJson {
                id: hex::encode(d.id.0),
                created_at: d.created_at,
                this_device: d.this_device,
            });
        } else {
            let this = if d.this_device { "  (this device)" } else { "" };
            println!(
                "{}  added {}{this}",
                hex::encode(d.id.0),
                time(d.created_at)
            );
        }
    }

    pub fn room(&self, r: &RoomSummary) {
        if self.json {
            self.json_line(&RoomJson {
                id: hex::encode(r.group.0),
                title: &r.title,
                ttl: r.ttl.to_string(),
                ttl_seconds: r.ttl.0,
                members: r.members,
                member: r.member,
                deleted: r.deleted,
            });
        } else {
            let state = if r.deleted {
                "  (deleted)"
            } else if !r.member {
                "  (not a member)"
            } else {
                ""
            };
            println!(
                "{}  ttl {}  {} members  id {}{state}",
                r.title,
                r.ttl,
                r.members,
                hex::encode(r.group.0)
            );
        }
    }

    pub fn room_line(&self, l: &RoomLine) {
        if self.json {
            self.json_line(&line_json(l));
        } else if let LineContent::Message(text) = &l.content {
            println!("{}  {}: {text}", time(l.at), l.from);
        } else {
            println!("{}  * {}", time(l.at), render::line_text(l));
        }
    }

    /// One JSON object for the room (members and lines inside), or a
    /// header and one line per message or notice.
    pub fn room_view(&self, v: &RoomView) {
        if self.json {
            self.json_line(&ViewJson {
                id: hex::encode(v.group.0),
                title: &v.title,
                description: &v.description,
                ttl: v.ttl.to_string(),
                ttl_seconds: v.ttl.0,
                members: v
                    .members
                    .iter()
                    .map(|m| MemberJson {
                        name: &m.name,
                        admin: m.admin,
                    })
                    .collect(),
                deleted: v.deleted,
                head: hex::encode(v.head.0),
                entries: v.entries,
                lines: v.lines.iter().map(line_json).collect(),
            });
            return;
        }
        println!("{}{}", v.title, if v.deleted { "  (deleted)" } else { "" });
        if !v.description.is_empty() {
            println!("description: {}", v.description);
        }
        println!("ttl: {}", v.ttl);
        let members: Vec<String> = v
            .members
            .iter()
            .map(|m| {
                if m.admin {
                    format!("{} *", m.name)
                } else {
                    m.name.clone()
                }
            })
            .collect();
        println!("members: {}  (* admin)", members.join(", "));
        println!("id: {}", hex::encode(v.group.0));
        println!(
            "log head: {} ({} entries)",
            hex::encode(v.head.0),
            v.entries
        );
        for l in &v.lines {
            self.room_line(l);
        }
    }

    pub fn room_log(&self, r: &RoomLogReport, verify: bool) {
        let report = log_json(r);
        if self.json {
            self.json_line(&report);
            return;
        }
        for e in &report.entries {
            println!(
                "{:>4}  {}  {}  {}  {}: {}",
                e.position,
                &e.entry[..16],
                time(e.at),
                e.kind,
                e.from,
                e.event
            );
        }
        println!("head {}", report.head);
        if verify && r.broken.is_none() {
            println!(
                "verified: {} entries, every hash, signature and parent link checks, head matches",
                r.entries.len()
            );
        }
    }

    pub fn safety(&self, username: &str, number: &Safety) {
        if self.json {
            self.json_line(&serde_json::json!({
                "username": username,
                "safety_number": number.digits,
                "qr": number.qr,
            }));
        } else {
            println!("safety number with {username}:");
            println!("{}", number.grouped());
            println!("compare it with {username} in person or over a call; the code for a QR scanner: {}", number.qr);
        }
    }
}

/// `YYYY-MM-DD HH:MM:SS` (UTC) from milliseconds since the epoch.
pub fn time(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (H. Hinnant's
/// algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_utc_time() {
        assert_eq!(super::time(0), "1970-01-01 00:00:00");
        assert_eq!(super::time(1_795_000_000_000), "2026-11-18 11:06:40");
    }
}
