//! Delivery to phone numbers: the sender API (organisations, API key) and
//! phone registration by one-time password (docs/api.md, "Sender API" and
//! "Phone numbers").

use serde::{Deserialize, Serialize};

use crate::RegisterRequest;

/// Longest message body a sender may send, in bytes.
pub const MAX_SENDER_BODY: usize = 16 * 1024;
/// Longest time a message may be held for its number: 30 days.
pub const MAX_HOLD_TTL_S: u64 = 30 * 24 * 3600;
/// Default time a message is held: 7 days.
pub const DEFAULT_HOLD_TTL_S: u64 = 7 * 24 * 3600;

/// `POST /v1/sender/messages` (`Authorization: Bearer <api key>`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SenderMessage {
    /// E.164 number: `+` and 8 to 15 digits.
    pub to: String,
    /// UTF-8 text, at most [`MAX_SENDER_BODY`] bytes.
    pub body: String,
    /// Seconds the message may be held for an unregistered number
    /// (default 7 days, at most 30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<u64>,
}

/// 202 answer of `POST /v1/sender/messages`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct SenderMessageCreated {
    pub id: String,
    /// `held` (the number has not registered) or `sent`.
    pub status: String,
}

/// `GET /v1/sender/messages/{id}`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct SenderMessageState {
    pub id: String,
    /// `held`, `sent`, `delivered` or `expired`.
    pub status: String,
    /// Milliseconds since the Unix epoch.
    pub created_at: u64,
    /// When a held message is erased unless its number registers.
    pub expires_at: u64,
    pub updated_at: u64,
}

/// `POST /v1/phone/register`: ask to register a number. Without `otp` the
/// server texts a code to the number; with `otp` (made by the app) the
/// server waits for the handset to text that code to the server's number.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PhoneStart {
    pub number: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub otp: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PhoneStarted {
    /// Seconds the code stays valid.
    pub expires_in: u64,
    /// App-made OTP: the number the handset texts the code to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sms_to: Option<String>,
    /// App-made OTP: the text of that SMS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sms_text: Option<String>,
}

/// `POST /v1/phone/verify`, signed by the new device: the code, and the
/// registration of a new user (a random username) for the number.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PhoneVerify {
    pub number: String,
    pub otp: String,
    /// True for an app-made code (`--by-sms`).
    #[serde(default)]
    pub by_sms: bool,
    /// The new user's name (its hash must be `registration.username_hash`).
    pub username: String,
    pub registration: RegisterRequest,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PhoneVerified {
    /// Held messages now sealed to this device and in its mailbox.
    pub delivered: u32,
}

/// The text of the SMS a handset sends for an app-made code.
pub fn sms_otp_text(otp: &str) -> String {
    format!("sotto {otp}")
}

/// The code in an inbound SMS (`sotto 123456`, any case and spacing).
pub fn otp_in_sms(text: &str) -> Option<&str> {
    let mut words = text.split_whitespace();
    let first = words.next()?;
    let code = if first.eq_ignore_ascii_case("sotto") {
        words.next()?
    } else {
        first
    };
    (words.next().is_none() && is_otp(code)).then_some(code)
}

/// An OTP: 6 to 10 ASCII digits.
pub fn is_otp(s: &str) -> bool {
    (6..=10).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit())
}

/// An E.164 number: `+`, then 8 to 15 digits, the first not 0.
pub fn is_e164(s: &str) -> bool {
    let Some(digits) = s.strip_prefix('+') else {
        return false;
    };
    (8..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_codes() {
        assert!(is_e164("+15551234567"));
        for bad in [
            "15551234567",
            "+0555123456",
            "+1555",
            "+1555123456789012",
            "+1555-123-4567",
            "+",
        ] {
            assert!(!is_e164(bad), "{bad}");
        }
        assert_eq!(otp_in_sms("sotto 123456"), Some("123456"));
        assert_eq!(otp_in_sms("  SOTTO   123456 "), Some("123456"));
        assert_eq!(otp_in_sms("123456"), Some("123456"));
        assert_eq!(otp_in_sms("sotto 12345"), None);
        assert_eq!(otp_in_sms("sotto 123456 extra"), None);
        assert_eq!(otp_in_sms(""), None);
    }
}
