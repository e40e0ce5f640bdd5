//! Printing: one human line per item, or one JSON object per line with
//! `--json`.

use serde::Serialize;
use sotto_client::{DeviceInfo, Message, RoomLine, RoomLogReport, RoomSummary, RoomView, Safety};

pub struct Printer {
    pub json: bool,
}

impl Printer {
    fn json_line<T: Serialize>(&self, value: &T) {
        match serde_json::to_string(value) {
            Ok(line) => println!("{line}"),
            Err(e) => eprintln!("sotto: cannot print as JSON: {e}"),
        }
    }

    pub fn message(&self, m: &Message) {
        if self.json {
            self.json_line(m);
        } else {
            println!("{}  {} -> {}: {}", time(m.sent_at), m.from, m.to, m.body);
        }
    }

    pub fn device(&self, d: &DeviceInfo) {
        if self.json {
            self.json_line(d);
        } else {
            let this = if d.this_device { "  (this device)" } else { "" };
            println!("{}  added {}{this}", d.id, time(d.created_at));
        }
    }

    pub fn room(&self, r: &RoomSummary) {
        if self.json {
            self.json_line(r);
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
                r.title, r.ttl, r.members, r.id
            );
        }
    }

    pub fn room_line(&self, l: &RoomLine) {
        if self.json {
            self.json_line(l);
        } else if l.kind == "message" {
            println!("{}  {}: {}", time(l.at), l.from, l.text);
        } else {
            println!("{}  * {}", time(l.at), l.text);
        }
    }

    /// One JSON object for the room (members and lines inside), or a
    /// header and one line per message or notice.
    pub fn room_view(&self, v: &RoomView) {
        if self.json {
            self.json_line(v);
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
        println!("id: {}", v.id);
        println!("log head: {} ({} entries)", v.head, v.entries);
        for l in &v.lines {
            self.room_line(l);
        }
    }

    pub fn room_log(&self, r: &RoomLogReport, verify: bool) {
        if self.json {
            self.json_line(r);
            return;
        }
        for e in &r.entries {
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
        println!("head {}", r.head);
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
fn time(ms: u64) -> String {
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
