//! Reading the one-time passwords a development server texts: the server
//! started with `--sms-sink FILE` appends each SMS as one JSON line
//! `{"to": "+1...", "text": "..."}`; the load generator runs on the same
//! machine and follows that file from its end, as a handset would read its
//! SMS. A caller asks for a number's next code ([`SmsSink::expect`])
//! *before* the request that makes the server text it.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;

use crate::net::Result;

/// Longest sink line read; longer lines are skipped whole.
const MAX_LINE: usize = 4096;
/// How often the file is read for new lines.
const POLL: Duration = Duration::from_millis(5);

/// The code in the text of a server-made OTP SMS ("Your sotto code is
/// 123456. It expires in 10 minutes."); `None` for any other SMS (an
/// invitation, say).
pub fn otp_in_text(text: &str) -> Option<&str> {
    let rest = &text[text.find("code is ")? + "code is ".len()..];
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    let code = &rest[..end];
    sotto_api::phone::is_otp(code).then_some(code)
}

/// (number, code) of one sink line carrying an OTP.
pub fn otp_in_line(line: &[u8]) -> Option<(String, String)> {
    #[derive(serde::Deserialize)]
    struct Sms {
        to: String,
        text: String,
    }
    if line.len() > MAX_LINE {
        return None;
    }
    let sms: Sms = serde_json::from_slice(line).ok()?;
    let code = otp_in_text(&sms.text)?.to_string();
    Some((sms.to, code))
}

/// Splits the complete lines off `buf` (up to its last `\n`), leaving a
/// partial last line in it; a partial line longer than [`MAX_LINE`] is
/// dropped up to its end (`skipping`).
fn take_lines(buf: &mut Vec<u8>, skipping: &mut bool) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut start = 0;
    while let Some(i) = buf[start..].iter().position(|&b| b == b'\n') {
        if !*skipping {
            out.push(buf[start..start + i].to_vec());
        }
        *skipping = false;
        start += i + 1;
    }
    buf.drain(..start);
    if buf.len() > MAX_LINE {
        buf.clear();
        *skipping = true;
    }
    out
}

struct Inner {
    path: PathBuf,
    waiters: Mutex<HashMap<String, oneshot::Sender<String>>>,
    stop: AtomicBool,
    /// OTP lines seen since the start.
    codes: AtomicU64,
    /// OTP lines nobody waited for (another run's numbers, a retry).
    unclaimed: AtomicU64,
}

/// Follows a sink file from its end (what was there before is ignored).
#[derive(Clone)]
pub struct SmsSink {
    inner: Arc<Inner>,
}

/// One number's next code.
pub struct OtpWaiter {
    number: String,
    rx: oneshot::Receiver<String>,
}

impl OtpWaiter {
    /// The code, or an error after `limit`.
    pub async fn code(self, limit: Duration) -> Result<String> {
        match tokio::time::timeout(limit, self.rx).await {
            Ok(Ok(code)) => Ok(code),
            Ok(Err(_)) => Err("SMS sink reader stopped".into()),
            Err(_) => Err(format!(
                "no OTP SMS for {} in the sink within {limit:?}",
                self.number
            )),
        }
    }
}

impl SmsSink {
    /// Starts following `path` (a thread reads it every 5 ms); the file
    /// may not exist yet (the server makes it with its first SMS).
    pub fn follow(path: &Path) -> Result<SmsSink> {
        let inner = Arc::new(Inner {
            path: path.to_path_buf(),
            waiters: Mutex::new(HashMap::new()),
            stop: AtomicBool::new(false),
            codes: AtomicU64::new(0),
            unclaimed: AtomicU64::new(0),
        });
        let start = match std::fs::metadata(path) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        let me = inner.clone();
        std::thread::Builder::new()
            .name("sms-sink".into())
            .spawn(move || me.run(start))
            .map_err(|e| format!("sms sink thread: {e}"))?;
        Ok(SmsSink { inner })
    }

    /// Registers interest in the next code texted to `number`.
    pub fn expect(&self, number: &str) -> OtpWaiter {
        let (tx, rx) = oneshot::channel();
        self.inner
            .waiters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(number.to_string(), tx);
        OtpWaiter {
            number: number.to_string(),
            rx,
        }
    }

    /// (OTP lines seen, of which nobody waited for).
    pub fn counts(&self) -> (u64, u64) {
        (
            self.inner.codes.load(Relaxed),
            self.inner.unclaimed.load(Relaxed),
        )
    }
}

impl Drop for SmsSink {
    fn drop(&mut self) {
        // The last handle stops the reader thread.
        if Arc::strong_count(&self.inner) == 2 {
            self.inner.stop.store(true, Relaxed);
        }
    }
}

impl Inner {
    fn run(&self, mut offset: u64) {
        let mut file: Option<File> = None;
        let mut buf = Vec::new();
        let mut skipping = false;
        let mut chunk = vec![0u8; 64 * 1024];
        while !self.stop.load(Relaxed) {
            if file.is_none() {
                file = File::open(&self.path).ok();
                if let Some(f) = file.as_mut() {
                    if f.seek(SeekFrom::Start(offset)).is_err() {
                        file = None;
                    }
                }
            }
            let mut got = 0;
            if let Some(f) = file.as_mut() {
                match f.read(&mut chunk) {
                    Ok(n) => {
                        got = n;
                        offset += n as u64;
                        buf.extend_from_slice(&chunk[..n]);
                    }
                    Err(_) => file = None,
                }
            }
            for line in take_lines(&mut buf, &mut skipping) {
                if let Some((number, code)) = otp_in_line(&line) {
                    self.codes.fetch_add(1, Relaxed);
                    let waiter = self
                        .waiters
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&number);
                    let claimed = waiter.map(|tx| tx.send(code).is_ok());
                    if claimed != Some(true) {
                        self.unclaimed.fetch_add(1, Relaxed);
                    }
                }
            }
            if got == 0 {
                std::thread::sleep(POLL);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_found_only_in_otp_texts() {
        let otp = r#"{"to":"+15551234567","text":"Your sotto code is 012345. It expires in 10 minutes."}"#;
        assert_eq!(
            otp_in_line(otp.as_bytes()),
            Some(("+15551234567".into(), "012345".into()))
        );
        let invite = r#"{"to":"+15551234567","text":"Acme sent you a secure message. Install sotto and run: sotto register-phone +15551234567 --server https://127.0.0.1:7443"}"#;
        assert_eq!(otp_in_line(invite.as_bytes()), None);
        assert_eq!(otp_in_text("Your sotto code is 12345."), None);
        assert_eq!(otp_in_text("Your sotto code is 1234567"), Some("1234567"));
        assert_eq!(otp_in_line(b"{not json"), None);
    }

    #[test]
    fn partial_and_overlong_lines() {
        let mut skipping = false;
        let mut buf = b"a\nbc".to_vec();
        assert_eq!(take_lines(&mut buf, &mut skipping), vec![b"a".to_vec()]);
        assert_eq!(buf, b"bc");
        buf.extend_from_slice(b"d\n");
        assert_eq!(take_lines(&mut buf, &mut skipping), vec![b"bcd".to_vec()]);
        // an overlong partial line is dropped up to its newline
        buf.extend_from_slice(&[b'x'; MAX_LINE + 1]);
        assert!(take_lines(&mut buf, &mut skipping).is_empty());
        assert!(skipping && buf.is_empty());
        buf.extend_from_slice(b"xx\nok\n");
        assert_eq!(take_lines(&mut buf, &mut skipping), vec![b"ok".to_vec()]);
    }

    #[tokio::test]
    async fn follows_the_file_from_its_end() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sms.jsonl");
        let line = |n: &str, c: &str| {
            format!("{{\"to\":\"{n}\",\"text\":\"Your sotto code is {c}. It expires in 1 minutes.\"}}\n")
        };
        std::fs::write(&path, line("+15550000001", "111111")).unwrap();
        let sink = SmsSink::follow(&path).unwrap();
        let w = sink.expect("+15550000001");
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        // written in two pieces: the reader must join them
        let l = line("+15550000001", "222222");
        f.write_all(&l.as_bytes()[..10]).unwrap();
        f.flush().unwrap();
        std::thread::sleep(Duration::from_millis(30));
        f.write_all(&l.as_bytes()[10..]).unwrap();
        assert_eq!(w.code(Duration::from_secs(5)).await.unwrap(), "222222");
        let w = sink.expect("+15550000002");
        assert!(w.code(Duration::from_millis(50)).await.is_err());
        assert_eq!(sink.counts(), (1, 0));
    }
}
