//! Binary WebSocket frames a device sends on `GET /v1/ws` (the server's
//! frames, and the device's `Ack`, are JSON text: [`crate::Push`],
//! [`crate::Ack`]). A datagram travels as it does in the body of
//! `POST /v1/messages`, raw, behind a fixed header:
//!
//! ```text
//! offset  size  field
//! 0       1     type: 0x01 = send (the datagram names its sender, which
//!               must be the socket's device); 0x02 is reserved for a
//!               send that names no sender (sealed sender); any other
//!               value is refused
//! 1       8     req: request id, u64 big-endian, chosen by the device;
//!               strictly greater than every req sent before on the socket
//! 9       n     the datagram (n >= 1), the rest of the frame
//! ```
//!
//! The server answers each send with one `send_result` text frame carrying
//! the same `req` ([`crate::SendResult`]). [`decode`] is total and bounded:
//! it borrows the datagram out of the frame and allocates nothing.

/// The frame type of a send whose datagram names its sender.
pub const SEND: u8 = 0x01;
/// Reserved: a send that names no sender (sealed sender, not yet).
pub const SEND_SEALED: u8 = 0x02;
/// Bytes before the datagram.
pub const HEADER: usize = 9;

/// A decoded device frame.
#[derive(Debug, PartialEq, Eq)]
pub enum DeviceFrame<'a> {
    /// A datagram to store and push, as `POST /v1/messages` takes it.
    Send { req: u64, datagram: &'a [u8] },
}

/// Why a binary frame was refused (the server closes the socket with
/// 1007, or 1003 for a type it does not know).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error(
        "a send frame is a type byte, an 8-byte request id and a datagram: {0} bytes is too short"
    )]
    Short(usize),
    #[error("unknown frame type 0x{0:02x}")]
    UnknownType(u8),
}

/// Encodes a send frame.
pub fn encode_send(req: u64, datagram: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + datagram.len());
    out.push(SEND);
    out.extend_from_slice(&req.to_be_bytes());
    out.extend_from_slice(datagram);
    out
}

/// Decodes a binary frame from a device.
pub fn decode(frame: &[u8]) -> Result<DeviceFrame<'_>, FrameError> {
    let (&kind, rest) = frame.split_first().ok_or(FrameError::Short(0))?;
    if kind != SEND {
        return Err(FrameError::UnknownType(kind));
    }
    if frame.len() <= HEADER {
        return Err(FrameError::Short(frame.len()));
    }
    let (req, datagram) = rest.split_at(8);
    let req = u64::from_be_bytes(req.try_into().map_err(|_| FrameError::Short(frame.len()))?);
    Ok(DeviceFrame::Send { req, datagram })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_send_frame_round_trips() {
        let f = encode_send(0x0102_0304_0506_0708, b"dg");
        assert_eq!(f, [1, 1, 2, 3, 4, 5, 6, 7, 8, b'd', b'g']);
        assert_eq!(
            decode(&f),
            Ok(DeviceFrame::Send {
                req: 0x0102_0304_0506_0708,
                datagram: b"dg"
            })
        );
    }

    #[test]
    fn short_empty_and_unknown_frames_are_refused() {
        assert_eq!(decode(&[]), Err(FrameError::Short(0)));
        assert_eq!(decode(&[SEND; 9]), Err(FrameError::Short(9)));
        assert_eq!(decode(&[SEND, 0, 0]), Err(FrameError::Short(3)));
        assert_eq!(
            decode(&[SEND_SEALED; 20]),
            Err(FrameError::UnknownType(SEND_SEALED))
        );
        assert_eq!(decode(b"{\"seqs\":[]}"), Err(FrameError::UnknownType(b'{')));
    }
}
